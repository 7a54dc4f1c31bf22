//! The one shutdown trigger every binary listens to.
//!
//! Orchestrators stop services with SIGTERM; people press Ctrl-C (SIGINT).
//! Both mean the same thing here: stop accepting work, finish what is in
//! flight within the grace period, give back what we hold, exit. Having a
//! single future for both keeps that to one code path.

use std::future::Future;
use std::io;

use tokio::signal::unix::{SignalKind, signal as unix_signal};

/// Which signal asked us to stop, so it can be logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT, usually Ctrl-C in a terminal.
    Interrupt,
    /// SIGTERM, what systemd, Docker and Kubernetes send.
    Terminate,
}

impl Signal {
    /// The conventional signal name, for log fields.
    pub fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
        }
    }
}

/// Registers SIGINT and SIGTERM handlers now and returns a future that
/// resolves when either arrives.
///
/// Registration happens before the future is returned, not when it is first
/// polled, so a signal delivered during start-up is not lost and a failure
/// to register surfaces at start-up. Must be called inside a Tokio runtime.
pub fn signal() -> io::Result<impl Future<Output = Signal> + Send + 'static> {
    let mut interrupt = unix_signal(SignalKind::interrupt())?;
    let mut terminate = unix_signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => Signal::Interrupt,
            _ = terminate.recv() => Signal::Terminate,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Signal, signal};

    /// Sends a real SIGTERM to this test process (nextest runs each test in
    /// its own process) and checks the future resolves instead of the
    /// process dying.
    #[tokio::test]
    async fn sigterm_resolves_the_future() {
        let stop = signal().expect("signal handlers install");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let got = tokio::time::timeout(Duration::from_secs(5), stop)
            .await
            .expect("signal observed within 5 s");
        assert_eq!(got, Signal::Terminate);
    }
}
