//! What Supabase Realtime sends the dashboard about `signals`, read the way Realtime reads it.
//!
//! Realtime's Postgres Changes polls a logical replication slot that uses the `wal2json` output
//! plugin in format version 2, filtered (`add-tables`) to the tables of the `supabase_realtime`
//! publication, and forwards each change to the subscribers whose row level security lets them
//! see the row. So what this slot yields is exactly what reaches a trader's browser: every event
//! here is a re-render of their signal list.
//!
//! The guarantees proven here:
//! - a new signal arrives as one INSERT carrying every column the dashboard shows, and each
//!   user-visible screenshot transition (`pending -> processing -> completed | failed | skipped`)
//!   as one UPDATE with the new status and, once completed, the screenshot's path and URL;
//! - the capture queue's bookkeeping (claims, failures that retry, re-claims, expired leases,
//!   releases on shutdown, stale completions, heartbeats, idle wake-ups, TradingView's duplicate
//!   resends) adds nothing to that stream. The test also reads the unfiltered slot, to show the
//!   bookkeeping really happened (in `private`, which the publication leaves out).
//!
//! Each test decodes in a database of its own (cloned from the template), so no other test's
//! writes show up in its slot. The slot is temporary (gone if the test dies) and dropped at the
//! end.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use stack_harness::{Stack, TestDb, Trader, trader_in};
use tokio_postgres::Client;
use uuid::Uuid;

/// The signal columns the dashboard renders. Realtime hands over the whole row, so every event
/// must carry all of them.
const DASHBOARD_COLUMNS: &[&str] = &[
    "id",
    "user_id",
    "indicator_name",
    "ticker",
    "exchange",
    "symbol",
    "price",
    "signal_type",
    "direction",
    "interval",
    "chart_id",
    "screenshot_url",
    "screenshot_path",
    "screenshot_status",
    "raw_message",
    "timestamp",
    "result",
    "profit_loss",
    "notes",
    "created_at",
    "updated_at",
];

/// One decoded wal2json (format version 2) change.
#[derive(Debug)]
struct Change {
    action: String,
    /// `schema.table`
    table: String,
    /// The new row (INSERT, UPDATE) by column name.
    row: Map<String, Value>,
    /// The old row's replica identity (UPDATE, DELETE) by column name.
    identity: Map<String, Value>,
}

impl Change {
    fn parse(data: &str) -> Self {
        let json: Value = serde_json::from_str(data).expect("wal2json emits JSON");
        let text = |key: &str| {
            json[key]
                .as_str()
                .unwrap_or_else(|| panic!("wal2json change without {key}: {data}"))
                .to_owned()
        };
        let by_name = |key: &str| -> Map<String, Value> {
            json[key]
                .as_array()
                .map(|columns| {
                    columns
                        .iter()
                        .map(|c| {
                            (
                                c["name"].as_str().expect("column name").to_owned(),
                                c["value"].clone(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            action: text("action"),
            table: format!("{}.{}", text("schema"), text("table")),
            row: by_name("columns"),
            identity: by_name("identity"),
        }
    }

    fn text(&self, column: &str) -> Option<&str> {
        self.row.get(column).and_then(Value::as_str)
    }

    /// (action, table, signal id, screenshot status): what a subscriber would re-render.
    fn summary(&self) -> (String, String, String, String) {
        (
            self.action.clone(),
            self.table.clone(),
            self.text("id")
                .or_else(|| self.identity.get("id").and_then(Value::as_str))
                .unwrap_or_default()
                .to_owned(),
            self.text("screenshot_status")
                .unwrap_or_default()
                .to_owned(),
        )
    }
}

fn event(action: &str, signal: Uuid, status: &str) -> (String, String, String, String) {
    (
        action.to_owned(),
        "public.signals".to_owned(),
        signal.to_string(),
        status.to_owned(),
    )
}

/// A temporary wal2json slot on a test database, read like Supabase Realtime reads its own.
struct RealtimeSlot {
    client: Client,
    name: String,
}

impl RealtimeSlot {
    async fn create(db: &TestDb) -> Self {
        let client = db.client().await;
        let name = format!("realtime_test_{}", Uuid::new_v4().simple());
        // Temporary: released with this session even if the test panics before drop().
        client
            .execute(
                "select pg_create_logical_replication_slot($1, 'wal2json', true)",
                &[&name],
            )
            .await
            .expect("create a wal2json slot (is output_plugin_libraries listing wal2json?)");
        Self { client, name }
    }

    /// Consumes the changes since the last read with Realtime's options: format version 2, no
    /// transaction markers, inserts/updates/deletes only, and only the publication's tables
    /// (`add-tables` takes `schema.table` names; ours need none of wal2json's escapes).
    async fn realtime_changes(&self) -> Vec<Change> {
        let rows = self
            .client
            .query(
                "select data from pg_logical_slot_get_changes($1, null, null, \
                   'include-pk', 'true', \
                   'include-transaction', 'false', \
                   'include-timestamp', 'true', \
                   'include-type-oids', 'true', \
                   'format-version', '2', \
                   'actions', 'insert,update,delete', \
                   'add-tables', (select string_agg(format('%s.%s', schemaname, tablename), ',') \
                                    from pg_publication_tables where pubname = 'supabase_realtime'))",
                &[&self.name],
            )
            .await
            .expect("read the slot as Realtime does");
        rows.iter().map(|r| Change::parse(r.get(0))).collect()
    }

    /// Every change since the last consuming read, on every table, without consuming it.
    async fn peek_everything(&self) -> Vec<Change> {
        let rows = self
            .client
            .query(
                "select data from pg_logical_slot_peek_changes($1, null, null, \
                   'format-version', '2', 'include-transaction', 'false')",
                &[&self.name],
            )
            .await
            .expect("peek at the slot");
        rows.iter().map(|r| Change::parse(r.get(0))).collect()
    }

    async fn drop(self) {
        self.client
            .execute("select pg_drop_replication_slot($1)", &[&self.name])
            .await
            .expect("drop the slot");
        let left: i64 = self
            .client
            .query_one(
                "select count(*) from pg_replication_slots where slot_name = $1",
                &[&self.name],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "the slot is gone");
    }
}

/// A session as the service role: how the ingest edge and the capture daemons run.
async fn service_role(db: &TestDb) -> Client {
    let client = db.client().await;
    client
        .batch_execute("set role service_role")
        .await
        .expect("set role service_role");
    client
}

async fn ingest(service: &Client, trader: &Trader, body: &str) -> Value {
    service
        .query_one(
            "select public.ingest_signal(p_token => $1, p_received_at => now(), p_raw_message => $2, \
               p_chart_id => 'Xy12AbCd', p_ticker => 'BINANCE:BTCUSDT', p_exchange => 'BINANCE', \
               p_symbol => 'BTCUSDT', p_price => 67890.5, p_direction => 'long', p_signal_type => 'entry', \
               p_interval => '15', p_indicator_name => 'Trend Rider')",
            &[&trader.webhook_token, &body],
        )
        .await
        .expect("ingest_signal as service_role")
        .get(0)
}

async fn ingest_accepted(service: &Client, trader: &Trader, body: &str) -> Uuid {
    let answer = ingest(service, trader, body).await;
    assert_eq!(answer["outcome"], "accepted", "{answer}");
    answer["signal_id"].as_str().unwrap().parse().unwrap()
}

/// Claims the one due job as `worker`, returning its lease token and attempt number.
async fn claim(service: &Client, worker: &str, signal: Uuid) -> (Uuid, i16) {
    let rows = service
        .query(
            "select signal_id, lease_token, attempt from private.claim_capture_jobs($1, 10, interval '30 seconds')",
            &[&worker],
        )
        .await
        .expect("claim");
    assert_eq!(rows.len(), 1, "exactly the one due job is claimed");
    assert_eq!(rows[0].get::<_, Uuid>(0), signal);
    (rows[0].get(1), rows[0].get(2))
}

async fn fail(
    service: &Client,
    signal: Uuid,
    lease: Uuid,
    reason: &str,
    retryable: bool,
) -> String {
    service
        .query_one(
            "select outcome from private.fail_capture_job($1, $2, $3, $4)",
            &[&signal, &lease, &reason, &retryable],
        )
        .await
        .expect("fail_capture_job")
        .get(0)
}

/// Test-only time travel in `private` (as the superuser): the retry is due now.
async fn make_due(admin: &Client, signal: Uuid) {
    admin
        .execute(
            "update private.capture_jobs set run_at = now() where signal_id = $1",
            &[&signal],
        )
        .await
        .unwrap();
}

async fn heartbeat(service: &Client, worker: &str) {
    service
        .execute("select private.capture_worker_heartbeat($1, 2)", &[&worker])
        .await
        .expect("heartbeat");
}

fn changes_on(changes: &[Change], table: &str) -> usize {
    changes.iter().filter(|c| c.table == table).count()
}

/// `signals` is published to Realtime, and nothing from `private` is.
async fn assert_published_tables(admin: &Client) {
    let tables: Vec<String> = admin
        .query(
            "select format('%s.%s', schemaname, tablename) from pg_publication_tables \
             where pubname = 'supabase_realtime' order by 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        tables.contains(&"public.signals".to_owned()),
        "signals is in supabase_realtime: {tables:?}"
    );
    assert!(
        tables.iter().all(|t| t.starts_with("public.")),
        "nothing private is published: {tables:?}"
    );
}

/// The INSERT a subscriber receives carries every dashboard column with the alert's values.
fn assert_dashboard_row(inserted: &Change, trader: &Trader, body: &str) {
    let columns: BTreeSet<&str> = inserted.row.keys().map(String::as_str).collect();
    for column in DASHBOARD_COLUMNS {
        assert!(
            columns.contains(column),
            "the INSERT carries {column}: {columns:?}"
        );
    }
    assert_eq!(
        inserted.text("user_id"),
        Some(trader.id.to_string().as_str())
    );
    assert_eq!(inserted.text("ticker"), Some("BINANCE:BTCUSDT"));
    assert_eq!(inserted.text("exchange"), Some("BINANCE"));
    assert_eq!(inserted.text("symbol"), Some("BTCUSDT"));
    assert_eq!(inserted.row["price"], serde_json::json!(67890.5));
    assert_eq!(inserted.text("direction"), Some("long"));
    assert_eq!(inserted.text("signal_type"), Some("entry"));
    assert_eq!(inserted.text("interval"), Some("15"));
    assert_eq!(inserted.text("indicator_name"), Some("Trend Rider"));
    assert_eq!(inserted.text("chart_id"), Some("Xy12AbCd"));
    assert_eq!(inserted.text("raw_message"), Some(body));
    assert_eq!(inserted.text("result"), Some("pending"));
    assert!(inserted.text("timestamp").is_some());
    assert_eq!(inserted.row["screenshot_path"], Value::Null);
}

/// The capture daemons at work, with everything that can go wrong short of dead-lettering:
/// a failure that retries, a worker that vanishes (its lease expires and is reclaimed), a
/// release on shutdown, a stale completion, heartbeats and an idle wake-up. Returns the
/// current lease.
async fn churn_the_queue(service: &Client, admin: &Client, signal: Uuid) -> Uuid {
    service
        .execute("select private.capture_daemon_idle()", &[])
        .await
        .unwrap();
    heartbeat(service, "worker-a").await;
    let (lease_1, attempt) = claim(service, "worker-a", signal).await;
    assert_eq!(attempt, 1);
    assert_eq!(
        fail(service, signal, lease_1, "chart did not load", true).await,
        "retry"
    );
    make_due(admin, signal).await;
    heartbeat(service, "worker-b").await;
    let (lease_2, attempt) = claim(service, "worker-b", signal).await;
    assert_eq!(attempt, 2);
    // worker-b vanishes; its lease runs out and the job goes back to the queue.
    admin
        .execute(
            "update private.capture_jobs set lease_expires_at = now() - interval '1 second' where signal_id = $1",
            &[&signal],
        )
        .await
        .unwrap();
    let reclaimed: i32 = service
        .query_one("select private.reclaim_expired_capture_jobs()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reclaimed, 1);
    let (lease_3, _) = claim(service, "worker-a", signal).await;
    // worker-a shuts down and gives the job back; it claims it again after the restart.
    let released: bool = service
        .query_one(
            "select private.release_capture_job($1, $2)",
            &[&signal, &lease_3],
        )
        .await
        .unwrap()
        .get(0);
    assert!(released);
    heartbeat(service, "worker-a").await;
    let (lease_4, _) = claim(service, "worker-a", signal).await;
    // worker-b comes back from the dead with its old lease: its result is thrown away.
    let stale: bool = service
        .query_one(
            "select private.complete_capture_job($1, $2, 'stale/path.png')",
            &[&signal, &lease_2],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!stale, "a stale completion is rejected");
    lease_4
}

#[tokio::test]
async fn a_new_signal_and_its_screenshot_arrive_and_queue_bookkeeping_stays_silent() {
    let stack = Stack::from_env();
    let db = TestDb::create(&stack).await;
    let admin = db.client().await;
    let service = service_role(&db).await;
    let trader = trader_in(&admin, "pro").await;

    assert_published_tables(&admin).await;

    let slot = RealtimeSlot::create(&db).await;

    // A new alert: one INSERT with everything the dashboard shows.
    let body = "{\"ticker\":\"BINANCE:BTCUSDT\",\"action\":\"buy\"}";
    let signal = ingest_accepted(&service, &trader, body).await;
    let events = slot.realtime_changes().await;
    assert_eq!(
        events.iter().map(Change::summary).collect::<Vec<_>>(),
        vec![event("I", signal, "pending")],
        "one INSERT, and nothing from the delivery log, quota counters or the queue"
    );
    assert_dashboard_row(&events[0], &trader, body);

    // TradingView resends the same alert after a 5xx: deduplicated, logged, and invisible here.
    let resend = ingest(&service, &trader, body).await;
    assert_eq!(resend["outcome"], "duplicate", "{resend}");

    let lease_4 = churn_the_queue(&service, &admin, signal).await;

    let everything = slot.peek_everything().await;
    assert!(
        changes_on(&everything, "private.capture_jobs") >= 8,
        "the bookkeeping happened (in private): {:?}",
        everything
            .iter()
            .map(|c| (&c.action, &c.table))
            .collect::<Vec<_>>()
    );
    assert!(changes_on(&everything, "private.capture_workers") >= 3);
    assert_eq!(changes_on(&everything, "public.webhook_deliveries"), 1);

    let path = format!("{}/{signal}.png", trader.id);
    let completed: bool = service
        .query_one(
            "select private.complete_capture_job($1, $2, $3, $4)",
            &[
                &signal,
                &lease_4,
                &path,
                &format!("https://example.supabase.co/storage/v1/object/screenshots/{path}"),
            ],
        )
        .await
        .unwrap()
        .get(0);
    assert!(completed);

    let events = slot.realtime_changes().await;
    assert_eq!(
        events.iter().map(Change::summary).collect::<Vec<_>>(),
        vec![
            event("U", signal, "processing"),
            event("U", signal, "completed")
        ],
        "the user-visible transitions only: four claims, a retry, an expired lease, a release, \
         a stale completion, heartbeats and a duplicate resend add nothing"
    );
    let done = &events[1];
    for column in DASHBOARD_COLUMNS {
        assert!(
            done.row.contains_key(*column),
            "the UPDATE carries {column}"
        );
    }
    assert_eq!(done.text("screenshot_path"), Some(path.as_str()));
    assert!(
        done.text("screenshot_url")
            .is_some_and(|url| url.ends_with(&path))
    );
    assert_eq!(done.text("ticker"), Some("BINANCE:BTCUSDT"));
    assert_eq!(done.text("user_id"), Some(trader.id.to_string().as_str()));

    slot.drop().await;
    drop((admin, service));
    db.drop_db().await;
}

#[tokio::test]
async fn failed_and_skipped_captures_are_one_update_each_and_a_delete_carries_only_the_id() {
    let stack = Stack::from_env();
    let db = TestDb::create(&stack).await;
    let admin = db.client().await;
    let service = service_role(&db).await;
    let trader = trader_in(&admin, "pro").await;
    let slot = RealtimeSlot::create(&db).await;

    // Three attempts, each failing and retrying, until the job is dead-lettered.
    let doomed = ingest_accepted(&service, &trader, "doomed alert").await;
    let mut outcomes = Vec::new();
    for attempt in 1..=3 {
        let (lease, n) = claim(&service, "worker-a", doomed).await;
        assert_eq!(n, attempt);
        let outcome = fail(&service, doomed, lease, "TradingView did not answer", true).await;
        if outcome == "retry" {
            make_due(&admin, doomed).await;
        }
        outcomes.push(outcome);
    }
    assert_eq!(outcomes, ["retry", "retry", "failed"]);

    // An alert that cannot be captured at all (the trader's TradingView session expired, say).
    let skipped = ingest_accepted(&service, &trader, "skipped alert").await;
    let (lease, _) = claim(&service, "worker-a", skipped).await;
    let ok: bool = service
        .query_one(
            "select private.skip_capture_job($1, $2, 'no TradingView session')",
            &[&skipped, &lease],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ok);

    let events = slot.realtime_changes().await;
    assert_eq!(
        events.iter().map(Change::summary).collect::<Vec<_>>(),
        vec![
            event("I", doomed, "pending"),
            event("U", doomed, "processing"),
            event("U", doomed, "failed"),
            event("I", skipped, "pending"),
            event("U", skipped, "processing"),
            event("U", skipped, "skipped"),
        ]
    );
    assert_eq!(
        events[2].text("screenshot_error"),
        Some("TradingView did not answer"),
        "the dashboard can say why"
    );
    assert_eq!(
        events[5].text("screenshot_error"),
        Some("no TradingView session")
    );

    // Realtime applies neither RLS nor filters to DELETE events: every subscriber to the table gets
    // them. With the default replica identity they carry the primary key and nothing else.
    let identity: i8 = admin
        .query_one(
            "select relreplident::\"char\" from pg_class where oid = 'public.signals'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        u8::try_from(identity).ok(),
        Some(b'd'),
        "signals keeps the default replica identity, so deletes reveal no content"
    );
    admin
        .execute("delete from public.signals where id = $1", &[&skipped])
        .await
        .unwrap();
    let events = slot.realtime_changes().await;
    assert_eq!(
        events.iter().map(Change::summary).collect::<Vec<_>>(),
        vec![event("D", skipped, "")]
    );
    assert!(events[0].row.is_empty(), "a DELETE carries no row");
    assert_eq!(
        events[0].identity.keys().collect::<Vec<_>>(),
        ["id"],
        "only the primary key"
    );

    slot.drop().await;
    drop((admin, service));
    db.drop_db().await;
}
