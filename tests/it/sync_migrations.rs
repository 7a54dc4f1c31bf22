//! `scripts/sync-migrations` on a copy of the repository's sources and migrations: what it promises
//! a developer who edits `sql/`, `rls-policies/` or `storage-policies/`.
//!
//! - A one-function edit yields one migration about the size of that one file, named after it;
//!   `--check` fails on the drift before, and passes after.
//! - A generated migration edited by hand (the newest or an old one) fails `--check`, and the script
//!   refuses to add to it.
//! - New and removed source files are drift too, and are recorded.
//! - The incremental migration applies, through the real supabase CLI, on a database that has
//!   every earlier migration, also when the edit changes the function's signature (the source keeps
//!   a `drop function if exists` of the old one, as `sql/20_ingest_signal.sql` does).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use stack_harness::{Stack, TestDb};
use tempfile::TempDir;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The script, its sources and the migrations, copied to a directory of their own.
struct Checkout {
    dir: TempDir,
}

impl Checkout {
    fn new() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let root = repo_root();
        for sub in [
            "sql",
            "rls-policies",
            "storage-policies",
            "supabase/migrations",
        ] {
            fs::create_dir_all(dir.path().join(sub)).expect("create dir");
            for entry in fs::read_dir(root.join(sub)).expect("read source dir") {
                let path = entry.expect("dir entry").path();
                fs::copy(&path, dir.path().join(sub).join(path.file_name().unwrap()))
                    .expect("copy file");
            }
        }
        fs::create_dir_all(dir.path().join("scripts")).expect("create scripts");
        fs::copy(
            root.join("scripts/sync-migrations"),
            dir.path().join("scripts/sync-migrations"),
        )
        .expect("copy the script");
        Self { dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn sync(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(self.path("scripts/sync-migrations"))
            .args(args)
            .output()
            .expect("run scripts/sync-migrations")
    }

    /// Runs `--check`; returns whether it passed, and what it said on standard error.
    fn check(&self) -> (bool, String) {
        let out = self.sync(&["--check"]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn migrations(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = fs::read_dir(self.path("supabase/migrations"))
            .expect("read migrations")
            .map(|e| e.expect("dir entry").path())
            .collect();
        found.sort();
        found
    }

    /// Runs the script and returns the one migration it added.
    fn sync_one(&self) -> PathBuf {
        let before = self.migrations();
        let out = self.sync(&[]);
        assert!(
            out.status.success(),
            "sync-migrations failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let added: Vec<PathBuf> = self
            .migrations()
            .into_iter()
            .filter(|m| !before.contains(m))
            .collect();
        assert_eq!(added.len(), 1, "one new migration: {added:?}");
        added.into_iter().next().unwrap()
    }

    fn replace(&self, relative: &str, from: &str, to: &str) {
        let path = self.path(relative);
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{relative} contains {from:?}");
        fs::write(&path, text.replacen(from, to, 1)).expect("write");
    }
}

/// The `-- source` and `-- removed` lines of a generated migration's header.
fn recorded(migration: &Path) -> Vec<String> {
    fs::read_to_string(migration)
        .expect("read migration")
        .lines()
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("-- source ") || l.starts_with("-- removed "))
        .map(|l| l.split(" sha256:").next().unwrap().to_owned())
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// A change inside `public.signal_stats()`'s body: the signed-in trader's pending screenshots
/// count `processing` ones no more.
const STATS: &str = "sql/40_signal_stats.sql";
const BODY_BEFORE: &str = "m.screenshot_status in ('pending', 'processing')";
const BODY_AFTER: &str = "m.screenshot_status = 'pending'";

#[test]
fn a_one_function_edit_yields_a_migration_of_that_one_file() {
    let checkout = Checkout::new();
    assert_eq!(checkout.check(), (true, String::new()));
    let before = checkout.migrations();
    assert!(checkout.sync(&[]).status.success());
    assert_eq!(
        checkout.migrations(),
        before,
        "nothing changed, nothing written"
    );

    checkout.replace(STATS, BODY_BEFORE, BODY_AFTER);
    let (passed, said) = checkout.check();
    assert!(!passed, "--check fails on drift");
    assert!(
        said.contains("sql/40_signal_stats.sql: changed since supabase/migrations/"),
        "--check names the file: {said}"
    );

    let migration = checkout.sync_one();
    assert!(
        file_name(&migration).ends_with("_signal_stats.sql"),
        "named after what it holds: {}",
        migration.display()
    );
    assert_eq!(
        recorded(&migration),
        vec!["-- source sql/40_signal_stats.sql"]
    );
    let text = fs::read_to_string(&migration).unwrap();
    let source = fs::read_to_string(checkout.path(STATS)).unwrap();
    assert!(
        text.ends_with(&format!("\n-- ==== {STATS}\n\n{source}")),
        "the body is the file, whole"
    );
    // The header's few lines on top of the one file, nothing else of sql/.
    assert!(
        text.len() > source.len() && text.len() <= source.len() + 1024,
        "{} bytes for a {}-byte file",
        text.len(),
        source.len()
    );
    assert!(text.lines().count() <= source.lines().count() + 10);

    assert_eq!(
        checkout.check(),
        (true, String::new()),
        "--check passes after sync"
    );
    let after = checkout.migrations();
    assert!(checkout.sync(&[]).status.success());
    assert_eq!(checkout.migrations(), after, "a second sync writes nothing");
}

#[test]
fn a_hand_edited_migration_fails_the_check_and_stops_the_script() {
    let checkout = Checkout::new();
    checkout.replace(STATS, BODY_BEFORE, BODY_AFTER);
    let newest = checkout.sync_one();
    let logic = checkout
        .migrations()
        .into_iter()
        .find(|m| file_name(m).ends_with("_logic.sql"))
        .expect("the first generated migration");

    for (migration, from, to) in [
        // A hand fix in the newest migration, where the source still says otherwise.
        (&newest, BODY_AFTER, BODY_BEFORE),
        // An edit of an old migration, which projects that applied it would never see.
        (&logic, "set search_path = ''", "set search_path = 'public'"),
        // Text that belongs to no source file.
        (&newest, "\n-- ==== sql/", "\nselect 1;\n\n-- ==== sql/"),
    ] {
        let original = fs::read_to_string(migration).unwrap();
        fs::write(migration, original.replacen(from, to, 1)).unwrap();
        let (passed, said) = checkout.check();
        assert!(
            !passed,
            "--check fails on an edited {}",
            migration.display()
        );
        assert!(said.contains("edited by hand"), "says why: {said}");
        let listed = checkout.migrations();
        assert!(!checkout.sync(&[]).status.success(), "sync refuses");
        assert_eq!(checkout.migrations(), listed, "and writes nothing");
        fs::write(migration, original).unwrap();
        assert!(checkout.check().0, "passes again once restored");
    }
}

#[test]
fn new_and_removed_source_files_are_drift_and_are_recorded() {
    let checkout = Checkout::new();
    let extra = "sql/70_extra.sql";
    fs::write(
        checkout.path(extra),
        "create or replace function private.extra() returns int language sql set search_path = '' as $$ select 1 $$;\n",
    )
    .unwrap();
    let (passed, said) = checkout.check();
    assert!(!passed);
    assert!(
        said.contains("sql/70_extra.sql: new, in no migration yet"),
        "{said}"
    );
    let added = checkout.sync_one();
    assert_eq!(recorded(&added), vec!["-- source sql/70_extra.sql"]);
    assert!(checkout.check().0);

    fs::remove_file(checkout.path(extra)).unwrap();
    let (passed, said) = checkout.check();
    assert!(!passed);
    assert!(said.contains("sql/70_extra.sql: removed since"), "{said}");
    let removal = checkout.sync_one();
    assert_eq!(recorded(&removal), vec!["-- removed sql/70_extra.sql"]);
    assert!(checkout.check().0);
}

#[tokio::test]
async fn an_incremental_migration_applies_where_the_old_signature_exists() {
    let stack = Stack::from_env();
    let checkout = Checkout::new();
    // What a developer does to change a function's signature: the new one, and a drop of the old
    // one so that no overload is left behind.
    checkout.replace(
        STATS,
        "create or replace function public.signal_stats()",
        "drop function if exists public.signal_stats();\n\
         create or replace function public.signal_stats(p_since timestamptz default null)",
    );
    checkout.replace(
        STATS,
        "where s.user_id = (select auth.uid())",
        "where s.user_id = (select auth.uid()) and (p_since is null or s.\"timestamp\" >= p_since)",
    );
    for statement in [
        "comment on function public.signal_stats()",
        "revoke all on function public.signal_stats()",
        "grant execute on function public.signal_stats()",
    ] {
        checkout.replace(
            STATS,
            statement,
            &statement.replace("signal_stats()", "signal_stats(timestamptz)"),
        );
    }
    let migration = checkout.sync_one();
    assert_eq!(
        recorded(&migration),
        vec!["-- source sql/40_signal_stats.sql"]
    );

    // A database with every earlier migration (the template is the stack's bootstrap plus
    // `supabase migration up`), brought up to date the way a hosted project is.
    let test_db = TestDb::create(&stack).await;
    let out = Command::new(repo_root().join("node_modules/.bin/supabase"))
        .args(["migration", "up", "--db-url", &test_db.postgres_url])
        .current_dir(checkout.dir.path())
        .env("SUPABASE_TELEMETRY_DISABLED", "1")
        .env("DO_NOT_TRACK", "1")
        .env("SUPABASE_NO_UPDATE_NOTIFIER", "1")
        .output()
        .expect("run the supabase CLI");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "supabase migration up failed: {said}");
    assert!(
        said.contains(&format!("Applying migration {}", file_name(&migration))),
        "only the new migration is applied: {said}"
    );
    assert_eq!(said.matches("Applying migration").count(), 1, "{said}");

    let db = test_db.client().await;
    let row = db
        .query_one(
            "select to_regprocedure('public.signal_stats()') is null, \
                    has_function_privilege('authenticated', 'public.signal_stats(timestamptz)', 'execute'), \
                    has_function_privilege('anon', 'public.signal_stats(timestamptz)', 'execute'), \
                    (select count(*) from pg_proc where proname = 'signal_stats')",
            &[],
        )
        .await
        .expect("the new signature exists");
    let (old_gone, trader_may, anon_may, overloads): (bool, bool, bool, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert!(old_gone, "the old signature is dropped");
    assert!(
        trader_may && !anon_may,
        "the new one has the grants of its source"
    );
    assert_eq!(
        overloads, 1,
        "no overload is left for PostgREST to choose from"
    );

    // Re-runnable: the same file applies again on top of itself.
    db.batch_execute("set role postgres").await.unwrap();
    db.batch_execute(&fs::read_to_string(&migration).unwrap())
        .await
        .expect("the migration applies a second time");
    drop(db);
    test_db.drop_db().await;
}
