//! The database schema and its migrations, applied in order at open (`PRAGMA user_version`).

use rusqlite::Connection;

/// Migrations; index + 1 is the schema version it brings the database to.
const MIGRATIONS: &[&str] = &[
    // 1: keys, meters, raw event frames, settings.
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
     CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER
     ) STRICT;
     CREATE TABLE meters (
        slug TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE event_frames (
        frame_seq INTEGER PRIMARY KEY,
        first_event_seq INTEGER NOT NULL,
        event_count INTEGER NOT NULL,
        min_time_ms INTEGER NOT NULL,
        max_time_ms INTEGER NOT NULL,
        committed_ms INTEGER NOT NULL,
        keys BLOB NOT NULL,
        events BLOB NOT NULL
     ) STRICT;",
    // 2: billing. Domain objects are JSON documents; the columns beside them are what is
    // searched or constrained. A finalized invoice's document cannot change (trigger).
    "CREATE TABLE customers (
        key TEXT PRIMARY KEY,
        doc TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE plans (key TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
     CREATE TABLE plan_versions (
        plan TEXT NOT NULL REFERENCES plans (key),
        version INTEGER NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (plan, version)
     ) STRICT;
     CREATE TABLE subscriptions (
        id TEXT PRIMARY KEY,
        customer TEXT NOT NULL REFERENCES customers (key),
        doc TEXT NOT NULL
     ) STRICT;
     CREATE INDEX subscriptions_by_customer ON subscriptions (customer);
     CREATE TABLE invoices (
        id TEXT PRIMARY KEY,
        customer TEXT NOT NULL REFERENCES customers (key),
        subscription TEXT NOT NULL REFERENCES subscriptions (id),
        period_start_ms INTEGER NOT NULL,
        period_end_ms INTEGER NOT NULL,
        status TEXT NOT NULL,
        number TEXT UNIQUE,
        doc TEXT NOT NULL,
        grace_until_ms INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        finalized_ms INTEGER,
        paid_ms INTEGER,
        voided_ms INTEGER,
        UNIQUE (subscription, period_start_ms)
     ) STRICT;
     CREATE INDEX invoices_by_customer ON invoices (customer, period_start_ms);
     CREATE TRIGGER invoices_final_is_final BEFORE UPDATE OF doc, customer, subscription,
        period_start_ms, period_end_ms, number, finalized_ms ON invoices
        WHEN OLD.status != 'draft'
        BEGIN SELECT RAISE(ABORT, 'a finalized invoice is immutable'); END;
     CREATE TABLE invoice_numbers (year INTEGER PRIMARY KEY, last INTEGER NOT NULL) STRICT;
     CREATE TABLE credit_grants (
        id TEXT PRIMARY KEY,
        customer TEXT NOT NULL REFERENCES customers (key),
        doc TEXT NOT NULL
     ) STRICT;
     CREATE INDEX credit_grants_by_customer ON credit_grants (customer);
     CREATE TABLE ledger_entries (
        seq INTEGER PRIMARY KEY,
        customer TEXT NOT NULL REFERENCES customers (key),
        doc TEXT NOT NULL
     ) STRICT;
     CREATE INDEX ledger_entries_by_customer ON ledger_entries (customer, seq);",
    // 3: entitlement overrides per customer; alert rules, where each rule stands per
    // customer, and the log of what fired and recovered.
    "CREATE TABLE entitlement_overrides (
        customer TEXT NOT NULL REFERENCES customers (key),
        feature TEXT NOT NULL,
        doc TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (customer, feature)
     ) STRICT;
     CREATE TABLE alert_rules (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
     CREATE TABLE alert_states (
        rule TEXT NOT NULL,
        customer TEXT NOT NULL,
        period_start_ms INTEGER NOT NULL,
        triggered INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (rule, customer)
     ) STRICT;
     CREATE TABLE alert_events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        rule TEXT NOT NULL,
        customer TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        doc TEXT NOT NULL
     ) STRICT;
     CREATE INDEX alert_events_by_rule ON alert_events (rule, seq);
     CREATE INDEX alert_events_by_customer ON alert_events (customer, seq);",
    // 4: webhooks. The outbox (messages, written in the transaction of the change that caused
    // them), one delivery per message and endpoint (and per replay), and every attempt's log.
    "CREATE TABLE webhook_endpoints (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        description TEXT NOT NULL,
        event_types TEXT NOT NULL,
        secret TEXT NOT NULL,
        previous_secret TEXT,
        previous_secret_until_ms INTEGER,
        enabled INTEGER NOT NULL,
        disabled_reason TEXT,
        consecutive_failures INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE webhook_messages (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_ms INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX webhook_messages_by_type ON webhook_messages (type, seq);
     CREATE TABLE webhook_deliveries (
        id TEXT PRIMARY KEY,
        message_seq INTEGER NOT NULL REFERENCES webhook_messages (seq),
        endpoint_id TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_ms INTEGER NOT NULL,
        last_http_status INTEGER,
        last_error TEXT,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        delivered_ms INTEGER
     ) STRICT;
     CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_ms);
     CREATE INDEX webhook_deliveries_by_message ON webhook_deliveries (message_seq);
     CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, status);
     CREATE TABLE webhook_attempts (
        seq INTEGER PRIMARY KEY,
        delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id),
        at_ms INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        http_status INTEGER,
        error TEXT
     ) STRICT;
     CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, seq);",
    // 5: IP metadata and traffic inspection. Allocations keep their history (closing one sets
    // valid_to); every change to them, to attribution sources and to inspection rules is
    // recorded in audit_log (who, when, before/after as JSON).
    "CREATE TABLE ip_allocations (
        id TEXT PRIMARY KEY,
        customer TEXT NOT NULL,
        cidr TEXT NOT NULL,
        valid_from_ms INTEGER NOT NULL,
        valid_to_ms INTEGER,
        created_ms INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX ip_allocations_by_cidr ON ip_allocations (cidr, valid_from_ms);
     CREATE INDEX ip_allocations_by_customer ON ip_allocations (customer);
     CREATE TABLE ip_attribution_sources (
        source TEXT PRIMARY KEY,
        address_field TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE inspect_rule_versions (
        version INTEGER PRIMARY KEY,
        doc TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        created_by TEXT NOT NULL
     ) STRICT;
     CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        object TEXT NOT NULL,
        action TEXT NOT NULL,
        before TEXT,
        after TEXT
     ) STRICT;
     CREATE INDEX audit_log_by_kind ON audit_log (kind, seq);",
    // 6: credit notes. A note is numbered when issued (gapless per year); an issued or rejected
    // note never changes.
    "CREATE TABLE credit_notes (
        id TEXT PRIMARY KEY,
        invoice TEXT NOT NULL REFERENCES invoices (id),
        customer TEXT NOT NULL REFERENCES customers (key),
        number TEXT UNIQUE,
        status TEXT NOT NULL,
        origin TEXT NOT NULL,
        doc TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        decided_ms INTEGER,
        decided_by TEXT
     ) STRICT;
     CREATE INDEX credit_notes_by_invoice ON credit_notes (invoice, created_ms);
     CREATE INDEX credit_notes_by_status ON credit_notes (status, id);
     CREATE INDEX credit_notes_by_customer ON credit_notes (customer, id);
     CREATE TABLE credit_note_numbers (year INTEGER PRIMARY KEY, last INTEGER NOT NULL) STRICT;
     CREATE TRIGGER credit_notes_final_is_final BEFORE UPDATE ON credit_notes
        WHEN OLD.status != 'pending_approval'
        BEGIN SELECT RAISE(ABORT, 'an issued or rejected credit note is immutable'); END;",
    // 7: payment providers. `provider_calls` is the outbox of outgoing calls (one per object
    // and version); `provider_call_steps` records each request's intent before it is sent and
    // its outcome (the provider's id) after, so a retry resumes after the last recorded step;
    // `provider_objects` maps Tollgate objects to the provider's and keeps what the provider
    // says about an invoice's money; `provider_events` holds every webhook event id processed.
    "CREATE TABLE provider_calls (
        id TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        kind TEXT NOT NULL,
        object_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_ms INTEGER NOT NULL,
        leased_until_ms INTEGER,
        last_error TEXT,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        done_ms INTEGER,
        UNIQUE (provider, kind, object_id, version)
     ) STRICT;
     CREATE INDEX provider_calls_due ON provider_calls (status, next_attempt_ms);
     CREATE TABLE provider_call_steps (
        call_id TEXT NOT NULL REFERENCES provider_calls (id),
        step TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        provider_id TEXT,
        sent_ms INTEGER NOT NULL,
        done_ms INTEGER,
        PRIMARY KEY (call_id, step)
     ) STRICT;
     CREATE INDEX provider_call_steps_unknown ON provider_call_steps (step)
        WHERE provider_id IS NULL;
     CREATE TABLE provider_call_attempts (
        seq INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL REFERENCES provider_calls (id),
        at_ms INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        step TEXT,
        http_status INTEGER,
        error TEXT
     ) STRICT;
     CREATE INDEX provider_call_attempts_by_call ON provider_call_attempts (call_id, seq);
     CREATE TABLE provider_objects (
        provider TEXT NOT NULL,
        kind TEXT NOT NULL,
        tollgate_key TEXT NOT NULL,
        provider_id TEXT NOT NULL,
        customer_provider_id TEXT,
        state TEXT,
        amount_due_minor INTEGER NOT NULL DEFAULT 0,
        amount_paid_minor INTEGER NOT NULL DEFAULT 0,
        amount_refunded_minor INTEGER NOT NULL DEFAULT 0,
        amount_disputed_minor INTEGER NOT NULL DEFAULT 0,
        failed_attempts INTEGER NOT NULL DEFAULT 0,
        charge_id TEXT,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (provider, kind, tollgate_key)
     ) STRICT;
     CREATE UNIQUE INDEX provider_objects_by_provider_id ON provider_objects (provider, kind, provider_id);
     CREATE INDEX provider_objects_by_charge ON provider_objects (provider, charge_id);
     CREATE TABLE provider_events (
        provider TEXT NOT NULL,
        event_id TEXT NOT NULL,
        type TEXT NOT NULL,
        received_ms INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        tollgate_invoice TEXT,
        PRIMARY KEY (provider, event_id)
     ) STRICT;",
    // 8: refunds and reconciliation. A refund reserves its amount while pending or succeeded;
    // once final it never changes. A reconciliation run keeps its whole report.
    "CREATE TABLE refunds (
        id TEXT PRIMARY KEY,
        invoice TEXT NOT NULL REFERENCES invoices (id),
        customer TEXT NOT NULL REFERENCES customers (key),
        status TEXT NOT NULL,
        method TEXT NOT NULL,
        amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
        currency TEXT NOT NULL,
        origin TEXT NOT NULL,
        origin_ref TEXT,
        reason TEXT NOT NULL,
        memo TEXT NOT NULL,
        provider TEXT,
        provider_refund_id TEXT,
        failure TEXT,
        created_by TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        done_ms INTEGER
     ) STRICT;
     CREATE INDEX refunds_by_invoice ON refunds (invoice, created_ms);
     CREATE INDEX refunds_by_status ON refunds (status, id);
     CREATE INDEX refunds_by_customer ON refunds (customer, id);
     CREATE UNIQUE INDEX refunds_by_provider_id ON refunds (provider, provider_refund_id)
        WHERE provider_refund_id IS NOT NULL;
     CREATE TRIGGER refunds_final_is_final BEFORE UPDATE ON refunds
        WHEN OLD.status != 'pending'
        BEGIN SELECT RAISE(ABORT, 'a refund in a final status is immutable'); END;
     CREATE TABLE reconciliation_runs (
        id TEXT PRIMARY KEY,
        period TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        finished_ms INTEGER NOT NULL,
        differences INTEGER NOT NULL,
        unexplained INTEGER NOT NULL,
        doc TEXT NOT NULL
     ) STRICT;
     CREATE INDEX reconciliation_runs_by_period ON reconciliation_runs (period, started_ms);",
    // 9: Orb. `orb_cursor` (one row) is how far the accepted-event log has been forwarded:
    // every event with a sequence number at or below `after_seq` was acknowledged by Orb (or
    // is not mapped). `orb_plan` / `orb_plan_parts` hold the batch being sent (its log range,
    // the late cutoff it was split with, and per part where it stands), so a batch is sent
    // again exactly as planned after a crash. `orb_invoices` keeps the details of invoices
    // read back from Orb (the money is in `provider_objects`). The index lets the forwarder
    // start reading the log at its cursor.
    "CREATE INDEX event_frames_by_first_seq ON event_frames (first_event_seq);
     CREATE TABLE orb_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        after_seq INTEGER NOT NULL,
        forwarded INTEGER NOT NULL,
        skipped INTEGER NOT NULL,
        batches INTEGER NOT NULL,
        backfills INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        stopped_code TEXT,
        last_error TEXT,
        last_http_status INTEGER,
        next_attempt_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE orb_plan (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        after_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        late_before_ms INTEGER NOT NULL,
        skipped INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE orb_plan_parts (
        part INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        customer TEXT,
        timeframe_start_ms INTEGER,
        timeframe_end_ms INTEGER,
        events INTEGER NOT NULL,
        state TEXT NOT NULL,
        backfill_key TEXT,
        backfill_id TEXT
     ) STRICT;
     CREATE TABLE orb_invoices (
        orb_invoice_id TEXT PRIMARY KEY,
        customer TEXT NOT NULL,
        orb_customer_id TEXT,
        number TEXT,
        status TEXT NOT NULL,
        currency TEXT NOT NULL,
        invoice_date_ms INTEGER,
        total_minor INTEGER NOT NULL,
        amount_due_minor INTEGER NOT NULL,
        pulled_ms INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX orb_invoices_by_customer ON orb_invoices (customer, invoice_date_ms);",
    // 10: Stripe Billing meter events. `stripe_meter_cursor` (one row) is how far the
    // accepted-event log has been forwarded to Stripe's meter events: every event at or below
    // `after_seq` was acknowledged by Stripe, passed over (not mapped, outside Stripe's
    // timestamp window, or a value Stripe cannot take; each counted), or parked in
    // `stripe_meter_waiting` because its customer has no Stripe id yet.
    "CREATE TABLE stripe_meter_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        after_seq INTEGER NOT NULL,
        forwarded INTEGER NOT NULL,
        duplicates INTEGER NOT NULL,
        skipped INTEGER NOT NULL,
        out_of_window INTEGER NOT NULL,
        invalid INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        stopped_code TEXT,
        last_error TEXT,
        last_http_status INTEGER,
        last_passed_over TEXT,
        next_attempt_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE stripe_meter_waiting (
        seq INTEGER PRIMARY KEY,
        customer TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        since_ms INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX stripe_meter_waiting_by_customer ON stripe_meter_waiting (customer, seq);
     CREATE INDEX stripe_meter_waiting_by_time ON stripe_meter_waiting (time_ms);",
];

/// The schema version this binary writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "schema version {current} is newer than {SCHEMA_VERSION}"
            )),
        ));
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
    }
    Ok(())
}
