//! The SQLite connections: one writer thread that group-commits, and a pool of
//! read-only connections used from `spawn_blocking`.
//!
//! SQLite has one writer at a time, so Herald gives it exactly one: a
//! dedicated OS thread owns the write connection and takes jobs from a
//! bounded channel. Each time it wakes it takes every job that has queued up
//! (up to [`MAX_BATCH`]), runs each inside its own savepoint, and commits them
//! all at once: one fsync for many publishes. A job's result is handed back
//! only after that commit, so nothing is acknowledged before it is durable.
//!
//! The hot jobs (publishes through [`Connections::write_shared`], and the
//! jobs that write queued attempt records, [`Connections::submit_shared_run`])
//! fail only when the store itself does, so a run of them shares one
//! savepoint: each savepoint copies every page its job touches to the
//! statement journal first, and consecutive records touch the same pages.
//! If one of them fails, the whole run is rolled back and each job in it
//! answers `Unavailable`; callers already treat that as "try again".

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{StoreError, StoreResult};

/// The most jobs committed in one transaction. Large enough to amortise the
/// fsync, small enough that one batch does not stall readers of its results.
const MAX_BATCH: usize = 512;

/// How many write jobs may wait for the writer; a full queue makes callers
/// wait (backpressure).
const WRITE_QUEUE: usize = 4096;

/// The writer connection's page cache, in KiB (SQLite's default is 2 MiB).
/// Not larger: when an insert splits a b-tree page and renumbers the new
/// pages, SQLite parks one at the lock-byte page number (page 262,145 at
/// 4 KiB), and the commit then walks the whole cache to drop pages past the
/// file's end. At 16 MiB that walk was 4.3 % of the server's CPU in
/// `herald-bench realtime`; at 4 MiB it is 1.7 %, and the pages it no
/// longer holds cost 0.3 % to read back from the OS.
const WRITER_CACHE_KIB: i64 = 4 * 1024;

/// A write job: runs against the connection inside a savepoint, returns
/// whether it succeeded (to keep or roll back its savepoint) and a completion
/// that reports the result once the batch's commit is known. A job that
/// `shares` runs in one savepoint with the sharing jobs next to it. A job
/// that waits for `idle` runs alone, only when no other job is queued.
struct WriteJob {
    run: Run,
    shares: bool,
    idle: bool,
}
pub(crate) type Run = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;
pub(crate) type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// How a job's changes ended up, as far as its own savepoint goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Kept: its result stands if the commit does.
    Kept,
    /// It failed: its own error is its answer.
    Failed,
    /// It succeeded, but a job sharing its savepoint failed and took its
    /// changes with it.
    Undone,
}

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
    /// Set once the database file at the store's path is no longer the one
    /// open (deleted, or replaced by another file): from then on every write
    /// is refused, since a commit would go into a file no restart will see.
    gone: Arc<AtomicBool>,
    writer: mpsc::Sender<WriteJob>,
    readers: Arc<ReaderPool>,
}

/// The writer's channel, for jobs queued away from the store (the record
/// queue's gather timer).
#[derive(Clone)]
pub(crate) struct Writer(mpsc::Sender<WriteJob>);

impl Writer {
    /// Queues a sharing job that answers its waiters itself: `run` returns
    /// whether it succeeded and a completion, which is called once the batch
    /// has committed (with the error that undid it, if any). Returns once the
    /// job is queued.
    pub(crate) async fn submit_shared_run(&self, run: Run) -> StoreResult<()> {
        send(
            &self.0,
            WriteJob {
                run,
                shares: true,
                idle: false,
            },
        )
        .await
    }
}

async fn send(writer: &mpsc::Sender<WriteJob>, job: WriteJob) -> StoreResult<()> {
    writer
        .send(job)
        .await
        .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))
}

struct ReaderPool {
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Connections {
    pub(crate) fn open(path: &Path, durability: Durability, readers: usize, schema: usize) -> StoreResult<Self> {
        create_private(path)?;
        let write_conn = open_connection(path, false, durability)?;
        crate::sqlite::schema::migrate(&write_conn, schema)?;
        let mut idle = Vec::with_capacity(readers);
        for _ in 0..readers {
            idle.push(open_connection(path, true, durability)?);
        }
        let (tx, rx) = mpsc::channel::<WriteJob>(WRITE_QUEUE);
        let rewind = Arc::new(AtomicBool::new(false));
        let rewind_wanted = Arc::clone(&rewind);
        let gone = Arc::new(AtomicBool::new(false));
        let (writer_sees_gone, checkpointer_sets_gone) = (Arc::clone(&gone), Arc::clone(&gone));
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || run_writer(write_conn, rx, &rewind, &writer_sees_gone))
            .map_err(|e| StoreError::Internal(format!("cannot start the writer thread: {e}")))?;
        let alive = Arc::new(());
        let checkpoint_conn = open_connection(path, false, durability)?;
        // Only flushed (see `run_checkpointer`), never written through.
        let db_file = std::fs::File::open(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let weak = Arc::downgrade(&alive);
        let watched = path.to_owned();
        std::thread::Builder::new()
            .name("herald-sqlite-checkpoint".into())
            .spawn(move || {
                run_checkpointer(
                    checkpoint_conn,
                    &db_file,
                    weak,
                    &rewind_wanted,
                    (&watched, &checkpointer_sets_gone),
                )
            })
            .map_err(|e| StoreError::Internal(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self {
            _alive: alive,
            gone,
            writer: tx,
            readers: Arc::new(ReaderPool {
                idle: Mutex::new(idle),
                permits: Semaphore::new(readers),
            }),
        })
    }

    /// Whether the database file was deleted or replaced under the running
    /// server (checked every [`CHECKPOINT_PAUSE`]); writes are refused then.
    pub(crate) fn file_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// Runs `f` in the next group commit, in a savepoint of its own, and
    /// returns its result once committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.submit(f, false).await
    }

    /// Like [`Connections::write`], for a job that fails only when the store
    /// does (no expected conflict or refusal ends in `Err`): it shares a
    /// savepoint with the sharing jobs next to it, and fails with
    /// `Unavailable` if one of them fails.
    pub(crate) async fn write_shared<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.submit(f, true).await
    }

    /// Like [`Connections::write`], for background work (retention): the
    /// job runs in a transaction of its own once no other job is queued, so
    /// that a publish waits at most for one such job already running, never
    /// behind a queue of them.
    pub(crate) async fn write_when_idle<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.submit_as(f, false, true).await
    }

    /// A handle that queues shared jobs from a task of its own.
    pub(crate) fn writer(&self) -> Writer {
        Writer(self.writer.clone())
    }

    /// Puts a job on the writer's channel (a refused job is dropped unrun).
    async fn queue(&self, run: Run, shares: bool, idle: bool) -> StoreResult<()> {
        send(&self.writer, WriteJob { run, shares, idle }).await
    }

    async fn submit<T, F>(&self, f: F, shares: bool) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.submit_as(f, shares, false).await
    }

    async fn submit_as<T, F>(&self, f: F, shares: bool, idle: bool) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run = Box::new(move |conn: &Connection| {
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
        self.queue(run, shares, idle).await?;
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

/// Locks `m`, poisoned or not: the collections Herald keeps under these
/// locks are whole after every push, take or clear, even if a holder panics.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Creates the database file readable by its owner only (0600) if it does not
/// exist yet: it holds every signing secret and URL token. SQLite gives the
/// `-wal` and `-shm` files the database file's permissions. An existing file
/// keeps the permissions its operator gave it.
fn create_private(path: &Path) -> StoreResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
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
    // Plans never depend on bound values. Otherwise SQLite (3.51) reads a
    // bound `LIMIT ?n` into the plan, and any binding of it, even to the
    // same value, that is every run of a cached claim or log query, expires
    // the statement and parses and plans it again: a fifth of the server's
    // CPU while retries came due in `herald-bench isolation --rate 1000`
    // (`perf`), where the healthy endpoints' latency tail was. Herald's
    // queries name their indexes and bind no value a plan could use
    // otherwise.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(internal)?;
    conn.pragma_update(None, "foreign_keys", "OFF").map_err(internal)?;
    // Savepoints and sorts spill to memory, not to temporary files.
    conn.pragma_update(None, "temp_store", "MEMORY").map_err(internal)?;
    if !read_only {
        // The checkpointer thread does this work outside the writer's commits.
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(internal)?;
        // Every delivery inserts into several indexes; their hot pages stay
        // in this cache instead of being read back from the OS on every batch.
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(internal)?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn run_writer(conn: Connection, mut rx: mpsc::Receiver<WriteJob>, rewind: &AtomicBool, gone: &AtomicBool) {
    let mut batch: Vec<WriteJob> = Vec::with_capacity(MAX_BATCH);
    // Background jobs, run one at a time whenever the channel is empty.
    let mut when_idle: VecDeque<WriteJob> = VecDeque::new();
    let mut patient = true;
    loop {
        let first = if when_idle.is_empty() {
            rx.blocking_recv()
        } else {
            match rx.try_recv() {
                Ok(job) => Some(job),
                Err(mpsc::error::TryRecvError::Empty) => when_idle.pop_front(),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            }
        };
        let Some(first) = first else { break };
        if first.idle && batch.is_empty() && rx.is_empty() {
            batch.push(first);
        } else {
            let mut next = Some(first);
            while let Some(job) = next {
                if job.idle {
                    when_idle.push_back(job);
                } else {
                    batch.push(job);
                }
                next = if batch.len() < MAX_BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if batch.is_empty() {
                continue;
            }
        }
        if gone.load(Ordering::Relaxed) {
            // Dropping a job drops its reply channel: each waiter gets
            // `Unavailable`, and nothing is acknowledged into a lost file.
            batch.clear();
            continue;
        }
        commit_batch(&conn, &mut batch);
        if rewind.load(Ordering::Relaxed) {
            // After a rewind a reader held up (a long read, such as `herald
            // backup`), the next ones only try, until one succeeds: the
            // WAL grows a while rather than every batch waiting.
            if rewind_wal(&conn, if patient { REWIND_WAIT } else { Duration::ZERO }) {
                rewind.store(false, Ordering::Relaxed);
                patient = true;
            } else {
                patient = false;
            }
        }
    }
}

/// The WAL length, in frames, past which the writer rewinds it (128 MiB of
/// 4 KiB pages). A rewind holds the writer, and every publish and record
/// queued meanwhile waits: when each took 10-30 ms, 8,192 frames was often
/// enough to be the real-time p99 (12-14 ms against 5 ms at this length,
/// `herald-bench realtime`); since the checkpointer flushes the database
/// file first, one takes about 2 ms. The file's peak size (`wal_mb`) is the
/// price.
const REWIND_FRAMES: i64 = if cfg!(test) { 1024 } else { 32768 };

/// Makes the next commit write the WAL from its start again; returns whether
/// it could. Under steady load the background checkpoints never catch up
/// with the last frame, and SQLite only restarts a WAL that is wholly
/// checkpointed, so it would grow without end (gigabytes in a minute), every
/// commit extending the file: new blocks to allocate and zero instead of
/// pages to overwrite. Between batches the writer checkpoints what is left
/// and waits for readers to leave the WAL (`RESTART`), so the next commit
/// starts over and the file is reused. The checkpointer stands aside while a
/// rewind is wanted; a reader still in the WAL after `wait` (at most
/// [`REWIND_WAIT`]) only puts the rewind off to the next batch.
fn rewind_wal(conn: &Connection, wait: Duration) -> bool {
    let _ = conn.busy_timeout(wait);
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
    // A batch that is one group (a lone job, or jobs that all share) needs
    // no savepoint: if the group fails, the transaction goes.
    let one_group = batch.len() == 1 || batch.iter().all(|j| j.shares);
    let mut completions: Vec<(Completion, Outcome)> = Vec::with_capacity(batch.len());
    let mut end = "COMMIT";
    let mut jobs = batch.drain(..).peekable();
    while let Some(first) = jobs.next() {
        let shares = first.shares;
        let savepoint = if one_group {
            Ok(())
        } else {
            run_cached(conn, "SAVEPOINT job")
        };
        let start = completions.len();
        let mut ok = run_job(conn, first, &mut completions);
        while shares && let Some(job) = jobs.next_if(|j| j.shares) {
            ok &= run_job(conn, job, &mut completions);
        }
        if !ok {
            for (_, outcome) in &mut completions[start..] {
                if *outcome == Outcome::Kept {
                    *outcome = Outcome::Undone;
                }
            }
        }
        let ended = match (one_group, ok) {
            (true, true) => Ok(()),
            (true, false) => {
                end = "ROLLBACK";
                Ok(())
            }
            (false, true) => run_cached(conn, "RELEASE job"),
            (false, false) => run_cached(conn, "ROLLBACK TO job").and_then(|_| run_cached(conn, "RELEASE job")),
        };
        if let Err(e) = savepoint.and(ended) {
            tracing::error!(error = %e, "savepoint failed inside a write batch");
        }
    }
    let commit = run_cached(conn, end).map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        StoreError::Unavailable(format!("commit failed: {e}"))
    });
    if let Err(e) = &commit {
        tracing::error!(error = %e, jobs = completions.len(), "group commit failed");
    }
    let undone = StoreError::Unavailable("rolled back with a failing write it was batched with".into());
    for (done, outcome) in completions {
        match (&commit, outcome) {
            (Err(e), _) => done(Some(e)),
            (Ok(()), Outcome::Undone) => done(Some(&undone)),
            (Ok(()), Outcome::Kept | Outcome::Failed) => done(None),
        }
    }
}

/// Runs one job and keeps its completion; returns whether it succeeded.
fn run_job(conn: &Connection, job: WriteJob, completions: &mut Vec<(Completion, Outcome)>) -> bool {
    let (ok, done) = (job.run)(conn);
    completions.push((done, if ok { Outcome::Kept } else { Outcome::Failed }));
    ok
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
///
/// SQLite syncs the database file only at the end of a checkpoint that
/// reached the WAL's last frame, and under load only the writer's rewind
/// does: its fsync then wrote out every page the checkpoints had copied
/// since the previous rewind, 14 ms of the 17-30 ms each rewind held the
/// writer (`strace`, `herald-bench isolation --rate 1000`). So before asking
/// for a rewind this thread flushes `db_file` itself and checkpoints what
/// came meanwhile; the rewind's own fsync then finds only the pages of its
/// last frames, and takes 1.4-2.5 ms in all.
fn run_checkpointer(
    conn: Connection,
    db_file: &std::fs::File,
    alive: std::sync::Weak<()>,
    rewind: &AtomicBool,
    (path, gone): (&Path, &AtomicBool),
) {
    while alive.upgrade().is_some() {
        std::thread::sleep(CHECKPOINT_PAUSE);
        if !gone.load(Ordering::Relaxed)
            && let Some(why) = replaced(path, db_file)
        {
            tracing::error!(
                path = %path.display(),
                "the database file {why} under the running server: every write is refused from now on; restart Herald on the right file"
            );
            gone.store(true, Ordering::Relaxed);
        }
        if rewind.load(Ordering::Relaxed) {
            continue;
        }
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) if frames >= REWIND_FRAMES => {
                if let Err(e) = db_file.sync_data() {
                    tracing::warn!(error = %e, "cannot flush the database file before a WAL rewind");
                }
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
                rewind.store(true, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
}

const CHECKPOINT_PAUSE: Duration = Duration::from_millis(250);

/// How the file at `path` no longer is the open `db_file`, if it is not:
/// unlinked (no name links to the open file), missing, or another file (its
/// device and inode differ).
fn replaced(path: &Path, db_file: &std::fs::File) -> Option<&'static str> {
    use std::os::unix::fs::MetadataExt;
    let open = match db_file.metadata() {
        Ok(open) => open,
        Err(_) => return None,
    };
    if open.nlink() == 0 {
        return Some("was deleted");
    }
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("was deleted"),
        Err(_) => None,
        Ok(named) if (named.dev(), named.ino()) != (open.dev(), open.ino()) => Some("was replaced by another file"),
        Ok(_) => None,
    }
}

pub(crate) fn internal(e: rusqlite::Error) -> StoreError {
    StoreError::Internal(e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    /// A cached statement with a bound `LIMIT` runs again with new values
    /// without being parsed and planned again.
    #[tokio::test]
    async fn bound_limits_do_not_reprepare() {
        let (_dir, conns) = store().await;
        conns
            .write(|c| {
                for n in 0..10 {
                    insert(c, n)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let (counts, reprepares) = conns
            .write(|c| {
                let mut stmt = c
                    .prepare_cached("SELECT n FROM t WHERE n >= ?1 ORDER BY n LIMIT ?2")
                    .map_err(internal)?;
                let mut counts = Vec::new();
                for (from, limit) in [(0, 3), (2, 5), (4, 1), (1, 9)] {
                    let rows = stmt
                        .query_map([from, limit], |r| r.get::<_, i64>(0))
                        .map_err(internal)?;
                    counts.push(rows.count());
                }
                Ok((counts, stmt.get_status(rusqlite::StatementStatus::RePrepare)))
            })
            .await
            .unwrap();
        assert_eq!(counts, [3, 5, 1, 9]);
        assert_eq!(reprepares, 0, "each new LIMIT binding re-prepared the statement");
    }

    #[tokio::test]
    async fn a_new_store_and_its_wal_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, conns) = store().await;
        conns.write(|c| insert(c, 1)).await.unwrap();
        for name in ["herald.db", "herald.db-wal", "herald.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name} is {:o}", mode & 0o777);
        }
    }

    /// A store file with one table, `t(n)`.
    async fn store() -> (tempfile::TempDir, Arc<Connections>) {
        let dir = tempfile::tempdir().unwrap();
        let conns = Connections::open(&dir.path().join("herald.db"), Durability::Normal, 1, 0).unwrap();
        conns
            .write(|c| c.execute_batch("CREATE TABLE t (n INTEGER NOT NULL)").map_err(internal))
            .await
            .unwrap();
        (dir, Arc::new(conns))
    }

    fn insert(c: &Connection, n: i64) -> StoreResult<()> {
        c.execute("INSERT INTO t (n) VALUES (?1)", [n])
            .map(|_| ())
            .map_err(internal)
    }

    /// Inserts `n`, or for a negative `n` inserts and then fails, through a
    /// sharing or an isolated job.
    async fn job(conns: Arc<Connections>, n: i64, shares: bool) -> StoreResult<()> {
        let f = move |c: &Connection| {
            insert(c, n.abs())?;
            if n < 0 {
                return Err(StoreError::Internal("this job fails".into()));
            }
            Ok(())
        };
        if shares {
            conns.write_shared(f).await
        } else {
            conns.write(f).await
        }
    }

    /// Queues `jobs` behind a job that holds the writer, so that they all
    /// land in one batch, in order; returns their results.
    async fn one_batch(conns: &Arc<Connections>, jobs: &[(i64, bool)]) -> Vec<StoreResult<()>> {
        let hold = tokio::spawn({
            let conns = Arc::clone(conns);
            async move {
                conns
                    .write(|_| {
                        std::thread::sleep(Duration::from_millis(500));
                        Ok(())
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut handles = Vec::new();
        for &(n, shares) in jobs {
            handles.push(tokio::spawn(job(Arc::clone(conns), n, shares)));
            // Each job is in the channel before the next one is made.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        hold.await.unwrap().unwrap();
        let mut results = Vec::new();
        for h in handles {
            results.push(h.await.unwrap());
        }
        results
    }

    #[tokio::test]
    async fn a_background_job_waits_for_the_jobs_queued_behind_it() {
        let (_dir, conns) = store().await;
        let hold = tokio::spawn({
            let conns = Arc::clone(&conns);
            async move {
                conns
                    .write(|_| {
                        std::thread::sleep(Duration::from_millis(300));
                        Ok(())
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut handles = Vec::new();
        for n in [100, 101, 1, 2] {
            let conns = Arc::clone(&conns);
            handles.push(tokio::spawn(async move {
                if n >= 100 {
                    conns.write_when_idle(move |c| insert(c, n)).await
                } else {
                    conns.write(move |c| insert(c, n)).await
                }
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        hold.await.unwrap().unwrap();
        for h in handles {
            h.await.unwrap().unwrap();
        }
        let order = conns
            .read(|c| {
                let mut s = c.prepare("SELECT n FROM t ORDER BY rowid").map_err(internal)?;
                let rows = s.query_map([], |r| r.get(0)).map_err(internal)?;
                rows.collect::<Result<Vec<i64>, _>>().map_err(internal)
            })
            .await
            .unwrap();
        assert_eq!(
            order,
            [1, 2, 100, 101],
            "the background jobs went before jobs queued after them"
        );
        // With nothing else queued, a background job runs at once.
        tokio::time::timeout(Duration::from_secs(1), conns.write_when_idle(|c| insert(c, 102)))
            .await
            .expect("a background job waited although the writer was idle")
            .unwrap();
    }

    async fn stored(conns: &Connections) -> Vec<i64> {
        conns
            .read(|c| {
                let mut s = c.prepare("SELECT n FROM t ORDER BY n").map_err(internal)?;
                let rows = s.query_map([], |r| r.get(0)).map_err(internal)?;
                rows.collect::<Result<Vec<i64>, _>>().map_err(internal)
            })
            .await
            .unwrap()
    }

    fn unavailable(r: &StoreResult<()>) -> bool {
        matches!(r, Err(StoreError::Unavailable(_)))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_shared_job_undoes_its_run_and_nothing_else() {
        let (_dir, conns) = store().await;
        // Two runs of sharing jobs around an isolated one; the second run fails.
        let results = one_batch(
            &conns,
            &[
                (1, true),
                (2, true),
                (3, false),
                (4, true),
                (-5, true),
                (6, true),
                (7, false),
            ],
        )
        .await;
        assert!(
            results[0].is_ok() && results[1].is_ok() && results[2].is_ok(),
            "{results:?}"
        );
        assert!(unavailable(&results[3]), "{:?}", results[3]);
        assert!(
            matches!(results[4], Err(StoreError::Internal(_))),
            "its own error: {:?}",
            results[4]
        );
        assert!(unavailable(&results[5]), "{:?}", results[5]);
        assert!(results[6].is_ok(), "{:?}", results[6]);
        assert_eq!(stored(&conns).await, vec![1, 2, 3, 7]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_isolated_job_undoes_only_itself() {
        let (_dir, conns) = store().await;
        let results = one_batch(&conns, &[(1, true), (-2, false), (3, true)]).await;
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(matches!(results[1], Err(StoreError::Internal(_))), "{:?}", results[1]);
        assert_eq!(stored(&conns).await, vec![1, 3]);
    }

    /// Writes never stop for 3 s, and until four rewinds' worth of frames are
    /// written however long a loaded machine takes, so no background checkpoint
    /// reaches the WAL's last frame: the WAL is still rewound (its file holds
    /// less than half of the frames written, at least one per row), and every
    /// row is kept. How far past `REWIND_FRAMES` it grows depends on how fast the
    /// disk takes the flush before each rewind, so that is not asserted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_rewound_under_unbroken_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.db");
        let conns = Arc::new(Connections::open(&path, Durability::Normal, 1, 0).unwrap());
        conns
            .write(|c| {
                c.execute_batch("CREATE TABLE b (n INTEGER NOT NULL, v BLOB NOT NULL)")
                    .map_err(internal)
            })
            .await
            .unwrap();
        let wal = dir.path().join("herald.db-wal");
        let (mut rows, mut max_wal) = (0i64, 0u64);
        let enough = 4 * REWIND_FRAMES + 8;
        let start = std::time::Instant::now();
        let give_up = start + Duration::from_secs(120);
        while rows < enough || start.elapsed() < Duration::from_secs(3) {
            assert!(std::time::Instant::now() < give_up, "only {rows} rows written in 120 s");
            let pending: Vec<_> = (0..8)
                .map(|k| {
                    let (conns, n) = (Arc::clone(&conns), rows + k);
                    tokio::spawn(async move {
                        conns
                            .write(move |c| {
                                c.execute("INSERT INTO b (n, v) VALUES (?1, zeroblob(3000))", [n])
                                    .map(|_| ())
                                    .map_err(internal)
                            })
                            .await
                    })
                })
                .collect();
            for p in pending {
                p.await.unwrap().unwrap();
            }
            rows += 8;
            max_wal = max_wal.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        let frame = 4096 + 24;
        let written: i64 = conns
            .read(|c| {
                c.query_row("SELECT count(*) FROM b", [], |r| r.get(0))
                    .map_err(internal)
            })
            .await
            .unwrap();
        assert_eq!(written, rows);
        assert!(
            max_wal < rows as u64 * frame / 2,
            "the WAL grew to {max_wal} bytes for {rows} rows of one page each"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_of_sharing_jobs_commits_whole_or_not_at_all() {
        let (_dir, conns) = store().await;
        let results = one_batch(&conns, &[(1, true), (2, true), (3, true)]).await;
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        let results = one_batch(&conns, &[(4, true), (-5, true), (6, true)]).await;
        assert!(unavailable(&results[0]) && unavailable(&results[2]), "{results:?}");
        assert!(matches!(results[1], Err(StoreError::Internal(_))), "{:?}", results[1]);
        assert_eq!(stored(&conns).await, vec![1, 2, 3]);
    }
}
