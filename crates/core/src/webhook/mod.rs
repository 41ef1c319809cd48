//! Webhooks: what Tollgate tells other systems, how it proves the message is its own, and when
//! it tries again.
//!
//! Owns: the event types and their stable names ([`EventType`]), the message envelope
//! ([`Message`], serialized once into the exact bytes every endpoint receives), the signature
//! header ([`sign`], [`signature_header`], [`verify`]: HMAC-SHA256 of `"{t}.{body}"` with the
//! endpoint's secret), endpoint definitions' rules ([`validate_url`], [`parse_event_types`]),
//! the retry schedule ([`Backoff`]: exponential, capped, with equal jitter) and the decisions
//! taken after an attempt ([`RetryPolicy`]: retry, give up, disable the endpoint).
//!
//! Does not own: storage (the outbox, deliveries and their log live in `tollgate-store`), the
//! HTTP client or the clock (the delivery worker in the binary), random numbers (passed in).
//!
//! Invariants: a message's body is produced once and signed and sent byte for byte; a signature
//! made by [`sign`] verifies with [`verify`] for the same secret, timestamp and body, and any
//! change to the body or timestamp makes it fail; a delivery counts as delivered only on a 2xx
//! answer ([`is_success`]); a backoff delay lies in `[d/2, d]` for `d = min(cap, base·2^(n−1))`.

mod error;
#[cfg(test)]
mod tests;

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub use self::error::{SignatureError, WebhookError};
use crate::limits::{
    WEBHOOK_ENDPOINT_EVENT_TYPES_MAX, WEBHOOK_PAYLOAD_BYTES_MAX, WEBHOOK_URL_BYTES_MAX,
};
use crate::time::UnixMs;

/// Name of the signature header.
pub const SIGNATURE_HEADER: &str = "Tollgate-Signature";
/// Header carrying the message id (the same on every retry and replay: receivers dedup on it).
pub const MESSAGE_ID_HEADER: &str = "Tollgate-Message-Id";
/// Header carrying the event type.
pub const EVENT_TYPE_HEADER: &str = "Tollgate-Event-Type";
/// How old (or how far ahead) a signature timestamp may be before a receiver should reject it
/// as a replay: five minutes.
pub const SIGNATURE_TOLERANCE_MS_DEFAULT: i64 = 5 * 60 * 1000;

/// Default first retry delay (ms): 10 s.
pub const BACKOFF_BASE_MS_DEFAULT: i64 = 10_000;
/// Default longest delay between two attempts (ms): 6 h.
pub const BACKOFF_CAP_MS_DEFAULT: i64 = 6 * 3600 * 1000;
/// Default attempts of one delivery before it is marked failed: 16 (about a day with the
/// default backoff: 10 s, 20 s, 40 s, ... 5.7 h, then 6 h four times, each jittered to 50–100 %).
pub const ATTEMPTS_DEFAULT: u32 = 16;
/// Default consecutive failed attempts of an endpoint (across its deliveries) before it is
/// disabled.
pub const DISABLE_AFTER_FAILURES_DEFAULT: u32 = 50;
/// Default timeout of one delivery request (ms).
pub const TIMEOUT_MS_DEFAULT: i64 = 10_000;

/// What happened. Names are stable: receivers switch on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    /// A usage or spend alert crossed its threshold.
    AlertTriggered,
    /// A triggered alert is back under its threshold.
    AlertRecovered,
    /// A customer went over an entitlement's limit.
    EntitlementExceeded,
    /// An invoice was finalized (numbered, immutable, due).
    InvoiceFinalized,
    /// An invoice was marked paid.
    InvoicePaid,
    /// An invoice was voided.
    InvoiceVoided,
    /// A ping sent on request to one endpoint (`POST /v1/webhook_endpoints/{id}/test`); not
    /// subscribable.
    WebhookTest,
}

impl EventType {
    /// Every type an endpoint may subscribe to.
    pub const SUBSCRIBABLE: [EventType; 6] = [
        EventType::AlertTriggered,
        EventType::AlertRecovered,
        EventType::EntitlementExceeded,
        EventType::InvoiceFinalized,
        EventType::InvoicePaid,
        EventType::InvoiceVoided,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::AlertTriggered => "alert.triggered",
            EventType::AlertRecovered => "alert.recovered",
            EventType::EntitlementExceeded => "entitlement.exceeded",
            EventType::InvoiceFinalized => "invoice.finalized",
            EventType::InvoicePaid => "invoice.paid",
            EventType::InvoiceVoided => "invoice.voided",
            EventType::WebhookTest => "webhook.test",
        }
    }

    /// A type from its name (any type, `webhook.test` included).
    pub fn parse(name: &str) -> Result<EventType, WebhookError> {
        Self::SUBSCRIBABLE
            .into_iter()
            .chain([EventType::WebhookTest])
            .find(|t| t.as_str() == name)
            .ok_or_else(|| WebhookError::UnknownEventType {
                name: name.chars().take(64).collect(),
            })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        EventType::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The event types of an endpoint: known, subscribable, at least one, at most
/// [`WEBHOOK_ENDPOINT_EVENT_TYPES_MAX`]; repeats are folded, order is the canonical one.
pub fn parse_event_types<S: AsRef<str>>(names: &[S]) -> Result<Vec<EventType>, WebhookError> {
    if names.len() > WEBHOOK_ENDPOINT_EVENT_TYPES_MAX {
        return Err(WebhookError::TooManyEventTypes);
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let t = EventType::parse(name.as_ref())?;
        if !EventType::SUBSCRIBABLE.contains(&t) {
            return Err(WebhookError::UnknownEventType {
                name: t.as_str().to_owned(),
            });
        }
        out.push(t);
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(WebhookError::NoEventTypes);
    }
    Ok(out)
}

/// Checks an endpoint URL: `http://` or `https://`, a host, no whitespace or control
/// characters, at most [`WEBHOOK_URL_BYTES_MAX`] bytes. (The HTTP client parses it fully when
/// it sends; this refuses what can never work, at the edge.)
pub fn validate_url(url: &str) -> Result<(), WebhookError> {
    if url.len() > WEBHOOK_URL_BYTES_MAX {
        return Err(WebhookError::UrlTooLong);
    }
    let invalid = |reason: &str| WebhookError::InvalidUrl {
        reason: reason.to_owned(),
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("it contains whitespace or control characters"));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid("it must start with http:// or https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let host_only = if host.starts_with('[') {
        host.split(']').next().unwrap_or("").trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or("")
    };
    if host_only.is_empty() {
        return Err(invalid("it has no host"));
    }
    Ok(())
}

/// A message id: `msg_` and 24 lowercase hex digits (96 random bits, chosen by the shell).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    /// The id made from 12 random bytes.
    pub fn from_random(bytes: [u8; 12]) -> MessageId {
        MessageId(format!("msg_{}", hex::encode(bytes)))
    }

    /// Parses `msg_` + 24 lowercase hex digits.
    pub fn parse(text: &str) -> Option<MessageId> {
        let hex = text.strip_prefix("msg_")?;
        (hex.len() == 24 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| MessageId(text.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One webhook message: the envelope `{"id", "type", "created_at", "data"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    id: MessageId,
    event_type: EventType,
    created: UnixMs,
    body: String,
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    created_at: String,
    data: &'a serde_json::Value,
}

impl Message {
    /// A message; `data` must be a JSON object and the whole body at most
    /// [`WEBHOOK_PAYLOAD_BYTES_MAX`] bytes. The body is serialized here, once.
    pub fn new(
        id: MessageId,
        event_type: EventType,
        created: UnixMs,
        data: &serde_json::Value,
    ) -> Result<Message, WebhookError> {
        if !data.is_object() {
            return Err(WebhookError::DataNotObject);
        }
        let body = serde_json::to_string(&Envelope {
            id: id.as_str(),
            event_type: event_type.as_str(),
            created_at: created.to_rfc3339(),
            data,
        })
        .map_err(|_| WebhookError::DataNotObject)?;
        if body.len() > WEBHOOK_PAYLOAD_BYTES_MAX {
            return Err(WebhookError::PayloadTooLarge);
        }
        Ok(Message {
            id,
            event_type,
            created,
            body,
        })
    }

    /// Rebuilds a stored message from its parts (the body exactly as stored).
    pub fn from_stored(
        id: MessageId,
        event_type: EventType,
        created: UnixMs,
        body: String,
    ) -> Message {
        Message {
            id,
            event_type,
            created,
            body,
        }
    }

    /// The id.
    pub fn id(&self) -> &MessageId {
        &self.id
    }

    /// The type.
    pub fn event_type(&self) -> EventType {
        self.event_type
    }

    /// When it was created.
    pub fn created(&self) -> UnixMs {
        self.created
    }

    /// The JSON body every endpoint receives, byte for byte.
    pub fn body(&self) -> &str {
        &self.body
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, timestamp_s: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable_hmac(),
    };
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cold]
fn unreachable_hmac() -> ! {
    panic!("HMAC accepts keys of every length")
}

/// The hex HMAC-SHA256 of `"{timestamp_s}.{body}"` with `secret` (the `v1` value).
pub fn sign(secret: &str, timestamp_s: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp_s, body).finalize().into_bytes())
}

/// The `Tollgate-Signature` value: `t=<unix seconds>,v1=<hex>` with one `v1` per secret (two
/// during a secret rotation, so receivers holding either secret verify).
pub fn signature_header(secrets: &[&str], timestamp_s: i64, body: &[u8]) -> String {
    let mut out = format!("t={timestamp_s}");
    for secret in secrets {
        out.push_str(",v1=");
        out.push_str(&sign(secret, timestamp_s, body));
    }
    out
}

/// Verifies a `Tollgate-Signature` header for `body` with `secret`, as a receiver does:
/// parse `t` and every `v1` (other keys are ignored, for future schemes); refuse a timestamp
/// more than `tolerance_ms` before or after `now` (replays); accept when one `v1` equals the
/// HMAC-SHA256 of `"{t}.{body}"`, compared in constant time.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: UnixMs,
    tolerance_ms: i64,
) -> Result<(), SignatureError> {
    let mut timestamp_s = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed {
                reason: "every part is key=value",
            })?;
        match key {
            "t" => {
                if timestamp_s.is_some() {
                    return Err(SignatureError::Malformed {
                        reason: "`t` is given twice",
                    });
                }
                let t: i64 = value.parse().map_err(|_| SignatureError::Malformed {
                    reason: "`t` is not an integer",
                })?;
                timestamp_s = Some(t);
            }
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let t = timestamp_s.ok_or(SignatureError::Malformed {
        reason: "no `t=` timestamp",
    })?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed {
            reason: "no `v1=` signature",
        });
    }
    let now_s = now.0.div_euclid(1000);
    let tolerance_s = tolerance_ms.div_euclid(1000);
    let age_s = now_s.saturating_sub(t);
    if age_s > tolerance_s {
        return Err(SignatureError::TooOld { age_s, tolerance_s });
    }
    if -age_s > tolerance_s {
        return Err(SignatureError::InFuture {
            ahead_s: -age_s,
            tolerance_s,
        });
    }
    let expected = mac(secret, t, body);
    for sig in signatures {
        // A value that is not hex cannot match; keep looking at the others.
        if let Ok(bytes) = hex::decode(sig)
            && expected.clone().verify_slice(&bytes).is_ok()
        {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// Whether an HTTP answer counts as delivered: 2xx only (a redirect is not followed and fails).
pub fn is_success(http_status: u16) -> bool {
    (200..300).contains(&http_status)
}

/// The retry schedule: after the `n`-th failed attempt, wait a delay drawn from
/// `[d/2, d]` where `d = min(cap_ms, base_ms · 2^(n−1))` ("equal jitter": never sooner than
/// half the exponential delay, so the schedule keeps its shape, while retries of many
/// deliveries spread out instead of arriving together).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure, before jitter (ms, ≥ 1).
    pub base_ms: i64,
    /// The largest delay, before jitter (ms, ≥ base).
    pub cap_ms: i64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base_ms: BACKOFF_BASE_MS_DEFAULT,
            cap_ms: BACKOFF_CAP_MS_DEFAULT,
        }
    }
}

impl Backoff {
    /// The delay before the exponential is capped and jittered, after `failed_attempts` (≥ 1).
    pub fn ceiling_ms(&self, failed_attempts: u32) -> i64 {
        let base = self.base_ms.max(1);
        let cap = self.cap_ms.max(base);
        let shift = failed_attempts.saturating_sub(1).min(62);
        base.checked_mul(1_i64 << shift).map_or(cap, |d| d.min(cap))
    }

    /// The delay after `failed_attempts` (≥ 1) with `random` (any value, uniformly drawn by
    /// the caller) choosing the jitter.
    pub fn delay_ms(&self, failed_attempts: u32, random: u64) -> i64 {
        let d = self.ceiling_ms(failed_attempts);
        let half = d / 2;
        let span = u64::try_from(d - half).unwrap_or(0) + 1;
        half + i64::try_from(random % span).unwrap_or(0)
    }
}

/// What follows one attempt of a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Delivered (2xx).
    Delivered,
    /// Failed; try again at this instant.
    RetryAt(UnixMs),
    /// Failed, and that was the last attempt allowed.
    GiveUp,
}

/// The rules applied after each attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay schedule.
    pub backoff: Backoff,
    /// Attempts of one delivery before it is marked failed.
    pub attempts_max: u32,
    /// Consecutive failed attempts of one endpoint (across all its deliveries) that disable it.
    pub disable_after_failures: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            backoff: Backoff::default(),
            attempts_max: ATTEMPTS_DEFAULT,
            disable_after_failures: DISABLE_AFTER_FAILURES_DEFAULT,
        }
    }
}

impl RetryPolicy {
    /// What follows an attempt that answered `http_status` (`None`: no answer — refused,
    /// timed out, ...), the `attempts`-th of its delivery (counting this one), at `now`.
    pub fn next(&self, http_status: Option<u16>, attempts: u32, now: UnixMs, random: u64) -> Next {
        if http_status.is_some_and(is_success) {
            return Next::Delivered;
        }
        if attempts >= self.attempts_max {
            return Next::GiveUp;
        }
        Next::RetryAt(UnixMs(
            now.0
                .saturating_add(self.backoff.delay_ms(attempts, random)),
        ))
    }

    /// Whether an endpoint with this many consecutive failed attempts is disabled.
    pub fn disables(&self, consecutive_failures: u32) -> bool {
        consecutive_failures >= self.disable_after_failures.max(1)
    }
}
