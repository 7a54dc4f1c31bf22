//! The real binary at `RUST_LOG=trace`, storing and forgetting a trader's
//! TradingView session on both database paths: everything it writes to
//! stderr is searched for the secrets it handled (the cookie values, the
//! seal key, the service key, the JWT secret, the trader's access token,
//! the database password and the sealed blob). None may appear: `trace` is what an operator
//! turns on when debugging, and a log shipper keeps what it is given.

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use stack_harness::Stack;
use tokio::net::TcpListener;

const SESSIONID: &str = "sid-log-probe-7c1f9e2a";
const SESSIONID_SIGN: &str = "v3:sign-log-probe-5b3d8e10";

/// One ingest process, its stderr going to a file read after it exits.
struct Traced {
    child: Child,
    base: String,
    log: tempfile::NamedTempFile,
}

impl Traced {
    async fn start(stack: &Stack, seal_keys: &str, database_url: Option<&str>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_ingest"));
        command
            .env_clear()
            .env("RUST_LOG", "trace")
            .env("INGEST_LISTEN", format!("127.0.0.1:{port}"))
            .env("SUPABASE_URL", &stack.supabase_url)
            .env("SUPABASE_SERVICE_ROLE_KEY", &stack.service_role_key)
            .env("SUPABASE_JWT_SECRET", &stack.jwt_secret)
            .env("COOKIE_SEAL_KEYS", seal_keys)
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("the log file"));
        if let Some(url) = database_url {
            command.env("DATABASE_URL", url);
        }
        let child = command.spawn().expect("start ingest");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while http
            .get(format!("{base}/health/live"))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "ingest did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, base, log }
    }

    /// Stops the process and returns everything it logged, without the
    /// terminal colour codes (which could split a secret in two).
    fn stop(mut self) -> String {
        self.child.kill().expect("kill ingest");
        self.child.wait().expect("reaped");
        without_colours(&std::fs::read_to_string(self.log.path()).expect("the log"))
    }
}

#[tokio::test]
async fn trace_logs_hold_no_secret_on_either_database_path() {
    let stack = Stack::from_env();
    let raw_key = [0x5au8; 32];
    let seal_key = base64::engine::general_purpose::STANDARD.encode(raw_key);
    let seal_keys = format!("logprobe:{seal_key}");
    let database_password = url::Url::parse(&stack.database_url)
        .expect("DATABASE_URL is a URL")
        .password()
        .expect("DATABASE_URL carries a password")
        .to_owned();
    let cookies = serde_json::json!({ "sessionid": SESSIONID, "sessionid_sign": SESSIONID_SIGN });

    for database_url in [None, Some(stack.database_url.as_str())] {
        let trader = stack.trader("free").await;
        let token = stack.jwt_for(&trader);
        let ingest = Traced::start(&stack, &seal_keys, database_url).await;
        let http = reqwest::Client::new();
        let url = format!("{}/v1/tradingview-session", ingest.base);
        let put = http
            .put(&url)
            .bearer_auth(&token)
            .json(&cookies)
            .send()
            .await
            .expect("PUT answered");
        assert_eq!(
            put.status(),
            StatusCode::OK,
            "{}",
            put.text().await.unwrap()
        );
        let sealed: Option<Vec<u8>> = stack
            .db()
            .await
            .query_one(
                "select tradingview_cookies_sealed from public.user_config where user_id = $1",
                &[&trader.id],
            )
            .await
            .expect("the row")
            .get(0);
        let sealed = sealed.expect("the session was stored");
        let delete = http
            .delete(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("DELETE answered");
        assert_eq!(delete.status(), StatusCode::OK);

        let log = ingest.stop();
        let path = if database_url.is_some() {
            "pool"
        } else {
            "rest"
        };
        // The log is really at trace: the database client's own trace events
        // are there (hyper's on the REST path, tokio-postgres' on the pool).
        let client = if database_url.is_some() {
            " TRACE tokio_postgres::"
        } else {
            " TRACE hyper_util::client::"
        };
        assert!(
            log.lines().any(|line| line.contains(client)),
            "{path}: expected a trace-level log:\n{log}"
        );
        // The sealed blob as tokio-postgres' Debug of a bytea parameter and
        // as Postgres' hex text.
        let sealed_debug = format!("{:?}", &sealed[..24]);
        let sealed_hex = sealed[..24].iter().fold(String::new(), |mut hex, b| {
            write!(hex, "{b:02x}").expect("writing to a String");
            hex
        });
        let jwt_signature = token.rsplit('.').next().expect("a JWT");
        for (what, secret) in [
            ("sessionid", SESSIONID),
            ("sessionid_sign", SESSIONID_SIGN),
            ("the seal key", seal_key.as_str()),
            ("the service key", stack.service_role_key.as_str()),
            ("the JWT secret", stack.jwt_secret.as_str()),
            ("the access token", token.as_str()),
            ("the access token's signature", jwt_signature),
            ("the database password", database_password.as_str()),
            ("the sealed session", sealed_debug.trim_end_matches(']')),
            ("the sealed session (hex)", sealed_hex.as_str()),
        ] {
            assert!(
                !log.contains(secret),
                "{path}: {what} appears in the trace log"
            );
        }
        // Nor as the bytes a Debug of a byte string would print.
        assert!(
            !log.contains(&format!("{:?}", &raw_key[..8])),
            "{path}: the raw seal key appears in the trace log"
        );
    }
}

/// `text` without ANSI SGR sequences (`ESC [ ... m`).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
