//! What every test that runs against the real local stack uses: PostgreSQL 15 with the
//! Supabase-compatible bootstrap and this project's migrations, PostgREST, and the gateway that
//! gives it Supabase's URL layout. `scripts/test` starts a throwaway stack and exports its
//! `stack.env`; to run tests by hand against `scripts/dev up`, export `.dev/stack.env` first
//! (`set -a; . .dev/stack.env`). The end-to-end suite (`tests/it`) and the integration tests of
//! ingest and capture depend on it; it depends on none of them (of ours, only on `postgres-tls`, so
//! it connects with the TLS the stack's URLs ask for), so any crate may use it.
//!
//! Layout:
//! - [`Stack`] reads the stack's settings from the environment once.
//! - [`Stack::trader`] creates a fresh auth user (its `user_config` row comes from the trigger), so
//!   tests that share the stack's database never see each other's rows.
//! - [`Stack::jwt_for`] mints the access token Supabase Auth would issue for that user, and
//!   [`Stack::rest`] calls PostgREST through the gateway as a browser would.
//! - [`TestDb`] clones the migrated template database for tests that need a database to themselves
//!   (the capture queue is global by design) and drops it afterwards.
//! - [`tls::WrongNameProxy`] stands in for the stack's Postgres with a certificate for another
//!   name, so tests can show who refuses it (`verify-full`) and who does not.

#![expect(
    clippy::missing_panics_doc,
    reason = "test support: every helper panics with a message saying what the stack did wrong"
)]

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio_postgres::Client;
use uuid::Uuid;

pub mod tls;

/// The running stack's settings, from the variables `scripts/dev` writes to `stack.env`.
#[derive(Debug, Clone)]
pub struct Stack {
    /// The gateway: `/rest/v1/...` reaches PostgREST, as on a Supabase project.
    pub supabase_url: String,
    pub anon_key: String,
    pub service_role_key: String,
    pub jwt_secret: String,
    /// Superuser connection (test setup only; the product never uses it).
    pub database_url: String,
    /// The non-superuser `postgres`, as migrations run on a hosted project.
    pub postgres_url: String,
    /// The migrated database that [`TestDb`] clones.
    pub template_database: String,
    /// The stack's CA certificate (its URLs say `sslmode=verify-full` with it).
    pub ca_cert: String,
    http: reqwest::Client,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run these tests through scripts/test, or export .dev/stack.env from scripts/dev up")
    })
}

/// A trader created for one test.
#[derive(Debug, Clone)]
pub struct Trader {
    pub id: Uuid,
    pub webhook_token: String,
}

/// Which key or token a REST call carries.
#[derive(Debug, Clone, Copy)]
pub enum As<'a> {
    Anon,
    ServiceRole,
    User(&'a Trader),
}

impl Stack {
    pub fn from_env() -> Self {
        Self {
            supabase_url: env("SUPABASE_URL").trim_end_matches('/').to_owned(),
            anon_key: env("SUPABASE_ANON_KEY"),
            service_role_key: env("SUPABASE_SERVICE_ROLE_KEY"),
            jwt_secret: env("SUPABASE_JWT_SECRET"),
            database_url: env("DATABASE_URL"),
            postgres_url: env("POSTGRES_URL"),
            template_database: env("TEST_TEMPLATE_DATABASE"),
            ca_cert: env("STACK_CA_CERT"),
            http: reqwest::Client::new(),
        }
    }

    /// A superuser session on the stack's database.
    pub async fn db(&self) -> Client {
        connect(&self.database_url).await
    }

    /// Creates an auth user (and so, through the trigger, its config row) on the given plan.
    pub async fn trader(&self, plan: &str) -> Trader {
        trader_in(&self.db().await, plan).await
    }

    /// The HS256 access token Supabase Auth issues for a signed-in user (legacy JWT secret).
    pub fn jwt_for(&self, trader: &Trader) -> String {
        self.mint(&json!({
            "sub": trader.id,
            "iss": format!("{}/auth/v1", self.supabase_url),
            "role": "authenticated",
            "aud": "authenticated",
            "exp": now_secs() + 3600,
            "iat": now_secs(),
        }))
    }

    pub fn mint(&self, claims: &Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(self.jwt_secret.as_bytes()),
        )
        .expect("HS256 signing cannot fail")
    }

    /// A request to `{SUPABASE_URL}/rest/v1/{path}` with the headers supabase-js sends.
    pub fn rest(
        &self,
        method: reqwest::Method,
        path: &str,
        who: As<'_>,
    ) -> reqwest::RequestBuilder {
        let bearer = match who {
            As::Anon => self.anon_key.clone(),
            As::ServiceRole => self.service_role_key.clone(),
            As::User(trader) => self.jwt_for(trader),
        };
        let apikey = match who {
            As::ServiceRole => &self.service_role_key,
            As::Anon | As::User(_) => &self.anon_key,
        };
        self.http
            .request(method, format!("{}/rest/v1/{path}", self.supabase_url))
            .header("apikey", apikey)
            .bearer_auth(bearer)
    }

    /// Calls `public.ingest_signal` through PostgREST with the service role, as the ingest edge does.
    pub async fn ingest(&self, token: &str, body: &str) -> Value {
        let response = self
            .rest(reqwest::Method::POST, "rpc/ingest_signal", As::ServiceRole)
            .json(&ingest_args(token, body))
            .send()
            .await
            .expect("PostgREST answers");
        assert!(
            response.status().is_success(),
            "ingest_signal failed: {}",
            response.status()
        );
        response.json().await.expect("ingest_signal returns JSON")
    }
}

/// The arguments of one accepted-shaped alert for `ingest_signal`.
pub fn ingest_args(token: &str, body: &str) -> Value {
    json!({
        "p_token": token,
        // Postgres reads the special input 'now' as the transaction's start time.
        "p_received_at": "now",
        "p_raw_message": body,
        "p_ticker": "BINANCE:BTCUSDT",
        "p_exchange": "BINANCE",
        "p_symbol": "BTCUSDT",
        "p_price": 67890.5,
        "p_direction": "long",
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A session on `url`, over the TLS its `sslmode` asks for (the stack's URLs say `verify-full`).
pub async fn connect(url: &str) -> Client {
    let (client, connection) = postgres_tls::connect(url).await.unwrap_or_else(|e| {
        panic!(
            "cannot connect to the stack's Postgres: {}",
            std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string)
        )
    });
    tokio::spawn(connection);
    client
}

/// Creates an auth user on `plan` in the database behind `db`.
pub async fn trader_in(db: &Client, plan: &str) -> Trader {
    let id = Uuid::new_v4();
    db.execute(
        "insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data) \
         values ($1, 'authenticated', 'authenticated', $2, '{}', '{}')",
        &[&id, &format!("{id}@tests.local")],
    )
    .await
    .expect("insert auth user");
    let row = db
        .query_one(
            "update public.user_config set plan = $2 where user_id = $1 returning webhook_token",
            &[&id, &plan],
        )
        .await
        .expect("the auth.users trigger created a user_config row");
    Trader {
        id,
        webhook_token: row.get(0),
    }
}

/// A database of its own, cloned from the migrated template and dropped on [`TestDb::drop_db`].
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    /// As the superuser.
    pub url: String,
    /// As the non-superuser `postgres` (what the supabase CLI connects as).
    pub postgres_url: String,
    admin_url: String,
}

impl TestDb {
    pub async fn create(stack: &Stack) -> Self {
        let name = format!("test_{}", Uuid::new_v4().simple());
        let admin = stack.db().await;
        // CREATE DATABASE ... TEMPLATE refuses while anyone else copies the template: take turns.
        admin
            .execute(
                "select pg_advisory_lock(hashtext('signal-capture test template'))",
                &[],
            )
            .await
            .expect("advisory lock");
        // Owned by `postgres`, as the template and a Supabase project's database are: in
        // PostgreSQL 15 `public` belongs to the database owner, so that is who may create in it.
        let created = admin
            .batch_execute(&format!(
                "create database {name} owner postgres template {}",
                quote_ident(&stack.template_database)
            ))
            .await;
        admin
            .execute(
                "select pg_advisory_unlock(hashtext('signal-capture test template'))",
                &[],
            )
            .await
            .expect("advisory unlock");
        created.unwrap_or_else(|e| panic!("cannot clone the template database: {e}"));
        let url = replace_database(&stack.database_url, &name);
        let postgres_url = replace_database(&stack.postgres_url, &name);
        Self {
            name,
            url,
            postgres_url,
            admin_url: stack.database_url.clone(),
        }
    }

    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }

    pub async fn drop_db(self) {
        let admin = connect(&self.admin_url).await;
        admin
            .batch_execute(&format!(
                "drop database if exists {} with (force)",
                self.name
            ))
            .await
            .expect("drop test database");
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Replaces the database name in a `postgresql://...` URL.
fn replace_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_in_urls() {
        assert_eq!(
            replace_database("postgresql://u:p@127.0.0.1:5432/postgres", "x"),
            "postgresql://u:p@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_database(
                "postgresql://u@127.0.0.1:5432/postgres?sslmode=disable",
                "x"
            ),
            "postgresql://u@127.0.0.1:5432/x?sslmode=disable"
        );
    }
}
