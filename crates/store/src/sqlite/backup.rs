//! `herald backup` (contract §7.1): a consistent copy of a SQLite store,
//! taken while a server writes to it, from another process.
//!
//! The copy is SQLite's online backup of every page in one step, inside one
//! read transaction: the copy is the database as of its start, and a
//! reader in WAL mode never blocks the server's writer. What a long read
//! does hold up is the writer's WAL rewind (it cannot start the WAL over
//! while the backup still reads from it); the writer then only tries the
//! rewind again without waiting, so the WAL grows for the backup's
//! duration instead of publishes waiting (see `pool::rewind_wal`).

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::{StoreError, StoreResult};

/// What a backup wrote.
#[derive(Debug, Clone, Copy)]
pub struct BackupReport {
    pub bytes: u64,
    pub took: Duration,
}

/// Copies the store at `from` to a new file `to` (refused if it exists),
/// readable only by its owner like the store itself.
pub fn backup(from: &Path, to: &Path) -> StoreResult<BackupReport> {
    let started = Instant::now();
    if !from.exists() {
        return Err(StoreError::NotFound);
    }
    let source = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", from.display())))?;
    source
        .busy_timeout(Duration::from_secs(5))
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    // The new file exists first, owner-only, so the copy is never readable
    // by others even for a moment.
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .map_err(|e| StoreError::Conflict(format!("cannot create {}: {e}", to.display())))?;
    }
    let copied = (|| {
        let mut target = Connection::open(to)?;
        {
            let backup = rusqlite::backup::Backup::new(&source, &mut target)?;
            // Every page in one step: one read transaction, one snapshot.
            loop {
                match backup.step(-1)? {
                    rusqlite::backup::StepResult::Done => break,
                    rusqlite::backup::StepResult::More => {}
                    // The server holds a lock for a moment: try again.
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        // The copy is a plain file, not a WAL database that needs its `-wal`.
        target.pragma_update(None, "journal_mode", "DELETE")?;
        Ok::<_, rusqlite::Error>(())
    })();
    if let Err(e) = copied {
        let _ = std::fs::remove_file(to);
        return Err(StoreError::Internal(format!("the backup failed: {e}")));
    }
    let bytes = std::fs::metadata(to).map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport {
        bytes,
        took: started.elapsed(),
    })
}
