//! A small Chrome `DevTools` Protocol client: one browser-level websocket,
//! flattened page sessions, replies matched to callers by id.
//!
//! Why our own: `headless_chrome`'s transport costs 100 ms or more per
//! command (its websocket reader holds a lock across a 100 ms read timeout,
//! rust-headless-chrome issue #446), and a capture is a dozen commands. Here
//! a command costs what Chromium takes to answer it, about a millisecond for
//! most. `headless_chrome` still launches and owns the process
//! ([`crate::chromium`]).
//!
//! - **One socket.** [`Connection::connect`] opens the browser's websocket
//!   (`Browser::get_ws_url()`). Page commands carry the `sessionId` of a
//!   target attached with `flatten: true`, so no second connection per tab.
//! - **A reader thread** reads every message and hands each reply to the
//!   caller waiting on its `id` (an `mpsc` channel per call). Events are
//!   ignored: a capture asks, it never listens.
//! - **Every call has a deadline** ([`Call::wait`]); a late reply is dropped.
//! - **A dead socket fails every pending call at once**, and every later
//!   one, with [`CdpError::Closed`]: a killed Chromium fails its captures in
//!   milliseconds, so the relaunch path runs instead of waiting out timeouts.
//!
//! Nothing here logs a command's parameters or a reply: the parameters carry
//! traders' cookies.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

/// How long connecting and the websocket handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing one command may block (a wedged socket).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest message accepted: a 1080p screenshot, base64, is a few MB.
const MAX_MESSAGE: usize = 256 << 20;

/// Why a command got no result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CdpError {
    /// The websocket could not be opened.
    #[error("could not connect to Chromium's DevTools endpoint: {0}")]
    Connect(String),
    /// The socket is gone (Chromium died or closed it).
    #[error("the DevTools connection is closed: {0}")]
    Closed(String),
    /// No reply within the call's deadline.
    #[error("{method} got no answer within {after:?}")]
    Timeout { method: String, after: Duration },
    /// Chromium answered with an error.
    #[error("{method} failed: {message}")]
    Protocol { method: String, message: String },
}

type Reply = mpsc::Sender<Result<Value, CdpError>>;

/// Calls waiting for their reply, and whether the socket is gone.
#[derive(Default)]
struct Pending {
    /// Why the socket closed, once it has.
    closed: Option<String>,
    /// By id: the method (for error messages) and where the reply goes.
    calls: HashMap<u64, (String, Reply)>,
}

struct Shared {
    next_id: AtomicU64,
    pending: Mutex<Pending>,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // The lock guards plain map operations that cannot panic.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fails every waiting call and every later one with `reason`.
    fn close(&self, reason: String) {
        let mut pending = self.pending();
        for (_, (_, reply)) in pending.calls.drain() {
            let _ = reply.send(Err(CdpError::Closed(reason.clone())));
        }
        pending.closed.get_or_insert(reason);
    }
}

struct Inner {
    shared: Arc<Shared>,
    writer: Mutex<WebSocket<TcpStream>>,
    /// A handle on the socket to shut it down when the last clone goes,
    /// which ends the reader thread.
    socket: TcpStream,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// A browser-level `DevTools` connection; clones share the socket.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// A command sent, its reply not yet read.
#[derive(Debug)]
#[must_use = "a call's reply is only read by waiting for it"]
pub struct Call {
    id: u64,
    method: String,
    reply: mpsc::Receiver<Result<Value, CdpError>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Call {
    /// The command's `result`, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// Chromium answered with an error, did not answer in time, or the
    /// socket closed.
    pub fn wait(self, timeout: Duration) -> Result<Value, CdpError> {
        match self.reply.recv_timeout(timeout) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // A reply arriving later finds no one waiting and is dropped.
                self.shared.pending().calls.remove(&self.id);
                Err(CdpError::Timeout {
                    method: self.method,
                    after: timeout,
                })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(CdpError::Closed("the reader thread stopped".to_owned()))
            }
        }
    }
}

impl Connection {
    /// Opens the websocket at `ws_url` (`ws://127.0.0.1:port/devtools/...`)
    /// and starts its reader thread.
    ///
    /// # Errors
    ///
    /// [`CdpError::Connect`]: the address, the TCP connection or the
    /// handshake failed.
    pub fn connect(ws_url: &str) -> Result<Self, CdpError> {
        let connect = |e: &dyn std::fmt::Display| CdpError::Connect(e.to_string());
        let url = url::Url::parse(ws_url).map_err(|e| connect(&e))?;
        if url.scheme() != "ws" {
            return Err(CdpError::Connect(format!(
                "expected a ws:// URL, got {}",
                url.scheme()
            )));
        }
        let stream = url
            .socket_addrs(|| None)
            .map_err(|e| connect(&e))?
            .into_iter()
            .find_map(|address| TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).ok())
            .ok_or_else(|| CdpError::Connect(format!("nothing answered at {ws_url}")))?;
        stream.set_nodelay(true).map_err(|e| connect(&e))?;
        stream
            .set_read_timeout(Some(CONNECT_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
            .map_err(|e| connect(&e))?;
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let (reader, _) = tungstenite::client::client_with_config(ws_url, stream, Some(config))
            .map_err(|e| connect(&e))?;
        // The reader blocks until a message or the socket's end; the writer
        // is a second protocol state over the same socket (client frames,
        // written under a lock, never interleave).
        reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(|e| connect(&e))?;
        let write_half = reader.get_ref().try_clone().map_err(|e| connect(&e))?;
        let socket = reader.get_ref().try_clone().map_err(|e| connect(&e))?;
        let writer = WebSocket::from_raw_socket(write_half, Role::Client, Some(config));
        let shared = Arc::new(Shared {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(Pending::default()),
        });
        let for_reader = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("cdp-reader".into())
            .spawn(move || read_loop(reader, &for_reader))
            .map_err(|e| connect(&e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                writer: Mutex::new(writer),
                socket,
            }),
        })
    }

    /// Whether the socket is gone (every call now fails at once).
    pub fn is_closed(&self) -> bool {
        self.inner.shared.pending().closed.is_some()
    }

    /// Sends `method` (to the page `session`, or to the browser) without
    /// waiting; [`Call::wait`] reads the reply. Several calls in flight at
    /// once are answered in any order.
    ///
    /// # Errors
    ///
    /// [`CdpError::Closed`]: the socket is gone or writing failed.
    pub fn send(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Call, CdpError> {
        let shared = &self.inner.shared;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = mpsc::channel();
        {
            let mut pending = shared.pending();
            if let Some(reason) = &pending.closed {
                return Err(CdpError::Closed(reason.clone()));
            }
            pending.calls.insert(id, (method.to_owned(), reply));
        }
        let mut command = serde_json::Map::new();
        command.insert("id".into(), id.into());
        command.insert("method".into(), method.into());
        command.insert("params".into(), params);
        if let Some(session) = session {
            command.insert("sessionId".into(), session.into());
        }
        let written = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(Message::text(Value::Object(command).to_string()));
        if let Err(error) = written {
            // A socket that cannot be written is as good as closed.
            let reason = format!("writing {method} failed: {error}");
            shared.close(reason.clone());
            let _ = self.inner.socket.shutdown(Shutdown::Both);
            return Err(CdpError::Closed(reason));
        }
        Ok(Call {
            id,
            method: method.to_owned(),
            reply: answer,
            shared: Arc::clone(shared),
        })
    }

    /// Sends `method` and waits at most `timeout` for its `result`.
    ///
    /// # Errors
    ///
    /// As [`Connection::send`] and [`Call::wait`].
    pub fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, CdpError> {
        self.send(session, method, params)?.wait(timeout)
    }
}

/// Reads until the socket ends, routing each reply to its caller; then
/// fails whatever is still waiting.
fn read_loop(mut socket: WebSocket<TcpStream>, shared: &Shared) {
    let reason = loop {
        match socket.read() {
            Ok(Message::Text(text)) => dispatch(shared, text.as_str()),
            Ok(Message::Binary(bytes)) => {
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    dispatch(shared, text);
                }
            }
            Ok(Message::Close(_)) => break "Chromium closed the connection".to_owned(),
            Ok(_) => {}
            Err(error) => break error.to_string(),
        }
    };
    shared.close(reason);
}

fn dispatch(shared: &Shared, text: &str) {
    let Ok(mut message) = serde_json::from_str::<Value>(text) else {
        return;
    };
    // Events have no id.
    let Some(id) = message.get("id").and_then(Value::as_u64) else {
        return;
    };
    let Some((method, reply)) = shared.pending().calls.remove(&id) else {
        // Its caller timed out.
        return;
    };
    let result = match message.get("error") {
        Some(error) => Err(CdpError::Protocol {
            method,
            message: error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_owned),
        }),
        None => Ok(message["result"].take()),
    };
    let _ = reply.send(result);
}
