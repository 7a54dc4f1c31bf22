//! A flood of webhooks that all fail alike (a database outage during a
//! bar-close burst, a spool refusing strangers, strangers' tokens holding
//! the budget for unverified tokens) writes one WARN or ERROR
//! line per kind and window, not one per webhook, while `/metrics` counts
//! every one; the next line after the window says how many were held back.
//!
//! The app runs in this test's own runtime (a current-thread one), so a
//! subscriber set for this thread sees every line its requests write.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use ingest::db::{Database, RestPath};
use reqwest::StatusCode;
use service_runtime::SecretString;
use tokio::net::TcpListener;
use tracing_subscriber::fmt::MakeWriter;

use crate::helpers::{SpoolLimits, TestApp, Upstream};
use crate::server::spawn_with;

const TOKEN_PATH: &str = "/webhook/u/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const ALERT: &str = r#"{"ticker":"BINANCE:BTCUSDT","price":"67890.5","action":"buy"}"#;
/// Webhooks in the burst.
const BURST: usize = 200;

/// Everything the subscriber writes, as text lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().expect("the log").clone();
        String::from_utf8(bytes)
            .expect("UTF-8 lines")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The lines with `message` in them.
    fn with(&self, message: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| line.contains(message))
            .collect()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("the log").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Captures what this thread logs at info and above, as `main` would write
/// it in text, until the guard is dropped.
fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// Posts `n` webhooks at once; their answers' statuses.
async fn burst(app: &TestApp, n: usize) -> Vec<StatusCode> {
    join_all((0..n).map(|_| app.post(TOKEN_PATH, ALERT)))
        .await
        .into_iter()
        .map(|(status, _, _)| status)
        .collect()
}

/// The value of the `/metrics` series named `name` whose labels include
/// every one of `labels` (0 when absent).
fn series(metrics: &str, name: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .map(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .expect("a whole number")
        })
        .sum()
}

/// The `suppressed` field of a log line.
fn suppressed(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("suppressed="))
        .unwrap_or_else(|| panic!("no suppressed field: {line}"))
        .parse()
        .expect("a count")
}

#[tokio::test]
async fn a_database_outage_during_a_burst_logs_one_line_per_window() {
    let (log, _guard) = capture();
    let window = Duration::from_secs(2);
    // The database path leads nowhere (a refused connection), no spool.
    let app = spawn_with(Duration::from_secs(1), |options| {
        options.log_repeat_window = window;
    })
    .await;

    let statuses = burst(&app, BURST).await;
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    let failed = log.with("Database path failed");
    assert_eq!(failed.len(), 1, "one line for the whole burst: {failed:#?}");
    assert_eq!(suppressed(&failed[0]), 0);
    assert!(failed[0].contains("kind=\"unreachable\""), "{}", failed[0]);
    let loud: Vec<String> = log
        .lines()
        .into_iter()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect();
    assert_eq!(loud, failed, "no other WARN or ERROR line");
    // Every failure is counted where an operator graphs it.
    let metrics = app.metrics().await;
    assert_eq!(
        series(
            &metrics,
            "ingest_upstream_errors_total",
            &["kind=\"unreachable\""]
        ),
        BURST as u64,
        "{metrics}"
    );
    assert_eq!(
        series(
            &metrics,
            "ingest_requests_total",
            &["route=\"webhook\"", "outcome=\"unavailable\""]
        ),
        BURST as u64,
        "{metrics}"
    );

    // After the window, the next failure is logged with the count held back.
    tokio::time::sleep(window).await;
    assert_eq!(burst(&app, 1).await, [StatusCode::SERVICE_UNAVAILABLE]);
    let failed = log.with("Database path failed");
    assert_eq!(failed.len(), 2, "{failed:#?}");
    assert_eq!(suppressed(&failed[1]), BURST as u64 - 1, "{}", failed[1]);
}

#[tokio::test]
async fn spool_refusals_in_a_burst_log_one_line() {
    let (log, _guard) = capture();
    // The database path leads nowhere; the spool takes one unverified
    // webhook a minute, so the rest of the burst is refused (503).
    let app = spawn_with(Duration::from_secs(1), |options| {
        options.spool = Some(SpoolLimits {
            unverified_per_minute: 1,
            replay_backoff: Duration::from_mins(1),
            ..SpoolLimits::default()
        });
    })
    .await;

    let statuses = burst(&app, BURST).await;
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(refused, BURST - 1, "{statuses:?}");
    let lines = log.with("Spool refused a webhook");
    assert_eq!(lines.len(), 1, "one line for the whole burst: {lines:#?}");
    assert!(
        lines[0].contains("reason=\"spool_limited\""),
        "{}",
        lines[0]
    );
    assert_eq!(suppressed(&lines[0]), 0);
    assert_eq!(log.with("Database path failed").len(), 1);
    let metrics = app.metrics().await;
    assert_eq!(
        series(
            &metrics,
            "ingest_spool_refusals_total",
            &["reason=\"spool_limited\""]
        ),
        BURST as u64 - 1,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_burst_of_unverified_tokens_held_back_by_their_budget_logs_one_line() {
    let (log, _guard) = capture();
    // A database that accepts connections and never answers: the one call
    // for unverified tokens allowed at once holds the budget until its
    // deadline, and the burst waits for it in vain.
    let hang = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hang_addr = hang.local_addr().expect("addr");
    let (accepted, mut first_call) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hang.accept().await {
            held.push(stream);
            let _ = accepted.send(());
        }
    });
    let hanging = RestPath::new(
        &format!("http://{hang_addr}").parse().expect("url"),
        &SecretString::from("sb_secret_unused"),
    )
    .expect("a client");
    let app = spawn_with(Duration::from_secs(1), |options| {
        options.upstream = Upstream::Given(Database::rest(hanging, Duration::from_secs(1)));
        options.unverified_in_flight = 1;
    })
    .await;

    let app = Arc::new(app);
    let holder = tokio::spawn({
        let app = Arc::clone(&app);
        async move { burst(&app, 1).await }
    });
    first_call
        .recv()
        .await
        .expect("the first call reached the database");
    let statuses = burst(&app, BURST).await;
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert_eq!(
        holder.await.expect("the first webhook"),
        [StatusCode::SERVICE_UNAVAILABLE]
    );
    let busy = log.with("The budget for unverified tokens is in use");
    assert_eq!(busy.len(), 1, "one line for the whole burst: {busy:#?}");
    assert_eq!(suppressed(&busy[0]), 0);
    assert!(busy[0].contains(" WARN "), "{}", busy[0]);
    // The calls that did get the budget timed out: one line for those too.
    let timeouts = log.with("Database path failed");
    assert_eq!(timeouts.len(), 1, "{timeouts:#?}");
    assert!(timeouts[0].contains("kind=\"timeout\""), "{}", timeouts[0]);
    let metrics = app.metrics().await;
    assert_eq!(
        series(
            &metrics,
            "ingest_requests_total",
            &["route=\"webhook\"", "outcome=\"unavailable\""]
        ),
        BURST as u64 + 1,
        "{metrics}"
    );
}
