//! The Chromium process's life: started so that it dies with the daemon.
//!
//! - **Dies with the daemon.** A daemon killed with `kill -9` cannot close
//!   its browser, and an orphaned Chromium keeps hundreds of megabytes. So
//!   Chromium is started through `setpriv --pdeathsig KILL`: the kernel kills
//!   it when its parent goes. "Parent" means the *thread* that started it,
//!   so every launch happens on one [`Launcher`] thread that lives as long as
//!   the daemon, never on a blocking-pool thread that exits when idle (that
//!   would kill a healthy browser in the middle of other captures). Its
//!   renderer and helper processes exit when the browser process is gone.
//! - **`headless_chrome` only launches and owns it.** Dropping the last
//!   [`Browser`] kills the process. Every command a capture sends goes over
//!   the daemon's own `DevTools` client ([`crate::cdp`]), which is far
//!   faster than `headless_chrome`'s transport. Its own connection still
//!   attaches to each tab Chromium opens; the first time that races a
//!   disposal (a tab gone before it attached) it gives up listening and
//!   logs at info and warn, which the daemon's default log filter hides
//!   (`headless_chrome=error`). Chromium then keeps the few target events
//!   per capture it can no longer deliver; measured: no growth in
//!   Chromium's PSS over 300 further captures (until the next recycle).

use std::ffi::OsStr;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use headless_chrome::{Browser, LaunchOptions};

use crate::render::CHROMIUM_FLAGS;

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
