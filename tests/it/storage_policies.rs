//! The screenshots bucket's policies, evaluated the way Supabase Storage evaluates them: Storage
//! runs its queries on `storage.objects` as the caller's role with the caller's JWT claims set.
//! (The Storage server itself cannot run here; its REST contract is tested with a stub in capture.)

use serde_json::json;
use stack_harness::Stack;
use uuid::Uuid;

#[tokio::test]
async fn a_trader_reads_only_their_own_screenshot_objects_and_writes_none() {
    let stack = Stack::from_env();
    let a = stack.trader("free").await;
    let b = stack.trader("free").await;
    let db = stack.db().await;
    let a_object = format!("{}/{}.png", a.id, Uuid::new_v4());
    let b_object = format!("{}/{}.png", b.id, Uuid::new_v4());
    db.execute(
        "insert into storage.objects (bucket_id, name) values ('screenshots', $1), ('screenshots', $2)",
        &[&a_object, &b_object],
    )
    .await
    .unwrap();

    let mut session = stack.db().await;
    let tx = session.transaction().await.unwrap();
    let claims =
        json!({ "sub": a.id, "role": "authenticated", "aud": "authenticated" }).to_string();
    tx.batch_execute("set local role authenticated")
        .await
        .unwrap();
    tx.execute(
        "select set_config('request.jwt.claims', $1, true)",
        &[&claims],
    )
    .await
    .unwrap();
    // Storage refuses direct deletes unless the Storage API marks its own; it does, then deletes
    // under the caller's role, so the policies decide.
    tx.batch_execute("set local storage.allow_delete_query = 'true'")
        .await
        .unwrap();

    let visible: Vec<String> = tx
        .query(
            "select name from storage.objects where name = any($1)",
            &[&vec![a_object.clone(), b_object.clone()]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(visible, vec![a_object.clone()]);

    let deleted = tx
        .execute("delete from storage.objects where name = $1", &[&b_object])
        .await
        .unwrap();
    assert_eq!(deleted, 0, "A cannot delete B's object");
    let updated = tx
        .execute(
            "update storage.objects set name = name where name = $1",
            &[&a_object],
        )
        .await
        .unwrap();
    assert_eq!(updated, 0, "A cannot overwrite even their own object");
    let upload = tx
        .execute(
            "insert into storage.objects (bucket_id, name) values ('screenshots', $1)",
            &[&format!("{}/forged.png", a.id)],
        )
        .await;
    assert!(upload.is_err(), "A cannot upload into the bucket");
    drop(tx);

    let remaining = db
        .query_one(
            "select count(*) from storage.objects where name = any($1)",
            &[&vec![a_object, b_object]],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(remaining, 2);
}
