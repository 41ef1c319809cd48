//! The Orb worker of `tollgate serve`: forwards accepted events to Orb's ingest API from a
//! durable cursor over the accepted-event log, syncs customers from the provider outbox, and
//! reads Orb's invoices back.
//!
//! Owns: the Orb HTTP client (JSON bodies, `Authorization: Bearer <API key>`, an
//! `Idempotency-Key` on every creating POST), the forwarding loop (plan a batch, send its
//! parts, move the cursor), the steps of a backfill and how each is found again after a lost
//! answer, the customer sync of Orb calls (`provider_calls` with provider `orb`), and the
//! invoice pull. Does not own: which events are forwarded and their Orb form, the live/late
//! split and the idempotency keys (`tollgate_core::provider::orb`), the cursor, plan and
//! invoice tables (`tollgate_store::orb`), the outbox (`tollgate_store::providers`), which
//! answers are retried and the backoff schedule (`tollgate_core::provider::retryable`,
//! `tollgate_core::webhook::Backoff`).
//!
//! Forwarding: one batch at a time. A batch is a range of the log after the cursor holding at
//! most `batch_events` mapped events; it is split once (live, and a backfill per customer
//! with late events) and the split is recorded (`orb_plan`) before anything is sent, so after
//! a crash the same events go the same way with the same idempotency keys. Every part's state
//! is recorded after Orb answered it; the cursor moves past the range only when every part is
//! done. Retryable failures (no answer, 409, 429, 5xx) are retried forever with backoff and
//! jitter: an event is never dropped. A permanent refusal (another 4xx, or events Orb reports
//! in `validation_failed`) stops forwarding with the reason in `GET /v1/providers/orb/status`
//! and the `tollgate_orb_stopped` metric until `POST /v1/providers/orb/resume`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tollgate_api::AppState;
use tollgate_api::types::orb::OrbPullReport;
use tollgate_core::billing::{Customer, CustomerKey};
use tollgate_core::dedup;
use tollgate_core::event::Event;
use tollgate_core::provider::orb::{
    self, Candidate, Mapping, ORB_INVOICE_PAGE_LIMIT, ORB_INVOICE_PAGES_MAX, OrbInvoice, Part,
    PartKind,
};
use tollgate_core::provider::{self, CallKind, METADATA_KEY, Provider, idempotency_key};
use tollgate_core::time::UnixMs;
use tollgate_core::webhook::Backoff;
use tollgate_store::OrbStore;
use tollgate_store::orb::{PartState, Plan};
use tollgate_store::providers::{Call, Outcome};

use crate::outbox_worker::{self, CallAttempt, Wakes, describe};

/// How long the forwarder sleeps when it is caught up (ms): new events reach Orb within this.
pub const FORWARD_POLL_MS: i64 = 1_000;
/// Most log events read to plan one batch (mapped or not): bounds one read when most events
/// are not forwarded.
pub const PLAN_SCAN_EVENTS_MAX: usize = 20_000;
/// How long a claimed customer sync is leased (ms).
pub const CALL_LEASE_MS: i64 = 10 * 60 * 1000;
/// Most entries of a customer's metadata copied to Orb (one more is `tollgate_key`).
pub const METADATA_ENTRIES_MAX: usize = 49;
/// Attempts of one page of invoices in a pull before the customer is reported as failed.
pub const PULL_PAGE_ATTEMPTS: u32 = 3;
/// Most backfills listed when looking for one whose creation's answer was lost.
pub const BACKFILL_LOOKUP_PAGES_MAX: usize = 20;

/// Stable codes of a permanent stop.
pub const STOP_UNAUTHORIZED: &str = "orb_unauthorized";
/// Orb listed events in `validation_failed`.
pub const STOP_VALIDATION_FAILED: &str = "orb_validation_failed";
/// Any other permanent 4xx.
pub const STOP_REJECTED: &str = "orb_rejected";
/// A stored event could not be read, or the mapping changed under a batch in flight.
pub const STOP_PLAN_INVALID: &str = "orb_plan_invalid";

/// Settings of the Orb worker.
#[derive(Clone, Debug)]
pub struct OrbConfig {
    /// `https://api.withorb.com` (tests: a local recorder).
    pub api_base: String,
    /// The API key.
    pub api_key: String,
    /// The retry schedule.
    pub backoff: Backoff,
    /// Attempts of one customer sync before it is marked failed (forwarding never gives up).
    pub attempts_max: u32,
    /// Timeout of one request (ms).
    pub timeout_ms: i64,
    /// The Orb account's grace period (ms).
    pub grace_ms: i64,
    /// Events per ingest request.
    pub batch_events: usize,
    /// How often invoices are read back (ms; 0: only on request).
    pub pull_every_ms: i64,
    /// What is forwarded.
    pub mapping: Mapping,
    /// Test-only fault injection (`serve --fault-exit-after-provider-step`, hidden): exit
    /// right after Orb answered the step of this name (`orb-ingest`, `orb-backfill-create`,
    /// `orb-backfill-ingest`, `orb-backfill-close`, `orb-create-customer-KEY`,
    /// `orb-update-customer`) and before its outcome is recorded.
    pub fault_exit_after_step: Option<String>,
}

/// Why a request failed.
#[derive(Debug)]
struct Failure {
    http_status: Option<u16>,
    message: String,
    retryable: bool,
    /// The stop code when it is permanent.
    code: &'static str,
}

impl Failure {
    fn internal(message: impl Into<String>) -> Failure {
        Failure {
            http_status: None,
            message: message.into(),
            retryable: true,
            code: STOP_REJECTED,
        }
    }

    fn permanent(code: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            http_status: None,
            message: message.into(),
            retryable: false,
            code,
        }
    }
}

/// The HTTP client of Orb's API.
struct Orb {
    client: reqwest::Client,
    base: String,
    key: String,
}

enum Method {
    Get,
    Post,
    Put,
}

impl Orb {
    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, Failure> {
        let mut url = reqwest::Url::parse(&self.base)
            .map_err(|e| Failure::permanent(STOP_REJECTED, format!("--orb-api-base: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| Failure::permanent(STOP_REJECTED, "--orb-api-base cannot be a base"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends a request; a 2xx answer's JSON, or (with `allow_404`) `None` for 404.
    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
        idempotency: Option<&str>,
        allow_404: bool,
    ) -> Result<Option<Value>, Failure> {
        let url = self.url(segments)?;
        let mut b = match method {
            Method::Get => self.client.get(url),
            Method::Post => self.client.post(url),
            Method::Put => self.client.put(url),
        };
        b = b.bearer_auth(&self.key).query(query);
        if let Some(body) = body {
            b = b.json(body);
        }
        if let Some(key) = idempotency {
            b = b.header("Idempotency-Key", key);
        }
        let resp = b.send().await.map_err(|e| Failure {
            http_status: None,
            message: describe(&e),
            retryable: true,
            code: STOP_REJECTED,
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if status == 404 && allow_404 {
            return Ok(None);
        }
        let parsed = serde_json::from_str::<Value>(&text).ok();
        if !(200..300).contains(&status) {
            return Err(refusal(status, parsed.as_ref(), &text));
        }
        let v = parsed.ok_or_else(|| Failure {
            http_status: Some(status),
            message: format!("Orb answered {status} with a body that is not JSON"),
            retryable: true,
            code: STOP_REJECTED,
        })?;
        Ok(Some(v))
    }
}

/// A non-2xx answer as a failure: retryable per [`provider::retryable`]; permanent ones carry
/// Orb's message and the events it listed in `validation_failed`.
fn refusal(status: u16, body: Option<&Value>, text: &str) -> Failure {
    let failed = body
        .and_then(|v| v.get("validation_failed"))
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty());
    let message = match failed {
        Some(list) => format!(
            "Orb answered {status}: {} event(s) failed validation, first: {}",
            list.len(),
            list.first().map(Value::to_string).unwrap_or_default()
        ),
        None => {
            let detail = body
                .and_then(|v| {
                    ["detail", "title", "message"]
                        .iter()
                        .find_map(|k| v.get(*k).and_then(Value::as_str))
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| text.chars().take(300).collect());
            format!("Orb answered {status}: {detail}")
        }
    };
    let code = if failed.is_some() {
        STOP_VALIDATION_FAILED
    } else if status == 401 || status == 403 {
        STOP_UNAUTHORIZED
    } else {
        STOP_REJECTED
    };
    Failure {
        http_status: Some(status),
        message,
        retryable: failed.is_none() && provider::retryable(Some(status)),
        code,
    }
}

/// Starts the Orb tasks: the forwarder, the customer sync, and the invoice puller (which also
/// answers `POST /v1/providers/orb/pull` through `pulls`).
pub fn spawn(
    state: Arc<AppState>,
    config: OrbConfig,
    pulls: mpsc::Receiver<oneshot::Sender<OrbPullReport>>,
) {
    let client = match outbox_worker::http_client(
        config.timeout_ms,
        concat!("Tollgate/", env!("CARGO_PKG_VERSION")),
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("Orb is off: the HTTP client did not start: {e}");
            return;
        }
    };
    let worker = Arc::new(Worker {
        state,
        orb: Orb {
            client,
            base: config.api_base.trim_end_matches('/').to_owned(),
            key: config.api_key.clone(),
        },
        config,
    });
    tokio::spawn(Arc::clone(&worker).forward_loop());
    tokio::spawn(Arc::clone(&worker).customer_loop());
    tokio::spawn(worker.pull_loop(pulls));
}

struct Worker {
    state: Arc<AppState>,
    orb: Orb,
    config: OrbConfig,
}

/// What one forwarding step did.
enum Progress {
    /// Caught up: nothing after the cursor to send.
    Idle,
    /// The cursor moved (or a plan changed); go on at once.
    Moved,
}

async fn sleep_ms(ms: i64) {
    tokio::time::sleep(Duration::from_millis(ms.max(1).unsigned_abs())).await;
}

impl Worker {
    fn now(&self) -> UnixMs {
        self.state.engine.now()
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&AppState) -> Result<T, String> + Send + 'static,
    ) -> Result<T, Failure> {
        let st = Arc::clone(&self.state);
        match tokio::task::spawn_blocking(move || f(&st)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::internal(e)),
            Err(e) => Err(Failure::internal(format!("panicked: {e}"))),
        }
    }

    async fn orb_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&OrbStore) -> Result<T, tollgate_store::StoreError> + Send + 'static,
    ) -> Result<T, Failure> {
        self.db(move |st| match &st.orb {
            Some(link) => f(&link.store).map_err(|e| e.to_string()),
            None => Err("Orb is not configured".into()),
        })
        .await
    }

    /// The test-only crash between Orb's answer and its record.
    fn fault(&self, step: &str) {
        if self.config.fault_exit_after_step.as_deref() == Some(step) {
            eprintln!("fault injection: exiting after Orb answered step {step}");
            std::process::exit(86);
        }
    }

    // ---- forwarding ----

    async fn forward_loop(self: Arc<Self>) {
        let metrics = Arc::clone(self.state.engine.metrics());
        loop {
            let cursor = match self.orb_db(|s| s.cursor()).await {
                Ok(c) => c,
                Err(f) => {
                    tracing::error!("reading the Orb cursor failed: {}", f.message);
                    sleep_ms(FORWARD_POLL_MS).await;
                    continue;
                }
            };
            metrics
                .orb
                .cursor_seq
                .set(i64::try_from(cursor.after_seq).unwrap_or(i64::MAX));
            metrics
                .orb
                .stopped
                .set(i64::from(cursor.stopped_code.is_some()));
            if cursor.stopped_code.is_some() {
                sleep_ms(FORWARD_POLL_MS).await;
                continue;
            }
            let now = self.now();
            if cursor.failures > 0 && cursor.next_attempt_ms.0 > now.0 {
                sleep_ms((cursor.next_attempt_ms.0 - now.0).min(FORWARD_POLL_MS)).await;
                continue;
            }
            match self.forward_step(cursor.after_seq).await {
                Ok(Progress::Moved) => {}
                Ok(Progress::Idle) => sleep_ms(FORWARD_POLL_MS).await,
                Err(f) if f.retryable => {
                    let attempt = cursor.failures.saturating_add(1);
                    let delay = self.config.backoff.delay_ms(attempt, rand::random());
                    let now = self.now();
                    let retry_at = UnixMs(now.0.saturating_add(delay));
                    tracing::warn!(status = ?f.http_status, attempt, delay_ms = delay,
                        "forwarding to Orb failed, retrying: {}", f.message);
                    metrics.orb.retries.inc();
                    let (message, status) = (f.message.clone(), f.http_status);
                    if let Err(e) = self
                        .orb_db(move |s| s.record_failure(&message, status, retry_at, now))
                        .await
                    {
                        tracing::error!("recording an Orb failure failed: {}", e.message);
                        sleep_ms(delay).await;
                    }
                }
                Err(f) => {
                    tracing::error!(code = f.code, status = ?f.http_status,
                        "forwarding to Orb stopped: {}", f.message);
                    metrics.orb.stopped.set(1);
                    let now = self.now();
                    let (code, message, status) = (f.code, f.message.clone(), f.http_status);
                    if let Err(e) = self
                        .orb_db(move |s| s.stop(code, &message, status, now))
                        .await
                    {
                        tracing::error!("recording an Orb stop failed: {}", e.message);
                        sleep_ms(FORWARD_POLL_MS).await;
                    }
                }
            }
        }
    }

    /// Reads the log after `after_seq` and maps it: the mapped candidates (at most
    /// `batch_events`), the last sequence number covered (`after_seq`: nothing new), and how
    /// many events of the range are not mapped. With `upto`, reads exactly `(after_seq, upto]`.
    async fn read_candidates(
        &self,
        after_seq: u64,
        upto: Option<u64>,
    ) -> Result<(Vec<Candidate>, u64, u64), Failure> {
        let limit = match upto {
            Some(last) => usize::try_from(last.saturating_sub(after_seq)).unwrap_or(usize::MAX),
            None => PLAN_SCAN_EVENTS_MAX,
        };
        let page = self
            .db(move |st| {
                st.engine
                    .events_after(after_seq, limit)
                    .map_err(|e| e.to_string())
            })
            .await?;
        let lag = page.last_seq.saturating_sub(after_seq);
        self.state
            .engine
            .metrics()
            .orb
            .lag_events
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
        let mut candidates = Vec::new();
        let (mut last, mut skipped) = (after_seq, 0u64);
        for logged in page.events {
            if upto.is_some_and(|u| logged.seq > u) {
                break;
            }
            let event = Event::parse(&logged.raw, logged.time).map_err(|e| {
                Failure::permanent(
                    STOP_PLAN_INVALID,
                    format!("stored event {} cannot be read: {e}", logged.seq),
                )
            })?;
            match self.config.mapping.forward(event.event_type.as_str()) {
                Some(forward) => {
                    if upto.is_none() && candidates.len() == self.config.batch_events {
                        break;
                    }
                    candidates.push(Candidate {
                        seq: logged.seq,
                        time: event.time,
                        event: orb::to_orb(&event, dedup::identity(&event), forward),
                    });
                }
                None => skipped += 1,
            }
            last = logged.seq;
        }
        if let Some(u) = upto
            && last != u
        {
            return Err(Failure::permanent(
                STOP_PLAN_INVALID,
                format!("the planned batch ends at event {u} but the log read ended at {last}"),
            ));
        }
        Ok((candidates, last, skipped))
    }

    async fn forward_step(&self, after_seq: u64) -> Result<Progress, Failure> {
        let plan = match self.orb_db(|s| s.plan()).await? {
            Some(plan) => plan,
            None => {
                let (candidates, last, skipped) = self.read_candidates(after_seq, None).await?;
                if last == after_seq {
                    return Ok(Progress::Idle);
                }
                let now = self.now();
                if candidates.is_empty() {
                    self.orb_db(move |s| s.skip(after_seq, last, skipped, now))
                        .await?;
                    self.state
                        .engine
                        .metrics()
                        .orb
                        .events_skipped
                        .inc_by(skipped);
                    return Ok(Progress::Moved);
                }
                let late_before = orb::late_before(now, self.config.grace_ms);
                let parts: Vec<(PartKind, u32)> = orb::split(candidates, late_before)
                    .into_iter()
                    .map(|p| (p.kind, u32::try_from(p.events.len()).unwrap_or(u32::MAX)))
                    .collect();
                self.orb_db(move |s| {
                    s.put_plan(after_seq, last, late_before, skipped, &parts, now)?;
                    s.plan()
                })
                .await?
                .ok_or_else(|| Failure::internal("the Orb plan vanished"))?
            }
        };
        self.execute_plan(&plan).await?;
        let now = self.now();
        let cursor = self.orb_db(move |s| s.finish_plan(now)).await?;
        let m = &self.state.engine.metrics().orb;
        let events: u64 = plan.parts.iter().map(|p| u64::from(p.events)).sum();
        let backfills = plan
            .parts
            .iter()
            .filter(|p| matches!(p.kind, PartKind::Backfill { .. }))
            .count() as u64;
        m.events_forwarded.inc_by(events);
        m.events_skipped.inc_by(plan.skipped);
        m.batches.inc_by(plan.parts.len() as u64);
        m.backfills.inc_by(backfills);
        m.cursor_seq
            .set(i64::try_from(cursor.after_seq).unwrap_or(i64::MAX));
        tracing::debug!(
            events,
            backfills,
            cursor = cursor.after_seq,
            "batch acknowledged by Orb"
        );
        Ok(Progress::Moved)
    }

    /// Sends every part of `plan` not done yet, recording each answer.
    async fn execute_plan(&self, plan: &Plan) -> Result<(), Failure> {
        let (candidates, _, _) = self
            .read_candidates(plan.after_seq, Some(plan.last_seq))
            .await?;
        let parts = orb::split(candidates, plan.late_before);
        let same = parts.len() == plan.parts.len()
            && parts.iter().zip(&plan.parts).all(|(p, stored)| {
                p.kind == stored.kind
                    && u32::try_from(p.events.len()).unwrap_or(u32::MAX) == stored.events
            });
        if !same {
            return Err(Failure::permanent(
                STOP_PLAN_INVALID,
                format!(
                    "the batch after event {} no longer splits as planned (was `[orb.events]` \
                     changed while it was in flight?); restore the mapping and resume",
                    plan.after_seq
                ),
            ));
        }
        for (part, stored) in parts.iter().zip(&plan.parts) {
            if stored.state == PartState::Done {
                continue;
            }
            match &part.kind {
                PartKind::Live => {
                    self.ingest(part, None).await?;
                    self.fault("orb-ingest");
                    let n = stored.part;
                    self.orb_db(move |s| s.set_part(n, PartState::Done, None, None))
                        .await?;
                }
                PartKind::Backfill { .. } => self.backfill(plan, part, stored).await?,
            }
        }
        Ok(())
    }

    async fn ingest(&self, part: &Part, backfill_id: Option<&str>) -> Result<(), Failure> {
        assert!(
            part.events.len() <= orb::ORB_INGEST_BATCH_EVENTS_MAX,
            "an Orb batch over the limit"
        );
        let body = json!({ "events": part.events.iter().map(|c| &c.event).collect::<Vec<_>>() });
        let query: Vec<(&str, String)> = backfill_id
            .map(|id| vec![("backfill_id", id.to_owned())])
            .unwrap_or_default();
        let answer = self
            .orb
            .send(
                Method::Post,
                &["v1", "ingest"],
                &query,
                Some(&body),
                None,
                false,
            )
            .await?
            .unwrap_or(Value::Null);
        // A 200 has an empty `validation_failed` (Orb's contract); anything else is refused
        // loudly rather than counted as forwarded.
        if let Some(list) = answer
            .get("validation_failed")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        {
            return Err(Failure::permanent(
                STOP_VALIDATION_FAILED,
                format!(
                    "Orb accepted the request but {} event(s) failed validation, first: {}",
                    list.len(),
                    list.first().map(Value::to_string).unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }

    /// A customer's late events: create the backfill (intent recorded first), ingest with its
    /// id, close it; each step's answer recorded before the next.
    async fn backfill(
        &self,
        plan: &Plan,
        part: &Part,
        stored: &tollgate_store::orb::PlanPart,
    ) -> Result<(), Failure> {
        let PartKind::Backfill {
            customer,
            timeframe_start,
            timeframe_end,
        } = &part.kind
        else {
            return Ok(());
        };
        let n = stored.part;
        let mut state = stored.state;
        let mut backfill_id = stored.backfill_id.clone();
        let key = format!(
            "tollgate-backfill-{}-{}-{}",
            plan.after_seq, plan.last_seq, stored.part
        );
        if matches!(state, PartState::Pending | PartState::Creating) {
            let found = if state == PartState::Creating {
                self.find_backfill(customer, *timeframe_start, *timeframe_end)
                    .await?
            } else {
                let k = key.clone();
                self.orb_db(move |s| s.set_part(n, PartState::Creating, Some(&k), None))
                    .await?;
                None
            };
            let id = match found {
                Some(id) => id,
                None => {
                    let body = json!({
                        "timeframe_start": timeframe_start.to_rfc3339(),
                        "timeframe_end": timeframe_end.to_rfc3339(),
                        "external_customer_id": customer,
                        "replace_existing_events": false,
                    });
                    let answer = self
                        .orb
                        .send(
                            Method::Post,
                            &["v1", "events", "backfills"],
                            &[],
                            Some(&body),
                            Some(&key),
                            false,
                        )
                        .await?
                        .unwrap_or(Value::Null);
                    self.fault("orb-backfill-create");
                    answer
                        .get("id")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| Failure::internal("Orb's backfill has no id"))?
                }
            };
            let i = id.clone();
            self.orb_db(move |s| s.set_part(n, PartState::Created, None, Some(&i)))
                .await?;
            backfill_id = Some(id);
            state = PartState::Created;
        }
        let id = backfill_id.ok_or_else(|| Failure::internal("a created backfill has no id"))?;
        if state == PartState::Created {
            self.ingest(part, Some(&id)).await?;
            self.fault("orb-backfill-ingest");
            self.orb_db(move |s| s.set_part(n, PartState::Ingested, None, None))
                .await?;
        }
        let closed = self
            .orb
            .send(
                Method::Post,
                &["v1", "events", "backfills", &id, "close"],
                &[],
                None,
                Some(&format!("{key}-close")),
                false,
            )
            .await;
        if let Err(f) = closed {
            // A close whose answer was lost is refused the second time: closed is fine.
            if f.retryable || !self.backfill_closed(&id).await? {
                return Err(f);
            }
        }
        self.fault("orb-backfill-close");
        self.orb_db(move |s| s.set_part(n, PartState::Done, None, None))
            .await
    }

    /// Whether Orb says the backfill is no longer pending (closed, reflected, reverted).
    async fn backfill_closed(&self, id: &str) -> Result<bool, Failure> {
        let v = self
            .orb
            .send(
                Method::Get,
                &["v1", "events", "backfills", id],
                &[],
                None,
                None,
                false,
            )
            .await?
            .unwrap_or(Value::Null);
        Ok(v.get("status").and_then(Value::as_str) != Some("pending"))
    }

    /// A pending backfill with this timeframe (the one whose creation's answer was lost).
    async fn find_backfill(
        &self,
        customer: &str,
        start: UnixMs,
        end: UnixMs,
    ) -> Result<Option<String>, Failure> {
        let same = |v: &Value, field: &str, t: UnixMs| {
            v.get(field)
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                .map(UnixMs::from_timestamp)
                == Some(t)
        };
        let mut cursor: Option<String> = None;
        for _ in 0..BACKFILL_LOOKUP_PAGES_MAX {
            let mut query = vec![("limit", "100".to_owned())];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let page = self
                .orb
                .send(
                    Method::Get,
                    &["v1", "events", "backfills"],
                    &query,
                    None,
                    None,
                    false,
                )
                .await?
                .unwrap_or(Value::Null);
            for b in page
                .get("data")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if b.get("status").and_then(Value::as_str) == Some("pending")
                    && same(b, "timeframe_start", start)
                    && same(b, "timeframe_end", end)
                {
                    tracing::info!(customer, "found the Orb backfill whose answer was lost");
                    return Ok(b.get("id").and_then(Value::as_str).map(str::to_owned));
                }
            }
            cursor = next_cursor(&page);
            if cursor.is_none() {
                break;
            }
        }
        Ok(None)
    }

    // ---- customers ----

    async fn customer_loop(self: Arc<Self>) {
        let worker = &*self;
        outbox_worker::run_calls(
            &self.state,
            Provider::Orb,
            CALL_LEASE_MS,
            Wakes::Poll,
            "Orb call claim",
            |call| worker.execute_call(call),
        )
        .await;
    }

    async fn execute_call(&self, call: Call) {
        let attempt = CallAttempt::start(self.now());
        let result = match call.kind {
            CallKind::SyncCustomer => self.sync_customer(&call).await,
            other => Err(Failure::permanent(
                STOP_REJECTED,
                format!("Orb does not take `{}` calls", other.as_str()),
            )),
        };
        let (outcome, attempt) = match result {
            Ok(()) => (Outcome::Done, attempt.done()),
            Err(f) => {
                let outcome = outbox_worker::after_failure(
                    &call,
                    f.retryable,
                    self.config.attempts_max,
                    &self.config.backoff,
                    self.now(),
                );
                tracing::warn!(call = %call.id, object = %call.object_id, ?outcome,
                    "Orb customer sync failed: {}", f.message);
                (
                    outcome,
                    attempt.failed("orb-customer".into(), f.http_status, f.message),
                )
            }
        };
        outbox_worker::record_call(
            &self.state,
            "recording an Orb call",
            call.id,
            attempt,
            outcome,
        )
        .await;
    }

    fn customer_body(customer: &Customer, create: bool) -> Value {
        let mut metadata = serde_json::Map::new();
        for (k, v) in customer
            .metadata
            .iter()
            .filter(|(k, _)| k.as_str() != METADATA_KEY)
            .take(METADATA_ENTRIES_MAX)
        {
            metadata.insert(k.clone(), Value::String(v.clone()));
        }
        metadata.insert(
            METADATA_KEY.into(),
            Value::String(customer.key.as_str().to_owned()),
        );
        let mut body = json!({ "name": customer.name, "metadata": metadata });
        if let Some(email) = &customer.email {
            body["email"] = Value::String(email.clone());
        }
        if create {
            body["external_customer_id"] = Value::String(customer.key.as_str().to_owned());
            body["currency"] = Value::String(customer.currency.code().to_owned());
        }
        body
    }

    /// Creates the Orb customer (`external_customer_id` = the Tollgate key) or updates it to
    /// the customer's current state. Orb's customer is looked up by external id first, so a
    /// creation whose answer was lost is found, never made twice.
    async fn sync_customer(&self, call: &Call) -> Result<(), Failure> {
        let key = call.object_id.clone();
        let k = key.clone();
        let customer = self
            .db(move |st| {
                let parsed =
                    CustomerKey::parse(&k).map_err(|e| format!("customer key {k}: {e}"))?;
                st.billing.customer(&parsed).map_err(|e| e.to_string())
            })
            .await
            .map_err(|f| Failure {
                retryable: !f.message.contains("not found"),
                ..f
            })?;
        let by_external = ["v1", "customers", "external_customer_id", key.as_str()];
        let found = self
            .orb
            .send(Method::Get, &by_external, &[], None, None, true)
            .await?;
        let (orb_id, step) = match found {
            Some(existing) => {
                let answer = self
                    .orb
                    .send(
                        Method::Put,
                        &by_external,
                        &[],
                        Some(&Self::customer_body(&customer, false)),
                        None,
                        false,
                    )
                    .await?
                    .unwrap_or(existing);
                self.fault("orb-update-customer");
                (answer, "orb-update-customer".to_owned())
            }
            None => {
                if customer.email.is_none() {
                    return Err(Failure::permanent(
                        STOP_REJECTED,
                        format!("Orb requires an e-mail to create a customer; `{key}` has none"),
                    ));
                }
                let idem = idempotency_key(CallKind::SyncCustomer, &key, 0, "orb-create");
                let answer = self
                    .orb
                    .send(
                        Method::Post,
                        &["v1", "customers"],
                        &[],
                        Some(&Self::customer_body(&customer, true)),
                        Some(&idem),
                        false,
                    )
                    .await?
                    .unwrap_or(Value::Null);
                let step = format!("orb-create-customer-{key}");
                self.fault(&step);
                (answer, step)
            }
        };
        let orb_id = orb_id
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Failure::internal("Orb's customer has no id"))?;
        let (id, now) = (call.id.clone(), self.now());
        self.db(move |st| {
            st.providers
                .step_intent(&id, &step, "-", now)
                .and_then(|()| {
                    st.providers.step_done(
                        &id,
                        &step,
                        &orb_id,
                        Some(("customer", &key, None, 0)),
                        Provider::Orb,
                        now,
                    )
                })
                .map_err(|e| e.to_string())
        })
        .await
    }

    // ---- invoices ----

    async fn pull_loop(self: Arc<Self>, mut pulls: mpsc::Receiver<oneshot::Sender<OrbPullReport>>) {
        let every = self.config.pull_every_ms;
        let mut next = Instant::now() + Duration::from_millis(every.unsigned_abs());
        loop {
            let timer = async {
                if every > 0 {
                    tokio::time::sleep_until(next.into()).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                request = pulls.recv() => {
                    let Some(reply) = request else { return };
                    let report = self.pull_all().await;
                    let _ = reply.send(report);
                }
                () = timer => {
                    let report = self.pull_all().await;
                    if !report.errors.is_empty() {
                        tracing::warn!(errors = ?report.errors, "Orb invoice pull had failures");
                    }
                    next = Instant::now() + Duration::from_millis(every.unsigned_abs());
                }
            }
        }
    }

    /// Reads every customer's invoices from Orb into the records.
    async fn pull_all(&self) -> OrbPullReport {
        let mut report = OrbPullReport::default();
        let mut after: Option<String> = None;
        loop {
            let a = after.clone();
            let page = match self
                .db(move |st| {
                    st.billing
                        .customers(a.as_deref(), 100)
                        .map_err(|e| e.to_string())
                })
                .await
            {
                Ok(p) => p,
                Err(f) => {
                    report
                        .errors
                        .push(format!("listing customers: {}", f.message));
                    return report;
                }
            };
            let Some(last) = page.last() else {
                return report;
            };
            after = Some(last.key.as_str().to_owned());
            for customer in &page {
                let key = customer.key.as_str();
                match self.pull_customer(key).await {
                    Ok(n) => {
                        report.customers += 1;
                        report.invoices += n;
                    }
                    Err(f) => report.errors.push(format!("{key}: {}", f.message)),
                }
            }
        }
    }

    async fn pull_customer(&self, key: &str) -> Result<u64, Failure> {
        let mut cursor: Option<String> = None;
        let mut n = 0u64;
        for _ in 0..ORB_INVOICE_PAGES_MAX {
            let mut query = vec![
                ("external_customer_id", key.to_owned()),
                ("limit", ORB_INVOICE_PAGE_LIMIT.to_string()),
            ];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let mut attempt = 0;
            let page = loop {
                attempt += 1;
                match self
                    .orb
                    .send(Method::Get, &["v1", "invoices"], &query, None, None, false)
                    .await
                {
                    Ok(v) => break v.unwrap_or(Value::Null),
                    Err(f) if f.retryable && attempt < PULL_PAGE_ATTEMPTS => {
                        sleep_ms(self.config.backoff.delay_ms(attempt, rand::random())).await;
                    }
                    Err(f) => return Err(f),
                }
            };
            let mut invoices = Vec::new();
            for v in page
                .get("data")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let invoice = OrbInvoice::parse(v).map_err(|e| Failure {
                    http_status: None,
                    message: format!("{}: {e}", e.code()),
                    retryable: false,
                    code: STOP_REJECTED,
                })?;
                invoices.push(invoice);
            }
            n += invoices.len() as u64;
            let (customer, now) = (key.to_owned(), self.now());
            self.orb_db(move |s| {
                for inv in &invoices {
                    let owner = inv.external_customer_id.as_deref().unwrap_or(&customer);
                    s.put_invoice(owner, inv, now)?;
                }
                Ok(())
            })
            .await?;
            cursor = next_cursor(&page);
            if cursor.is_none() {
                break;
            }
        }
        Ok(n)
    }
}

/// Orb's `pagination_metadata.next_cursor` when `has_more`.
fn next_cursor(page: &Value) -> Option<String> {
    let meta = page.get("pagination_metadata")?;
    if meta.get("has_more").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    meta.get("next_cursor")
        .and_then(Value::as_str)
        .map(str::to_owned)
}
