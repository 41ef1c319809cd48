//! Background WAL checkpoints: a thread with its own connection copies committed pages from
//! the WAL into the database file when poked, so that the connections that write (the ingest
//! writer, billing) do not do it inside their commits.

use std::path::Path;

use crate::StoreError;

/// A thread that checkpoints the WAL (PASSIVE: it never blocks readers or writers) when told
/// that something was written. Stops when dropped.
pub(crate) struct Checkpointer {
    tx: Option<crossbeam_channel::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    pub(crate) fn start(dir: &Path) -> Result<Checkpointer, StoreError> {
        let conn = crate::open_db(dir)?;
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        let handle = std::thread::Builder::new()
            .name("tollgate-checkpoint".into())
            .spawn(move || {
                // Said once per run of failures, not once per poke: the ingest writer pokes
                // after every commit, and a flood of warnings would fill the very disk that
                // made the checkpoint fail.
                let mut failing = false;
                while rx.recv().is_ok() {
                    match conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::info!("WAL checkpoints succeed again");
                        }
                        Ok(()) => {}
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(
                                error = %e,
                                "WAL checkpoint failed; the next ones retry (said once until one succeeds)"
                            );
                        }
                        Err(e) => tracing::debug!(error = %e, "WAL checkpoint failed again"),
                    }
                }
            })
            .map_err(|e| StoreError::Io {
                path: dir.to_owned(),
                source: e,
            })?;
        Ok(Checkpointer {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    pub(crate) fn poke(&self) {
        // Full means a checkpoint is already due; one is enough.
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
