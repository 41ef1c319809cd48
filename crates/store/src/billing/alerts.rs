//! Alerts at run time: rules in the database, their evaluation, and the log of what fired.
//!
//! Owns: the `alert_rules`, `alert_states` and `alert_events` tables, and [`evaluate`]: one pass
//! over every enabled rule and every customer it covers, plus the `entitlement.exceeded` notices
//! of metered limits. Each pass reads values (usage from the rollups, running charges from the
//! upcoming invoice, hourly usage for the unusual-usage test), lets
//! `tollgate_core::alert::step` decide the transitions, and commits the new states and the
//! events in one transaction, so a rule fires once however often the pass runs, across
//! restarts too. Does not own: the decisions (`tollgate_core::alert`).
//!
//! Cost per pass: one rollup query per (usage rule, customer); one upcoming-invoice pricing per
//! (spend rule, customer), which reads the customer's invoices; one hourly query per
//! (unusual-usage rule, customer); one rollup query per metered grant of every subscribed
//! customer. The customer views come from the entitlement [`Checker`] cache.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{OptionalExtension, params};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_core::alert::{
    self, AlertId, AlertRule, AlertState, Condition, Threshold, Transition,
};
use tollgate_core::billing::CustomerKey;
use tollgate_core::entitlement::{Grant, LimitPeriod};
use tollgate_core::limits::ALERT_RULES_MAX;
use tollgate_core::time::{HOUR_MS, UnixMs};
use tollgate_core::usage::{UsageQuery, WindowSize};
use tollgate_core::webhook::EventType;

use super::entitlements::{CheckError, Checker, metered_usage};
use super::{BillingStore, BillingStoreError, from_json, new_id_hex, not_found, to_json};
use crate::Engine;

/// What fired or recovered, as logged and announced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// `alev_…`.
    pub id: String,
    /// Order of logging.
    pub seq: i64,
    /// The rule (`alr_…`), or `entitlement:<feature>` for a limit reached.
    pub rule: String,
    /// What the event is: `alert.triggered`, `alert.recovered` or `entitlement.exceeded`.
    pub event_type: String,
    /// The customer.
    pub customer: CustomerKey,
    /// Start of the period (or hour) it belongs to.
    pub period_start: UnixMs,
    /// The value observed.
    #[serde(with = "rust_decimal::serde::str")]
    pub value: Decimal,
    /// The threshold it was compared with.
    #[serde(with = "rust_decimal::serde::str")]
    pub threshold: Decimal,
    /// What was measured: the meter, `spend:<currency>` or the feature.
    pub subject: String,
    /// When it was logged.
    pub at: UnixMs,
}

/// One value compared with one threshold for one customer, before the state machine.
#[derive(Clone, Debug)]
struct Observation {
    rule: String,
    /// `alert` for rules, `entitlement` for limits (which announce only when reached).
    kind: Kind,
    customer: CustomerKey,
    period_start: UnixMs,
    value: Decimal,
    threshold: Decimal,
    above: bool,
    subject: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Alert,
    Entitlement,
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EvalReport {
    /// (rule or limit, customer) pairs compared.
    pub observations: usize,
    /// Events logged (and announced).
    pub events: Vec<AlertEvent>,
    /// Pairs that could not be evaluated, with why (e.g. a percent-of-limit rule for a
    /// customer without that limit).
    pub skipped: Vec<String>,
}

/// Filters of the event log.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only this rule's.
    pub rule: Option<String>,
    /// Only this customer's.
    pub customer: Option<CustomerKey>,
    /// After this sequence number (paging).
    pub after_seq: i64,
    /// At most this many.
    pub limit: usize,
}

impl BillingStore {
    /// Creates an alert rule.
    pub fn create_alert(&self, rule: &AlertRule) -> Result<(), BillingStoreError> {
        rule.validate().map_err(|e| BillingStoreError::Invalid {
            code: e.code(),
            message: e.to_string(),
        })?;
        self.write(|tx| {
            let n: i64 = tx.query_row("SELECT COUNT(*) FROM alert_rules", [], |r| r.get(0))?;
            if usize::try_from(n).unwrap_or(usize::MAX) >= ALERT_RULES_MAX {
                return Err(BillingStoreError::Invalid {
                    code: "alert_rules_max",
                    message: format!("at most {ALERT_RULES_MAX} alert rules"),
                });
            }
            if let Some(c) = &rule.customer {
                super::customer_in(tx, c)?;
            }
            tx.execute(
                "INSERT INTO alert_rules (id, doc) VALUES (?1, ?2)",
                params![rule.id.0, to_json(rule)?],
            )?;
            Ok(())
        })
    }

    /// One rule.
    pub fn alert(&self, id: &str) -> Result<AlertRule, BillingStoreError> {
        self.read(|c| alert_in(c, id))
    }

    /// Every rule, by id.
    pub fn alerts(&self) -> Result<Vec<AlertRule>, BillingStoreError> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT doc FROM alert_rules ORDER BY id")?;
            let docs = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            docs.iter().map(|d| from_json("alert", d)).collect()
        })
    }

    /// Turns a rule on or off; off also forgets where it stood, so turning it on again
    /// starts afresh.
    pub fn set_alert_enabled(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<AlertRule, BillingStoreError> {
        self.write(|tx| {
            let mut rule = alert_in(tx, id)?;
            rule.enabled = enabled;
            tx.execute(
                "UPDATE alert_rules SET doc = ?2 WHERE id = ?1",
                params![id, to_json(&rule)?],
            )?;
            if !enabled {
                tx.execute("DELETE FROM alert_states WHERE rule = ?1", params![id])?;
            }
            Ok(rule)
        })
    }

    /// Deletes a rule and where it stood; its logged events stay.
    pub fn delete_alert(&self, id: &str) -> Result<(), BillingStoreError> {
        self.write(|tx| {
            if tx.execute("DELETE FROM alert_rules WHERE id = ?1", params![id])? == 0 {
                return Err(not_found("alert", id));
            }
            tx.execute("DELETE FROM alert_states WHERE rule = ?1", params![id])?;
            Ok(())
        })
    }

    /// Logged events, oldest first.
    pub fn alert_events(&self, f: &EventFilter) -> Result<Vec<AlertEvent>, BillingStoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT seq, doc FROM alert_events
                 WHERE seq > ?1 AND (?2 IS NULL OR rule = ?2) AND (?3 IS NULL OR customer = ?3)
                 ORDER BY seq LIMIT ?4",
            )?;
            let rows = stmt
                .query_map(
                    params![
                        f.after_seq,
                        f.rule,
                        f.customer.as_ref().map(CustomerKey::as_str),
                        i64::try_from(f.limit).unwrap_or(i64::MAX)
                    ],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            rows.iter()
                .map(|(seq, doc)| {
                    let mut e: AlertEvent = from_json("alert event", doc)?;
                    e.seq = *seq;
                    Ok(e)
                })
                .collect()
        })
    }

    /// Runs the state machine over a pass's observations and commits the new states and the
    /// events, in one transaction.
    fn record(
        &self,
        observations: &[Observation],
        now: UnixMs,
    ) -> Result<Vec<AlertEvent>, BillingStoreError> {
        self.write(|tx| {
            let mut events = Vec::new();
            let mut get = tx.prepare_cached(
                "SELECT period_start_ms, triggered FROM alert_states WHERE rule = ?1 AND customer = ?2",
            )?;
            let mut put = tx.prepare_cached(
                "INSERT INTO alert_states (rule, customer, period_start_ms, triggered, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (rule, customer) DO UPDATE SET
                    period_start_ms = ?3, triggered = ?4, updated_ms = ?5",
            )?;
            let mut log = tx.prepare_cached(
                "INSERT INTO alert_events (id, rule, customer, at_ms, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for o in observations {
                let state: Option<AlertState> = get
                    .query_row(params![o.rule, o.customer.as_str()], |r| {
                        Ok(AlertState {
                            period_start: UnixMs(r.get(0)?),
                            triggered: r.get::<_, i64>(1)? != 0,
                        })
                    })
                    .optional()?;
                let (steps, next) = alert::step(state, o.period_start, o.above);
                if next != state
                    && let Some(n) = next
                {
                    put.execute(params![
                        o.rule,
                        o.customer.as_str(),
                        n.period_start.0,
                        i64::from(n.triggered),
                        now.0
                    ])?;
                }
                for s in steps {
                    let event_type = match (o.kind, s.transition) {
                        (Kind::Alert, Transition::Triggered) => EventType::AlertTriggered,
                        (Kind::Alert, Transition::Recovered) => EventType::AlertRecovered,
                        (Kind::Entitlement, Transition::Triggered) => {
                            EventType::EntitlementExceeded
                        }
                        // A limit's period ended or usage was corrected: nothing to announce.
                        (Kind::Entitlement, Transition::Recovered) => continue,
                    };
                    let e = AlertEvent {
                        id: format!("alev_{}", new_id_hex()),
                        seq: 0,
                        rule: o.rule.clone(),
                        event_type: event_type.as_str().to_owned(),
                        customer: o.customer.clone(),
                        period_start: s.period_start,
                        value: o.value,
                        threshold: o.threshold,
                        subject: o.subject.clone(),
                        at: now,
                    };
                    log.execute(params![
                        e.id,
                        e.rule,
                        e.customer.as_str(),
                        now.0,
                        to_json(&e)?
                    ])?;
                    let mut e = e;
                    e.seq = tx.last_insert_rowid();
                    announce(tx, event_type, &e, now)?;
                    events.push(e);
                }
            }
            Ok(events)
        })
    }
}

/// Writes an alert event to the webhook outbox, in the transaction that logs it.
fn announce(
    tx: &rusqlite::Transaction<'_>,
    event_type: EventType,
    e: &AlertEvent,
    now: UnixMs,
) -> Result<(), BillingStoreError> {
    let data = serde_json::json!({
        "id": e.id,
        "rule": e.rule,
        "customer": e.customer.as_str(),
        "measured": e.subject,
        "period_start": e.period_start.to_rfc3339(),
        "value": e.value.to_string(),
        "threshold": e.threshold.to_string(),
    });
    let message = crate::webhooks::message(event_type, &data, now).map_err(|err| {
        crate::StoreError::Corrupt(format!(
            "alert event {} does not make a message: {err}",
            e.id
        ))
    })?;
    crate::webhooks::enqueue(tx, &message, now)?;
    Ok(())
}

fn alert_in(c: &rusqlite::Connection, id: &str) -> Result<AlertRule, BillingStoreError> {
    let doc: Option<String> = c
        .query_row(
            "SELECT doc FROM alert_rules WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()?;
    from_json("alert", &doc.ok_or_else(|| not_found("alert", id))?)
}

/// A new rule id.
pub fn new_alert_id() -> AlertId {
    AlertId(format!("alr_{}", new_id_hex()))
}

/// One evaluation pass at `now`: every enabled rule for every customer it covers, and the
/// metered limits of every subscribed customer. Commits what changed; returns what fired.
pub fn evaluate(
    engine: &Engine,
    billing: &BillingStore,
    checker: &Checker,
    now: UnixMs,
    acceptance_window_ms: i64,
) -> Result<EvalReport, BillingStoreError> {
    let rules: Vec<AlertRule> = billing
        .alerts()?
        .into_iter()
        .filter(|r| r.enabled)
        .collect();
    let subscribed: BTreeSet<CustomerKey> = billing
        .subscriptions(None)?
        .into_iter()
        .filter(|s| s.phase_at(now).is_some())
        .map(|s| s.customer)
        .collect();
    let mut report = EvalReport::default();
    let mut observations = Vec::new();
    for rule in &rules {
        let customers: Vec<CustomerKey> = match &rule.customer {
            Some(c) => vec![c.clone()],
            None => subscribed.iter().cloned().collect(),
        };
        for customer in customers {
            match observe(
                engine,
                billing,
                checker,
                rule,
                &customer,
                now,
                acceptance_window_ms,
            ) {
                Ok(Some(o)) => observations.push(o),
                Ok(None) => {}
                Err(why) => report
                    .skipped
                    .push(format!("{} / {customer}: {why}", rule.id)),
            }
        }
    }
    for customer in &subscribed {
        limits_reached(engine, billing, checker, customer, now, &mut observations)
            .unwrap_or_else(|e| report.skipped.push(format!("limits / {customer}: {e}")));
    }
    report.observations = observations.len();
    report.events = billing.record(&observations, now)?;
    Ok(report)
}

/// The `entitlement.exceeded` observations of one customer: each metered limit against its
/// usage (reached when `used >= limit`).
fn limits_reached(
    engine: &Engine,
    billing: &BillingStore,
    checker: &Checker,
    customer: &CustomerKey,
    now: UnixMs,
    out: &mut Vec<Observation>,
) -> Result<(), CheckError> {
    let view = checker.view(billing, customer, now)?;
    for (feature, grant, _) in view.grants() {
        let Grant::Metered {
            meter,
            limit,
            period,
            ..
        } = grant
        else {
            continue;
        };
        let Some(p) = view.period(*period, now) else {
            continue;
        };
        let used = metered_usage(engine, customer, meter, p)?;
        out.push(Observation {
            rule: format!("entitlement:{feature}"),
            kind: Kind::Entitlement,
            customer: customer.clone(),
            period_start: p.start,
            value: used,
            threshold: *limit,
            above: used >= *limit,
            subject: feature.to_string(),
        });
    }
    Ok(())
}

/// The value of one rule for one customer now; `Ok(None)` when there is nothing to compare
/// (e.g. no running subscription for a spend rule).
fn observe(
    engine: &Engine,
    billing: &BillingStore,
    checker: &Checker,
    rule: &AlertRule,
    customer: &CustomerKey,
    now: UnixMs,
    acceptance_window_ms: i64,
) -> Result<Option<Observation>, String> {
    let obs = |period_start, value, threshold: Decimal, subject: String| Observation {
        rule: rule.id.0.clone(),
        kind: Kind::Alert,
        customer: customer.clone(),
        period_start,
        value,
        threshold,
        above: value >= threshold,
        subject,
    };
    match &rule.condition {
        Condition::Usage { meter, threshold } => {
            let view = checker
                .view(billing, customer, now)
                .map_err(|e| e.to_string())?;
            if !view.exists() {
                return Err("customer not found".into());
            }
            let period = view
                .period(LimitPeriod::BillingPeriod, now)
                .ok_or("no billing period")?;
            let threshold = match threshold {
                Threshold::Absolute { value } => *value,
                Threshold::PercentOfLimit { feature, percent } => {
                    let limit = view
                        .grants()
                        .find_map(|(f, g, _)| match g {
                            Grant::Metered { limit, .. } if f == feature => Some(*limit),
                            _ => None,
                        })
                        .ok_or_else(|| format!("no metered limit `{feature}`"))?;
                    limit * *percent / Decimal::ONE_HUNDRED
                }
            };
            let used = metered_usage(engine, customer, meter, period).map_err(|e| e.to_string())?;
            Ok(Some(obs(period.start, used, threshold, meter.to_string())))
        }
        Condition::Spend { amount_minor } => {
            let draft = super::run::upcoming(engine, billing, customer, now, acceptance_window_ms)
                .map_err(|e| e.to_string())?;
            Ok(draft.map(|d| {
                obs(
                    d.period.start,
                    Decimal::from(d.total_minor),
                    Decimal::from(*amount_minor),
                    format!("spend:{}", d.currency),
                )
            }))
        }
        Condition::UnusualUsage { meter, params } => {
            let hour = now.0.div_euclid(HOUR_MS) * HOUR_MS - HOUR_MS;
            let hours = i64::from(params.baseline_hours);
            let from = hour - hours * HOUR_MS;
            let values = hourly(
                engine,
                customer,
                meter,
                UnixMs(from),
                UnixMs(hour + HOUR_MS),
            )
            .map_err(|e| e.to_string())?;
            let series: Vec<Decimal> = (0..=hours)
                .map(|i| {
                    values
                        .get(&(from + i * HOUR_MS))
                        .copied()
                        .unwrap_or_default()
                })
                .collect();
            let (baseline, current) = series.split_at(series.len() - 1);
            let current = current.first().copied().unwrap_or_default();
            let j = alert::judge(baseline, current, params);
            Ok(Some(Observation {
                above: j.unusual,
                ..obs(UnixMs(hour), current, j.threshold, meter.to_string())
            }))
        }
    }
}

/// A customer's usage of a meter per UTC hour in `[from, to)`, by hour start.
fn hourly(
    engine: &Engine,
    customer: &CustomerKey,
    meter: &tollgate_core::meter::MeterSlug,
    from: UnixMs,
    to: UnixMs,
) -> Result<BTreeMap<i64, Decimal>, crate::engine::QueryError> {
    let subject = tollgate_core::event::Subject::parse(customer.as_str())
        .map_err(|e| crate::engine::QueryError::Store(crate::StoreError::Corrupt(e.to_string())))?;
    let rows = engine.usage(
        meter,
        &UsageQuery {
            subject: Some(subject),
            from,
            to,
            window: Some(WindowSize::Hour),
            time_zone: jiff::tz::TimeZone::UTC,
            group_by: Vec::new(),
        },
    )?;
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry(r.window_start.0).or_default() += r.value;
    }
    Ok(out)
}
