//! TradingView sessions checked before they fail: `capture check-sessions`,
//! and the daemon every `CAPTURE_SESSION_CHECK_INTERVAL`.
//!
//! Why it works this way:
//!
//! - **No browser.** TradingView's home page carries `auth_token` in its
//!   HTML only when the `sessionid`/`sessionid_sign` cookies are signed in;
//!   a widely used TradingView client library checks exactly that, and
//!   follows regional redirects (`fr.tradingview.com`) with the cookies.
//!   One plain GET per session ([`SessionChecker`]), so a check costs no
//!   Chromium context. Redirects are followed by hand: reqwest drops the
//!   `Cookie` header on a redirect to another host, which would make every
//!   regionally redirected trader look signed out. The cookies go only to
//!   the base URL's site and its subdomains, and never from HTTPS to HTTP.
//! - **Only a clear answer changes anything.** A page without the marker is
//!   signed out; a network error, a 403 from a bot wall or a 5xx is no
//!   answer ([`Verdict::Unknown`]) and leaves the session as it was.
//! - **At most one request per session per interval, spread over it.** The
//!   database hands out due sessions and moves each one's next check a whole
//!   interval ahead in the same statement
//!   (`private.claim_session_checks`), so however many daemons (and
//!   `check-sessions` runs) share it, a session is checked at most once per
//!   interval. The daemon claims at the pace that checks every stored
//!   session once per interval (a token bucket filled at sessions ÷
//!   interval), so a thousand sessions stored at once are checked over the
//!   interval, not in a burst.
//! - **Told once.** `private.record_session_check` expires a session only
//!   while the row still holds it and it is valid, leaves the trader a
//!   notice (`public.trader_notices`) and says whether this check was the
//!   one that expired it; only then does the trader get the Telegram
//!   message ([`tell_trader`]; the capture path that meets the sign-in wall
//!   does the same).
//! - **The gauge** `capture_tradingview_sessions{state}` counts stored
//!   sessions from the database (valid, expired, unchecked), so every daemon
//!   reports the same numbers and the alert rules take the `max`. It is
//!   exported only once it has been read: a restart never shows a jump from
//!   zero.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cookie_seal::{Keyring, TradingViewSession};
use deadpool_postgres::Pool;
use reqwest::header::{COOKIE, HeaderValue, LOCATION};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use url::Url;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::telegram::{ChatId, Telegram};

/// Redirects followed per check (TradingView's regional redirect is one).
const MAX_REDIRECTS: usize = 5;
/// The most of a home page read while looking for the marker.
const MAX_BODY_BYTES: usize = 8 << 20;
/// Timeout of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the gauge is read from the database, at most.
const GAUGE_EVERY: Duration = Duration::from_secs(30);

/// The settings of the checks.
#[derive(Clone, Debug, clap::Args)]
pub struct SessionCheckSettings {
    /// How often each stored TradingView session is checked (at most one
    /// request per session per interval, spread over it), e.g. `6h`; `off`
    /// stops the daemon's checks (`capture check-sessions` then uses 6h).
    #[arg(long = "session-check-interval", env = "CAPTURE_SESSION_CHECK_INTERVAL",
          default_value = "6h", value_parser = parse_interval)]
    pub check_interval: CheckInterval,

    /// TradingView's home page, whose HTML carries the signed-in marker; a
    /// local stand-in in tests.
    #[arg(
        long = "tradingview-url",
        env = "CAPTURE_TRADINGVIEW_URL",
        default_value = "https://www.tradingview.com/"
    )]
    pub tradingview_url: Url,

    /// What the home page's HTML contains only for a signed-in session.
    /// Evidence: `auth_token`, which a widely used TradingView client
    /// library checks.
    #[arg(
        long = "session-signed-in-marker",
        env = "CAPTURE_SESSION_SIGNED_IN_MARKER",
        default_value = "auth_token"
    )]
    pub signed_in_marker: String,

    /// Checks in flight at once.
    #[arg(long = "session-check-concurrency", env = "CAPTURE_SESSION_CHECK_CONCURRENCY",
          default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub check_concurrency: u16,
}

/// The interval `check-sessions` uses when the daemon's is `off`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_hours(6);

/// `CAPTURE_SESSION_CHECK_INTERVAL`: a duration, or `off` (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckInterval(pub Option<Duration>);

fn parse_interval(s: &str) -> Result<CheckInterval, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(CheckInterval(None));
    }
    let interval = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if interval < Duration::from_secs(1) {
        return Err("the interval must be at least 1s (or `off`)".into());
    }
    Ok(CheckInterval(Some(interval)))
}

/// What one check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The home page carried the signed-in marker.
    SignedIn,
    /// It did not: TradingView does not accept the session.
    SignedOut,
    /// No answer that says either (network error, bot wall, 5xx, a
    /// redirect off TradingView); the session is left as it was.
    Unknown(String),
}

/// Checks one session over HTTP.
#[derive(Clone, Debug)]
pub struct SessionChecker {
    http: reqwest::Client,
    home: Url,
    marker: String,
    /// The site whose hosts may receive the cookies (`tradingview.com`).
    site: String,
}

impl SessionChecker {
    /// The HTTP client the checks need: no automatic redirects (they are
    /// followed by hand, with the cookies), a timeout, a user agent.
    pub fn client_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!(
                "signal-capture/",
                env!("CARGO_PKG_VERSION"),
                " session check"
            ))
    }

    /// A checker of `home` (TradingView's home page) with `client`.
    pub fn new(home: Url, marker: String, client: reqwest::Client) -> Self {
        let host = home.host_str().unwrap_or_default().to_ascii_lowercase();
        let site = host.strip_prefix("www.").unwrap_or(&host).to_owned();
        Self {
            http: client,
            home,
            marker,
            site,
        }
    }

    /// Whether `url` may receive the trader's cookies: the site or a
    /// subdomain, and not HTTP after HTTPS.
    fn may_receive_cookies(&self, url: &Url) -> bool {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let on_site = host == self.site || host.ends_with(&format!(".{}", self.site));
        let downgrade = self.home.scheme() == "https" && url.scheme() != "https";
        on_site && !downgrade && matches!(url.scheme(), "http" | "https")
    }

    /// Whether TradingView accepts `session`.
    pub async fn check(&self, session: &TradingViewSession) -> Verdict {
        let Ok(cookie) = HeaderValue::from_str(&format!(
            "sessionid={}; sessionid_sign={}",
            session.sessionid, session.sessionid_sign
        )) else {
            return Verdict::Unknown("the stored cookies cannot be sent in a header".into());
        };
        let mut url = self.home.clone();
        for _ in 0..=MAX_REDIRECTS {
            if !self.may_receive_cookies(&url) {
                return Verdict::Unknown(format!(
                    "redirected to {}, which is not {}",
                    url.host_str().unwrap_or("?"),
                    self.site
                ));
            }
            let response = match self
                .http
                .get(url.clone())
                .header(COOKIE, cookie.clone())
                .send()
                .await
            {
                Ok(response) => response,
                Err(error) => return Verdict::Unknown(error.without_url().to_string()),
            };
            let status = response.status();
            if status.is_redirection() {
                let Some(next) = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                else {
                    return Verdict::Unknown(format!(
                        "TradingView answered {status} without a usable Location"
                    ));
                };
                url = next;
                continue;
            }
            if !status.is_success() {
                return Verdict::Unknown(format!("TradingView answered {status}"));
            }
            return match self.body_has_marker(response).await {
                Ok(true) => Verdict::SignedIn,
                Ok(false) => Verdict::SignedOut,
                Err(error) => Verdict::Unknown(error),
            };
        }
        Verdict::Unknown(format!("more than {MAX_REDIRECTS} redirects"))
    }

    /// Reads the page (at most [`MAX_BODY_BYTES`]) looking for the marker.
    async fn body_has_marker(&self, mut response: reqwest::Response) -> Result<bool, String> {
        let marker = self.marker.as_bytes();
        let mut seen: Vec<u8> = Vec::new();
        let mut read = 0usize;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| e.without_url().to_string())?
        {
            read += chunk.len();
            // Keep only what a marker split across two chunks needs.
            seen.extend_from_slice(&chunk);
            if seen.windows(marker.len().max(1)).any(|w| w == marker) {
                return Ok(true);
            }
            let keep = marker.len().saturating_sub(1).min(seen.len());
            seen.drain(..seen.len() - keep);
            if read > MAX_BODY_BYTES {
                break;
            }
        }
        Ok(false)
    }
}

/// What a pass of checks did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Sessions claimed and checked.
    pub checked: u64,
    pub valid: u64,
    /// Expired by this pass (the trader was told).
    pub expired: u64,
    /// No clear answer, or a session that does not open: left as it was.
    pub unknown: u64,
    /// The trader stored another session meanwhile: nothing recorded.
    pub stale: u64,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no database connection available")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database query failed")]
    Query(#[from] tokio_postgres::Error),
}

/// What a check of one claimed session came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Valid,
    Expired,
    Unknown,
    Stale,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Expired => "expired",
            Self::Unknown => "unknown",
            Self::Stale => "stale",
        }
    }
}

/// The checks, with what they need: the database, the keys that open the
/// sessions, the checker, and Telegram to tell traders.
#[derive(Debug)]
pub struct SessionChecks {
    pub pool: Pool,
    /// The keys that open the sessions; without them nothing is checked
    /// (the gauge is kept).
    pub keys: Option<Arc<Keyring>>,
    pub checker: SessionChecker,
    pub telegram: Option<Arc<Telegram>>,
    /// At most one check per session per this long.
    pub interval: Duration,
    pub concurrency: usize,
    pub metrics: Metrics,
}

impl SessionChecks {
    /// One pass, for `capture check-sessions`: claims and checks every
    /// session due now, `concurrency` at a time, until none is due or
    /// `cancel` fires.
    pub async fn check_due(
        self: &Arc<Self>,
        cancel: &CancellationToken,
    ) -> Result<Report, CheckError> {
        let mut report = Report::default();
        let limit = i32::try_from(self.concurrency.clamp(1, 1000)).unwrap_or(1000);
        while !cancel.is_cancelled() {
            let claimed = self.claim(limit).await?;
            if claimed.is_empty() {
                break;
            }
            let mut checks = tokio::task::JoinSet::new();
            for (user_id, sealed) in claimed {
                let this = Arc::clone(self);
                checks.spawn(async move { this.check_one(user_id, sealed).await });
            }
            while let Some(done) = checks.join_next().await {
                report.checked += 1;
                match done {
                    Ok(Outcome::Valid) => report.valid += 1,
                    Ok(Outcome::Expired) => report.expired += 1,
                    Ok(Outcome::Stale) => report.stale += 1,
                    Ok(Outcome::Unknown) | Err(_) => report.unknown += 1,
                }
            }
        }
        Ok(report)
    }

    /// The daemon's loop: keeps the gauge current and, with `checking`,
    /// claims due sessions at the pace that checks each once per interval,
    /// until `cancel`. Checks in flight are abandoned on cancel (their
    /// sessions are checked in the next interval).
    pub async fn run(self: Arc<Self>, checking: bool, cancel: CancellationToken) {
        let tick = (self.interval / 100).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let gauge_every = (self.interval / 10).clamp(Duration::from_secs(1), GAUGE_EVERY);
        let slots = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let tracker = TaskTracker::new();
        let mut checkable = 0u64;
        let mut next_gauge = Instant::now();
        let mut last = Instant::now();
        // Checks owed at sessions / interval per second; at most a few ticks' worth.
        let mut owed = 0f64;
        while !cancel.is_cancelled() {
            if Instant::now() >= next_gauge {
                match self.refresh_gauge().await {
                    Ok(n) => checkable = n,
                    Err(error) => {
                        tracing::warn!(error = %error, "Could not count the stored TradingView sessions");
                    }
                }
                next_gauge = Instant::now() + gauge_every;
            }
            if checking {
                let elapsed = last.elapsed();
                last = Instant::now();
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "session counts are far below 2^52"
                )]
                let rate = checkable as f64 / self.interval.as_secs_f64();
                owed = (owed + rate * elapsed.as_secs_f64())
                    .min((rate * tick.as_secs_f64() * 4.0).max(1.0));
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "owed is small and not negative"
                )]
                let want = (owed.floor() as usize)
                    .min(slots.available_permits())
                    .min(1000);
                if want > 0 {
                    match self.claim(i32::try_from(want).unwrap_or(1000)).await {
                        Ok(claimed) => {
                            #[expect(clippy::cast_precision_loss, reason = "at most 1000")]
                            let got = claimed.len() as f64;
                            // Fewer due than owed: nothing to catch up on.
                            owed = if claimed.len() < want {
                                0.0
                            } else {
                                owed - got
                            };
                            for (user_id, sealed) in claimed {
                                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                                    break;
                                };
                                let this = Arc::clone(&self);
                                let stop = cancel.clone();
                                tracker.spawn(async move {
                                    tokio::select! {
                                        _ = this.check_one(user_id, sealed) => {}
                                        () = stop.cancelled() => {}
                                    }
                                    drop(permit);
                                });
                            }
                        }
                        Err(error) => {
                            tracing::warn!(error = %error, "Could not claim TradingView sessions to check");
                        }
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(tick) => {}
            }
        }
        tracker.close();
        tracker.wait().await;
    }

    /// Claims up to `limit` due sessions.
    async fn claim(&self, limit: i32) -> Result<Vec<(Uuid, Vec<u8>)>, CheckError> {
        let db = self.pool.get().await?;
        let rows = db
            .query(
                "select user_id, tradingview_cookies_sealed \
                   from private.claim_session_checks($1, make_interval(secs => $2))",
                &[&limit, &self.interval.as_secs_f64()],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Reads the counts into the gauge; returns how many sessions are
    /// checked (valid and unchecked ones).
    async fn refresh_gauge(&self) -> Result<u64, CheckError> {
        let db = self.pool.get().await?;
        let row = db
            .query_one(
                "select valid, expired, unchecked from private.tradingview_session_counts()",
                &[],
            )
            .await?;
        let (valid, expired, unchecked): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        self.metrics
            .set_tradingview_sessions(valid, expired, unchecked);
        Ok(u64::try_from(valid + unchecked).unwrap_or(0))
    }

    /// Opens, checks and records one claimed session; tells the trader when
    /// this check expired it.
    async fn check_one(&self, user_id: Uuid, sealed: Vec<u8>) -> Outcome {
        let span = tracing::info_span!("session_check", %user_id);
        async {
            let opened = match &self.keys {
                Some(keys) => keys.open(user_id, &sealed).map_err(|e| e.to_string()),
                None => Err("no COOKIE_SEAL_KEYS".to_owned()),
            };
            let outcome = match opened {
                Err(error) => {
                    tracing::error!(error = %error, "Cannot open the trader's sealed session; not checked");
                    Outcome::Unknown
                }
                Ok(session) => match self.checker.check(&session).await {
                    Verdict::Unknown(why) => {
                        tracing::warn!(%why, "TradingView gave no clear answer; the session is left as it was");
                        Outcome::Unknown
                    }
                    verdict => match self.record(user_id, &sealed, verdict == Verdict::SignedIn).await {
                        Ok(outcome) => outcome,
                        Err(error) => {
                            tracing::warn!(error = %error, "Could not record the session check");
                            Outcome::Unknown
                        }
                    },
                },
            };
            if outcome == Outcome::Expired {
                tracing::info!("The TradingView session expired; the trader is told");
                tell_trader(&self.pool, self.telegram.as_deref(), user_id).await;
            }
            self.metrics.session_checks.with_label_values(&[outcome.label()]).inc();
            outcome
        }
        .instrument(span)
        .await
    }

    async fn record(
        &self,
        user_id: Uuid,
        sealed: &[u8],
        signed_in: bool,
    ) -> Result<Outcome, CheckError> {
        let db = self.pool.get().await?;
        let row = db
            .query_one(
                "select private.record_session_check($1, $2, $3)",
                &[&user_id, &sealed, &signed_in],
            )
            .await?;
        Ok(match row.get::<_, &str>(0) {
            "valid" => Outcome::Valid,
            "expired" => Outcome::Expired,
            _ => Outcome::Stale,
        })
    }
}

/// Tells the trader on Telegram that their session expired, when they
/// switched notifications on. A courtesy: failures are logged, never
/// returned (the notice row is what the dashboard shows either way).
pub async fn tell_trader(pool: &Pool, telegram: Option<&Telegram>, user_id: Uuid) {
    let Some(telegram) = telegram else {
        return;
    };
    let chat = match pool.get().await {
        Ok(db) => db
            .query_one("select private.session_expiry_chat($1)", &[&user_id])
            .await
            .map(|row| row.get::<_, Option<String>>(0)),
        Err(error) => {
            tracing::warn!(error = %error, "Could not read the trader's Telegram settings");
            return;
        }
    };
    let chat = match chat {
        Ok(Some(chat)) => chat,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(error = %error, "Could not read the trader's Telegram settings");
            return;
        }
    };
    let Ok(chat) = chat.parse::<ChatId>() else {
        tracing::warn!("The trader's Telegram chat id failed validation; not notifying");
        return;
    };
    match telegram.send_session_expired(&chat).await {
        Ok(()) => tracing::info!("Told the trader on Telegram that their session expired"),
        Err(error) => tracing::warn!(error = %error, "Telegram notification not delivered"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(home: &str) -> SessionChecker {
        SessionChecker::new(
            home.parse().unwrap(),
            "auth_token".into(),
            SessionChecker::client_builder().build().unwrap(),
        )
    }

    #[test]
    fn cookies_go_only_to_tradingviews_hosts() {
        let checker = checker("https://www.tradingview.com/");
        for (url, ok) in [
            ("https://www.tradingview.com/", true),
            ("https://fr.tradingview.com/", true),
            ("https://tradingview.com/", true),
            ("http://fr.tradingview.com/", false),
            ("https://tradingview.com.evil.test/", false),
            ("https://eviltradingview.com/", false),
            ("https://example.com/", false),
        ] {
            assert_eq!(
                checker.may_receive_cookies(&url.parse().unwrap()),
                ok,
                "{url}"
            );
        }
    }

    #[test]
    fn the_interval_is_a_duration_or_off() {
        assert_eq!(parse_interval("off"), Ok(CheckInterval(None)));
        assert_eq!(
            parse_interval("6h"),
            Ok(CheckInterval(Some(Duration::from_hours(6))))
        );
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("soon").is_err());
    }
}
