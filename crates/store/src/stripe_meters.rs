//! Stripe Billing meter events in the database: the cursor of forwarding over the
//! accepted-event log, and the events parked until their customer has a Stripe id.
//!
//! Owns: `stripe_meter_cursor` (one row: every accepted event with a sequence number at or
//! below `after_seq` is done — acknowledged by Stripe, passed over and counted, or parked;
//! counters; whether forwarding is stopped and why), `stripe_meter_waiting` (events whose
//! subject had no Stripe customer id when the cursor reached them). Does not own: HTTP and what
//! is sent (the Stripe meter worker in the binary), which events are forwarded and their form
//! (`tollgate_core::provider::stripe_meter`), the Stripe customer ids (`provider_objects`,
//! [`crate::providers`]), the log itself (`Engine::events_after`).
//!
//! Invariants: the cursor only moves forward, one step per [`StripeMeterStore::advance`], from
//! where it is (asserted); an event counted as forwarded was acknowledged by Stripe before the
//! transaction that counts it; a parked event is in `stripe_meter_waiting` in the same
//! transaction that moves the cursor past it, and leaves it only in the transaction that
//! counts what became of it. So a crash anywhere sends an event again at most (with the same
//! identifier, which Stripe counts once) and never loses one.

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tollgate_core::time::UnixMs;

use crate::StoreError;

/// Longest error text kept (bytes).
const ERROR_BYTES_KEPT: usize = 1_000;

/// Where forwarding stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Every accepted event up to this sequence number is done (or parked).
    pub after_seq: u64,
    /// Events acknowledged by Stripe.
    pub forwarded: u64,
    /// Of those, events Stripe already held (it refused the identifier as a duplicate).
    pub duplicates: u64,
    /// Events passed over: their type is not mapped.
    pub skipped: u64,
    /// Events passed over: their timestamp is outside Stripe's window (35 days back, 5 minutes
    /// ahead) when they were due.
    pub out_of_window: u64,
    /// Events passed over: their value is missing or not a whole number.
    pub invalid: u64,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// Set when forwarding stopped on a permanent refusal (a stable code).
    pub stopped_code: Option<String>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Stripe's HTTP status of the last failure.
    pub last_http_status: Option<u16>,
    /// The last event passed over as out of window or invalid, and why.
    pub last_passed_over: Option<String>,
    /// When the next attempt is due.
    pub next_attempt_ms: UnixMs,
    /// Last changed.
    pub updated_ms: UnixMs,
}

/// What became of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stripe acknowledged it (`duplicate`: by refusing an identifier it already holds).
    Forwarded {
        /// Stripe already held it.
        duplicate: bool,
    },
    /// Outside Stripe's timestamp window: passed over, counted.
    OutOfWindow,
    /// Its value cannot be sent: passed over, counted.
    Invalid,
}

/// One move of the cursor: from `from` to `to`, with what became of the events in between.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Advance {
    /// Where the cursor is (asserted).
    pub from: u64,
    /// Where it goes (≥ `from`).
    pub to: u64,
    /// Events of the range not mapped.
    pub skipped: u64,
    /// The event at `to`, if it was mapped: what became of it.
    pub last: Option<Outcome>,
    /// The event at `to` waits for its customer's Stripe id.
    pub park: Option<Parked>,
    /// Why the event at `to` was passed over (out of window, invalid).
    pub note: Option<String>,
}

/// An event parked until its customer has a Stripe id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parked {
    /// Its sequence number in the accepted-event log.
    pub seq: u64,
    /// The Tollgate customer key (its `subject`).
    pub customer: String,
    /// Its time (Stripe's window is checked again when it is sent).
    pub time: UnixMs,
}

/// A parked event whose customer now has a Stripe id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// Its sequence number.
    pub seq: u64,
    /// The Tollgate customer key.
    pub customer: String,
    /// The Stripe customer id (`cus_…`) from `provider_objects`.
    pub stripe_customer_id: String,
}

/// Access to the Stripe meter tables of a data directory (its own connection).
pub struct StripeMeterStore {
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
            "SELECT after_seq, forwarded, duplicates, skipped, out_of_window, invalid, failures,
                stopped_code, last_error, last_http_status, last_passed_over, next_attempt_ms,
                updated_ms
             FROM stripe_meter_cursor WHERE id = 1",
        )?
        .query_row([], |r| {
            Ok(Cursor {
                after_seq: u64_of(r.get(0)?),
                forwarded: u64_of(r.get(1)?),
                duplicates: u64_of(r.get(2)?),
                skipped: u64_of(r.get(3)?),
                out_of_window: u64_of(r.get(4)?),
                invalid: u64_of(r.get(5)?),
                failures: r.get(6)?,
                stopped_code: r.get(7)?,
                last_error: r.get(8)?,
                last_http_status: r.get(9)?,
                last_passed_over: r.get(10)?,
                next_attempt_ms: UnixMs(r.get(11)?),
                updated_ms: UnixMs(r.get(12)?),
            })
        })
        .optional()?;
    row.ok_or_else(|| StoreError::Corrupt("the stripe_meter_cursor row is missing".into()))
}

/// Counts an outcome on the cursor row (and clears the failure count: Stripe answered).
fn count(
    tx: &Transaction<'_>,
    outcome: Outcome,
    note: Option<&str>,
    now: UnixMs,
) -> Result<(), StoreError> {
    let (forwarded, duplicates, out_of_window, invalid) = match outcome {
        Outcome::Forwarded { duplicate } => (1, i64::from(duplicate), 0, 0),
        Outcome::OutOfWindow => (0, 0, 1, 0),
        Outcome::Invalid => (0, 0, 0, 1),
    };
    tx.execute(
        "UPDATE stripe_meter_cursor SET forwarded = forwarded + ?1,
            duplicates = duplicates + ?2, out_of_window = out_of_window + ?3,
            invalid = invalid + ?4, last_passed_over = coalesce(?5, last_passed_over),
            failures = 0, last_error = NULL, last_http_status = NULL, updated_ms = ?6
         WHERE id = 1",
        params![
            forwarded,
            duplicates,
            out_of_window,
            invalid,
            note.map(truncate),
            now.0
        ],
    )?;
    Ok(())
}

impl StripeMeterStore {
    /// Opens the Stripe meter tables of a data directory.
    pub fn open(dir: &Path) -> Result<StripeMeterStore, StoreError> {
        crate::prepare_dir(dir)?;
        let conn = crate::open_db(dir)?;
        conn.execute(
            "INSERT INTO stripe_meter_cursor (id, after_seq, forwarded, duplicates, skipped,
                out_of_window, invalid, failures, next_attempt_ms, updated_ms)
             VALUES (1, 0, 0, 0, 0, 0, 0, 0, 0, 0)
             ON CONFLICT (id) DO NOTHING",
            [],
        )?;
        Ok(StripeMeterStore {
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

    /// Moves the cursor over `(from, to]` with what became of its events — one transaction.
    /// The cursor must be at `from` (asserted: one forwarder per data directory).
    pub fn advance(&self, step: &Advance, now: UnixMs) -> Result<Cursor, StoreError> {
        assert!(
            step.to >= step.from,
            "the Stripe meter cursor moves forward"
        );
        assert!(
            step.last.is_none() || step.park.is_none(),
            "an event is either done or parked"
        );
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE stripe_meter_cursor SET after_seq = ?2, skipped = skipped + ?3,
                    updated_ms = ?4
                 WHERE id = 1 AND after_seq = ?1",
                params![
                    i64_of(step.from),
                    i64_of(step.to),
                    i64_of(step.skipped),
                    now.0
                ],
            )?;
            assert_eq!(n, 1, "the Stripe meter cursor moved under its forwarder");
            if let Some(outcome) = step.last {
                count(tx, outcome, step.note.as_deref(), now)?;
            }
            if let Some(p) = &step.park {
                assert_eq!(p.seq, step.to, "a parked event is the last of its step");
                tx.execute(
                    "INSERT INTO stripe_meter_waiting (seq, customer, time_ms, since_ms)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (seq) DO NOTHING",
                    params![i64_of(p.seq), p.customer, p.time.0, now.0],
                )?;
            }
            cursor_in(tx)
        })
    }

    /// Customers with parked events, by key, with how many each: at most `limit`.
    pub fn waiting_customers(&self, limit: usize) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT customer, count(*) FROM stripe_meter_waiting GROUP BY customer
             ORDER BY customer LIMIT ?1",
        )?;
        let rows = stmt
            .query_map(params![i64_of(limit as u64)], |r| {
                Ok((r.get::<_, String>(0)?, u64_of(r.get(1)?)))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Parked events in all.
    pub fn waiting_total(&self) -> Result<u64, StoreError> {
        let conn = self.conn.lock();
        Ok(u64_of(conn.query_row(
            "SELECT count(*) FROM stripe_meter_waiting",
            [],
            |r| r.get(0),
        )?))
    }

    /// Parked events whose customer now has a Stripe customer id, in log order, at most
    /// `limit`.
    pub fn ready(&self, limit: usize) -> Result<Vec<Ready>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT w.seq, w.customer, o.provider_id FROM stripe_meter_waiting w
             JOIN provider_objects o ON o.provider = 'stripe' AND o.kind = 'customer'
                AND o.tollgate_key = w.customer
             ORDER BY w.seq LIMIT ?1",
        )?;
        let rows = stmt
            .query_map(params![i64_of(limit as u64)], |r| {
                Ok(Ready {
                    seq: u64_of(r.get(0)?),
                    customer: r.get(1)?,
                    stripe_customer_id: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Parked events older than `before` (Stripe would refuse them now), at most `limit`.
    pub fn expired(&self, before: UnixMs, limit: usize) -> Result<Vec<Parked>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, customer, time_ms FROM stripe_meter_waiting WHERE time_ms < ?1
             ORDER BY time_ms LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![before.0, i64_of(limit as u64)], |r| {
                Ok(Parked {
                    seq: u64_of(r.get(0)?),
                    customer: r.get(1)?,
                    time: UnixMs(r.get(2)?),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// A parked event is done: it leaves the waiting table and its outcome is counted — one
    /// transaction. Returns whether it was parked.
    pub fn unpark(
        &self,
        seq: u64,
        outcome: Outcome,
        note: Option<&str>,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM stripe_meter_waiting WHERE seq = ?1",
                params![i64_of(seq)],
            )?;
            if n == 1 {
                count(tx, outcome, note, now)?;
            }
            Ok(n == 1)
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
                "stripe_meter_cursor",
                &truncate(error),
                http_status,
                retry_at,
                now,
            )?;
            cursor_in(tx)
        })
    }

    /// Stops forwarding: Stripe refused a request for good. Nothing is sent until
    /// [`StripeMeterStore::resume`]; the cursor stays on the refused event, so nothing is lost.
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
                "stripe_meter_cursor",
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
        self.write(|tx| crate::outbox::cursor::resume(tx, "stripe_meter_cursor", true, now))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::keys::random_hex;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-stripe-meters-{name}-{}-{}",
            std::process::id(),
            random_hex(4)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_cursor_counts_each_event_once_and_parks_what_waits() {
        let dir = temp_dir("cursor");
        let store = StripeMeterStore::open(&dir).unwrap();
        assert_eq!(store.cursor().unwrap().after_seq, 0);
        let c = store
            .advance(
                &Advance {
                    from: 0,
                    to: 3,
                    skipped: 2,
                    last: Some(Outcome::Forwarded { duplicate: false }),
                    ..Advance::default()
                },
                UnixMs(1),
            )
            .unwrap();
        assert_eq!((c.after_seq, c.forwarded, c.skipped), (3, 1, 2));
        store
            .advance(
                &Advance {
                    from: 3,
                    to: 4,
                    park: Some(Parked {
                        seq: 4,
                        customer: "acme".into(),
                        time: UnixMs(100),
                    }),
                    ..Advance::default()
                },
                UnixMs(2),
            )
            .unwrap();
        store
            .advance(
                &Advance {
                    from: 4,
                    to: 5,
                    last: Some(Outcome::OutOfWindow),
                    note: Some("event 5: too old".into()),
                    ..Advance::default()
                },
                UnixMs(3),
            )
            .unwrap();
        assert_eq!(store.waiting_customers(10).unwrap(), [("acme".into(), 1)]);
        assert!(
            store.ready(10).unwrap().is_empty(),
            "acme has no Stripe id yet"
        );
        assert_eq!(store.expired(UnixMs(101), 10).unwrap().len(), 1);
        assert!(store.expired(UnixMs(100), 10).unwrap().is_empty());
        {
            let conn = crate::open_db(&dir).unwrap();
            crate::providers::put_object(
                &conn,
                tollgate_core::provider::Provider::Stripe,
                "customer",
                "acme",
                "cus_1",
                None,
                0,
                UnixMs(1),
            )
            .unwrap();
        }
        let ready = store.ready(10).unwrap();
        assert_eq!(
            (ready[0].seq, ready[0].stripe_customer_id.as_str()),
            (4, "cus_1")
        );
        assert_eq!(store.waiting_total().unwrap(), 1);
        store
            .record_failure("429", Some(429), UnixMs(9), UnixMs(4))
            .unwrap();
        assert_eq!(store.cursor().unwrap().failures, 1);
        assert!(
            store
                .unpark(4, Outcome::Forwarded { duplicate: true }, None, UnixMs(5))
                .unwrap()
        );
        assert!(
            !store
                .unpark(4, Outcome::Forwarded { duplicate: true }, None, UnixMs(6))
                .unwrap(),
            "counted once"
        );
        let c = store.cursor().unwrap();
        assert_eq!(
            (
                c.after_seq,
                c.forwarded,
                c.duplicates,
                c.out_of_window,
                c.failures
            ),
            (5, 2, 1, 1, 0)
        );
        assert_eq!(c.last_passed_over.as_deref(), Some("event 5: too old"));
        assert_eq!(store.waiting_total().unwrap(), 0);
        store
            .stop("stripe_meter_rejected", "no", Some(400), UnixMs(7))
            .unwrap();
        assert!(store.resume(UnixMs(8)).unwrap());
        assert!(!store.resume(UnixMs(9)).unwrap());
        drop(store);
        assert_eq!(
            StripeMeterStore::open(&dir)
                .unwrap()
                .cursor()
                .unwrap()
                .after_seq,
            5
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
