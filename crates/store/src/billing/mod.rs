//! Billing objects in the database: customers, plans and versions, subscriptions, invoices,
//! credit grants and the credit ledger; and the invoice run ([`run`]).
//!
//! Owns: rows and their JSON documents, the uniqueness rules the database enforces (one invoice
//! per subscription and period, one number per invoice, gapless numbers per year), and the
//! transactions that keep a change and its ledger entries together. Does not own: any billing
//! decision — prices, lines, totals, draw-down order and status rules come from
//! `tollgate_core::{pricing, invoice, ledger}`; this module loads their inputs and commits
//! their outputs.
//!
//! Safe to use while the engine runs on the same data directory: it has its own connection.

pub mod alerts;
pub mod credit_notes;
pub mod entitlements;
mod provider_events;
pub use provider_events::EventApplied;
pub mod reconcile;
pub mod refunds;
pub mod run;
pub mod settings;

use std::collections::BTreeMap;
use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tollgate_core::billing::{
    BillingError, Customer, CustomerKey, Plan, PlanKey, PlanVersion, Subscription,
    SubscriptionChange,
};
use tollgate_core::entitlement::Entitlement;
use tollgate_core::invoice::{Catalog, InvoiceChange, InvoiceDraft, InvoiceStatus};
use tollgate_core::ledger::{self, Balance, Entry, Grant};
use tollgate_core::pricing::Price;
use tollgate_core::time::UnixMs;
use tollgate_core::webhook::EventType;

use crate::StoreError;
use crate::keys::random_hex;

/// Most rows one list call returns.
pub const LIST_LIMIT_MAX: usize = 1_000;

/// Why a billing store call failed.
#[derive(Debug, Error)]
pub enum BillingStoreError {
    /// No such object.
    #[error("{what} `{id}` not found")]
    NotFound {
        /// The kind of object.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The object exists already.
    #[error("{what} `{id}` already exists")]
    AlreadyExists {
        /// The kind of object.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A domain rule refused the change.
    #[error(transparent)]
    Domain(#[from] BillingError),
    /// A credit-note rule refused the change.
    #[error(transparent)]
    Credit(#[from] tollgate_core::credit_note::CreditNoteError),
    /// A refund rule refused the change.
    #[error(transparent)]
    Refund(#[from] tollgate_core::refund::RefundError),
    /// The object's state does not allow the change now (409), with its stable code.
    #[error("{message}")]
    Conflict {
        /// The stable code.
        code: &'static str,
        /// For people.
        message: String,
    },
    /// A request broke a rule of a store-level object (alerts), with its stable code.
    #[error("{message}")]
    Invalid {
        /// The stable code.
        code: &'static str,
        /// For people.
        message: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for BillingStoreError {
    fn from(e: rusqlite::Error) -> Self {
        BillingStoreError::Store(StoreError::Sqlite(e))
    }
}

impl BillingStoreError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            BillingStoreError::NotFound { what, .. } => match *what {
                "customer" => "customer_not_found",
                "plan" => "plan_not_found",
                "plan version" => "plan_version_not_found",
                "subscription" => "subscription_not_found",
                "invoice" => "invoice_not_found",
                "invoice line" => "invoice_line_not_found",
                "entitlement override" => "override_not_found",
                "alert" => "alert_not_found",
                "credit note" => "credit_note_not_found",
                "refund" => "refund_not_found",
                "reconciliation report" => "reconciliation_run_not_found",
                _ => "not_found",
            },
            BillingStoreError::AlreadyExists { what, .. } => match *what {
                "customer" => "customer_exists",
                "plan" => "plan_exists",
                "subscription" => "subscription_exists",
                _ => "already_exists",
            },
            BillingStoreError::Domain(e) => e.code(),
            BillingStoreError::Credit(e) => e.code(),
            BillingStoreError::Refund(e) => e.code(),
            BillingStoreError::Conflict { code, .. } | BillingStoreError::Invalid { code, .. } => {
                code
            }
            BillingStoreError::Store(e) => e.code(),
        }
    }
}

fn not_found(what: &'static str, id: impl Into<String>) -> BillingStoreError {
    BillingStoreError::NotFound {
        what,
        id: id.into(),
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String, BillingStoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Corrupt(format!("document does not serialize: {e}")).into())
}

fn from_json<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T, BillingStoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("stored {what} does not decode: {e}")).into())
}

/// A stored invoice: its priced content plus its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// `inv_…`.
    pub id: String,
    /// `TG-2026-000001`, given at finalization, gapless per year.
    pub number: Option<String>,
    /// Status.
    pub status: InvoiceStatus,
    /// The priced content.
    pub content: InvoiceContent,
    /// Until then late events update the draft; then it is finalized.
    pub grace_until: UnixMs,
    /// Created.
    pub created_ms: UnixMs,
    /// Last changed.
    pub updated_ms: UnixMs,
    /// Finalized.
    pub finalized_ms: Option<UnixMs>,
    /// Paid.
    pub paid_ms: Option<UnixMs>,
    /// Voided.
    pub voided_ms: Option<UnixMs>,
}

/// What an invoice charges (the document that becomes immutable at finalization).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceContent {
    /// Lines and totals.
    #[serde(flatten)]
    pub draft: InvoiceDraft,
    /// Prepaid credit applied at finalization.
    pub credits_applied_minor: i64,
    /// `total − credits`.
    pub amount_due_minor: i64,
}

/// Filters of an invoice listing.
#[derive(Clone, Debug, Default)]
pub struct InvoiceFilter {
    /// Only this customer's.
    pub customer: Option<CustomerKey>,
    /// Only with this status.
    pub status: Option<InvoiceStatus>,
    /// Ids after this one (paging).
    pub after: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// Customer grant changes kept for [`BillingStore::grant_changes_after`]; a reader further
/// behind than this is told that every customer's grants may have changed.
pub const GRANT_CHANGE_LOG_MAX: usize = 100_000;

/// The last generation that changed every customer's grants, and each customer's own.
#[derive(Default)]
struct GrantChanges {
    everyone: u64,
    by_customer: rustc_hash::FxHashMap<CustomerKey, u64>,
    /// Customers' changes in generation order (the newest [`GRANT_CHANGE_LOG_MAX`]).
    log: std::collections::VecDeque<(u64, CustomerKey)>,
    /// The newest generation dropped from `log`.
    log_dropped_through: u64,
}

/// Whose grants changed after a generation (see [`BillingStore::grant_changes_after`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantChangesAfter {
    /// Possibly every customer's: a plan version changed, or the change log was passed.
    Everyone,
    /// These customers' (each once, in the order of their last change).
    Customers(Vec<CustomerKey>),
}

/// Access to the billing tables of a data directory.
pub struct BillingStore {
    conn: Mutex<Connection>,
    /// Counts committed writes that can change grants, so caches of billing state
    /// (entitlements) know when to reload.
    generation: std::sync::atomic::AtomicU64,
    /// Which generation last changed what every customer is granted (a plan version), and
    /// which last changed each customer's own (customer, subscriptions, overrides): a change
    /// to one customer leaves the other customers' cached views valid.
    grant_changes: parking_lot::RwLock<GrantChanges>,
    /// Held for the whole of an invoice run, so two runs never decide on the same state.
    run_lock: Mutex<()>,
    checkpointer: crate::checkpoint::Checkpointer,
}

const INVOICE_COLUMNS: &str = "id, number, status, doc, grace_until_ms, created_ms, updated_ms, finalized_ms, paid_ms, voided_ms";

/// An invoice row as read, before its document is decoded.
struct InvoiceRow {
    id: String,
    number: Option<String>,
    status: String,
    doc: String,
    times: [Option<i64>; 6],
}

fn invoice_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InvoiceRow> {
    Ok(InvoiceRow {
        id: r.get(0)?,
        number: r.get(1)?,
        status: r.get(2)?,
        doc: r.get(3)?,
        times: [
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
        ],
    })
}

fn decode_invoice(row: InvoiceRow) -> Result<Invoice, BillingStoreError> {
    let status = InvoiceStatus::parse(&row.status).ok_or_else(|| {
        StoreError::Corrupt(format!("invoice {} has status {}", row.id, row.status))
    })?;
    let [grace, created, updated, finalized, paid, voided] = row.times.map(|t| t.map(UnixMs));
    Ok(Invoice {
        content: from_json("invoice", &row.doc)?,
        id: row.id,
        number: row.number,
        status,
        grace_until: grace.unwrap_or(UnixMs(0)),
        created_ms: created.unwrap_or(UnixMs(0)),
        updated_ms: updated.unwrap_or(UnixMs(0)),
        finalized_ms: finalized,
        paid_ms: paid,
        voided_ms: voided,
    })
}

impl BillingStore {
    /// Opens the billing tables of a data directory (creating the database if needed).
    ///
    /// This connection never checkpoints the WAL itself (a large invoice run would copy tens of
    /// megabytes into the database file inside its commit); a checkpointer thread with its own
    /// connection does it after each write, in the background.
    pub fn open(dir: &Path) -> Result<BillingStore, StoreError> {
        crate::prepare_dir(dir)?;
        let conn = crate::open_db(dir)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = crate::checkpoint::Checkpointer::start(dir)?;
        Ok(BillingStore {
            conn: Mutex::new(conn),
            generation: std::sync::atomic::AtomicU64::new(0),
            grant_changes: parking_lot::RwLock::default(),
            run_lock: Mutex::new(()),
            checkpointer,
        })
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, BillingStoreError>,
    ) -> Result<T, BillingStoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        drop(conn);
        self.checkpointer.poke();
        crate::webhooks::wake_if_enqueued();
        crate::providers::wake_if_enqueued();
        Ok(out)
    }

    /// [`Self::write`] for changes that can change what a customer is granted (customers,
    /// plan versions, subscriptions, overrides): after the commit, bumps the generation and
    /// records it as the last change of `scope`'s grants (`None`: every customer's), so the
    /// entitlement checker reloads what changed. Other writes (invoices, alert states) leave
    /// its cache alone.
    fn write_grants<T>(
        &self,
        scope: Option<&CustomerKey>,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, BillingStoreError>,
    ) -> Result<T, BillingStoreError> {
        let out = self.write(f)?;
        self.grants_changed(scope);
        Ok(out)
    }

    /// Bumps the generation and records it as the last change of `scope`'s grants (`None`:
    /// every customer's). Called after the commit of the change.
    fn grants_changed(&self, scope: Option<&CustomerKey>) {
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        let mut changes = self.grant_changes.write();
        match scope {
            Some(customer) => {
                changes.by_customer.insert(customer.clone(), generation);
                if changes.log.len() >= GRANT_CHANGE_LOG_MAX
                    && let Some((dropped, _)) = changes.log.pop_front()
                {
                    changes.log_dropped_through = dropped;
                }
                changes.log.push_back((generation, customer.clone()));
            }
            None => changes.everyone = generation,
        }
    }

    /// Whose grants changed in writes after `generation` (as read by [`Self::generation`]):
    /// how the entitlement checker loads changed customers' views in the background, before
    /// their next check asks.
    pub fn grant_changes_after(&self, generation: u64) -> GrantChangesAfter {
        let changes = self.grant_changes.read();
        if changes.everyone > generation || changes.log_dropped_through > generation {
            return GrantChangesAfter::Everyone;
        }
        let newer = changes.log.partition_point(|(g, _)| *g <= generation);
        let mut seen = rustc_hash::FxHashSet::default();
        let mut customers: Vec<CustomerKey> = Vec::new();
        for (_, customer) in changes.log.iter().skip(newer).rev() {
            if seen.insert(customer) {
                customers.push(customer.clone());
            }
        }
        customers.reverse();
        GrantChangesAfter::Customers(customers)
    }

    /// Changes whenever a write that can change grants commits (never goes back).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether `customer`'s grants are unchanged since `generation` (as read by
    /// [`Self::generation`] before they were loaded).
    pub fn grants_unchanged_since(&self, customer: &CustomerKey, generation: u64) -> bool {
        let changes = self.grant_changes.read();
        changes.everyone <= generation
            && changes
                .by_customer
                .get(customer)
                .is_none_or(|g| *g <= generation)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, BillingStoreError>,
    ) -> Result<T, BillingStoreError> {
        let conn = self.conn.lock();
        f(&conn)
    }

    // ---- customers ----

    /// Creates a customer.
    pub fn create_customer(&self, customer: &Customer) -> Result<(), BillingStoreError> {
        customer.validate()?;
        self.write_grants(Some(&customer.key), |tx| {
            let n = tx.execute(
                "INSERT INTO customers (key, doc, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (key) DO NOTHING",
                params![
                    customer.key.as_str(),
                    to_json(customer)?,
                    customer.created_ms.0
                ],
            )?;
            if n == 0 {
                return Err(BillingStoreError::AlreadyExists {
                    what: "customer",
                    id: customer.key.to_string(),
                });
            }
            enqueue_customer_sync(tx, &customer.key, customer.created_ms)
        })
    }

    /// Replaces a customer's document (the caller changed what may change).
    pub fn update_customer(
        &self,
        customer: &Customer,
        now: UnixMs,
    ) -> Result<(), BillingStoreError> {
        customer.validate()?;
        self.write_grants(Some(&customer.key), |tx| {
            let n = tx.execute(
                "UPDATE customers SET doc = ?2, updated_ms = ?3 WHERE key = ?1",
                params![customer.key.as_str(), to_json(customer)?, now.0],
            )?;
            if n == 0 {
                return Err(not_found("customer", customer.key.as_str()));
            }
            enqueue_customer_sync(tx, &customer.key, now)
        })
    }

    /// A customer.
    pub fn customer(&self, key: &CustomerKey) -> Result<Customer, BillingStoreError> {
        self.read(|c| customer_in(c, key))
    }

    /// Customers in key order, after `after`.
    pub fn customers(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Customer>, BillingStoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare("SELECT doc FROM customers WHERE key > ?1 ORDER BY key LIMIT ?2")?;
            let docs = stmt
                .query_map(
                    params![after.unwrap_or(""), limit.min(LIST_LIMIT_MAX) as i64],
                    |r| r.get::<_, String>(0),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            docs.iter().map(|d| from_json("customer", d)).collect()
        })
    }

    /// Customer keys in key order, after `after` (without reading their documents).
    pub fn customer_keys(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CustomerKey>, BillingStoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT key FROM customers WHERE key > ?1 ORDER BY key LIMIT ?2")?;
            let keys = stmt
                .query_map(
                    params![after.unwrap_or(""), limit.min(LIST_LIMIT_MAX) as i64],
                    |r| r.get::<_, String>(0),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            keys.iter()
                .map(|k| {
                    CustomerKey::parse(k).map_err(|e| {
                        BillingStoreError::from(StoreError::Corrupt(format!(
                            "customer key {k:?}: {e}"
                        )))
                    })
                })
                .collect()
        })
    }

    // ---- plans ----

    /// Creates a plan (without versions).
    pub fn create_plan(&self, plan: &Plan) -> Result<(), BillingStoreError> {
        self.write(|tx| {
            let n = tx.execute(
                "INSERT INTO plans (key, doc) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                params![plan.key.as_str(), to_json(plan)?],
            )?;
            if n == 0 {
                return Err(BillingStoreError::AlreadyExists {
                    what: "plan",
                    id: plan.key.to_string(),
                });
            }
            Ok(())
        })
    }

    /// A plan.
    pub fn plan(&self, key: &PlanKey) -> Result<Plan, BillingStoreError> {
        self.read(|c| plan_in(c, key))
    }

    /// Every plan, by key.
    pub fn plans(&self) -> Result<Vec<Plan>, BillingStoreError> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT doc FROM plans ORDER BY key")?;
            let docs = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            docs.iter().map(|d| from_json("plan", d)).collect()
        })
    }

    /// Publishes the next version of a plan with these prices and entitlements. Published
    /// versions never change.
    pub fn publish_version(
        &self,
        plan: &PlanKey,
        prices: Vec<Price>,
        entitlements: Vec<Entitlement>,
        now: UnixMs,
    ) -> Result<PlanVersion, BillingStoreError> {
        self.write_grants(None, |tx| {
            plan_in(tx, plan)?;
            let last: Option<i64> = tx.query_row(
                "SELECT MAX(version) FROM plan_versions WHERE plan = ?1",
                params![plan.as_str()],
                |r| r.get(0),
            )?;
            let version = PlanVersion {
                plan: plan.clone(),
                version: u32::try_from(last.unwrap_or(0) + 1).unwrap_or(u32::MAX),
                prices,
                entitlements,
                published_ms: now,
            };
            version.validate()?;
            tx.execute(
                "INSERT INTO plan_versions (plan, version, doc) VALUES (?1, ?2, ?3)",
                params![plan.as_str(), version.version, to_json(&version)?],
            )?;
            Ok(version)
        })
    }

    /// One version, or the latest when `version` is `None`.
    pub fn plan_version(
        &self,
        plan: &PlanKey,
        version: Option<u32>,
    ) -> Result<PlanVersion, BillingStoreError> {
        self.read(|c| {
            let doc: Option<String> = match version {
                Some(v) => c
                    .query_row(
                        "SELECT doc FROM plan_versions WHERE plan = ?1 AND version = ?2",
                        params![plan.as_str(), v],
                        |r| r.get(0),
                    )
                    .optional()?,
                None => c
                    .query_row(
                        "SELECT doc FROM plan_versions WHERE plan = ?1 ORDER BY version DESC LIMIT 1",
                        params![plan.as_str()],
                        |r| r.get(0),
                    )
                    .optional()?,
            };
            let doc = doc.ok_or_else(|| {
                not_found(
                    "plan version",
                    format!("{plan}@{}", version.map_or("latest".into(), |v| v.to_string())),
                )
            })?;
            from_json("plan version", &doc)
        })
    }

    /// Every version of a plan, oldest first.
    pub fn plan_versions(&self, plan: &PlanKey) -> Result<Vec<PlanVersion>, BillingStoreError> {
        self.read(|c| {
            plan_in(c, plan)?;
            let mut stmt =
                c.prepare("SELECT doc FROM plan_versions WHERE plan = ?1 ORDER BY version")?;
            let docs = stmt
                .query_map(params![plan.as_str()], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            docs.iter().map(|d| from_json("plan version", d)).collect()
        })
    }

    /// Every plan version of every plan.
    pub fn catalog(&self) -> Result<(BTreeMap<PlanKey, Plan>, Catalog), BillingStoreError> {
        self.read(catalog_in)
    }

    // ---- subscriptions ----

    /// Creates a subscription. A customer has at most one subscription that has not ended.
    pub fn create_subscription(&self, sub: &Subscription) -> Result<(), BillingStoreError> {
        self.write_grants(Some(&sub.customer), |tx| {
            customer_in(tx, &sub.customer)?;
            for other in subscriptions_in(tx, Some(&sub.customer))? {
                let ends = other.ends_at.unwrap_or(UnixMs(i64::MAX));
                if ends > sub.start() {
                    return Err(BillingStoreError::AlreadyExists {
                        what: "subscription",
                        id: other.id.0,
                    });
                }
            }
            tx.execute(
                "INSERT INTO subscriptions (id, customer, doc) VALUES (?1, ?2, ?3)",
                params![sub.id.0, sub.customer.as_str(), to_json(sub)?],
            )?;
            Ok(())
        })
    }

    /// A subscription.
    pub fn subscription(&self, id: &str) -> Result<Subscription, BillingStoreError> {
        self.read(|c| subscription_in(c, id))
    }

    /// Subscriptions, of one customer or all.
    pub fn subscriptions(
        &self,
        customer: Option<&CustomerKey>,
    ) -> Result<Vec<Subscription>, BillingStoreError> {
        self.read(|c| subscriptions_in(c, customer))
    }

    /// Applies a change to a subscription (checked by the core) and stores it.
    pub fn change_subscription(
        &self,
        id: &str,
        change: SubscriptionChange,
    ) -> Result<Subscription, BillingStoreError> {
        let sub = self.write(|tx| {
            let mut sub = subscription_in(tx, id)?;
            sub.apply(change)?;
            tx.execute(
                "UPDATE subscriptions SET doc = ?2 WHERE id = ?1",
                params![id, to_json(&sub)?],
            )?;
            Ok(sub)
        })?;
        self.grants_changed(Some(&sub.customer));
        Ok(sub)
    }

    // ---- invoices ----

    /// An invoice.
    pub fn invoice(&self, id: &str) -> Result<Invoice, BillingStoreError> {
        self.read(|c| invoice_in(c, id))
    }

    /// Invoices in id order.
    pub fn invoices(&self, filter: &InvoiceFilter) -> Result<Vec<Invoice>, BillingStoreError> {
        self.read(|c| {
            // One customer's invoices through its index; `?1 IS NULL OR …` would scan them all.
            let by = if filter.customer.is_some() {
                "customer = ?1"
            } else {
                "?1 IS NULL"
            };
            let sql = format!(
                "SELECT {INVOICE_COLUMNS} FROM invoices
                 WHERE {by} AND (?2 IS NULL OR status = ?2) AND id > ?3
                 ORDER BY id LIMIT ?4"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt
                .query_map(
                    params![
                        filter.customer.as_ref().map(CustomerKey::as_str),
                        filter.status.map(InvoiceStatus::as_str),
                        filter.after.as_deref().unwrap_or(""),
                        filter.limit.min(LIST_LIMIT_MAX) as i64
                    ],
                    invoice_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(decode_invoice).collect()
        })
    }

    /// Marks a finalized invoice paid, or voids it (giving its credit back), by the core's rules.
    pub fn change_invoice(
        &self,
        id: &str,
        change: InvoiceChange,
        now: UnixMs,
    ) -> Result<Invoice, BillingStoreError> {
        if change == InvoiceChange::Finalize {
            return Err(BillingError::Conflict {
                reason: "invoices are finalized by the invoice run when their grace period ends (POST /v1/invoices/{id}/finalize finalizes early)".into(),
            }
            .into());
        }
        self.write(|tx| change_invoice_in(tx, id, change, now))
    }

    // ---- credits ----

    /// Records a grant and its ledger entries.
    pub fn grant_credit(&self, grant: &Grant) -> Result<(), BillingStoreError> {
        self.write(|tx| {
            let customer = customer_in(tx, &grant.customer)?;
            if customer.currency != grant.currency {
                return Err(BillingError::Invalid {
                    field: "currency",
                    reason: format!("the customer is billed in {}", customer.currency),
                }
                .into());
            }
            let count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM credit_grants WHERE customer = ?1",
                params![grant.customer.as_str()],
                |r| r.get(0),
            )?;
            if usize::try_from(count).unwrap_or(usize::MAX) >= ledger::CUSTOMER_GRANTS_MAX {
                return Err(BillingError::Conflict {
                    reason: format!(
                        "at most {} grants per customer",
                        ledger::CUSTOMER_GRANTS_MAX
                    ),
                }
                .into());
            }
            let entries = ledger::grant_entries(grant, &format!("txn_{}", random_hex(8)))?;
            tx.execute(
                "INSERT INTO credit_grants (id, customer, doc) VALUES (?1, ?2, ?3)",
                params![grant.id, grant.customer.as_str(), to_json(grant)?],
            )?;
            append_entries(tx, &grant.customer, &entries)
        })
    }

    /// A customer's grants and ledger entries.
    pub fn credits(
        &self,
        customer: &CustomerKey,
    ) -> Result<(Vec<Grant>, Vec<Entry>), BillingStoreError> {
        self.read(|c| {
            customer_in(c, customer)?;
            Ok((grants_in(c, customer)?, entries_in(c, customer)?))
        })
    }

    /// A customer's credit balance at `at`.
    pub fn balance(
        &self,
        customer: &CustomerKey,
        at: UnixMs,
    ) -> Result<Balance, BillingStoreError> {
        self.read(|c| {
            let cust = customer_in(c, customer)?;
            let grants = grants_in(c, customer)?;
            let entries = entries_in(c, customer)?;
            Ok(ledger::balance(&grants, &entries, cust.currency, at)?)
        })
    }
}

/// [`BillingStore::change_invoice`] inside an open transaction (also used by provider events).
pub(crate) fn change_invoice_in(
    tx: &Transaction<'_>,
    id: &str,
    change: InvoiceChange,
    now: UnixMs,
) -> Result<Invoice, BillingStoreError> {
    let inv = invoice_in(tx, id)?;
    let status = inv.status.apply(change)?;
    if change == InvoiceChange::Void {
        // Voiding gives back everything the invoice charged; with credit notes out, that would
        // give some of it back twice.
        let notes: i64 = tx.query_row(
            "SELECT COUNT(*) FROM credit_notes WHERE invoice = ?1 AND status != 'rejected'",
            params![id],
            |r| r.get(0),
        )?;
        if notes > 0 {
            return Err(BillingError::Conflict {
                reason: "the invoice has credit notes: credit what is left instead of voiding it"
                    .into(),
            }
            .into());
        }
    }
    let column = match change {
        InvoiceChange::MarkPaid => "paid_ms",
        _ => "voided_ms",
    };
    tx.execute(
        &format!("UPDATE invoices SET status = ?2, {column} = ?3, updated_ms = ?3 WHERE id = ?1"),
        params![id, status.as_str(), now.0],
    )?;
    if change == InvoiceChange::Void {
        let customer = &inv.content.draft.customer;
        let entries = entries_in(tx, customer)?;
        let txn = format!("txn_{}", random_hex(8));
        let back = ledger::reverse(&entries, id, now, &txn);
        append_entries(tx, customer, &back)?;
    }
    let changed = invoice_in(tx, id)?;
    let event = match change {
        InvoiceChange::MarkPaid => EventType::InvoicePaid,
        _ => EventType::InvoiceVoided,
    };
    enqueue_invoice_event(
        tx,
        event,
        (
            changed.id.as_str(),
            changed.number.as_deref(),
            changed.status,
        ),
        &changed.content,
        now,
    )?;
    Ok(changed)
}

fn customer_in(c: &Connection, key: &CustomerKey) -> Result<Customer, BillingStoreError> {
    let doc: Option<String> = c
        .query_row(
            "SELECT doc FROM customers WHERE key = ?1",
            params![key.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    from_json(
        "customer",
        &doc.ok_or_else(|| not_found("customer", key.as_str()))?,
    )
}

fn plan_in(c: &Connection, key: &PlanKey) -> Result<Plan, BillingStoreError> {
    let doc: Option<String> = c
        .query_row(
            "SELECT doc FROM plans WHERE key = ?1",
            params![key.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    from_json("plan", &doc.ok_or_else(|| not_found("plan", key.as_str()))?)
}

fn plan_version_in(
    c: &Connection,
    plan: &PlanKey,
    version: u32,
) -> Result<PlanVersion, BillingStoreError> {
    let doc: Option<String> = c
        .prepare_cached("SELECT doc FROM plan_versions WHERE plan = ?1 AND version = ?2")?
        .query_row(params![plan.as_str(), version], |r| r.get(0))
        .optional()?;
    from_json(
        "plan version",
        &doc.ok_or_else(|| not_found("plan version", format!("{plan}@{version}")))?,
    )
}

fn catalog_in(c: &Connection) -> Result<(BTreeMap<PlanKey, Plan>, Catalog), BillingStoreError> {
    let mut plans = BTreeMap::new();
    let mut stmt = c.prepare("SELECT doc FROM plans")?;
    for doc in stmt.query_map([], |r| r.get::<_, String>(0))? {
        let plan: Plan = from_json("plan", &doc?)?;
        plans.insert(plan.key.clone(), plan);
    }
    let mut catalog = Catalog::new();
    let mut stmt = c.prepare("SELECT doc FROM plan_versions")?;
    for doc in stmt.query_map([], |r| r.get::<_, String>(0))? {
        let v: PlanVersion = from_json("plan version", &doc?)?;
        catalog.insert((v.plan.clone(), v.version), v);
    }
    Ok((plans, catalog))
}

fn subscription_in(c: &Connection, id: &str) -> Result<Subscription, BillingStoreError> {
    let doc: Option<String> = c
        .query_row(
            "SELECT doc FROM subscriptions WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()?;
    from_json(
        "subscription",
        &doc.ok_or_else(|| not_found("subscription", id))?,
    )
}

fn subscriptions_in(
    c: &Connection,
    customer: Option<&CustomerKey>,
) -> Result<Vec<Subscription>, BillingStoreError> {
    let mut stmt = c.prepare(
        "SELECT doc FROM subscriptions WHERE (?1 IS NULL OR customer = ?1) ORDER BY customer, id",
    )?;
    let docs = stmt
        .query_map(params![customer.map(CustomerKey::as_str)], |r| {
            r.get::<_, String>(0)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    docs.iter().map(|d| from_json("subscription", d)).collect()
}

fn invoice_in(c: &Connection, id: &str) -> Result<Invoice, BillingStoreError> {
    let row = c
        .query_row(
            &format!("SELECT {INVOICE_COLUMNS} FROM invoices WHERE id = ?1"),
            params![id],
            invoice_row,
        )
        .optional()?;
    decode_invoice(row.ok_or_else(|| not_found("invoice", id))?)
}

fn grants_in(c: &Connection, customer: &CustomerKey) -> Result<Vec<Grant>, BillingStoreError> {
    let mut stmt =
        c.prepare_cached("SELECT doc FROM credit_grants WHERE customer = ?1 ORDER BY id")?;
    let docs = stmt
        .query_map(params![customer.as_str()], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    docs.iter().map(|d| from_json("credit grant", d)).collect()
}

fn entries_in(c: &Connection, customer: &CustomerKey) -> Result<Vec<Entry>, BillingStoreError> {
    let mut stmt =
        c.prepare_cached("SELECT doc FROM ledger_entries WHERE customer = ?1 ORDER BY seq")?;
    let docs = stmt
        .query_map(params![customer.as_str()], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    docs.iter().map(|d| from_json("ledger entry", d)).collect()
}

fn append_entries(
    tx: &Connection,
    customer: &CustomerKey,
    entries: &[Entry],
) -> Result<(), BillingStoreError> {
    ledger::assert_balanced(entries);
    let mut stmt =
        tx.prepare_cached("INSERT INTO ledger_entries (customer, doc) VALUES (?1, ?2)")?;
    for e in entries {
        stmt.execute(params![customer.as_str(), to_json(e)?])?;
    }
    Ok(())
}

/// Enqueues a customer sync to each configured provider (if any) in the transaction that
/// created or changed the customer; `version` (its `updated_ms`) makes each change a new call.
fn enqueue_customer_sync(
    tx: &Transaction<'_>,
    key: &CustomerKey,
    version: UnixMs,
) -> Result<(), BillingStoreError> {
    for provider in crate::providers::customer_sync_targets() {
        crate::providers::enqueue(
            tx,
            provider,
            tollgate_core::provider::CallKind::SyncCustomer,
            key.as_str(),
            version.0,
            version,
        )?;
    }
    Ok(())
}

/// 16 random hex digits for a new object id.
pub fn new_id_hex() -> String {
    random_hex(8)
}

/// Writes an invoice webhook message (`invoice.finalized`, `invoice.paid`, `invoice.voided`)
/// to the outbox in the transaction that changed the invoice. `data`: the invoice's id, number,
/// status, customer, subscription, period, totals and currency.
pub(crate) fn enqueue_invoice_event(
    tx: &Transaction<'_>,
    event: EventType,
    (id, number, status): (&str, Option<&str>, InvoiceStatus),
    content: &InvoiceContent,
    now: UnixMs,
) -> Result<(), BillingStoreError> {
    let d = &content.draft;
    let data = serde_json::json!({
        "id": id,
        "number": number,
        "status": status.as_str(),
        "customer": d.customer.as_str(),
        "subscription": d.subscription.0,
        "period_start": d.period.start.to_rfc3339(),
        "period_end": d.period.end.to_rfc3339(),
        "currency": d.currency.to_string(),
        "subtotal_minor": d.subtotal_minor,
        "tax_minor": d.tax_minor,
        "total_minor": d.total_minor,
        "credits_applied_minor": content.credits_applied_minor,
        "amount_due_minor": content.amount_due_minor,
    });
    let message = crate::webhooks::message(event, &data, now).map_err(|e| {
        StoreError::Corrupt(format!("invoice {id} does not make a webhook message: {e}"))
    })?;
    crate::webhooks::enqueue(tx, &message, now)?;
    // A finalized invoice is pushed to the provider once: finalized is final, so version 1.
    if event == EventType::InvoiceFinalized
        && let Some(provider) = crate::providers::sync_target()
    {
        crate::providers::enqueue(
            tx,
            provider,
            tollgate_core::provider::CallKind::PushInvoice,
            id,
            1,
            now,
        )?;
    }
    Ok(())
}
