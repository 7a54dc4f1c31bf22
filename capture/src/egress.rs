//! Where Chromium may connect: the public internet, and of the rest only
//! the exact `host:port` entries of `CAPTURE_EGRESS_ALLOW`.
//!
//! Why: Chromium renders a third party's page, ads and analytics scripts
//! included, on a machine that sits next to things no page should reach:
//! the loopback services (Postgres, PostgREST, the daemon's own `/health`),
//! the private network, and the cloud's metadata service at
//! 169.254.169.254, which hands out the machine's credentials. A page, a
//! redirect, an image, a worker's `fetch` or a websocket could otherwise
//! reach any of them.
//!
//! How: every connection Chromium makes goes through a SOCKS5 proxy inside
//! the daemon ([`proxy`]), loopback included (`--proxy-bypass-list=<-loopback>`
//! removes Chromium's implicit exception for it). Chromium sends the proxy
//! host names, not addresses (SOCKS5 with remote resolution), so the proxy
//! resolves each name itself, refuses the addresses [`forbidden`] names and
//! connects to exactly the address it checked: a name that resolves to a
//! private address, or one that changes its answer between two lookups (DNS
//! rebinding), gains nothing. Chromium's own resolver is switched off
//! (`--host-resolver-rules`), QUIC is off and WebRTC may use no UDP outside
//! the proxy, so nothing leaves Chromium except through the proxy
//! ([`crate::chromium`] has the flags).
//!
//! Who may use the proxy: it listens on loopback, where every local process
//! can connect, so it serves only connections whose socket belongs to
//! Chromium's user (the kernel says whose: [`proxy::socket_owner`]); others
//! are closed unanswered and counted.
//!
//! The allow-list is matched against the host and port as the page asks for
//! them (`127.0.0.1:8080`, `localhost:3000`, `[::1]:9000`), before any
//! lookup: an entry for `127.0.0.1:8080` lets a page reach that one service
//! and nothing else on loopback, and does not make a name that resolves to
//! 127.0.0.1 acceptable. Allowed hosts are connected to whatever they
//! resolve to.

pub mod proxy;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A host as a connection request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// An address literal.
    Ip(IpAddr),
    /// A DNS name, lower-case, without a trailing dot.
    Name(String),
}

impl Host {
    /// Reads a host as Chromium names it: an address literal (IPv6 with or
    /// without brackets) or a DNS name (compared case-insensitively).
    pub fn parse(host: &str) -> Result<Self, String> {
        let unbracketed = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!("{host:?} is not a host name or an IP address"));
        }
        Ok(Self::Name(name))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Self::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// One `host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(entry: &str) -> Result<Self, String> {
        if entry.contains("://") {
            return Err(format!("{entry:?}: give host:port, without a scheme"));
        }
        let (host, port) = entry
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty())
            .ok_or_else(|| format!("{entry:?} is not host:port"))?;
        if host.contains(':') && !host.starts_with('[') {
            return Err(format!(
                "{entry:?}: write an IPv6 address in brackets, e.g. [::1]:8080"
            ));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{entry:?}: {port:?} is not a port (1-65535)"))?;
        Ok(Self {
            host: Host::parse(host).map_err(|e| format!("{entry:?}: {e}"))?,
            port,
        })
    }
}

/// `CAPTURE_EGRESS_ALLOW`: the exact `host:port` targets Chromium may reach
/// although they are not on the public internet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allow(Vec<Target>);

impl Allow {
    /// Whether `target` is one of the entries.
    pub fn permits(&self, target: &Target) -> bool {
        self.0.contains(target)
    }

    /// The entries.
    pub fn targets(&self) -> &[Target] {
        &self.0
    }
}

impl FromStr for Allow {
    type Err = String;

    /// Comma-separated `host:port` entries; empty allows nothing.
    fn from_str(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl fmt::Display for Allow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, target) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{target}")?;
        }
        Ok(())
    }
}

/// IPv4 blocks that are not the public internet (IANA's special-purpose
/// registry), with what they are.
const V4_FORBIDDEN: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::UNSPECIFIED, 8, "this network"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "shared (carrier-grade NAT)",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local (cloud metadata)",
    ),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved or broadcast"),
];

/// IPv6 blocks inside global unicast (`2000::/3`) that are not the public
/// internet; everything outside `2000::/3` is refused too, except addresses
/// that embed an IPv4 one (mapped, NAT64), which are judged by it.
const V6_FORBIDDEN: &[(Ipv6Addr, u8, &str)] = &[
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignments (Teredo included)",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation",
    ),
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16, "6to4"),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation",
    ),
];

fn v4_in(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn v6_in(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// What `ip` is when it is not an address on the public internet (loopback,
/// private, link-local, carrier-grade NAT, unspecified, multicast,
/// documentation and the other special-purpose blocks); `None` for a public
/// address.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => V4_FORBIDDEN
            .iter()
            .find(|(net, len, _)| v4_in(v4, *net, *len))
            .map(|(_, _, what)| *what),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            // NAT64's well-known prefix carries an IPv4 address in its
            // last 32 bits.
            let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);
            if v6_in(v6, nat64, 96) {
                let [.., a, b, c, d] = v6.octets();
                return forbidden(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
            }
            if v6.is_loopback() {
                return Some("loopback");
            }
            if v6.is_unspecified() {
                return Some("unspecified");
            }
            if !v6_in(v6, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
                return Some(match v6.segments()[0] {
                    0xfc00..=0xfdff => "unique local (private)",
                    0xfe80..=0xfebf => "link-local",
                    0xff00..=0xffff => "multicast",
                    _ => "not global unicast",
                });
            }
            V6_FORBIDDEN
                .iter()
                .find(|(net, len, _)| v6_in(v6, *net, *len))
                .map(|(_, _, what)| *what)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_addresses_are_forbidden() {
        for (address, what) in [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("100.127.255.255", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "this network"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved or broadcast"),
            ("192.0.2.10", "documentation"),
            ("198.19.0.1", "benchmarking"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique local (private)"),
            ("fc00::1", "unique local (private)"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
            ("64:ff9b::a9fe:a9fe", "link-local (cloud metadata)"),
            ("64:ff9b:1::1", "not global unicast"),
            ("::127.0.0.1", "not global unicast"),
            ("fec0::1", "not global unicast"),
            ("2001:db8::1", "documentation"),
            ("2001::1", "IETF protocol assignments (Teredo included)"),
            ("2002:7f00:1::1", "6to4"),
        ] {
            assert_eq!(forbidden(ip(address)), Some(what), "{address}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "172.15.255.255",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.255.255",
            "11.0.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(forbidden(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn the_allow_list_holds_exact_hosts_and_ports() {
        let allow: Allow = " 127.0.0.1:8080, LocalHost.:3000 ,[::1]:9000,,"
            .parse()
            .unwrap();
        assert_eq!(
            allow.to_string(),
            "127.0.0.1:8080,localhost:3000,[::1]:9000"
        );
        let target = |host: &str, port| Target {
            host: Host::parse(host).unwrap(),
            port,
        };
        assert!(allow.permits(&target("127.0.0.1", 8080)));
        assert!(allow.permits(&target("localhost", 3000)));
        assert!(allow.permits(&target("LOCALHOST", 3000)));
        assert!(allow.permits(&target("::1", 9000)));
        assert!(allow.permits(&target("[::1]", 9000)));
        assert!(!allow.permits(&target("127.0.0.1", 8081)), "another port");
        assert!(
            !allow.permits(&target("localhost", 8080)),
            "a name is not its address"
        );
        assert!(!allow.permits(&target("127.0.0.2", 8080)));
        assert_eq!("".parse::<Allow>().unwrap(), Allow::default());
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        for (list, says) in [
            ("127.0.0.1", "is not host:port"),
            (":80", "is not host:port"),
            ("localhost:0", "is not a port"),
            ("localhost:http", "is not a port"),
            ("localhost:70000", "is not a port"),
            ("::1:80", "in brackets"),
            ("http://localhost:80", "without a scheme"),
            ("*.example.com:443", "is not a host name"),
            ("a b:80", "is not a host name"),
        ] {
            let error = list.parse::<Allow>().expect_err(list);
            assert!(error.contains(says), "{list}: {error}");
        }
    }
}
