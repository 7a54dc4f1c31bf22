//! Who may post, and how much a stranger may spend.
//!
//! TradingView sends every trader's alerts from the same four addresses, so
//! nothing here may refuse a webhook because of where it came from alone.
//!
//! - **The client's address** is the TCP peer, unless the peer is a
//!   configured trusted proxy: then `X-Forwarded-For` is read from the right,
//!   past trusted proxies, and the first entry that is not one is the
//!   client. An entry that does not parse ends the walk (the last address
//!   believed stands): a forged entry further left never wins. Without
//!   trusted proxies the header is ignored, so nobody can pick their own
//!   address. IPv4-mapped IPv6 addresses count as the IPv4 address.
//! - **An optional allowlist** (`tradingview` preset) refuses webhooks from
//!   anywhere else before any work is done.
//! - **Per-address budgets** apply only to addresses outside the allowlist
//!   (with no allowlist, to every address) and only to tokens the edge
//!   cannot vouch for ([`crate::tokens`]): a known token is never refused
//!   because of its address. Each such address gets a small token bucket of
//!   unverified tokens per minute, spent by unknown-token answers and by
//!   unverified webhooks spooled while the database is down; past it, 429
//!   without touching the database. IPv6 addresses are budgeted by /64 (one
//!   host usually holds a whole /64). Requests in flight reserve budget
//!   ([`Guard::admit`]), so concurrency cannot overdraw it. The table of
//!   buckets is bounded: full buckets are forgotten first, and when
//!   strangers still overflow it the table is cleared, which only ever errs
//!   towards letting a guesser try again.
//! - **A global budget for unverified tokens**: at most a fixed number of
//!   database calls for tokens nobody has vouched for are in flight at once
//!   ([`Guard::unverified_slot`]). Guessed tokens, wherever they come from,
//!   can take that share of the database path and no more; a new trader's
//!   first alert competes only with them, never with known traders.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::HeaderMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::IpNet;

/// Most addresses tracked at once.
const MAX_TRACKED: usize = 65_536;

/// The guard's settings and state.
#[derive(Debug)]
pub struct Guard {
    allowed: Option<Vec<IpNet>>,
    trusted_proxies: Vec<IpNet>,
    per_minute: u32,
    /// Keyed by [`budget_key`].
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    unverified: Arc<Semaphore>,
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
    /// Whether `ip` has a budget at all.
    budgeted: bool,
    reserved: bool,
    unknown: bool,
}

impl Probe<'_> {
    /// The token turned out unknown, or an unverified webhook was spooled
    /// on it: spend the reservation.
    pub fn spend(mut self) {
        self.unknown = true;
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if self.budgeted {
            self.guard.settle(self.ip, self.reserved, self.unknown);
        }
    }
}

impl Guard {
    /// `per_minute`: each budgeted address's unverified tokens per minute;
    /// `unverified_in_flight`: database calls for unverified tokens at once.
    pub fn new(
        allowed: Option<Vec<IpNet>>,
        trusted_proxies: Vec<IpNet>,
        per_minute: u32,
        unverified_in_flight: usize,
    ) -> Self {
        Self {
            allowed,
            trusted_proxies,
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
            unverified: Arc::new(Semaphore::new(unverified_in_flight.max(1))),
        }
    }

    /// The address a request comes from (see the module docs).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.is_trusted(client) {
            return client;
        }
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| {
                v.to_str()
                    .map_or_else(|_| vec![""], |v| v.split(',').collect())
            })
            .collect();
        for entry in entries.into_iter().rev() {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                // Whoever wrote this entry is not to be believed further
                // left: the hop that passed it on stands.
                break;
            };
            client = ip.to_canonical();
            if !self.is_trusted(client) {
                break;
            }
        }
        client
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

    /// Whether `ip` has a budget for unverified tokens: only addresses
    /// outside the allowlist (all of them when there is none), never the
    /// shared addresses every trader's alerts come from.
    pub fn budgets(&self, ip: IpAddr) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|nets| !nets.iter().any(|net| net.contains(ip)))
    }

    /// A slot for one database call on an unverified token, held until the
    /// permit is dropped; `None` when the global budget stayed in use for
    /// `wait` (callers wait in arrival order).
    pub async fn unverified_slot(&self, wait: Duration) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(wait, Arc::clone(&self.unverified).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Lets an unverified token from `ip` through, or says how long to
    /// wait. Addresses without a budget ([`Guard::budgets`]) always pass.
    ///
    /// An address that has never spent any passes freely. One that has must
    /// reserve a token of its budget for the duration of the database call:
    /// checking without reserving would let every request already in flight
    /// through each time a single token refills, so a guesser's rate would
    /// grow with its concurrency. The reservation is settled when the
    /// returned [`Probe`] is dropped: spent if the token turned out unknown
    /// (or the webhook was spooled unverified), given back otherwise.
    pub fn admit(&self, ip: IpAddr) -> Result<Probe<'_>, Duration> {
        let ip = budget_key(ip);
        if !self.budgets(ip) {
            return Ok(Probe {
                guard: self,
                ip,
                budgeted: false,
                reserved: false,
                unknown: false,
            });
        }
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
            budgeted: true,
            reserved,
            unknown: false,
        })
    }

    /// Counts an unknown token against `ip` without a database call (a
    /// malformed token, or one the negative cache answers), if `ip` has a
    /// budget.
    pub fn record_unknown_token(&self, ip: IpAddr) {
        let ip = budget_key(ip);
        if self.budgets(ip) {
            self.settle(ip, false, true);
        }
    }

    fn settle(&self, ip: IpAddr, reserved: bool, unknown: bool) {
        if !reserved && !unknown {
            return;
        }
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

/// What a budget is kept for: the address itself for IPv4, its /64 for
/// IPv6 (already canonical: an IPv4-mapped address is IPv4).
fn budget_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1_u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 @ IpAddr::V4(_) => v4,
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

    fn guard(allowed: Option<Vec<IpNet>>, proxies: Vec<IpNet>, per_minute: u32) -> Guard {
        Guard::new(allowed, proxies, per_minute, 4)
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().expect("header"));
        headers
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let headers = forwarded("6.6.6.6, 52.89.214.238");
        let untrusting = guard(None, vec![], 10);
        assert_eq!(
            untrusting.client_ip(ip("127.0.0.1"), &headers),
            ip("127.0.0.1")
        );

        let behind_proxy = guard(None, vec![net("127.0.0.1")], 10);
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
    fn the_walk_stops_at_the_first_entry_that_does_not_parse() {
        let proxies = guard(None, vec![net("127.0.0.1"), net("10.0.0.0/8")], 10);
        // Today's bug: skipping "garbage" let the forged 6.6.6.6 win.
        assert_eq!(
            proxies.client_ip(ip("127.0.0.1"), &forwarded("6.6.6.6, garbage")),
            ip("127.0.0.1"),
            "the proxy that passed the garbage on stands"
        );
        assert_eq!(
            proxies.client_ip(ip("127.0.0.1"), &forwarded("6.6.6.6, garbage, 10.1.1.1")),
            ip("10.1.1.1"),
            "the last trusted hop before it"
        );
        assert_eq!(
            proxies.client_ip(
                ip("127.0.0.1"),
                &forwarded("6.6.6.6, 52.89.214.238, 10.1.1.1")
            ),
            ip("52.89.214.238"),
            "trusted hops are walked past"
        );
        let mut two_headers = forwarded("6.6.6.6");
        two_headers.append("x-forwarded-for", "52.89.214.238".parse().expect("header"));
        assert_eq!(
            proxies.client_ip(ip("127.0.0.1"), &two_headers),
            ip("52.89.214.238"),
            "several headers are one list, the last one rightmost"
        );
        let mut not_text = HeaderMap::new();
        not_text.insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"6.6.6.6, \xff").expect("header"),
        );
        assert_eq!(
            proxies.client_ip(ip("127.0.0.1"), &not_text),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        let proxies = guard(Some(vec![net("52.89.214.238")]), vec![net("127.0.0.1")], 10);
        assert_eq!(
            proxies.client_ip(ip("::ffff:127.0.0.1"), &forwarded("::ffff:52.89.214.238")),
            ip("52.89.214.238"),
            "a mapped proxy is trusted and a mapped client is its IPv4 address"
        );
        assert!(proxies.allows(proxies.client_ip(ip("::ffff:52.89.214.238"), &HeaderMap::new())));
    }

    #[test]
    fn the_allowlist_admits_only_its_networks() {
        let guard = guard(
            Some(vec![net("52.89.214.238"), net("10.0.0.0/8")]),
            vec![],
            10,
        );
        assert!(guard.allows(ip("52.89.214.238")));
        assert!(guard.allows(ip("10.9.8.7")));
        assert!(!guard.allows(ip("52.89.214.239")));
        assert!(Guard::new(None, vec![], 10, 1).allows(ip("1.2.3.4")));
    }

    #[test]
    fn unknown_tokens_use_up_a_per_address_budget() {
        let guard = guard(None, vec![], 3);
        let guesser = ip("203.0.113.9");
        for _ in 0..3 {
            guard.admit(guesser).expect("within the budget").spend();
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
    fn allowed_addresses_have_no_budget_to_use_up() {
        let guard = guard(Some(vec![net("52.89.214.238")]), vec![], 1);
        let tradingview = ip("52.89.214.238");
        assert!(!guard.budgets(tradingview));
        for _ in 0..100 {
            guard.admit(tradingview).expect("never throttled").spend();
            guard.record_unknown_token(tradingview);
        }
        assert!(guard.admit(tradingview).is_ok());
        assert!(guard.buckets.lock().expect("lock").is_empty());
    }

    #[test]
    fn ipv6_budgets_are_kept_per_64() {
        let guard = guard(None, vec![], 2);
        guard.admit(ip("2001:db8:1:2::1")).expect("budget").spend();
        guard
            .admit(ip("2001:db8:1:2:ffff::9"))
            .expect("budget")
            .spend();
        assert!(
            guard.admit(ip("2001:db8:1:2::77")).is_err(),
            "the same /64 shares one budget"
        );
        assert!(
            guard.admit(ip("2001:db8:1:3::1")).is_ok(),
            "the next /64 has its own"
        );
        guard
            .admit(ip("::ffff:198.51.100.4"))
            .expect("budget")
            .spend();
        guard.admit(ip("198.51.100.4")).expect("budget").spend();
        assert!(
            guard.admit(ip("198.51.100.4")).is_err(),
            "a mapped address is its IPv4 address"
        );
    }

    #[test]
    fn requests_in_flight_cannot_overdraw_the_budget() {
        let guard = guard(None, vec![], 5);
        let guesser = ip("203.0.113.10");
        guard.record_unknown_token(guesser); // 4 left
        let in_flight: Vec<_> = (0..10).filter_map(|_| guard.admit(guesser).ok()).collect();
        assert_eq!(in_flight.len(), 4, "only the budget left may be in flight");
        drop(in_flight); // all turned out to be known tokens: given back
        let again: Vec<_> = (0..10).filter_map(|_| guard.admit(guesser).ok()).collect();
        assert_eq!(again.len(), 4);
        for probe in again {
            probe.spend();
        }
        assert!(guard.admit(guesser).is_err(), "spent");
    }

    #[test]
    fn a_clean_address_is_never_held_back() {
        let guard = guard(None, vec![], 1);
        let tradingview = ip("52.89.214.238");
        let in_flight: Vec<_> = (0..1000)
            .map(|_| guard.admit(tradingview).expect("free"))
            .collect();
        drop(in_flight);
        assert!(guard.buckets.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn the_global_budget_for_unverified_tokens_is_a_number_of_calls_at_once() {
        let guard = guard(None, vec![], 1);
        let wait = Duration::from_millis(20);
        let mut slots = Vec::new();
        for _ in 0..10 {
            if let Some(slot) = guard.unverified_slot(wait).await {
                slots.push(slot);
            }
        }
        assert_eq!(slots.len(), 4);
        let released = slots.pop();
        let waiting = guard.unverified_slot(Duration::from_secs(5));
        let (slot, ()) = tokio::join!(waiting, async move {
            tokio::time::sleep(wait).await;
            drop(released);
        });
        assert!(slot.is_some(), "a waiting call gets the slot given back");
    }

    #[test]
    fn the_table_of_addresses_stays_bounded() {
        let guard = guard(None, vec![], 1);
        for n in 0..(u32::try_from(MAX_TRACKED).expect("fits") + 10) {
            guard.record_unknown_token(IpAddr::from(n.to_be_bytes()));
        }
        assert!(guard.buckets.lock().expect("lock").len() <= MAX_TRACKED);
    }
}
