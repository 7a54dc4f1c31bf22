//! The replayer against a scripted sink: arrival order, the original
//! receive time, backoff on transient failures without overtaking, a restart
//! in the middle, waking up for new records.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;
use webhook_spool::{
    Backoff, ReplayCounts, ReplayOutcome, ReplaySink, Replayer, SpooledWebhook, Transient,
};

use crate::{append_range, body_number, config, numbers, open, webhook};

/// A sink that records what it was given and answers from a script, taking
/// up to `max_batch` records a call and stopping at its first failure.
struct Recorder {
    seen: Mutex<Vec<(u64, SpooledWebhook, tokio::time::Instant)>>,
    /// The size of each call.
    calls: Mutex<Vec<usize>>,
    /// Records with this number fail transiently while `failing` is set.
    fail_number: AtomicU64,
    failing: AtomicBool,
    max_batch: usize,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::batching(1)
    }
}

impl Recorder {
    fn batching(max_batch: usize) -> Self {
        Self {
            seen: Mutex::default(),
            calls: Mutex::default(),
            fail_number: AtomicU64::default(),
            failing: AtomicBool::default(),
            max_batch,
        }
    }

    fn answer(&self, webhook: &SpooledWebhook) -> Result<ReplayOutcome, Transient> {
        let n = body_number(webhook);
        self.seen
            .lock()
            .unwrap()
            .push((n, webhook.clone(), tokio::time::Instant::now()));
        if self.failing.load(Ordering::SeqCst) && self.fail_number.load(Ordering::SeqCst) == n {
            return Err(Transient::new("database unreachable"));
        }
        Ok(match n % 3 {
            0 => ReplayOutcome::Accepted,
            1 => ReplayOutcome::Duplicate,
            _ => ReplayOutcome::Rejected,
        })
    }
}

impl ReplaySink for Recorder {
    fn max_batch(&self) -> usize {
        self.max_batch
    }

    async fn ingest(&self, webhooks: &[SpooledWebhook]) -> Vec<Result<ReplayOutcome, Transient>> {
        assert!(webhooks.len() <= self.max_batch, "at most max_batch a call");
        self.calls.lock().unwrap().push(webhooks.len());
        let mut results = Vec::new();
        for webhook in webhooks {
            let result = self.answer(webhook);
            let failed = result.is_err();
            results.push(result);
            if failed {
                break;
            }
        }
        results
    }
}

/// A [`Recorder`] the test keeps looking at while the replayer owns the sink.
struct Shared(Arc<Recorder>);

impl ReplaySink for Shared {
    fn max_batch(&self) -> usize {
        self.0.max_batch()
    }

    async fn ingest(&self, webhooks: &[SpooledWebhook]) -> Vec<Result<ReplayOutcome, Transient>> {
        self.0.ingest(webhooks).await
    }
}

/// Polls `done` until it holds, for up to 10 s of real time (with a paused
/// tokio clock, the sleeps between polls take no real time at all).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_replayer_feeds_records_in_order_with_their_receive_time() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    let written: Vec<SpooledWebhook> = (0..10).map(webhook).collect();
    for w in &written {
        spool.append(w).await.unwrap();
    }
    let sink = Arc::new(Recorder::default());
    let replayer = Replayer::new(spool.clone(), Shared(Arc::clone(&sink)));
    replayer.drain().await.unwrap();

    // Delivery id, receive time, body, chart and address exactly as spooled.
    let fed: Vec<SpooledWebhook> = sink
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.1.clone())
        .collect();
    assert_eq!(fed, written);
    assert_eq!(
        replayer.counters().snapshot(),
        ReplayCounts {
            accepted: 4,
            duplicate: 3,
            rejected: 3,
            transient_failures: 0
        }
    );
    assert_eq!(spool.stats().entries, 0);
    drop(replayer);
    drop(spool);
    assert!(numbers(&open(&config(dir.path()))).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_holds_the_line_and_retries_with_backoff() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    append_range(&spool, 0..6).await;
    let sink = Arc::new(Recorder::default());
    sink.fail_number.store(2, Ordering::SeqCst);
    sink.failing.store(true, Ordering::SeqCst);
    let replayer = Arc::new(
        Replayer::new(spool.clone(), Shared(Arc::clone(&sink))).with_backoff(Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
        }),
    );
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = {
        let (replayer, stop) = (Arc::clone(&replayer), Arc::clone(&stop));
        tokio::spawn(async move { replayer.run(stop.notified()).await })
    };
    eventually("five attempts at record 2", || {
        replayer.counters().snapshot().transient_failures >= 5
    })
    .await;
    // Records 0 and 1 are acknowledged; 2 and everything after it wait.
    assert_eq!(spool.stats().entries, 4);
    assert_eq!(
        spool.stats().oldest_received_at,
        Some(webhook(2).received_at)
    );
    sink.failing.store(false, Ordering::SeqCst);
    eventually("the spool is empty", || spool.stats().entries == 0).await;
    stop.notify_one();
    task.await.unwrap().unwrap();

    let seen = sink.seen.lock().unwrap();
    let order: Vec<u64> = seen.iter().map(|s| s.0).collect();
    let attempts = order.iter().filter(|&&n| n == 2).count();
    assert!(attempts >= 6);
    let mut expected = vec![0, 1];
    expected.extend(std::iter::repeat_n(2, attempts));
    expected.extend([3, 4, 5]);
    assert_eq!(order, expected, "nothing overtakes the failing record");
    // Delays between attempts at record 2: 100, 200, 400, then capped at 400 ms.
    let times: Vec<_> = seen.iter().filter(|s| s.0 == 2).map(|s| s.2).collect();
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert_eq!(&gaps[..4], &[100, 200, 400, 400]);
    assert_eq!(
        replayer.counters().snapshot().transient_failures,
        attempts as u64 - 1
    );
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_replay_replays_only_the_rest() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    append_range(&spool, 0..8).await;
    let sink = Arc::new(Recorder::default());
    sink.fail_number.store(5, Ordering::SeqCst);
    sink.failing.store(true, Ordering::SeqCst);
    let replayer = Replayer::new(spool.clone(), Shared(Arc::clone(&sink))).with_backoff(Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(1),
    });
    let counters = replayer.counters();
    // Shut down as soon as record 5 has failed once.
    replayer
        .run(eventually("record 5 failed", || {
            counters.snapshot().transient_failures > 0
        }))
        .await
        .unwrap();
    drop(replayer);
    drop(spool);

    let spool = open(&config(dir.path()));
    let sink = Arc::new(Recorder::default());
    Replayer::new(spool.clone(), Shared(Arc::clone(&sink)))
        .drain()
        .await
        .unwrap();
    let order: Vec<u64> = sink.seen.lock().unwrap().iter().map(|s| s.0).collect();
    assert_eq!(order, vec![5, 6, 7]);
}

#[tokio::test]
async fn the_replayer_wakes_up_for_new_records() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    let sink = Arc::new(Recorder::default());
    let replayer = Arc::new(Replayer::new(spool.clone(), Shared(Arc::clone(&sink))));
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = {
        let (replayer, stop) = (Arc::clone(&replayer), Arc::clone(&stop));
        tokio::spawn(async move { replayer.run(stop.notified()).await })
    };
    for n in 0..3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        spool.append(&webhook(n)).await.unwrap();
        eventually("the record is replayed and acknowledged", || {
            sink.seen.lock().unwrap().len() as u64 == n + 1 && spool.stats().entries == 0
        })
        .await;
    }
    stop.notify_one();
    task.await.unwrap().unwrap();
    assert_eq!(spool.stats().entries, 0);
}

#[tokio::test]
async fn batches_keep_arrival_order_and_a_failure_inside_one_acks_what_came_before() {
    let dir = TempDir::new().unwrap();
    let spool = open(&config(dir.path()));
    append_range(&spool, 0..10).await;
    let sink = Arc::new(Recorder::batching(4));
    sink.fail_number.store(6, Ordering::SeqCst);
    sink.failing.store(true, Ordering::SeqCst);
    let replayer = Arc::new(
        Replayer::new(spool.clone(), Shared(Arc::clone(&sink))).with_backoff(Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(20),
        }),
    );
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = {
        let (replayer, stop) = (Arc::clone(&replayer), Arc::clone(&stop));
        tokio::spawn(async move { replayer.run(stop.notified()).await })
    };
    eventually("record 6 failed twice", || {
        replayer.counters().snapshot().transient_failures >= 2
    })
    .await;
    // 0-3 in the first batch; 4 and 5 of the second were answered before 6
    // failed: acknowledged, while 6 and everything after it wait.
    assert_eq!(spool.stats().entries, 4);
    assert_eq!(
        spool.stats().oldest_received_at,
        Some(webhook(6).received_at)
    );
    sink.failing.store(false, Ordering::SeqCst);
    eventually("the spool is empty", || spool.stats().entries == 0).await;
    stop.notify_one();
    task.await.unwrap().unwrap();

    let calls = sink.calls.lock().unwrap().clone();
    assert_eq!(calls[..2], [4, 4], "full batches while records wait");
    // The retries start at the failed record: 6 and 7 (the rest of that
    // batch) until it passes, then 8 and 9.
    assert!(
        calls.len() >= 4 && calls[2..].iter().all(|&n| n == 2),
        "{calls:?}"
    );
    let mut answered: Vec<u64> = Vec::new();
    for (n, _, _) in sink.seen.lock().unwrap().iter() {
        if answered.last() != Some(n) {
            answered.push(*n);
        }
    }
    assert_eq!(
        answered,
        (0..10).collect::<Vec<_>>(),
        "in arrival order, nothing overtaking the failed record"
    );
    assert_eq!(
        replayer.counters().snapshot().accepted
            + replayer.counters().snapshot().duplicate
            + replayer.counters().snapshot().rejected,
        10
    );
}
