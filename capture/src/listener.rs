//! The LISTEN session: wakes the worker when ingest enqueues a job.
//!
//! One dedicated session, never a pooled one (made with the same URL and
//! TLS settings as the pool, [`service_runtime::postgres::connect_config`]):
//! deadpool's connections swallow notifications, and a transaction-mode
//! pooler (Supavisor port 6543, `PgBouncer` in transaction mode) hands each
//! statement to a different backend, so LISTEN there hears nothing. Use a
//! direct connection or a session-mode pooler.
//!
//! Order matters: `LISTEN capture_jobs` completes before the worker is woken
//! for its (re)scan, so a job enqueued between the scan and the LISTEN cannot
//! slip by. After every (re)connect the worker is woken once, because
//! notifications sent while we were disconnected are lost.
//!
//! Reconnect backoff: 250 ms doubling to at most 30 s ([`BACKOFF_START`],
//! [`BACKOFF_MAX`]), reset once a session has stayed up. The worker's poll
//! interval covers the gaps.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::poll_fn;
use service_runtime::postgres::ConnectConfig;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

/// The channel `private.wake_capture_daemon()` notifies.
pub const CHANNEL: &str = "capture_jobs";
/// First wait after a failed connection.
pub const BACKOFF_START: Duration = Duration::from_millis(250);
/// Longest wait between reconnection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Keeps a LISTEN session open until `cancel`, waking `wake` on every
/// notification and after every (re)connect.
pub async fn listen(database: ConnectConfig, wake: Arc<Notify>, cancel: CancellationToken) {
    let mut backoff = BACKOFF_START;
    while !cancel.is_cancelled() {
        let mut listened = false;
        match session(&database, &wake, &cancel, &mut listened).await {
            Ok(()) => return,
            Err(error) => {
                if listened {
                    backoff = BACKOFF_START;
                }
                tracing::warn!(error = %error, retry_in = ?backoff, "LISTEN session lost; reconnecting");
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Why a LISTEN session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error("the server closed the connection")]
    Closed,
}

/// One session: connect, LISTEN, relay notifications. `Ok` only on cancel.
async fn session(
    database: &ConnectConfig,
    wake: &Notify,
    cancel: &CancellationToken,
    listened: &mut bool,
) -> Result<(), SessionError> {
    let (client, mut connection) = database.connect().await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    if tx.send(Ok(())).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    let _ = tx.send(Err(error));
                    return;
                }
                None => return,
            }
        }
    });
    let result = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        *listened = true;
        tracing::debug!("Listening for capture jobs");
        // Rescan: anything enqueued while we were not listening.
        wake.notify_one();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                message = rx.recv() => match message {
                    Some(Ok(())) => wake.notify_one(),
                    Some(Err(error)) => return Err(error.into()),
                    None => return Err(SessionError::Closed),
                },
            }
        }
    }
    .await;
    driver.abort();
    result
}
