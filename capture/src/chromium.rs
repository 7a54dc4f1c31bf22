//! Starting Chromium isolated: never as root, sandboxed, with an empty
//! environment, a fresh profile, `DevTools` over a pipe, every connection
//! through the egress filter, and dying with the daemon.
//!
//! Chromium renders a third party's page with every trader's TradingView
//! session passing through it, so one renderer bug must not hand those over,
//! nor the daemon's own secrets, nor the network behind the machine:
//!
//! - **Never root, sandbox on.** Chromium refuses its sandbox as root, so a
//!   daemon running as root starts it as `CAPTURE_CHROMIUM_USER` (a
//!   dedicated unprivileged user: `setpriv --reuid --regid --clear-groups`)
//!   and refuses to start without one ([`SetupError::RootWithoutUser`]); a
//!   daemon running as anyone else starts it as itself. No `--no-sandbox`:
//!   renderers run in Chromium's namespace sandbox with its seccomp filter,
//!   and if the host cannot give it one Chromium does not start (the error
//!   carries its last words, "No usable sandbox!"). `--no-new-privs`: no
//!   setuid program can give any of its processes more.
//! - **An empty environment.** The daemon's environment holds
//!   `DATABASE_URL`, `COOKIE_SEAL_KEYS` and the Storage key; Chromium gets
//!   only `HOME`, `TMPDIR`, the XDG directories (all inside its launch
//!   directory), a fixed `PATH`, and the locale and font settings (`LANG`,
//!   `LANGUAGE`, `LC_ALL`, `TZ`, `FONTCONFIG_FILE`, `FONTCONFIG_PATH`) when
//!   the daemon has them.
//! - **`DevTools` over a pipe, no port.** `--remote-debugging-pipe` reads
//!   commands from fd 3 and writes to fd 4 ([`crate::cdp`]); nothing listens
//!   on TCP, so no other local process can drive the browser.
//! - **A fresh profile per launch, removed afterwards.** Each launch gets
//!   `<tmp>/capture-chromium-profile-XXXXXX/` (the daemon's, mode 0711), with
//!   `home/` (Chromium's user, 0700) as its `HOME` and `home/profile` as
//!   `--user-data-dir`; the directory goes when that Chromium is stopped.
//!   The daemon holds a lock on its `.lock` file while the Chromium lives,
//!   so one killed with `kill -9` leaves a directory the next start finds
//!   unlocked and removes.
//! - **Every connection through the egress filter** ([`crate::egress`]):
//!   a SOCKS5 proxy in the daemon, loopback included, Chromium's own DNS
//!   resolution off, QUIC off, no WebRTC UDP outside the proxy.
//! - **Dies with the daemon.** A daemon killed with `kill -9` cannot close
//!   its browser, and an orphaned Chromium keeps hundreds of megabytes. So
//!   Chromium is started through `setpriv --pdeathsig KILL`: the kernel kills
//!   it when its parent goes (setpriv sets it after switching users, which
//!   would clear it). "Parent" means the *thread* that started it, so every
//!   launch happens on one [`Launcher`] thread that lives as long as the
//!   daemon, never on a blocking-pool thread that exits when idle (that
//!   would kill a healthy browser in the middle of other captures). Its
//!   renderer and helper processes exit when the browser process is gone.
//!
//! The launch itself is `/bin/sh -c 'exec "$@" 3<&0 4>&1 </dev/null >&2'`
//! with the pipes as the shell's stdin and stdout: the shell moves them to
//! fds 3 and 4 and execs setpriv, which execs Chromium, so the browser keeps
//! the pid the daemon spawned, and no unsafe code is needed to place file
//! descriptors in the child.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead as _, BufReader};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::json;

use crate::cdp;
use crate::egress::{self, proxy::Proxy};

/// What every launch needs.
#[derive(Clone, Debug)]
pub struct LaunchSettings {
    /// The Chromium binary.
    pub chromium: PathBuf,
    /// `CAPTURE_CHROMIUM_USER`: the user Chromium runs as when the daemon
    /// runs as root.
    pub user: Option<String>,
    /// `CAPTURE_EGRESS_ALLOW`: the non-public `host:port` targets Chromium
    /// may reach.
    pub egress: egress::Allow,
}

/// Why Chromium cannot be started at all: each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "capture runs as root and Chromium must not: set CAPTURE_CHROMIUM_USER to a dedicated \
         unprivileged user (e.g. `useradd --system --user-group --no-create-home --shell \
         /usr/sbin/nologin capture-chromium`), or run capture as an unprivileged user"
    )]
    RootWithoutUser,
    #[error("CAPTURE_CHROMIUM_USER={0}: there is no such user")]
    UnknownUser(String),
    #[error("CAPTURE_CHROMIUM_USER={0}: could not look the user up")]
    Lookup(String, #[source] nix::Error),
    #[error("CAPTURE_CHROMIUM_USER={0} is root: name an unprivileged user of its own")]
    PrivilegedUser(String),
    #[error(
        "CAPTURE_CHROMIUM_USER={user}: only a daemon running as root can start Chromium as \
         another user, and this one runs as uid {uid}; unset it (Chromium then runs as uid {uid})"
    )]
    CannotSwitch { user: String, uid: u32 },
    #[error(
        "CAPTURE_CHROMIUM_USER is set, but setpriv (util-linux), which starts Chromium as that \
         user, is not on PATH"
    )]
    NoSetpriv,
    #[error("could not start a thread or the egress proxy")]
    Start(#[source] io::Error),
}

/// How long Chromium may take to start and answer its first command.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Chromium's last lines of output kept for an error message.
const LAST_WORDS: usize = 12;
/// The launch directories' name prefix (under the temporary directory).
const DIR_PREFIX: &str = "capture-chromium-profile-";
/// How Chromium is started: see the module docs.
const SHELL_LAUNCH: &str = r#"exec "$@" 3<&0 4>&1 </dev/null >&2"#;
/// Settings passed through from the daemon's environment when set: the
/// locale and fonts a chart is drawn with; nothing secret.
const PASSED_THROUGH: &[&str] = &[
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "TZ",
    "FONTCONFIG_FILE",
    "FONTCONFIG_PATH",
];

/// The flags every launch gets, besides the profile and the proxy.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--remote-debugging-pipe",
    // Egress: every connection through the proxy, loopback too; no DNS of
    // Chromium's own (the proxy is an address, so nothing needs it); no
    // QUIC, no WebRTC UDP outside the proxy.
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--disable-quic",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    // Nothing of Chromium's own on the network.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-breakpad",
    "--disable-client-side-phishing-detection",
    "--disable-component-extensions-with-background-pages",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-first-run",
    "--password-store=basic",
    "--use-mock-keychain",
    // Headless on a server: no GPU, /dev/shm may be small.
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--force-color-profile=srgb",
    // Several captures render side by side: none of them is a background
    // tab whose timers Chromium may slow down.
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    "--disable-hang-monitor",
    "--disable-ipc-flooding-protection",
    "--disable-popup-blocking",
    "--disable-prompt-on-repost",
    "--disable-features=TranslateUI",
    "--enable-automation",
];

/// Who Chromium runs as.
#[derive(Clone, Debug)]
struct Identity {
    uid: u32,
    gid: u32,
    /// Whether setpriv switches to it (the daemon is root).
    switch: bool,
}

impl Identity {
    fn resolve(user: Option<&str>) -> Result<Self, SetupError> {
        let euid = nix::unistd::geteuid();
        let lookup = |name: &str| -> Result<nix::unistd::User, SetupError> {
            nix::unistd::User::from_name(name)
                .map_err(|e| SetupError::Lookup(name.to_owned(), e))?
                .ok_or_else(|| SetupError::UnknownUser(name.to_owned()))
        };
        match user.filter(|u| !u.is_empty()) {
            None if euid.is_root() => Err(SetupError::RootWithoutUser),
            None => Ok(Self {
                uid: euid.as_raw(),
                gid: nix::unistd::getegid().as_raw(),
                switch: false,
            }),
            Some(name) => {
                let user = lookup(name)?;
                if user.uid.is_root() {
                    return Err(SetupError::PrivilegedUser(name.to_owned()));
                }
                if !euid.is_root() && user.uid != euid {
                    return Err(SetupError::CannotSwitch {
                        user: name.to_owned(),
                        uid: euid.as_raw(),
                    });
                }
                Ok(Self {
                    uid: user.uid.as_raw(),
                    gid: user.gid.as_raw(),
                    switch: euid.is_root(),
                })
            }
        }
    }
}

/// A command for the launcher thread and where its child goes.
type Spawn = (Command, mpsc::Sender<io::Result<Child>>);

/// Launches Chromium on one thread that lives as long as the daemon; owns
/// the egress proxy every launch uses.
#[derive(Debug)]
pub struct Launcher {
    requests: mpsc::Sender<Spawn>,
    chromium: PathBuf,
    identity: Identity,
    setpriv: Option<PathBuf>,
    proxy: Proxy,
}

impl Launcher {
    /// Checks who Chromium will run as, clears launch directories that
    /// killed daemons left behind, and starts the egress proxy and the
    /// launcher thread. With `setpriv` on the `PATH` (Debian's util-linux),
    /// the browser dies with the daemon; without it, a warning says so once
    /// and Chromium starts directly (unless it must switch users).
    ///
    /// # Errors
    ///
    /// [`SetupError`]: who Chromium would run as is not acceptable, or the
    /// proxy or the thread could not start.
    pub fn start(settings: LaunchSettings) -> Result<Self, SetupError> {
        let identity = Identity::resolve(settings.user.as_deref())?;
        let setpriv = find_on_path("setpriv");
        if setpriv.is_none() {
            if identity.switch {
                return Err(SetupError::NoSetpriv);
            }
            tracing::warn!(
                "setpriv (util-linux) is not on PATH: Chromium will outlive a daemon killed with kill -9"
            );
        }
        remove_stale_directories(&std::env::temp_dir());
        let proxy = Proxy::start(settings.egress, identity.uid).map_err(SetupError::Start)?;
        let (requests, incoming) = mpsc::channel::<Spawn>();
        std::thread::Builder::new()
            .name("chromium-launcher".into())
            .spawn(move || {
                // Ends when the Launcher is dropped.
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                    // The command (and the child's ends of its pipes) is
                    // dropped here, so the pipes close when Chromium exits.
                }
            })
            .map_err(SetupError::Start)?;
        Ok(Self {
            requests,
            chromium: settings.chromium,
            identity,
            setpriv,
            proxy,
        })
    }

    /// `capture_egress_refusals_total{reason}`, for the daemon's registry.
    pub fn egress_refusals(&self) -> prometheus::IntCounterVec {
        self.proxy.refusals()
    }

    /// Starts a Chromium and waits until it answers over its pipe.
    ///
    /// # Errors
    ///
    /// Chromium did not start or did not answer (the message ends with its
    /// last lines of output), or the launcher thread is gone.
    pub fn launch(&self) -> Result<Browser, String> {
        let dir = LaunchDir::create(&self.identity)
            .map_err(|e| format!("could not create Chromium's profile directory: {e}"))?;
        let (commands, to_chromium) =
            io::pipe().map_err(|e| format!("could not create a pipe: {e}"))?;
        let (from_chromium, replies) =
            io::pipe().map_err(|e| format!("could not create a pipe: {e}"))?;
        let mut command = self.command(&dir);
        command
            .stdin(commands)
            .stdout(replies)
            .stderr(Stdio::piped());
        let (reply, answer) = mpsc::channel();
        let stopped = || "the Chromium launcher thread has stopped".to_owned();
        self.requests
            .send((command, reply))
            .map_err(|_| stopped())?;
        let mut child = answer
            .recv()
            .map_err(|_| stopped())?
            .map_err(|e| format!("could not start {}: {e}", self.chromium.display()))?;
        let pid = child.id();
        let last_words = child
            .stderr
            .take()
            .map(|stderr| keep_last_words(stderr, pid));
        let cdp = match cdp::Connection::new(from_chromium, to_chromium) {
            Ok(cdp) => cdp,
            Err(error) => {
                // Dropping the child's handle would leave it running.
                let _ = child.kill();
                let _ = child.wait();
                dir.remove();
                return Err(format!("could not start the DevTools threads: {error}"));
            }
        };
        let browser = Browser {
            child: Mutex::new(Some(child)),
            pid,
            cdp,
            dir,
            last_words: last_words.unwrap_or_default(),
        };
        match browser
            .cdp
            .call(None, "Browser.getVersion", json!({}), START_TIMEOUT)
        {
            Ok(_) => Ok(browser),
            Err(error) => {
                let last_words = browser.last_words.clone();
                drop(browser);
                Err(format!(
                    "Chromium did not start ({error}); its last output: {}",
                    last_words.text()
                ))
            }
        }
    }

    /// `/bin/sh -c 'exec ...' [setpriv ... --] chromium flags`, with an
    /// empty environment but for what Chromium needs.
    fn command(&self, dir: &LaunchDir) -> Command {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(SHELL_LAUNCH).arg("chromium-launch");
        if let Some(setpriv) = &self.setpriv {
            command.arg(setpriv);
            if self.identity.switch {
                command
                    .arg(format!("--reuid={}", self.identity.uid))
                    .arg(format!("--regid={}", self.identity.gid))
                    .arg("--clear-groups");
            }
            command.args(["--no-new-privs", "--pdeathsig", "KILL", "--"]);
        }
        let mut profile = OsString::from("--user-data-dir=");
        profile.push(dir.home.join("profile"));
        command
            .arg(&self.chromium)
            .args(CHROMIUM_FLAGS)
            .arg(profile)
            .arg(format!("--proxy-server=socks5://{}", self.proxy.address()))
            .arg("about:blank");
        command
            .env_clear()
            .env("HOME", &dir.home)
            .env("TMPDIR", &dir.home)
            .env("XDG_CONFIG_HOME", dir.home.join(".config"))
            .env("XDG_CACHE_HOME", dir.home.join(".cache"))
            .env("XDG_DATA_HOME", dir.home.join(".local/share"))
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            // The daemon's working directory may be closed to Chromium's user.
            .current_dir(&dir.home);
        for name in PASSED_THROUGH {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
    }
}

/// Chromium's last lines of output (stderr and stdout), for errors.
#[derive(Clone, Debug, Default)]
struct LastWords {
    lines: Arc<Mutex<VecDeque<String>>>,
    /// Set once the output has ended (all of it has been read).
    ended: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

/// How long an error message waits for Chromium's output to end.
const LAST_WORDS_WAIT: Duration = Duration::from_secs(1);

impl LastWords {
    /// The last lines, once the output has ended (or after a moment: a
    /// helper process may hold it open).
    fn text(&self) -> String {
        let (ended, changed) = &*self.ended;
        let ended = ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(
            changed
                .wait_timeout_while(ended, LAST_WORDS_WAIT, |ended| !*ended)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let lines = self
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if lines.is_empty() {
            "(none)".to_owned()
        } else {
            lines.iter().cloned().collect::<Vec<_>>().join(" | ")
        }
    }
}

/// Reads Chromium's output on a thread of its own: each line at debug
/// (target `chromium`), the last few kept for an error message.
fn keep_last_words(output: impl io::Read + Send + 'static, pid: u32) -> LastWords {
    let words = LastWords::default();
    let kept = words.clone();
    let reader = move || {
        for line in BufReader::new(output).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line).trim_end().to_owned();
            if line.is_empty() {
                continue;
            }
            tracing::debug!(target: "chromium", pid, "{line}");
            let mut lines = kept
                .lines
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if lines.len() == LAST_WORDS {
                lines.pop_front();
            }
            lines.push_back(line);
        }
        let (ended, changed) = &*kept.ended;
        *ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        changed.notify_all();
    };
    if let Err(error) = std::thread::Builder::new()
        .name("chromium-output".into())
        .spawn(reader)
    {
        tracing::warn!(%error, "Could not start reading Chromium's output");
    }
    words
}

/// A running Chromium: its process, the `DevTools` connection to it, and
/// its launch directory. [`Browser::close`] (or dropping it) kills the
/// process and removes the directory.
pub struct Browser {
    /// `None` once closed.
    child: Mutex<Option<Child>>,
    pid: u32,
    cdp: cdp::Connection,
    dir: LaunchDir,
    last_words: LastWords,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("pid", &self.pid)
            .field("dir", &self.dir.root)
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// The browser process's id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The connection that drives it.
    pub fn cdp(&self) -> &cdp::Connection {
        &self.cdp
    }

    /// Whether its process still runs (a killed one stays a zombie until
    /// reaped, so the state counts too).
    pub fn running(&self) -> bool {
        fs::read_to_string(format!("/proc/{}/stat", self.pid)).is_ok_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        })
    }
}

impl Browser {
    /// Kills the process and removes its launch directory, at once, even
    /// while captures still hold the browser (they fail). Idempotent.
    pub fn close(&self) {
        let child = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
            self.dir.remove();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.close();
    }
}

/// One launch's directory: see the module docs.
#[derive(Debug)]
struct LaunchDir {
    root: PathBuf,
    home: PathBuf,
    /// Locked while the launch lives: a directory whose lock can be taken
    /// belongs to no running daemon.
    _lock: File,
}

impl LaunchDir {
    fn create(identity: &Identity) -> io::Result<Self> {
        let root = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()?
            .keep();
        let made = (|| {
            // Chromium's user must pass through to its home, and see nothing else.
            let mode = if identity.switch { 0o711 } else { 0o700 };
            fs::set_permissions(&root, fs::Permissions::from_mode(mode))?;
            // Locked before it has its name, so a concurrent sweep never
            // finds it unlocked.
            let unnamed = root.join(".lock.new");
            let lock = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&unnamed)?;
            lock.try_lock().map_err(io::Error::other)?;
            fs::rename(&unnamed, root.join(".lock"))?;
            let home = root.join("home");
            fs::DirBuilder::new().mode(0o700).create(&home)?;
            if identity.switch {
                std::os::unix::fs::chown(&home, Some(identity.uid), Some(identity.gid))?;
            }
            Ok(Self {
                root: root.clone(),
                home,
                _lock: lock,
            })
        })();
        if made.is_err() {
            let _ = fs::remove_dir_all(&root);
        }
        made
    }

    /// Removes the directory. Chromium's helper processes may still write
    /// into it for a moment after the browser process died, so a removal
    /// that fails is tried again.
    fn remove(&self) {
        for attempt in 1..=5 {
            match fs::remove_dir_all(&self.root) {
                Ok(()) => return,
                Err(error) if error.kind() == io::ErrorKind::NotFound => return,
                Err(error) if attempt == 5 => {
                    tracing::warn!(%error, dir = %self.root.display(), "Could not remove Chromium's profile directory");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50 * attempt)),
            }
        }
    }
}

/// Removes launch directories under `tmp` whose lock nobody holds: what
/// daemons killed with `kill -9` (or a power cut) left behind.
fn remove_stale_directories(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        // No lock file: being created, or not ours.
        let Ok(lock) = File::open(dir.join(".lock")) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "Removed a Chromium profile directory left behind");
                }
                Err(error) => {
                    tracing::debug!(%error, dir = %dir.display(), "Could not remove a stale Chromium profile directory");
                }
            }
        }
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_directory_is_removed_and_a_live_one_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let dir = tmp.path().join(name);
            fs::create_dir_all(dir.join("home/profile")).unwrap();
            fs::write(dir.join("home/profile/Cookies"), b"x").unwrap();
            File::create(dir.join(".lock")).unwrap();
            dir
        };
        let stale = make("capture-chromium-profile-stale");
        let live = make("capture-chromium-profile-live");
        let held = File::open(live.join(".lock")).unwrap();
        held.try_lock().unwrap();
        let unlocked_foreign = tmp.path().join("capture-chromium-profile-nolock");
        fs::create_dir(&unlocked_foreign).unwrap();
        let other = tmp.path().join("something-else");
        fs::create_dir(&other).unwrap();
        File::create(other.join(".lock")).unwrap();

        remove_stale_directories(tmp.path());
        assert!(!stale.exists(), "nobody holds its lock");
        assert!(
            live.join("home/profile/Cookies").exists(),
            "its lock is held"
        );
        assert!(unlocked_foreign.exists(), "no lock file: not ours to judge");
        assert!(other.exists(), "not a launch directory");
        drop(held);
    }

    #[test]
    fn the_launch_shell_moves_the_pipes_to_fds_3_and_4() {
        // The same shell line as a launch, with a stand-in for Chromium that
        // echoes fd 3 to fd 4 and says where its stdin and stdout point.
        let (commands, mut to_child) = io::pipe().unwrap();
        let (mut from_child, replies) = io::pipe().unwrap();
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(SHELL_LAUNCH)
            .arg("chromium-launch")
            .args([
                "/bin/sh",
                "-c",
                "head -c 5 <&3 >&4; readlink /proc/self/fd/0 >&2; echo out",
            ])
            .stdin(commands)
            .stdout(replies)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        io::Write::write_all(&mut to_child, b"hello").unwrap();
        drop(to_child);
        let mut echoed = String::new();
        io::Read::read_to_string(&mut from_child, &mut echoed).unwrap();
        let output = child.wait_with_output().unwrap();
        assert_eq!(echoed, "hello");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(
            stderr, "/dev/null\nout\n",
            "stdin is /dev/null, stdout joins stderr"
        );
    }
}
