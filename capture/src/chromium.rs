//! The Chromium process's life: it dies with the daemon, and each capture's
//! browser context is disposed of when the capture ends.
//!
//! - **Dies with the daemon.** A daemon killed with `kill -9` cannot close
//!   its browser, and an orphaned Chromium keeps hundreds of megabytes. So
//!   Chromium is started through `setpriv --pdeathsig KILL`: the kernel kills
//!   it when its parent goes. "Parent" means the *thread* that started it,
//!   so every launch happens on one [`Launcher`] thread that lives as long as
//!   the daemon, never on a blocking-pool thread that exits when idle (that
//!   would kill a healthy browser in the middle of other captures). Its
//!   renderer and helper processes exit when the browser process is gone.
//! - **Contexts are disposed.** `headless_chrome` can create a browser
//!   context but keeps the browser-level connection private, and a page
//!   session is not allowed to send `Target.disposeBrowserContext`. Closing
//!   the page alone leaves the empty context in Chromium (about 1 MB each),
//!   so [`dispose_context`] sends that one command over a second, short-lived
//!   browser-level `DevTools` connection.

use std::ffi::OsStr;
use std::io::Write as _;
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use headless_chrome::{Browser, LaunchOptions};
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;

use crate::render::CHROMIUM_FLAGS;

/// How long one browser-level command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

type Reply = mpsc::Sender<Result<Browser, String>>;

/// Launches Chromium on one thread that lives as long as the daemon.
#[derive(Debug)]
pub struct Launcher {
    requests: mpsc::Sender<Reply>,
}

impl Launcher {
    /// Starts the launcher thread for `chromium`. With `setpriv` on the
    /// `PATH` (Debian's util-linux), the browser dies with the daemon;
    /// without it, a warning says so once and Chromium starts directly.
    ///
    /// # Errors
    ///
    /// The wrapper script or the thread could not be created.
    pub fn start(chromium: PathBuf) -> std::io::Result<Self> {
        let wrapper = Wrapper::create(&chromium)?;
        let (requests, incoming) = mpsc::channel::<Reply>();
        std::thread::Builder::new()
            .name("chromium-launcher".into())
            .spawn(move || {
                // The wrapper's directory lives as long as this thread.
                let path = wrapper
                    .as_ref()
                    .map_or(chromium.as_path(), |w| w.path.as_path());
                // Ends when the Chrome that owns the launcher is dropped.
                for reply in incoming {
                    let _ = reply.send(launch(path));
                }
            })?;
        Ok(Self { requests })
    }

    /// Starts a Chromium and connects to it.
    ///
    /// # Errors
    ///
    /// Chromium did not start, or the launcher thread is gone.
    pub fn launch(&self) -> Result<Browser, String> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .send(reply)
            .map_err(|_| "the Chromium launcher thread has stopped".to_owned())?;
        answer
            .recv()
            .map_err(|_| "the Chromium launcher thread has stopped".to_owned())?
    }
}

fn launch(path: &Path) -> Result<Browser, String> {
    let args: Vec<&OsStr> = CHROMIUM_FLAGS.iter().map(OsStr::new).collect();
    let options = LaunchOptions::default_builder()
        .path(Some(path.to_owned()))
        .headless(true)
        .sandbox(false)
        .args(args)
        // The transport gives up on a browser idle this long; the daemon
        // may wait hours for an alert.
        .idle_browser_timeout(Duration::from_hours(365 * 24))
        .build()
        .map_err(|e| e.to_string())?;
    Browser::new(options).map_err(|e| e.to_string())
}

/// `exec setpriv --pdeathsig KILL -- <chromium> "$@"` in a private
/// temporary directory, removed with the launcher.
struct Wrapper {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Wrapper {
    fn create(chromium: &Path) -> std::io::Result<Option<Self>> {
        let Some(setpriv) = find_on_path("setpriv") else {
            tracing::warn!(
                "setpriv (util-linux) is not on PATH: Chromium will outlive a daemon killed with kill -9"
            );
            return Ok(None);
        };
        let dir = tempfile::Builder::new()
            .prefix("capture-chromium-")
            .tempdir()?;
        let script = format!(
            "#!/bin/sh\nexec {} --pdeathsig KILL -- {} \"$@\"\n",
            shell_quote(&setpriv),
            shell_quote(chromium)
        );
        let path = dir.path().join("chromium");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&path)?;
        file.write_all(script.as_bytes())?;
        file.sync_all()?;
        Ok(Some(Self { _dir: dir, path }))
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `path` in single quotes for `sh`.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

/// Disposes of the browser context `context_id` (closing whatever pages it
/// still has).
///
/// # Errors
///
/// The connection failed, or Chromium refused or did not answer in time.
pub fn dispose_context(browser: &Browser, context_id: &str) -> Result<(), String> {
    browser_call(
        browser,
        "Target.disposeBrowserContext",
        &json!({ "browserContextId": context_id }),
    )
    .map(drop)
}

/// The browser contexts Chromium holds besides its default one.
///
/// # Errors
///
/// As [`dispose_context`].
pub fn browser_contexts(browser: &Browser) -> Result<Vec<String>, String> {
    let answer = browser_call(browser, "Target.getBrowserContexts", &json!({}))?;
    serde_json::from_value(answer["browserContextIds"].clone()).map_err(|e| e.to_string())
}

/// One browser-level command over a second, short-lived connection.
fn browser_call(browser: &Browser, method: &str, params: &Value) -> Result<Value, String> {
    let (mut socket, _) = tungstenite::connect(browser.get_ws_url()).map_err(|e| e.to_string())?;
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        set_timeouts(stream)?;
    }
    let command = json!({ "id": 1, "method": method, "params": params });
    socket
        .send(tungstenite::Message::text(command.to_string()))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + CALL_TIMEOUT;
    let answer = loop {
        if Instant::now() >= deadline {
            break Err(format!("no answer to {method}"));
        }
        let message = socket.read().map_err(|e| e.to_string())?;
        let Ok(text) = message.to_text() else {
            continue;
        };
        let Ok(mut reply) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        if reply["id"] == 1 {
            break match reply.get("error") {
                Some(error) => Err(format!("{method}: {error}")),
                None => Ok(reply["result"].take()),
            };
        }
    };
    let _ = socket.close(None);
    answer
}

fn set_timeouts(stream: &TcpStream) -> Result<(), String> {
    stream
        .set_read_timeout(Some(CALL_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CALL_TIMEOUT)))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(
            shell_quote(Path::new("/usr/bin/chromium")),
            "'/usr/bin/chromium'"
        );
        assert_eq!(
            shell_quote(Path::new("/opt/it's/chrome")),
            r"'/opt/it'\''s/chrome'"
        );
    }
}
