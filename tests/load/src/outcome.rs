//! One webhook's fate, and the file format that carries it from `send` to `reconcile`: one
//! tab-separated line per webhook, written when the webhook is finished (so a soak run can read
//! the file while it grows), and the marker that finds the webhook again in `public.signals`.
//!
//! ```text
//! marker  sent_at_ms  final  attempts  answers  first_latency_ms  signal_id  spooled
//! chaos-pg-17  1763880000123  200  2  503,200  2001.417  0b3c…  0
//! ```
//!
//! `final` and each of `answers` is an HTTP status or `none`; `sent_at_ms` is the first attempt's
//! wall-clock time (Unix ms) and `first_latency_ms` its latency (until the answer, the error or the
//! deadline); `signal_id` is the answer's `signal_id` (or `-`); `spooled` is 1 when the answer said
//! the webhook was spooled for later (`"spooled":true`).

use std::time::Duration;

use anyhow::{Context as _, bail};

/// What one attempt got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Status(u16),
    /// Connection refused or reset, or no answer within the deadline.
    None,
}

impl Answer {
    /// Whether TradingView sends the webhook again after this answer: a 5xx other than 504, or
    /// no answer at all.
    pub(crate) fn retried(self) -> bool {
        match self {
            Self::Status(status) => status >= 500 && status != 504,
            Self::None => true,
        }
    }

    pub(crate) fn is_2xx(self) -> bool {
        matches!(self, Self::Status(200..=299))
    }

    pub(crate) fn is_5xx(self) -> bool {
        matches!(self, Self::Status(500..=599))
    }

    fn label(self) -> String {
        match self {
            Self::Status(status) => status.to_string(),
            Self::None => "none".into(),
        }
    }

    fn parse(label: &str) -> anyhow::Result<Self> {
        if label == "none" {
            return Ok(Self::None);
        }
        Ok(Self::Status(label.parse().with_context(|| {
            format!("{label:?} is neither a status nor `none`")
        })?))
    }
}

/// One webhook's fate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    pub(crate) marker: String,
    pub(crate) sent_at_ms: u128,
    /// Every attempt's answer, in order; never empty once the webhook is finished.
    pub(crate) answers: Vec<Answer>,
    pub(crate) first_latency: Duration,
    pub(crate) signal_id: Option<String>,
    pub(crate) spooled: bool,
}

impl Outcome {
    /// The answer TradingView was left with.
    pub(crate) fn last(&self) -> Answer {
        self.answers.last().copied().unwrap_or(Answer::None)
    }

    /// Whether any attempt was answered 2xx: the sender was told the alert is taken.
    pub(crate) fn got_2xx(&self) -> bool {
        self.answers.iter().any(|a| a.is_2xx())
    }

    pub(crate) fn line(&self) -> String {
        let answers: Vec<String> = self.answers.iter().map(|a| a.label()).collect();
        format!(
            "{}\t{}\t{}\t{}\t{}\t{:.3}\t{}\t{}\n",
            self.marker,
            self.sent_at_ms,
            self.last().label(),
            self.answers.len(),
            answers.join(","),
            self.first_latency.as_secs_f64() * 1000.0,
            self.signal_id.as_deref().unwrap_or("-"),
            u8::from(self.spooled),
        )
    }

    /// Reads back a line [`Outcome::line`] wrote (without its newline).
    pub(crate) fn parse(line: &str) -> anyhow::Result<Self> {
        let fields: Vec<&str> = line.split('\t').collect();
        let [
            marker,
            sent_at_ms,
            last,
            attempts,
            answers,
            latency_ms,
            signal_id,
            spooled,
        ] = fields[..]
        else {
            bail!("{} fields, not 8", fields.len());
        };
        let answers = answers
            .split(',')
            .map(Answer::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        if answers.len().to_string() != attempts
            || answers.last().map(|a| a.label()).as_deref() != Some(last)
        {
            bail!("the attempts and the final answer do not match the answers");
        }
        let latency_ms: f64 = latency_ms.parse().context("first_latency_ms")?;
        Ok(Self {
            marker: marker.to_owned(),
            sent_at_ms: sent_at_ms.parse().context("sent_at_ms")?,
            answers,
            first_latency: Duration::try_from_secs_f64(latency_ms / 1000.0)
                .context("first_latency_ms")?,
            signal_id: (signal_id != "-").then(|| signal_id.to_owned()),
            spooled: match spooled {
                "0" => false,
                "1" => true,
                other => bail!("spooled is {other:?}, not 0 or 1"),
            },
        })
    }
}

/// The marker of webhook `n` of a run: `<label>-<n>`, carried as `"chaos_id"` in its JSON body
/// and so kept in `public.signals.raw_message`.
pub(crate) fn marker(label: &str, n: u64) -> String {
    format!("{label}-{n}")
}

/// A `LIKE` pattern matching the `raw_message` of every signal of the run `label` (and no other
/// run's: the label's own `%`, `_` and `\` match only themselves).
pub(crate) fn run_pattern(label: &str) -> String {
    let mut escaped = String::with_capacity(label.len());
    for c in label.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    format!("%\"chaos_id\":\"{escaped}-%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_like_tradingview() {
        assert!(Answer::Status(503).retried());
        assert!(Answer::Status(500).retried());
        assert!(Answer::None.retried());
        assert!(!Answer::Status(504).retried());
        assert!(!Answer::Status(200).retried());
        assert!(!Answer::Status(202).retried());
        assert!(!Answer::Status(429).retried());
    }

    #[test]
    fn a_line_reads_back_as_written() {
        let outcome = Outcome {
            marker: "pg.17-3".into(),
            sent_at_ms: 1_763_880_000_123,
            answers: vec![Answer::Status(503), Answer::None, Answer::Status(200)],
            first_latency: Duration::from_micros(2_001_417),
            signal_id: Some("0b3c".into()),
            spooled: true,
        };
        let line = outcome.line();
        assert_eq!(
            line,
            "pg.17-3\t1763880000123\t200\t3\t503,none,200\t2001.417\t0b3c\t1\n"
        );
        let back = Outcome::parse(line.trim_end()).expect("parses");
        assert_eq!(back, outcome);
        assert!(back.got_2xx());

        let none = Outcome::parse("x-0\t0\tnone\t1\tnone\t3000.000\t-\t0").expect("parses");
        assert_eq!(none.signal_id, None);
        assert!(!none.got_2xx() && none.last().retried());
    }

    #[test]
    fn a_damaged_line_is_an_error_not_a_guess() {
        for line in [
            "x-0\t0\t200\t1\t200\t1.0\t-",
            "x-0\t0\t200\t2\t200\t1.0\t-\t0",
            "x-0\t0\t503\t1\t200\t1.0\t-\t0",
            "x-0\t0\t200\t1\t2OO\t1.0\t-\t0",
            "x-0\t0\t200\t1\t200\t1.0\t-\tyes",
        ] {
            assert!(Outcome::parse(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn the_run_pattern_escapes_like_wildcards() {
        assert_eq!(run_pattern("baseline.1"), "%\"chaos_id\":\"baseline.1-%");
        assert_eq!(run_pattern("a_b%c\\"), "%\"chaos_id\":\"a\\_b\\%c\\\\-%");
        assert_eq!(marker("soak-alerts.9", 4), "soak-alerts.9-4");
    }
}
