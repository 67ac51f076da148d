//! The engine's durable state beside the registry: outcome history, scheduled sends and the
//! event log with its webhook cursors, in one sled database (a directory).
//!
//! The registry keeps its own store (installations are its business and its recovery path is
//! tuned for them); this one holds what the engine itself must not forget across a restart.

use std::path::{Path, PathBuf};

/// Why the state store could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The storage engine failed (I/O, corruption).
    #[error("state store {path}: {message}")]
    Storage {
        /// The store's directory (`temporary` for a temporary store).
        path: String,
        /// What failed.
        message: String,
    },
    /// A stored record could not be read back.
    #[error("state store: corrupt {what}: {message}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        message: String,
    },
}

/// The engine's durable state (outcome history, schedules, events). Cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    pub(crate) db: sled::Db,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish()
    }
}

/// Opens a sled database. sled releases its file lock from its own I/O threads a moment after
/// the last handle is dropped, so reopening in the same process can find it held for a while
/// (over 2 s once on a loaded 2-core CI machine): this waits up to 10 s for it. Another
/// process holding the database still fails (after that wait).
pub(crate) fn open_sled(config: &sled::Config) -> sled::Result<sled::Db> {
    let mut attempts = 0;
    loop {
        match config.open() {
            // sled reports a held lock as `Other` with this text (sled 0.34.7, config.rs).
            Err(sled::Error::Io(e))
                if (e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock"))
                    && attempts < 200 =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

impl StateStore {
    /// Opens (or creates) the state store in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<StateStore, StateError> {
        let path = path.as_ref();
        let db =
            open_sled(&sled::Config::new().path(path).cache_capacity(64 << 20)).map_err(|e| {
                StateError::Storage {
                    path: path.display().to_string(),
                    message: e.to_string(),
                }
            })?;
        Ok(StateStore {
            db,
            path: Some(path.to_owned()),
        })
    }

    /// A store that lives in memory and disappears with the engine: nothing survives a
    /// restart (schedules, history, undelivered events are lost). What an engine uses when no
    /// store is configured.
    pub fn temporary() -> Result<StateStore, StateError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|e| StateError::Storage {
                path: "temporary".into(),
                message: e.to_string(),
            })?;
        Ok(StateStore { db, path: None })
    }

    /// The directory, or `None` for a temporary store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether what is written survives a restart.
    pub fn is_durable(&self) -> bool {
        self.path.is_some()
    }

    pub(crate) fn tree(&self, name: &str) -> Result<sled::Tree, StateError> {
        self.db.open_tree(name).map_err(|e| self.storage(e))
    }

    pub(crate) fn storage(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Storage {
            path: self
                .path
                .as_ref()
                .map_or_else(|| "temporary".into(), |p| p.display().to_string()),
            message: e.to_string(),
        }
    }

    /// Waits until everything written so far is on disk.
    pub fn flush(&self) -> Result<(), StateError> {
        self.db.flush().map(|_| ()).map_err(|e| self.storage(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_waits_for_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateStore::open(dir.path()).unwrap();
        first.tree("t").unwrap().insert("k", "v").unwrap();
        first.flush().unwrap();
        // Released 300 ms later on another thread, as sled's own threads release it.
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        let second = StateStore::open(dir.path()).unwrap();
        assert_eq!(
            second.tree("t").unwrap().get("k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        holder.join().unwrap();
    }
}
