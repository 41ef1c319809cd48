//! Entitlements at run time: per-customer overrides in the database, and the checker that
//! answers "may this customer do this now?" from memory.
//!
//! Owns: the `entitlement_overrides` table, and [`Checker`]: a cache of each customer's
//! resolved grants (plan version of the running subscription + overrides) and current billing
//! period, reloaded when a write that can change this customer's grants commits (the customer,
//! its subscriptions or overrides, or any plan version: [`BillingStore::grants_unchanged_since`];
//! invoice and alert writes, and changes to other customers, leave it alone) or the cached
//! view expires (its period ends, or after between half and all of [`VIEW_TTL_MS`], spread by
//! customer so that views loaded together do not all expire together, so phase changes and
//! trial ends scheduled in the past are picked up). Usage comes straight from the engine's rollups and
//! the session gauge, which the apply thread updates before an ingest answer is sent: an event
//! is visible to checks as soon as its batch is acknowledged. Does not own: the decision
//! (`tollgate_core::entitlement::decide`).

use std::sync::Arc;

use jiff::tz::TimeZone;
use parking_lot::RwLock;
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

use super::{BillingStore, BillingStoreError, customer_in, from_json, not_found, to_json};
use crate::Engine;
use crate::engine::QueryError;

/// Longest a cached view of a customer's grants is used before it is reloaded (ms).
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

    /// What a customer is granted at `now`, and the current billing period of its running
    /// subscription (if any).
    pub fn grants_at(
        &self,
        customer: &CustomerKey,
        now: UnixMs,
    ) -> Result<(Customer, Resolved, Option<Period>), BillingStoreError> {
        self.read(|c| {
            let cust = customer_in(c, customer)?;
            let overrides = overrides_in(c, customer)?;
            let subs = super::subscriptions_in(c, Some(customer))?;
            let running = subs.iter().find_map(|s| s.phase_at(now).map(|p| (s, p)));
            let Some((sub, phase)) = running else {
                return Ok((cust, entitlement::resolve(&[], &overrides), None));
            };
            let version = super::plan_version_in(c, &phase.plan, phase.version)?;
            let first = sub.phases.first().map_or(&phase.plan, |p| &p.plan);
            let interval = super::plan_in(c, first)?.interval;
            let period = Cycle::new(&cust, interval).period_containing(now)?;
            Ok((
                cust,
                entitlement::resolve(&version.entitlements, &overrides),
                Some(period),
            ))
        })
    }
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
    /// Reload after this instant.
    expires: UnixMs,
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
#[derive(Default)]
pub struct Checker {
    views: RwLock<HashMap<CustomerKey, Arc<CustomerView>>>,
}

/// Most customer views kept; past it the cache is emptied and refilled on demand (a crude
/// bound, reached only by far more distinct customers than one server checks).
pub const VIEWS_MAX: usize = 1_000_000;

impl Checker {
    /// An empty checker.
    pub fn new() -> Checker {
        Checker::default()
    }

    /// The customer's cached grants, reloaded when billing changed or the view expired.
    pub fn view(
        &self,
        billing: &BillingStore,
        customer: &CustomerKey,
        now: UnixMs,
    ) -> Result<Arc<CustomerView>, BillingStoreError> {
        let generation = billing.generation();
        if let Some(v) = self.views.read().get(customer)
            && billing.grants_unchanged_since(customer, v.generation)
            && now < v.expires
        {
            return Ok(Arc::clone(v));
        }
        let ttl = view_ttl_ms(customer);
        let view = match billing.grants_at(customer, now) {
            Ok((cust, grants, billing_period)) => {
                let month_end =
                    entitlement::period_of(LimitPeriod::Month, now, cust.time_zone.tz(), None)
                        .map_or(UnixMs(now.0 + ttl), |p| p.end);
                let period_end = billing_period.map_or(month_end, |p| p.end.min(month_end));
                CustomerView {
                    generation,
                    expires: UnixMs((now.0 + ttl).min(period_end.0)),
                    found: Some(Found {
                        zone: cust.time_zone,
                        grants,
                        billing: billing_period,
                    }),
                }
            }
            Err(BillingStoreError::NotFound {
                what: "customer", ..
            }) => CustomerView {
                generation,
                expires: UnixMs(now.0 + ttl),
                found: None,
            },
            Err(e) => return Err(e),
        };
        let view = Arc::new(view);
        let mut views = self.views.write();
        if views.len() >= VIEWS_MAX {
            views.clear();
        }
        views.insert(customer.clone(), Arc::clone(&view));
        Ok(view)
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
