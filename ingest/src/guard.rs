//! Who may post, and how fast a stranger may guess tokens.
//!
//! - The client's address is the TCP peer, unless the peer is a configured
//!   trusted proxy: then it is the right-most `X-Forwarded-For` entry that is
//!   not itself a trusted proxy. Without trusted proxies the header is
//!   ignored, so nobody can pick their own address.
//! - An optional allowlist (`tradingview` preset) refuses webhooks from
//!   anywhere else before any work is done.
//! - Each address gets a small budget of unknown-token answers per minute
//!   (a token bucket). Past it, webhooks from that address are answered 429
//!   without touching the database, so guessing tokens is slow and cheap for
//!   us, while real traders on other addresses are not affected. Once an
//!   address has sent an unknown token, its requests reserve budget while
//!   their database call runs ([`Guard::admit`]), so concurrency cannot
//!   overdraw it; addresses that never did (TradingView's, normally) pass
//!   without any bookkeeping. The table
//!   of buckets is bounded: full buckets are forgotten first, and when
//!   strangers still overflow it the table is cleared, which only ever errs
//!   towards letting a guesser try again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::config::IpNet;

/// Most addresses tracked at once.
const MAX_TRACKED: usize = 65_536;

/// The guard's settings and state.
#[derive(Debug)]
pub struct Guard {
    allowed: Option<Vec<IpNet>>,
    trusted_proxies: Vec<IpNet>,
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Requests from this address whose database call is under way.
    pending: u32,
}

/// A webhook let through by [`Guard::admit`]; settles its reservation when
/// dropped, whatever way the request ends.
#[derive(Debug)]
pub struct Probe<'a> {
    guard: &'a Guard,
    ip: IpAddr,
    reserved: bool,
    unknown: bool,
}

impl Probe<'_> {
    /// The database said the token is unknown: spend the reservation.
    pub fn unknown_token(mut self) {
        self.unknown = true;
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.guard.settle(self.ip, self.reserved, self.unknown);
    }
}

impl Guard {
    pub fn new(allowed: Option<Vec<IpNet>>, trusted_proxies: Vec<IpNet>, per_minute: u32) -> Self {
        Self {
            allowed,
            trusted_proxies,
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The address a request comes from (see the module docs).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|part| part.trim().parse().ok())
            .collect();
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !self.is_trusted(*ip))
            .unwrap_or(peer)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(ip))
    }

    /// Whether `ip` may post webhooks at all.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|net| net.contains(ip)))
    }

    /// Lets a webhook from `ip` through, or says how long to wait.
    ///
    /// An address that has never sent an unknown token passes freely. One
    /// that has must reserve a token of its budget for the duration of the
    /// database call: checking without reserving would let every request
    /// already in flight through each time a single token refills, so a
    /// guesser's rate would grow with its concurrency. The reservation is
    /// settled when the returned [`Probe`] is dropped: spent if the token
    /// turned out unknown, given back otherwise.
    pub fn admit(&self, ip: IpAddr) -> Result<Probe<'_>, Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let reserved = match buckets.get_mut(&ip) {
            None => false,
            Some(bucket) => {
                self.refill(bucket, Instant::now());
                if bucket.tokens - f64::from(bucket.pending) < 1.0 {
                    return Err(self.time_to_one_token(bucket));
                }
                bucket.pending += 1;
                true
            }
        };
        Ok(Probe {
            guard: self,
            ip,
            reserved,
            unknown: false,
        })
    }

    /// Counts an unknown-token answer against `ip` (also for a malformed
    /// token, which never reaches the database).
    pub fn record_unknown_token(&self, ip: IpAddr) {
        self.settle(ip, false, true);
    }

    fn settle(&self, ip: IpAddr, reserved: bool, unknown: bool) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !unknown {
            if reserved && let Some(bucket) = buckets.get_mut(&ip) {
                bucket.pending = bucket.pending.saturating_sub(1);
            }
            return;
        }
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            let capacity = f64::from(self.per_minute);
            buckets.retain(|_, b| {
                let mut b = *b;
                self.refill(&mut b, now);
                b.pending > 0 || b.tokens < capacity
            });
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: f64::from(self.per_minute),
            at: now,
            pending: 0,
        });
        self.refill(bucket, now);
        if reserved {
            bucket.pending = bucket.pending.saturating_sub(1);
        }
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let capacity = f64::from(self.per_minute);
        let rate = capacity / 60.0;
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.at = now;
    }

    fn time_to_one_token(&self, bucket: &Bucket) -> Duration {
        let rate = f64::from(self.per_minute) / 60.0;
        Duration::from_secs_f64(((1.0 - bucket.tokens) / rate).max(0.0)).max(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 52.89.214.238".parse().expect("header"),
        );
        let untrusting = Guard::new(None, vec![], 10);
        assert_eq!(
            untrusting.client_ip(ip("127.0.0.1"), &headers),
            ip("127.0.0.1")
        );

        let behind_proxy = Guard::new(None, vec![net("127.0.0.1")], 10);
        assert_eq!(
            behind_proxy.client_ip(ip("127.0.0.1"), &headers),
            ip("52.89.214.238")
        );
        // A forged left-most entry never wins over what the proxy saw.
        assert_eq!(
            behind_proxy.client_ip(ip("8.8.8.8"), &headers),
            ip("8.8.8.8")
        );
        assert_eq!(
            behind_proxy.client_ip(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn the_allowlist_admits_only_its_networks() {
        let guard = Guard::new(
            Some(vec![net("52.89.214.238"), net("10.0.0.0/8")]),
            vec![],
            10,
        );
        assert!(guard.allows(ip("52.89.214.238")));
        assert!(guard.allows(ip("10.9.8.7")));
        assert!(!guard.allows(ip("52.89.214.239")));
        assert!(Guard::new(None, vec![], 10).allows(ip("1.2.3.4")));
    }

    #[test]
    fn unknown_tokens_use_up_a_per_address_budget() {
        let guard = Guard::new(None, vec![], 3);
        let guesser = ip("203.0.113.9");
        for _ in 0..3 {
            guard
                .admit(guesser)
                .expect("within the budget")
                .unknown_token();
        }
        let retry = guard.admit(guesser).expect_err("throttled after 3");
        assert!(
            retry >= Duration::from_secs(1) && retry <= Duration::from_secs(21),
            "{retry:?}"
        );
        assert!(
            guard.admit(ip("198.51.100.1")).is_ok(),
            "others are not affected"
        );
    }

    #[test]
    fn requests_in_flight_cannot_overdraw_the_budget() {
        let guard = Guard::new(None, vec![], 5);
        let guesser = ip("203.0.113.10");
        guard.record_unknown_token(guesser); // 4 left
        let in_flight: Vec<_> = (0..10).filter_map(|_| guard.admit(guesser).ok()).collect();
        assert_eq!(in_flight.len(), 4, "only the budget left may be in flight");
        drop(in_flight); // all turned out to be known tokens: given back
        let again: Vec<_> = (0..10).filter_map(|_| guard.admit(guesser).ok()).collect();
        assert_eq!(again.len(), 4);
        for probe in again {
            probe.unknown_token();
        }
        assert!(guard.admit(guesser).is_err(), "spent");
    }

    #[test]
    fn a_clean_address_is_never_held_back() {
        let guard = Guard::new(None, vec![], 1);
        let tradingview = ip("52.89.214.238");
        let in_flight: Vec<_> = (0..1000)
            .map(|_| guard.admit(tradingview).expect("free"))
            .collect();
        drop(in_flight);
        assert!(guard.buckets.lock().expect("lock").is_empty());
    }

    #[test]
    fn the_table_of_addresses_stays_bounded() {
        let guard = Guard::new(None, vec![], 1);
        for n in 0..(u32::try_from(MAX_TRACKED).expect("fits") + 10) {
            guard.record_unknown_token(IpAddr::from(n.to_be_bytes()));
        }
        assert!(guard.buckets.lock().expect("lock").len() <= MAX_TRACKED);
    }
}
