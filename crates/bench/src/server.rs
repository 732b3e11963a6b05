//! The server under test: one `herald serve` child process on a fresh SQLite
//! file in its own temporary directory, and what `/proc` says about it.
//!
//! [`Herald::start`] starts the binary on port 0 (it prints the address it
//! bound), with the development settings the harness needs, and waits (bounded) for
//! `GET /readyz` to answer 200, timing it. A background task samples the
//! resident set every 100 ms; [`Herald::stats`] adds the kernel's own peak
//! (`VmHWM`) and the CPU time used so far. The child is killed on
//! [`Herald::stop`], and on drop if the harness bails out early.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::client::Conn;

/// The operator key the harness gives every server it starts.
pub const ADMIN_KEY: &str = "bench-admin-key-0123456789abcdef";

/// A fresh schema in a PostgreSQL database, for one scenario's run.
/// Schemas are named `herald_bench_<time>`; [`BenchSchema::drop_schema`]
/// removes it with everything in it when the run is over, so that runs do not
/// leave gigabytes behind for autovacuum and checkpoints to chew on while the
/// next run is measured.
pub struct BenchSchema {
    base: String,
    name: String,
    /// The URL that puts Herald in the schema.
    pub url: String,
}

impl BenchSchema {
    /// Makes the schema in the database at `base`.
    pub async fn create(base: &str) -> anyhow::Result<Self> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis();
        let name = format!("herald_bench_{stamp}");
        execute(base, &format!("CREATE SCHEMA {name}")).await?;
        let separator = if base.contains('?') { '&' } else { '?' };
        Ok(Self {
            url: format!("{base}{separator}options=-c%20search_path%3D{name}"),
            base: base.to_owned(),
            name,
        })
    }

    /// Drops the schema and everything in it (the servers must have stopped).
    pub async fn drop_schema(self) -> anyhow::Result<()> {
        execute(&self.base, &format!("DROP SCHEMA {} CASCADE", self.name)).await
    }
}

async fn execute(base: &str, sql: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("cannot connect to {base}"))?;
    let driver = tokio::spawn(connection);
    let result = client.batch_execute(sql).await.with_context(|| format!("{sql} failed"));
    drop(client);
    driver.abort();
    result
}

/// How long a server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `herald serve`.
pub struct Herald {
    child: Child,
    pid: u32,
    pub addr: SocketAddr,
    /// Milliseconds from spawning the process to the first `/readyz` 200.
    pub ready_ms: f64,
    dir: tempfile::TempDir,
    peak_sampled_kb: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

/// Resource use of the server process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// Peak resident set in MiB (max of the kernel's `VmHWM` and our samples).
    pub peak_rss_mb: f64,
    /// Resident set right now, in MiB.
    pub rss_mb: f64,
    /// User plus system CPU time, in seconds.
    pub cpu_s: f64,
    /// The size of the SQLite write-ahead log file, in MiB (0 on PostgreSQL).
    /// SQLite reuses the file without shrinking it, so this is its peak.
    pub wal_mb: f64,
}

impl Herald {
    /// Starts `bin serve` on a free port and a new database, and waits until
    /// it is ready.
    /// `threads`: the server's worker threads, where several share the cores;
    /// `env`: further settings of the scenario's own.
    pub async fn start(
        bin: &Path,
        database_url: Option<&str>,
        threads: Option<usize>,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        if !bin.is_file() {
            bail!(
                "herald binary not found at {} (build it with `cargo build --release -p herald`, or pass --herald-bin)",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("herald-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let db = dir.path().join("herald.db");
        let stdout = std::fs::File::create(dir.path().join("stdout.log"))?;
        let stderr = std::fs::File::create(dir.path().join("stderr.log"))?;
        let spawned = Instant::now();
        let mut command = Command::new(bin);
        if let Some(threads) = threads {
            command.env("HERALD_WORKER_THREADS", threads.to_string());
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let child = command
            .arg("serve")
            .current_dir(dir.path())
            // The system picks a free port; the server prints it.
            .env("HERALD_LISTEN", "127.0.0.1:0")
            .env(
                "HERALD_DATABASE_URL",
                database_url.map_or_else(|| format!("sqlite://{}", db.display()), str::to_owned),
            )
            .env("HERALD_ADMIN_KEY", ADMIN_KEY)
            .env("HERALD_ALLOW_INSECURE_TARGETS", "1")
            .env("HERALD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let peak_sampled_kb = Arc::new(AtomicU64::new(0));
        let sampler = tokio::spawn(sample_rss(pid, Arc::clone(&peak_sampled_kb)));
        let mut child = child;
        let addr = bound_address(&mut child, &dir.path().join("stdout.log"), spawned).await?;
        let mut herald = Self {
            child,
            pid,
            addr,
            ready_ms: 0.0,
            dir,
            peak_sampled_kb,
            sampler,
        };
        herald.wait_ready(spawned).await?;
        Ok(herald)
    }

    async fn wait_ready(&mut self, spawned: Instant) -> anyhow::Result<()> {
        let deadline = spawned + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited before it was ready ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(mut conn) = Conn::connect(self.addr).await
                && let Ok((status, _)) = conn.get("/readyz").await
                && status == 200
            {
                self.ready_ms = spawned.elapsed().as_secs_f64() * 1000.0;
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the server was not ready within {READY_TIMEOUT:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The last lines the server wrote to stderr and stdout.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["stderr.log", "stdout.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(20);
            for line in &lines[from..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Whether the server logged anything at all (it runs with `warn`).
    pub fn log_lines(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("stderr.log"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    /// The process's memory and CPU use so far.
    pub fn stats(&self) -> ProcStats {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let hwm = status_kb(&status, "VmHWM:").unwrap_or(0);
        let rss = status_kb(&status, "VmRSS:").unwrap_or(0);
        let sampled = self.peak_sampled_kb.load(Ordering::Relaxed);
        ProcStats {
            peak_rss_mb: hwm.max(rss).max(sampled) as f64 / 1024.0,
            rss_mb: rss as f64 / 1024.0,
            cpu_s: proc_cpu_s(&format!("/proc/{}/stat", self.pid)).unwrap_or(0.0),
            wal_mb: std::fs::metadata(self.dir.path().join("herald.db-wal"))
                .map(|m| m.len() as f64 / (1024.0 * 1024.0))
                .unwrap_or(0.0),
        }
    }

    /// Kills the server and waits for it to go.
    pub async fn stop(mut self) {
        self.sampler.abort();
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        // The child itself is killed on drop (`kill_on_drop`).
        self.sampler.abort();
    }
}

/// The address the server bound, from the `listening on http://ADDR` line
/// it prints on stdout (it is started on port 0).
async fn bound_address(child: &mut Child, stdout: &Path, spawned: Instant) -> anyhow::Result<SocketAddr> {
    let deadline = spawned + READY_TIMEOUT;
    loop {
        let printed = std::fs::read_to_string(stdout).unwrap_or_default();
        if let Some(addr) = printed.lines().find_map(|l| l.strip_prefix("listening on http://")) {
            return addr
                .trim()
                .parse()
                .with_context(|| format!("the server printed an address that does not parse: {addr}"));
        }
        if let Some(status) = child.try_wait()? {
            bail!("the server exited before it listened ({status}); its stdout:\n{printed}");
        }
        if Instant::now() >= deadline {
            bail!("the server printed no address within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn sample_rss(pid: u32, peak_kb: Arc<AtomicU64>) {
    let path = format!("/proc/{pid}/status");
    // Bounded: the task is aborted on stop, and gives up once the process is gone.
    loop {
        let Ok(status) = std::fs::read_to_string(&path) else {
            return;
        };
        if let Some(kb) = status_kb(&status, "VmRSS:") {
            peak_kb.fetch_max(kb, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// utime + stime of a `/proc/.../stat` file, in seconds.
pub fn proc_cpu_s(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The command name may hold spaces; the fields after it are fixed.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the file are the 12th and 13th after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// The machine's CPU time so far, from `/proc/stat`: (stolen, all), in
/// ticks. On a virtual machine the host takes *steal* time for its other
/// guests; while it does, every figure of the run is slower and noisier.
pub fn host_cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let ticks = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|t| t.parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()?;
    Some((*ticks.get(7)?, ticks.iter().sum()))
}

/// The share of the machine's CPU time stolen by its host between two
/// [`host_cpu_ticks`] readings, in percent.
pub fn steal_pct(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((s0, t0), (s1, t1)) = (before?, after?);
    let total = t1.checked_sub(t0).filter(|&t| t > 0)?;
    Some(s1.saturating_sub(s0) as f64 * 100.0 / total as f64)
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf` (this crate has no unsafe code).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The release binary in the workspace's build output:
/// `$CARGO_TARGET_DIR/release/herald`, else `<workspace>/target/release/herald`;
/// if that is missing, a `herald` beside this executable.
pub fn default_herald_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("..")
                .join("target")
        });
    let bin = target.join("release").join("herald");
    if bin.is_file() {
        return bin;
    }
    // Run straight from a build directory: the server built next to us.
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("herald")))
        .filter(|sibling| sibling.is_file())
        .unwrap_or(bin)
}
