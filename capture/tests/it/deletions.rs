//! Deleting a signal deletes its screenshot: the delete queues the object in
//! the database, and the daemon (drain mode here) or `capture prune` removes
//! it through the Storage API, from the `fs:` directory or with a DELETE to
//! Supabase Storage, retrying what Storage refused until it accepts.

use std::path::Path;

use capture::deletions;
use capture::storage::Storage;
use service_runtime::SecretString;
use stack_harness::{TestDb, Trader};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::daemon::{Knobs, Spawn, drain, spawn_daemon, worker};
use crate::support::storage_stub::StorageStub;
use crate::support::{ChartServer, alert, stack, unlimited_trader};

/// A completed signal of `trader` whose PNG is stored under `root`; returns
/// its id and object path.
async fn stored(db: &Client, root: &Path, trader: &Trader) -> (Uuid, String) {
    let id = alert(db, trader, 100.0, "long").await;
    let path = format!("{}/{id}.png", trader.id);
    db.execute(
        "update public.signals set screenshot_status = 'completed', screenshot_path = $2 where id = $1",
        &[&id, &path],
    )
    .await
    .unwrap();
    // No capture job: the test is about the object, not the capture.
    db.execute(
        "delete from private.capture_jobs where signal_id = $1",
        &[&id],
    )
    .await
    .unwrap();
    let file = root.join(&path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"png").unwrap();
    (id, path)
}

async fn delete_signal(db: &Client, id: Uuid) {
    let deleted = db
        .execute("delete from public.signals where id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(deleted, 1);
}

/// The queued paths with their attempts and last error.
async fn queued(db: &Client) -> Vec<(String, i32, Option<String>)> {
    db.query(
        "select object_path, attempts, last_error from private.screenshot_deletions order by object_path",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test]
async fn capture_prune_removes_a_deleted_signals_screenshot_from_the_fs_backend() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let trader = unlimited_trader(&db).await;
    let (gone, gone_path) = stored(&db, dir.path(), &trader).await;
    let (kept, kept_path) = stored(&db, dir.path(), &trader).await;
    delete_signal(&db, gone).await;
    assert_eq!(queued(&db).await, [(gone_path.clone(), 0, None)]);

    let process = spawn_daemon(
        &test_db,
        dir.path(),
        Spawn {
            args: &["prune"],
            ..Spawn::default()
        },
    );
    assert!(process.exit_status().await.success());
    assert!(!dir.path().join(&gone_path).exists(), "the object is gone");
    assert!(
        dir.path().join(&kept_path).exists(),
        "the other signal's stays"
    );
    assert_eq!(queued(&db).await, []);
    let still: i64 = db
        .query_one(
            "select count(*) from public.signals where id = $1",
            &[&kept],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, 1);
    test_db.drop_db().await;
}

#[tokio::test]
async fn the_daemon_removes_it_from_the_fs_backend() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let charts = ChartServer::start(200).await;
    let (storage, dir) = crate::support::fs_storage();
    let trader = unlimited_trader(&db).await;
    let (gone, gone_path) = stored(&db, &dir, &trader).await;
    delete_signal(&db, gone).await;

    drain(&test_db, worker(&test_db, &charts, Knobs::new(storage))).await;
    assert!(!dir.join(&gone_path).exists(), "the object is gone");
    assert_eq!(queued(&db).await, []);
    let _ = std::fs::remove_dir_all(&dir);
    test_db.drop_db().await;
}

#[tokio::test]
async fn storage_gets_the_exact_delete_and_a_refusal_is_retried_until_done() {
    let test_db = TestDb::create(&stack()).await;
    let db = test_db.client().await;
    let dir = tempfile::tempdir().unwrap();
    let trader = unlimited_trader(&db).await;
    let (first, first_path) = stored(&db, dir.path(), &trader).await;
    let (second, second_path) = stored(&db, dir.path(), &trader).await;
    // A trader deleting two signals at once: one statement, one queue entry each.
    let deleted = db
        .execute(
            "delete from public.signals where id = any($1)",
            &[&vec![first, second]],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 2);

    // Storage is down once (a 503 from its gateway), then accepts.
    let stub = StorageStub::start(&[503, 200]).await;
    let storage = Storage::supabase(
        stub.url(),
        "screenshots".into(),
        SecretString::from("sb_secret_abc"),
        false,
    )
    .unwrap();
    let never = CancellationToken::new();
    let failed = deletions::remove_due(&db, &storage, 100, None, &never)
        .await
        .unwrap();
    assert_eq!((failed.deleted, failed.failed), (0, 2));
    let mut expected = vec![first_path.clone(), second_path.clone()];
    expected.sort();
    let after_failure = queued(&db).await;
    assert_eq!(after_failure.len(), 2, "kept until Storage accepts");
    for (path, attempts, error) in &after_failure {
        assert!(expected.contains(path));
        assert_eq!(*attempts, 1);
        assert!(error.as_deref().unwrap().contains("503"), "{error:?}");
    }
    // Not due again at once: the retry waits.
    let early = deletions::remove_due(&db, &storage, 100, None, &never)
        .await
        .unwrap();
    assert_eq!((early.deleted, early.failed), (0, 0));
    assert_eq!(stub.requests().len(), 1);

    db.execute(
        "update private.screenshot_deletions set next_attempt_at = now()",
        &[],
    )
    .await
    .unwrap();
    let done = deletions::remove_due(&db, &storage, 100, None, &never)
        .await
        .unwrap();
    assert_eq!((done.deleted, done.failed), (2, 0));
    assert_eq!(queued(&db).await, []);

    let requests = stub.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.method, "DELETE");
        assert_eq!(request.path, "/storage/v1/object/screenshots");
        assert_eq!(request.header("apikey"), Some("sb_secret_abc"));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let mut prefixes: Vec<String> = serde_json::from_value(body["prefixes"].clone()).unwrap();
        prefixes.sort();
        assert_eq!(prefixes, expected);
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    }
    test_db.drop_db().await;
}
