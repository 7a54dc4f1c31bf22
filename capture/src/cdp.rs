//! A small Chrome `DevTools` Protocol client over Chromium's
//! `--remote-debugging-pipe`: flattened page sessions, replies matched to
//! callers by id.
//!
//! Why a pipe: a `DevTools` TCP port is unauthenticated, so any local
//! process could connect to it and read every live context's cookies (every
//! trader's TradingView session). The pipe is two file descriptors only the
//! daemon and its Chromium hold ([`crate::chromium`] hands them over as fds
//! 3 and 4); messages are JSON, each followed by a NUL byte.
//!
//! Why our own client: a command costs what Chromium takes to answer it,
//! about a millisecond for most, and a capture is a dozen commands.
//!
//! - **One connection.** Page commands carry the `sessionId` of a target
//!   attached with `flatten: true`, so no second channel per tab.
//! - **A reader thread** reads every message and hands each reply to the
//!   caller waiting on its `id` (an `mpsc` channel per call). Events are
//!   ignored: a capture asks, it never listens.
//! - **A writer thread** writes the commands, so a caller never blocks on a
//!   pipe Chromium stopped reading: its call times out instead, and the
//!   render layer relaunches Chromium, which ends the writer.
//! - **Every call has a deadline** ([`Call::wait`]); a late reply is dropped.
//! - **A closed pipe fails every pending call at once**, and every later
//!   one, with [`CdpError::Closed`]: a killed Chromium fails its captures in
//!   milliseconds, so the relaunch path runs instead of waiting out timeouts.
//!
//! Nothing here logs a command's parameters or a reply: the parameters carry
//! traders' cookies.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

/// The largest message accepted: a 1080p screenshot, base64, is a few MB.
const MAX_MESSAGE: usize = 256 << 20;

/// Why a command got no result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CdpError {
    /// The pipe is gone (Chromium died or closed it).
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

/// Calls waiting for their reply, and whether the pipe is gone.
#[derive(Default)]
struct Pending {
    /// Why the pipe closed, once it has.
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
    /// Serialized commands for the writer thread; dropping it (with the
    /// last clone of the connection) ends that thread, which closes the
    /// pipe to Chromium.
    outgoing: mpsc::Sender<Vec<u8>>,
}

/// A browser-level `DevTools` connection; clones share the pipe.
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
    /// pipe closed.
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
    /// Drives Chromium over `from_chromium` (its fd 4) and `to_chromium`
    /// (its fd 3), starting the reader and writer threads.
    ///
    /// # Errors
    ///
    /// A thread could not be started.
    pub fn new(
        from_chromium: impl Read + Send + 'static,
        to_chromium: impl Write + Send + 'static,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            next_id: AtomicU64::new(1),
            pending: Mutex::new(Pending::default()),
        });
        let (outgoing, commands) = mpsc::channel::<Vec<u8>>();
        let for_reader = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("cdp-reader".into())
            .spawn(move || read_loop(BufReader::new(from_chromium), &for_reader))?;
        let for_writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("cdp-writer".into())
            .spawn(move || write_loop(to_chromium, &commands, &for_writer))?;
        Ok(Self {
            inner: Arc::new(Inner { shared, outgoing }),
        })
    }

    /// Whether the pipe is gone (every call now fails at once).
    pub fn is_closed(&self) -> bool {
        self.inner.shared.pending().closed.is_some()
    }

    /// Sends `method` (to the page `session`, or to the browser) without
    /// waiting; [`Call::wait`] reads the reply. Several calls in flight at
    /// once are answered in any order.
    ///
    /// # Errors
    ///
    /// [`CdpError::Closed`]: the pipe is gone.
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
        let mut message = Value::Object(command).to_string().into_bytes();
        message.push(0);
        if self.inner.outgoing.send(message).is_err() {
            // The writer stopped: it closed the connection on its way out.
            shared.pending().calls.remove(&id);
            return Err(CdpError::Closed(format!("writing {method} failed")));
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

/// Reads NUL-terminated messages until the pipe ends, routing each reply
/// to its caller; then fails whatever is still waiting.
fn read_loop(mut pipe: impl BufRead, shared: &Shared) {
    let mut message = Vec::new();
    let reason = loop {
        message.clear();
        let limit = u64::try_from(MAX_MESSAGE).unwrap_or(u64::MAX) + 1;
        match (&mut pipe).take(limit).read_until(0, &mut message) {
            Ok(0) => break "Chromium closed the pipe".to_owned(),
            Ok(_) if message.last() == Some(&0) => {
                message.pop();
                if let Ok(text) = std::str::from_utf8(&message) {
                    dispatch(shared, text);
                }
            }
            // No terminator: the pipe ended mid-message, or the message
            // is over the limit (and the stream cannot be resynchronised).
            Ok(_) if message.len() > MAX_MESSAGE => {
                break format!("a message over {MAX_MESSAGE} bytes");
            }
            Ok(_) => break "Chromium closed the pipe mid-message".to_owned(),
            // read_until retries EINTR itself: anything else is fatal.
            Err(error) => break error.to_string(),
        }
    };
    shared.close(reason);
}

/// Writes each command as it comes; a failed write closes the connection.
fn write_loop(mut pipe: impl Write, commands: &mpsc::Receiver<Vec<u8>>, shared: &Shared) {
    for message in commands {
        if let Err(error) = pipe.write_all(&message).and_then(|()| pipe.flush()) {
            shared.close(format!("writing to Chromium failed: {error}"));
            return;
        }
    }
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
