//! `webhook-load reconcile`: what one run sent (the `send` file) against what the database holds,
//! and whether anything was lost, stored twice or left stuck.
//!
//! Standard output, for `scripts/lib/chaos.sh` and `scripts/lib/bench_soak.sh`: first one line of
//! `|`-separated figures,
//!
//! ```text
//! sent|answers_2xx|answers_5xx|no_answer|given_up|spooled|stored|duplicates|lost|
//! completed|failed|failed_without_reason|skipped|stuck|stored_without_2xx
//! ```
//!
//! (on one line), then one `violation <text>` line for each way the run broke a promise (a 2xx
//! answer without a stored signal, a signal stored twice, a capture still open, a failure without
//! a reason, captures that do not add up to the stored signals) and one `note <text>` line for
//! each thing worth knowing that breaks none (webhooks TradingView would have dropped after its
//! retries, signals stored although no attempt got a 2xx). The exit status says only whether the
//! reconciliation itself worked; the caller decides what a violation costs.
//!
//! With `--fault-at <unix ms>` (when the script broke something) a line `fault-in-flight <n>`
//! follows the figures: how many webhooks' first attempts had left and were not answered yet at
//! that moment. A crash or an outage is only a test of the edge if it hits requests in flight (an
//! ingest killed between bursts loses nothing whatever its code does), so with `--fault-in-flight`
//! a fault that hit none is a violation too.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use anyhow::Context as _;

use crate::outcome::{Outcome, run_pattern};

/// Settings, from flags and the environment.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The run's label (`send --label`).
    #[arg(long)]
    label: String,
    /// The file `send --out` wrote.
    #[arg(long)]
    sent: PathBuf,
    /// A connection that may read `public.signals` and `private.capture_jobs` (the stack's
    /// superuser URL); from the environment only, so the password stays out of process lists.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// When the fault was injected (Unix ms): count the webhooks in flight then.
    #[arg(long)]
    fault_at: Option<u128>,
    /// The fault must have hit webhooks in flight; a fault that hit none is a violation.
    #[arg(long, requires = "fault_at")]
    fault_in_flight: bool,
}

/// How many webhooks' first attempts had left and were not answered yet at `at_ms` (Unix ms).
pub(crate) fn in_flight_at(sent: &[Outcome], at_ms: u128) -> usize {
    sent.iter()
        .filter(|o| {
            let answered_at = o.sent_at_ms + o.first_latency.as_millis();
            o.sent_at_ms <= at_ms && at_ms < answered_at
        })
        .count()
}

/// One stored signal of the run, with its capture job if one is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) marker: String,
    pub(crate) signal_id: String,
    pub(crate) screenshot_status: String,
    pub(crate) screenshot_error: Option<String>,
    pub(crate) job_state: Option<String>,
}

/// The figures of one run; see the module doc for what each counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Figures {
    sent: usize,
    answers_2xx: usize,
    answers_5xx: usize,
    no_answer: usize,
    given_up: usize,
    spooled: usize,
    /// Distinct markers stored.
    stored: usize,
    /// Markers stored more than once.
    duplicates: usize,
    /// Webhooks answered 2xx whose marker is not stored (or not under the signal id the answer
    /// named).
    lost: usize,
    completed: usize,
    failed: usize,
    failed_without_reason: usize,
    skipped: usize,
    /// Signals still pending or processing, or whose job is still queued or running.
    stuck: usize,
    stored_without_2xx: usize,
}

impl Figures {
    pub(crate) fn of(sent: &[Outcome], stored: &[Stored]) -> Self {
        let mut by_marker: HashMap<&str, Vec<&Stored>> = HashMap::new();
        for s in stored {
            by_marker.entry(&s.marker).or_default().push(s);
        }
        let answered: HashSet<&str> = sent
            .iter()
            .filter(|o| o.got_2xx())
            .map(|o| o.marker.as_str())
            .collect();
        let count = |f: &dyn Fn(&Stored) -> bool| stored.iter().filter(|s| f(s)).count();
        let status_is = |s: &Stored, statuses: &[&str]| statuses.contains(&&*s.screenshot_status);
        Self {
            sent: sent.len(),
            answers_2xx: sent
                .iter()
                .flat_map(|o| &o.answers)
                .filter(|a| a.is_2xx())
                .count(),
            answers_5xx: sent
                .iter()
                .flat_map(|o| &o.answers)
                .filter(|a| a.is_5xx())
                .count(),
            no_answer: sent
                .iter()
                .flat_map(|o| &o.answers)
                .filter(|a| **a == crate::outcome::Answer::None)
                .count(),
            given_up: sent.iter().filter(|o| o.last().retried()).count(),
            spooled: sent.iter().filter(|o| o.spooled).count(),
            stored: by_marker.len(),
            duplicates: by_marker.values().filter(|rows| rows.len() > 1).count(),
            lost: sent
                .iter()
                .filter(|o| o.got_2xx())
                .filter(|o| {
                    !by_marker.get(o.marker.as_str()).is_some_and(|rows| {
                        rows.iter()
                            .any(|s| o.signal_id.as_ref().is_none_or(|id| *id == s.signal_id))
                    })
                })
                .count(),
            completed: count(&|s| status_is(s, &["completed"])),
            failed: count(&|s| status_is(s, &["failed"])),
            failed_without_reason: count(&|s| {
                status_is(s, &["failed", "skipped"])
                    && s.screenshot_error.as_deref().unwrap_or("").is_empty()
            }),
            skipped: count(&|s| status_is(s, &["skipped"])),
            stuck: count(&|s| {
                status_is(s, &["pending", "processing"])
                    || matches!(s.job_state.as_deref(), Some("queued" | "running"))
            }),
            stored_without_2xx: count(&|s| !answered.contains(s.marker.as_str())),
        }
    }

    pub(crate) fn line(&self) -> String {
        [
            self.sent,
            self.answers_2xx,
            self.answers_5xx,
            self.no_answer,
            self.given_up,
            self.spooled,
            self.stored,
            self.duplicates,
            self.lost,
            self.completed,
            self.failed,
            self.failed_without_reason,
            self.skipped,
            self.stuck,
            self.stored_without_2xx,
        ]
        .map(|n| n.to_string())
        .join("|")
    }

    /// Every promise the run broke, in words.
    pub(crate) fn violations(&self) -> Vec<String> {
        let mut found = Vec::new();
        if self.lost > 0 {
            found.push(format!("{} 2xx answers without a stored signal", self.lost));
        }
        if self.duplicates > 0 {
            found.push(format!("{} duplicate signals", self.duplicates));
        }
        if self.stuck > 0 {
            found.push(format!("{} captures stuck", self.stuck));
        }
        if self.failed_without_reason > 0 {
            found.push(format!(
                "{} failed captures without a reason",
                self.failed_without_reason
            ));
        }
        if self.completed + self.failed + self.skipped != self.stored {
            found.push("captures do not add up".to_owned());
        }
        found
    }

    /// What is worth knowing without breaking a promise.
    pub(crate) fn notes(&self) -> Vec<String> {
        let mut found = Vec::new();
        if self.given_up > 0 {
            found.push(format!(
                "{} webhooks got no 2xx in all their attempts (TradingView would drop them)",
                self.given_up
            ));
        }
        if self.stored_without_2xx > 0 {
            found.push(format!(
                "{} signals stored whose webhook never got a 2xx",
                self.stored_without_2xx
            ));
        }
        found
    }
}

fn read_sent(args: &Args) -> anyhow::Result<Vec<Outcome>> {
    std::fs::read_to_string(&args.sent)
        .with_context(|| format!("Failed to read {}", args.sent.display()))?
        .lines()
        .enumerate()
        .map(|(i, line)| {
            Outcome::parse(line).with_context(|| format!("{} line {}", args.sent.display(), i + 1))
        })
        .collect()
}

async fn read_stored(args: &Args) -> anyhow::Result<Vec<Stored>> {
    let (db, connection) = postgres_tls::connect(&args.database_url)
        .await
        .context("Failed to connect to the database")?;
    tokio::spawn(connection);
    let rows = db
        .query(
            "select substring(s.raw_message from '\"chaos_id\":\"([^\"]+)\"'), s.id::text, \
                    s.screenshot_status, s.screenshot_error, j.state \
               from public.signals s left join private.capture_jobs j on j.signal_id = s.id \
              where s.raw_message like $1",
            &[&run_pattern(&args.label)],
        )
        .await
        .context("Failed to read the run's signals")?;
    Ok(rows
        .iter()
        .map(|row| Stored {
            marker: row.get::<_, Option<String>>(0).unwrap_or_default(),
            signal_id: row.get(1),
            screenshot_status: row.get(2),
            screenshot_error: row.get(3),
            job_state: row.get(4),
        })
        .collect())
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let sent = read_sent(&args)?;
    let stored = read_stored(&args).await?;
    let figures = Figures::of(&sent, &stored);
    println!("{}", figures.line());
    let mut violations = figures.violations();
    if let Some(at) = args.fault_at {
        let in_flight = in_flight_at(&sent, at);
        println!("fault-in-flight {in_flight}");
        if args.fault_in_flight && in_flight == 0 {
            violations.push("the fault hit no webhook in flight".to_owned());
        }
    }
    for violation in violations {
        println!("violation {violation}");
    }
    for note in figures.notes() {
        println!("note {note}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outcome::Answer;

    fn sent(marker: &str, answers: &[Answer], signal_id: Option<&str>) -> Outcome {
        Outcome {
            marker: marker.into(),
            sent_at_ms: 0,
            answers: answers.to_vec(),
            first_latency: Duration::ZERO,
            signal_id: signal_id.map(str::to_owned),
            spooled: answers.contains(&Answer::Status(202)),
        }
    }

    fn stored(marker: &str, id: &str, status: &str, error: Option<&str>) -> Stored {
        Stored {
            marker: marker.into(),
            signal_id: id.into(),
            screenshot_status: status.into(),
            screenshot_error: error.map(str::to_owned),
            job_state: None,
        }
    }

    const OK: Answer = Answer::Status(200);
    const SPOOLED: Answer = Answer::Status(202);
    const DOWN: Answer = Answer::Status(503);

    #[test]
    fn a_clean_run_breaks_nothing() {
        let figures = Figures::of(
            &[
                sent("r-0", &[OK], Some("a")),
                sent("r-1", &[DOWN, SPOOLED], None),
            ],
            &[
                stored("r-0", "a", "completed", None),
                stored("r-1", "b", "failed", Some("chart never got ready")),
            ],
        );
        assert_eq!(figures.line(), "2|2|1|0|0|1|2|0|0|1|1|0|0|0|0");
        assert!(figures.violations().is_empty());
        assert!(figures.notes().is_empty());
    }

    #[test]
    fn lost_duplicated_stuck_and_silent_failures_are_violations() {
        let mut queued = stored("r-3", "d", "processing", None);
        queued.job_state = Some("running".into());
        let figures = Figures::of(
            &[
                // Answered 200 with a signal id nobody stored: lost.
                sent("r-0", &[OK], Some("gone")),
                // Stored twice.
                sent("r-1", &[OK], Some("b1")),
                // Failed without a reason.
                sent("r-2", &[OK], Some("c")),
                // Still being captured.
                sent("r-3", &[OK], Some("d")),
                // TradingView gave up; stored anyway (the first attempt had committed).
                sent("r-4", &[DOWN, DOWN, DOWN, Answer::None], None),
            ],
            &[
                stored("r-0", "other", "completed", None),
                stored("r-1", "b1", "completed", None),
                stored("r-1", "b2", "completed", None),
                stored("r-2", "c", "failed", Some("")),
                queued,
                stored("r-4", "e", "skipped", Some("no chart")),
            ],
        );
        assert_eq!(figures.lost, 1);
        assert_eq!(figures.duplicates, 1);
        assert_eq!(figures.stuck, 1);
        assert_eq!(figures.failed_without_reason, 1);
        assert_eq!(figures.given_up, 1);
        assert_eq!(figures.stored_without_2xx, 1);
        assert_eq!(
            figures.violations(),
            vec![
                "1 2xx answers without a stored signal",
                "1 duplicate signals",
                "1 captures stuck",
                "1 failed captures without a reason",
            ]
        );
        assert_eq!(figures.notes().len(), 2);
    }

    #[test]
    fn a_capture_still_open_leaves_the_captures_short_of_the_signals() {
        let figures = Figures::of(
            &[sent("r-0", &[OK], Some("a")), sent("r-1", &[OK], Some("b"))],
            &[
                stored("r-0", "a", "completed", None),
                stored("r-1", "b", "pending", None),
            ],
        );
        assert_eq!(
            figures.violations(),
            vec!["1 captures stuck", "captures do not add up"]
        );
    }

    #[test]
    fn in_flight_means_sent_and_not_answered_yet() {
        let at = |sent_at_ms, latency_ms| Outcome {
            sent_at_ms,
            first_latency: Duration::from_millis(latency_ms),
            ..sent("r-0", &[OK], None)
        };
        let sent = [
            at(1_000, 500),
            at(1_200, 100),
            at(1_400, 2_000),
            at(1_600, 10),
        ];
        assert_eq!(in_flight_at(&sent, 999), 0, "before anything left");
        assert_eq!(in_flight_at(&sent, 1_250), 2, "the first two");
        assert_eq!(
            in_flight_at(&sent, 1_300),
            1,
            "the second was answered at 1300"
        );
        assert_eq!(
            in_flight_at(&sent, 1_605),
            2,
            "the fourth is in flight, the first is not"
        );
        assert_eq!(in_flight_at(&sent, 3_400), 0, "all answered");
    }

    #[test]
    fn a_spooled_answer_without_a_signal_id_counts_any_stored_row() {
        let figures = Figures::of(
            &[sent("r-0", &[SPOOLED], None)],
            &[stored("r-0", "late", "completed", None)],
        );
        assert_eq!(figures.lost, 0);
        let lost = Figures::of(&[sent("r-0", &[SPOOLED], None)], &[]);
        assert_eq!(lost.lost, 1);
        assert_eq!(
            lost.violations(),
            vec!["1 2xx answers without a stored signal"]
        );
    }
}
