//! `tokio-postgres`'s TLS hooks over `tokio-rustls`.
//!
//! [`MakeRustlsConnect`] is what a pool or `Config::connect` takes; it makes
//! one connector per host (the host name is what `verify-full` checks) and
//! the connector wraps the socket in TLS once the server has agreed to it.
//! [`TlsStream`] reports the `tls-server-end-point` channel binding (RFC
//! 5929: a hash of the server's certificate), which lets SCRAM use
//! `SCRAM-SHA-256-PLUS`: the password proof is then bound to this TLS
//! session, so even an unverified `require` connection cannot be relayed by
//! someone in the middle who presents their own certificate.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// Makes a TLS connector per host; cheap to clone (one shared config).
#[derive(Clone)]
pub struct MakeRustlsConnect {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for MakeRustlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MakeRustlsConnect").finish_non_exhaustive()
    }
}

impl MakeRustlsConnect {
    pub fn new(config: Arc<ClientConfig>) -> Self {
        Self { config }
    }
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        // `tokio-postgres` asks for a connector for a Unix socket too (with
        // an empty name) although it never uses TLS there; a name is only
        // needed once a handshake starts.
        let name = ServerName::try_from(domain.to_owned()).ok();
        Ok(RustlsConnect {
            config: Arc::clone(&self.config),
            name,
        })
    }
}

/// One host's connector.
#[derive(Debug)]
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: Option<ServerName<'static>>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = self.name.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the host is not a valid TLS server name",
                )
            })?;
            let stream = tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await?;
            Ok(TlsStream(stream))
        })
    }
}

/// A TLS session to Postgres.
#[derive(Debug)]
pub struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> TlsStream<S> {
    /// The negotiated protocol version, e.g. for a test to show TLS is on.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.0.get_ref().1.protocol_version()
    }
}

impl<S> tokio_postgres::tls::TlsStream for TlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn channel_binding(&self) -> ChannelBinding {
        self.0
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|certificate| tls_server_end_point(certificate))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

impl<S> AsyncRead for TlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S> AsyncWrite for TlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The hash RFC 5929 asks for: the certificate hashed with its signature's
/// hash, SHA-256 when that is MD5 or SHA-1. `None` for signature algorithms
/// without a defined hash (RSA-PSS, Ed25519), as Postgres itself does: SCRAM
/// then runs without channel binding.
pub fn tls_server_end_point(certificate: &[u8]) -> Option<Vec<u8>> {
    // 1.2.840.113549.1.1.x (RSA) and 1.2.840.10045.4.x (ECDSA).
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    let algorithm = signature_algorithm(certificate)?;
    let hash = match algorithm {
        [rsa @ .., 0x04 | 0x05 | 0x0b] if rsa == RSA => Hash::Sha256,
        [rsa @ .., 0x0c] if rsa == RSA => Hash::Sha384,
        [rsa @ .., 0x0d] if rsa == RSA => Hash::Sha512,
        [ecdsa @ .., 0x02] if ecdsa == ECDSA_SHA2 => Hash::Sha256,
        [ecdsa @ .., 0x03] if ecdsa == ECDSA_SHA2 => Hash::Sha384,
        [ecdsa @ .., 0x04] if ecdsa == ECDSA_SHA2 => Hash::Sha512,
        sha1 if sha1 == ECDSA_SHA1 => Hash::Sha256,
        _ => return None,
    };
    Some(match hash {
        Hash::Sha256 => Sha256::digest(certificate).to_vec(),
        Hash::Sha384 => Sha384::digest(certificate).to_vec(),
        Hash::Sha512 => Sha512::digest(certificate).to_vec(),
    })
}

enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// The OID (its DER content bytes) of a certificate's `signatureAlgorithm`:
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm
/// SEQUENCE { algorithm OID, ... }, signatureValue BIT STRING }`.
fn signature_algorithm(certificate: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = der(certificate, 0x30)?;
    let (_tbs, rest) = der(certificate, 0x30)?;
    let (algorithm, _) = der(rest, 0x30)?;
    let (oid, _) = der(algorithm, 0x06)?;
    Some(oid)
}

/// One DER element with tag `tag` at the start of `input`: its content and
/// what follows it.
fn der(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&length, rest) = rest.split_first()?;
    let (length, rest) = if length < 0x80 {
        (usize::from(length), rest)
    } else {
        let octets = usize::from(length & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let (bytes, rest) = rest.split_at(octets);
        let length = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (length, rest)
    };
    (rest.len() >= length).then(|| rest.split_at(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate's outer structure with the given signature OID.
    fn certificate_with(oid: &[u8]) -> Vec<u8> {
        let tbs = [0x30, 0x03, 0x02, 0x01, 0x01];
        let mut algorithm = vec![0x30, u8::try_from(oid.len() + 2).unwrap(), 0x06];
        algorithm.push(u8::try_from(oid.len()).unwrap());
        algorithm.extend_from_slice(oid);
        let signature = [0x03, 0x02, 0x00, 0xff];
        let body: Vec<u8> = tbs
            .iter()
            .chain(&algorithm)
            .chain(&signature)
            .copied()
            .collect();
        let mut certificate = vec![0x30, 0x81, u8::try_from(body.len()).unwrap()];
        certificate.extend(body);
        certificate
    }

    #[test]
    fn the_hash_follows_the_signature_algorithm() {
        let rsa_sha256 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
        let ecdsa_sha384 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
        let rsa_sha1 = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
        let ed25519 = [0x2b, 0x65, 0x70];
        let rsa_pss = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];

        let certificate = certificate_with(&rsa_sha256);
        assert_eq!(
            tls_server_end_point(&certificate),
            Some(Sha256::digest(&certificate).to_vec())
        );
        let certificate = certificate_with(&ecdsa_sha384);
        assert_eq!(
            tls_server_end_point(&certificate),
            Some(Sha384::digest(&certificate).to_vec())
        );
        let certificate = certificate_with(&rsa_sha1);
        assert_eq!(
            tls_server_end_point(&certificate),
            Some(Sha256::digest(&certificate).to_vec()),
            "SHA-1 is replaced by SHA-256"
        );
        assert_eq!(tls_server_end_point(&certificate_with(&ed25519)), None);
        assert_eq!(tls_server_end_point(&certificate_with(&rsa_pss)), None);
    }

    #[test]
    fn malformed_certificates_have_no_binding() {
        for garbage in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x31, 0x00],
        ] {
            assert_eq!(tls_server_end_point(garbage), None);
        }
    }
}
