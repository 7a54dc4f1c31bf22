//! `webhook-load burst`: a bar close. Every trader's alerts leave at the same moment, each on a
//! connection of its own, from a few source addresses (TradingView sends from four), optionally
//! with strangers' webhooks carrying tokens nobody has mixed in; then the database is watched until
//! every alert that was answered 2xx is stored.
//!
//! Why a tool of its own and not `send --bars`: `send` retries like TradingView and writes every
//! webhook's fate, to find losses during faults (`scripts/chaos`); a burst here asks how long the
//! last of a few thousand simultaneous alerts waits for its first answer, and how long until the
//! last one is stored (a spooled alert is answered first and stored later), without retries that
//! would blur those figures. Latencies are counted from the burst's start, so a
//! request that waited for a connection slot pays for it.
//!
//! One line of figures goes to standard output (labelled with `--name`), for `scripts/bench burst`
//! to put side by side.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::task::JoinSet;

/// Settings, from flags.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// ingest's base URL, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    url: String,
    /// A file with one webhook token per line: one trader each.
    #[arg(long)]
    tokens: PathBuf,
    /// Alerts per trader, all sent at once.
    #[arg(long, default_value_t = 3)]
    alerts: usize,
    /// Webhooks with tokens nobody has, mixed in among the traders' alerts.
    #[arg(long, default_value_t = 0)]
    strangers: usize,
    /// Source addresses the webhooks are sent from, in turn (loopback addresses all work).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5"
    )]
    sources: Vec<IpAddr>,
    /// Marker prefix: alert n carries `"bid":"<label>-<n>"` (letters, digits and dashes only).
    #[arg(long)]
    label: String,
    /// At most this many webhooks in flight (0: all at once, the burst). A warm-up uses a few
    /// dozen, so traders' tokens are known before the burst, as they are after any earlier alert.
    #[arg(long, default_value_t = 0)]
    in_flight: usize,
    /// How long to wait for every 2xx alert to be stored.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// The row's name in the output.
    #[arg(long)]
    name: String,
    /// Send every webhook to `/health` instead (ingest answers 405 without touching the
    /// database): the floor that opening connections and HTTP alone cost on this machine.
    #[arg(long)]
    floor: bool,
    /// Print the column names before the row.
    #[arg(long)]
    header: bool,
    /// A connection that may read `public.signals`; from the environment only.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

/// One webhook's answer.
#[derive(Debug)]
struct Answer {
    marker: String,
    trader: bool,
    /// `None`: no answer (connection error or the client's own 30 s limit).
    status: Option<u16>,
    spooled: bool,
    /// From the burst's start.
    at: Duration,
    /// From the moment this webhook's connection was opened: what the
    /// sender's own timeout (TradingView's 3 s) counts.
    took: Duration,
}

/// The alert a trader's indicator would send.
fn body(marker: &str, n: usize) -> String {
    let action = if n.is_multiple_of(2) { "buy" } else { "sell" };
    format!(
        r#"{{"ticker":"BINANCE:BTCUSDT","price":"67000.5","action":"{action}","interval":"1","strategy":"burst","bid":"{marker}"}}"#
    )
}

/// A token of the right shape that no trader has.
fn stranger_token(label: &str, n: usize) -> String {
    let seed = format!("{label}{n}").replace('-', "");
    format!("{seed:x>43}")
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if args.label.is_empty()
        || !args
            .label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        bail!("--label takes letters, digits and dashes");
    }
    if args.sources.is_empty() {
        bail!("--sources names no address");
    }
    let tokens: Vec<String> = std::fs::read_to_string(&args.tokens)
        .with_context(|| format!("reading {}", args.tokens.display()))?
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        bail!("{} holds no token", args.tokens.display());
    }
    let target: SocketAddr = args
        .url
        .trim_end_matches('/')
        .strip_prefix("http://")
        .and_then(|host| host.parse().ok())
        .with_context(|| format!("--url takes http://<ip>:<port>, not {}", args.url))?;
    let webhooks = webhooks(&args, &tokens);
    let total = webhooks.len();

    let started = Instant::now();
    let answers = send_all(&args, target, webhooks, started).await;
    let summary = Summary::of(&answers);

    // Until every alert answered 2xx is stored, or the settle time is over.
    let (db, connection) = postgres_tls::connect(&args.database_url)
        .await
        .context("connecting to the database (DATABASE_URL)")?;
    tokio::spawn(connection);
    let wanted: HashSet<&str> = answers
        .iter()
        .filter(|a| a.trader && a.status.is_some_and(|s| (200..300).contains(&s)))
        .map(|a| a.marker.as_str())
        .collect();
    let mut stored;
    let stored_at = loop {
        stored = stored_markers(&db, &args.label).await?;
        if wanted.iter().all(|m| stored.contains_key(*m)) {
            break Some(started.elapsed());
        }
        if started.elapsed() > args.settle {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lost = wanted.iter().filter(|m| !stored.contains_key(**m)).count();
    let duplicates: i64 = stored.values().map(|c| c - 1).sum();
    let unanswered_but_stored = stored
        .keys()
        .filter(|m| !wanted.contains(m.as_str()))
        .count();

    if args.header {
        println!("{HEADER}");
    }
    println!(
        "{:<24} {:>6} {:>7} {:>7} {:>5} {:>5} {:>5} {:>7} {:>7} {:>7} {:>7} {:>5} {:>5} {:>5} {:>7} {:>5} {:>4} {:>6}",
        args.name,
        total - args.strangers,
        summary.within_3s,
        summary.spooled,
        summary.client_errors,
        summary.server_errors,
        summary.no_answer,
        ms(summary.p50),
        ms(summary.p99),
        ms(summary.max),
        ms(summary.p99_own),
        summary.strangers_404,
        summary.strangers_429,
        summary.strangers_other,
        stored_at.map_or_else(
            || "never".to_owned(),
            |t| format!("{:.1}s", t.as_secs_f64())
        ),
        lost,
        duplicates,
        unanswered_but_stored,
    );
    Ok(())
}

/// The traders' alerts in rounds (every trader's first, then every second...), strangers'
/// webhooks spread evenly among them: (token, marker, from a trader).
fn webhooks(args: &Args, tokens: &[String]) -> Vec<(String, String, bool)> {
    let traders = tokens.len() * args.alerts;
    let total = traders + args.strangers;
    let mut webhooks = Vec::with_capacity(total);
    for n in 0..traders {
        webhooks.push((
            tokens[n % tokens.len()].clone(),
            format!("{}-{n}", args.label),
            true,
        ));
    }
    for s in 0..args.strangers {
        let at = (s * total / args.strangers.max(1)).min(webhooks.len());
        let n = traders + s;
        webhooks.insert(
            at,
            (
                stranger_token(&args.label, s),
                format!("{}-{n}", args.label),
                false,
            ),
        );
    }
    webhooks
}

/// Column names for [`run`]'s line.
const HEADER: &str = "path                     alerts 2xx<=3s spooled   4xx   5xx  none     p50     p99     max p99-own s-404 s-429 s-etc  stored  lost  dup stored-non2xx";

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

async fn send_all(
    args: &Args,
    target: SocketAddr,
    webhooks: Vec<(String, String, bool)>,
    started: Instant,
) -> Vec<Answer> {
    let limit = if args.in_flight == 0 {
        usize::MAX
    } else {
        args.in_flight
    };
    let mut sending = JoinSet::new();
    let mut answers = Vec::with_capacity(webhooks.len());
    for (n, (token, marker, trader)) in webhooks.into_iter().enumerate() {
        if sending.len() >= limit
            && let Some(Ok(answer)) = sending.join_next().await
        {
            answers.push(answer);
        }
        let source = args.sources[n % args.sources.len()];
        let path = if args.floor {
            "/health".to_owned()
        } else {
            format!("/webhook/u/{token}")
        };
        let body = body(&marker, n);
        sending.spawn(async move {
            let opened = Instant::now();
            let (status, spooled) = match post(source, target, &path, body).await {
                Ok(answer) => answer,
                Err(error) => {
                    eprintln!("burst: no answer: {error:#}");
                    (None, false)
                }
            };
            Answer {
                marker,
                trader,
                status,
                spooled,
                at: started.elapsed(),
                took: opened.elapsed(),
            }
        });
    }
    while let Some(answer) = sending.join_next().await {
        if let Ok(answer) = answer {
            answers.push(answer);
        }
    }
    answers
}

/// One webhook on a connection of its own from `source`, as TradingView
/// sends them: the status, and whether the answer says it was spooled. A
/// bare HTTP/1.1 connection (hyper's), not a client with a pool: thousands
/// at once from one process on the same two cores as the server, so the
/// sender's own cost is kept small.
async fn post(
    source: IpAddr,
    target: SocketAddr,
    path: &str,
    body: String,
) -> anyhow::Result<(Option<u16>, bool)> {
    let socket = match source {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let exchange = async {
        let stream = socket.connect(target).await.context("connecting")?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = http::Request::post(path)
            .header(http::header::HOST, target.to_string())
            .header(http::header::CONTENT_TYPE, "text/plain")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))?;
        let response = sender.send_request(request).await.context("sending")?;
        let status = response.status().as_u16();
        let answer = http_body_util::BodyExt::collect(response.into_body())
            .await
            .context("reading the answer")?
            .to_bytes();
        let json: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        anyhow::Ok((Some(status), json["spooled"] == Value::Bool(true)))
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .context("no answer within 30 s")?
}

/// The answers' counts and latencies: the traders' alerts (what must all be 2xx, fast), and
/// apart from them the strangers' webhooks (404 for a token nobody has, 429 once the unknown
/// tokens' budget is spent).
#[derive(Debug, Default)]
struct Summary {
    within_3s: usize,
    spooled: usize,
    client_errors: usize,
    server_errors: usize,
    no_answer: usize,
    /// From the burst's start.
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// From each webhook's own connection.
    p99_own: Duration,
    strangers_404: usize,
    strangers_429: usize,
    strangers_other: usize,
}

/// The `q` quantile of `times` (sorted in place).
fn quantile(times: &mut [Duration], q: f64) -> Duration {
    times.sort_unstable();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a list of a few thousand"
    )]
    let at = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len().max(1)) - 1;
    times.get(at).copied().unwrap_or_default()
}

impl Summary {
    fn of(answers: &[Answer]) -> Self {
        let mut summary = Self::default();
        let traders: Vec<&Answer> = answers.iter().filter(|a| a.trader).collect();
        let mut times: Vec<Duration> = traders.iter().map(|a| a.at).collect();
        summary.p50 = quantile(&mut times, 0.50);
        summary.p99 = quantile(&mut times, 0.99);
        summary.max = quantile(&mut times, 1.0);
        let mut own: Vec<Duration> = traders.iter().map(|a| a.took).collect();
        summary.p99_own = quantile(&mut own, 0.99);
        for a in traders {
            match a.status {
                Some(s) if (200..300).contains(&s) => {
                    summary.within_3s += usize::from(a.at <= Duration::from_secs(3));
                    summary.spooled += usize::from(a.spooled);
                }
                Some(s) if (400..500).contains(&s) => summary.client_errors += 1,
                Some(_) => summary.server_errors += 1,
                None => summary.no_answer += 1,
            }
        }
        for a in answers.iter().filter(|a| !a.trader) {
            match a.status {
                Some(404) => summary.strangers_404 += 1,
                Some(429) => summary.strangers_429 += 1,
                _ => summary.strangers_other += 1,
            }
        }
        summary
    }
}

/// The run's markers in `public.signals`, with how often each is there.
async fn stored_markers(
    db: &tokio_postgres::Client,
    label: &str,
) -> anyhow::Result<HashMap<String, i64>> {
    let rows = db
        .query(
            r#"select substring(raw_message from '"bid":"([^"]+)"'), count(*)
                 from public.signals
                where raw_message like '%"bid":"' || $1 || '-%'
                group by 1"#,
            &[&label],
        )
        .await
        .context("reading public.signals")?;
    Ok(rows
        .iter()
        .filter_map(|row| Some((row.get::<_, Option<String>>(0)?, row.get::<_, i64>(1))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Option<u16>, ms: u64, spooled: bool) -> Answer {
        Answer {
            marker: String::new(),
            trader: true,
            status,
            spooled,
            at: Duration::from_millis(ms),
            took: Duration::from_millis(ms / 2),
        }
    }

    #[test]
    fn the_summary_counts_each_answer_once_and_takes_percentiles_from_the_start() {
        let mut answers: Vec<Answer> = (1..=98).map(|n| answer(Some(200), n * 10, false)).collect();
        answers.push(answer(Some(202), 3_500, true));
        answers.push(answer(None, 30_000, false));
        answers.push(answer(Some(429), 5, false));
        answers.push(answer(Some(503), 2_000, false));
        let s = Summary::of(&answers);
        assert_eq!(s.within_3s, 98, "the spooled 202 came after 3 s");
        assert_eq!(s.spooled, 1);
        assert_eq!((s.client_errors, s.server_errors, s.no_answer), (1, 1, 1));
        assert_eq!(s.max, Duration::from_secs(30));
        assert_eq!(s.p50, Duration::from_millis(500));
        assert_eq!(s.p99, Duration::from_millis(3_500));
        assert_eq!(s.p99_own, Duration::from_millis(1_750));
    }

    #[test]
    fn strangers_are_counted_apart_from_the_traders() {
        let mut answers = vec![answer(Some(200), 10, false)];
        for (status, ms) in [(Some(404), 9_000), (Some(429), 9_000), (None, 9_000)] {
            let mut stranger = answer(status, ms, false);
            stranger.trader = false;
            answers.push(stranger);
        }
        let s = Summary::of(&answers);
        assert_eq!((s.within_3s, s.client_errors, s.no_answer), (1, 0, 0));
        assert_eq!(
            (s.strangers_404, s.strangers_429, s.strangers_other),
            (1, 1, 1)
        );
        assert_eq!(
            s.max,
            Duration::from_millis(10),
            "strangers' answers are not the traders' latency"
        );
    }

    #[test]
    fn stranger_tokens_have_a_token_shape_and_differ() {
        let a = stranger_token("run-1", 1);
        let b = stranger_token("run-1", 11);
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
