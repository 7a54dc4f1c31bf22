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
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
/// `server`, asked of the kernel by the socket's addresses (a `sock_diag`
/// netlink query, as `ss` makes).
///
/// Why not `/proc/net/tcp`: reading it walks the kernel's whole socket hash
/// table (262,144 buckets on a machine with a few GB), yielding the CPU as
/// it goes, so one read costs 50 to 200 ms of wall time on a busy machine
/// and more the busier it is; done for every connection on the proxy's one
/// thread, it stalled every tunnel behind it (see BENCHMARKS.md). The
/// netlink query looks the one socket up by its addresses, in microseconds.
///
/// # Errors
///
/// The netlink socket could not be had or the kernel refused the query.
pub fn socket_owner(client: SocketAddr, server: SocketAddr) -> io::Result<Option<u32>> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, send, socket,
    };
    use std::os::fd::AsRawFd as _;

    let (client, server) = (canonical(client), canonical(server));
    let (family, request) = diag_request(client, server).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the two ends are of different address families",
        )
    })?;
    let netlink = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    // To the kernel (netlink's default destination); it answers before
    // send returns.
    send(netlink.as_raw_fd(), &request, MsgFlags::empty())?;
    let mut answer = [0u8; 1024];
    let length = recv(netlink.as_raw_fd(), &mut answer, MsgFlags::empty())?;
    read_diag_answer(answer.get(..length).unwrap_or_default(), family)
}

/// `NLMSG_ERROR` and `SOCK_DIAG_BY_FAMILY` (`linux/netlink.h`, `linux/sock_diag.h`).
const NLMSG_ERROR: u16 = 2;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// The netlink header, then `inet_diag_req_v2` or `inet_diag_msg`.
const NLMSG_HEADER: usize = 16;
/// Where `idiag_uid` sits in an answer: after the header, four bytes of
/// family, state, timer and retransmits, the 48-byte socket id, and the
/// expiry and queue sizes.
const UID_AT: usize = NLMSG_HEADER + 4 + 48 + 12;

/// A `SOCK_DIAG_BY_FAMILY` request for the TCP socket whose local end is
/// `client` and remote end `server` (`inet_diag_req_v2`, one socket, not a
/// dump); `None` when the two are of different families.
fn diag_request(client: SocketAddr, server: SocketAddr) -> Option<(u8, Vec<u8>)> {
    const AF_INET: u8 = 2;
    const AF_INET6: u8 = 10;
    const IPPROTO_TCP: u8 = 6;
    const NLM_F_REQUEST: u16 = 1;
    let octets = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => {
            let mut padded = [0u8; 16];
            padded[..4].copy_from_slice(&v4.octets());
            padded
        }
        IpAddr::V6(v6) => v6.octets(),
    };
    let family = match (client.ip(), server.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => AF_INET6,
        _ => return None,
    };
    let mut message = Vec::with_capacity(NLMSG_HEADER + 56);
    message.extend_from_slice(&72u32.to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    message.extend_from_slice(&[0; 8]); // sequence number, port id
    message.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    message.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    // inet_diag_sockid: ports and addresses in network order.
    message.extend_from_slice(&client.port().to_be_bytes());
    message.extend_from_slice(&server.port().to_be_bytes());
    message.extend_from_slice(&octets(client.ip()));
    message.extend_from_slice(&octets(server.ip()));
    message.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    message.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    debug_assert_eq!(message.len(), 72);
    Some((family, message))
}

/// The owner's uid from the kernel's answer; `None` when there is no such
/// socket.
fn read_diag_answer(answer: &[u8], family: u8) -> io::Result<Option<u32>> {
    let malformed = || io::Error::other("a malformed sock_diag answer");
    let u32_at = |at: usize| -> io::Result<u32> {
        answer
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
            .ok_or_else(malformed)
    };
    let kind = answer
        .get(4..6)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes)
        .ok_or_else(malformed)?;
    match kind {
        NLMSG_ERROR => {
            let errno = i32::from_ne_bytes(u32_at(NLMSG_HEADER)?.to_ne_bytes());
            if errno == -nix::libc::ENOENT {
                Ok(None)
            } else {
                Err(io::Error::from_raw_os_error(-errno))
            }
        }
        SOCK_DIAG_BY_FAMILY if answer.get(NLMSG_HEADER) == Some(&family) => {
            u32_at(UID_AT).map(Some)
        }
        _ => Err(malformed()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            socket_owner(listener.local_addr().unwrap(), peer).unwrap(),
            Some(euid),
            "the accepted end, looked up from its side"
        );

        let v6 = std::net::TcpListener::bind("[::1]:0").unwrap();
        let v6_client = std::net::TcpStream::connect(v6.local_addr().unwrap()).unwrap();
        let (_accepted, v6_peer) = v6.accept().unwrap();
        assert_eq!(v6_peer, v6_client.local_addr().unwrap());
        assert_eq!(
            socket_owner(v6_peer, v6.local_addr().unwrap()).unwrap(),
            Some(euid)
        );
        assert!(
            socket_owner(peer, v6.local_addr().unwrap()).is_err(),
            "an IPv4 end and an IPv6 one are no socket"
        );
    }
}
