//! Entitlements at run time: per-customer overrides in the database, and the checker that
//! answers "may this customer do this now?" from memory.
//!
//! Owns: the `entitlement_overrides` table, and [`Checker`]: a cache of each customer's
//! resolved grants (plan version of the running subscription + overrides) and current billing
//! period. A view is reloaded before use when a write that can change this customer's grants
//! committed (the customer, its subscriptions or overrides, or any plan version:
//! [`BillingStore::grants_unchanged_since`]; invoice and alert writes, and changes to other
//! customers, leave it alone) or it expired (its period ended, or a scheduled phase or end of
//! a subscription took effect). [`Checker::refresh`], run in the background by the server,
//! loads views before checks need them: every customer at start, each customer a write
//! changed, and views older than between half and all of [`VIEW_TTL_MS`] (spread by customer),
//! which catches changes made by another process. Usage comes straight from the engine's rollups and
//! the session gauge, which the apply thread updates before an ingest answer is sent: an event
//! is visible to checks as soon as its batch is acknowledged. Does not own: the decision
//! (`tollgate_core::entitlement::decide`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::tz::TimeZone;
use parking_lot::{Mutex, RwLock};
use rusqlite::params;
use rust_decimal::Decimal;
use std::collections::HashMap;
use tollgate_core::billing::{Customer, CustomerKey, Cycle, Period, ZoneName};
use tollgate_core::entitlement::{
    self, Decision, Entitlement, FeatureKey, Grant, GrantSource, LimitPeriod, Resolved, Usage,
};
use tollgate_core::limits::ENTITLEMENTS_MAX;
use tollgate_core::time::UnixMs;
use tollgate_core::usage::UsageQuery;

use super::{
    BillingStore, BillingStoreError, GrantChangesAfter, customer_in, from_json, not_found, to_json,
};
use crate::Engine;
use crate::engine::QueryError;

/// Longest a cached view of a customer's grants is used before it is reloaded in the
/// background (ms).
pub const VIEW_TTL_MS: i64 = 60_000;

/// How long `customer`'s view lives: between half and all of [`VIEW_TTL_MS`], fixed per
/// customer (a hash of the key), so the views of many customers loaded in the same second
/// (after a restart or a plan change) are reloaded spread over half a minute, not at once.
fn view_ttl_ms(customer: &CustomerKey) -> i64 {
    let half = VIEW_TTL_MS / 2;
    let spread = xxhash_rust::xxh3::xxh3_64(customer.as_str().as_bytes()) % half.unsigned_abs();
    half + i64::try_from(spread).unwrap_or(0)
}

impl BillingStore {
    /// Sets (creates or replaces) a customer's override of one feature.
    pub fn set_override(
        &self,
        customer: &CustomerKey,
        entitlement: &Entitlement,
        now: UnixMs,
    ) -> Result<(), BillingStoreError> {
        entitlement
            .grant
            .validate()
            .map_err(tollgate_core::billing::BillingError::from)?;
        self.write_grants(Some(customer), |tx| {
            customer_in(tx, customer)?;
            let count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM entitlement_overrides WHERE customer = ?1 AND feature != ?2",
                params![customer.as_str(), entitlement.feature.as_str()],
                |r| r.get(0),
            )?;
            if usize::try_from(count).unwrap_or(usize::MAX) >= ENTITLEMENTS_MAX {
                return Err(tollgate_core::billing::BillingError::from(
                    entitlement::EntitlementError::TooMany {
                        max: ENTITLEMENTS_MAX,
                    },
                )
                .into());
            }
            tx.execute(
                "INSERT INTO entitlement_overrides (customer, feature, doc, updated_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (customer, feature) DO UPDATE SET doc = ?3, updated_ms = ?4",
                params![
                    customer.as_str(),
                    entitlement.feature.as_str(),
                    to_json(entitlement)?,
                    now.0
                ],
            )?;
            Ok(())
        })
    }

    /// Removes a customer's override; the plan's grant (if any) applies again.
    pub fn delete_override(
        &self,
        customer: &CustomerKey,
        feature: &FeatureKey,
    ) -> Result<(), BillingStoreError> {
        self.write_grants(Some(customer), |tx| {
            let n = tx.execute(
                "DELETE FROM entitlement_overrides WHERE customer = ?1 AND feature = ?2",
                params![customer.as_str(), feature.as_str()],
            )?;
            if n == 0 {
                return Err(not_found(
                    "entitlement override",
                    format!("{customer}/{feature}"),
                ));
            }
            Ok(())
        })
    }

    /// A customer's overrides, by feature.
    pub fn overrides(&self, customer: &CustomerKey) -> Result<Vec<Entitlement>, BillingStoreError> {
        self.read(|c| overrides_in(c, customer))
    }

    /// What a customer is granted at `now`, the current billing period of its running
    /// subscription (if any), and when a scheduled change next alters the grants.
    pub fn grants_at(
        &self,
        customer: &CustomerKey,
        now: UnixMs,
    ) -> Result<GrantsAt, BillingStoreError> {
        self.read(|c| {
            let cust = customer_in(c, customer)?;
            let overrides = overrides_in(c, customer)?;
            let subs = super::subscriptions_in(c, Some(customer))?;
            let next_change = subs.iter().filter_map(|s| next_change_of(s, now)).min();
            let running = subs.iter().find_map(|s| s.phase_at(now).map(|p| (s, p)));
            let Some((sub, phase)) = running else {
                return Ok(GrantsAt {
                    customer: cust,
                    grants: entitlement::resolve(&[], &overrides),
                    billing: None,
                    next_change,
                });
            };
            let version = super::plan_version_in(c, &phase.plan, phase.version)?;
            let first = sub.phases.first().map_or(&phase.plan, |p| &p.plan);
            let interval = super::plan_in(c, first)?.interval;
            let period = Cycle::new(&cust, interval).period_containing(now)?;
            Ok(GrantsAt {
                customer: cust,
                grants: entitlement::resolve(&version.entitlements, &overrides),
                billing: Some(period),
                next_change,
            })
        })
    }
}

/// What [`BillingStore::grants_at`] read.
#[derive(Clone, Debug)]
pub struct GrantsAt {
    /// The customer.
    pub customer: Customer,
    /// Its grants: the running phase's plan version, then its overrides.
    pub grants: Resolved,
    /// The current billing period of its running subscription (if any).
    pub billing: Option<Period>,
    /// The first instant after `now` at which a subscription's phase starts or a subscription
    /// ends, so the grants change without any write (`None`: nothing scheduled).
    pub next_change: Option<UnixMs>,
}

/// When `sub` next changes what it grants after `now`: a phase starting or the end.
fn next_change_of(sub: &tollgate_core::billing::Subscription, now: UnixMs) -> Option<UnixMs> {
    sub.phases
        .iter()
        .map(|p| p.start)
        .chain(sub.ends_at)
        .filter(|t| *t > now)
        .min()
}

fn overrides_in(
    c: &rusqlite::Connection,
    customer: &CustomerKey,
) -> Result<Vec<Entitlement>, BillingStoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT doc FROM entitlement_overrides WHERE customer = ?1 ORDER BY feature",
    )?;
    let docs = stmt
        .query_map(params![customer.as_str()], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    docs.iter()
        .map(|d| from_json("entitlement override", d))
        .collect()
}

/// A customer's grants as the checker sees them.
#[derive(Debug)]
pub struct CustomerView {
    /// The billing store generation it was loaded at.
    generation: u64,
    /// Reload before use from this instant: its billing or calendar period ends, or a
    /// scheduled phase or end of a subscription changes the grants.
    expires: UnixMs,
    /// From this instant the view is still used, and reloaded in the background (it catches
    /// changes no generation counts, such as another process writing the database).
    refresh_after: UnixMs,
    /// Set once the view is queued for its background reload.
    refresh_queued: AtomicBool,
    /// `None` when no such customer exists (cached too, so unknown keys stay cheap).
    found: Option<Found>,
}

#[derive(Debug)]
struct Found {
    zone: ZoneName,
    grants: Resolved,
    billing: Option<Period>,
}

impl CustomerView {
    /// Whether the customer exists.
    pub fn exists(&self) -> bool {
        self.found.is_some()
    }

    /// The customer's grants (empty for an unknown customer).
    pub fn grants(&self) -> impl Iterator<Item = (&FeatureKey, &Grant, GrantSource)> {
        self.found
            .iter()
            .flat_map(|f| f.grants.iter().map(|(k, (g, s))| (k, g, *s)))
    }

    /// The period `which` counts over at `now`, in the customer's zone.
    pub fn period(&self, which: LimitPeriod, now: UnixMs) -> Option<Period> {
        let f = self.found.as_ref()?;
        entitlement::period_of(which, now, f.zone.tz(), f.billing).ok()
    }

    /// The current billing period of a running subscription.
    pub fn billing_period(&self) -> Option<Period> {
        self.found.as_ref().and_then(|f| f.billing)
    }
}

/// Why a check could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No such customer.
    #[error("customer `{0}` not found")]
    CustomerNotFound(String),
    /// Billing state could not be read.
    #[error(transparent)]
    Billing(#[from] BillingStoreError),
    /// The grant's meter is gone, or usage could not be read.
    #[error(transparent)]
    Usage(#[from] QueryError),
}

impl CheckError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            CheckError::CustomerNotFound(_) => "customer_not_found",
            CheckError::Billing(e) => e.code(),
            CheckError::Usage(QueryError::MeterNotFound(_)) => "meter_not_found",
            CheckError::Usage(_) => "usage_unavailable",
        }
    }
}

/// One check's answer, with what it was decided on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The decision.
    pub decision: Decision,
    /// Where the grant came from (`None`: not entitled).
    pub source: Option<GrantSource>,
}

/// One feature of a customer, with its current standing.
#[derive(Clone, Debug)]
pub struct Standing {
    /// The feature.
    pub feature: FeatureKey,
    /// The grant.
    pub grant: Grant,
    /// Plan or override.
    pub source: GrantSource,
    /// What a check of amount 0 answers now.
    pub decision: Decision,
}

/// Answers entitlement checks from memory.
///
/// Views are loaded on a check's path only when none is usable (a customer not seen before,
/// grants changed since, or a period boundary or scheduled change passed). Everything else is
/// loaded by [`Checker::refresh`], which the server runs in the background: every customer
/// at start, each customer whose grants a write changed, and views past `refresh_after`.
#[derive(Default)]
pub struct Checker {
    views: RwLock<HashMap<CustomerKey, Arc<CustomerView>>>,
    /// Customers whose views passed `refresh_after`, for the next [`Checker::refresh`].
    due: Mutex<Vec<CustomerKey>>,
    /// The billing generation whose grant changes the background loads have taken in
    /// (`None`: nothing loaded yet; the first refresh loads every customer).
    loaded_through: Mutex<Option<u64>>,
}

/// Most customer views kept; past it the cache is emptied and refilled on demand (a crude
/// bound, reached only by far more distinct customers than one server checks).
pub const VIEWS_MAX: usize = 1_000_000;

/// Most views waiting for a background reload; past it a view is queued again by a later check.
const DUE_MAX: usize = 100_000;

/// Customers read per page when every view is loaded.
const LOAD_PAGE: usize = 500;

/// What one [`Checker::refresh`] loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Views loaded because the customer's grants changed (or, on the first run, every
    /// customer's).
    pub changed: usize,
    /// Views reloaded because they passed `refresh_after`.
    pub expired: usize,
}

impl Checker {
    /// An empty checker.
    pub fn new() -> Checker {
        Checker::default()
    }

    /// The customer's cached grants; loaded now when none is usable.
    pub fn view(
        &self,
        billing: &BillingStore,
        customer: &CustomerKey,
        now: UnixMs,
    ) -> Result<Arc<CustomerView>, BillingStoreError> {
        if let Some(v) = self.views.read().get(customer)
            && billing.grants_unchanged_since(customer, v.generation)
            && now < v.expires
        {
            if now >= v.refresh_after && !v.refresh_queued.swap(true, Ordering::AcqRel) {
                let mut due = self.due.lock();
                if due.len() < DUE_MAX {
                    due.push(customer.clone());
                } else {
                    v.refresh_queued.store(false, Ordering::Release);
                }
            }
            return Ok(Arc::clone(v));
        }
        self.load(billing, customer, now)
    }

    /// Reads the customer's grants and keeps the view (unless a newer one was kept meanwhile).
    fn load(
        &self,
        billing: &BillingStore,
        customer: &CustomerKey,
        now: UnixMs,
    ) -> Result<Arc<CustomerView>, BillingStoreError> {
        let generation = billing.generation();
        let ttl = view_ttl_ms(customer);
        let refresh_after = UnixMs(now.0 + ttl);
        let view = match billing.grants_at(customer, now) {
            Ok(at) => {
                let month_end = entitlement::period_of(
                    LimitPeriod::Month,
                    now,
                    at.customer.time_zone.tz(),
                    None,
                )
                .map_or(refresh_after, |p| p.end);
                let period_end = at.billing.map_or(month_end, |p| p.end.min(month_end));
                let expires = at.next_change.map_or(period_end, |t| t.min(period_end));
                CustomerView {
                    generation,
                    expires,
                    refresh_after,
                    refresh_queued: AtomicBool::new(false),
                    found: Some(Found {
                        zone: at.customer.time_zone,
                        grants: at.grants,
                        billing: at.billing,
                    }),
                }
            }
            Err(BillingStoreError::NotFound {
                what: "customer", ..
            }) => CustomerView {
                generation,
                expires: refresh_after,
                refresh_after,
                refresh_queued: AtomicBool::new(false),
                found: None,
            },
            Err(e) => return Err(e),
        };
        let view = Arc::new(view);
        let mut views = self.views.write();
        if views.len() >= VIEWS_MAX {
            views.clear();
        }
        match views.get(customer) {
            Some(kept) if kept.generation > view.generation => Ok(Arc::clone(kept)),
            _ => {
                views.insert(customer.clone(), Arc::clone(&view));
                Ok(view)
            }
        }
    }

    /// Background loading, off the checks' path: on the first call every customer's view;
    /// then the views of customers whose grants changed since the last call (every cached
    /// view after a plan version change), and the views queued past `refresh_after`. A check
    /// that comes first still loads its view itself, so nothing is ever answered from grants
    /// older than the last committed write.
    pub fn refresh(
        &self,
        billing: &BillingStore,
        now: UnixMs,
    ) -> Result<Refreshed, BillingStoreError> {
        let mut done = Refreshed::default();
        let generation = billing.generation();
        let since = *self.loaded_through.lock();
        let changed: Vec<CustomerKey> = match since.map(|g| billing.grant_changes_after(g)) {
            None => {
                let mut after: Option<String> = None;
                let mut all = Vec::new();
                // At most as many as the cache keeps: loading more would only empty it again.
                while all.len() < VIEWS_MAX {
                    let page = billing.customer_keys(after.as_deref(), LOAD_PAGE)?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.to_string());
                    all.extend(page);
                }
                all.truncate(VIEWS_MAX);
                all
            }
            Some(GrantChangesAfter::Everyone) => self.views.read().keys().cloned().collect(),
            Some(GrantChangesAfter::Customers(list)) => list,
        };
        // A customer that fails to load does not stop the others; the first error is returned
        // after the pass, and the changes are taken again by the next one.
        let mut failed: Option<BillingStoreError> = None;
        for customer in &changed {
            match self.load(billing, customer, now) {
                Ok(_) => done.changed += 1,
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if failed.is_none() {
            *self.loaded_through.lock() = Some(generation);
        }
        let due = std::mem::take(&mut *self.due.lock());
        for customer in &due {
            match self.load(billing, customer, now) {
                Ok(_) => done.expired += 1,
                Err(e) => {
                    // Queued again by its next check.
                    if let Some(v) = self.views.read().get(customer) {
                        v.refresh_queued.store(false, Ordering::Release);
                    }
                    failed = failed.or(Some(e));
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Checks whether `customer` may use `amount` more of `feature` now.
    pub fn check(
        &self,
        engine: &Engine,
        billing: &BillingStore,
        customer: &CustomerKey,
        feature: &FeatureKey,
        amount: Decimal,
        now: UnixMs,
    ) -> Result<Checked, CheckError> {
        let view = self.view(billing, customer, now)?;
        let found = view
            .found
            .as_ref()
            .ok_or_else(|| CheckError::CustomerNotFound(customer.to_string()))?;
        let Some((grant, source)) = found.grants.get(feature) else {
            return Ok(Checked {
                decision: entitlement::decide(None, amount, None),
                source: None,
            });
        };
        let usage = usage_of(engine, found, customer, grant, now)?;
        Ok(Checked {
            decision: entitlement::decide(Some(grant), amount, usage),
            source: Some(*source),
        })
    }

    /// Every feature a customer has, with its standing now (a check of amount 0 each).
    pub fn standings(
        &self,
        engine: &Engine,
        billing: &BillingStore,
        customer: &CustomerKey,
        now: UnixMs,
    ) -> Result<Vec<Standing>, CheckError> {
        let view = self.view(billing, customer, now)?;
        let found = view
            .found
            .as_ref()
            .ok_or_else(|| CheckError::CustomerNotFound(customer.to_string()))?;
        found
            .grants
            .iter()
            .map(|(feature, (grant, source))| {
                let usage = usage_of(engine, found, customer, grant, now)?;
                Ok(Standing {
                    feature: feature.clone(),
                    grant: grant.clone(),
                    source: *source,
                    decision: entitlement::decide(Some(grant), Decimal::ZERO, usage),
                })
            })
            .collect()
    }
}

/// What a metered or session grant has used now.
fn usage_of(
    engine: &Engine,
    found: &Found,
    customer: &CustomerKey,
    grant: &Grant,
    now: UnixMs,
) -> Result<Option<Usage>, CheckError> {
    match grant {
        Grant::Metered { meter, period, .. } => {
            let period = entitlement::period_of(*period, now, found.zone.tz(), found.billing)
                .map_err(tollgate_core::billing::BillingError::from)
                .map_err(BillingStoreError::from)?;
            let used = metered_usage(engine, customer, meter, period)?;
            Ok(Some(Usage {
                used,
                period: Some(period),
            }))
        }
        Grant::ConcurrentSessions { .. } => Ok(Some(Usage {
            used: Decimal::from(engine.open_sessions(customer.as_str(), now)),
            period: None,
        })),
        Grant::Boolean { .. } | Grant::Static { .. } => Ok(None),
    }
}

/// A customer's usage of a meter over a period, summed over its groups.
pub fn metered_usage(
    engine: &Engine,
    customer: &CustomerKey,
    meter: &tollgate_core::meter::MeterSlug,
    period: Period,
) -> Result<Decimal, QueryError> {
    let subject = tollgate_core::event::Subject::parse(customer.as_str())
        .map_err(|e| QueryError::Store(crate::StoreError::Corrupt(e.to_string())))?;
    let rows = engine.usage(
        meter,
        &UsageQuery {
            subject: Some(subject),
            from: period.start,
            to: period.end,
            window: None,
            time_zone: TimeZone::UTC,
            group_by: Vec::new(),
        },
    )?;
    Ok(rows.iter().map(|r| r.value).sum())
}
