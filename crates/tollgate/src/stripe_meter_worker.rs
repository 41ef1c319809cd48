//! The Stripe meter event worker of `tollgate serve`: forwards accepted events to Stripe
//! Billing's `POST /v1/billing/meter_events` from a durable cursor over the accepted-event log.
//!
//! Owns: the meter event request (form-encoded, `Authorization: Bearer <secret key>`, an
//! `Idempotency-Key` derived from the event's dedup identity), the forwarding loop (parked
//! events whose customer is now synced first, then the log after the cursor, one event per
//! request), and how each answer moves the cursor. Does not own: which events are forwarded,
//! their form, Stripe's timestamp window and the identifier (`tollgate_core::provider::
//! stripe_meter`), the cursor and the parked events (`tollgate_store::stripe_meters`), the
//! Stripe customer ids (`provider_objects`, written by the Stripe customer sync in
//! `provider_worker`), which answers are retried and the backoff schedule
//! (`tollgate_core::provider::retryable`, `tollgate_core::webhook::Backoff`).
//!
//! Forwarding: events in log order. An event whose type is not mapped is skipped; one whose
//! timestamp Stripe can no longer take (older than 35 days) or whose value is not a whole number
//! is passed over and counted (never silently); one whose customer has no Stripe id yet is
//! parked and sent once the customer sync recorded the id; every other one is sent, and the
//! cursor moves past it only after Stripe acknowledged it. The `identifier` is Tollgate's dedup
//! identity, so an event sent again after a crash is refused by Stripe as a duplicate, which
//! counts as acknowledged: Stripe counts it once. Retryable failures (no answer, 409, 429, 5xx)
//! are retried forever with backoff and jitter; a permanent refusal (another 4xx) stops
//! forwarding with a stable code in `GET /v1/providers/stripe/meter_events/status` and the
//! `tollgate_stripe_meter_stopped` metric until `POST /v1/providers/stripe/meter_events/resume`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tollgate_api::AppState;
use tollgate_core::dedup;
use tollgate_core::event::Event;
use tollgate_core::provider::stripe_meter::{
    self, Mapping, MeterEvent, STRIPE_METER_PAST_MS, STRIPE_METER_WINDOW_MARGIN_MS, Window,
};
use tollgate_core::provider::{self, Provider};
use tollgate_core::time::UnixMs;
use tollgate_core::webhook::Backoff;
use tollgate_store::StripeMeterStore;
use tollgate_store::engine::LoggedEvent;
use tollgate_store::stripe_meters::{Advance, Outcome, Parked};

/// How long the forwarder sleeps when it is caught up (ms): new events reach Stripe within this.
pub const FORWARD_POLL_MS: i64 = 1_000;
/// Most log events read in one step (mapped or not).
pub const SCAN_EVENTS_MAX: usize = 1_000;
/// Most parked events handled in one step.
pub const PARKED_EVENTS_MAX: usize = 100;

/// Stable codes of a permanent stop: Stripe refused the API key.
pub const STOP_UNAUTHORIZED: &str = "stripe_meter_unauthorized";
/// Any other permanent 4xx (an unknown `event_name`, a deleted customer, …).
pub const STOP_REJECTED: &str = "stripe_meter_rejected";
/// A stored event could not be read.
pub const STOP_EVENT_UNREADABLE: &str = "stripe_meter_event_unreadable";

/// Settings of the Stripe meter event worker.
#[derive(Clone, Debug)]
pub struct StripeMetersConfig {
    /// `https://api.stripe.com` (tests: localstripe).
    pub api_base: String,
    /// The secret API key.
    pub secret_key: String,
    /// The retry schedule (the Stripe flags'); forwarding never gives up.
    pub backoff: Backoff,
    /// Timeout of one request (ms).
    pub timeout_ms: i64,
    /// What is forwarded.
    pub mapping: Mapping,
    /// Test-only fault injection (`serve --fault-exit-after-provider-step`, hidden): exit right
    /// after Stripe answered a meter event (`stripe-meter-event`) and before the cursor moved.
    pub fault_exit_after_step: Option<String>,
}

/// Why a request failed.
#[derive(Debug)]
struct Failure {
    http_status: Option<u16>,
    message: String,
    retryable: bool,
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
}

/// Starts the forwarder.
pub fn spawn(state: Arc<AppState>, config: StripeMetersConfig) {
    let timeout = Duration::from_millis(config.timeout_ms.unsigned_abs());
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Tollgate/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("Stripe meter events are off: the HTTP client did not start: {e}");
            return;
        }
    };
    let worker = Arc::new(Worker {
        state,
        client,
        url: format!(
            "{}/v1/billing/meter_events",
            config.api_base.trim_end_matches('/')
        ),
        config,
    });
    tokio::spawn(worker.forward_loop());
}

struct Worker {
    state: Arc<AppState>,
    client: reqwest::Client,
    url: String,
    config: StripeMetersConfig,
}

/// What one step did.
enum Progress {
    /// Nothing to do now.
    Idle,
    /// Something moved; go on at once.
    Moved,
}

async fn sleep_ms(ms: i64) {
    tokio::time::sleep(Duration::from_millis(ms.max(1).unsigned_abs())).await;
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Worker {
    fn now(&self) -> UnixMs {
        self.state.engine.now()
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&AppState, &StripeMeterStore) -> Result<T, String> + Send + 'static,
    ) -> Result<T, Failure> {
        let st = Arc::clone(&self.state);
        match tokio::task::spawn_blocking(move || match &st.stripe_meters {
            Some(store) => f(&st, store),
            None => Err("Stripe meter events are not configured".into()),
        })
        .await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::internal(e)),
            Err(e) => Err(Failure::internal(format!("panicked: {e}"))),
        }
    }

    /// The test-only crash between Stripe's answer and the cursor's move.
    fn fault(&self, step: &str) {
        if self.config.fault_exit_after_step.as_deref() == Some(step) {
            eprintln!("fault injection: exiting after Stripe answered step {step}");
            std::process::exit(86);
        }
    }

    async fn forward_loop(self: Arc<Self>) {
        let metrics = Arc::clone(self.state.engine.metrics());
        loop {
            let read = self
                .db(|_, s| {
                    Ok((
                        s.cursor().map_err(|e| e.to_string())?,
                        s.waiting_total().map_err(|e| e.to_string())?,
                    ))
                })
                .await;
            let (cursor, waiting) = match read {
                Ok(v) => v,
                Err(f) => {
                    tracing::error!("reading the Stripe meter cursor failed: {}", f.message);
                    sleep_ms(FORWARD_POLL_MS).await;
                    continue;
                }
            };
            let m = &metrics.stripe_meters;
            m.cursor_seq.set(gauge(cursor.after_seq));
            m.events_waiting.set(gauge(waiting));
            m.stopped.set(i64::from(cursor.stopped_code.is_some()));
            if cursor.stopped_code.is_some() {
                sleep_ms(FORWARD_POLL_MS).await;
                continue;
            }
            let now = self.now();
            if cursor.failures > 0 && cursor.next_attempt_ms.0 > now.0 {
                sleep_ms((cursor.next_attempt_ms.0 - now.0).min(FORWARD_POLL_MS)).await;
                continue;
            }
            match self.step(cursor.after_seq, waiting > 0).await {
                Ok(Progress::Moved) => {}
                Ok(Progress::Idle) => sleep_ms(FORWARD_POLL_MS).await,
                Err(f) if f.retryable => {
                    let attempt = cursor.failures.saturating_add(1);
                    let delay = self.config.backoff.delay_ms(attempt, rand::random());
                    let now = self.now();
                    let retry_at = UnixMs(now.0.saturating_add(delay));
                    tracing::warn!(status = ?f.http_status, attempt, delay_ms = delay,
                        "a Stripe meter event failed, retrying: {}", f.message);
                    m.retries.inc();
                    let (message, status) = (f.message.clone(), f.http_status);
                    if let Err(e) = self
                        .db(move |_, s| {
                            s.record_failure(&message, status, retry_at, now)
                                .map_err(|e| e.to_string())
                        })
                        .await
                    {
                        tracing::error!("recording a Stripe meter failure failed: {}", e.message);
                        sleep_ms(delay).await;
                    }
                }
                Err(f) => {
                    tracing::error!(code = f.code, status = ?f.http_status,
                        "forwarding to Stripe meter events stopped: {}", f.message);
                    m.stopped.set(1);
                    let now = self.now();
                    let (code, message, status) = (f.code, f.message.clone(), f.http_status);
                    if let Err(e) = self
                        .db(move |_, s| {
                            s.stop(code, &message, status, now)
                                .map_err(|e| e.to_string())
                        })
                        .await
                    {
                        tracing::error!("recording a Stripe meter stop failed: {}", e.message);
                        sleep_ms(FORWARD_POLL_MS).await;
                    }
                }
            }
        }
    }

    /// One step: parked events that can go now, then the log after the cursor.
    async fn step(&self, after_seq: u64, any_waiting: bool) -> Result<Progress, Failure> {
        let mut moved = false;
        if any_waiting {
            moved |= self.parked().await?;
        }
        moved |= self.log(after_seq).await?;
        Ok(if moved {
            Progress::Moved
        } else {
            Progress::Idle
        })
    }

    /// Parked events: those Stripe can no longer take are passed over (counted); those whose
    /// customer now has a Stripe id are sent.
    async fn parked(&self) -> Result<bool, Failure> {
        let now = self.now();
        let before = UnixMs(
            now.0
                .saturating_sub(STRIPE_METER_PAST_MS)
                .saturating_add(STRIPE_METER_WINDOW_MARGIN_MS),
        );
        let (expired, ready) = self
            .db(move |_, s| {
                Ok((
                    s.expired(before, PARKED_EVENTS_MAX)
                        .map_err(|e| e.to_string())?,
                    s.ready(PARKED_EVENTS_MAX).map_err(|e| e.to_string())?,
                ))
            })
            .await?;
        let mut moved = false;
        for p in expired {
            let note = format!(
                "event {} of `{}` at {}: outside Stripe's window (more than 35 days old) \
                 while it waited for the customer's Stripe id",
                p.seq,
                p.customer,
                p.time.to_rfc3339()
            );
            tracing::warn!("{note}");
            self.unpark(p.seq, Outcome::OutOfWindow, Some(note)).await?;
            self.state
                .engine
                .metrics()
                .stripe_meters
                .events_out_of_window
                .inc();
            moved = true;
        }
        for r in ready {
            let logged = self.read_one(r.seq).await?;
            let event = parse(&logged)?;
            let Some(forward) = self.config.mapping.forward(event.event_type.as_str()) else {
                // The mapping changed while it waited: it is no longer forwarded.
                self.unpark(
                    r.seq,
                    Outcome::Invalid,
                    Some(format!(
                        "event {}: its type `{}` is no longer mapped in [stripe_meters]",
                        r.seq,
                        event.event_type.as_str()
                    )),
                )
                .await?;
                self.count(Outcome::Invalid);
                moved = true;
                continue;
            };
            let outcome = match self.decide(&event, logged.seq, forward, &r.stripe_customer_id) {
                Decision::Send(meter) => self.send(&meter).await?,
                Decision::PassOver(outcome, note) => {
                    self.unpark(r.seq, outcome, Some(note)).await?;
                    self.count(outcome);
                    moved = true;
                    continue;
                }
                Decision::Later => continue,
            };
            self.fault("stripe-meter-event");
            self.unpark(r.seq, outcome, None).await?;
            self.count(outcome);
            moved = true;
        }
        Ok(moved)
    }

    async fn unpark(
        &self,
        seq: u64,
        outcome: Outcome,
        note: Option<String>,
    ) -> Result<(), Failure> {
        let now = self.now();
        self.db(move |_, s| {
            s.unpark(seq, outcome, note.as_deref(), now)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
    }

    async fn read_one(&self, seq: u64) -> Result<LoggedEvent, Failure> {
        let page = self
            .db(move |st, _| {
                st.engine
                    .events_after(seq.saturating_sub(1), 1)
                    .map_err(|e| e.to_string())
            })
            .await?;
        page.events
            .into_iter()
            .next()
            .filter(|e| e.seq == seq)
            .ok_or_else(|| Failure {
                http_status: None,
                message: format!("parked event {seq} is not in the log"),
                retryable: false,
                code: STOP_EVENT_UNREADABLE,
            })
    }

    fn count(&self, outcome: Outcome) {
        let m = &self.state.engine.metrics().stripe_meters;
        match outcome {
            Outcome::Forwarded { duplicate } => {
                m.events_forwarded.inc();
                if duplicate {
                    m.events_duplicate.inc();
                }
            }
            Outcome::OutOfWindow => {
                m.events_out_of_window.inc();
            }
            Outcome::Invalid => {
                m.events_invalid.inc();
            }
        }
    }

    /// What to do with a mapped event whose customer is known.
    fn decide(
        &self,
        event: &Event,
        seq: u64,
        forward: &stripe_meter::Forward,
        stripe_customer_id: &str,
    ) -> Decision {
        match stripe_meter::window(event.time, self.now()) {
            Window::Inside => {}
            Window::TooNew => return Decision::Later,
            Window::TooOld => {
                let note = format!(
                    "event {seq} (`{}` of `{}`) at {}: outside Stripe's meter event window \
                     (more than 35 days old)",
                    event.id.as_str(),
                    event.subject.as_str(),
                    event.time.to_rfc3339()
                );
                tracing::warn!("{note}");
                return Decision::PassOver(Outcome::OutOfWindow, note);
            }
        }
        match MeterEvent::new(event, dedup::identity(event), forward, stripe_customer_id) {
            Ok(meter) => Decision::Send(meter),
            Err(e) => {
                let note = format!(
                    "event {seq} (`{}` of `{}`): {}: {e}",
                    event.id.as_str(),
                    event.subject.as_str(),
                    e.code()
                );
                tracing::warn!("{note}");
                Decision::PassOver(Outcome::Invalid, note)
            }
        }
    }

    /// The log after the cursor: one [`Advance`] per mapped event (covering the unmapped ones
    /// before it), and one for a trailing run of unmapped events.
    async fn log(&self, after_seq: u64) -> Result<bool, Failure> {
        let page = self
            .db(move |st, _| {
                st.engine
                    .events_after(after_seq, SCAN_EVENTS_MAX)
                    .map_err(|e| e.to_string())
            })
            .await?;
        let metrics = Arc::clone(self.state.engine.metrics());
        let m = &metrics.stripe_meters;
        m.lag_events
            .set(gauge(page.last_seq.saturating_sub(after_seq)));
        let mut from = after_seq;
        let mut skipped = 0u64;
        let mut customers: HashMap<String, String> = HashMap::new();
        for logged in &page.events {
            let event = parse(logged)?;
            let Some(forward) = self.config.mapping.forward(event.event_type.as_str()) else {
                skipped += 1;
                continue;
            };
            let subject = event.subject.as_str().to_owned();
            let known = match customers.get(&subject) {
                Some(id) => Some(id.clone()),
                None => {
                    let key = subject.clone();
                    let found = self
                        .db(move |st, _| {
                            st.providers
                                .object(Provider::Stripe, "customer", &key)
                                .map(|o| o.map(|o| o.provider_id))
                                .map_err(|e| e.to_string())
                        })
                        .await?;
                    if let Some(id) = &found {
                        customers.insert(subject.clone(), id.clone());
                    }
                    found
                }
            };
            let mut step = Advance {
                from,
                to: logged.seq,
                skipped,
                ..Advance::default()
            };
            match known {
                None => {
                    tracing::debug!(seq = logged.seq, customer = %subject,
                        "parked: the customer has no Stripe id yet");
                    step.park = Some(Parked {
                        seq: logged.seq,
                        customer: subject,
                        time: event.time,
                    });
                }
                Some(cus) => match self.decide(&event, logged.seq, forward, &cus) {
                    Decision::Send(meter) => {
                        let outcome = self.send(&meter).await?;
                        self.fault("stripe-meter-event");
                        step.last = Some(outcome);
                    }
                    Decision::PassOver(outcome, note) => {
                        step.last = Some(outcome);
                        step.note = Some(note);
                    }
                    Decision::Later => {
                        // Ahead of Stripe's 5-minute allowance: move over what came before it
                        // and wait.
                        if logged.seq > from + 1 {
                            self.advance(Advance {
                                from,
                                to: logged.seq - 1,
                                skipped,
                                ..Advance::default()
                            })
                            .await?;
                            m.events_skipped.inc_by(skipped);
                        }
                        return Ok(true);
                    }
                },
            }
            let last = step.last;
            self.advance(step).await?;
            m.events_skipped.inc_by(skipped);
            if let Some(outcome) = last {
                self.count(outcome);
            }
            from = logged.seq;
            skipped = 0;
        }
        let last_seq = page.events.last().map_or(from, |e| e.seq);
        if last_seq > from {
            self.advance(Advance {
                from,
                to: last_seq,
                skipped,
                ..Advance::default()
            })
            .await?;
            m.events_skipped.inc_by(skipped);
            from = last_seq;
        }
        m.cursor_seq.set(gauge(from));
        Ok(from != after_seq)
    }

    async fn advance(&self, step: Advance) -> Result<(), Failure> {
        let now = self.now();
        self.db(move |_, s| s.advance(&step, now).map(|_| ()).map_err(|e| e.to_string()))
            .await
    }

    /// Sends one meter event: acknowledged (`duplicate`: Stripe already held its identifier)
    /// or a failure.
    async fn send(&self, meter: &MeterEvent) -> Result<Outcome, Failure> {
        let resp = self
            .client
            .post(&self.url)
            .bearer_auth(&self.config.secret_key)
            .header("Idempotency-Key", &meter.idempotency_key)
            .form(&meter.form())
            .send()
            .await
            .map_err(|e| Failure {
                http_status: None,
                message: describe(&e),
                retryable: true,
                code: STOP_REJECTED,
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(Outcome::Forwarded { duplicate: false });
        }
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| text.chars().take(300).collect());
        if stripe_meter::is_duplicate(status, &message, &meter.identifier) {
            tracing::debug!(identifier = %meter.identifier, "Stripe already holds this meter event");
            return Ok(Outcome::Forwarded { duplicate: true });
        }
        Err(Failure {
            http_status: Some(status),
            message: format!(
                "Stripe answered {status} to meter event {} ({}): {message}",
                meter.identifier, meter.event_name
            ),
            retryable: provider::retryable(Some(status)),
            code: if status == 401 || status == 403 {
                STOP_UNAUTHORIZED
            } else {
                STOP_REJECTED
            },
        })
    }
}

/// What becomes of a mapped event whose customer is known.
enum Decision {
    /// Send it.
    Send(MeterEvent),
    /// Pass it over and count it, with why.
    PassOver(Outcome, String),
    /// Not yet (ahead of Stripe's allowance for the future).
    Later,
}

fn parse(logged: &LoggedEvent) -> Result<Event, Failure> {
    Event::parse(&logged.raw, logged.time).map_err(|e| Failure {
        http_status: None,
        message: format!("stored event {} cannot be read: {e}", logged.seq),
        retryable: false,
        code: STOP_EVENT_UNREADABLE,
    })
}

/// A short, stable description of a request that got no answer.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
