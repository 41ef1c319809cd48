//! Settings: command-line flags over the config file over defaults.
//!
//! The config file is `--config PATH`, or `tollgate.toml` in the data directory when present:
//!
//! ```toml
//! acceptance_window = "90d"   # how old an event may be (and how long dedup remembers it)
//! listen = "127.0.0.1:8080"
//! invoice_grace = "24h"       # late events update a draft invoice this long after its period
//! invoice_every = "60s"       # how often `serve` runs the invoice cycle ("0s": never)
//! session_timeout = "24h"     # a session without `session.ended` counts as open this long
//! alert_every = "10s"         # how often `serve` evaluates alerts and limits ("0s": never)
//! reconcile_every = "24h"     # how often `serve` reconciles the previous month ("0s": never)
//! reconcile_refund_overpayments = false # refund what was collected beyond an invoice
//! webhook_backoff_base = "10s" # first retry delay of a webhook delivery (doubles each time)
//! webhook_backoff_cap = "6h"  # longest delay between two attempts
//! webhook_timeout = "10s"     # timeout of one delivery request
//! webhook_attempts = 16       # attempts of one delivery before it is marked failed
//! webhook_disable_after = 50  # consecutive failed attempts that disable an endpoint
//! enrichment_dbs = ["/var/lib/GeoIP/GeoLite2-Country.mmdb", "/var/lib/GeoIP/GeoLite2-ASN.mmdb"]
//! credit_auto_issue_below_minor = 10000 # automatic credit notes below this are issued at once
//!
//! [dropin]                    # the Orb, Stripe and OpenMeter ingest endpoints (docs/dropin.md)
//! require_mapping = false     # true: event names missing below are rejected (unmapped_event_name)
//! stripe_customer_key = "stripe_customer_id"  # the Stripe payload key naming the customer
//! [dropin.event_types]        # foreign event name → Tollgate event type
//! api_request = "proxy.request"
//!
//! [orb]                       # forwarding to Orb (docs/orb.md); needs `serve --orb-api-key`
//! grace_period = "12h"        # the Orb account's grace period: older events go through backfills
//! batch_events = 500          # events per ingest request (at most 500)
//! pull_every = "1h"           # how often Orb invoices are read back ("0s": only on request)
//! [orb.events."proxy.request"] # a Tollgate event type that is forwarded
//! event_name = "proxy_request" # its Orb event_name
//! properties = { bytes = "$.data.bytes_out", host = "$.data.host" } # default: data's scalars
//!
//! [stripe_meters]             # Stripe Billing meter events (docs/stripe.md); needs --stripe-secret-key
//! [stripe_meters.events."proxy.request"] # a Tollgate event type that is forwarded
//! event_name = "proxy_bytes"  # the event_name of the Stripe meter
//! value = "$.data.bytes_out"  # where the whole-number value is (default: every event counts 1)
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use tollgate_core::limits::{ACCEPTANCE_WINDOW_MS_DEFAULT, ACCEPTANCE_WINDOW_MS_MAX};

/// Name of the config file looked for in the data directory.
pub const CONFIG_FILE: &str = "tollgate.toml";

/// The config file's contents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// e.g. "35d", "90d", "2160h".
    pub acceptance_window: Option<String>,
    /// Address to listen on.
    pub listen: Option<String>,
    /// Grace period of draft invoices, e.g. "24h".
    pub invoice_grace: Option<String>,
    /// Interval of the invoice scheduler in `serve`, e.g. "60s"; "0s" turns it off.
    pub invoice_every: Option<String>,
    /// How long a session without an end stays open, e.g. "24h".
    pub session_timeout: Option<String>,
    /// Interval of alert evaluation in `serve`, e.g. "10s"; "0s" turns it off.
    pub alert_every: Option<String>,
    /// Interval of the reconciliation of the previous month in `serve`; "0s" turns it off.
    pub reconcile_every: Option<String>,
    /// Whether reconciliation refunds overpayments.
    pub reconcile_refund_overpayments: Option<bool>,
    /// First retry delay of a webhook delivery, e.g. "10s".
    pub webhook_backoff_base: Option<String>,
    /// Longest delay between two webhook attempts, e.g. "6h".
    pub webhook_backoff_cap: Option<String>,
    /// Timeout of one webhook request, e.g. "10s".
    pub webhook_timeout: Option<String>,
    /// Attempts of one delivery before it is marked failed.
    pub webhook_attempts: Option<u32>,
    /// Consecutive failed attempts that disable an endpoint.
    pub webhook_disable_after: Option<u32>,
    /// MaxMind-format enrichment databases (country, ASN), read by `serve`.
    pub enrichment_dbs: Option<Vec<PathBuf>>,
    /// Automatic credit notes (late corrections) with a total below this many minor units are
    /// issued at once; larger ones wait for approval.
    pub credit_auto_issue_below_minor: Option<i64>,
    /// The drop-in ingest endpoints' event-name mapping.
    pub dropin: Option<DropinFile>,
    /// Forwarding to Orb: which event types, how they look there, the grace period.
    pub orb: Option<OrbFile>,
    /// Forwarding to Stripe Billing meter events: which event types, their meter and value.
    pub stripe_meters: Option<StripeMetersFile>,
}

/// `[stripe_meters]`: which accepted events become Stripe meter events.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeMetersFile {
    /// Tollgate event type → its Stripe meter event.
    #[serde(default)]
    pub events: std::collections::BTreeMap<String, StripeMeterEventFile>,
}

/// `[stripe_meters.events."<type>"]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeMeterEventFile {
    /// The Stripe meter's `event_name` (default: the Tollgate type).
    pub event_name: Option<String>,
    /// JSON path of the value in the event (`$.data.bytes`); default: 1 per event.
    pub value: Option<String>,
}

/// `[orb]`: what is forwarded to Orb and how.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrbFile {
    /// The Orb account's grace period, e.g. "12h" (Orb's default).
    pub grace_period: Option<String>,
    /// Events per ingest request (1..=500).
    pub batch_events: Option<usize>,
    /// How often `serve` reads Orb invoices back, e.g. "1h"; "0s": only on request.
    pub pull_every: Option<String>,
    /// Tollgate event type → how it is forwarded.
    #[serde(default)]
    pub events: std::collections::BTreeMap<String, OrbEventFile>,
}

/// `[orb.events."<type>"]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrbEventFile {
    /// Orb's `event_name` (default: the Tollgate type).
    pub event_name: Option<String>,
    /// Orb property → JSON path in the event (`$.data.bytes`); default: every top-level
    /// string, number or boolean of `data`.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

/// `[dropin]`: how Orb and Stripe `event_name`s and OpenMeter `type`s become Tollgate event
/// types.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropinFile {
    /// Reject names without a mapping (`unmapped_event_name`) instead of using them as they are.
    #[serde(default)]
    pub require_mapping: bool,
    /// The Stripe payload key naming the customer (default `stripe_customer_id`).
    pub stripe_customer_key: Option<String>,
    /// Foreign event name → Tollgate event type.
    #[serde(default)]
    pub event_types: std::collections::BTreeMap<String, String>,
}

/// The drop-in mapping in force, checked.
pub fn dropin_mapping(file: &FileConfig) -> anyhow::Result<tollgate_api::convert::dropin::Mapping> {
    use tollgate_api::convert::dropin::Mapping;
    let mut mapping = Mapping::default();
    if let Some(d) = &file.dropin {
        mapping.require_mapping = d.require_mapping;
        mapping.event_types = d.event_types.clone();
        if let Some(key) = &d.stripe_customer_key {
            mapping.stripe_customer_key = key.clone();
        }
    }
    mapping.validate().context("config [dropin]")?;
    Ok(mapping)
}

impl FileConfig {
    /// Reads `explicit`, or the data dir's `tollgate.toml` if it exists, or nothing.
    pub fn load(explicit: Option<&Path>, data_dir: &Path) -> anyhow::Result<FileConfig> {
        let path: PathBuf = match explicit {
            Some(p) => p.to_owned(),
            None => {
                let p = data_dir.join(CONFIG_FILE);
                if !p.exists() {
                    return Ok(FileConfig::default());
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }
}

/// Parses a window such as `35d`, `90d` or `2160h` into milliseconds, within the limits.
pub fn parse_window(text: &str) -> anyhow::Result<i64> {
    let d = humantime::parse_duration(text)
        .with_context(|| format!("acceptance window `{text}` is not a duration like 35d or 90d"))?;
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if ms <= 0 || ms > ACCEPTANCE_WINDOW_MS_MAX {
        bail!("acceptance window must be between 1ms and 3660d");
    }
    Ok(ms)
}

/// The acceptance window in force: flag, then file, then the default.
pub fn acceptance_window_ms(flag: Option<&str>, file: &FileConfig) -> anyhow::Result<i64> {
    match flag.or(file.acceptance_window.as_deref()) {
        Some(text) => parse_window(text),
        None => Ok(ACCEPTANCE_WINDOW_MS_DEFAULT),
    }
}

/// Longest session timeout: 31 days.
pub const SESSION_TIMEOUT_MS_MAX: i64 = 31 * 24 * 3600 * 1000;

/// The session timeout in force: flag, then file, then the default.
pub fn session_timeout_ms(flag: Option<&str>, file: &FileConfig) -> anyhow::Result<i64> {
    match flag.or(file.session_timeout.as_deref()) {
        Some(text) => {
            let ms = duration_ms("session timeout", text, SESSION_TIMEOUT_MS_MAX)?;
            if ms == 0 {
                bail!("session timeout must be above zero");
            }
            Ok(ms)
        }
        None => Ok(tollgate_core::sessions::SESSION_TIMEOUT_MS_DEFAULT),
    }
}

/// Longest grace period of a draft invoice: 31 days.
pub const INVOICE_GRACE_MS_MAX: i64 = 31 * 24 * 3600 * 1000;

/// A duration setting in milliseconds, within `0..=max`.
fn duration_ms(what: &str, text: &str, max: i64) -> anyhow::Result<i64> {
    let d = humantime::parse_duration(text)
        .with_context(|| format!("{what} `{text}` is not a duration like 24h or 60s"))?;
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if ms > max {
        bail!(
            "{what} must be at most {}",
            humantime::format_duration(std::time::Duration::from_millis(max.unsigned_abs()))
        );
    }
    Ok(ms)
}

/// The invoice grace period in force: flag, then file, then 24 h.
pub fn invoice_grace_ms(flag: Option<&str>, file: &FileConfig) -> anyhow::Result<i64> {
    match flag.or(file.invoice_grace.as_deref()) {
        Some(text) => duration_ms("invoice grace", text, INVOICE_GRACE_MS_MAX),
        None => Ok(tollgate_store::billing::run::GRACE_MS_DEFAULT),
    }
}

/// How often `serve` runs the invoice cycle (ms; 0 = never): flag, then file, then 60 s.
pub fn invoice_every_ms(flag: Option<&str>, file: &FileConfig) -> anyhow::Result<i64> {
    match flag.or(file.invoice_every.as_deref()) {
        Some(text) => duration_ms("invoice interval", text, 24 * 3600 * 1000),
        None => Ok(60_000),
    }
}

/// How often `serve` evaluates alerts and limits (ms; 0 = never): flag, then file, then 10 s.
pub fn alert_every_ms(flag: Option<&str>, file: &FileConfig) -> anyhow::Result<i64> {
    match flag.or(file.alert_every.as_deref()) {
        Some(text) => duration_ms("alert interval", text, 24 * 3600 * 1000),
        None => Ok(10_000),
    }
}

/// Interval of the reconciliation scheduler: flag, then file, then 24h.
pub fn reconcile_every_ms(flag: Option<&str>, file: &FileConfig) -> anyhow::Result<i64> {
    match flag.or(file.reconcile_every.as_deref()) {
        Some(text) => duration_ms("reconciliation interval", text, 31 * 24 * 3600 * 1000),
        None => Ok(24 * 3600 * 1000),
    }
}

/// The credit-note policy: flag, then file, then the core's default.
pub fn credit_policy(
    flag: Option<i64>,
    file: &FileConfig,
) -> anyhow::Result<tollgate_core::credit_note::CreditPolicy> {
    let mut policy = tollgate_core::credit_note::CreditPolicy::default();
    if let Some(below) = flag.or(file.credit_auto_issue_below_minor) {
        if below < 0 {
            bail!("the credit auto-issue limit is zero or more minor units, got {below}");
        }
        policy.auto_issue_below_minor = below;
    }
    Ok(policy)
}

/// Webhook delivery settings as given on the command line (each overrides the file).
#[derive(Debug, Default, Clone)]
pub struct WebhookFlags {
    /// `--webhook-backoff-base`.
    pub backoff_base: Option<String>,
    /// `--webhook-backoff-cap`.
    pub backoff_cap: Option<String>,
    /// `--webhook-timeout`.
    pub timeout: Option<String>,
    /// `--webhook-attempts`.
    pub attempts: Option<u32>,
    /// `--webhook-disable-after`.
    pub disable_after: Option<u32>,
}

/// The webhook worker's settings in force: flags, then file, then the defaults of
/// `tollgate_core::webhook`, each within its named limit.
pub fn webhook_config(
    flags: &WebhookFlags,
    file: &FileConfig,
) -> anyhow::Result<crate::webhook_worker::WorkerConfig> {
    use tollgate_core::limits::{
        WEBHOOK_ATTEMPTS_MAX, WEBHOOK_BACKOFF_MS_MAX, WEBHOOK_DISABLE_AFTER_FAILURES_MAX,
        WEBHOOK_TIMEOUT_MS_MAX,
    };
    use tollgate_core::webhook::{self, Backoff, RetryPolicy};
    fn ms(
        what: &str,
        flag: &Option<String>,
        file: &Option<String>,
        default: i64,
        max: i64,
    ) -> anyhow::Result<i64> {
        match flag.as_deref().or(file.as_deref()) {
            Some(text) => {
                let v = duration_ms(what, text, max)?;
                if v < 1 {
                    bail!("{what} must be at least 1ms");
                }
                Ok(v)
            }
            None => Ok(default),
        }
    }
    let base_ms = ms(
        "webhook backoff base",
        &flags.backoff_base,
        &file.webhook_backoff_base,
        webhook::BACKOFF_BASE_MS_DEFAULT,
        WEBHOOK_BACKOFF_MS_MAX,
    )?;
    let cap_ms = ms(
        "webhook backoff cap",
        &flags.backoff_cap,
        &file.webhook_backoff_cap,
        webhook::BACKOFF_CAP_MS_DEFAULT.max(base_ms),
        WEBHOOK_BACKOFF_MS_MAX,
    )?;
    if cap_ms < base_ms {
        bail!("the webhook backoff cap must not be below its base");
    }
    let timeout_ms = ms(
        "webhook timeout",
        &flags.timeout,
        &file.webhook_timeout,
        webhook::TIMEOUT_MS_DEFAULT,
        WEBHOOK_TIMEOUT_MS_MAX,
    )?;
    let attempts_max = flags
        .attempts
        .or(file.webhook_attempts)
        .unwrap_or(webhook::ATTEMPTS_DEFAULT);
    if !(1..=WEBHOOK_ATTEMPTS_MAX).contains(&attempts_max) {
        bail!("webhook attempts must be 1..={WEBHOOK_ATTEMPTS_MAX}");
    }
    let disable_after_failures = flags
        .disable_after
        .or(file.webhook_disable_after)
        .unwrap_or(webhook::DISABLE_AFTER_FAILURES_DEFAULT);
    if !(1..=WEBHOOK_DISABLE_AFTER_FAILURES_MAX).contains(&disable_after_failures) {
        bail!("webhook disable-after must be 1..={WEBHOOK_DISABLE_AFTER_FAILURES_MAX}");
    }
    Ok(crate::webhook_worker::WorkerConfig {
        policy: RetryPolicy {
            backoff: Backoff { base_ms, cap_ms },
            attempts_max,
            disable_after_failures,
        },
        timeout_ms,
    })
}

/// Flags of the Stripe integration (`serve --stripe-*`).
#[derive(Clone, Debug, Default)]
pub struct StripeFlags {
    /// Secret API key; `None`: no sync.
    pub secret_key: Option<String>,
    /// API base URL.
    pub api_base: Option<String>,
    /// Backoff base.
    pub backoff_base: Option<String>,
    /// Backoff cap.
    pub backoff_cap: Option<String>,
    /// Attempts per call.
    pub attempts: Option<u32>,
    /// Request timeout.
    pub timeout: Option<String>,
    /// Test-only: exit after this step's answer.
    pub fault_exit_after_step: Option<String>,
}

/// Stripe's API.
pub const STRIPE_API_BASE_DEFAULT: &str = "https://api.stripe.com";
/// First retry delay of a Stripe call (ms), doubling after each failure, with jitter.
pub const STRIPE_BACKOFF_BASE_MS_DEFAULT: i64 = 2_000;
/// Longest delay between two attempts of a Stripe call (ms).
pub const STRIPE_BACKOFF_CAP_MS_DEFAULT: i64 = 3600 * 1000;
/// Attempts of one Stripe call before it is marked failed.
pub const STRIPE_ATTEMPTS_DEFAULT: u32 = 12;
/// Timeout of one request to Stripe (ms).
pub const STRIPE_TIMEOUT_MS_DEFAULT: i64 = 30_000;
/// Most attempts of one Stripe call.
pub const STRIPE_ATTEMPTS_MAX: u32 = 100;
/// Longest backoff (ms): a day.
pub const STRIPE_BACKOFF_MS_MAX: i64 = 24 * 3600 * 1000;
/// Longest request timeout (ms).
pub const STRIPE_TIMEOUT_MS_MAX: i64 = 120_000;

/// The Stripe worker's settings, or `None` when no secret key is given.
pub fn stripe_config(
    flags: &StripeFlags,
) -> anyhow::Result<Option<crate::provider_worker::StripeConfig>> {
    let Some(secret_key) = flags.secret_key.clone().filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    fn ms(what: &str, flag: &Option<String>, default: i64, max: i64) -> anyhow::Result<i64> {
        match flag.as_deref() {
            Some(text) => {
                let v = duration_ms(what, text, max)?;
                if v < 1 {
                    bail!("{what} must be at least 1ms");
                }
                Ok(v)
            }
            None => Ok(default),
        }
    }
    let base_ms = ms(
        "Stripe backoff base",
        &flags.backoff_base,
        STRIPE_BACKOFF_BASE_MS_DEFAULT,
        STRIPE_BACKOFF_MS_MAX,
    )?;
    let cap_ms = ms(
        "Stripe backoff cap",
        &flags.backoff_cap,
        STRIPE_BACKOFF_CAP_MS_DEFAULT.max(base_ms),
        STRIPE_BACKOFF_MS_MAX,
    )?;
    if cap_ms < base_ms {
        bail!("the Stripe backoff cap must not be below its base");
    }
    let attempts_max = flags.attempts.unwrap_or(STRIPE_ATTEMPTS_DEFAULT);
    if !(1..=STRIPE_ATTEMPTS_MAX).contains(&attempts_max) {
        bail!("--stripe-attempts is 1..={STRIPE_ATTEMPTS_MAX}");
    }
    let api_base = flags
        .api_base
        .clone()
        .unwrap_or_else(|| STRIPE_API_BASE_DEFAULT.to_owned());
    if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
        bail!("--stripe-api-base must be an http(s) URL");
    }
    Ok(Some(crate::provider_worker::StripeConfig {
        api_base,
        secret_key,
        backoff: tollgate_core::webhook::Backoff { base_ms, cap_ms },
        attempts_max,
        timeout_ms: ms(
            "Stripe timeout",
            &flags.timeout,
            STRIPE_TIMEOUT_MS_DEFAULT,
            STRIPE_TIMEOUT_MS_MAX,
        )?,
        fault_exit_after_step: flags.fault_exit_after_step.clone(),
    }))
}

/// Flags of the Orb integration (`serve --orb-*`).
#[derive(Clone, Debug, Default)]
pub struct OrbFlags {
    /// API key; `None`: Orb is off.
    pub api_key: Option<String>,
    /// API base URL.
    pub api_base: Option<String>,
    /// Backoff base.
    pub backoff_base: Option<String>,
    /// Backoff cap.
    pub backoff_cap: Option<String>,
    /// Attempts per customer sync.
    pub attempts: Option<u32>,
    /// Request timeout.
    pub timeout: Option<String>,
    /// Test-only: exit after this step's answer.
    pub fault_exit_after_step: Option<String>,
}

/// Orb's API.
pub const ORB_API_BASE_DEFAULT: &str = "https://api.withorb.com";
/// First retry delay of an Orb request (ms), doubling after each failure, with jitter.
pub const ORB_BACKOFF_BASE_MS_DEFAULT: i64 = 1_000;
/// Longest delay between two attempts (ms): forwarding never gives up on a retryable failure,
/// so this bounds how long a recovered Orb waits for Tollgate.
pub const ORB_BACKOFF_CAP_MS_DEFAULT: i64 = 5 * 60 * 1000;
/// Attempts of one customer sync before it is marked failed.
pub const ORB_ATTEMPTS_DEFAULT: u32 = 12;
/// Timeout of one request to Orb (ms).
pub const ORB_TIMEOUT_MS_DEFAULT: i64 = 30_000;
/// How often invoices are read back by default (ms).
pub const ORB_PULL_EVERY_MS_DEFAULT: i64 = 3600 * 1000;

/// The Orb worker's settings, or `None` when no API key is given. The mapping comes from
/// `[orb]` in the config file; without any `[orb.events]` nothing is forwarded (customers are
/// still synced and invoices read back).
pub fn orb_config(
    flags: &OrbFlags,
    file: &FileConfig,
) -> anyhow::Result<Option<crate::orb_worker::OrbConfig>> {
    use tollgate_core::provider::orb::{
        Forward, Mapping, ORB_GRACE_MS_DEFAULT, ORB_GRACE_MS_MAX, ORB_INGEST_BATCH_EVENTS_MAX,
    };
    let Some(api_key) = flags.api_key.clone().filter(|k| !k.is_empty()) else {
        if file.orb.as_ref().is_some_and(|o| !o.events.is_empty()) {
            tracing::warn!(
                "[orb] events are configured but no --orb-api-key: nothing is forwarded"
            );
        }
        return Ok(None);
    };
    fn ms(what: &str, flag: &Option<String>, default: i64, max: i64) -> anyhow::Result<i64> {
        match flag.as_deref() {
            Some(text) => {
                let v = duration_ms(what, text, max)?;
                if v < 1 {
                    bail!("{what} must be at least 1ms");
                }
                Ok(v)
            }
            None => Ok(default),
        }
    }
    let base_ms = ms(
        "Orb backoff base",
        &flags.backoff_base,
        ORB_BACKOFF_BASE_MS_DEFAULT,
        STRIPE_BACKOFF_MS_MAX,
    )?;
    let cap_ms = ms(
        "Orb backoff cap",
        &flags.backoff_cap,
        ORB_BACKOFF_CAP_MS_DEFAULT.max(base_ms),
        STRIPE_BACKOFF_MS_MAX,
    )?;
    if cap_ms < base_ms {
        bail!("the Orb backoff cap must not be below its base");
    }
    let attempts_max = flags.attempts.unwrap_or(ORB_ATTEMPTS_DEFAULT);
    if !(1..=STRIPE_ATTEMPTS_MAX).contains(&attempts_max) {
        bail!("--orb-attempts is 1..={STRIPE_ATTEMPTS_MAX}");
    }
    let api_base = flags
        .api_base
        .clone()
        .unwrap_or_else(|| ORB_API_BASE_DEFAULT.to_owned());
    if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
        bail!("--orb-api-base must be an http(s) URL");
    }
    let empty = OrbFile::default();
    let section = file.orb.as_ref().unwrap_or(&empty);
    let grace_ms = match section.grace_period.as_deref() {
        Some(text) => {
            let v = duration_ms("[orb] grace_period", text, ORB_GRACE_MS_MAX)?;
            if v < 60_000 {
                bail!("[orb] grace_period must be at least 1m");
            }
            v
        }
        None => ORB_GRACE_MS_DEFAULT,
    };
    let batch_events = section.batch_events.unwrap_or(ORB_INGEST_BATCH_EVENTS_MAX);
    if !(1..=ORB_INGEST_BATCH_EVENTS_MAX).contains(&batch_events) {
        bail!("[orb] batch_events is 1..={ORB_INGEST_BATCH_EVENTS_MAX}");
    }
    let pull_every_ms = match section.pull_every.as_deref() {
        Some(text) => duration_ms("[orb] pull_every", text, 7 * 24 * 3600 * 1000)?,
        None => ORB_PULL_EVERY_MS_DEFAULT,
    };
    let mut mapping = Mapping::default();
    for (event_type, e) in &section.events {
        let mut properties = Vec::with_capacity(e.properties.len());
        for (name, path) in &e.properties {
            let path = tollgate_core::meter::JsonPath::parse(path)
                .with_context(|| format!("[orb.events.\"{event_type}\"] property `{name}`"))?;
            properties.push((name.clone(), path));
        }
        mapping.events.insert(
            event_type.clone(),
            Forward {
                event_name: e.event_name.clone().unwrap_or_else(|| event_type.clone()),
                properties,
            },
        );
    }
    mapping.validate().context("config [orb]")?;
    Ok(Some(crate::orb_worker::OrbConfig {
        api_base,
        api_key,
        backoff: tollgate_core::webhook::Backoff { base_ms, cap_ms },
        attempts_max,
        timeout_ms: ms(
            "Orb timeout",
            &flags.timeout,
            ORB_TIMEOUT_MS_DEFAULT,
            STRIPE_TIMEOUT_MS_MAX,
        )?,
        grace_ms,
        batch_events,
        pull_every_ms,
        mapping,
        fault_exit_after_step: flags.fault_exit_after_step.clone(),
    }))
}

/// The Stripe meter event forwarder's settings: on only when Stripe is configured
/// (`stripe`, from `--stripe-secret-key`) and `[stripe_meters.events]` maps at least one type.
pub fn stripe_meters_config(
    stripe: Option<&crate::provider_worker::StripeConfig>,
    file: &FileConfig,
) -> anyhow::Result<Option<crate::stripe_meter_worker::StripeMetersConfig>> {
    use tollgate_core::provider::stripe_meter::{Forward, Mapping};
    let Some(section) = file.stripe_meters.as_ref() else {
        return Ok(None);
    };
    let mut mapping = Mapping::default();
    for (event_type, e) in &section.events {
        let value = match &e.value {
            Some(path) => Some(
                tollgate_core::meter::JsonPath::parse(path)
                    .with_context(|| format!("[stripe_meters.events.\"{event_type}\"] value"))?,
            ),
            None => None,
        };
        mapping.events.insert(
            event_type.clone(),
            Forward {
                event_name: e.event_name.clone().unwrap_or_else(|| event_type.clone()),
                value,
            },
        );
    }
    mapping.validate().context("config [stripe_meters]")?;
    if mapping.is_empty() {
        return Ok(None);
    }
    let Some(stripe) = stripe else {
        tracing::warn!(
            "[stripe_meters] events are configured but no --stripe-secret-key: nothing is forwarded"
        );
        return Ok(None);
    };
    Ok(Some(crate::stripe_meter_worker::StripeMetersConfig {
        api_base: stripe.api_base.clone(),
        secret_key: stripe.secret_key.clone(),
        backoff: stripe.backoff,
        timeout_ms: stripe.timeout_ms,
        mapping,
        fault_exit_after_step: stripe.fault_exit_after_step.clone(),
    }))
}
