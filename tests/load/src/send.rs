//! `webhook-load send`: a bounded, open-loop load of webhooks from several simulated traders,
//! retried the way TradingView retries.
//!
//! Webhook `n` (0-based) leaves at `n / rate` seconds after the start, whatever happened to the
//! earlier ones (open loop: an outage does not slow the schedule down, as it does not slow
//! TradingView down). It goes to trader `n mod T` of the tokens file and carries a unique marker,
//! `"chaos_id":"<label>-<n>"`, in a JSON alert, so `reconcile` can find it again in
//! `public.signals.raw_message`.
//!
//! Each attempt has TradingView's 3 s deadline. A 5xx other than 504, a connection error or a
//! missed deadline ("no answer") is tried again after `--retry-delay`, at most `--retries` times;
//! any other answer is final. Every attempt's answer is recorded (one line per webhook in `--out`,
//! in the format of [`crate::outcome`]), so the caller can count 2xx and 5xx answers, not only
//! final outcomes. A summary goes to standard error.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::outcome::{Answer, Outcome, marker};

/// Settings, from flags.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// ingest's base URL, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    url: String,
    /// A file with one webhook token per line: one simulated trader each.
    #[arg(long)]
    tokens: PathBuf,
    /// Webhooks per second, spread over the traders.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// How long to send for (e.g. `12s`, `10m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Marker prefix: webhook n carries `"chaos_id":"<label>-<n>"`.
    #[arg(long)]
    label: String,
    /// Where the per-webhook lines go.
    #[arg(long)]
    out: PathBuf,
    /// Retries after a 5xx (not 504) or no answer; TradingView makes 3.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Wait before each retry; TradingView waits 5 s.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    retry_delay: Duration,
    /// Deadline per attempt; TradingView gives up after 3 s.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Local addresses to send from, in turn (webhook n from address n mod k), e.g.
    /// `127.0.0.2,127.0.0.3`: TradingView's alerts come from a few shared addresses, so a proxy or
    /// a limit keyed by address sees all traders behind them. Default: the system's choice.
    #[arg(long = "source-addrs", value_delimiter = ',')]
    source_addrs: Vec<IpAddr>,
    /// A new TCP connection for every attempt, as TradingView opens one per alert (default: keep
    /// connections alive between webhooks).
    #[arg(long)]
    new_connections: bool,
}

/// Totals for the summary line.
#[derive(Debug, Default)]
struct Totals {
    webhooks: u64,
    answers_2xx: u64,
    answers_4xx: u64,
    answers_5xx: u64,
    no_answer: u64,
    final_2xx: u64,
    given_up: u64,
    spooled: u64,
}

impl Totals {
    fn add(&mut self, outcome: &Outcome) {
        self.webhooks += 1;
        for answer in &outcome.answers {
            match answer {
                Answer::Status(s) if (200..300).contains(s) => self.answers_2xx += 1,
                Answer::Status(s) if (400..500).contains(s) => self.answers_4xx += 1,
                Answer::Status(s) if *s >= 500 => self.answers_5xx += 1,
                Answer::Status(_) => {}
                Answer::None => self.no_answer += 1,
            }
        }
        match outcome.last() {
            answer if answer.is_2xx() => self.final_2xx += 1,
            answer if answer.retried() => self.given_up += 1,
            _ => {}
        }
        self.spooled += u64::from(outcome.spooled);
    }
}

/// The alert TradingView would send for webhook `n`.
fn body(label: &str, n: u64) -> String {
    let action = if n.is_multiple_of(2) { "buy" } else { "sell" };
    // A price that moves, so the built-in chart has a line to draw.
    let price = 67_000.0 + f64::from(u32::try_from(n % 997).unwrap_or(0)) * 1.5;
    format!(
        r#"{{"ticker":"BINANCE:BTCUSDT","price":"{price:.1}","action":"{action}","interval":"1","strategy":"chaos","chaos_id":"{}"}}"#,
        marker(label, n)
    )
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Sends one webhook with TradingView's retries.
async fn deliver(
    client: reqwest::Client,
    args: Arc<Args>,
    url: String,
    marker: String,
    body: String,
) -> Outcome {
    let sent_at_ms = unix_ms();
    let mut outcome = Outcome {
        marker,
        sent_at_ms,
        answers: Vec::new(),
        first_latency: Duration::ZERO,
        signal_id: None,
        spooled: false,
    };
    for attempt in 0..=args.retries {
        if attempt > 0 {
            tokio::time::sleep(args.retry_delay).await;
        }
        let started = Instant::now();
        let answer = match client
            .post(&url)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.clone())
            .send()
            .await
        {
            Ok(response) => {
                let status = response.status().as_u16();
                if response.status().is_success() {
                    // A body that does not arrive within the deadline still was a 2xx answer.
                    if let Ok(json) = response.json::<Value>().await {
                        outcome.signal_id = json
                            .get("signal_id")
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                        outcome.spooled =
                            json.get("spooled").and_then(Value::as_bool) == Some(true);
                    }
                }
                Answer::Status(status)
            }
            Err(_) => Answer::None,
        };
        if attempt == 0 {
            outcome.first_latency = started.elapsed();
        }
        outcome.answers.push(answer);
        if !answer.retried() {
            break;
        }
    }
    outcome
}

fn read_tokens(args: &Args) -> anyhow::Result<Vec<String>> {
    let tokens: Vec<String> = std::fs::read_to_string(&args.tokens)
        .with_context(|| format!("Failed to read {}", args.tokens.display()))?
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        bail!("{} holds no tokens", args.tokens.display());
    }
    Ok(tokens)
}

/// One HTTP client per source address (or one for the system's choice), each with TradingView's
/// deadline and, with `--new-connections`, no idle connections kept.
fn clients(args: &Args) -> anyhow::Result<Vec<reqwest::Client>> {
    let sources: Vec<Option<IpAddr>> = if args.source_addrs.is_empty() {
        vec![None]
    } else {
        args.source_addrs.iter().copied().map(Some).collect()
    };
    sources
        .into_iter()
        .map(|source| {
            let mut builder = reqwest::Client::builder()
                .timeout(args.timeout)
                .connect_timeout(args.timeout)
                .local_address(source);
            if args.new_connections {
                builder = builder.pool_max_idle_per_host(0);
            }
            builder
                .build()
                .with_context(|| format!("Failed to build the HTTP client for {source:?}"))
        })
        .collect()
}

/// Sends the whole load, writing each webhook's line as it finishes; then prints the totals.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let args = Arc::new(args);
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        bail!("--rate must be above 0 and at most 10000");
    }
    let tokens = read_tokens(&args)?;
    let out = File::create(&args.out)
        .with_context(|| format!("Failed to create {}", args.out.display()))?;
    let out = Arc::new(Mutex::new(BufWriter::new(out)));
    let clients = clients(&args)?;

    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "rate and duration are bounded and positive"
    )]
    let count = (args.rate * args.duration.as_secs_f64()).round() as u64;
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let base = args.url.trim_end_matches('/').to_owned();
    let totals = Arc::new(Mutex::new(Totals::default()));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = JoinSet::new();
    for n in 0..count {
        ticks.tick().await;
        let token = &tokens[usize::try_from(n).unwrap_or(0) % tokens.len()];
        let url = format!("{base}/webhook/u/{token}");
        let (marker, body) = (marker(&args.label, n), body(&args.label, n));
        let (client, args, out, totals) = (
            clients[usize::try_from(n).unwrap_or(0) % clients.len()].clone(),
            Arc::clone(&args),
            Arc::clone(&out),
            Arc::clone(&totals),
        );
        tasks.spawn(async move {
            let outcome = deliver(client, args, url, marker, body).await;
            totals.lock().expect("not poisoned").add(&outcome);
            let mut out = out.lock().expect("not poisoned");
            // Flushed per line, so a soak run can read the file while it grows.
            out.write_all(outcome.line().as_bytes())
                .and_then(|()| out.flush())
        });
        // Reap finished tasks as we go, so a 10-minute run does not keep them all.
        while let Some(done) = tasks.try_join_next() {
            done.context("a webhook task panicked")?
                .context("Failed to write the output")?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a webhook task panicked")?
            .context("Failed to write the output")?;
    }
    let t = totals.lock().expect("not poisoned");
    eprintln!(
        "webhook-load {}: {} webhooks; answers 2xx {}, 4xx {}, 5xx {}, none {}; final 2xx {}, given up {}, spooled {}",
        args.label,
        t.webhooks,
        t.answers_2xx,
        t.answers_4xx,
        t.answers_5xx,
        t.no_answer,
        t.final_2xx,
        t.given_up,
        t.spooled
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_json_with_its_marker() {
        let json: Value = serde_json::from_str(&body("pg", 7)).expect("valid JSON");
        assert_eq!(json["chaos_id"], "pg-7");
        assert_eq!(json["ticker"], "BINANCE:BTCUSDT");
    }

    #[test]
    fn totals_count_every_attempt_and_the_final_answer() {
        let mut totals = Totals::default();
        let outcome = |answers: Vec<Answer>| Outcome {
            marker: "x-0".into(),
            sent_at_ms: 0,
            answers,
            first_latency: Duration::ZERO,
            signal_id: None,
            spooled: false,
        };
        totals.add(&outcome(vec![Answer::Status(503), Answer::Status(200)]));
        totals.add(&outcome(vec![Answer::None; 4]));
        totals.add(&outcome(vec![Answer::Status(422)]));
        assert_eq!(totals.webhooks, 3);
        assert_eq!(totals.answers_2xx, 1);
        assert_eq!(totals.answers_5xx, 1);
        assert_eq!(totals.answers_4xx, 1);
        assert_eq!(totals.no_answer, 4);
        assert_eq!(totals.final_2xx, 1);
        assert_eq!(totals.given_up, 1);
        let line = outcome(vec![Answer::None, Answer::Status(202)]).line();
        assert_eq!(line, "x-0\t0\t202\t2\tnone,202\t0.000\t-\t0\n");
    }
}
