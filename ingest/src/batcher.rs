//! The batcher: webhooks that arrive together reach the database in one
//! `public.ingest_signals` call.
//!
//! Why: at bar close thousands of alerts arrive within a second. One call
//! per alert pays, per alert, a round trip, PostgREST's request and
//! transaction setup and a commit's WAL flush; a batch pays them once and
//! the function still decides every alert by the same rules, in order, with
//! its own outcome (`sql/20_ingest_signal.sql`).
//!
//! How, without adding latency: a webhook's call goes at once when one of
//! the `concurrency` call slots is free, alone if nothing else waits. Only
//! while every slot is busy do alerts queue; when a call comes back, the
//! next one takes up to `max_batch` of them. So a lone alert never waits for
//! company (there is no timer), and under a burst the batches grow to what
//! the database can take. The wait in the queue is the only linger, and it
//! is bounded: a caller that gives a budget ([`Batcher::submit`]) gets
//! [`BatchError::Saturated`] when its alert waited that long, or when the
//! queue is already so long that it would, and the alert is withdrawn
//! (nothing was sent for it): the edge then spools it and answers 202
//! instead of letting TradingView's 3 s run out. Without a budget (no
//! spool) the wait is bounded by the database deadline, and the call then
//! has a deadline of its own: the queue never eats into the time the
//! database is given.
//!
//! On the PostgREST path a batch also stops where its body would pass
//! [`Database::max_batch_bytes`] (a gateway in front of PostgREST holds
//! bodies up to its buffer in memory; a larger one costs the call tens of
//! milliseconds: `db/rest.rs`).
//!
//! One trader's alerts are never in two calls at once: an alert whose
//! token has an alert in a call in flight waits for that call, and a batch
//! takes alerts in arrival order, so each trader's alerts are decided in the
//! order they arrived here (the quota admits the first ones), while other
//! traders' alerts go ahead.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::oneshot;

use crate::db::{BatchBody, Database, DbError, IngestOutcome, alert_bytes};
use crate::metrics::Metrics;

/// How calls are made.
#[derive(Clone, Copy, Debug)]
pub struct BatchSettings {
    /// Most alerts in one call (1 turns batching off).
    pub max_batch: usize,
    /// Calls in flight at once.
    pub concurrency: usize,
}

/// Why an alert got no outcome.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The alert waited for a call longer than its budget (or would have):
    /// it was withdrawn, nothing was sent for it.
    #[error("the database path is saturated")]
    Saturated,
    /// The call failed, or this alert raised in it.
    #[error(transparent)]
    Db(Arc<DbError>),
}

/// Batches alerts into `ingest_signals` calls; cheap to share.
#[derive(Clone, Debug)]
pub struct Batcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Arc<Database>,
    settings: BatchSettings,
    metrics: Metrics,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Waiting alerts by id, which is arrival order. A map, not a list: at
    /// a bar close without a spool thousands wait at once and time out
    /// together, and each must be withdrawn without scanning the others
    /// (under this lock, on the runtime's threads).
    queue: BTreeMap<u64, Waiting>,
    /// Tokens (by key) with an alert in a call in flight.
    busy: HashSet<u64>,
    in_flight: usize,
    next_id: u64,
}

/// The answer a waiting alert gets.
type Reply = Result<IngestOutcome, Arc<DbError>>;

#[derive(Debug)]
struct Waiting {
    id: u64,
    key: u64,
    args: Value,
    /// `args`' bytes in a call's body (0 when calls have no byte limit).
    bytes: usize,
    reply: oneshot::Sender<Reply>,
}

impl Batcher {
    pub fn new(db: Arc<Database>, settings: BatchSettings, metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                settings: BatchSettings {
                    max_batch: settings.max_batch.max(1),
                    concurrency: settings.concurrency.max(1),
                },
                metrics,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Decides one alert (`args`, an [`crate::db::IngestCall::arguments`]
    /// object) in a batch with whatever else waits. `key` names its token
    /// (alerts with one key are never in two calls at once).
    ///
    /// With a `budget`, an alert that has not gone to the database within it
    /// (or that finds the queue longer than a round of calls takes) comes
    /// back as [`BatchError::Saturated`], withdrawn. Without one it waits
    /// up to the database deadline for a call to take it, and is then
    /// withdrawn with a timeout (nothing was sent for it). Once in a call,
    /// the answer comes within the deadline counted from the call's start:
    /// past it, a timeout (the call may yet commit, which the delivery id
    /// makes safe to replay).
    pub async fn submit(
        &self,
        key: u64,
        args: Value,
        budget: Option<Duration>,
    ) -> Result<IngestOutcome, BatchError> {
        let deadline = self.inner.db.deadline();
        let bytes = if self.inner.db.max_batch_bytes().is_some() {
            alert_bytes(&args)
        } else {
            0
        };
        let (reply, mut answer) = oneshot::channel();
        let id = {
            let mut state = self.inner.lock();
            if budget.is_some() && state.queue.len() >= self.inner.max_queued() {
                self.inner.metrics.db_saturated.inc();
                return Err(BatchError::Saturated);
            }
            let id = state.next_id;
            state.next_id += 1;
            state.queue.insert(
                id,
                Waiting {
                    id,
                    key,
                    args,
                    bytes,
                    reply,
                },
            );
            self.inner.dispatch(&mut state);
            id
        };
        // The wait for a call is bounded on its own; the call itself is
        // bounded by the database deadline inside it (`Database`), so a
        // call that started always answers, and the deadline means what the
        // README says: how long the database may take, not the queue.
        let wait = budget.map_or(deadline, |budget| budget.min(deadline));
        match tokio::time::timeout(wait, &mut answer).await {
            Ok(answered) => return flatten(answered),
            Err(_) if self.inner.withdraw(id) => {
                if budget.is_none() {
                    return Err(BatchError::Db(Arc::new(DbError::Timeout(deadline))));
                }
                self.inner.metrics.db_saturated.inc();
                return Err(BatchError::Saturated);
            }
            // Already in a call: wait for its answer.
            Err(_) => {}
        }
        flatten(answer.await)
    }

    /// Alerts waiting for a call slot right now.
    pub fn queued(&self) -> usize {
        self.inner.lock().queue.len()
    }
}

/// The reply, or a timeout if the call's task ended without one.
fn flatten(
    answered: Result<Reply, oneshot::error::RecvError>,
) -> Result<IngestOutcome, BatchError> {
    match answered {
        Ok(reply) => reply.map_err(BatchError::Db),
        Err(_) => Err(BatchError::Db(Arc::new(DbError::Timeout(Duration::ZERO)))),
    }
}

/// The ids of the next call's alerts: waiting ones in arrival order,
/// passing over those whose token has an alert in a call in flight, up to
/// `max_batch` of them and as many as fit a body of `max_bytes`. At the
/// first alert that does not fit the batch ends, rather than passing over
/// it: a later alert of the same trader would be decided before it.
fn next_batch(
    queue: &BTreeMap<u64, Waiting>,
    busy: &HashSet<u64>,
    max_batch: usize,
    max_bytes: Option<usize>,
) -> Vec<u64> {
    let mut body = BatchBody::new(max_bytes);
    queue
        .values()
        .filter(|w| !busy.contains(&w.key))
        .take(max_batch)
        .take_while(|w| body.add(w.bytes))
        .map(|w| w.id)
        .collect()
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is a few plain assignments; a panic
        // cannot leave it half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// More queued alerts than this would wait longer than a round of
    /// calls: a new one is saturated at once.
    fn max_queued(&self) -> usize {
        self.settings.concurrency * self.settings.max_batch * 2
    }

    /// Takes alert `id` out of the queue if no call has taken it yet.
    fn withdraw(&self, id: u64) -> bool {
        self.lock().queue.remove(&id).is_some()
    }

    /// Starts calls while slots are free and alerts wait.
    fn dispatch(self: &Arc<Self>, state: &mut State) {
        while state.in_flight < self.settings.concurrency && !state.queue.is_empty() {
            let taken = next_batch(
                &state.queue,
                &state.busy,
                self.settings.max_batch,
                self.db.max_batch_bytes(),
            );
            let batch: Vec<Waiting> = taken
                .iter()
                .filter_map(|id| state.queue.remove(id))
                .collect();
            if batch.is_empty() {
                // Everything waiting belongs to tokens in flight.
                return;
            }
            state.busy.extend(batch.iter().map(|w| w.key));
            state.in_flight += 1;
            let inner = Arc::clone(self);
            tokio::spawn(async move { inner.call(batch).await });
        }
    }

    async fn call(self: Arc<Self>, mut batch: Vec<Waiting>) {
        let args = batch.iter_mut().map(|w| w.args.take()).collect();
        let started = Instant::now();
        let result = self.db.ingest_batch(args).await;
        self.metrics
            .db_call(self.db.kind(), "ingest_signals", started);
        #[expect(
            clippy::cast_precision_loss,
            reason = "a batch holds at most a few dozen alerts"
        )]
        self.metrics.db_batch_size.observe(batch.len() as f64);
        let mut state = self.lock();
        for w in &batch {
            state.busy.remove(&w.key);
        }
        state.in_flight -= 1;
        self.dispatch(&mut state);
        drop(state);
        match result {
            Ok(outcomes) => {
                for (waiting, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = waiting.reply.send(outcome.map_err(Arc::new));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for waiting in batch {
                    let _ = waiting.reply.send(Err(Arc::clone(&error)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue of alerts by (token key, bytes), in arrival order.
    fn queue(alerts: &[(u64, usize)]) -> BTreeMap<u64, Waiting> {
        alerts
            .iter()
            .zip(0..)
            .map(|(&(key, bytes), id)| {
                let waiting = Waiting {
                    id,
                    key,
                    args: Value::Null,
                    bytes,
                    reply: oneshot::channel().0,
                };
                (id, waiting)
            })
            .collect()
    }

    #[test]
    fn a_batch_takes_alerts_in_arrival_order_up_to_its_size() {
        let waiting = queue(&[(1, 10), (2, 10), (1, 10), (3, 10)]);
        let busy = HashSet::new();
        assert_eq!(next_batch(&waiting, &busy, 3, None), [0, 1, 2]);
        assert_eq!(next_batch(&waiting, &busy, 64, None), [0, 1, 2, 3]);
    }

    #[test]
    fn a_token_with_an_alert_in_flight_waits_and_the_others_go_ahead() {
        let waiting = queue(&[(1, 10), (2, 10), (1, 10), (3, 10)]);
        let busy = HashSet::from([1]);
        assert_eq!(next_batch(&waiting, &busy, 64, None), [1, 3]);
    }

    #[test]
    fn a_batch_ends_where_its_body_would_pass_the_limit() {
        // The envelope (15 bytes), two alerts of 100 and the comma: 216.
        let waiting = queue(&[(1, 100), (2, 100), (3, 100)]);
        let busy = HashSet::new();
        assert_eq!(next_batch(&waiting, &busy, 64, Some(216)), [0, 1]);
        assert_eq!(next_batch(&waiting, &busy, 64, Some(215)), [0]);
        assert_eq!(next_batch(&waiting, &busy, 64, Some(317)), [0, 1, 2]);
    }

    #[test]
    fn an_alert_larger_than_the_limit_goes_alone() {
        let waiting = queue(&[(1, 5000), (2, 10)]);
        assert_eq!(next_batch(&waiting, &HashSet::new(), 64, Some(1000)), [0]);
    }

    #[test]
    fn an_alert_that_does_not_fit_is_never_passed_over() {
        // Trader 1's second alert must not go before its first.
        let waiting = queue(&[(2, 100), (1, 900), (1, 10)]);
        assert_eq!(next_batch(&waiting, &HashSet::new(), 64, Some(500)), [0]);
    }

    #[test]
    fn the_body_budget_counts_what_the_call_sends() {
        let alerts: Vec<Value> = (0..5)
            .map(|n| serde_json::json!({ "p_token": "t", "p_raw_message": "x".repeat(n * 7) }))
            .collect();
        let sent = serde_json::to_vec(&serde_json::json!({ "p_alerts": alerts }))
            .expect("json")
            .len();
        let mut exact = BatchBody::new(Some(sent));
        assert!(alerts.iter().all(|a| exact.add(alert_bytes(a))));
        let mut short = BatchBody::new(Some(sent - 1));
        assert!(!alerts.iter().all(|a| short.add(alert_bytes(a))));
    }
}
