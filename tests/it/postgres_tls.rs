//! TLS to the stack's Postgres as every client of ours makes it (`postgres-tls`): the stack
//! refuses plaintext TCP outright, accepts verified TLS with channel binding, and a server that
//! presents a certificate for another name is refused under `verify-full` while `verify-ca`,
//! which does not check names, goes through it.

use stack_harness::Stack;
use stack_harness::tls::WrongNameProxy;

/// The stack's superuser URL with its query replaced by `query`.
fn with_query(url: &str, query: &str) -> String {
    let base = url.split_once('?').map_or(url, |(base, _)| base);
    format!("{base}?{query}")
}

/// The error chain as one line, for assertions on why a connection failed.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn plaintext_tcp_is_refused_by_the_stack() {
    let stack = Stack::from_env();
    let error = postgres_tls::connect(&with_query(&stack.database_url, "sslmode=disable"))
        .await
        .err()
        .expect("pg_hba has no plaintext host line");
    let message = chain(&error);
    assert!(message.contains("no encryption"), "{message}");
}

#[tokio::test]
async fn verified_tls_with_channel_binding_reaches_the_stack() {
    let stack = Stack::from_env();
    let ca = format!("sslrootcert={}", stack.ca_cert);
    for query in [
        format!("sslmode=verify-full&{ca}&channel_binding=require"),
        format!("sslmode=verify-ca&{ca}"),
        // No sslmode on loopback: prefer, which the stack answers with TLS.
        format!("{ca}&channel_binding=require"),
    ] {
        let url = with_query(&stack.database_url, &query);
        let (client, connection) = postgres_tls::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{query}: {}", chain(&e)));
        tokio::spawn(connection);
        let row = client
            .query_one(
                "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()",
                &[],
            )
            .await
            .expect("pg_stat_ssl");
        assert!(row.get::<_, bool>(0), "{query}: not over TLS");
        assert!(row.get::<_, String>(1).starts_with("TLSv1."), "{query}");
    }
    // The certificate also names localhost.
    let localhost = stack.database_url.replacen("@127.0.0.1:", "@localhost:", 1);
    let (client, connection) = postgres_tls::connect(&localhost)
        .await
        .unwrap_or_else(|e| panic!("localhost: {}", chain(&e)));
    tokio::spawn(connection);
    client.simple_query("select 1").await.expect("a query");
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_for_another_name() {
    let stack = Stack::from_env();
    let proxy = WrongNameProxy::start(&stack).await;

    let error = postgres_tls::connect(&proxy.url(&stack.database_url, "verify-full", ""))
        .await
        .err()
        .expect("the name does not match 127.0.0.1");
    let message = chain(&error);
    assert!(
        message.contains("certificate not valid for name \"127.0.0.1\""),
        "{message}"
    );
    assert_eq!(proxy.handshakes(), 0, "the handshake was abandoned");

    // The same server is trusted when names are not checked: the refusal above was the name's.
    for sslmode in ["verify-ca", "require"] {
        let url = proxy.url(&stack.database_url, sslmode, "channel_binding=disable");
        let (client, connection) = postgres_tls::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{sslmode}: {}", chain(&e)));
        tokio::spawn(connection);
        let rows = client
            .simple_query("select 1")
            .await
            .expect("a query relayed to the stack");
        assert!(!rows.is_empty());
    }
    assert_eq!(proxy.handshakes(), 2);
}

#[tokio::test]
async fn channel_binding_stops_a_relay_that_the_certificate_check_let_through() {
    let stack = Stack::from_env();
    let proxy = WrongNameProxy::start(&stack).await;
    // require does not judge the certificate, but the login is bound to the TLS session the
    // client sees (the proxy's), and the server sees another one.
    let error = postgres_tls::connect(&proxy.url(&stack.database_url, "require", ""))
        .await
        .err()
        .expect("SCRAM-SHA-256-PLUS notices the relay");
    assert_eq!(proxy.handshakes(), 1, "TLS itself went through");
    let message = chain(&error);
    assert!(
        message.contains("SCRAM channel binding check failed"),
        "{message}"
    );
}
