//! What the two outboxes (webhook deliveries in [`crate::webhooks`], provider calls in
//! [`crate::providers`]) share: the wake-up signal of their worker, the connection that writes
//! in `IMMEDIATE` transactions and wakes the worker after a commit that enqueued, what an
//! attempt's outcome leaves in its row, and the bound on the error text kept in an attempt log.
//!
//! Owns: [`Signal`], [`OutboxDb`], [`Outcome`] and [`RowState`], [`truncate_error`]. Does not
//! own: the tables, the claim queries and their leases (each outbox has its own columns and
//! rules), the retry schedule (`tollgate_core::webhook`).
//!
//! Invariants: [`OutboxDb::write`] checks the signal only after its transaction committed, so
//! a worker is never woken for a row that is not there; a rolled-back enqueue costs one
//! spurious look at most.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, MutexGuard};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::Notify;
use tollgate_core::time::UnixMs;
use tollgate_core::webhook::Next;

use crate::StoreError;

/// Longest error text kept in an attempt log (bytes).
pub(crate) const ERROR_BYTES_KEPT: usize = 500;

/// How an outbox tells its worker that rows were committed.
pub(crate) struct Signal {
    notify: Notify,
    enqueued: AtomicBool,
}

impl Signal {
    pub(crate) const fn new() -> Signal {
        Signal {
            notify: Notify::const_new(),
            enqueued: AtomicBool::new(false),
        }
    }

    /// Wakes the worker now (or at its next wait).
    pub(crate) fn wake(&self) {
        self.notify.notify_one();
    }

    /// Resolves when [`Signal::wake`] was called (since the last time this resolved).
    pub(crate) async fn woken(&self) {
        self.notify.notified().await;
    }

    /// Notes that a row was written, for [`Signal::wake_if_enqueued`] after the commit.
    pub(crate) fn enqueued(&self) {
        self.enqueued.store(true, Ordering::Relaxed);
    }

    /// Wakes the worker if a row was written since the last call.
    pub(crate) fn wake_if_enqueued(&self) {
        if self.enqueued.swap(false, Ordering::Relaxed) {
            self.wake();
        }
    }
}

/// An outbox store's own connection to the data directory's database.
pub(crate) struct OutboxDb {
    conn: Mutex<Connection>,
    signal: &'static Signal,
}

impl OutboxDb {
    /// Opens the database of a data directory (creating it if needed) for the outbox whose
    /// worker `signal` wakes.
    pub(crate) fn open(dir: &std::path::Path, signal: &'static Signal) -> Result<Self, StoreError> {
        crate::prepare_dir(dir)?;
        Ok(OutboxDb {
            conn: Mutex::new(crate::open_db(dir)?),
            signal,
        })
    }

    /// The connection, for reads.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock()
    }

    /// Runs `f` in an `IMMEDIATE` transaction and commits it; then wakes the worker if `f`
    /// enqueued something.
    pub(crate) fn write<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        drop(conn);
        self.signal.wake_if_enqueued();
        Ok(out)
    }
}

/// What follows an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: nothing more to send.
    Done,
    /// Try again at this instant.
    RetryAt(UnixMs),
    /// Failed for good.
    Failed,
}

impl From<Next> for Outcome {
    fn from(next: Next) -> Outcome {
        match next {
            Next::Delivered => Outcome::Done,
            Next::RetryAt(at) => Outcome::RetryAt(at),
            Next::GiveUp => Outcome::Failed,
        }
    }
}

/// What an attempt's outcome leaves in its outbox row.
pub(crate) struct RowState {
    /// The row's new status: `done_status`, `pending` or `failed`.
    pub(crate) status: &'static str,
    /// When the next attempt is due (`now` once nothing more is due).
    pub(crate) next_attempt_ms: i64,
    /// When it was done, if it is.
    pub(crate) done_ms: Option<i64>,
}

impl Outcome {
    /// The row state it leaves at `now`; `done_status` names a done row (`done`, `delivered`).
    pub(crate) fn row_state(self, done_status: &'static str, now: UnixMs) -> RowState {
        let (status, next_attempt_ms, done_ms) = match self {
            Outcome::Done => (done_status, now.0, Some(now.0)),
            Outcome::RetryAt(at) => ("pending", at.0, None),
            Outcome::Failed => ("failed", now.0, None),
        };
        RowState {
            status,
            next_attempt_ms,
            done_ms,
        }
    }
}

/// `text` cut to at most [`ERROR_BYTES_KEPT`] bytes, on a character boundary.
pub(crate) fn truncate_error(text: &str) -> String {
    truncate_to(text, ERROR_BYTES_KEPT)
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate_to(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The failure bookkeeping of a forwarder's one-row cursor table (`orb_cursor`,
/// `stripe_meter_cursor`: columns `failures`, `last_error`, `last_http_status`,
/// `next_attempt_ms`, `stopped_code`, `updated_ms`, row `id = 1`), shared by the forwarders.
pub(crate) mod cursor {
    use rusqlite::{Connection, params};
    use tollgate_core::time::UnixMs;

    use crate::StoreError;

    /// A failed attempt that will be retried at `retry_at`.
    pub(crate) fn record_failure(
        tx: &Connection,
        table: &str,
        error: &str,
        http_status: Option<u16>,
        retry_at: UnixMs,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        tx.execute(
            &format!(
                "UPDATE {table} SET failures = failures + 1, last_error = ?1,
                    last_http_status = ?2, next_attempt_ms = ?3, updated_ms = ?4 WHERE id = 1"
            ),
            params![error, http_status, retry_at.0, now.0],
        )?;
        Ok(())
    }

    /// Stopped for good with `code` until a resume.
    pub(crate) fn stop(
        tx: &Connection,
        table: &str,
        code: &str,
        error: &str,
        http_status: Option<u16>,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        tx.execute(
            &format!(
                "UPDATE {table} SET failures = failures + 1, stopped_code = ?1,
                    last_error = ?2, last_http_status = ?3, updated_ms = ?4 WHERE id = 1"
            ),
            params![code, error, http_status, now.0],
        )?;
        Ok(())
    }

    /// Clears a stop (and, with `reset_failures`, the failure count); whether it was stopped.
    pub(crate) fn resume(
        tx: &Connection,
        table: &str,
        reset_failures: bool,
        now: UnixMs,
    ) -> Result<bool, StoreError> {
        let reset = if reset_failures { "failures = 0," } else { "" };
        Ok(tx.execute(
            &format!(
                "UPDATE {table} SET stopped_code = NULL, {reset} next_attempt_ms = ?1,
                    updated_ms = ?1 WHERE id = 1 AND stopped_code IS NOT NULL"
            ),
            params![now.0],
        )? == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_cut_on_a_character_boundary() {
        assert_eq!(truncate_error("short"), "short");
        let long = "é".repeat(ERROR_BYTES_KEPT);
        let cut = truncate_error(&long);
        assert_eq!(cut.len(), ERROR_BYTES_KEPT);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn outcomes_leave_their_row_state() {
        let now = UnixMs(10);
        let done = Outcome::Done.row_state("delivered", now);
        assert_eq!(
            (done.status, done.next_attempt_ms, done.done_ms),
            ("delivered", 10, Some(10))
        );
        let retry = Outcome::RetryAt(UnixMs(50)).row_state("done", now);
        assert_eq!(
            (retry.status, retry.next_attempt_ms, retry.done_ms),
            ("pending", 50, None)
        );
        let failed = Outcome::Failed.row_state("done", now);
        assert_eq!(
            (failed.status, failed.next_attempt_ms, failed.done_ms),
            ("failed", 10, None)
        );
    }
}
