//! The Telegram settings migration on a live project: rows the earlier, looser check let through
//! must not make it fail, and chats Telegram could never deliver to are cleared with their
//! notifications turned off, while valid settings stay as they were. Runs the migration file as
//! the non-superuser `postgres` (as on Supabase), in a database of its own that is first put back
//! to the schema before it.

use std::path::Path;

use stack_tests::{Stack, TestDb, trader_in};
use tokio_postgres::Client;
use uuid::Uuid;

fn migration_sql() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../supabase/migrations");
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .expect("supabase/migrations")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("_telegram_settings.sql"))
        })
        .collect();
    assert_eq!(found.len(), 1, "one telegram_settings migration");
    std::fs::read_to_string(found.pop().unwrap()).expect("read the migration")
}

async fn settings(db: &Client, user: Uuid) -> (bool, Option<String>, String) {
    let row = db
        .query_one(
            "select notify_telegram, telegram_chat_id, webhook_token from public.user_config where user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn the_migration_clears_undeliverable_chats_and_keeps_valid_ones() {
    let stack = Stack::from_env();
    let test_db = TestDb::create(&stack).await;
    let db = test_db.client().await;

    // The schema as it was before the migration: the looser check, no chat required.
    db.batch_execute(
        "alter table public.user_config drop constraint user_config_telegram_needs_chat_check; \
         alter table public.user_config drop constraint user_config_telegram_chat_id_check; \
         alter table public.user_config add constraint user_config_telegram_chat_id_check \
           check (telegram_chat_id ~ '^(-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$');",
    )
    .await
    .unwrap();
    let mut traders = Vec::new();
    for (chat, notify) in [
        (Some("0"), true),
        (Some("@chan_"), false),
        (Some("12345678901234567890"), true),
        (None, true),
        (Some("-1001234567890"), true),
        (Some("@signal_alerts"), false),
    ] {
        let trader = trader_in(&db, "free").await;
        db.execute(
            "update public.user_config set telegram_chat_id = $2, notify_telegram = $3 where user_id = $1",
            &[&trader.id, &chat, &notify],
        )
        .await
        .unwrap();
        traders.push(trader);
    }
    let mut tokens_before = Vec::new();
    for t in &traders {
        tokens_before.push(settings(&db, t.id).await.2);
    }

    db.batch_execute("set role postgres").await.unwrap();
    db.batch_execute(&migration_sql())
        .await
        .expect("the migration applies over rows the old check allowed");
    db.batch_execute("reset role").await.unwrap();

    let mut after = Vec::new();
    for (t, token_before) in traders.iter().zip(&tokens_before) {
        let (notify, chat, token) = settings(&db, t.id).await;
        after.push((notify, chat));
        assert_eq!(&token, token_before, "tokens are untouched");
    }
    assert_eq!(
        after,
        vec![
            (false, None),
            (false, None),
            (false, None),
            (false, None),
            (true, Some("-1001234567890".to_owned())),
            (false, Some("@signal_alerts".to_owned())),
        ]
    );

    drop(db);
    test_db.drop_db().await;
}
