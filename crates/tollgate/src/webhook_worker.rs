//! The webhook delivery worker of `tollgate serve`: takes due deliveries from the outbox,
//! signs and POSTs them, and records every attempt.
//!
//! Owns: the HTTP client (async, per-request timeout, no redirects, TLS by rustls), the
//! per-endpoint concurrency limit (a semaphore of [`WEBHOOK_ENDPOINT_CONCURRENCY_MAX`] permits
//! per endpoint: a claim is only taken when a permit is free), and the loop's timing. Does not
//! own: what is due, leases and outcomes (`tollgate_store::webhooks`), signatures, backoff and
//! the disable rule (`tollgate_core::webhook`).
//!
//! Timing: the worker claims up to [`CLAIM_BATCH`] due deliveries, then sleeps until the next
//! delivery falls due, a new message is committed (`webhooks::wake`), or a request finishes —
//! and never longer than `webhooks::POLL_MS`. A claim is a lease of `timeout + LEASE_SLACK_MS`:
//! a request always ends (answer, error or timeout) before its lease does, and if the process
//! dies mid-request the delivery is due again when the lease runs out, after a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tollgate_api::AppState;
use tollgate_core::limits::WEBHOOK_ENDPOINT_CONCURRENCY_MAX;
use tollgate_core::webhook::{
    self, EVENT_TYPE_HEADER, MESSAGE_ID_HEADER, Next, RetryPolicy, SIGNATURE_HEADER,
};
use tollgate_store::webhooks::{self, Attempt, Claim};

use crate::outbox_worker::{self, blocking, elapsed_ms, with_causes};

/// Most deliveries claimed at once.
pub const CLAIM_BATCH: usize = 64;
/// How much longer than the request timeout a claim's lease lasts (ms).
pub const LEASE_SLACK_MS: i64 = 5_000;

/// Settings of the worker.
#[derive(Clone, Copy, Debug)]
pub struct WorkerConfig {
    /// Retry schedule, attempts, disable rule.
    pub policy: RetryPolicy,
    /// Timeout of one request (ms).
    pub timeout_ms: i64,
}

/// Runs forever (until the runtime stops). Errors are logged and retried at the next look.
pub async fn run(state: Arc<AppState>, config: WorkerConfig) {
    let client = match outbox_worker::http_client(
        config.timeout_ms,
        concat!("Tollgate-Webhooks/", env!("CARGO_PKG_VERSION")),
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("webhook delivery is off: the HTTP client did not start: {e}");
            return;
        }
    };
    let permits: Arc<Mutex<HashMap<String, Arc<Semaphore>>>> = Arc::default();
    let finished = Arc::new(Notify::new());
    let lease_ms = config.timeout_ms.saturating_add(LEASE_SLACK_MS);
    loop {
        let st = Arc::clone(&state);
        let sems = Arc::clone(&permits);
        let claimed = blocking("webhook claim", move || {
            let now = st.engine.now();
            let out = st.webhooks.claim(now, CLAIM_BATCH, lease_ms, |c| {
                let sem =
                    Arc::clone(sems.lock().entry(c.endpoint_id.clone()).or_insert_with(|| {
                        Arc::new(Semaphore::new(WEBHOOK_ENDPOINT_CONCURRENCY_MAX))
                    }));
                sem.try_acquire_owned().ok()
            });
            out.map(|c| (c.claims, c.next_due, now))
        })
        .await;
        let mut sleep_ms = webhooks::POLL_MS;
        if let Some((claims, next_due, now)) = claimed {
            for (claim, permit) in claims {
                tokio::spawn(deliver(
                    Arc::clone(&state),
                    client.clone(),
                    config,
                    claim,
                    permit,
                    Arc::clone(&finished),
                ));
            }
            sleep_ms = outbox_worker::sleep_ms(next_due, now, webhooks::POLL_MS);
        }
        tokio::select! {
            () = webhooks::woken() => {}
            () = finished.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(sleep_ms.unsigned_abs())) => {}
        }
    }
}

/// One attempt: sign, POST, record the outcome, free the endpoint's permit.
async fn deliver(
    state: Arc<AppState>,
    client: reqwest::Client,
    config: WorkerConfig,
    claim: Claim,
    permit: OwnedSemaphorePermit,
    finished: Arc<Notify>,
) {
    let at = state.engine.now();
    let started = Instant::now();
    let secrets: Vec<&str> = claim.secrets.iter().map(String::as_str).collect();
    let signature =
        webhook::signature_header(&secrets, at.0.div_euclid(1000), claim.body.as_bytes());
    let sent = client
        .post(&claim.url)
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header(MESSAGE_ID_HEADER, &claim.message_id)
        .header(EVENT_TYPE_HEADER, &claim.event_type)
        .body(claim.body.clone())
        .send()
        .await;
    let (http_status, error) = match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (
                Some(status),
                (!webhook::is_success(status)).then(|| format!("HTTP {status}")),
            )
        }
        Err(e) => (None, Some(describe(&e, config.timeout_ms))),
    };
    let attempt = Attempt {
        at,
        duration_ms: elapsed_ms(started),
        http_status,
        error,
    };
    let st = Arc::clone(&state);
    let id = claim.delivery_id.clone();
    // On a failure the lease runs out and the delivery is attempted again: at least once.
    let recorded = blocking("recording a webhook attempt", move || {
        st.webhooks.record_attempt(
            &id,
            &attempt,
            &config.policy,
            rand::random(),
            st.engine.now(),
        )
    })
    .await;
    if let Some(r) = recorded {
        if r.disabled_endpoint {
            tracing::warn!(endpoint = %claim.endpoint_id, "webhook endpoint disabled after a run of failed attempts");
        }
        if r.next == Next::GiveUp {
            tracing::warn!(delivery = %claim.delivery_id, message = %claim.message_id, "webhook delivery failed: out of attempts");
        }
    }
    drop(permit);
    finished.notify_one();
}

/// A short, stable description of a request that got no answer.
fn describe(e: &reqwest::Error, timeout_ms: i64) -> String {
    if e.is_timeout() {
        return format!("timeout after {timeout_ms} ms");
    }
    let head = if e.is_connect() {
        "connection failed"
    } else if e.is_builder() {
        "invalid request"
    } else {
        "request failed"
    };
    with_causes(head, e)
}
