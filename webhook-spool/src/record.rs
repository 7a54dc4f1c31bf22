//! One spooled webhook and its on-disk encoding.
//!
//! A segment file is a sequence of frames:
//!
//! ```text
//! frame   = len:u32le  crc:u32le  payload[len]       crc = CRC-32 (IEEE) of payload
//! payload = version:u8 (= 1)
//!           delivery_id:[u8; 16]
//!           received_at_secs:i64le  received_at_nanos:u32le
//!           client_ip: tag:u8 (0 none, 4, 6) then 0, 4 or 16 bytes
//!           chart: tag:u8 (0 none, 1 some) then len:u16le and UTF-8 bytes
//!           token: len:u16le and its bytes
//!           body: len:u32le and the raw bytes, untouched
//! ```
//!
//! The length and checksum let recovery tell a complete record from a torn
//! or garbage tail without trusting anything inside it; the version byte
//! lets a later ingest change the payload while still reading old spools (and
//! lets this one refuse, rather than misread, a spool written by a newer one).
//! Binary rather than JSON because the body is arbitrary bytes and must come
//! back byte for byte.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use webhook_token::WebhookToken;

/// The payload version this ingest writes and reads.
pub(crate) const VERSION: u8 = 1;
/// Bytes before the payload: length and CRC.
pub(crate) const HEADER_LEN: usize = 8;
/// The smallest possible version-1 payload (empty token, chart and body):
/// a zero-filled tail never decodes as a record.
pub(crate) const MIN_PAYLOAD_LEN: usize = 1 + 16 + 8 + 4 + 1 + 1 + 2 + 4;
/// The largest payload a frame may carry. A webhook body is capped far below
/// this at the edge; the cap keeps a corrupt length field from making
/// recovery allocate gigabytes.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// A webhook accepted while the database path was down, exactly as it
/// arrived: what the replayer hands to `public.ingest_signal` later.
#[derive(Clone, PartialEq, Eq)]
pub struct SpooledWebhook {
    /// Chosen by the edge when the request arrived (a `UUIDv7`, so ids sort by
    /// time); the same id goes with every database call for this request, so
    /// a replay of a call that had in fact committed is answered `duplicate`.
    pub delivery_id: Uuid,
    /// The webhook token from the URL path. A bearer secret: `Debug` shows
    /// only its fingerprint.
    pub token: WebhookToken,
    /// The `?chart=` query value as received, if any.
    pub chart: Option<String>,
    /// The raw request body, untouched (the parser runs again at replay).
    pub body: Bytes,
    /// When the edge received the request; replay keeps it, so quota
    /// periods, rate windows and the signal's timestamp are the original ones.
    pub received_at: DateTime<Utc>,
    /// The client's address, for the delivery log and abuse accounting.
    pub client_ip: Option<IpAddr>,
}

impl fmt::Debug for SpooledWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpooledWebhook")
            .field("delivery_id", &self.delivery_id)
            .field("token", &self.token)
            .field("chart", &self.chart)
            .field("body_len", &self.body.len())
            .field("received_at", &self.received_at)
            .field("client_ip", &self.client_ip)
            .finish()
    }
}

/// Why a checksummed payload could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Written by an ingest that knows a newer format.
    #[error("payload format version {0} is not supported (this ingest reads version {VERSION})")]
    UnsupportedVersion(u8),
    /// The fields do not add up to the payload's length, or hold values no
    /// encoder writes (bad tag, invalid UTF-8, malformed token, time out of
    /// range).
    #[error("malformed payload: {0}")]
    Malformed(&'static str),
}

impl SpooledWebhook {
    /// The complete frame (header and payload) for a segment file.
    pub(crate) fn encode_frame(&self) -> Vec<u8> {
        let token = self.token.expose().as_bytes();
        let chart = self.chart.as_deref().map(str::as_bytes);
        let mut payload = Vec::with_capacity(
            MIN_PAYLOAD_LEN + 16 + token.len() + chart.map_or(0, <[u8]>::len) + self.body.len(),
        );
        payload.push(VERSION);
        payload.extend_from_slice(self.delivery_id.as_bytes());
        payload.extend_from_slice(&self.received_at.timestamp().to_le_bytes());
        payload.extend_from_slice(&self.received_at.timestamp_subsec_nanos().to_le_bytes());
        match self.client_ip {
            None => payload.push(0),
            Some(IpAddr::V4(ip)) => {
                payload.push(4);
                payload.extend_from_slice(&ip.octets());
            }
            Some(IpAddr::V6(ip)) => {
                payload.push(6);
                payload.extend_from_slice(&ip.octets());
            }
        }
        match chart {
            None => payload.push(0),
            Some(chart) => {
                payload.push(1);
                put_u16_len(&mut payload, chart);
            }
        }
        put_u16_len(&mut payload, token);
        let body_len = u32::try_from(self.body.len()).unwrap_or(u32::MAX);
        payload.extend_from_slice(&body_len.to_le_bytes());
        payload.extend_from_slice(&self.body);

        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        frame
    }

    /// Decodes a payload whose checksum has already been verified.
    pub(crate) fn decode_payload(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(payload);
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let delivery_id = Uuid::from_bytes(r.array::<16>()?);
        let secs = i64::from_le_bytes(r.array()?);
        let nanos = u32::from_le_bytes(r.array()?);
        let received_at = DateTime::from_timestamp(secs, nanos)
            .ok_or(DecodeError::Malformed("received_at out of range"))?;
        let client_ip = match r.u8()? {
            0 => None,
            4 => Some(IpAddr::V4(Ipv4Addr::from(r.array::<4>()?))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(r.array::<16>()?))),
            _ => return Err(DecodeError::Malformed("client_ip tag")),
        };
        let chart = match r.u8()? {
            0 => None,
            1 => Some(r.u16_str()?.to_owned()),
            _ => return Err(DecodeError::Malformed("chart tag")),
        };
        let token = WebhookToken::parse(r.u16_str()?)
            .map_err(|_| DecodeError::Malformed("webhook token"))?;
        let body_len = u32::from_le_bytes(r.array()?) as usize;
        let body = Bytes::copy_from_slice(r.take(body_len)?);
        if !r.0.is_empty() {
            return Err(DecodeError::Malformed("trailing bytes"));
        }
        Ok(Self {
            delivery_id,
            token,
            chart,
            body,
            received_at,
            client_ip,
        })
    }
}

/// A `u16` length and the bytes. Tokens and chart ids are short: the edge
/// caps them far below 64 KiB; longer ones are cut rather than mis-framed.
fn put_u16_len(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Malformed("truncated field"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16_str(&mut self) -> Result<&'a str, DecodeError> {
        let len = u16::from_le_bytes(self.array()?);
        std::str::from_utf8(self.take(usize::from(len))?)
            .map_err(|_| DecodeError::Malformed("invalid UTF-8"))
    }
}

/// What is at a frame boundary in a segment's bytes.
#[derive(Debug)]
pub(crate) enum Frame<'a> {
    /// A complete frame whose checksum matches: its payload and total length.
    Complete { payload: &'a [u8], len: usize },
    /// No bytes left.
    End,
    /// A torn or garbage frame: a header or payload cut short, a length out
    /// of bounds, or a checksum mismatch. Nothing here may be decoded.
    Bad,
}

/// Looks at the frame at the start of `buf` without decoding its payload.
pub(crate) fn next_frame(buf: &[u8]) -> Frame<'_> {
    if buf.is_empty() {
        return Frame::End;
    }
    let Some((header, rest)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Frame::Bad;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(MIN_PAYLOAD_LEN..=MAX_RECORD_BYTES).contains(&len) || rest.len() < len {
        return Frame::Bad;
    }
    let payload = &rest[..len];
    if crc32fast::hash(payload) != crc {
        return Frame::Bad;
    }
    Frame::Complete {
        payload,
        len: HEADER_LEN + len,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use bytes::Bytes;
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::{DecodeError, Frame, HEADER_LEN, SpooledWebhook, next_frame};
    use webhook_token::WebhookToken;

    const TOKEN: &str = "q3vG7Xk1_Zp0-LmN2bC4dE5fG6hI7jK8lM9nO0pQ1rS";

    /// A webhook whose body names `n`, received `n` milliseconds after a
    /// fixed instant.
    fn webhook(n: u64) -> SpooledWebhook {
        SpooledWebhook {
            delivery_id: Uuid::now_v7(),
            token: WebhookToken::parse(TOKEN).unwrap(),
            chart: n.is_multiple_of(2).then(|| format!("chart{n}")),
            body: Bytes::from(format!("BINANCE:BTCUSDT long #{n}\n")),
            received_at: DateTime::from_timestamp_millis(
                1_790_000_000_000 + i64::try_from(n).unwrap(),
            )
            .unwrap(),
            client_ip: Some(IpAddr::from([203, 0, 113, (n % 250) as u8])),
        }
    }

    fn decode_frame(frame: &[u8]) -> SpooledWebhook {
        match next_frame(frame) {
            Frame::Complete { payload, len } => {
                assert_eq!(len, frame.len());
                SpooledWebhook::decode_payload(payload).unwrap()
            }
            other => panic!("not a complete frame: {other:?}"),
        }
    }

    #[test]
    fn debug_hides_the_token_and_body() {
        let w = webhook(1);
        let debug = format!("{w:?}");
        assert!(!debug.contains(TOKEN));
        assert!(!debug.contains("BTCUSDT"));
        assert!(debug.contains(&w.delivery_id.to_string()));
    }

    #[test]
    fn every_cut_of_a_frame_is_bad_never_a_record() {
        let frame = webhook(7).encode_frame();
        for cut in 1..frame.len() {
            assert!(
                matches!(next_frame(&frame[..cut]), Frame::Bad),
                "cut at {cut}"
            );
        }
        assert!(matches!(next_frame(&[]), Frame::End));
        assert!(matches!(next_frame(&[0; 64]), Frame::Bad));
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let frame = webhook(3).encode_frame();
        for byte in 0..frame.len() {
            for bit in 0..8 {
                let mut bad = frame.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    matches!(next_frame(&bad), Frame::Bad),
                    "bit {bit} of byte {byte}"
                );
            }
        }
    }

    #[test]
    fn a_newer_version_is_refused_not_misread() {
        let mut frame = webhook(1).encode_frame();
        frame[HEADER_LEN] = 2;
        let payload = &frame[HEADER_LEN..];
        assert_eq!(
            SpooledWebhook::decode_payload(payload),
            Err(DecodeError::UnsupportedVersion(2))
        );
    }

    fn arb_webhook() -> impl Strategy<Value = SpooledWebhook> {
        (
            any::<u128>(),
            proptest::option::of("[A-Za-z0-9]{1,20}"),
            proptest::collection::vec(any::<u8>(), 0..2000),
            -62_000_000_000_i64..250_000_000_000,
            0_u32..1_000_000_000,
            proptest::option::of(any::<IpAddr>()),
        )
            .prop_map(|(id, chart, body, secs, nanos, ip)| SpooledWebhook {
                delivery_id: Uuid::from_u128(id),
                token: WebhookToken::parse(TOKEN).unwrap(),
                chart,
                body: Bytes::from(body),
                received_at: DateTime::<Utc>::from_timestamp(secs, nanos).unwrap(),
                client_ip: ip,
            })
    }

    proptest! {
        #[test]
        fn frames_round_trip(w in arb_webhook()) {
            prop_assert_eq!(decode_frame(&w.encode_frame()), w);
        }
    }
}
