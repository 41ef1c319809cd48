//! Named limits on every input. Exceeding one is a typed error whose code names the limit.
//!
//! The numbers are chosen so that one request or one event can never take the process down:
//! the largest accepted body is parsed in well under a second and fits in memory many times.

/// Largest request body accepted by `POST /v1/events` (bytes).
pub const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most events in one request or one NDJSON body.
pub const BATCH_EVENTS_MAX: usize = 100_000;
/// Largest single event, as JSON text (bytes).
pub const EVENT_BYTES_MAX: usize = 64 * 1024;
/// Longest `id` attribute (bytes).
pub const EVENT_ID_BYTES_MAX: usize = 256;
/// Longest `source` attribute (bytes).
pub const EVENT_SOURCE_BYTES_MAX: usize = 1024;
/// Longest `type` attribute (bytes).
pub const EVENT_TYPE_BYTES_MAX: usize = 256;
/// Longest `subject` attribute (bytes).
pub const EVENT_SUBJECT_BYTES_MAX: usize = 256;
/// How far in the future an event's `time` may lie (ms): clocks drift, but not by more.
pub const EVENT_FUTURE_MS_MAX: i64 = 5 * 60 * 1000;
/// Default acceptance (and dedup) window: events older than this are rejected (ms).
pub const ACCEPTANCE_WINDOW_MS_DEFAULT: i64 = 35 * 24 * 3600 * 1000;
/// Widest acceptance window that may be configured (ms): ten years.
pub const ACCEPTANCE_WINDOW_MS_MAX: i64 = 3660 * 24 * 3600 * 1000;
/// Longest meter slug (bytes).
pub const METER_SLUG_BYTES_MAX: usize = 64;
/// Most group-by dimensions on one meter.
pub const GROUP_BY_KEYS_MAX: usize = 8;
/// Most filters on one meter.
pub const METER_FILTERS_MAX: usize = 16;
/// Most values in one `in` / `nin` filter.
pub const FILTER_VALUES_MAX: usize = 1_000;
/// Longest JSON path in a meter definition (bytes).
pub const JSON_PATH_BYTES_MAX: usize = 256;
/// Most meters in one store.
pub const METERS_MAX: usize = 1_000;
/// Most event types one meter may list.
pub const METER_EVENT_TYPES_MAX: usize = 64;
/// Most rows one usage query may return (every customer × day of a month for 16,000 customers);
/// a larger answer is a 4xx asking for a narrower query.
pub const USAGE_ROWS_MAX: usize = 500_000;
/// Most windows one usage query may span (e.g. minutes in a range).
pub const USAGE_WINDOWS_MAX: usize = 100_000;
/// Longest feature key (bytes).
pub const FEATURE_KEY_BYTES_MAX: usize = 64;
/// Most entitlements on one plan version, and most overrides on one customer.
pub const ENTITLEMENTS_MAX: usize = 100;
/// Longest static text value of a feature (bytes).
pub const STATIC_TEXT_BYTES_MAX: usize = 1_000;
/// Most checks in one batch check request.
pub const CHECKS_BATCH_MAX: usize = 1_000;
/// Most alert rules in one store.
pub const ALERT_RULES_MAX: usize = 1_000;
/// Most windows one sessions query may return.
pub const SESSION_WINDOWS_MAX: usize = 10_000;

/// Longest life of a portal link (seconds): 90 days.
pub const PORTAL_SESSION_SECONDS_MAX: i64 = 90 * 24 * 3600;
/// Most windows one portal usage chart shows (e.g. 31 days of hours is 744).
pub const PORTAL_CHART_WINDOWS_MAX: usize = 2_000;
/// Most series one portal usage chart draws; smaller groups are summed into "other".
pub const PORTAL_CHART_SERIES_MAX: usize = 8;
/// Widest time range of one finance export (days).
pub const EXPORT_RANGE_DAYS_MAX: i64 = 400;
/// Most webhook endpoints in one store.
pub const WEBHOOK_ENDPOINTS_MAX: usize = 100;
/// Most event types one webhook endpoint may subscribe to.
pub const WEBHOOK_ENDPOINT_EVENT_TYPES_MAX: usize = 16;
/// Longest webhook endpoint URL (bytes).
pub const WEBHOOK_URL_BYTES_MAX: usize = 2048;
/// Longest description of a webhook endpoint (bytes).
pub const WEBHOOK_DESCRIPTION_BYTES_MAX: usize = 512;
/// Largest webhook message body (bytes).
pub const WEBHOOK_PAYLOAD_BYTES_MAX: usize = 256 * 1024;
/// Most delivery attempts of one message to one endpoint that may be configured.
pub const WEBHOOK_ATTEMPTS_MAX: u32 = 30;
/// Longest delivery timeout that may be configured (ms): a receiver should answer fast and
/// work afterwards.
pub const WEBHOOK_TIMEOUT_MS_MAX: i64 = 60_000;
/// Most requests in flight to one endpoint at a time.
pub const WEBHOOK_ENDPOINT_CONCURRENCY_MAX: usize = 4;
/// Most consecutive failed attempts before an endpoint is disabled that may be configured.
pub const WEBHOOK_DISABLE_AFTER_FAILURES_MAX: u32 = 10_000;
/// Longest backoff delay between two attempts that may be configured (ms): one day.
pub const WEBHOOK_BACKOFF_MS_MAX: i64 = 24 * 3600 * 1000;
/// Most IP allocations in one store (the lookup benchmark loads 1M).
pub const IP_ALLOCATIONS_MAX: usize = 4_000_000;
/// Most attribution sources (CloudEvents `source` values read by address).
pub const ATTRIBUTION_SOURCES_MAX: usize = 1_000;
/// Longest proxy access-log line (bytes); a longer one is reported with its line number.
pub const ACCESS_LOG_LINE_BYTES_MAX: usize = 16 * 1024;
/// Most rules in one inspection rule set (the decision benchmark loads 100k).
pub const INSPECT_RULES_MAX: usize = 1_000_000;
/// Longest rule id, host or category name (bytes).
pub const INSPECT_TEXT_BYTES_MAX: usize = 253;
/// Most lines one credit-note request may name.
pub const CREDIT_REQUEST_LINES_MAX: usize = 1_000;
/// Longest credit-note memo.
pub const CREDIT_MEMO_BYTES_MAX: usize = 2_000;
/// Longest memo of a refund (bytes).
pub const REFUND_MEMO_BYTES_MAX: usize = 2_000;
/// Largest inspection rule set document accepted by `POST /v1/inspect/rule_sets` (bytes).
pub const INSPECT_RULE_SET_BYTES_MAX: usize = 128 * 1024 * 1024;
/// Largest `POST /v1/inspect/decide` body (bytes).
pub const INSPECT_DECIDE_BODY_BYTES_MAX: usize = 16 * 1024;
/// Longest request path given to a decision (bytes).
pub const INSPECT_PATH_BYTES_MAX: usize = 8 * 1024;
