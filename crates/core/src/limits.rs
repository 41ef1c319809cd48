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
