//! Orb in the database: the cursor of event forwarding over the accepted-event log, the batch
//! being sent (its plan and parts), and the details of invoices read back from Orb.
//!
//! Owns: `orb_cursor` (one row: every accepted event with a sequence number at or below
//! `after_seq` was acknowledged by Orb, or is not mapped; counters; whether forwarding is
//! stopped and why), `orb_plan` / `orb_plan_parts` (the batch in flight: its log range, the
//! late cutoff it was split with, and for each part, live or a customer's backfill, where it
//! stands), `orb_invoices` (Orb's invoice details; the money goes to `provider_objects` through
//! [`crate::providers::put_object`] and [`crate::providers::set_payment`] in the same
//! transaction). Does not own: HTTP and what is sent (the Orb worker in the binary), which
//! events are forwarded and how they look (`tollgate_core::provider::orb`), the log itself
//! (`Engine::events_after`).
//!
//! Invariants: the cursor only moves forward, and only in [`OrbStore::finish_plan`] (every part
//! of the plan acknowledged) or [`OrbStore::skip`] (a range with no mapped event); at most one
//! plan exists, and it starts at the cursor. A part is `done` only after Orb answered it; a
//! backfill's id is recorded before events are sent with it, and its creation's intent (with
//! the idempotency key) before it is requested. So a crash anywhere re-sends a part exactly as
//! planned, with the same idempotency keys, and Orb counts each event once.

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tollgate_core::provider::orb::{OrbInvoice, PartKind};
use tollgate_core::provider::{PaymentState, Provider};
use tollgate_core::time::UnixMs;

use crate::StoreError;

/// Longest error text kept (bytes).
const ERROR_BYTES_KEPT: usize = 1_000;
/// Most invoices one listing returns.
pub const ORB_INVOICE_LIST_LIMIT_MAX: usize = 1_000;

/// Where forwarding stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Every accepted event up to this sequence number is done (acknowledged or not mapped).
    pub after_seq: u64,
    /// Events acknowledged by Orb.
    pub forwarded: u64,
    /// Events passed over (their type is not mapped).
    pub skipped: u64,
    /// Ingest requests acknowledged.
    pub batches: u64,
    /// Backfills closed.
    pub backfills: u64,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// Set when forwarding stopped on a permanent refusal (a stable code).
    pub stopped_code: Option<String>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Orb's HTTP status of the last failure.
    pub last_http_status: Option<u16>,
    /// When the next attempt is due.
    pub next_attempt_ms: UnixMs,
    /// Last changed.
    pub updated_ms: UnixMs,
}

/// Where a part stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartState {
    /// Nothing sent yet.
    Pending,
    /// Backfill: its creation was requested (intent recorded) without a recorded answer.
    Creating,
    /// Backfill: created at Orb (its id recorded); events not acknowledged yet.
    Created,
    /// Backfill: events acknowledged; not closed yet.
    Ingested,
    /// Done (live: events acknowledged; backfill: closed).
    Done,
}

impl PartState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PartState::Pending => "pending",
            PartState::Creating => "creating",
            PartState::Created => "created",
            PartState::Ingested => "ingested",
            PartState::Done => "done",
        }
    }

    fn parse(s: &str) -> Result<PartState, StoreError> {
        Ok(match s {
            "pending" => PartState::Pending,
            "creating" => PartState::Creating,
            "created" => PartState::Created,
            "ingested" => PartState::Ingested,
            "done" => PartState::Done,
            _ => return Err(StoreError::Corrupt(format!("orb part state {s}"))),
        })
    }
}

/// A part of the plan as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanPart {
    /// Its number (0-based, in plan order).
    pub part: u32,
    /// Live or a customer's backfill.
    pub kind: PartKind,
    /// How many events it holds.
    pub events: u32,
    /// Where it stands.
    pub state: PartState,
    /// Backfill: the idempotency key its creation is requested with.
    pub backfill_key: Option<String>,
    /// Backfill: Orb's id, once created.
    pub backfill_id: Option<String>,
}

/// The batch in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The cursor it starts after.
    pub after_seq: u64,
    /// The last log event it covers.
    pub last_seq: u64,
    /// Events before this instant were split into backfills.
    pub late_before: UnixMs,
    /// Events of its range that are not mapped.
    pub skipped: u64,
    /// Its parts.
    pub parts: Vec<PlanPart>,
}

/// An Orb invoice as read back, for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredInvoice {
    /// Orb's id.
    pub orb_invoice_id: String,
    /// The Tollgate customer key.
    pub customer: String,
    /// Orb's customer id.
    pub orb_customer_id: Option<String>,
    /// Orb's number.
    pub number: Option<String>,
    /// Orb's status.
    pub status: String,
    /// Currency code.
    pub currency: String,
    /// Orb's `invoice_date`.
    pub invoice_date: Option<UnixMs>,
    /// Total (minor units).
    pub total_minor: i64,
    /// Due (minor units).
    pub amount_due_minor: i64,
    /// Paid (minor units; Orb reports payment by status).
    pub amount_paid_minor: i64,
    /// The payment state recorded in `provider_objects`.
    pub state: PaymentState,
    /// When it was last read from Orb.
    pub pulled_ms: UnixMs,
}

/// The Tollgate key of an Orb invoice in `provider_objects`: Tollgate did not create it, so
/// the key is `<customer key>/<Orb invoice id>`.
pub fn invoice_object_key(customer: &str, orb_invoice_id: &str) -> String {
    format!("{customer}/{orb_invoice_id}")
}

/// Access to the Orb tables of a data directory (its own connection).
pub struct OrbStore {
    conn: Mutex<Connection>,
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn truncate(text: &str) -> String {
    crate::outbox::truncate_to(text, ERROR_BYTES_KEPT)
}

fn cursor_in(c: &Connection) -> Result<Cursor, StoreError> {
    let row = c
        .prepare_cached(
            "SELECT after_seq, forwarded, skipped, batches, backfills, failures, stopped_code,
                last_error, last_http_status, next_attempt_ms, updated_ms
             FROM orb_cursor WHERE id = 1",
        )?
        .query_row([], |r| {
            Ok(Cursor {
                after_seq: u64_of(r.get(0)?),
                forwarded: u64_of(r.get(1)?),
                skipped: u64_of(r.get(2)?),
                batches: u64_of(r.get(3)?),
                backfills: u64_of(r.get(4)?),
                failures: r.get(5)?,
                stopped_code: r.get(6)?,
                last_error: r.get(7)?,
                last_http_status: r.get(8)?,
                next_attempt_ms: UnixMs(r.get(9)?),
                updated_ms: UnixMs(r.get(10)?),
            })
        })
        .optional()?;
    row.ok_or_else(|| StoreError::Corrupt("the orb_cursor row is missing".into()))
}

impl OrbStore {
    /// Opens the Orb tables of a data directory.
    pub fn open(dir: &Path) -> Result<OrbStore, StoreError> {
        crate::prepare_dir(dir)?;
        let conn = crate::open_db(dir)?;
        conn.execute(
            "INSERT INTO orb_cursor (id, after_seq, forwarded, skipped, batches, backfills,
                failures, next_attempt_ms, updated_ms) VALUES (1, 0, 0, 0, 0, 0, 0, 0, 0)
             ON CONFLICT (id) DO NOTHING",
            [],
        )?;
        Ok(OrbStore {
            conn: Mutex::new(conn),
        })
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Where forwarding stands.
    pub fn cursor(&self) -> Result<Cursor, StoreError> {
        cursor_in(&self.conn.lock())
    }

    /// The plan in flight, if any.
    pub fn plan(&self) -> Result<Option<Plan>, StoreError> {
        let conn = self.conn.lock();
        let head = conn
            .prepare_cached(
                "SELECT after_seq, last_seq, late_before_ms, skipped FROM orb_plan WHERE id = 1",
            )?
            .query_row([], |r| {
                Ok((
                    u64_of(r.get(0)?),
                    u64_of(r.get(1)?),
                    UnixMs(r.get(2)?),
                    u64_of(r.get(3)?),
                ))
            })
            .optional()?;
        let Some((after_seq, last_seq, late_before, skipped)) = head else {
            return Ok(None);
        };
        let mut stmt = conn.prepare_cached(
            "SELECT part, kind, customer, timeframe_start_ms, timeframe_end_ms, events, state,
                backfill_key, backfill_id FROM orb_plan_parts ORDER BY part",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, u32>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut parts = Vec::with_capacity(rows.len());
        for (part, kind, customer, start, end, events, state, backfill_key, backfill_id) in rows {
            let kind = match (kind.as_str(), customer, start, end) {
                ("live", _, _, _) => PartKind::Live,
                ("backfill", Some(customer), Some(s), Some(e)) => PartKind::Backfill {
                    customer,
                    timeframe_start: UnixMs(s),
                    timeframe_end: UnixMs(e),
                },
                _ => return Err(StoreError::Corrupt(format!("orb plan part {part}"))),
            };
            parts.push(PlanPart {
                part,
                kind,
                events,
                state: PartState::parse(&state)?,
                backfill_key,
                backfill_id,
            });
        }
        Ok(Some(Plan {
            after_seq,
            last_seq,
            late_before,
            skipped,
            parts,
        }))
    }

    /// Records the plan of the next batch: the log range `(after_seq, last_seq]` split with
    /// `late_before` into `parts` (kind and event count each). `after_seq` must be the cursor
    /// and no plan may exist (asserted: one forwarder per data directory).
    pub fn put_plan(
        &self,
        after_seq: u64,
        last_seq: u64,
        late_before: UnixMs,
        skipped: u64,
        parts: &[(PartKind, u32)],
        now: UnixMs,
    ) -> Result<(), StoreError> {
        assert!(last_seq > after_seq, "an empty plan");
        self.write(|tx| {
            let cursor = cursor_in(tx)?;
            assert_eq!(
                cursor.after_seq, after_seq,
                "a plan must start at the cursor"
            );
            tx.execute(
                "INSERT INTO orb_plan (id, after_seq, last_seq, late_before_ms, skipped, created_ms)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5)",
                params![
                    i64_of(after_seq),
                    i64_of(last_seq),
                    late_before.0,
                    i64_of(skipped),
                    now.0
                ],
            )?;
            let mut stmt = tx.prepare_cached(
                "INSERT INTO orb_plan_parts (part, kind, customer, timeframe_start_ms,
                    timeframe_end_ms, events, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending')",
            )?;
            for (i, (kind, events)) in parts.iter().enumerate() {
                let (k, customer, start, end) = match kind {
                    PartKind::Live => ("live", None, None, None),
                    PartKind::Backfill {
                        customer,
                        timeframe_start,
                        timeframe_end,
                    } => (
                        "backfill",
                        Some(customer.as_str()),
                        Some(timeframe_start.0),
                        Some(timeframe_end.0),
                    ),
                };
                stmt.execute(params![i, k, customer, start, end, events])?;
            }
            Ok(())
        })
    }

    /// Moves a part to `state`; with `backfill_key` or `backfill_id` when given.
    pub fn set_part(
        &self,
        part: u32,
        state: PartState,
        backfill_key: Option<&str>,
        backfill_id: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE orb_plan_parts SET state = ?2,
                    backfill_key = coalesce(?3, backfill_key),
                    backfill_id = coalesce(?4, backfill_id)
                 WHERE part = ?1",
                params![part, state.as_str(), backfill_key, backfill_id],
            )?;
            assert_eq!(n, 1, "no orb plan part {part}");
            Ok(())
        })
    }

    /// Every part of the plan is done: moves the cursor to its end, counts it, drops the plan
    /// and clears the failure count — one transaction.
    pub fn finish_plan(&self, now: UnixMs) -> Result<Cursor, StoreError> {
        self.write(|tx| {
            let (after_seq, last_seq, skipped): (i64, i64, i64) = tx.query_row(
                "SELECT after_seq, last_seq, skipped FROM orb_plan WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let (events, live, backfills, not_done): (i64, i64, i64, i64) = tx.query_row(
                "SELECT coalesce(sum(events), 0),
                        coalesce(sum(kind = 'live'), 0),
                        coalesce(sum(kind = 'backfill'), 0),
                        coalesce(sum(state != 'done'), 0)
                 FROM orb_plan_parts",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            assert_eq!(not_done, 0, "finishing an Orb plan with parts not done");
            let n = tx.execute(
                "UPDATE orb_cursor SET after_seq = ?2, forwarded = forwarded + ?3,
                    skipped = skipped + ?4, batches = batches + ?5 + ?6,
                    backfills = backfills + ?6, failures = 0, last_error = NULL,
                    last_http_status = NULL, next_attempt_ms = ?7, updated_ms = ?7
                 WHERE id = 1 AND after_seq = ?1",
                params![after_seq, last_seq, events, skipped, live, backfills, now.0],
            )?;
            assert_eq!(n, 1, "the Orb cursor moved under its plan");
            tx.execute("DELETE FROM orb_plan_parts", [])?;
            tx.execute("DELETE FROM orb_plan", [])?;
            cursor_in(tx)
        })
    }

    /// Moves the cursor from `after_seq` over `(after_seq, last_seq]`, a range without a
    /// mapped event (`skipped` events in it). No plan may exist.
    pub fn skip(
        &self,
        after_seq: u64,
        last_seq: u64,
        skipped: u64,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let plans: i64 = tx.query_row("SELECT count(*) FROM orb_plan", [], |r| r.get(0))?;
            assert_eq!(plans, 0, "skipping with an Orb plan in flight");
            let n = tx.execute(
                "UPDATE orb_cursor SET after_seq = ?2, skipped = skipped + ?3, updated_ms = ?4
                 WHERE id = 1 AND after_seq = ?1",
                params![i64_of(after_seq), i64_of(last_seq), i64_of(skipped), now.0],
            )?;
            assert_eq!(n, 1, "the Orb cursor moved under a skip");
            Ok(())
        })
    }

    /// Records a failed attempt that will be retried at `retry_at`.
    pub fn record_failure(
        &self,
        error: &str,
        http_status: Option<u16>,
        retry_at: UnixMs,
        now: UnixMs,
    ) -> Result<Cursor, StoreError> {
        self.write(|tx| {
            crate::outbox::cursor::record_failure(
                tx,
                "orb_cursor",
                &truncate(error),
                http_status,
                retry_at,
                now,
            )?;
            cursor_in(tx)
        })
    }

    /// Stops forwarding: Orb refused a request for good. Nothing is sent until
    /// [`OrbStore::resume`]; the cursor and the plan stay, so nothing is lost.
    pub fn stop(
        &self,
        code: &str,
        error: &str,
        http_status: Option<u16>,
        now: UnixMs,
    ) -> Result<Cursor, StoreError> {
        self.write(|tx| {
            crate::outbox::cursor::stop(
                tx,
                "orb_cursor",
                code,
                &truncate(error),
                http_status,
                now,
            )?;
            cursor_in(tx)
        })
    }

    /// Lets a stopped forwarder try again (after the cause was fixed); returns whether it was
    /// stopped.
    pub fn resume(&self, now: UnixMs) -> Result<bool, StoreError> {
        self.write(|tx| crate::outbox::cursor::resume(tx, "orb_cursor", false, now))
    }

    /// Orb customer syncs by status: (pending, failed).
    pub fn customer_calls(&self) -> Result<(u64, u64), StoreError> {
        let conn = self.conn.lock();
        Ok(conn
            .prepare_cached(
                "SELECT coalesce(sum(status = 'pending'), 0), coalesce(sum(status = 'failed'), 0)
                 FROM provider_calls WHERE provider = 'orb'",
            )?
            .query_row([], |r| {
                Ok((u64_of(r.get::<_, i64>(0)?), u64_of(r.get::<_, i64>(1)?)))
            })?)
    }

    /// Records an invoice read back from Orb for `customer`: its details here, its money in
    /// `provider_objects` (provider `orb`, kind `invoice`), in one transaction. Reading the same
    /// invoice again replaces both with Orb's current state.
    pub fn put_invoice(
        &self,
        customer: &str,
        invoice: &OrbInvoice,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO orb_invoices (orb_invoice_id, customer, orb_customer_id, number,
                    status, currency, invoice_date_ms, total_minor, amount_due_minor, pulled_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (orb_invoice_id) DO UPDATE SET customer = excluded.customer,
                    orb_customer_id = excluded.orb_customer_id, number = excluded.number,
                    status = excluded.status, currency = excluded.currency,
                    invoice_date_ms = excluded.invoice_date_ms,
                    total_minor = excluded.total_minor,
                    amount_due_minor = excluded.amount_due_minor, pulled_ms = excluded.pulled_ms",
                params![
                    invoice.id,
                    customer,
                    invoice.customer_id,
                    invoice.number,
                    invoice.status,
                    invoice.currency.code(),
                    invoice.invoice_date.map(|t| t.0),
                    invoice.total_minor,
                    invoice.payment.amount_due_minor,
                    now.0
                ],
            )?;
            let key = invoice_object_key(customer, &invoice.id);
            crate::providers::put_object(
                tx,
                Provider::Orb,
                "invoice",
                &key,
                &invoice.id,
                invoice.customer_id.as_deref(),
                invoice.payment.amount_due_minor,
                now,
            )?;
            crate::providers::set_payment(tx, Provider::Orb, &key, &invoice.payment, now)?;
            Ok(())
        })
    }

    /// Invoices read back from Orb, by customer then invoice date; of one customer if given.
    pub fn invoices(
        &self,
        customer: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredInvoice>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT i.orb_invoice_id, i.customer, i.orb_customer_id, i.number, i.status,
                i.currency, i.invoice_date_ms, i.total_minor, i.amount_due_minor,
                coalesce(o.amount_paid_minor, 0), coalesce(o.state, 'open'), i.pulled_ms
             FROM orb_invoices i LEFT JOIN provider_objects o ON o.provider = 'orb'
                AND o.kind = 'invoice' AND o.tollgate_key = i.customer || '/' || i.orb_invoice_id
             WHERE (?1 IS NULL OR i.customer = ?1)
             ORDER BY i.customer, i.invoice_date_ms, i.orb_invoice_id LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(
                params![
                    customer,
                    i64_of(limit.min(ORB_INVOICE_LIST_LIMIT_MAX) as u64)
                ],
                |r| {
                    Ok((
                        StoredInvoice {
                            orb_invoice_id: r.get(0)?,
                            customer: r.get(1)?,
                            orb_customer_id: r.get(2)?,
                            number: r.get(3)?,
                            status: r.get(4)?,
                            currency: r.get(5)?,
                            invoice_date: r.get::<_, Option<i64>>(6)?.map(UnixMs),
                            total_minor: r.get(7)?,
                            amount_due_minor: r.get(8)?,
                            amount_paid_minor: r.get(9)?,
                            state: PaymentState::Open,
                            pulled_ms: UnixMs(r.get(11)?),
                        },
                        r.get::<_, String>(10)?,
                    ))
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(mut inv, state)| {
                inv.state = PaymentState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("payment state {state}")))?;
                Ok(inv)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::keys::random_hex;
    use tollgate_core::money::Currency;
    use tollgate_core::provider::PaymentRecord;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-orb-{name}-{}-{}",
            std::process::id(),
            random_hex(4)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_cursor_moves_only_when_a_plan_is_done() {
        let dir = temp_dir("cursor");
        let store = OrbStore::open(&dir).unwrap();
        assert_eq!(store.cursor().unwrap().after_seq, 0);
        store.skip(0, 3, 3, UnixMs(1)).unwrap();
        let backfill = PartKind::Backfill {
            customer: "acme".into(),
            timeframe_start: UnixMs(0),
            timeframe_end: UnixMs(60_000),
        };
        store
            .put_plan(
                3,
                10,
                UnixMs(5),
                1,
                &[(PartKind::Live, 4), (backfill.clone(), 2)],
                UnixMs(2),
            )
            .unwrap();
        let plan = store.plan().unwrap().unwrap();
        assert_eq!(
            (plan.after_seq, plan.last_seq, plan.parts.len()),
            (3, 10, 2)
        );
        assert_eq!(plan.parts[1].kind, backfill);
        store.set_part(0, PartState::Done, None, None).unwrap();
        store
            .set_part(1, PartState::Creating, Some("k"), None)
            .unwrap();
        store
            .set_part(1, PartState::Created, None, Some("bf_1"))
            .unwrap();
        let part = &store.plan().unwrap().unwrap().parts[1];
        assert_eq!(
            (
                part.state,
                part.backfill_key.as_deref(),
                part.backfill_id.as_deref()
            ),
            (PartState::Created, Some("k"), Some("bf_1"))
        );
        store.set_part(1, PartState::Done, None, None).unwrap();
        let c = store.finish_plan(UnixMs(3)).unwrap();
        assert_eq!(
            (c.after_seq, c.forwarded, c.skipped, c.batches, c.backfills),
            (10, 6, 4, 2, 1)
        );
        assert!(store.plan().unwrap().is_none());
        store
            .stop("orb_rejected", "no", Some(400), UnixMs(4))
            .unwrap();
        assert_eq!(
            store.cursor().unwrap().stopped_code.as_deref(),
            Some("orb_rejected")
        );
        assert!(store.resume(UnixMs(5)).unwrap());
        assert!(!store.resume(UnixMs(6)).unwrap());
        drop(store);
        // The cursor survives a reopen.
        assert_eq!(
            OrbStore::open(&dir).unwrap().cursor().unwrap().after_seq,
            10
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn invoices_are_recorded_with_their_money() {
        let dir = temp_dir("invoices");
        let store = OrbStore::open(&dir).unwrap();
        let mut inv = OrbInvoice {
            id: "inv_1".into(),
            number: Some("1".into()),
            status: "issued".into(),
            customer_id: Some("oc_1".into()),
            external_customer_id: Some("acme".into()),
            currency: Currency::parse("USD").unwrap(),
            invoice_date: Some(UnixMs(7)),
            total_minor: 500,
            payment: PaymentRecord {
                amount_due_minor: 500,
                ..PaymentRecord::default()
            },
        };
        store.put_invoice("acme", &inv, UnixMs(1)).unwrap();
        inv.status = "paid".into();
        inv.payment.state = PaymentState::Paid;
        inv.payment.amount_paid_minor = 500;
        store.put_invoice("acme", &inv, UnixMs(2)).unwrap();
        let list = store.invoices(Some("acme"), 10).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(
            (
                list[0].state,
                list[0].amount_paid_minor,
                list[0].status.as_str()
            ),
            (PaymentState::Paid, 500, "paid")
        );
        let providers = crate::ProviderStore::open(&dir).unwrap();
        let o = providers
            .object(Provider::Orb, "invoice", "acme/inv_1")
            .unwrap()
            .unwrap();
        assert_eq!(
            (o.provider_id.as_str(), o.payment.amount_due_minor),
            ("inv_1", 500)
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
