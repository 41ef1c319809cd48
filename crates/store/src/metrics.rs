//! Prometheus metrics of the engine: events by verdict, group-commit latency, writer queue depth;
//! and of reconciliation: differences of the last run by kind and class.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of the events counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    /// `accepted`, `duplicate`, `conflict` or `rejected`.
    pub verdict: &'static str,
}

/// Labels of the reconciliation gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DifferenceLabel {
    /// `usage`, `pricing`, `provider` or `ledger`.
    pub kind: &'static str,
    /// `late_event_after_finalization`, `missing_provider_record`, `amount_drift`,
    /// `status_drift` or `unexplained`.
    pub class: &'static str,
}

/// The engine's metrics and the registry that renders them.
pub struct Metrics {
    /// The registry (`/metrics` encodes it).
    pub registry: Registry,
    /// Events by verdict.
    pub events: Family<VerdictLabel, Counter>,
    /// Seconds from the start of a group commit to its fsync.
    pub commit_seconds: Histogram,
    /// Batches waiting for the writer.
    pub queue_depth: Gauge,
    /// Compressed bytes of raw events written.
    pub frame_bytes: Counter,
    /// Identities held in the dedup index.
    pub dedup_identities: Gauge,
    /// Differences found by the last reconciliation run, by kind and class.
    pub reconciliation_differences: Family<DifferenceLabel, Gauge>,
    /// Reconciliation runs completed.
    pub reconciliation_runs: Counter,
    /// When the last reconciliation run finished (Unix seconds).
    pub reconciliation_last_run: Gauge,
    /// Forwarding to Orb (zeros when Orb is not configured).
    pub orb: OrbMetrics,
    /// Forwarding to Stripe meter events (zeros when it is off).
    pub stripe_meters: StripeMeterMetrics,
}

/// Metrics of forwarding events to Stripe Billing meter events.
#[derive(Clone, Debug, Default)]
pub struct StripeMeterMetrics {
    /// Events acknowledged by Stripe (duplicates included).
    pub events_forwarded: Counter,
    /// Events Stripe already held (it refused their identifier as a duplicate).
    pub events_duplicate: Counter,
    /// Accepted events not forwarded (their type is not mapped).
    pub events_skipped: Counter,
    /// Events passed over: outside Stripe's timestamp window when they were due.
    pub events_out_of_window: Counter,
    /// Events passed over: their value is missing or not a whole number.
    pub events_invalid: Counter,
    /// Events parked until their customer has a Stripe id.
    pub events_waiting: Gauge,
    /// Failed requests that will be retried.
    pub retries: Counter,
    /// 1 while forwarding is stopped on a permanent refusal.
    pub stopped: Gauge,
    /// The cursor: every accepted event up to this sequence number is done or parked.
    pub cursor_seq: Gauge,
    /// Accepted events after the cursor.
    pub lag_events: Gauge,
}

/// Metrics of forwarding events to Orb.
#[derive(Clone, Debug, Default)]
pub struct OrbMetrics {
    /// Events acknowledged by Orb.
    pub events_forwarded: Counter,
    /// Accepted events not forwarded (their type is not mapped).
    pub events_skipped: Counter,
    /// Ingest requests acknowledged.
    pub batches: Counter,
    /// Backfills closed.
    pub backfills: Counter,
    /// Failed requests that will be retried.
    pub retries: Counter,
    /// 1 while forwarding is stopped on a permanent refusal.
    pub stopped: Gauge,
    /// The cursor: every accepted event up to this sequence number is done.
    pub cursor_seq: Gauge,
    /// Accepted events after the cursor (not forwarded yet).
    pub lag_events: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `tollgate_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tollgate");
        let events = Family::<VerdictLabel, Counter>::default();
        registry.register("events", "Events received, by verdict", events.clone());
        // 100 µs .. ~3.3 s
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "batch_commit_seconds",
            "Group commit latency: decide, write, fsync",
            commit_seconds.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "writer_queue_depth",
            "Batches waiting for the writer",
            queue_depth.clone(),
        );
        let frame_bytes = Counter::default();
        registry.register(
            "frame_bytes",
            "Bytes of stored event frames written",
            frame_bytes.clone(),
        );
        let dedup_identities = Gauge::default();
        registry.register(
            "dedup_identities",
            "Event identities held in the dedup index",
            dedup_identities.clone(),
        );
        let reconciliation_differences = Family::<DifferenceLabel, Gauge>::default();
        registry.register(
            "reconciliation_differences",
            "Differences found by the last reconciliation run, by kind and class",
            reconciliation_differences.clone(),
        );
        let reconciliation_runs = Counter::default();
        registry.register(
            "reconciliation_runs",
            "Reconciliation runs completed",
            reconciliation_runs.clone(),
        );
        let reconciliation_last_run = Gauge::default();
        registry.register(
            "reconciliation_last_run_timestamp_seconds",
            "When the last reconciliation run finished",
            reconciliation_last_run.clone(),
        );
        let orb = OrbMetrics::default();
        registry.register(
            "orb_events_forwarded",
            "Events acknowledged by Orb",
            orb.events_forwarded.clone(),
        );
        registry.register(
            "orb_events_skipped",
            "Accepted events not forwarded to Orb (type not mapped)",
            orb.events_skipped.clone(),
        );
        registry.register(
            "orb_batches",
            "Ingest requests acknowledged by Orb",
            orb.batches.clone(),
        );
        registry.register(
            "orb_backfills",
            "Orb backfills closed",
            orb.backfills.clone(),
        );
        registry.register(
            "orb_retries",
            "Failed Orb requests that will be retried",
            orb.retries.clone(),
        );
        registry.register(
            "orb_stopped",
            "1 while forwarding to Orb is stopped on a permanent refusal",
            orb.stopped.clone(),
        );
        registry.register(
            "orb_cursor_seq",
            "Every accepted event up to this sequence number is forwarded to Orb or skipped",
            orb.cursor_seq.clone(),
        );
        registry.register(
            "orb_lag_events",
            "Accepted events not forwarded to Orb yet",
            orb.lag_events.clone(),
        );
        let stripe_meters = StripeMeterMetrics::default();
        for (name, help, counter) in [
            (
                "stripe_meter_events_forwarded",
                "Events acknowledged by Stripe's meter events API",
                &stripe_meters.events_forwarded,
            ),
            (
                "stripe_meter_events_duplicate",
                "Events Stripe already held (identifier refused as a duplicate)",
                &stripe_meters.events_duplicate,
            ),
            (
                "stripe_meter_events_skipped",
                "Accepted events not forwarded to Stripe meters (type not mapped)",
                &stripe_meters.events_skipped,
            ),
            (
                "stripe_meter_events_out_of_window",
                "Events passed over: outside Stripe's meter event timestamp window",
                &stripe_meters.events_out_of_window,
            ),
            (
                "stripe_meter_events_invalid",
                "Events passed over: value missing or not a whole number",
                &stripe_meters.events_invalid,
            ),
            (
                "stripe_meter_retries",
                "Failed Stripe meter event requests that will be retried",
                &stripe_meters.retries,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        for (name, help, gauge) in [
            (
                "stripe_meter_events_waiting",
                "Events parked until their customer has a Stripe id",
                &stripe_meters.events_waiting,
            ),
            (
                "stripe_meter_stopped",
                "1 while forwarding to Stripe meters is stopped on a permanent refusal",
                &stripe_meters.stopped,
            ),
            (
                "stripe_meter_cursor_seq",
                "Every accepted event up to this sequence number is done for Stripe meters",
                &stripe_meters.cursor_seq,
            ),
            (
                "stripe_meter_lag_events",
                "Accepted events not forwarded to Stripe meters yet",
                &stripe_meters.lag_events,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        Metrics {
            registry,
            stripe_meters,
            reconciliation_differences,
            reconciliation_runs,
            reconciliation_last_run,
            orb,
            events,
            commit_seconds,
            queue_depth,
            frame_bytes,
            dedup_identities,
        }
    }

    pub(crate) fn count(&self, verdict: &'static str, n: usize) {
        if n > 0 {
            self.events
                .get_or_create(&VerdictLabel { verdict })
                .inc_by(n as u64);
        }
    }

    /// Publishes a reconciliation run: every (kind, class) pair is set, zero when absent, so
    /// a difference that went away shows as zero.
    pub fn record_reconciliation(&self, report: &tollgate_core::reconcile::Report, at: i64) {
        let counts = report.counts();
        for kind in tollgate_core::reconcile::Kind::ALL {
            for class in tollgate_core::reconcile::Class::ALL {
                let n = counts.get(&(kind, class)).copied().unwrap_or(0);
                self.reconciliation_differences
                    .get_or_create(&DifferenceLabel {
                        kind: kind.as_str(),
                        class: class.as_str(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        self.reconciliation_runs.inc();
        self.reconciliation_last_run.set(at / 1000);
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
