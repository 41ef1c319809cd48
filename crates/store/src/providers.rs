//! Payment providers in the database: the outbox of outgoing calls, each call's steps, the
//! attempt log, the map of Tollgate objects to the provider's, and the webhook events seen.
//!
//! Owns: `provider_calls` (the outbox: one row per (provider, kind, object, version), written by
//! [`enqueue`] inside the transaction of the change that needs it), `provider_call_steps` (the
//! intent of each request, written before it is sent, and its outcome, the provider's id,
//! written after), `provider_call_attempts` (the log), `provider_objects` (Tollgate key →
//! provider id, and for invoices what the provider says was due, paid, refunded, disputed:
//! the record reconciliation compares against) and `provider_events` (webhook event ids, so a
//! replayed event changes nothing). Does not own: HTTP (the worker in the binary), what an event
//! means (`tollgate_core::provider`), invoice status rules (`BillingStore`, which applies events
//! in its own transaction with [`record_event`] and [`payment_in`]).
//!
//! Invariants: a call is `pending` until it is `done` (every step has an outcome) or `failed`
//! (refused by the provider, or out of attempts). A claim leases a call (`leased_until_ms`);
//! one process owns a data directory (`LOCK`), so [`ProviderStore::release_leases`] at start
//! frees leases of a process that died. A step whose intent is recorded without an outcome may
//! have reached the provider: the worker looks the object up (by its Tollgate metadata) before
//! sending it again, and sends it with the same idempotency key, so a crash between the call
//! and its record never creates a second provider object.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tollgate_core::provider::{CallKind, PaymentRecord, PaymentState, Provider};
use tollgate_core::time::UnixMs;

use crate::StoreError;
use crate::keys::random_hex;
pub use crate::outbox::Outcome;
use crate::outbox::{OutboxDb, Signal, truncate_error};

/// Most rows one list call returns.
pub const PROVIDER_LIST_LIMIT_MAX: usize = 1_000;
/// The longest the worker sleeps without a [`wake`] (ms).
pub const POLL_MS: i64 = 1_000;

static SIGNAL: Signal = Signal::new();

/// Tells the provider worker that calls were committed.
pub fn wake() {
    SIGNAL.wake();
}

/// Resolves when [`wake`] was called.
pub async fn woken() {
    SIGNAL.woken().await;
}

/// [`wake`]s the worker if a call was enqueued since the last call of this (writers call it
/// after every commit).
pub fn wake_if_enqueued() {
    SIGNAL.wake_if_enqueued();
}

static SYNC_STRIPE: AtomicBool = AtomicBool::new(false);
static SYNC_ORB: AtomicBool = AtomicBool::new(false);

/// Turns syncing to a provider on (the server does when Stripe or Orb is configured): from
/// then on, creating or changing a customer enqueues a call for each such provider, and (Stripe
/// only) finalizing an invoice enqueues its push, in the same transaction. Process-wide, like
/// the workers it feeds (one process owns a data directory).
pub fn enable_sync(provider: Provider) {
    match provider {
        Provider::Stripe => SYNC_STRIPE.store(true, Ordering::Relaxed),
        Provider::Orb => SYNC_ORB.store(true, Ordering::Relaxed),
    }
}

/// The provider finalized invoices are pushed to, if any (Stripe: Orb prices usage itself, so
/// Tollgate's invoices are not pushed there).
pub fn sync_target() -> Option<Provider> {
    SYNC_STRIPE
        .load(Ordering::Relaxed)
        .then_some(Provider::Stripe)
}

/// The providers customers are synced to.
pub fn customer_sync_targets() -> impl Iterator<Item = Provider> {
    [
        (Provider::Stripe, SYNC_STRIPE.load(Ordering::Relaxed)),
        (Provider::Orb, SYNC_ORB.load(Ordering::Relaxed)),
    ]
    .into_iter()
    .filter_map(|(p, on)| on.then_some(p))
}

/// Writes a call to the outbox inside the caller's open transaction: `kind` for `object` at
/// `version`. The same (provider, kind, object, version) is enqueued once; enqueuing it again
/// changes nothing (so a backfill or a repeated change is harmless).
pub fn enqueue(
    tx: &Transaction<'_>,
    provider: Provider,
    kind: CallKind,
    object: &str,
    version: i64,
    now: UnixMs,
) -> Result<(), StoreError> {
    let n = tx
        .prepare_cached(
            "INSERT INTO provider_calls (id, provider, kind, object_id, version, status, attempts,
                next_attempt_ms, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6)
             ON CONFLICT (provider, kind, object_id, version) DO NOTHING",
        )?
        .execute(params![
            format!("pc_{}", random_hex(8)),
            provider.as_str(),
            kind.as_str(),
            object,
            version,
            now.0
        ])?;
    if n > 0 {
        SIGNAL.enqueued();
    }
    Ok(())
}

/// The status of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallStatus {
    /// Waiting for its next attempt.
    Pending,
    /// Every step has its outcome.
    Done,
    /// Refused by the provider, or out of attempts.
    Failed,
}

impl CallStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Pending => "pending",
            CallStatus::Done => "done",
            CallStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<CallStatus, StoreError> {
        match s {
            "pending" => Ok(CallStatus::Pending),
            "done" => Ok(CallStatus::Done),
            "failed" => Ok(CallStatus::Failed),
            _ => Err(StoreError::Corrupt(format!("provider call status {s}"))),
        }
    }
}

/// A call in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// `pc_…`.
    pub id: String,
    /// To whom.
    pub provider: Provider,
    /// What.
    pub kind: CallKind,
    /// The Tollgate object (customer key, invoice id).
    pub object_id: String,
    /// Its version (part of every idempotency key).
    pub version: i64,
    /// Status.
    pub status: CallStatus,
    /// Attempts so far, counting one that is running (a claim counts it).
    pub attempts: u32,
    /// When it is due.
    pub next_attempt_ms: UnixMs,
    /// The last failure.
    pub last_error: Option<String>,
    /// Enqueued.
    pub created_ms: UnixMs,
    /// Done (every step has its outcome).
    pub done_ms: Option<UnixMs>,
}

const CALL_COLUMNS: &str = "id, provider, kind, object_id, version, status, attempts, next_attempt_ms, last_error, created_ms, done_ms";

fn call_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Call, String, String, String)> {
    Ok((
        Call {
            id: r.get(0)?,
            provider: Provider::Stripe,
            kind: CallKind::SyncCustomer,
            object_id: r.get(3)?,
            version: r.get(4)?,
            status: CallStatus::Pending,
            attempts: r.get(6)?,
            next_attempt_ms: UnixMs(r.get(7)?),
            last_error: r.get(8)?,
            created_ms: UnixMs(r.get(9)?),
            done_ms: r.get::<_, Option<i64>>(10)?.map(UnixMs),
        },
        r.get(1)?,
        r.get(2)?,
        r.get(5)?,
    ))
}

fn decode_call(
    (mut call, provider, kind, status): (Call, String, String, String),
) -> Result<Call, StoreError> {
    call.provider = Provider::parse(&provider)
        .ok_or_else(|| StoreError::Corrupt(format!("provider {provider}")))?;
    call.kind = CallKind::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("provider call kind {kind}")))?;
    call.status = CallStatus::parse(&status)?;
    Ok(call)
}

/// A step of a call as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepRecord {
    /// Never sent.
    NotSent,
    /// Sent (its intent is recorded) but its outcome is not: it may have reached the provider.
    Unknown,
    /// Done: the provider's id of what it created or changed.
    Done(String),
}

/// One attempt of a call, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// When it started.
    pub at: UnixMs,
    /// How long it took (ms).
    pub duration_ms: i64,
    /// The step that ended it (the failing one, or the last).
    pub step: Option<String>,
    /// The provider's last answer.
    pub http_status: Option<u16>,
    /// Why it failed (`None`: it succeeded).
    pub error: Option<String>,
}

/// A provider object Tollgate created or maps to, with its payment record for invoices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderObject {
    /// Whose.
    pub provider: Provider,
    /// `customer` or `invoice`.
    pub kind: String,
    /// The Tollgate key (customer key, invoice id).
    pub tollgate_key: String,
    /// The provider's id (`cus_…`, `in_…`).
    pub provider_id: String,
    /// The provider's customer id (for invoices).
    pub customer_provider_id: Option<String>,
    /// The payment record (invoices; zeros for customers).
    pub payment: PaymentRecord,
    /// First recorded.
    pub created_ms: UnixMs,
    /// Last changed.
    pub updated_ms: UnixMs,
}

const OBJECT_COLUMNS: &str = "provider, kind, tollgate_key, provider_id, customer_provider_id, state, amount_due_minor, amount_paid_minor, amount_refunded_minor, amount_disputed_minor, failed_attempts, charge_id, created_ms, updated_ms";

fn object_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ProviderObject, String, Option<String>)> {
    Ok((
        ProviderObject {
            provider: Provider::Stripe,
            kind: r.get(1)?,
            tollgate_key: r.get(2)?,
            provider_id: r.get(3)?,
            customer_provider_id: r.get(4)?,
            payment: PaymentRecord {
                state: PaymentState::Open,
                amount_due_minor: r.get(6)?,
                amount_paid_minor: r.get(7)?,
                amount_refunded_minor: r.get(8)?,
                amount_disputed_minor: r.get(9)?,
                failed_attempts: r.get(10)?,
                charge_id: r.get(11)?,
            },
            created_ms: UnixMs(r.get(12)?),
            updated_ms: UnixMs(r.get(13)?),
        },
        r.get(0)?,
        r.get(5)?,
    ))
}

fn decode_object(
    (mut o, provider, state): (ProviderObject, String, Option<String>),
) -> Result<ProviderObject, StoreError> {
    o.provider = Provider::parse(&provider)
        .ok_or_else(|| StoreError::Corrupt(format!("provider {provider}")))?;
    if let Some(s) = state {
        o.payment.state = PaymentState::parse(&s)
            .ok_or_else(|| StoreError::Corrupt(format!("payment state {s}")))?;
    }
    Ok(o)
}

/// The object of `kind` mapped to `tollgate_key`, on any connection.
pub fn object_in(
    c: &Connection,
    provider: Provider,
    kind: &str,
    tollgate_key: &str,
) -> Result<Option<ProviderObject>, StoreError> {
    let row = c
        .prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS} FROM provider_objects
             WHERE provider = ?1 AND kind = ?2 AND tollgate_key = ?3"
        ))?
        .query_row(params![provider.as_str(), kind, tollgate_key], object_row)
        .optional()?;
    row.map(decode_object).transpose()
}

/// The invoice object whose provider id is `provider_id`, or whose charge is `charge`.
pub fn invoice_object_by(
    c: &Connection,
    provider: Provider,
    provider_id: Option<&str>,
    charge: Option<&str>,
) -> Result<Option<ProviderObject>, StoreError> {
    let row = c
        .prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS} FROM provider_objects
             WHERE provider = ?1 AND kind = 'invoice'
               AND ((?2 IS NOT NULL AND provider_id = ?2) OR (?3 IS NOT NULL AND charge_id = ?3))
             LIMIT 1"
        ))?
        .query_row(params![provider.as_str(), provider_id, charge], object_row)
        .optional()?;
    row.map(decode_object).transpose()
}

/// Records (or replaces the provider id of) an object's mapping; keeps its payment record.
#[allow(clippy::too_many_arguments)]
pub fn put_object(
    c: &Connection,
    provider: Provider,
    kind: &str,
    tollgate_key: &str,
    provider_id: &str,
    customer_provider_id: Option<&str>,
    amount_due_minor: i64,
    now: UnixMs,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO provider_objects (provider, kind, tollgate_key, provider_id,
            customer_provider_id, state, amount_due_minor, created_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?2 = 'invoice' THEN 'open' END, ?6, ?7, ?7)
         ON CONFLICT (provider, kind, tollgate_key) DO UPDATE SET
            provider_id = excluded.provider_id,
            customer_provider_id = excluded.customer_provider_id,
            amount_due_minor = excluded.amount_due_minor,
            updated_ms = excluded.updated_ms",
    )?
    .execute(params![
        provider.as_str(),
        kind,
        tollgate_key,
        provider_id,
        customer_provider_id,
        amount_due_minor,
        now.0
    ])?;
    Ok(())
}

/// Replaces an invoice object's payment record (the caller applied an event to it).
pub fn set_payment(
    c: &Connection,
    provider: Provider,
    invoice: &str,
    payment: &PaymentRecord,
    now: UnixMs,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE provider_objects SET state = ?3, amount_paid_minor = ?4,
            amount_refunded_minor = ?5, amount_disputed_minor = ?6, failed_attempts = ?7,
            charge_id = ?8, updated_ms = ?9
         WHERE provider = ?1 AND kind = 'invoice' AND tollgate_key = ?2",
    )?
    .execute(params![
        provider.as_str(),
        invoice,
        payment.state.as_str(),
        payment.amount_paid_minor,
        payment.amount_refunded_minor,
        payment.amount_disputed_minor,
        payment.failed_attempts,
        payment.charge_id,
        now.0
    ])?;
    Ok(())
}

/// Records a webhook event id inside the caller's transaction. `false`: it was recorded
/// before (a replay), and the caller must change nothing.
pub fn record_event(
    tx: &Transaction<'_>,
    provider: Provider,
    event_id: &str,
    event_type: &str,
    outcome: &str,
    tollgate_invoice: Option<&str>,
    now: UnixMs,
) -> Result<bool, StoreError> {
    let n = tx
        .prepare_cached(
            "INSERT INTO provider_events (provider, event_id, type, received_ms, outcome,
                tollgate_invoice)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (provider, event_id) DO NOTHING",
        )?
        .execute(params![
            provider.as_str(),
            event_id,
            event_type,
            now.0,
            outcome,
            tollgate_invoice
        ])?;
    Ok(n == 1)
}

/// The outcome recorded for an event processed before.
pub fn event_outcome(
    c: &Connection,
    provider: Provider,
    event_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT outcome FROM provider_events WHERE provider = ?1 AND event_id = ?2",
    )?
    .query_row(params![provider.as_str(), event_id], |r| r.get(0))
    .optional()?)
}

/// Records, in the caller's transaction, that a step is about to be sent with
/// `idempotency_key` (before the request).
pub fn step_intent_in(
    tx: &Connection,
    call_id: &str,
    step: &str,
    idempotency_key: &str,
    now: UnixMs,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO provider_call_steps (call_id, step, idempotency_key, sent_ms)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (call_id, step) DO UPDATE SET sent_ms = excluded.sent_ms",
    )?
    .execute(params![call_id, step, idempotency_key, now.0])?;
    Ok(())
}

/// Records, in the caller's transaction, a step's outcome: the provider's id.
pub fn step_done_in(
    tx: &Connection,
    call_id: &str,
    step: &str,
    provider_id: &str,
    now: UnixMs,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE provider_call_steps SET provider_id = ?3, done_ms = ?4
         WHERE call_id = ?1 AND step = ?2",
    )?
    .execute(params![call_id, step, provider_id, now.0])?;
    Ok(())
}

/// Filters of a call listing.
#[derive(Clone, Debug, Default)]
pub struct CallFilter {
    /// Only calls for this object.
    pub object_id: Option<String>,
    /// Only with this status.
    pub status: Option<CallStatus>,
    /// At most this many (newest first).
    pub limit: usize,
}

/// Access to the provider tables of a data directory (its own connection).
pub struct ProviderStore {
    db: OutboxDb,
}

impl ProviderStore {
    /// Opens the provider tables of a data directory.
    pub fn open(dir: &Path) -> Result<ProviderStore, StoreError> {
        Ok(ProviderStore {
            db: OutboxDb::open(dir, &SIGNAL)?,
        })
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.db.write(f)
    }

    /// Frees every lease: the process that held them is gone (one process owns a data
    /// directory). Call once at start, before the worker runs.
    pub fn release_leases(&self) -> Result<usize, StoreError> {
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE provider_calls SET leased_until_ms = NULL WHERE leased_until_ms IS NOT NULL",
                [],
            )?)
        })
    }

    /// Enqueues a sync of every customer and a push of every finalized or paid invoice that
    /// has no call yet (for a data directory that existed before the provider was configured).
    /// Returns how many calls were enqueued.
    pub fn backfill(&self, provider: Provider, now: UnixMs) -> Result<usize, StoreError> {
        self.write(|tx| {
            let mut n = tx.execute(
                "INSERT INTO provider_calls (id, provider, kind, object_id, version, status,
                    attempts, next_attempt_ms, created_ms, updated_ms)
                 SELECT 'pc_' || lower(hex(randomblob(8))), ?1, 'sync_customer', c.key,
                    c.updated_ms, 'pending', 0, ?2, ?2, ?2
                 FROM customers c
                 WHERE NOT EXISTS (SELECT 1 FROM provider_calls p WHERE p.provider = ?1
                    AND p.kind = 'sync_customer' AND p.object_id = c.key)
                 ORDER BY c.key",
                params![provider.as_str(), now.0],
            )?;
            // Invoices are pushed to Stripe only (Orb prices usage itself).
            n += if provider != Provider::Stripe {
                0
            } else {
                tx.execute(
                    "INSERT INTO provider_calls (id, provider, kind, object_id, version, status,
                    attempts, next_attempt_ms, created_ms, updated_ms)
                 SELECT 'pc_' || lower(hex(randomblob(8))), ?1, 'push_invoice', i.id, 1,
                    'pending', 0, ?2, ?2, ?2
                 FROM invoices i
                 WHERE i.status IN ('finalized', 'paid') AND NOT EXISTS (SELECT 1 FROM
                    provider_calls p WHERE p.provider = ?1 AND p.kind = 'push_invoice'
                    AND p.object_id = i.id)
                 ORDER BY i.finalized_ms, i.id",
                    params![provider.as_str(), now.0],
                )?
            };
            if n > 0 {
                SIGNAL.enqueued();
            }
            Ok(n)
        })
    }

    /// Claims the oldest due call: counts the attempt and leases it until `now + lease_ms`.
    /// Also returns when the next pending call falls due (to sleep until then).
    pub fn claim(
        &self,
        now: UnixMs,
        lease_ms: i64,
    ) -> Result<(Option<Call>, Option<UnixMs>), StoreError> {
        self.claim_of(None, now, lease_ms)
    }

    /// [`ProviderStore::claim`] for the calls of one provider (each provider's worker claims
    /// its own).
    pub fn claim_for(
        &self,
        provider: Provider,
        now: UnixMs,
        lease_ms: i64,
    ) -> Result<(Option<Call>, Option<UnixMs>), StoreError> {
        self.claim_of(Some(provider), now, lease_ms)
    }

    fn claim_of(
        &self,
        provider: Option<Provider>,
        now: UnixMs,
        lease_ms: i64,
    ) -> Result<(Option<Call>, Option<UnixMs>), StoreError> {
        let provider = provider.map(Provider::as_str);
        self.write(|tx| {
            let row = tx
                .prepare_cached(&format!(
                    "SELECT {CALL_COLUMNS} FROM provider_calls
                     WHERE status = 'pending' AND next_attempt_ms <= ?1
                       AND (leased_until_ms IS NULL OR leased_until_ms <= ?1)
                       AND (?2 IS NULL OR provider = ?2)
                     ORDER BY next_attempt_ms, created_ms, id LIMIT 1"
                ))?
                .query_row(params![now.0, provider], call_row)
                .optional()?;
            let call = match row {
                Some(r) => {
                    let mut call = decode_call(r)?;
                    call.attempts = call.attempts.saturating_add(1);
                    tx.execute(
                        "UPDATE provider_calls SET attempts = ?2, leased_until_ms = ?3,
                            updated_ms = ?4 WHERE id = ?1",
                        params![
                            call.id,
                            call.attempts,
                            now.0.saturating_add(lease_ms),
                            now.0
                        ],
                    )?;
                    Some(call)
                }
                None => None,
            };
            let next: Option<i64> = tx.query_row(
                "SELECT MIN(max(next_attempt_ms, coalesce(leased_until_ms, 0)))
                 FROM provider_calls WHERE status = 'pending' AND (?1 IS NULL OR provider = ?1)",
                params![provider],
                |r| r.get(0),
            )?;
            Ok((call, next.map(UnixMs)))
        })
    }

    /// How a step of a call stands.
    pub fn step(&self, call_id: &str, step: &str) -> Result<StepRecord, StoreError> {
        let conn = self.db.lock();
        let row: Option<Option<String>> = conn
            .prepare_cached(
                "SELECT provider_id FROM provider_call_steps WHERE call_id = ?1 AND step = ?2",
            )?
            .query_row(params![call_id, step], |r| r.get(0))
            .optional()?;
        Ok(match row {
            None => StepRecord::NotSent,
            Some(None) => StepRecord::Unknown,
            Some(Some(id)) => StepRecord::Done(id),
        })
    }

    /// Whether any call left the step named `step` sent without an outcome (steps shared
    /// between calls, such as creating a customer, are named after their object).
    pub fn step_unknown_anywhere(&self, step: &str) -> Result<bool, StoreError> {
        let conn = self.db.lock();
        Ok(conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM provider_call_steps
                 WHERE step = ?1 AND provider_id IS NULL)",
            )?
            .query_row(params![step], |r| r.get(0))?)
    }

    /// Records that a step is about to be sent with `idempotency_key` (before the request).
    pub fn step_intent(
        &self,
        call_id: &str,
        step: &str,
        idempotency_key: &str,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        self.write(|tx| step_intent_in(tx, call_id, step, idempotency_key, now))
    }

    /// Records a step's outcome, and with it the object mapping it produced (if any), in one
    /// transaction.
    pub fn step_done(
        &self,
        call_id: &str,
        step: &str,
        provider_id: &str,
        object: Option<(&str, &str, Option<&str>, i64)>,
        provider: Provider,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            step_done_in(tx, call_id, step, provider_id, now)?;
            if let Some((kind, key, customer, due)) = object {
                put_object(tx, provider, kind, key, provider_id, customer, due, now)?;
            }
            Ok(())
        })
    }

    /// Records an attempt and what follows it; frees the lease.
    pub fn record_attempt(
        &self,
        call_id: &str,
        attempt: &Attempt,
        outcome: Outcome,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let error = attempt.error.as_deref().map(truncate_error);
            tx.execute(
                "INSERT INTO provider_call_attempts (call_id, at_ms, duration_ms, step,
                    http_status, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    call_id,
                    attempt.at.0,
                    attempt.duration_ms,
                    attempt.step,
                    attempt.http_status,
                    error
                ],
            )?;
            let row = outcome.row_state("done", now);
            tx.execute(
                "UPDATE provider_calls SET status = ?2, next_attempt_ms = ?3, done_ms = ?4,
                    leased_until_ms = NULL, last_error = coalesce(?5, last_error),
                    updated_ms = ?6 WHERE id = ?1",
                params![
                    call_id,
                    row.status,
                    row.next_attempt_ms,
                    row.done_ms,
                    error,
                    now.0
                ],
            )?;
            Ok(())
        })
    }

    /// Puts a failed call back in the queue (an operator fixed what made it fail): pending,
    /// attempts from zero, due now. Its recorded steps stand, so it resumes after the last
    /// one done, and a step sent without an outcome is looked up before it is sent again.
    /// `None`: no such call; `Some(false)`: it is not failed.
    pub fn retry_call(&self, id: &str, now: UnixMs) -> Result<Option<bool>, StoreError> {
        self.write(|tx| {
            let status: Option<String> = tx
                .prepare_cached("SELECT status FROM provider_calls WHERE id = ?1")?
                .query_row(params![id], |r| r.get(0))
                .optional()?;
            match status.as_deref() {
                None => Ok(None),
                Some("failed") => {
                    tx.execute(
                        "UPDATE provider_calls SET status = 'pending', attempts = 0,
                            next_attempt_ms = ?2, leased_until_ms = NULL, updated_ms = ?2
                         WHERE id = ?1",
                        params![id, now.0],
                    )?;
                    SIGNAL.enqueued();
                    Ok(Some(true))
                }
                Some(_) => Ok(Some(false)),
            }
        })
    }

    /// Calls, newest first.
    pub fn calls(&self, filter: &CallFilter) -> Result<Vec<Call>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {CALL_COLUMNS} FROM provider_calls
             WHERE (?1 IS NULL OR object_id = ?1) AND (?2 IS NULL OR status = ?2)
             ORDER BY created_ms DESC, id DESC LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(
                params![
                    filter.object_id,
                    filter.status.map(CallStatus::as_str),
                    filter.limit.min(PROVIDER_LIST_LIMIT_MAX) as i64
                ],
                call_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(decode_call).collect()
    }

    /// The attempts of a call, oldest first.
    pub fn attempts(&self, call_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare(
            "SELECT at_ms, duration_ms, step, http_status, error FROM provider_call_attempts
             WHERE call_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(params![call_id], |r| {
                Ok(Attempt {
                    at: UnixMs(r.get(0)?),
                    duration_ms: r.get(1)?,
                    step: r.get(2)?,
                    http_status: r.get(3)?,
                    error: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// An object's mapping.
    pub fn object(
        &self,
        provider: Provider,
        kind: &str,
        tollgate_key: &str,
    ) -> Result<Option<ProviderObject>, StoreError> {
        object_in(&self.db.lock(), provider, kind, tollgate_key)
    }

    /// Objects of one kind (or all), by Tollgate key.
    pub fn objects(
        &self,
        provider: Provider,
        kind: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ProviderObject>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {OBJECT_COLUMNS} FROM provider_objects
             WHERE provider = ?1 AND (?2 IS NULL OR kind = ?2)
             ORDER BY kind, tollgate_key LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(
                params![
                    provider.as_str(),
                    kind,
                    limit.min(PROVIDER_LIST_LIMIT_MAX) as i64
                ],
                object_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(decode_object).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-providers-{name}-{}-{}",
            std::process::id(),
            random_hex(4)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn enqueue_once_claim_lease_release_and_steps() {
        let dir = temp_dir("outbox");
        let store = ProviderStore::open(&dir).unwrap();
        for _ in 0..2 {
            store
                .write(|tx| {
                    enqueue(
                        tx,
                        Provider::Stripe,
                        CallKind::SyncCustomer,
                        "acme",
                        7,
                        UnixMs(1),
                    )
                })
                .unwrap();
        }
        assert_eq!(
            store
                .calls(&CallFilter {
                    limit: 10,
                    ..Default::default()
                })
                .unwrap()
                .len(),
            1
        );
        let (call, _) = store.claim(UnixMs(10), 1_000).unwrap();
        let call = call.unwrap();
        assert_eq!((call.attempts, call.version), (1, 7));
        assert!(
            store.claim(UnixMs(20), 1_000).unwrap().0.is_none(),
            "leased"
        );
        assert_eq!(store.release_leases().unwrap(), 1);
        let again = store.claim(UnixMs(30), 1_000).unwrap().0.unwrap();
        assert_eq!(again.attempts, 2);
        assert_eq!(store.step(&call.id, "create").unwrap(), StepRecord::NotSent);
        store
            .step_intent(&call.id, "create", "k", UnixMs(31))
            .unwrap();
        assert_eq!(store.step(&call.id, "create").unwrap(), StepRecord::Unknown);
        store
            .step_done(
                &call.id,
                "create",
                "cus_1",
                Some(("customer", "acme", None, 0)),
                Provider::Stripe,
                UnixMs(32),
            )
            .unwrap();
        assert_eq!(
            store.step(&call.id, "create").unwrap(),
            StepRecord::Done("cus_1".into())
        );
        assert_eq!(
            store
                .object(Provider::Stripe, "customer", "acme")
                .unwrap()
                .unwrap()
                .provider_id,
            "cus_1"
        );
        let attempt = Attempt {
            at: UnixMs(30),
            duration_ms: 2,
            step: None,
            http_status: Some(200),
            error: None,
        };
        store
            .record_attempt(&call.id, &attempt, Outcome::Done, UnixMs(33))
            .unwrap();
        let (none, next) = store.claim(UnixMs(40), 1_000).unwrap();
        assert!(none.is_none() && next.is_none());
        assert_eq!(store.attempts(&call.id).unwrap().len(), 1);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn backfill_enqueues_each_unsynced_customer_once() {
        let dir = temp_dir("backfill");
        let store = ProviderStore::open(&dir).unwrap();
        store
            .write(|tx| {
                for key in ["a", "b"] {
                    tx.execute(
                        "INSERT INTO customers (key, doc, created_ms, updated_ms)
                         VALUES (?1, '{}', 5, 9)",
                        params![key],
                    )?;
                }
                enqueue(
                    tx,
                    Provider::Stripe,
                    CallKind::SyncCustomer,
                    "a",
                    5,
                    UnixMs(5),
                )
            })
            .unwrap();
        assert_eq!(store.backfill(Provider::Stripe, UnixMs(10)).unwrap(), 1);
        assert_eq!(store.backfill(Provider::Stripe, UnixMs(11)).unwrap(), 0);
        let calls = store
            .calls(&CallFilter {
                object_id: Some("b".into()),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!((calls.len(), calls[0].version), (1, 9));
        std::fs::remove_dir_all(dir).ok();
    }
}
