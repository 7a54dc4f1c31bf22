//! A real `kill -9` of a process in the middle of appends: every append
//! that had returned survives.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use tempfile::TempDir;
use webhook_spool::SpoolConfig;

use crate::{numbers, open, webhook};

/// Set for the child process of the `kill -9` test: where to spool.
const CHILD_DIR_ENV: &str = "SPOOL_CRASH_CHILD_DIR";

/// Not a test on its own: the child process of
/// `appends_answered_before_a_kill_9_all_survive`, run by it with
/// `--ignored`. Appends from 8 tasks forever and prints `task i` after each
/// append has returned (the moment the edge would answer 202).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of appends_answered_before_a_kill_9_all_survive"]
async fn crash_child() {
    let dir = std::env::var(CHILD_DIR_ENV).expect("run by the kill -9 test");
    let spool = open(&SpoolConfig::new(dir, 64 << 20));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let tasks: Vec<_> = (0..8_u64)
        .map(|task| {
            let (spool, out) = (spool.clone(), Arc::clone(&out));
            tokio::spawn(async move {
                for i in 0.. {
                    spool.append(&webhook(task * 1_000_000 + i)).await.unwrap();
                    let mut out = out.lock().unwrap();
                    writeln!(out, "{task} {i}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn appends_answered_before_a_kill_9_all_survive() {
    let dir = TempDir::new().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash::crash_child", "--ignored", "--nocapture"])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut confirmed: HashMap<u64, u64> = HashMap::new();
    let mut count = 0;
    while count < 500 {
        let line = lines.next().expect("child output").unwrap();
        let Some((task, i)) = line.split_once(' ') else {
            continue;
        };
        let (Ok(task), Ok(i)) = (task.parse::<u64>(), i.parse::<u64>()) else {
            continue;
        };
        confirmed.insert(task, i);
        count += 1;
    }
    child.kill().unwrap(); // SIGKILL, mid-append
    // Appends answered before the kill whose line was still in the pipe.
    for line in lines {
        let line = line.unwrap();
        if let Some((task, i)) = line.split_once(' ')
            && let (Ok(task), Ok(i)) = (task.parse::<u64>(), i.parse::<u64>())
        {
            confirmed.insert(task, i);
        }
    }
    child.wait().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spool = open(&SpoolConfig::new(dir.path(), 64 << 20));
        let mut seen: HashMap<u64, u64> = HashMap::new();
        for n in numbers(&spool).await {
            let (task, i) = (n / 1_000_000, n % 1_000_000);
            let expected = seen.get(&task).map_or(0, |&prev| prev + 1);
            assert_eq!(i, expected, "task {task}: records in order, none missing");
            seen.insert(task, i);
        }
        for (task, last) in confirmed {
            let kept = seen.get(&task).copied();
            assert!(
                kept >= Some(last),
                "task {task}: append {last} was answered but only {kept:?} survived"
            );
        }
    });
}
