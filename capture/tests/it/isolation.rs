//! capture's Chromium as the operating system sees it: not root,
//! sandboxed (renderers in namespaces of their own under seccomp), none of
//! the daemon's secrets in its environment, no `DevTools` port, a profile
//! directory that is gone once the daemon stops; and a daemon that would run
//! it as root refuses to start, saying what to do.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use stack_harness::TestDb;

use crate::process::{children, descendants, wait_for};
use capture::render::Chrome;

use crate::support::daemon::{Spawn, chromium_user, render_settings, spawn_daemon};
use crate::support::{ChartServer, alert, fs_storage, seal_keys_spec, signed_in_trader, stack};

fn read(pid: u32, file: &str) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/{file}"))
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// A line of `/proc/<pid>/status`, without its name.
fn status(pid: u32, field: &str) -> Option<String> {
    read(pid, "status")?.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
    })
}

fn nul_separated(pid: u32, file: &str) -> Vec<String> {
    read(pid, file)
        .unwrap_or_default()
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A process's arguments. Chromium's zygote children rewrite theirs into
/// one space-separated string, so spaces separate too.
fn args(pid: u32) -> Vec<String> {
    nul_separated(pid, "cmdline")
        .iter()
        .flat_map(|arg| arg.split(' '))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn namespace(pid: u32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|link| link.display().to_string())
        .unwrap_or_default()
}

/// The inodes of the sockets `pid` holds.
fn socket_inodes(pid: u32) -> HashSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|link| {
                    link.to_str()?
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The inodes of every listening TCP socket on the machine (this network
/// namespace).
fn listening_inodes() -> HashSet<String> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) == Some(&"0A") {
                inodes.insert(fields[9].to_owned());
            }
        }
    }
    inodes
}

/// The uid Chromium must run as: `CAPTURE_CHROMIUM_USER`'s when the tests
/// have one (they run as root), else the test's own.
fn expected_uid() -> u32 {
    chromium_user().map_or_else(
        || nix::unistd::geteuid().as_raw(),
        |name| {
            nix::unistd::User::from_name(&name)
                .unwrap()
                .expect("CAPTURE_CHROMIUM_USER exists")
                .uid
                .as_raw()
        },
    )
}

/// Asserts that `pid` runs as `uid` only, without `--no-sandbox` or a
/// `DevTools` port, with none of `secrets` (nor the daemon's settings) in
/// its environment, unable to gain privileges; false when it is gone.
fn unprivileged_without_secrets(pid: u32, uid: u32, secrets: &[String]) -> bool {
    let Some(uids) = status(pid, "Uid") else {
        return false; // gone meanwhile
    };
    let uids: Vec<u32> = uids
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect();
    assert_eq!(
        uids,
        vec![uid; 4],
        "real, effective, saved, fs uid of {pid}"
    );
    let args = args(pid);
    assert!(
        !args.iter().any(|a| a == "--no-sandbox"
            || a == "--disable-setuid-sandbox"
            || a.starts_with("--remote-debugging-port")),
        "{pid}: {args:?}"
    );
    // Chromium's helpers rewrite their titles over the environment's
    // memory: what is there is checked all the same.
    for variable in &nul_separated(pid, "environ") {
        assert!(
            !secrets
                .iter()
                .any(|secret| variable.contains(secret.as_str())),
            "{pid} has a secret in its environment"
        );
        let name = variable.split('=').next().unwrap_or_default();
        assert!(
            ![
                "DATABASE_URL",
                "COOKIE_SEAL_KEYS",
                "SUPABASE_SECRET_KEY",
                "TELEGRAM_BOT_TOKEN",
                "RUST_LOG"
            ]
            .contains(&name),
            "{pid} has the daemon's {name}"
        );
    }
    assert_eq!(
        status(pid, "NoNewPrivs").as_deref(),
        Some("1"),
        "{pid} can gain no privileges"
    );
    true
}

/// What the browser process's environment may hold: what the daemon gives
/// it, and what Debian's `/usr/bin/chromium` script exports (and `sh`'s
/// `PWD`) before it execs the browser.
const ENVIRONMENT: &[&str] = &[
    "HOME",
    "TMPDIR",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "TZ",
    "FONTCONFIG_FILE",
    "FONTCONFIG_PATH",
    "CHROME_WRAPPER",
    "CHROME_DESKTOP",
    "CHROME_VERSION_EXTRA",
    "CHROMIUM_FLAGS",
    "GOOGLE_API_KEY",
    "GOOGLE_DEFAULT_CLIENT_ID",
    "GOOGLE_DEFAULT_CLIENT_SECRET",
    "PWD",
];

/// Asserts that the browser's environment is the cleared one: only the
/// names above, `HOME` inside its launch directory.
fn cleared_environment(browser: u32, launch_dir: &std::path::Path) {
    let environment = nul_separated(browser, "environ");
    let home = environment
        .iter()
        .find_map(|v| v.strip_prefix("HOME="))
        .expect("HOME is set");
    assert!(
        std::path::Path::new(home).starts_with(launch_dir),
        "HOME={home} is in {}",
        launch_dir.display()
    );
    for variable in &environment {
        let name = variable.split('=').next().unwrap_or_default();
        assert!(ENVIRONMENT.contains(&name), "the browser has {name}");
    }
}

/// Asserts Chromium's sandbox: renderers under seccomp, in user, PID and
/// network namespaces of their own.
fn sandboxed(renderers: &[u32], browser: u32) {
    for &renderer in renderers {
        assert_eq!(status(renderer, "Seccomp").as_deref(), Some("2"));
        for kind in ["user", "pid", "net"] {
            assert_ne!(
                namespace(renderer, kind),
                namespace(browser, kind),
                "the renderer {renderer} has a {kind} namespace of its own"
            );
        }
    }
}

/// Asserts that no Chromium process holds a listening TCP socket (no
/// `DevTools` port, nor any other); the check does find the daemon's own
/// `/health` listener.
fn listens_nowhere(chromium: &[u32], daemon: u32) {
    let listening = listening_inodes();
    assert!(
        !socket_inodes(daemon).is_disjoint(&listening),
        "the check sees a listening socket"
    );
    for &pid in chromium {
        assert!(
            socket_inodes(pid).is_disjoint(&listening),
            "{pid} listens on a TCP port"
        );
    }
}

#[tokio::test]
async fn chromium_runs_unprivileged_sandboxed_with_no_secrets_and_no_port() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let charts = ChartServer::start(100).await;
    let trader = signed_in_trader(&db, &charts, "isolated").await;
    let (_, dir) = fs_storage();
    // The page never gets ready, so it stays open in a renderer while the
    // test looks.
    let template = format!("{}/chart/{{chart_id}}/?never=1", charts.base);
    let secret_key = "sb_secret_isolation_test_key_value";
    let bot_token = "123456789:isolation-test-bot-token";
    let daemon = spawn_daemon(
        &test_db,
        &dir,
        Spawn {
            charts: Some(&charts),
            env: &[
                ("CAPTURE_CHART_URL_TEMPLATE", &template),
                ("SUPABASE_SECRET_KEY", secret_key),
                ("TELEGRAM_BOT_TOKEN", bot_token),
                ("CAPTURE_JOB_TIMEOUT", "30s"),
                ("CAPTURE_LEASE", "40s"),
            ],
            ..Spawn::default()
        },
    );
    alert(&db, &trader, 1.0, "long").await;
    wait_for("the chart page", Duration::from_secs(20), async || {
        !charts.seen.lock().unwrap().is_empty()
    })
    .await;

    let chromium = descendants(daemon.pid());
    // The browser is the daemon's one child (the shell and setpriv exec it).
    let browser = children(daemon.pid());
    assert_eq!(browser.len(), 1, "one browser process: {browser:?}");
    let browser = browser[0];
    assert!(args(browser).contains(&"--remote-debugging-pipe".into()));
    let renderers: Vec<u32> = chromium
        .iter()
        .copied()
        .filter(|pid| args(*pid).contains(&"--type=renderer".into()))
        .collect();
    assert!(!renderers.is_empty(), "the chart page has a renderer");

    let secrets = [
        test_db.url.as_str(),
        &seal_keys_spec(),
        secret_key,
        bot_token,
    ]
    .map(str::to_owned);
    let uid = expected_uid();
    assert_ne!(uid, 0);
    let checked = chromium
        .iter()
        .filter(|pid| unprivileged_without_secrets(**pid, uid, &secrets))
        .count();
    assert!(checked >= 3, "browser, zygote and renderer were checked");
    sandboxed(&renderers, browser);
    listens_nowhere(&chromium, daemon.pid());

    // The profile: a fresh directory, gone once the daemon has stopped.
    let profile = args(browser)
        .iter()
        .find_map(|a| {
            a.strip_prefix("--user-data-dir=")
                .map(std::path::PathBuf::from)
        })
        .expect("a profile directory");
    let launch_dir = profile
        .parent()
        .and_then(|home| home.parent())
        .unwrap()
        .to_owned();
    assert!(profile.is_dir());
    cleared_environment(browser, &launch_dir);
    daemon.signal("-TERM");
    assert!(daemon.exit_status().await.success());
    assert!(!launch_dir.exists(), "{} was removed", launch_dir.display());
    test_db.drop_db().await;
}

/// Runs the daemon with `CAPTURE_CHROMIUM_USER` set to `user` (unset for
/// `None`) and returns its exit success and its log.
fn start_with_user(test_db: &TestDb, user: Option<&str>) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_capture"));
    command
        .arg("--drain")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &test_db.url)
        .env("STORAGE", "fs:/nonexistent/screenshots")
        .env("CAPTURE_HEALTH_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(user) = user {
        command.env("CAPTURE_CHROMIUM_USER", user);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn chromium_is_never_started_as_root_and_the_daemon_says_what_to_do() {
    let test_db = TestDb::create(&stack()).await;
    let root = nix::unistd::geteuid().is_root();
    let cases: Vec<(Option<&str>, &str)> = vec![
        (Some("root"), "CAPTURE_CHROMIUM_USER=root is root"),
        (
            Some("no-such-user-for-capture"),
            "CAPTURE_CHROMIUM_USER=no-such-user-for-capture: there is no such user",
        ),
        if root {
            (
                None,
                "capture runs as root and Chromium must not: set CAPTURE_CHROMIUM_USER",
            )
        } else {
            (
                Some("nobody"),
                "only a daemon running as root can start Chromium as another user",
            )
        },
    ];
    for (user, says) in cases {
        let (succeeded, log) = start_with_user(&test_db, user);
        assert!(!succeeded, "{user:?} must stop the daemon: {log}");
        assert!(log.contains(says), "{user:?}: {log}");
    }
    test_db.drop_db().await;
}

/// A Chromium that cannot start (here a stand-in that says what Chromium
/// says when the host gives it no sandbox) fails the launch with its own
/// last words, so the operator reads why.
#[tokio::test]
async fn a_chromium_that_cannot_start_says_why() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    // Chromium's user must reach the stand-in.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake = dir.path().join("chromium");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'FATAL:zygote_host_impl_linux.cc No usable sandbox!' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let charts = ChartServer::start(0).await;
    let mut settings = render_settings(Duration::from_secs(10), &charts.egress_entry());
    settings.chromium = fake;
    let chrome = Chrome::new(settings).unwrap();
    let started = std::time::Instant::now();
    let error = tokio::task::spawn_blocking(move || chrome.warm_up())
        .await
        .unwrap()
        .expect_err("the stand-in exits");
    let message = error.to_string();
    assert!(message.contains("No usable sandbox!"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed at once"
    );
}
