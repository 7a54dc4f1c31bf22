//! The SOCKS5 proxy every Chromium connection goes through (see
//! [`crate::egress`] for why and what it refuses).
//!
//! SOCKS5 rather than an HTTP proxy: Chromium sends every connection
//! (http, https, websockets, all of them from pages and workers alike) as
//! one `CONNECT host:port` with the name unresolved, so the proxy never
//! parses HTTP and sees exactly one decision per connection. A refusal is
//! SOCKS reply 2 ("not allowed by ruleset"); Chromium fails that request
//! (`net::ERR_SOCKS_CONNECTION_FAILED` for a navigation).
//!
//! It runs on a thread of its own with a single-threaded runtime, apart
//! from the daemon's: the render layer is blocking, and tests drive it from
//! any thread. Dropping the [`Proxy`] stops it and closes every tunnel.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, Opts};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::{Allow, Host, Target, forbidden};

/// How long a client may take to send its greeting and request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long resolving a name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to one address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A refused target is logged at warn at most this often (a page may ask
/// for it in a loop); in between at debug.
const WARN_EVERY: Duration = Duration::from_mins(1);

/// Why a connection was refused: the `reason` label of
/// `capture_egress_refusals_total`.
pub const REFUSED_ADDRESS: &str = "forbidden_address";
/// A connection to the proxy from a process that is not Chromium's user.
pub const REFUSED_STRANGER: &str = "stranger";

/// SOCKS5 reply codes (RFC 1928).
mod reply {
    pub(super) const SUCCEEDED: u8 = 0;
    pub(super) const GENERAL_FAILURE: u8 = 1;
    pub(super) const NOT_ALLOWED: u8 = 2;
    pub(super) const HOST_UNREACHABLE: u8 = 4;
    pub(super) const CONNECTION_REFUSED: u8 = 5;
    pub(super) const COMMAND_NOT_SUPPORTED: u8 = 7;
    pub(super) const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 8;
}

/// The running proxy.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    refusals: IntCounterVec,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct State {
    allow: Allow,
    /// The only user whose connections are served.
    chromium_uid: u32,
    /// The proxy's own address (the far end of a client's socket).
    address: SocketAddr,
    refusals: IntCounterVec,
    /// When each refused target was last logged at warn.
    warned: Mutex<HashMap<String, Instant>>,
}

impl Proxy {
    /// Starts the proxy on a free loopback port, serving connections of
    /// `chromium_uid` only.
    ///
    /// # Errors
    ///
    /// The port, the runtime or the thread could not be had.
    ///
    /// # Panics
    ///
    /// Never: the metric's definition is constant.
    pub fn start(allow: Allow, chromium_uid: u32) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let refusals = IntCounterVec::new(
            Opts::new(
                "capture_egress_refusals_total",
                "Connections Chromium asked for and the egress filter refused, by reason",
            ),
            &["reason"],
        )
        .expect("a valid metric");
        for reason in [REFUSED_ADDRESS, REFUSED_STRANGER] {
            refusals.with_label_values(&[reason]);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let state = Arc::new(State {
            allow,
            chromium_uid,
            address,
            refusals: refusals.clone(),
            warned: Mutex::default(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("egress-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            tracing::error!(%error, "The egress proxy could not start");
                            return;
                        }
                    };
                    tokio::select! {
                        () = serve(listener, state) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here closes every open tunnel.
            })?;
        Ok(Self {
            address,
            refusals,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where Chromium connects (`--proxy-server=socks5://...`).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `capture_egress_refusals_total{reason}`, for the daemon's registry.
    pub fn refusals(&self) -> IntCounterVec {
        self.refusals.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(handle(client, peer, Arc::clone(&state)));
            }
            Err(error) => {
                // Out of file descriptors, say: wait instead of spinning.
                tracing::warn!(%error, "The egress proxy could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut client: TcpStream, peer: SocketAddr, state: Arc<State>) {
    match socket_owner(peer, state.address) {
        Ok(Some(uid)) if uid == state.chromium_uid => {}
        owner => {
            state.refusals.with_label_values(&[REFUSED_STRANGER]).inc();
            let owner = match owner {
                Ok(Some(uid)) => format!("uid {uid}"),
                Ok(None) => "an unknown process".to_owned(),
                Err(error) => format!("unknown ({error})"),
            };
            state.warn_once(
                &format!("stranger {owner}"),
                format_args!(
                    "The egress proxy refused a connection from {owner}: it serves Chromium only"
                ),
            );
            return;
        }
    }
    let Ok(Ok(target)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut client)).await
    else {
        return;
    };
    let upstream = match open(&target, &state).await {
        Ok(upstream) => upstream,
        Err(code) => {
            let _ = client.write_all(&reply_bytes(code)).await;
            return;
        }
    };
    if client
        .write_all(&reply_bytes(reply::SUCCEEDED))
        .await
        .is_err()
    {
        return;
    }
    let mut upstream = upstream;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

fn reply_bytes(code: u8) -> [u8; 10] {
    // The bound address is not used by Chromium: 0.0.0.0:0.
    [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// Reads the greeting (no authentication) and the request; answers the
/// ones the proxy does not serve and returns the target of a `CONNECT`.
async fn handshake(client: &mut TcpStream) -> io::Result<Target> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods).await?;
    if head[0] != 5 || !methods.contains(&0) {
        client.write_all(&[5, 0xff]).await?;
        return Err(io::Error::other("not SOCKS5 without authentication"));
    }
    client.write_all(&[5, 0]).await?;

    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    let [version, command, _, address_type] = request;
    let host = match address_type {
        1 => {
            let mut octets = [0u8; 4];
            client.read_exact(&mut octets).await?;
            Some(Host::Ip(IpAddr::from(octets)))
        }
        4 => {
            let mut octets = [0u8; 16];
            client.read_exact(&mut octets).await?;
            Some(Host::Ip(IpAddr::from(octets)))
        }
        3 => {
            let mut length = [0u8; 1];
            client.read_exact(&mut length).await?;
            let mut name = vec![0u8; usize::from(length[0])];
            client.read_exact(&mut name).await?;
            // Chromium sends address literals this way too.
            std::str::from_utf8(&name)
                .ok()
                .and_then(|name| Host::parse(name).ok())
        }
        _ => None,
    };
    let mut port = [0u8; 2];
    if host.is_some() {
        client.read_exact(&mut port).await?;
    }
    let refusal = if version != 5 {
        Some(reply::GENERAL_FAILURE)
    } else if command != 1 {
        // BIND and UDP ASSOCIATE: never.
        Some(reply::COMMAND_NOT_SUPPORTED)
    } else if host.is_none() {
        Some(reply::ADDRESS_TYPE_NOT_SUPPORTED)
    } else {
        None
    };
    let (None, Some(host)) = (refusal, host) else {
        client
            .write_all(&reply_bytes(refusal.unwrap_or(reply::GENERAL_FAILURE)))
            .await?;
        return Err(io::Error::other("a request the proxy does not serve"));
    };
    Ok(Target {
        host,
        port: u16::from_be_bytes(port),
    })
}

/// Resolves `target`, keeps the addresses it may reach and connects to the
/// first that answers; the SOCKS reply code when there is none.
async fn open(target: &Target, state: &State) -> Result<TcpStream, u8> {
    let candidates: Vec<SocketAddr> = match &target.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
        Host::Name(name) => {
            match tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((name.as_str(), target.port)),
            )
            .await
            {
                Ok(Ok(addresses)) => addresses.collect(),
                _ => return Err(reply::HOST_UNREACHABLE),
            }
        }
    };
    let permitted: Vec<SocketAddr> = if state.allow.permits(target) {
        candidates
    } else {
        let (permitted, refused): (Vec<_>, Vec<_>) = candidates
            .into_iter()
            .partition(|address| forbidden(address.ip()).is_none());
        if permitted.is_empty()
            && let Some(first) = refused.first()
        {
            let what = forbidden(first.ip()).unwrap_or("special-purpose");
            state.refusals.with_label_values(&[REFUSED_ADDRESS]).inc();
            state.warn_once(
                &target.to_string(),
                format_args!(
                    "Egress refused: {target} is {} ({what}); add the exact host:port to CAPTURE_EGRESS_ALLOW if Chromium must reach it",
                    first.ip()
                ),
            );
            return Err(reply::NOT_ALLOWED);
        }
        permitted
    };
    let mut outcome = reply::HOST_UNREACHABLE;
    for address in permitted {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionRefused => {
                outcome = reply::CONNECTION_REFUSED;
            }
            _ => {}
        }
    }
    Err(outcome)
}

impl State {
    /// Logs `message` at warn unless `key` was logged within
    /// [`WARN_EVERY`]; at debug then.
    fn warn_once(&self, key: &str, message: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        let fresh = {
            let mut warned = self
                .warned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if warned.len() > 1024 {
                warned.retain(|_, at| now.duration_since(*at) < WARN_EVERY);
            }
            match warned.get(key) {
                Some(at) if now.duration_since(*at) < WARN_EVERY => false,
                _ => {
                    warned.insert(key.to_owned(), now);
                    true
                }
            }
        };
        if fresh {
            tracing::warn!("{message}");
        } else {
            tracing::debug!("{message}");
        }
    }
}

/// The user owning the local socket `client` that is connected to
/// `server`, from the kernel's socket tables (`/proc/net/tcp`, `tcp6`).
///
/// # Errors
///
/// A table could not be read.
pub fn socket_owner(client: SocketAddr, server: SocketAddr) -> io::Result<Option<u32>> {
    let (client, server) = (canonical(client), canonical(server));
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(text) => text,
            // A kernel without IPv6 has no tcp6.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, local, remote, _, _, _, _, uid, ..] = fields.as_slice() else {
                continue;
            };
            if parse_socket(local) == Some(client) && parse_socket(remote) == Some(server) {
                return Ok(uid.parse().ok());
            }
        }
    }
    Ok(None)
}

/// An IPv4 address in IPv6 clothes (`::ffff:a.b.c.d`) as the IPv4 one.
fn canonical(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, |v4| {
            SocketAddr::new(IpAddr::V4(v4), address.port())
        }),
        IpAddr::V4(_) => address,
    }
}

/// `0100007F:1F90` (the kernel prints each 32-bit word of the address in
/// the machine's byte order, the port as a number) as `127.0.0.1:8080`.
fn parse_socket(field: &str) -> Option<SocketAddr> {
    let (address, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(address)?)),
        32 => {
            let mut octets = [0u8; 16];
            for (i, chunk) in octets.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(address.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(canonical(SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fmt::Write as _;

    /// A socket address as the kernel's tables print it.
    fn kernel_form(octets: &[u8], port: u16) -> String {
        let mut text = String::new();
        for word in octets.chunks(4) {
            let word = u32::from_ne_bytes(word.try_into().unwrap());
            write!(text, "{word:08X}").unwrap();
        }
        format!("{text}:{port:04X}")
    }

    #[test]
    fn kernel_socket_addresses_are_read_in_the_machines_byte_order() {
        assert_eq!(
            parse_socket(&kernel_form(&[127, 0, 0, 1], 8080)),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            parse_socket(&kernel_form(&v6.octets(), 443)),
            Some("[2001:db8::1]:443".parse().unwrap())
        );
        let mapped: Ipv6Addr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(
            parse_socket(&kernel_form(&mapped.octets(), 80)),
            Some("127.0.0.1:80".parse().unwrap()),
            "a v4-mapped address is the IPv4 one"
        );
        assert_eq!(parse_socket("nonsense"), None);
        assert_eq!(parse_socket("0100007F:XYZ"), None);
    }

    #[test]
    fn the_owner_of_a_loopback_socket_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let euid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|id| id.parse().ok())
            .unwrap();
        assert_eq!(
            socket_owner(peer, listener.local_addr().unwrap()).unwrap(),
            Some(euid)
        );
        let unconnected: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(socket_owner(unconnected, peer).unwrap(), None);
    }
}
