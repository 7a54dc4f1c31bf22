//! One alert that raises inside the database, in a batch with others: the
//! others are stored and answered 200, that one gets its own answer (500
//! `internal_error`, nothing stored), on both database paths and in the
//! spool's replay.
//!
//! The failure is real: the test puts a trigger on `public.signals` that
//! raises for one marker of one trader (scoped to that trader, dropped at
//! the end, so tests running beside it are unaffected). The batch is made
//! certain, not lucky: with one call slot, a first alert of another trader
//! is held inside the database on an advisory lock the test owns, the
//! others queue behind it (the test waits until `ingest_db_queued_alerts`
//! says so), and only then is the lock released, so they all go in the
//! next call. The same trigger stamps each stored signal's `notes` with the
//! top-level transaction id, which proves on the database side that they
//! were stored by one `ingest_signals` call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use ingest::batcher::BatchSettings;
use ingest::db::DEFAULT_MAX_BATCH_BYTES;
use reqwest::StatusCode;
use serde_json::Value;
use stack_harness::Trader;
use tokio_postgres::Client;

use crate::helpers::{Options, SpoolLimits, TestApp, Upstream, assert_error, spawn_app};
use crate::switch::Mode;

/// The marker of the alert that raises.
const RAISES: &str = "raise-me";

/// Alerts in the batch besides the one that raises.
const OTHERS: usize = 9;

/// A trigger on `public.signals` for this test only: it holds `holder`'s
/// inserts on advisory lock `lock`, raises `P0001` for `trader`'s alerts
/// that carry [`RAISES`], and stamps `trader`'s stored signals with their
/// top-level transaction id (in `notes`).
struct Trigger {
    name: String,
}

impl Trigger {
    async fn install(db: &Client, holder: &Trader, trader: &Trader, lock: i64) -> Self {
        let name = format!("it_batch_{}", trader.id.simple());
        db.batch_execute(&format!(
            "create function public.{name}() returns trigger language plpgsql set search_path = '' as $$
             begin
               if new.user_id = '{holder}' then
                 perform pg_advisory_xact_lock({lock});
               end if;
               if new.user_id = '{trader}' then
                 if new.raw_message like '%{RAISES}%' then
                   raise exception 'this alert raises (a test trigger)' using errcode = 'P0001';
                 end if;
                 new.notes := pg_current_xact_id()::text;
               end if;
               return new;
             end $$;
             create trigger {name} before insert on public.signals
               for each row execute function public.{name}();",
            holder = holder.id,
            trader = trader.id,
        ))
        .await
        .expect("install the trigger");
        Self { name }
    }

    async fn remove(self, db: &Client) {
        db.batch_execute(&format!(
            "drop trigger {name} on public.signals; drop function public.{name}();",
            name = self.name
        ))
        .await
        .expect("drop the trigger");
    }
}

/// A whole-number series' value in `/metrics` (0 when absent).
fn metric(metrics: &str, series: &str) -> usize {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |v| v.parse().expect("a whole number"))
}

async fn wait_until<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The trader's stored signals: (raw message, transaction stamp).
async fn stored(db: &Client, trader: &Trader) -> Vec<(String, Option<String>)> {
    db.query(
        "select raw_message, notes from public.signals where user_id = $1 order by created_at",
        &[&trader.id],
    )
    .await
    .expect("signals")
    .into_iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn alert(n: usize) -> String {
    if n == OTHERS / 2 {
        format!("NYSE:IBM buy {RAISES}")
    } else {
        format!("NYSE:IBM buy alert {n}")
    }
}

/// An answer: status, headers, body.
type Answer = (StatusCode, reqwest::header::HeaderMap, Value);

/// Posts `holder`'s alert and holds its call in the database on `lock`,
/// posts `trader`'s alerts (`message(0..=OTHERS)`) while it is held and
/// waits until all of them queue behind it, then lets it go: the held
/// answer and the others' (by alert number).
async fn batch_behind_a_held_call(
    app: &Arc<TestApp>,
    holder: &Trader,
    trader: &Trader,
    db: &Client,
    lock: i64,
    message: fn(usize) -> String,
) -> (Answer, Vec<(usize, Answer)>) {
    db.execute("select pg_advisory_lock($1)", &[&lock])
        .await
        .expect("take the lock");
    let held = tokio::spawn({
        let app = Arc::clone(app);
        let url = format!("/webhook/u/{}", holder.webhook_token);
        async move { app.post(&url, "NYSE:IBM sell held").await }
    });
    wait_until("the first call to be held in the database", || async move {
        let waiting: i64 = db
            .query_one(
                "select count(*) from pg_locks where locktype = 'advisory' \
                      and objid = $1::bigint::oid and not granted",
                &[&lock],
            )
            .await
            .expect("pg_locks")
            .get(0);
        waiting == 1
    })
    .await;

    let batch = tokio::spawn({
        let app = Arc::clone(app);
        let url = format!("/webhook/u/{}", trader.webhook_token);
        async move {
            join_all((0..=OTHERS).map(|n| {
                let app = Arc::clone(&app);
                let url = url.clone();
                async move { (n, app.post(&url, message(n)).await) }
            }))
            .await
        }
    });
    wait_until("every alert to queue behind the held call", || {
        let app = Arc::clone(app);
        async move { metric(&app.metrics().await, "ingest_db_queued_alerts") == OTHERS + 1 }
    })
    .await;
    db.execute("select pg_advisory_unlock($1)", &[&lock])
        .await
        .expect("release the lock");

    let held = held.await.expect("the held alert");
    (held, batch.await.expect("the batch"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_alert_that_raises_fails_alone_in_its_batch_through_postgrest() {
    one_alert_that_raises_fails_alone(Upstream::Rest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_alert_that_raises_fails_alone_in_its_batch_through_the_pool() {
    one_alert_that_raises_fails_alone(Upstream::Pool).await;
}

async fn one_alert_that_raises_fails_alone(upstream: Upstream) {
    let mut options = Options::on(upstream);
    options.batch = BatchSettings {
        max_batch: 32,
        concurrency: 1,
    };
    // The held call waits for the test, not for the deadline.
    options.db_timeout = Duration::from_secs(15);
    let app = Arc::new(spawn_app(options).await);
    let holder = app.trader("premium").await;
    let trader = app.trader("premium").await;
    let db = app.stack().db().await;
    let lock: i64 = rand_lock();
    let trigger = Trigger::install(&db, &holder, &trader, lock).await;

    let (held, answers) = batch_behind_a_held_call(&app, &holder, &trader, &db, lock, alert).await;
    let (status, _, body) = held;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut accepted = Vec::new();
    for (n, (status, headers, body)) in &answers {
        if alert(*n).contains(RAISES) {
            assert_error(
                *status,
                body,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
            );
            let message = body["error"]["message"].as_str().expect("a message");
            assert!(
                !message.contains("P0001") && !message.contains("trigger"),
                "a 5xx says nothing internal: {body}"
            );
            assert!(headers.get("retry-after").is_none(), "{body}");
        } else {
            assert_eq!(*status, StatusCode::OK, "alert {n}: {body}");
            assert_eq!(body["duplicate"], false, "{body}");
            accepted.push(body["signal_id"].as_str().expect("an id").to_owned());
        }
    }
    assert_eq!(accepted.len(), OTHERS);

    // The others stored, once each, in one transaction; nothing for the one
    // that raised.
    let rows = stored(&db, &trader).await;
    assert_eq!(rows.len(), OTHERS, "{rows:?}");
    assert!(
        rows.iter().all(|(raw, _)| !raw.contains(RAISES)),
        "{rows:?}"
    );
    let transactions: std::collections::HashSet<_> = rows.iter().map(|(_, t)| t).collect();
    assert_eq!(transactions.len(), 1, "one ingest_signals call: {rows:?}");
    assert!(rows[0].1.is_some(), "stamped by the trigger: {rows:?}");
    // The delivery log has the others; everything the raising alert wrote
    // was rolled back with it.
    let deliveries = app.deliveries(&trader).await;
    assert_eq!(deliveries.len(), OTHERS, "{deliveries:?}");
    assert!(
        deliveries
            .iter()
            .all(|(outcome, _, status)| outcome == "accepted" && *status == 200),
        "{deliveries:?}"
    );

    // The edge's figures: two calls (the held one, then all the others
    // together), and the answers by outcome.
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "ingest_db_batch_size_count"),
        2,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "ingest_db_batch_size_sum"),
        OTHERS + 2,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"ingest_requests_total{outcome="internal_error",route="webhook"}"#
        ),
        1,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"ingest_requests_total{outcome="accepted",route="webhook"}"#
        ),
        OTHERS + 1,
        "{metrics}"
    );
    assert!(
        !metrics.contains("ingest_requests_total{outcome=\"unavailable\""),
        "the database was never unavailable: {metrics}"
    );
    trigger.remove(&db).await;
}

/// Spooled alerts replayed in one batch with one that raises: the others
/// are stored, in arrival order; the one that raises is dropped (a retry
/// would meet it again and hold every later alert back for good), logged
/// and counted, and the spool empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_with_one_alert_that_raises_stores_the_others_and_moves_on() {
    let replay = replayed_after_an_outage(
        DEFAULT_MAX_BATCH_BYTES as usize,
        (0..=OTHERS).map(alert).collect(),
    )
    .await;
    let (trader, db, health) = (&replay.trader, &replay.db, &replay.health);
    let replayed: &Value = &health["spool"]["replayed"];
    assert_eq!(replayed["accepted"], OTHERS, "{health}");
    assert_eq!(replayed["rejected"], 1, "the one that raised: {health}");

    let rows = stored(db, trader).await;
    let expected: Vec<String> = (0..=OTHERS)
        .map(alert)
        .filter(|a| !a.contains(RAISES))
        .collect();
    let messages: Vec<&String> = rows.iter().map(|(raw, _)| raw).collect();
    assert_eq!(
        messages,
        expected.iter().collect::<Vec<_>>(),
        "in arrival order"
    );
    let transactions: std::collections::HashSet<_> = rows.iter().map(|(_, t)| t).collect();
    assert_eq!(transactions.len(), 1, "one ingest_signals call: {rows:?}");
    assert!(rows[0].1.is_some(), "stamped by the trigger: {rows:?}");
    replay.trigger.remove(db).await;
}

/// An alert of about a kilobyte in a call's body (its message is 700
/// bytes and some): two fit in [`BODY_LIMIT`], three do not.
fn long_alert(n: usize) -> String {
    format!("NYSE:IBM buy long alert {n:02} {}", "x".repeat(700))
}

/// The body limit of the tests below.
const BODY_LIMIT: usize = 2600;

/// The calls that take the batch's alerts, two at a time.
const CALLS_OF_TWO: usize = 5;
const _: () = assert!(CALLS_OF_TWO * 2 == OTHERS + 1);

/// `rows` (in stored order) grouped by the transaction that stored them.
fn by_transaction(rows: &[(String, Option<String>)]) -> Vec<Vec<&str>> {
    let mut groups: Vec<(Option<&String>, Vec<&str>)> = Vec::new();
    for (raw, stamp) in rows {
        match groups.last_mut() {
            Some((last, group)) if *last == stamp.as_ref() => group.push(raw),
            _ => groups.push((stamp.as_ref(), vec![raw])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// Through PostgREST a batch ends before its body would pass
/// `INGEST_DB_MAX_BATCH_BYTES`: ten alerts of about a kilobyte queued
/// behind a held call go in five calls of two, each its own transaction,
/// and every one is stored and answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_through_postgrest_ends_before_its_body_passes_the_byte_limit() {
    let mut options = Options::on(Upstream::Rest);
    options.batch = BatchSettings {
        max_batch: 32,
        concurrency: 1,
    };
    options.rest_max_batch_bytes = BODY_LIMIT;
    options.db_timeout = Duration::from_secs(15);
    let app = Arc::new(spawn_app(options).await);
    let holder = app.trader("premium").await;
    let trader = app.trader("premium").await;
    let db = app.stack().db().await;
    let lock: i64 = rand_lock();
    let trigger = Trigger::install(&db, &holder, &trader, lock).await;

    let (held, answers) =
        batch_behind_a_held_call(&app, &holder, &trader, &db, lock, long_alert).await;
    assert_eq!(held.0, StatusCode::OK, "{}", held.2);
    for (n, (status, _, body)) in &answers {
        assert_eq!(*status, StatusCode::OK, "alert {n}: {body}");
    }
    let rows = stored(&db, &trader).await;
    assert_eq!(rows.len(), OTHERS + 1, "{rows:?}");
    let calls = by_transaction(&rows);
    assert_eq!(
        calls.iter().map(Vec::len).collect::<Vec<_>>(),
        [2; CALLS_OF_TWO],
        "calls of two alerts: {calls:?}"
    );
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "ingest_db_batch_size_count"),
        1 + CALLS_OF_TWO,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "ingest_db_batch_size_sum"),
        OTHERS + 2,
        "{metrics}"
    );
    trigger.remove(&db).await;
}

/// The replay keeps to the same limit: six spooled alerts of about a
/// kilobyte are stored by three calls of two, in arrival order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_through_postgrest_keeps_its_calls_within_the_byte_limit() {
    const SPOOLED: usize = 6;
    let replay = replayed_after_an_outage(BODY_LIMIT, (0..SPOOLED).map(long_alert).collect()).await;
    let (trader, db, health) = (&replay.trader, &replay.db, &replay.health);
    assert_eq!(health["spool"]["replayed"]["accepted"], SPOOLED, "{health}");

    let rows = stored(db, trader).await;
    let messages: Vec<String> = rows.iter().map(|(raw, _)| raw.clone()).collect();
    assert_eq!(
        messages,
        (0..SPOOLED).map(long_alert).collect::<Vec<_>>(),
        "in arrival order"
    );
    let calls = by_transaction(&rows);
    assert_eq!(
        calls.iter().map(Vec::len).collect::<Vec<_>>(),
        [2; SPOOLED / 2],
        "calls of two alerts"
    );
    replay.trigger.remove(db).await;
}

/// What [`replayed_after_an_outage`] leaves for the test to check.
struct Replay {
    trader: Trader,
    db: Client,
    /// The second ingest's `/health` once its spool is empty.
    health: Value,
    trigger: Trigger,
}

/// Spools `messages` of a new trader while PostgREST is down, on an ingest
/// that stops before it is back; then starts the next ingest on the same
/// spool with the database up (PostgREST calls of at most
/// `rest_max_batch_bytes`) and waits until it has replayed them all. The
/// trader's stored signals are stamped by a [`Trigger`].
async fn replayed_after_an_outage(rest_max_batch_bytes: usize, messages: Vec<String>) -> Replay {
    let dir = tempfile::tempdir().expect("a spool directory");
    let spooling = || {
        let mut options = Options::on(Upstream::Switched);
        options.rest_max_batch_bytes = rest_max_batch_bytes;
        options.spool = Some(SpoolLimits {
            dir: Some(dir.path().to_owned()),
            ..SpoolLimits::default()
        });
        options
    };
    let first = spawn_app(spooling()).await;
    let holder = first.trader("premium").await;
    let trader = first.trader("premium").await;
    let db = first.stack().db().await;
    let trigger = Trigger::install(&db, &holder, &trader, rand_lock()).await;
    first.switch().set(Mode::Down);
    for (n, message) in messages.into_iter().enumerate() {
        let url = format!("/webhook/u/{}", trader.webhook_token);
        let (status, _, body) = first.post(&url, message).await;
        assert_eq!(status, StatusCode::ACCEPTED, "alert {n}: {body}");
    }
    let drain = first.shut_down(Duration::from_secs(5)).await;
    assert_eq!(drain, service_runtime::http::Drain::Complete);

    // The next ingest reads every spooled alert at start and replays them.
    let second = spawn_app(spooling()).await;
    wait_until("the spool to empty", || {
        let app = &second;
        async move {
            let (_, health) = app.get_json("/health").await;
            health["spool"]["entries"] == 0
        }
    })
    .await;
    let (_, health) = second.get_json("/health").await;
    Replay {
        trader,
        db,
        health,
        trigger,
    }
}

/// An advisory lock key of this test's own.
fn rand_lock() -> i64 {
    i64::from(uuid::Uuid::new_v4().as_fields().0 & 0x7fff_ffff)
}
