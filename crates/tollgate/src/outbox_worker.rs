//! What the outbox workers of `tollgate serve` share: the webhook delivery worker
//! (`webhook_worker.rs`), the Stripe worker (`provider_worker.rs`) and the Orb worker's
//! customer sync (`orb_worker.rs`).
//!
//! Owns: the HTTP client settings every worker uses, running a store call on the blocking pool
//! with its failure logged, how long a worker sleeps before its next look, the loop that claims
//! the provider calls of one provider one at a time, the backoff decision after a failed call
//! attempt and its record, and the description of a request that got no answer. Does not own:
//! what is due, leases and the attempt log (`tollgate_store::webhooks`,
//! `tollgate_store::providers`), the backoff schedule (`tollgate_core::webhook::Backoff`), what a
//! call or a delivery sends.
//!
//! Invariants: a worker never sleeps longer than its outbox's `POLL_MS`, nor past the next due
//! row; a failed record is only logged: the lease runs out (or the next start frees it) and the
//! row is attempted again, so every row is attempted at least once.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_api::AppState;
use tollgate_core::provider::Provider;
use tollgate_core::time::UnixMs;
use tollgate_core::webhook::Backoff;
use tollgate_store::providers::{self, Attempt, Call, Outcome};
use tollgate_store::{StoreError, WebhookStoreError};

/// The HTTP client of a worker: `timeout_ms` for connecting and for a whole request, no
/// redirects, `user_agent`.
pub fn http_client(timeout_ms: i64, user_agent: &str) -> reqwest::Result<reqwest::Client> {
    let timeout = Duration::from_millis(timeout_ms.unsigned_abs());
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
        .build()
}

/// A store error with a stable code, for the log.
pub trait Coded: Display {
    /// The stable code.
    fn code(&self) -> &'static str;
}

impl Coded for StoreError {
    fn code(&self) -> &'static str {
        StoreError::code(self)
    }
}

impl Coded for WebhookStoreError {
    fn code(&self) -> &'static str {
        WebhookStoreError::code(self)
    }
}

/// Runs `f` on the blocking pool. A failure is logged as "`what` failed" (or panicked) and
/// comes back as `None`.
pub async fn blocking<T, E>(
    what: &str,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Option<T>
where
    T: Send + 'static,
    E: Coded + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::error!(code = e.code(), "{what} failed: {e}");
            None
        }
        Err(e) => {
            tracing::error!("{what} panicked: {e}");
            None
        }
    }
}

/// How long to sleep at `now` before the next look: until `next_due` when that is later,
/// never longer than `poll_ms`.
pub fn sleep_ms(next_due: Option<UnixMs>, now: UnixMs, poll_ms: i64) -> i64 {
    match next_due {
        Some(due) if due.0 > now.0 => poll_ms.min(due.0 - now.0),
        _ => poll_ms,
    }
}

/// Whether a call loop also wakes when a call is committed (`providers::wake`), besides when
/// the next call falls due. Only one loop may listen: a wake-up reaches one waiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wakes {
    /// Wake on `providers::woken()` too.
    Listen,
    /// Look every `providers::POLL_MS` at most.
    Poll,
}

/// Runs forever: claims the oldest due call of `provider` (leased for `lease_ms`), runs
/// `execute` on it and claims again at once; with nothing due, sleeps until the next call
/// falls due (or a wake, per `wakes`). `what` names the claim in the log.
pub async fn run_calls<F: Future<Output = ()>>(
    state: &Arc<AppState>,
    provider: Provider,
    lease_ms: i64,
    wakes: Wakes,
    what: &str,
    mut execute: impl FnMut(Call) -> F,
) {
    loop {
        let st = Arc::clone(state);
        let claimed = blocking(what, move || {
            let now = st.engine.now();
            st.providers
                .claim_for(provider, now, lease_ms)
                .map(|(c, next)| (c, next, now))
        })
        .await;
        let mut sleep = providers::POLL_MS;
        match claimed {
            Some((Some(call), _, _)) => {
                execute(call).await;
                continue;
            }
            Some((None, next_due, now)) => sleep = sleep_ms(next_due, now, providers::POLL_MS),
            None => {}
        }
        let sleep = tokio::time::sleep(Duration::from_millis(sleep.unsigned_abs()));
        match wakes {
            Wakes::Listen => {
                tokio::select! {
                    () = providers::woken() => {}
                    () = sleep => {}
                }
            }
            Wakes::Poll => sleep.await,
        }
    }
}

/// One attempt of a provider call, from its start: makes its record for the attempt log.
pub struct CallAttempt {
    at: UnixMs,
    started: Instant,
}

impl CallAttempt {
    /// An attempt starting now (`now` on the server's clock).
    pub fn start(now: UnixMs) -> CallAttempt {
        CallAttempt {
            at: now,
            started: Instant::now(),
        }
    }

    /// Its record when every step succeeded.
    pub fn done(&self) -> Attempt {
        Attempt {
            at: self.at,
            duration_ms: elapsed_ms(self.started),
            step: None,
            http_status: Some(200),
            error: None,
        }
    }

    /// Its record when `step` failed with `message` (after the provider's `http_status`, if
    /// it answered).
    pub fn failed(&self, step: String, http_status: Option<u16>, message: String) -> Attempt {
        Attempt {
            at: self.at,
            duration_ms: elapsed_ms(self.started),
            step: Some(step),
            http_status,
            error: Some(message),
        }
    }
}

/// What follows a failed attempt of `call`: another attempt after `backoff` (with jitter) while
/// the failure is `retryable` and fewer than `attempts_max` attempts were made, else failed.
pub fn after_failure(
    call: &Call,
    retryable: bool,
    attempts_max: u32,
    backoff: &Backoff,
    now: UnixMs,
) -> Outcome {
    if retryable && call.attempts < attempts_max {
        let delay = backoff.delay_ms(call.attempts, rand::random());
        Outcome::RetryAt(UnixMs(now.0.saturating_add(delay)))
    } else {
        Outcome::Failed
    }
}

/// Records an attempt of a call and what follows it, which frees its lease. A failure is
/// logged as "`what` failed": the call stays leased until the next start, then runs again and
/// its recorded steps resume.
pub async fn record_call(
    state: &Arc<AppState>,
    what: &str,
    call_id: String,
    attempt: Attempt,
    outcome: Outcome,
) {
    let st = Arc::clone(state);
    blocking(what, move || {
        st.providers
            .record_attempt(&call_id, &attempt, outcome, st.engine.now())
    })
    .await;
}

/// Milliseconds since `started`.
pub fn elapsed_ms(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// A short, stable description of a request to a provider that got no answer.
pub fn describe(e: &reqwest::Error) -> String {
    let head = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    with_causes(head, e)
}

/// `head` followed by every cause of `e`, each after `: `.
pub fn with_causes(head: &str, e: &reqwest::Error) -> String {
    let mut text = head.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_until_the_next_due_row_and_never_longer_than_the_poll() {
        let now = UnixMs(1_000);
        assert_eq!(sleep_ms(None, now, 1_000), 1_000);
        assert_eq!(sleep_ms(Some(UnixMs(1_250)), now, 1_000), 250);
        assert_eq!(sleep_ms(Some(UnixMs(9_000)), now, 1_000), 1_000);
        assert_eq!(
            sleep_ms(Some(UnixMs(1_000)), now, 1_000),
            1_000,
            "due now: poll"
        );
    }
}
