//! `webhook-load workers`: who captured what in one run, for the scale-out scenario
//! (`scripts/chaos scale-out`, `scripts/lib/scale_out.sh`), where several capture daemons share
//! the queue and one of them is killed mid-run.
//!
//! The database says which daemon completed each signal (`private.capture_completions`, written
//! by `complete_capture_job` with the lease holder's worker id) and the daemons' fs storage holds
//! the objects. From both it decides whether the work was spread and done exactly once:
//!
//! - every completed signal of the run has exactly one completion, by one of the daemons the
//!   scenario started;
//! - every daemon that lived to the end completed some of the run's captures (the killed one may
//!   have completed none);
//! - every completed signal has exactly one object, `{user_id}/{signal_id}.png`, a PNG, and no
//!   signal that is not completed has one;
//! - no capture job of anyone is left queued or running.
//!
//! Standard output: `worker <id> <completed> <after a reclaim>` per daemon (the last figure counts
//! completions at a second or later attempt: jobs whose first lease was lost, normally the killed
//! daemon's), then `figures <completed>|<objects>|<temp files>|<open jobs>`, then `violation
//! <text>` and `note <text>` lines as `reconcile` prints them. Temp files are the partial writes
//! the fs storage renames into place (`.{signal_id}.{uuid}.tmp`); a daemon killed while writing
//! leaves one behind, which no reader ever sees as an object: a note, not a violation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::outcome::run_pattern;

/// Settings, from flags and the environment.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The run's label (`send --label`).
    #[arg(long)]
    label: String,
    /// The root of the daemons' fs storage (`STORAGE=fs:<dir>`).
    #[arg(long)]
    screenshots: PathBuf,
    /// The worker ids of every daemon the scenario started.
    #[arg(long, value_delimiter = ',', required = true)]
    workers: Vec<String>,
    /// The worker id of the daemon that was killed (it need not have completed anything).
    #[arg(long)]
    killed: Option<String>,
    /// A connection that may read `public.signals` and the private queue tables (the stack's
    /// superuser URL); from the environment only, so the password stays out of process lists.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

/// One signal of the run with its completion, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signal {
    pub(crate) id: String,
    pub(crate) completed: bool,
    /// Completions recorded for it: (worker id, attempt).
    pub(crate) completions: Vec<(String, i16)>,
}

/// What the storage holds for one signal id, by file name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Objects {
    /// `{signal_id}.png` files that start with the PNG signature.
    pub(crate) pngs: usize,
    /// `{signal_id}.png` files that do not (empty or damaged).
    pub(crate) damaged: usize,
    /// `.{signal_id}.*.tmp` partial writes.
    pub(crate) temp: usize,
}

/// The run's spread and checks; see the module doc.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Spread {
    /// Per worker id: (completed, completed at attempt 2 or later).
    pub(crate) per_worker: BTreeMap<String, (usize, usize)>,
    pub(crate) completed: usize,
    pub(crate) objects: usize,
    pub(crate) temp_files: usize,
    pub(crate) open_jobs: i64,
    pub(crate) violations: Vec<String>,
    pub(crate) notes: Vec<String>,
}

impl Spread {
    pub(crate) fn of(
        signals: &[Signal],
        objects: &HashMap<String, Objects>,
        workers: &[String],
        killed: Option<&str>,
        open_jobs: i64,
    ) -> Self {
        let known: HashSet<&str> = workers.iter().map(String::as_str).collect();
        let mut spread = Self {
            per_worker: workers.iter().map(|w| (w.clone(), (0, 0))).collect(),
            open_jobs,
            ..Self::default()
        };
        let (mut unrecorded, mut twice, mut unknown) = (0, 0, 0);
        let (mut missing, mut extra, mut damaged) = (0, 0, 0);
        for signal in signals {
            let found = objects.get(&signal.id).cloned().unwrap_or_default();
            spread.temp_files += found.temp;
            spread.objects += found.pngs;
            damaged += found.damaged;
            if !signal.completed {
                extra += found.pngs;
                continue;
            }
            spread.completed += 1;
            match signal.completions.as_slice() {
                [] => unrecorded += 1,
                [(worker, attempt)] => {
                    if !known.contains(worker.as_str()) {
                        unknown += 1;
                    }
                    let entry = spread.per_worker.entry(worker.clone()).or_default();
                    entry.0 += 1;
                    entry.1 += usize::from(*attempt > 1);
                }
                _ => twice += 1,
            }
            if found.pngs == 0 {
                missing += 1;
            }
        }
        let mut violate = |n: usize, what: &str| {
            if n > 0 {
                spread.violations.push(format!("{n} {what}"));
            }
        };
        violate(
            unrecorded,
            "completed signals without a recorded completion",
        );
        violate(twice, "signals completed more than once");
        violate(
            unknown,
            "signals completed by a worker the scenario did not start",
        );
        violate(missing, "completed signals without their object in storage");
        violate(
            extra,
            "objects in storage for signals that are not completed",
        );
        violate(damaged, "objects in storage that are not PNGs");
        let idle: Vec<&str> = workers
            .iter()
            .filter(|w| Some(w.as_str()) != killed)
            .filter(|w| spread.per_worker.get(*w).is_none_or(|(n, _)| *n == 0))
            .map(String::as_str)
            .collect();
        if !idle.is_empty() {
            spread.violations.push(format!(
                "daemons that lived to the end completed none of the run's captures: {}",
                idle.join(", ")
            ));
        }
        if open_jobs > 0 {
            spread
                .violations
                .push(format!("{open_jobs} capture jobs still queued or running"));
        }
        if spread.temp_files > 0 {
            spread.notes.push(format!(
                "{} partial writes (temp files) left in storage, never renamed into place",
                spread.temp_files
            ));
        }
        spread
    }

    fn print(&self) {
        for (worker, (completed, reclaimed)) in &self.per_worker {
            println!("worker {worker} {completed} {reclaimed}");
        }
        println!(
            "figures {}|{}|{}|{}",
            self.completed, self.objects, self.temp_files, self.open_jobs
        );
        for violation in &self.violations {
            println!("violation {violation}");
        }
        for note in &self.notes {
            println!("note {note}");
        }
    }
}

/// What a user's storage folder holds for each signal id.
fn scan_user_dir(dir: &Path, into: &mut HashMap<String, Objects>) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(error).with_context(|| format!("Failed to list {}", dir.display()));
        }
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("Failed to list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".png") {
            let head = std::fs::read(entry.path())
                .with_context(|| format!("Failed to read {}", entry.path().display()))?;
            let slot = into.entry(id.to_owned()).or_default();
            if head.starts_with(b"\x89PNG\r\n\x1a\n") {
                slot.pngs += 1;
            } else {
                slot.damaged += 1;
            }
        } else if let Some(rest) = name.strip_prefix('.').and_then(|r| r.strip_suffix(".tmp"))
            && let Some((id, _)) = rest.split_once('.')
        {
            into.entry(id.to_owned()).or_default().temp += 1;
        }
    }
    Ok(())
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let (db, connection) = postgres_tls::connect(&args.database_url)
        .await
        .context("Failed to connect to the database")?;
    tokio::spawn(connection);
    let rows = db
        .query(
            "select s.id::text, s.user_id::text, s.screenshot_status = 'completed', \
                    c.worker_id, c.attempt \
               from public.signals s \
               left join private.capture_completions c on c.signal_id = s.id \
              where s.raw_message like $1",
            &[&run_pattern(&args.label)],
        )
        .await
        .context("Failed to read the run's signals and completions")?;
    let mut by_id: BTreeMap<String, Signal> = BTreeMap::new();
    let mut users = HashSet::new();
    for row in &rows {
        let id: String = row.get(0);
        users.insert(row.get::<_, String>(1));
        let signal = by_id.entry(id.clone()).or_insert_with(|| Signal {
            id,
            completed: row.get(2),
            completions: Vec::new(),
        });
        if let (Some(worker), Some(attempt)) = (
            row.get::<_, Option<String>>(3),
            row.get::<_, Option<i16>>(4),
        ) {
            signal.completions.push((worker, attempt));
        }
    }
    let open_jobs: i64 = db
        .query_one(
            "select count(*) from private.capture_jobs where state in ('queued', 'running')",
            &[],
        )
        .await
        .context("Failed to count the open capture jobs")?
        .get(0);
    let mut objects = HashMap::new();
    for user in &users {
        scan_user_dir(&args.screenshots.join(user), &mut objects)?;
    }
    let signals: Vec<Signal> = by_id.into_values().collect();
    Spread::of(
        &signals,
        &objects,
        &args.workers,
        args.killed.as_deref(),
        open_jobs,
    )
    .print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(id: &str, completions: &[(&str, i16)]) -> Signal {
        Signal {
            id: id.into(),
            completed: !completions.is_empty(),
            completions: completions
                .iter()
                .map(|(w, a)| ((*w).to_owned(), *a))
                .collect(),
        }
    }

    fn png(n: usize) -> Objects {
        Objects {
            pngs: n,
            ..Objects::default()
        }
    }

    fn workers() -> Vec<String> {
        vec!["w1".into(), "w2".into(), "w3".into()]
    }

    #[test]
    fn work_done_once_and_spread_breaks_nothing() {
        let signals = [
            signal("a", &[("w1", 1)]),
            signal("b", &[("w2", 1)]),
            signal("c", &[("w2", 2)]),
            signal("d", &[("w3", 1)]),
        ];
        let mut objects: HashMap<String, Objects> = ["a", "b", "c", "d"]
            .map(|id| (id.to_owned(), png(1)))
            .into();
        objects.get_mut("c").expect("c").temp = 1;
        let spread = Spread::of(&signals, &objects, &workers(), Some("w3"), 0);
        assert_eq!(spread.violations, Vec::<String>::new());
        assert_eq!(spread.per_worker["w2"], (2, 1));
        assert_eq!(
            (spread.completed, spread.objects, spread.temp_files),
            (4, 4, 1)
        );
        assert_eq!(spread.notes.len(), 1);
    }

    #[test]
    fn twice_unrecorded_missing_idle_and_open_are_violations() {
        let mut uncompleted = signal("e", &[]);
        uncompleted.completed = false;
        let mut unrecorded = signal("c", &[]);
        unrecorded.completed = true;
        let signals = [
            signal("a", &[("w1", 1), ("w1", 2)]),
            signal("b", &[("stranger", 1)]),
            unrecorded,
            signal("d", &[("w1", 1)]),
            uncompleted,
        ];
        let objects: HashMap<String, Objects> = [
            ("a".to_owned(), png(1)),
            ("b".to_owned(), png(1)),
            ("c".to_owned(), png(1)),
            (
                "d".to_owned(),
                Objects {
                    damaged: 1,
                    ..Objects::default()
                },
            ),
            ("e".to_owned(), png(1)),
        ]
        .into();
        let spread = Spread::of(&signals, &objects, &workers(), Some("w3"), 2);
        assert_eq!(
            spread.violations,
            vec![
                "1 completed signals without a recorded completion",
                "1 signals completed more than once",
                "1 signals completed by a worker the scenario did not start",
                "1 completed signals without their object in storage",
                "1 objects in storage for signals that are not completed",
                "1 objects in storage that are not PNGs",
                "daemons that lived to the end completed none of the run's captures: w2",
                "2 capture jobs still queued or running",
            ]
        );
    }

    #[test]
    fn the_storage_scan_tells_objects_damage_and_partial_writes_apart() {
        let dir = std::env::temp_dir().join(format!("webhook-load-scan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("a.png"), b"\x89PNG\r\n\x1a\nrest").expect("write");
        std::fs::write(dir.join("b.png"), b"").expect("write");
        std::fs::write(dir.join(".a.0b3c.tmp"), b"\x89PNG").expect("write");
        std::fs::write(dir.join("unrelated.txt"), b"x").expect("write");
        let mut objects = HashMap::new();
        scan_user_dir(&dir, &mut objects).expect("scans");
        scan_user_dir(&dir.join("absent"), &mut objects).expect("a missing folder is empty");
        std::fs::remove_dir_all(&dir).expect("clean up");
        assert_eq!(
            objects["a"],
            Objects {
                pngs: 1,
                damaged: 0,
                temp: 1
            }
        );
        assert_eq!(objects["b"].damaged, 1);
        assert_eq!(objects.len(), 2);
    }
}
