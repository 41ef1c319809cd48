//! Webhooks in the database: endpoints, the outbox of messages, deliveries and their log.
//!
//! Owns: the rows of `webhook_endpoints`, `webhook_messages` (the outbox), `webhook_deliveries`
//! (one per message × endpoint, and one more per replay) and `webhook_attempts` (every attempt,
//! the delivery log); [`enqueue`], the one way any change writes a message — inside the
//! caller's open transaction, so the message exists if and only if the change committed; the
//! claim of due deliveries with a lease; recording an attempt's outcome by the core's
//! [`RetryPolicy`]. Does not own: HTTP (the delivery worker in the binary sends), signing and
//! the retry schedule (`tollgate_core::webhook`), or deciding when an event happens.
//!
//! Invariants: a delivery is `pending` until an attempt answered 2xx (`delivered`), it ran out
//! of attempts (`failed`), or its endpoint was deleted (`skipped`). A claim never marks a
//! delivery "in flight" for good: it moves `next_attempt_ms` one lease ahead (longer than the
//! request timeout), so a delivery whose process died mid-request is due again once the lease
//! runs out — at least once, across restarts. Pending deliveries of a disabled endpoint wait
//! (they are not claimed) and resume when it is enabled again.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;
use thiserror::Error;
use tollgate_core::limits::{WEBHOOK_DESCRIPTION_BYTES_MAX, WEBHOOK_ENDPOINTS_MAX};
use tollgate_core::time::UnixMs;
use tollgate_core::webhook::{
    self, EventType, Message, MessageId, Next, RetryPolicy, WebhookError,
};

use crate::StoreError;
use crate::keys::random_hex;
use crate::outbox::{OutboxDb, Outcome, Signal, truncate_error};

/// Most rows one list call returns.
pub const WEBHOOK_LIST_LIMIT_MAX: usize = 1_000;
/// How long an old secret keeps signing beside the new one after a rotation (ms): 24 h.
pub const PREVIOUS_SECRET_MS: i64 = 24 * 3600 * 1000;

/// Why a webhook store call failed.
#[derive(Debug, Error)]
pub enum WebhookStoreError {
    /// No such endpoint.
    #[error("webhook endpoint `{0}` not found")]
    EndpointNotFound(String),
    /// No such message.
    #[error("webhook message `{0}` not found")]
    MessageNotFound(String),
    /// [`WEBHOOK_ENDPOINTS_MAX`] endpoints exist already.
    #[error("at most {WEBHOOK_ENDPOINTS_MAX} webhook endpoints")]
    TooManyEndpoints,
    /// The description is longer than [`WEBHOOK_DESCRIPTION_BYTES_MAX`].
    #[error("the description is longer than {WEBHOOK_DESCRIPTION_BYTES_MAX} bytes")]
    DescriptionTooLong,
    /// The endpoint is disabled; enable it first.
    #[error("webhook endpoint `{0}` is disabled; enable it first (PATCH enabled=true)")]
    EndpointDisabled(String),
    /// A domain rule refused the definition.
    #[error(transparent)]
    Domain(#[from] WebhookError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for WebhookStoreError {
    fn from(e: rusqlite::Error) -> Self {
        WebhookStoreError::Store(StoreError::Sqlite(e))
    }
}

impl WebhookStoreError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookStoreError::EndpointNotFound(_) => "endpoint_not_found",
            WebhookStoreError::MessageNotFound(_) => "message_not_found",
            WebhookStoreError::TooManyEndpoints => "webhook_endpoints_max",
            WebhookStoreError::DescriptionTooLong => "webhook_description_bytes_max",
            WebhookStoreError::EndpointDisabled(_) => "endpoint_disabled",
            WebhookStoreError::Domain(e) => e.code(),
            WebhookStoreError::Store(e) => e.code(),
        }
    }
}

// ---- waking the delivery worker ----

static SIGNAL: Signal = Signal::new();

/// Tells the delivery worker that messages were committed, so it looks now rather than at its
/// next poll (at most [`POLL_MS`] later). Call it after the commit of a transaction that called
/// [`enqueue`]; calling it needlessly only costs the worker one look.
pub fn wake() {
    SIGNAL.wake();
}

/// Resolves when [`wake`] was called (since the last time this resolved).
pub async fn woken() {
    SIGNAL.woken().await;
}

/// The longest the delivery worker sleeps without a [`wake`] (ms).
pub const POLL_MS: i64 = 1_000;

// ---- the outbox ----

/// A new message of `event_type` with `data` (a JSON object) created at `now`, with a fresh
/// random id. Hand it to [`enqueue`].
pub fn message(event_type: EventType, data: &Value, now: UnixMs) -> Result<Message, WebhookError> {
    let mut bytes = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    Message::new(MessageId::from_random(bytes), event_type, now, data)
}

/// Writes `message` to the outbox inside the caller's open transaction, with one pending
/// delivery (due at once) for every enabled endpoint subscribed to its type. The message and
/// its deliveries commit or roll back with the caller's change. Call [`wake`] after the commit
/// for prompt delivery.
///
/// Works on any connection to the data directory's database (the billing store's, the webhook
/// store's); the transaction should be `IMMEDIATE` like every writer's here.
pub fn enqueue(tx: &Transaction<'_>, message: &Message, now: UnixMs) -> Result<(), StoreError> {
    let seq = insert_message(tx, message)?;
    let mut stmt = tx.prepare_cached(
        "SELECT id, event_types FROM webhook_endpoints WHERE enabled = 1 ORDER BY id",
    )?;
    let endpoints = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let name = message.event_type().as_str();
    for (endpoint, types) in endpoints {
        if decode_types(&types)?.iter().any(|t| t.as_str() == name) {
            insert_delivery(tx, seq, &endpoint, now)?;
        }
    }
    Ok(())
}

fn insert_message(tx: &Connection, message: &Message) -> Result<i64, StoreError> {
    tx.prepare_cached(
        "INSERT INTO webhook_messages (id, type, payload, created_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        message.id().as_str(),
        message.event_type().as_str(),
        message.body(),
        message.created().0
    ])?;
    Ok(tx.last_insert_rowid())
}

fn insert_delivery(
    tx: &Connection,
    message_seq: i64,
    endpoint: &str,
    now: UnixMs,
) -> Result<String, StoreError> {
    let id = format!("dlv_{}", random_hex(8));
    tx.prepare_cached(
        "INSERT INTO webhook_deliveries (id, message_seq, endpoint_id, status, attempts,
            next_attempt_ms, created_ms, updated_ms)
         VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4, ?4)",
    )?
    .execute(params![id, message_seq, endpoint, now.0])?;
    SIGNAL.enqueued();
    Ok(id)
}

/// [`wake`]s the worker if a delivery was written since the last call (writers call this after
/// every commit; a rolled-back delivery only costs one spurious look).
pub fn wake_if_enqueued() {
    SIGNAL.wake_if_enqueued();
}

fn encode_types(types: &[EventType]) -> String {
    serde_json::to_string(&types.iter().map(|t| t.as_str()).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}

fn decode_types(text: &str) -> Result<Vec<EventType>, StoreError> {
    let names: Vec<String> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("webhook event types: {e}")))?;
    names
        .iter()
        .map(|n| {
            EventType::parse(n)
                .map_err(|e| StoreError::Corrupt(format!("webhook event types: {e}")))
        })
        .collect()
}

// ---- rows ----

/// A webhook endpoint (never its secret, except in [`CreatedEndpoint`] and rotation answers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `we_…`.
    pub id: String,
    /// Where messages are POSTed.
    pub url: String,
    /// Free text.
    pub description: String,
    /// The types it receives.
    pub event_types: Vec<EventType>,
    /// Whether deliveries to it are attempted.
    pub enabled: bool,
    /// Why it was disabled (by the failure rule, or by a PATCH).
    pub disabled_reason: Option<String>,
    /// Failed attempts since its last success.
    pub consecutive_failures: u32,
    /// Until then the previous secret signs too (after a rotation).
    pub previous_secret_until: Option<UnixMs>,
    /// Created.
    pub created_ms: UnixMs,
    /// Last changed.
    pub updated_ms: UnixMs,
}

/// A new endpoint and its secret (shown once).
#[derive(Clone, Debug)]
pub struct CreatedEndpoint {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// `whsec_…`: the HMAC key of its signatures.
    pub secret: String,
}

/// What a PATCH may change.
#[derive(Clone, Debug, Default)]
pub struct EndpointPatch {
    /// A new URL (validated by the core).
    pub url: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// New event types (validated by the core).
    pub event_types: Option<Vec<EventType>>,
    /// Enable (resetting the failure run) or disable.
    pub enabled: Option<bool>,
}

/// One delivery of a message to an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// `dlv_…`.
    pub id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// `pending`, `delivered`, `failed`, `skipped`.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (pending only).
    pub next_attempt: Option<UnixMs>,
    /// HTTP status of the last attempt, if it got an answer.
    pub last_http_status: Option<u16>,
    /// Error of the last attempt, if it failed.
    pub last_error: Option<String>,
    /// Created.
    pub created_ms: UnixMs,
    /// Delivered.
    pub delivered_ms: Option<UnixMs>,
    /// Every attempt, oldest first.
    pub attempts_log: Vec<Attempt>,
}

/// One attempt of a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// When it started.
    pub at: UnixMs,
    /// How long it took (ms).
    pub duration_ms: i64,
    /// The HTTP status, if an answer came.
    pub http_status: Option<u16>,
    /// Why it failed without an answer (timeout, refused, ...), or a non-2xx summary.
    pub error: Option<String>,
}

/// A delivery handed to the worker by [`WebhookStore::claim`].
#[derive(Clone, Debug)]
pub struct Claim {
    /// The delivery.
    pub delivery_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// Its URL.
    pub url: String,
    /// The secrets to sign with: the current one, and the previous one during a rotation.
    pub secrets: Vec<String>,
    /// The message id.
    pub message_id: String,
    /// The event type's name.
    pub event_type: String,
    /// The body, byte for byte.
    pub body: String,
}

/// What [`WebhookStore::claim`] took.
#[derive(Debug)]
pub struct Claimed<P> {
    /// The leased deliveries, each with the token `accept` gave it.
    pub claims: Vec<(Claim, P)>,
    /// When the next pending delivery of an enabled endpoint falls due (possibly one just
    /// leased, at the end of its lease).
    pub next_due: Option<UnixMs>,
}

/// What recording an attempt decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// What follows for the delivery.
    pub next: Next,
    /// Whether this attempt disabled the endpoint.
    pub disabled_endpoint: bool,
}

/// Filters of a message listing.
#[derive(Clone, Debug, Default)]
pub struct MessageFilter {
    /// Only this type.
    pub event_type: Option<EventType>,
    /// Messages after this one (paging, oldest first).
    pub after: Option<String>,
    /// At most this many.
    pub limit: usize,
}

// ---- the store ----

/// Access to the webhook tables of a data directory, with its own connection.
pub struct WebhookStore {
    db: OutboxDb,
}

const ENDPOINT_COLUMNS: &str = "id, url, description, event_types, enabled, disabled_reason,
    consecutive_failures, previous_secret_until_ms, created_ms, updated_ms";

fn endpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Endpoint, String)> {
    Ok((
        Endpoint {
            id: r.get(0)?,
            url: r.get(1)?,
            description: r.get(2)?,
            event_types: Vec::new(),
            enabled: r.get::<_, i64>(4)? != 0,
            disabled_reason: r.get(5)?,
            consecutive_failures: u32::try_from(r.get::<_, i64>(6)?).unwrap_or(u32::MAX),
            previous_secret_until: r.get::<_, Option<i64>>(7)?.map(UnixMs),
            created_ms: UnixMs(r.get(8)?),
            updated_ms: UnixMs(r.get(9)?),
        },
        r.get(3)?,
    ))
}

fn endpoint_in(c: &Connection, id: &str) -> Result<Endpoint, WebhookStoreError> {
    let row = c
        .query_row(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?1"),
            params![id],
            endpoint_row,
        )
        .optional()?;
    let (mut e, types) = row.ok_or_else(|| WebhookStoreError::EndpointNotFound(id.to_owned()))?;
    e.event_types = decode_types(&types)?;
    Ok(e)
}

fn new_secret() -> String {
    format!("whsec_{}", random_hex(24))
}

fn message_in(c: &Connection, id: &str) -> Result<(i64, Message), WebhookStoreError> {
    let row = c
        .query_row(
            "SELECT seq, id, type, payload, created_ms FROM webhook_messages WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )
        .optional()?;
    let row = row.ok_or_else(|| WebhookStoreError::MessageNotFound(id.to_owned()))?;
    Ok((row.0, decode_message(row.1, &row.2, row.3, row.4)?))
}

fn decode_message(
    id: String,
    event_type: &str,
    body: String,
    created_ms: i64,
) -> Result<Message, StoreError> {
    let id = MessageId::parse(&id)
        .ok_or_else(|| StoreError::Corrupt(format!("webhook message id `{id}`")))?;
    let t = EventType::parse(event_type)
        .map_err(|e| StoreError::Corrupt(format!("webhook message type: {e}")))?;
    Ok(Message::from_stored(id, t, UnixMs(created_ms), body))
}

impl WebhookStore {
    /// Opens the webhook tables of a data directory (creating the database if needed).
    pub fn open(dir: &Path) -> Result<WebhookStore, StoreError> {
        Ok(WebhookStore {
            db: OutboxDb::open(dir, &SIGNAL)?,
        })
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, WebhookStoreError>,
    ) -> Result<T, WebhookStoreError> {
        self.db.write(f)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, WebhookStoreError>,
    ) -> Result<T, WebhookStoreError> {
        f(&self.db.lock())
    }

    // ---- endpoints ----

    /// Creates an endpoint (enabled) with a new secret.
    pub fn create_endpoint(
        &self,
        url: &str,
        description: &str,
        event_types: &[EventType],
        now: UnixMs,
    ) -> Result<CreatedEndpoint, WebhookStoreError> {
        webhook::validate_url(url)?;
        if description.len() > WEBHOOK_DESCRIPTION_BYTES_MAX {
            return Err(WebhookStoreError::DescriptionTooLong);
        }
        let id = format!("we_{}", random_hex(8));
        let secret = new_secret();
        self.write(|tx| {
            let count: i64 =
                tx.query_row("SELECT COUNT(*) FROM webhook_endpoints", [], |r| r.get(0))?;
            if usize::try_from(count).unwrap_or(usize::MAX) >= WEBHOOK_ENDPOINTS_MAX {
                return Err(WebhookStoreError::TooManyEndpoints);
            }
            tx.execute(
                "INSERT INTO webhook_endpoints (id, url, description, event_types, secret,
                    enabled, consecutive_failures, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, 0, ?6, ?6)",
                params![
                    id,
                    url,
                    description,
                    encode_types(event_types),
                    secret,
                    now.0
                ],
            )?;
            Ok(CreatedEndpoint {
                endpoint: endpoint_in(tx, &id)?,
                secret: secret.clone(),
            })
        })
    }

    /// Every endpoint, by id.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, WebhookStoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY id"
            ))?;
            let rows = stmt
                .query_map([], endpoint_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(mut e, types)| {
                    e.event_types = decode_types(&types)?;
                    Ok(e)
                })
                .collect()
        })
    }

    /// One endpoint.
    pub fn endpoint(&self, id: &str) -> Result<Endpoint, WebhookStoreError> {
        self.read(|c| endpoint_in(c, id))
    }

    /// Changes an endpoint. Enabling it resets its failure run and clears `disabled_reason`;
    /// disabling it by hand records that as the reason.
    pub fn update_endpoint(
        &self,
        id: &str,
        patch: &EndpointPatch,
        now: UnixMs,
    ) -> Result<Endpoint, WebhookStoreError> {
        if let Some(url) = &patch.url {
            webhook::validate_url(url)?;
        }
        if patch
            .description
            .as_ref()
            .is_some_and(|d| d.len() > WEBHOOK_DESCRIPTION_BYTES_MAX)
        {
            return Err(WebhookStoreError::DescriptionTooLong);
        }
        self.write(|tx| {
            let current = endpoint_in(tx, id)?;
            if let Some(url) = &patch.url {
                tx.execute(
                    "UPDATE webhook_endpoints SET url = ?2 WHERE id = ?1",
                    params![id, url],
                )?;
            }
            if let Some(d) = &patch.description {
                tx.execute(
                    "UPDATE webhook_endpoints SET description = ?2 WHERE id = ?1",
                    params![id, d],
                )?;
            }
            if let Some(types) = &patch.event_types {
                tx.execute(
                    "UPDATE webhook_endpoints SET event_types = ?2 WHERE id = ?1",
                    params![id, encode_types(types)],
                )?;
            }
            match patch.enabled {
                Some(true) => {
                    tx.execute(
                        "UPDATE webhook_endpoints SET enabled = 1, disabled_reason = NULL,
                            consecutive_failures = 0 WHERE id = ?1",
                        params![id],
                    )?;
                    if !current.enabled {
                        // Deliveries that waited while it was disabled are due now.
                        tx.execute(
                            "UPDATE webhook_deliveries SET next_attempt_ms = ?2, updated_ms = ?2
                             WHERE endpoint_id = ?1 AND status = 'pending' AND next_attempt_ms > ?2",
                            params![id, now.0],
                        )?;
                        SIGNAL.enqueued();
                    }
                }
                Some(false) if current.enabled => {
                    tx.execute(
                        "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?2 WHERE id = ?1",
                        params![id, "disabled by request"],
                    )?;
                }
                _ => {}
            }
            tx.execute(
                "UPDATE webhook_endpoints SET updated_ms = ?2 WHERE id = ?1",
                params![id, now.0],
            )?;
            endpoint_in(tx, id)
        })
    }

    /// Deletes an endpoint; its pending deliveries become `skipped` (the log stays).
    pub fn delete_endpoint(&self, id: &str, now: UnixMs) -> Result<(), WebhookStoreError> {
        self.write(|tx| {
            endpoint_in(tx, id)?;
            tx.execute(
                "UPDATE webhook_deliveries SET status = 'skipped', last_error = 'endpoint deleted',
                    updated_ms = ?2
                 WHERE endpoint_id = ?1 AND status = 'pending'",
                params![id, now.0],
            )?;
            tx.execute("DELETE FROM webhook_endpoints WHERE id = ?1", params![id])?;
            Ok(())
        })
    }

    /// Gives an endpoint a new secret; the old one keeps signing beside it (a second `v1`) for
    /// [`PREVIOUS_SECRET_MS`], so receivers can switch without losing a message.
    pub fn rotate_secret(
        &self,
        id: &str,
        now: UnixMs,
    ) -> Result<CreatedEndpoint, WebhookStoreError> {
        let secret = new_secret();
        self.write(|tx| {
            endpoint_in(tx, id)?;
            tx.execute(
                "UPDATE webhook_endpoints SET previous_secret = secret,
                    previous_secret_until_ms = ?3, secret = ?2, updated_ms = ?4 WHERE id = ?1",
                params![id, secret, now.0.saturating_add(PREVIOUS_SECRET_MS), now.0],
            )?;
            Ok(CreatedEndpoint {
                endpoint: endpoint_in(tx, id)?,
                secret: secret.clone(),
            })
        })
    }

    /// Enqueues a `webhook.test` ping to one endpoint (enabled or not: it waits while disabled).
    pub fn send_test(&self, id: &str, now: UnixMs) -> Result<Message, WebhookStoreError> {
        self.write(|tx| {
            let e = endpoint_in(tx, id)?;
            let m = message(
                EventType::WebhookTest,
                &serde_json::json!({"endpoint_id": e.id, "url": e.url}),
                now,
            )?;
            let seq = insert_message(tx, &m)?;
            insert_delivery(tx, seq, id, now)?;
            Ok(m)
        })
    }

    // ---- messages ----

    /// Messages oldest first, after `filter.after`.
    pub fn messages(&self, filter: &MessageFilter) -> Result<Vec<Message>, WebhookStoreError> {
        self.read(|c| {
            let after_seq = match &filter.after {
                Some(id) => message_in(c, id)?.0,
                None => 0,
            };
            let mut stmt = c.prepare(
                "SELECT id, type, payload, created_ms FROM webhook_messages
                 WHERE seq > ?1 AND (?2 IS NULL OR type = ?2) ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt
                .query_map(
                    params![
                        after_seq,
                        filter.event_type.map(EventType::as_str),
                        filter.limit.min(WEBHOOK_LIST_LIMIT_MAX) as i64
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(id, t, body, created)| Ok(decode_message(id, &t, body, created)?))
                .collect()
        })
    }

    /// A message with its deliveries and every attempt.
    pub fn message(&self, id: &str) -> Result<(Message, Vec<Delivery>), WebhookStoreError> {
        self.read(|c| {
            let (seq, m) = message_in(c, id)?;
            Ok((m, deliveries_in(c, seq)?))
        })
    }

    /// A new pending delivery of a message (even one delivered before): to `endpoint` when
    /// given (it must exist and be enabled), else to every enabled endpoint subscribed to its
    /// type. Returns the new deliveries.
    pub fn replay(
        &self,
        message_id: &str,
        endpoint: Option<&str>,
        now: UnixMs,
    ) -> Result<Vec<Delivery>, WebhookStoreError> {
        self.write(|tx| {
            let (seq, m) = message_in(tx, message_id)?;
            let targets: Vec<String> = match endpoint {
                Some(id) => {
                    let e = endpoint_in(tx, id)?;
                    if !e.enabled {
                        return Err(WebhookStoreError::EndpointDisabled(e.id));
                    }
                    vec![e.id]
                }
                None => {
                    let mut stmt = tx.prepare(&format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE enabled = 1 ORDER BY id"
                    ))?;
                    let rows = stmt
                        .query_map([], endpoint_row)?
                        .collect::<Result<Vec<_>, _>>()?;
                    let mut ids = Vec::new();
                    for (e, types) in rows {
                        if decode_types(&types)?.contains(&m.event_type()) {
                            ids.push(e.id);
                        }
                    }
                    ids
                }
            };
            let mut created = Vec::new();
            for target in &targets {
                created.push(insert_delivery(tx, seq, target, now)?);
            }
            let all = deliveries_in(tx, seq)?;
            Ok(all.into_iter().filter(|d| created.contains(&d.id)).collect())
        })
    }

    // ---- the worker's side ----

    /// Claims up to `limit` due deliveries of enabled endpoints, oldest due first, for which
    /// `accept` hands out a token (the worker takes a per-endpoint permit there), and leases
    /// them: their `next_attempt_ms` moves to `now + lease_ms`, so they are not claimed again
    /// meanwhile and a crash makes them due again after the lease. Also returns when the next
    /// pending delivery falls due, if any. Takes the write lock only when something is claimed.
    pub fn claim<P>(
        &self,
        now: UnixMs,
        limit: usize,
        lease_ms: i64,
        mut accept: impl FnMut(&Claim) -> Option<P>,
    ) -> Result<Claimed<P>, WebhookStoreError> {
        let candidates = self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT d.id, d.endpoint_id, e.url, e.secret, e.previous_secret,
                        e.previous_secret_until_ms, m.id, m.type, m.payload
                 FROM webhook_deliveries d
                 JOIN webhook_endpoints e ON e.id = d.endpoint_id
                 JOIN webhook_messages m ON m.seq = d.message_seq
                 WHERE d.status = 'pending' AND d.next_attempt_ms <= ?1 AND e.enabled = 1
                 ORDER BY d.next_attempt_ms, d.id LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![now.0, (limit.saturating_mul(4)) as i64], |r| {
                    let previous: Option<String> = r.get(4)?;
                    let until: Option<i64> = r.get(5)?;
                    let mut secrets = vec![r.get::<_, String>(3)?];
                    if let (Some(p), Some(u)) = (previous, until)
                        && u > now.0
                    {
                        secrets.push(p);
                    }
                    Ok(Claim {
                        delivery_id: r.get(0)?,
                        endpoint_id: r.get(1)?,
                        url: r.get(2)?,
                        secrets,
                        message_id: r.get(6)?,
                        event_type: r.get(7)?,
                        body: r.get(8)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })?;
        let mut accepted = Vec::new();
        for c in candidates {
            if accepted.len() >= limit {
                break;
            }
            if let Some(token) = accept(&c) {
                accepted.push((c, token));
            }
        }
        let claims = if accepted.is_empty() {
            accepted
        } else {
            self.write(|tx| {
                let mut leased = Vec::with_capacity(accepted.len());
                let mut stmt = tx.prepare_cached(
                    "UPDATE webhook_deliveries SET next_attempt_ms = ?2
                     WHERE id = ?1 AND status = 'pending' AND next_attempt_ms <= ?3",
                )?;
                for (c, token) in accepted {
                    let n = stmt.execute(params![
                        c.delivery_id,
                        now.0.saturating_add(lease_ms),
                        now.0
                    ])?;
                    if n == 1 {
                        leased.push((c, token));
                    }
                }
                Ok(leased)
            })?
        };
        let next_due: Option<i64> = self.read(|c| {
            Ok(c.query_row(
                "SELECT MIN(d.next_attempt_ms) FROM webhook_deliveries d
                 JOIN webhook_endpoints e ON e.id = d.endpoint_id
                 WHERE d.status = 'pending' AND e.enabled = 1",
                [],
                |r| r.get(0),
            )?)
        })?;
        Ok(Claimed {
            claims,
            next_due: next_due.map(UnixMs),
        })
    }

    /// Records one attempt of a claimed delivery and applies what `policy` decides: delivered,
    /// retry at a backed-off instant, or failed after the last attempt; the endpoint's failure
    /// run grows or resets, and it is disabled (with the reason) when the run reaches the
    /// policy's threshold. A delivery that is no longer pending (its endpoint was deleted) only
    /// gets the attempt logged.
    pub fn record_attempt(
        &self,
        delivery_id: &str,
        attempt: &Attempt,
        policy: &RetryPolicy,
        random: u64,
        now: UnixMs,
    ) -> Result<Recorded, WebhookStoreError> {
        let error = attempt.error.as_deref().map(truncate_error);
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO webhook_attempts (delivery_id, at_ms, duration_ms, http_status, error)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                delivery_id,
                attempt.at.0,
                attempt.duration_ms,
                attempt.http_status,
                error
            ])?;
            let (status, attempts, endpoint): (String, i64, String) = tx.query_row(
                "SELECT status, attempts, endpoint_id FROM webhook_deliveries WHERE id = ?1",
                params![delivery_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let attempts = u32::try_from(attempts + 1).unwrap_or(u32::MAX);
            let next = policy.next(attempt.http_status, attempts, now, random);
            if status != "pending" {
                tx.execute(
                    "UPDATE webhook_deliveries SET attempts = ?2, updated_ms = ?3 WHERE id = ?1",
                    params![delivery_id, attempts, now.0],
                )?;
                return Ok(Recorded {
                    next,
                    disabled_endpoint: false,
                });
            }
            let row = Outcome::from(next).row_state("delivered", now);
            tx.execute(
                "UPDATE webhook_deliveries SET status = ?2, attempts = ?3, next_attempt_ms = ?4,
                    last_http_status = ?5, last_error = ?6, delivered_ms = ?7, updated_ms = ?8
                 WHERE id = ?1",
                params![
                    delivery_id,
                    row.status,
                    attempts,
                    row.next_attempt_ms,
                    attempt.http_status,
                    error,
                    row.done_ms,
                    now.0
                ],
            )?;
            let mut disabled_endpoint = false;
            if next == Next::Delivered {
                tx.execute(
                    "UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = ?1",
                    params![endpoint],
                )?;
            } else {
                let run: Option<(i64, i64)> = tx
                    .query_row(
                        "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1
                         WHERE id = ?1 RETURNING consecutive_failures, enabled",
                        params![endpoint],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((run, enabled)) = run
                    && enabled != 0
                    && policy.disables(u32::try_from(run).unwrap_or(u32::MAX))
                {
                    let what = match (attempt.http_status, &error) {
                        (Some(s), _) => format!("HTTP {s}"),
                        (None, Some(e)) => e.clone(),
                        (None, None) => "no answer".into(),
                    };
                    tx.execute(
                        "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?2,
                            updated_ms = ?3 WHERE id = ?1",
                        params![
                            endpoint,
                            format!(
                                "disabled after {run} consecutive failed attempts (last: {what}) at {}",
                                now.to_rfc3339()
                            ),
                            now.0
                        ],
                    )?;
                    disabled_endpoint = true;
                }
            }
            Ok(Recorded {
                next,
                disabled_endpoint,
            })
        })
    }
}

fn deliveries_in(c: &Connection, message_seq: i64) -> Result<Vec<Delivery>, WebhookStoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, endpoint_id, status, attempts, next_attempt_ms, last_http_status, last_error,
                created_ms, delivered_ms
         FROM webhook_deliveries WHERE message_seq = ?1 ORDER BY created_ms, rowid",
    )?;
    let mut out = stmt
        .query_map(params![message_seq], |r| {
            let status: String = r.get(2)?;
            let next: i64 = r.get(4)?;
            Ok(Delivery {
                id: r.get(0)?,
                endpoint_id: r.get(1)?,
                next_attempt: (status == "pending").then_some(UnixMs(next)),
                status,
                attempts: u32::try_from(r.get::<_, i64>(3)?).unwrap_or(u32::MAX),
                last_http_status: r
                    .get::<_, Option<i64>>(5)?
                    .and_then(|s| u16::try_from(s).ok()),
                last_error: r.get(6)?,
                created_ms: UnixMs(r.get(7)?),
                delivered_ms: r.get::<_, Option<i64>>(8)?.map(UnixMs),
                attempts_log: Vec::new(),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut stmt = c.prepare_cached(
        "SELECT at_ms, duration_ms, http_status, error FROM webhook_attempts
         WHERE delivery_id = ?1 ORDER BY seq",
    )?;
    for d in &mut out {
        d.attempts_log = stmt
            .query_map(params![d.id], |r| {
                Ok(Attempt {
                    at: UnixMs(r.get(0)?),
                    duration_ms: r.get(1)?,
                    http_status: r
                        .get::<_, Option<i64>>(2)?
                        .and_then(|s| u16::try_from(s).ok()),
                    error: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;
    use tollgate_core::webhook::Backoff;

    use super::*;

    fn temp_dir(label: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-webhooks-{label}-{}-{}",
            std::process::id(),
            random_hex(6)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const T0: UnixMs = UnixMs(1_780_000_000_000);

    fn policy() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff {
                base_ms: 1_000,
                cap_ms: 4_000,
            },
            attempts_max: 3,
            disable_after_failures: 4,
        }
    }

    fn enqueue_one(store: &WebhookStore, t: EventType) -> Message {
        let m = message(t, &json!({"k": 1}), T0).unwrap();
        store.write(|tx| Ok(enqueue(tx, &m, T0)?)).unwrap();
        m
    }

    fn fail(store: &WebhookStore, id: &str, now: UnixMs) -> Recorded {
        let attempt = Attempt {
            at: now,
            duration_ms: 3,
            http_status: Some(500),
            error: None,
        };
        store
            .record_attempt(id, &attempt, &policy(), 0, now)
            .unwrap()
    }

    #[test]
    fn enqueue_fans_out_to_enabled_subscribed_endpoints_and_rolls_back_with_the_caller() {
        let dir = temp_dir("fanout");
        let store = WebhookStore::open(&dir).unwrap();
        let paid = store
            .create_endpoint("http://127.0.0.1:9/a", "", &[EventType::InvoicePaid], T0)
            .unwrap();
        let both = store
            .create_endpoint(
                "http://127.0.0.1:9/b",
                "",
                &[EventType::InvoicePaid, EventType::InvoiceVoided],
                T0,
            )
            .unwrap();
        let off = store
            .create_endpoint("http://127.0.0.1:9/c", "", &[EventType::InvoicePaid], T0)
            .unwrap();
        store
            .update_endpoint(
                &off.endpoint.id,
                &EndpointPatch {
                    enabled: Some(false),
                    ..Default::default()
                },
                T0,
            )
            .unwrap();
        let m = enqueue_one(&store, EventType::InvoicePaid);
        let (_, deliveries) = store.message(m.id().as_str()).unwrap();
        let mut targets: Vec<_> = deliveries.iter().map(|d| d.endpoint_id.clone()).collect();
        targets.sort();
        let mut want = vec![paid.endpoint.id.clone(), both.endpoint.id.clone()];
        want.sort();
        assert_eq!(targets, want);
        let v = enqueue_one(&store, EventType::InvoiceVoided);
        assert_eq!(store.message(v.id().as_str()).unwrap().1.len(), 1);

        // Rolled back with the caller's transaction: no message, no delivery.
        let lost = message(EventType::InvoicePaid, &json!({}), T0).unwrap();
        {
            let mut conn = store.db.lock();
            let tx = conn.transaction().unwrap();
            enqueue(&tx, &lost, T0).unwrap();
            tx.rollback().unwrap();
        }
        assert_eq!(
            store.message(lost.id().as_str()).unwrap_err().code(),
            "message_not_found"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn claims_lease_and_a_lapsed_lease_is_claimed_again() {
        let dir = temp_dir("lease");
        let store = WebhookStore::open(&dir).unwrap();
        store
            .create_endpoint("http://127.0.0.1:9/a", "", &[EventType::InvoicePaid], T0)
            .unwrap();
        enqueue_one(&store, EventType::InvoicePaid);
        let first = store.claim(T0, 10, 5_000, |_| Some(())).unwrap().claims;
        assert_eq!(first.len(), 1);
        let again = store
            .claim(UnixMs(T0.0 + 4_999), 10, 5_000, |_| Some(()))
            .unwrap();
        assert!(again.claims.is_empty(), "leased");
        assert_eq!(again.next_due, Some(UnixMs(T0.0 + 5_000)));
        // The process died mid-request: nothing was recorded; the lease runs out.
        let after = store
            .claim(UnixMs(T0.0 + 5_000), 10, 5_000, |_| Some(()))
            .unwrap()
            .claims;
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].0.delivery_id, first[0].0.delivery_id);
        let refused = store
            .claim(UnixMs(T0.0 + 20_000), 10, 5_000, |_| None::<()>)
            .unwrap();
        assert!(refused.claims.is_empty(), "accept can hold a claim back");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn failures_back_off_give_up_and_disable_the_endpoint() {
        let dir = temp_dir("failures");
        let store = WebhookStore::open(&dir).unwrap();
        let ep = store
            .create_endpoint("http://127.0.0.1:9/a", "", &[EventType::InvoicePaid], T0)
            .unwrap()
            .endpoint;
        let a = enqueue_one(&store, EventType::InvoicePaid);
        let b = enqueue_one(&store, EventType::InvoicePaid);
        let da = store.message(a.id().as_str()).unwrap().1[0].id.clone();
        let db = store.message(b.id().as_str()).unwrap().1[0].id.clone();
        assert_eq!(
            fail(&store, &da, T0).next,
            Next::RetryAt(UnixMs(T0.0 + 500))
        );
        assert_eq!(
            fail(&store, &da, T0).next,
            Next::RetryAt(UnixMs(T0.0 + 1_000))
        );
        assert_eq!(fail(&store, &da, T0).next, Next::GiveUp);
        let (_, ds) = store.message(a.id().as_str()).unwrap();
        assert_eq!(ds[0].status, "failed");
        assert_eq!(ds[0].attempts_log.len(), 3);
        assert!(store.endpoint(&ep.id).unwrap().enabled);
        let r = fail(&store, &db, T0);
        assert!(r.disabled_endpoint, "the fourth failure in a row disables");
        let e = store.endpoint(&ep.id).unwrap();
        assert!(!e.enabled);
        assert!(
            e.disabled_reason
                .unwrap()
                .contains("4 consecutive failed attempts"),
            "reason"
        );
        // Disabled: its pending delivery is not claimed, and waits.
        assert!(
            store
                .claim(UnixMs(T0.0 + 60_000), 10, 5_000, |_| Some(()))
                .unwrap()
                .claims
                .is_empty()
        );
        let e = store
            .update_endpoint(
                &ep.id,
                &EndpointPatch {
                    enabled: Some(true),
                    ..Default::default()
                },
                UnixMs(T0.0 + 60_000),
            )
            .unwrap();
        assert_eq!(
            (e.enabled, e.consecutive_failures, e.disabled_reason),
            (true, 0, None)
        );
        let claims = store
            .claim(UnixMs(T0.0 + 60_000), 10, 5_000, |_| Some(()))
            .unwrap()
            .claims;
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].0.delivery_id, db);
        let ok = Attempt {
            at: T0,
            duration_ms: 1,
            http_status: Some(204),
            error: None,
        };
        assert_eq!(
            store
                .record_attempt(&db, &ok, &policy(), 0, T0)
                .unwrap()
                .next,
            Next::Delivered
        );
        let (_, ds) = store.message(b.id().as_str()).unwrap();
        assert_eq!((ds[0].status.as_str(), ds[0].attempts), ("delivered", 2));
        // Replay makes a new pending delivery of a delivered message.
        let again = store.replay(b.id().as_str(), None, T0).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].status, "pending");
        assert_eq!(store.message(b.id().as_str()).unwrap().1.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
