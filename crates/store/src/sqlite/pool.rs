//! The SQLite connections: one writer thread that group-commits, and a pool of
//! read-only connections used from `spawn_blocking`.
//!
//! SQLite has one writer at a time, so Herald gives it exactly one: a
//! dedicated OS thread owns the write connection and takes jobs from a
//! bounded channel. Each time it wakes it takes every job that has queued up
//! (up to [`MAX_BATCH`]), runs each inside its own savepoint, and commits them
//! all at once: one fsync for many publishes. A job's result is handed back
//! only after that commit, so nothing is acknowledged before it is durable.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{StoreError, StoreResult};

/// The most jobs committed in one transaction. Large enough to amortise the
/// fsync, small enough that one batch does not stall readers of its results.
const MAX_BATCH: usize = 512;

/// The writer connection's page cache, in KiB.
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// A write job: runs against the connection inside a savepoint, returns
/// whether it succeeded (to keep or roll back its savepoint) and a completion
/// that reports the result once the batch's commit is known.
type WriteJob = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;
type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// How durable a commit is. `Normal` survives a killed process (the WAL is in
/// the OS page cache); `Full` also survives power loss, at one fsync per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Normal,
    Full,
}

pub(crate) struct Connections {
    /// The checkpoint thread runs while this lives.
    _alive: Arc<()>,
    writer: mpsc::Sender<WriteJob>,
    readers: Arc<ReaderPool>,
}

struct ReaderPool {
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Connections {
    pub(crate) fn open(path: &Path, durability: Durability, readers: usize, schema: usize) -> StoreResult<Self> {
        let write_conn = open_connection(path, false, durability)?;
        crate::sqlite::schema::migrate(&write_conn, schema)?;
        let mut idle = Vec::with_capacity(readers);
        for _ in 0..readers {
            idle.push(open_connection(path, true, durability)?);
        }
        let (tx, rx) = mpsc::channel::<WriteJob>(4096);
        let rewind = Arc::new(AtomicBool::new(false));
        let rewind_wanted = Arc::clone(&rewind);
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || run_writer(write_conn, rx, &rewind))
            .map_err(|e| StoreError::Internal(format!("cannot start the writer thread: {e}")))?;
        let alive = Arc::new(());
        let checkpoint_conn = open_connection(path, false, durability)?;
        let weak = Arc::downgrade(&alive);
        std::thread::Builder::new()
            .name("herald-sqlite-checkpoint".into())
            .spawn(move || run_checkpointer(checkpoint_conn, weak, &rewind_wanted))
            .map_err(|e| StoreError::Internal(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self {
            _alive: alive,
            writer: tx,
            readers: Arc::new(ReaderPool {
                idle: Mutex::new(idle),
                permits: Semaphore::new(readers),
            }),
        })
    }

    /// Runs `f` in the next group commit and returns its result once committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let done: Completion = Box::new(move |commit_error| {
                let _ = tx.send(match commit_error {
                    Some(e) => Err(e.clone()),
                    None => result,
                });
            });
            (ok, done)
        });
        self.writer
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer stopped".into()))?
    }

    /// Runs `f` on a pooled read-only connection, off the async workers.
    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = Arc::clone(&self.readers);
        let _permit = pool
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        let conn = lock(&pool.idle)
            .pop()
            .ok_or_else(|| StoreError::Internal("reader pool is empty although a permit was held".into()))?;
        let pool2 = Arc::clone(&pool);
        tokio::task::spawn_blocking(move || {
            let result = f(&conn);
            lock(&pool2.idle).push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("reader task failed: {e}")))?
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the Vec inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn open_connection(path: &Path, read_only: bool, durability: Durability) -> StoreResult<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(internal)?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL").map_err(internal)?;
    }
    let sync = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(internal)?;
    conn.pragma_update(None, "foreign_keys", "OFF").map_err(internal)?;
    // Savepoints and sorts spill to memory, not to temporary files.
    conn.pragma_update(None, "temp_store", "MEMORY").map_err(internal)?;
    if !read_only {
        // The checkpointer thread does this work outside the writer's commits.
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(internal)?;
        // Every delivery inserts into several indexes; their hot pages stay
        // in this cache (in KiB; SQLite's default is 2 MiB) instead of being
        // read back from the OS on every batch once the store has grown.
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(internal)?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn run_writer(conn: Connection, mut rx: mpsc::Receiver<WriteJob>, rewind: &AtomicBool) {
    let mut batch: Vec<WriteJob> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&conn, &mut batch);
        if rewind.load(Ordering::Relaxed) && rewind_wal(&conn) {
            rewind.store(false, Ordering::Relaxed);
        }
    }
}

/// The WAL length, in frames, past which the writer rewinds it (128 MiB of
/// 4 KiB pages). Each rewind holds the writer for about 10 ms, and every
/// publish and record queued meanwhile waits: at 8,192 frames that was often
/// enough to be the real-time p99 (12-14 ms against 5 ms at this length,
/// `herald-bench realtime`). The file's peak size (`wal_mb`) is the price.
const REWIND_FRAMES: i64 = 32768;

/// Makes the next commit write the WAL from its start again; returns whether
/// it could. Under steady load the background checkpoints never catch up
/// with the last frame, and SQLite only restarts a WAL that is wholly
/// checkpointed, so it would grow without end (gigabytes in a minute), every
/// commit extending the file: new blocks to allocate and zero instead of
/// pages to overwrite. Between batches the writer checkpoints what is left
/// and waits for readers to leave the WAL (`RESTART`), so the next commit
/// starts over and the file is reused. The checkpointer stands aside while a
/// rewind is wanted; a reader still in the WAL after [`REWIND_WAIT`] only
/// puts the rewind off to the next batch.
fn rewind_wal(conn: &Connection) -> bool {
    let _ = conn.busy_timeout(REWIND_WAIT);
    let result = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    let _ = conn.busy_timeout(BUSY_TIMEOUT);
    match result {
        Ok((busy, log, done)) => {
            tracing::debug!(busy, log, done, "WAL rewind");
            busy == 0
        }
        Err(e) => {
            tracing::debug!(error = %e, "WAL rewind put off");
            false
        }
    }
}

/// How long a rewind waits for readers to leave the WAL.
const REWIND_WAIT: Duration = Duration::from_millis(20);

/// How long a connection waits for a lock another holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn commit_batch(conn: &Connection, batch: &mut Vec<WriteJob>) {
    if let Err(e) = run_cached(conn, "BEGIN IMMEDIATE") {
        tracing::error!(error = %e, jobs = batch.len(), "cannot begin a write transaction");
        // Dropping a job drops its reply channel: each waiter gets `Unavailable`.
        batch.clear();
        return;
    }
    let mut completions = Vec::with_capacity(batch.len());
    let mut end = "COMMIT";
    if batch.len() == 1 {
        // One job needs no savepoint: if it fails, the transaction goes.
        let job = batch.remove(0);
        let (ok, done) = job(conn);
        if !ok {
            end = "ROLLBACK";
        }
        completions.push(done);
    }
    for job in batch.drain(..) {
        let savepoint = run_cached(conn, "SAVEPOINT job");
        let (ok, done) = job(conn);
        let ended = if ok {
            run_cached(conn, "RELEASE job")
        } else {
            run_cached(conn, "ROLLBACK TO job").and_then(|_| run_cached(conn, "RELEASE job"))
        };
        if let Err(e) = savepoint.and(ended) {
            tracing::error!(error = %e, "savepoint failed inside a write batch");
        }
        completions.push(done);
    }
    let commit = run_cached(conn, end).map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        StoreError::Unavailable(format!("commit failed: {e}"))
    });
    if let Err(e) = &commit {
        tracing::error!(error = %e, jobs = completions.len(), "group commit failed");
    }
    for done in completions {
        done(commit.as_ref().err());
    }
}

/// Transaction and savepoint statements run for every job: parse them once.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Checkpoints the WAL into the database file from its own connection, so
/// that the writer never pays for a checkpoint (and its fsync) inside a
/// commit. When the WAL has grown long it asks the writer to rewind it, and
/// stands aside until that is done so that the two do not contend for the
/// checkpoint lock. Stops when the store is dropped.
fn run_checkpointer(conn: Connection, alive: std::sync::Weak<()>, rewind: &AtomicBool) {
    while alive.upgrade().is_some() {
        std::thread::sleep(CHECKPOINT_PAUSE);
        if rewind.load(Ordering::Relaxed) {
            continue;
        }
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) if frames >= REWIND_FRAMES => rewind.store(true, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
}

const CHECKPOINT_PAUSE: Duration = Duration::from_millis(250);

pub(crate) fn internal(e: rusqlite::Error) -> StoreError {
    StoreError::Internal(e.to_string())
}
