//! `capture prune` against the real database (a clone of the migrated
//! template per test) with screenshots on disk, in the library and as the
//! binary's subcommand, and the Storage API's delete call against the stub
//! that checks the exact request.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use capture::prune::{self, PruneError};
use capture::storage::{DeleteError, DeleteObjects, Refusal, Storage};
use service_runtime::SecretString;
use stack_harness::{Stack, TestDb, trader_in};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::daemon::{Spawn, spawn_daemon};
use crate::support::storage_stub::StorageStub;

/// Stores a signal for `token` whose screenshot is `age_days` old, with its
/// PNG written under `root`; returns the signal id and object path.
async fn stored(
    db: &Client,
    root: &Path,
    token: &str,
    body: &str,
    age_days: i32,
) -> (Uuid, String) {
    let row = db
        .query_one(
            "select (public.ingest_signal($1, now(), $2, null, 'NYSE:IBM', 'NYSE', 'IBM', 100, 'long') \
             ->> 'signal_id')::uuid",
            &[&token, &body],
        )
        .await
        .expect("ingest");
    let id: Uuid = row.get(0);
    let user: Uuid = db
        .query_one("select user_id from public.signals where id = $1", &[&id])
        .await
        .expect("signal")
        .get(0);
    let path = format!("{user}/{id}.png");
    db.execute(
        "update public.signals set screenshot_status = 'completed', screenshot_path = $2, \
         created_at = now() - make_interval(days => $3) where id = $1",
        &[&id, &path, &age_days],
    )
    .await
    .expect("complete");
    let file = root.join(&path);
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(&file, b"png").expect("write");
    (id, path)
}

async fn screenshot_path(db: &Client, id: Uuid) -> Option<String> {
    db.query_one(
        "select screenshot_path from public.signals where id = $1",
        &[&id],
    )
    .await
    .expect("signal")
    .get(0)
}

#[tokio::test]
async fn prunes_only_what_the_plan_no_longer_keeps_and_a_rerun_does_nothing() {
    let stack = Stack::from_env();
    let test_db = TestDb::create(&stack).await;
    let db = test_db.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let free = trader_in(&db, "free").await; // 7 days
    let premium = trader_in(&db, "premium").await; // 365 days

    let mut old = Vec::new();
    for n in 0..5 {
        old.push(
            stored(
                &db,
                dir.path(),
                &free.webhook_token,
                &format!("old {n}"),
                8 + n,
            )
            .await,
        );
    }
    let fresh = stored(&db, dir.path(), &free.webhook_token, "fresh", 3).await;
    let kept = stored(&db, dir.path(), &premium.webhook_token, "premium", 30).await;

    let objects = Storage::Fs {
        dir: dir.path().to_owned(),
    };
    let report = prune::run(&db, &objects, 2, &CancellationToken::new())
        .await
        .expect("prune");
    assert_eq!(
        (report.deleted, report.forgotten, report.batches),
        (5, 5, 3)
    );
    for (id, path) in &old {
        assert!(!dir.path().join(path).exists(), "{path} still on disk");
        assert_eq!(screenshot_path(&db, *id).await, None);
    }
    for (id, path) in [&fresh, &kept] {
        assert!(dir.path().join(path).exists(), "{path} was deleted");
        assert_eq!(screenshot_path(&db, *id).await.as_ref(), Some(path));
    }

    let again = prune::run(&db, &objects, 2, &CancellationToken::new())
        .await
        .expect("prune again");
    assert_eq!((again.deleted, again.forgotten, again.batches), (0, 0, 0));
    test_db.drop_db().await;
}

#[tokio::test]
async fn the_prune_subcommand_deletes_what_is_due_and_exits() {
    let stack = Stack::from_env();
    let test_db = TestDb::create(&stack).await;
    let db = test_db.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let free = trader_in(&db, "free").await; // 7 days
    let (old, old_path) = stored(&db, dir.path(), &free.webhook_token, "old", 10).await;
    let (fresh, fresh_path) = stored(&db, dir.path(), &free.webhook_token, "fresh", 1).await;

    let process = spawn_daemon(
        &test_db,
        dir.path(),
        Spawn {
            args: &["prune", "--batch-size", "10"],
            ..Spawn::default()
        },
    );
    assert!(process.exit_status().await.success());
    assert!(!dir.path().join(&old_path).exists());
    assert_eq!(screenshot_path(&db, old).await, None);
    assert!(dir.path().join(&fresh_path).exists());
    assert_eq!(screenshot_path(&db, fresh).await, Some(fresh_path));
    test_db.drop_db().await;
}

/// Deletes like the `fs:` storage, but fails from the given call on, the way a
/// run dies halfway (network gone, process killed after the delete).
struct FailingAfter {
    inner: Storage,
    calls: AtomicUsize,
    fail_from: usize,
}

impl DeleteObjects for FailingAfter {
    async fn delete(&self, paths: &[String]) -> Result<(), DeleteError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        // The objects of the failing call are gone, but the run dies before
        // the rows learn it: the worst place to be interrupted.
        self.inner.delete(paths).await?;
        if call >= self.fail_from {
            return Err(DeleteError::Refused(Refusal::from_answer(
                reqwest::StatusCode::SERVICE_UNAVAILABLE,
                b"gone away",
            )));
        }
        Ok(())
    }
}

#[tokio::test]
async fn an_interrupted_run_resumes_where_it_stopped() {
    let stack = Stack::from_env();
    let test_db = TestDb::create(&stack).await;
    let db = test_db.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let free = trader_in(&db, "free").await;
    let mut old = Vec::new();
    for n in 0..6 {
        old.push(
            stored(
                &db,
                dir.path(),
                &free.webhook_token,
                &format!("old {n}"),
                10 + n,
            )
            .await,
        );
    }

    let failing = FailingAfter {
        inner: Storage::Fs {
            dir: dir.path().to_owned(),
        },
        calls: AtomicUsize::new(0),
        fail_from: 1,
    };
    let error = prune::run(&db, &failing, 2, &CancellationToken::new())
        .await
        .expect_err("the second batch fails");
    assert!(
        matches!(error, PruneError::Delete { count: 2, .. }),
        "{error:?}"
    );
    let remembered = {
        let mut n = 0;
        for (id, _) in &old {
            n += usize::from(screenshot_path(&db, *id).await.is_some());
        }
        n
    };
    assert_eq!(remembered, 4, "only the first batch was forgotten");

    let objects = Storage::Fs {
        dir: dir.path().to_owned(),
    };
    let report = prune::run(&db, &objects, 2, &CancellationToken::new())
        .await
        .expect("resume");
    assert_eq!((report.deleted, report.forgotten), (4, 4));
    for (id, path) in &old {
        assert!(!dir.path().join(path).exists());
        assert_eq!(screenshot_path(&db, *id).await, None);
    }
    test_db.drop_db().await;
}

#[tokio::test]
async fn a_cancelled_run_stops_between_batches() {
    let stack = Stack::from_env();
    let test_db = TestDb::create(&stack).await;
    let db = test_db.client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let free = trader_in(&db, "free").await;
    stored(&db, dir.path(), &free.webhook_token, "old", 10).await;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let report = prune::run(
        &db,
        &Storage::Fs {
            dir: dir.path().to_owned(),
        },
        10,
        &cancel,
    )
    .await
    .expect("prune");
    assert!(report.cancelled);
    assert_eq!(report.deleted, 0);
    test_db.drop_db().await;
}

#[tokio::test]
async fn fs_objects_refuse_paths_outside_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let objects = Storage::Fs {
        dir: dir.path().to_owned(),
    };
    for bad in ["../escape.png", "/etc/passwd", "a/../../b.png"] {
        assert!(
            objects.delete(&[bad.to_owned()]).await.is_err(),
            "{bad} was accepted"
        );
    }
    // A missing object is not an error: a repeated delete is harmless.
    objects
        .delete(&["nobody/nothing.png".to_owned()])
        .await
        .expect("missing is fine");
}

#[tokio::test]
async fn supabase_storage_gets_the_exact_delete_request() {
    let stub = StorageStub::start(&[200]).await;
    let paths = vec![
        "11111111-1111-4111-8111-111111111111/22222222-2222-4222-8222-222222222222.png".to_owned(),
        "11111111-1111-4111-8111-111111111111/33333333-3333-4333-8333-333333333333.png".to_owned(),
    ];

    let secret = Storage::supabase(
        stub.url(),
        "screenshots".into(),
        SecretString::from("sb_secret_abc"),
        false,
    )
    .expect("client");
    secret.delete(&paths).await.expect("deleted");
    let legacy = Storage::supabase(
        stub.url(),
        "screenshots".into(),
        SecretString::from("eyJ.legacy.jwt"),
        false,
    )
    .expect("client");
    legacy.delete(&paths).await.expect("deleted");

    let requests = stub.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.method, "DELETE");
        assert_eq!(request.path, "/storage/v1/object/screenshots");
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&request.body).expect("json");
        assert_eq!(body, serde_json::json!({ "prefixes": paths }));
    }
    assert_eq!(requests[0].header("apikey"), Some("sb_secret_abc"));
    assert_eq!(
        requests[0].header("authorization"),
        None,
        "a secret key is not a bearer token"
    );
    assert_eq!(requests[1].header("apikey"), Some("eyJ.legacy.jwt"));
    assert_eq!(
        requests[1].header("authorization"),
        Some("Bearer eyJ.legacy.jwt")
    );
    assert!(!format!("{legacy:?}").contains("legacy.jwt"));
}

#[tokio::test]
async fn a_storage_error_is_reported_as_storage_means_it() {
    // Storage answers a refused key with HTTP 400 and the 403 in its body.
    let stub = StorageStub::start(&[403, 503]).await;
    let objects = Storage::supabase(
        stub.url(),
        "screenshots".into(),
        SecretString::from("sb_secret_abc"),
        false,
    )
    .expect("client");
    let error = objects
        .delete(&["a/b.png".to_owned()])
        .await
        .expect_err("403");
    let DeleteError::Refused(refusal) = &error else {
        panic!("{error:?}");
    };
    assert_eq!((refusal.http_status, refusal.status), (400, 403));
    assert!(!refusal.is_transient());
    assert_eq!(
        error.to_string(),
        "Storage refused the delete: 403 Unauthorized: signature verification failed (HTTP 400)"
    );
    let error = objects
        .delete(&["a/b.png".to_owned()])
        .await
        .expect_err("503");
    assert!(
        matches!(&error, DeleteError::Refused(r) if r.status == 503 && r.is_transient()),
        "{error:?}"
    );
}
