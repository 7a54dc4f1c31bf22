//! `webhook-load send`: a bounded, open-loop load of webhooks from several simulated traders,
//! retried the way TradingView retries, either at a steady rate or in bar-close bursts.
//!
//! Steady (`--rate`, `--duration`): webhook `n` (0-based) leaves at `n / rate` seconds after the
//! start. Bars (`--bars`, `--bar-every`, `--alerts`): at each bar close every trader's alerts leave
//! at the same moment, each on a new connection, as TradingView sends them when one indicator's
//! buyers all get their alert on the same candle; bar `b` leaves at `b * bar-every` and a line
//! `bar <b> of <bars> left` goes to standard error, so a script can break something while that
//! burst is in flight. Either way the schedule is open loop: an outage does not slow it down, as
//! it does not slow TradingView down. Webhook `n` goes to trader `n mod T` of the tokens file (in
//! a bar, each trader gets `--alerts` of them) and carries a unique marker,
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
    /// Webhooks per second, spread over the traders (steady load).
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// How long to send for at `--rate` (e.g. `12s`, `10m`).
    #[arg(long, value_parser = humantime::parse_duration, required_unless_present = "bars",
          conflicts_with = "bars")]
    duration: Option<Duration>,
    /// Bar closes instead of a steady rate: this many bursts, `--bar-every` apart, each of every
    /// trader's `--alerts` alerts at once, each on a new connection.
    #[arg(long, requires = "bar_every", conflicts_with = "rate")]
    bars: Option<u32>,
    /// Time between two bar closes (e.g. `4s`).
    #[arg(long, value_parser = humantime::parse_duration, requires = "bars")]
    bar_every: Option<Duration>,
    /// Alerts per trader in each bar.
    #[arg(long, default_value_t = 1, requires = "bars")]
    alerts: u32,
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
    /// connections alive between webhooks; always on with `--bars`).
    #[arg(long)]
    new_connections: bool,
}

/// When the webhooks leave: waves of consecutive webhook numbers, each leaving at once at its
/// offset from the start.
#[derive(Debug, Clone, PartialEq)]
enum Schedule {
    /// One webhook every `period`, `count` in all.
    Steady { period: Duration, count: u64 },
    /// `bars` waves of `per_bar` webhooks, `every` apart.
    Bars {
        bars: u32,
        every: Duration,
        per_bar: u64,
    },
}

impl Schedule {
    fn of(args: &Args, traders: usize) -> anyhow::Result<Self> {
        match (args.bars, args.bar_every, args.duration) {
            (Some(bars), Some(every), _) => {
                if bars == 0 || args.alerts == 0 {
                    bail!("--bars and --alerts must be at least 1");
                }
                let per_bar = u64::try_from(traders)?.saturating_mul(u64::from(args.alerts));
                Ok(Self::Bars {
                    bars,
                    every,
                    per_bar,
                })
            }
            (None, _, Some(duration)) => {
                if !(args.rate > 0.0 && args.rate <= 10_000.0) {
                    bail!("--rate must be above 0 and at most 10000");
                }
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "rate and duration are bounded and positive"
                )]
                let count = (args.rate * duration.as_secs_f64()).round() as u64;
                Ok(Self::Steady {
                    period: Duration::from_secs_f64(1.0 / args.rate),
                    count,
                })
            }
            _ => bail!("give either --rate and --duration, or --bars and --bar-every"),
        }
    }

    /// The waves, in order: (offset from the start, first webhook, webhooks in the wave).
    fn waves(&self) -> Box<dyn Iterator<Item = (Duration, u64, u64)> + Send> {
        match *self {
            Self::Steady { period, count } => Box::new((0..count).map(move |n| {
                let n32 = u32::try_from(n).unwrap_or(u32::MAX);
                (period.saturating_mul(n32), n, 1)
            })),
            Self::Bars {
                bars,
                every,
                per_bar,
            } => Box::new((0..bars).map(move |b| {
                let first = u64::from(b).saturating_mul(per_bar);
                (every.saturating_mul(b), first, per_bar)
            })),
        }
    }

    fn is_bars(&self) -> bool {
        matches!(self, Self::Bars { .. })
    }
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
fn clients(args: &Args, new_connections: bool) -> anyhow::Result<Vec<reqwest::Client>> {
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
            if new_connections {
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
    let tokens = read_tokens(&args)?;
    let schedule = Schedule::of(&args, tokens.len())?;
    let out = File::create(&args.out)
        .with_context(|| format!("Failed to create {}", args.out.display()))?;
    let out = Arc::new(Mutex::new(BufWriter::new(out)));
    let clients = clients(&args, args.new_connections || schedule.is_bars())?;

    let base = args.url.trim_end_matches('/').to_owned();
    let totals = Arc::new(Mutex::new(Totals::default()));
    let started = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for (bar, (offset, first, count)) in schedule.waves().enumerate() {
        // Late waves leave at once (open loop): the schedule does not wait for the system.
        tokio::time::sleep_until(started + offset).await;
        for n in first..first + count {
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
        }
        if let Schedule::Bars { bars, .. } = schedule {
            eprintln!(
                "webhook-load {}: bar {} of {bars} left ({count} webhooks)",
                args.label,
                bar + 1
            );
        }
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

    fn parse(flags: &[&str]) -> Result<Args, clap::Error> {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let base = [
            "send", "--url", "http://x", "--tokens", "t", "--label", "l", "--out", "o",
        ];
        <Cli as clap::Parser>::try_parse_from(base.iter().chain(flags)).map(|cli| cli.args)
    }

    #[test]
    fn bars_send_every_traders_alerts_at_once_each_bar() {
        let args = parse(&["--bars", "3", "--bar-every", "4s", "--alerts", "2"]).expect("parses");
        let schedule = Schedule::of(&args, 5).expect("a schedule");
        assert!(schedule.is_bars());
        let waves: Vec<_> = schedule.waves().collect();
        assert_eq!(
            waves,
            vec![
                (Duration::ZERO, 0, 10),
                (Duration::from_secs(4), 10, 10),
                (Duration::from_secs(8), 20, 10),
            ]
        );
        // Webhook n goes to trader n mod 5: each trader gets two alerts in every bar.
        let per_trader = (10..20).filter(|n| n % 5 == 3).count();
        assert_eq!(per_trader, 2);
    }

    #[test]
    fn steady_keeps_its_rate_and_the_two_modes_do_not_mix() {
        let args = parse(&["--rate", "4", "--duration", "1s"]).expect("parses");
        let schedule = Schedule::of(&args, 6).expect("a schedule");
        assert!(!schedule.is_bars());
        let waves: Vec<_> = schedule.waves().collect();
        assert_eq!(waves.len(), 4);
        assert_eq!(waves[3], (Duration::from_millis(750), 3, 1));

        assert!(parse(&["--bars", "3"]).is_err(), "bars without --bar-every");
        assert!(parse(&["--rate", "4", "--bars", "3", "--bar-every", "4s"]).is_err());
        assert!(parse(&["--duration", "2s", "--bars", "3", "--bar-every", "4s"]).is_err());
        assert!(
            parse(&["--alerts", "3", "--duration", "2s"]).is_err(),
            "alerts need bars"
        );
        assert!(parse(&[]).is_err(), "neither mode");
        let zero = parse(&["--bars", "0", "--bar-every", "4s"]).expect("parses");
        assert!(Schedule::of(&zero, 5).is_err());
    }

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
