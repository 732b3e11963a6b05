//! Settings: raw flags and `HERALD_*` variables ([`ServeArgs`]) resolved into
//! a typed [`Config`], failing fast with a message that names the setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use herald_domain::dashboard::{LINK_TTL_MS, SESSION_TTL_MS, check_public_url};
use herald_domain::limits::Limits;
use herald_domain::retry::RetryPolicy;
use herald_domain::target::TargetPolicy;
use herald_engine::{DEFAULT_ENDPOINT_CONCURRENCY, EngineConfig};
use herald_store::sqlite::Durability;

use crate::serve::ServeLimits;

/// Where the data lives.
#[derive(Debug, Clone)]
pub enum DatabaseLocation {
    Sqlite {
        path: PathBuf,
        durability: Durability,
    },
    /// A `postgres://` URL; any number of processes may share it.
    Postgres {
        url: String,
    },
}

/// Resolved settings for one `herald serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database: DatabaseLocation,
    pub admin_key: Option<String>,
    pub allow_insecure_targets: bool,
    pub attempt_timeout: Duration,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// The team-webhook retry schedule; tests shorten it.
    pub standard_retry: RetryPolicy,
    /// The real-time retry schedule; tests shorten it.
    pub realtime_retry: RetryPolicy,
    /// How long a webhook may fail every delivery before it is deactivated.
    pub auto_deactivate_after: Duration,
    /// The most deliveries per second this process's recovers make.
    pub recover_rate_per_s: f64,
    /// How long events, with their deliveries and log, are kept.
    pub retention: Duration,
    /// Requests a second one team key may make (bursts of twice that).
    pub team_rate_limit: u32,
    /// How long a claim on a delivery holds without renewal.
    pub lease: Duration,
    /// How many attempts one team webhook may have on the wire at once.
    pub endpoint_concurrency: usize,
    /// Where people reach this server, without a trailing slash; `None`
    /// means `http://` and the address actually listened on.
    pub public_url: Option<String>,
    /// How long a dashboard sign-in link works.
    pub dashboard_link_ttl: Duration,
    /// How long a dashboard session lasts.
    pub dashboard_session_ttl: Duration,
    /// Pins the attempt capacity publish admission assumes, instead of
    /// learning it as the server runs; tests use it.
    pub retry_capacity_per_s: Option<f64>,
    /// What one team or bot may hold.
    pub limits: Limits,
    /// The bounds on client connections.
    pub serve_limits: ServeLimits,
    /// The wall clock that dashboard links and sessions expire by; tests
    /// set a manual one.
    pub clock: herald_engine::Clock,
}

impl Config {
    /// The contract's defaults with data at `database`.
    pub fn new(database: DatabaseLocation) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database,
            admin_key: None,
            allow_insecure_targets: false,
            attempt_timeout: Duration::from_secs(10),
            max_body_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            standard_retry: RetryPolicy::standard(),
            realtime_retry: RetryPolicy::realtime(),
            auto_deactivate_after: Duration::from_secs(5 * 86_400),
            recover_rate_per_s: herald_engine::DEFAULT_RECOVER_RATE,
            retention: DEFAULT_RETENTION,
            team_rate_limit: DEFAULT_TEAM_RATE_LIMIT,
            lease: Duration::from_secs(10),
            endpoint_concurrency: DEFAULT_ENDPOINT_CONCURRENCY,
            public_url: None,
            dashboard_link_ttl: Duration::from_millis(LINK_TTL_MS as u64),
            dashboard_session_ttl: Duration::from_millis(SESSION_TTL_MS as u64),
            retry_capacity_per_s: None,
            limits: Limits::default(),
            serve_limits: ServeLimits {
                header_timeout: ServeLimits::DEFAULT_HEADER_TIMEOUT,
                max_connections: ServeLimits::default_max_connections(open_file_limit()),
            },
            clock: herald_engine::Clock::system(),
        }
    }

    pub fn target_policy(&self) -> TargetPolicy {
        if self.allow_insecure_targets {
            TargetPolicy::AllowInsecure
        } else {
            TargetPolicy::PublicHttpsOnly
        }
    }

    pub fn engine_config(&self) -> EngineConfig {
        let mut engine = EngineConfig::new(self.target_policy());
        if let DatabaseLocation::Postgres { .. } = self.database {
            // Processes share the store: each needs its own name in leases.
            let suffix: [u8; 6] = herald_domain::random_bytes();
            engine.node = format!("node-{}", suffix.iter().map(|b| format!("{b:02x}")).collect::<String>());
        }
        engine.lease = self.lease;
        engine.per_endpoint_in_flight = self.endpoint_concurrency;
        engine.attempt_timeout = self.attempt_timeout;
        engine.standard_retry = self.standard_retry.clone();
        engine.realtime_retry = self.realtime_retry.clone();
        engine.auto_deactivate_after = self.auto_deactivate_after;
        engine.recover_rate_per_s = self.recover_rate_per_s;
        engine.shutdown_grace = self.shutdown_grace;
        engine.retry_capacity_per_s = self.retry_capacity_per_s;
        engine
    }
}

/// `herald serve` flags; each also reads its `HERALD_*` variable.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// `sqlite://PATH` (default `sqlite://herald.db` in the working directory)
    /// or `postgres://USER@HOST/DB`.
    #[arg(long, env = "HERALD_DATABASE_URL", default_value = "sqlite://herald.db")]
    pub database_url: String,
    /// The operator's key. Unset on a new store: one is generated and printed once.
    #[arg(long, env = "HERALD_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Development only: allow http and internal addresses as delivery targets.
    #[arg(long, env = "HERALD_ALLOW_INSECURE_TARGETS", default_value = "false", value_parser = parse_flag)]
    pub allow_insecure_targets: bool,
    /// Timeout of one delivery attempt, in milliseconds.
    #[arg(long, env = "HERALD_ATTEMPT_TIMEOUT_MS", default_value_t = 10_000)]
    pub attempt_timeout_ms: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "HERALD_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How long a claim on a delivery holds without renewal, in milliseconds: on
    /// a shared PostgreSQL store, how soon another node takes over a dead one's work.
    #[arg(long, env = "HERALD_LEASE_MS", default_value_t = 10_000)]
    pub lease_ms: u64,
    /// How many attempts one team webhook may have on the wire at once (its
    /// connections); a real-time endpoint always has one, to keep its order.
    #[arg(long, env = "HERALD_ENDPOINT_CONCURRENCY", default_value_t = DEFAULT_ENDPOINT_CONCURRENCY)]
    pub endpoint_concurrency: usize,
    /// SQLite durability: `normal` survives a killed process, `full` also power loss.
    #[arg(long, env = "HERALD_SQLITE_SYNC", default_value = "normal")]
    pub sqlite_sync: String,
    /// Where people reach this server (dashboard links are built under it);
    /// default `http://` and the listen address.
    #[arg(long, env = "HERALD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Threads running the API and the engine; default one per core. Lower
    /// it when several processes share one machine's cores.
    #[arg(long, env = "HERALD_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
    /// The most team webhooks one team may have.
    #[arg(long, env = "HERALD_MAX_WEBHOOKS_PER_TEAM", default_value_t = Limits::DEFAULT_WEBHOOKS_PER_TEAM)]
    pub max_webhooks_per_team: usize,
    /// How long a request's headers may take to arrive, and a keep-alive
    /// connection may wait for its next request, in milliseconds.
    #[arg(long, env = "HERALD_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// The most client connections open at once; default three quarters of
    /// the open-file limit (at most 100,000).
    #[arg(long, env = "HERALD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// The most real-time endpoints one bot may have.
    #[arg(long, env = "HERALD_MAX_REALTIME_ENDPOINTS_PER_BOT", default_value_t = Limits::DEFAULT_REALTIME_ENDPOINTS_PER_BOT)]
    pub max_realtime_endpoints_per_bot: usize,
    /// Deactivate a webhook whose every delivery has failed for this long
    /// (`5d`, `12h`, `30m`, `45s`), counted from its first failed delivery
    /// after its last success.
    #[arg(long, env = "HERALD_AUTO_DEACTIVATE_AFTER", default_value = "5d")]
    pub auto_deactivate_after: String,
    /// The most deliveries per second this process's recovers make, so that
    /// live traffic keeps its latency while one runs.
    #[arg(long, env = "HERALD_RECOVER_RATE", default_value_t = herald_engine::DEFAULT_RECOVER_RATE)]
    pub recover_rate: f64,
    /// How long events, with their deliveries and attempt log, are kept
    /// (`30d`, `12h`, `90s`); a delivery not yet finished keeps its event.
    #[arg(long, env = "HERALD_RETENTION", default_value = "30d")]
    pub retention: String,
    /// Requests a second one team key may make, with bursts of twice that;
    /// beyond it the answer is 429 with `Retry-After`.
    #[arg(long, env = "HERALD_TEAM_RATE_LIMIT", default_value_t = DEFAULT_TEAM_RATE_LIMIT)]
    pub team_rate_limit: u32,
    /// On SIGTERM, how long attempts on the wire may take to finish before
    /// the node gives its work back and exits.
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE", default_value = "10s")]
    pub shutdown_grace: String,
}

/// The default of `HERALD_TEAM_RATE_LIMIT`.
pub const DEFAULT_TEAM_RATE_LIMIT: u32 = 100;

/// The default of `HERALD_RETENTION`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// The longest `HERALD_AUTO_DEACTIVATE_AFTER`: a hundred years, for "never".
const MAX_AUTO_DEACTIVATE_AFTER: Duration = Duration::from_secs(36_500 * 86_400);

/// A duration setting: a whole number with a unit, `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{raw}` is not a whole number with a unit (ms, s, m, h, d), such as 5d"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{raw}`: the unit must be ms, s, m, h or d, as in 5d")),
    };
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{raw}` is too long"))
}

/// This process's open-file (descriptor) limit; `u64::MAX` when unlimited.
pub fn open_file_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Accepts the usual spellings of a boolean setting.
fn parse_flag(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("expected 1/0, true/false, yes/no or on/off, not `{other}`")),
    }
}

impl ServeArgs {
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let listen: SocketAddr = self.listen.parse().with_context(|| {
            format!(
                "HERALD_LISTEN / --listen: `{}` is not an address like 127.0.0.1:8080",
                self.listen
            )
        })?;
        let durability = match self.sqlite_sync.to_ascii_lowercase().as_str() {
            "normal" => Durability::Normal,
            "full" => Durability::Full,
            other => bail!("HERALD_SQLITE_SYNC / --sqlite-sync: expected `normal` or `full`, not `{other}`"),
        };
        let database = parse_database_url(&self.database_url, durability)?;
        if self.attempt_timeout_ms == 0 {
            bail!("HERALD_ATTEMPT_TIMEOUT_MS / --attempt-timeout-ms: must be more than 0");
        }
        if self.max_body_bytes < 1024 {
            bail!("HERALD_MAX_BODY_BYTES / --max-body-bytes: must be at least 1024");
        }
        if let Some(key) = &self.admin_key
            && (key.len() < 16 || key.contains(char::is_whitespace))
        {
            bail!("HERALD_ADMIN_KEY / --admin-key: must be at least 16 characters without spaces");
        }
        if let Some(key) = &self.admin_key
            && key.starts_with(herald_domain::keys::TEAM_KEY_PREFIX)
        {
            bail!(
                "HERALD_ADMIN_KEY / --admin-key: must not start with `{}`, which marks team keys (it could never be used as the admin key)",
                herald_domain::keys::TEAM_KEY_PREFIX
            );
        }
        let mut config = Config::new(database);
        config.listen = listen;
        config.admin_key = self.admin_key.clone();
        config.allow_insecure_targets = self.allow_insecure_targets;
        config.attempt_timeout = Duration::from_millis(self.attempt_timeout_ms);
        config.max_body_bytes = self.max_body_bytes;
        if self.lease_ms < 1_000 {
            bail!("HERALD_LEASE_MS / --lease-ms: must be at least 1000");
        }
        config.lease = Duration::from_millis(self.lease_ms);
        if !(1..=1024).contains(&self.endpoint_concurrency) {
            bail!("HERALD_ENDPOINT_CONCURRENCY / --endpoint-concurrency: must be from 1 to 1024");
        }
        config.endpoint_concurrency = self.endpoint_concurrency;
        config.public_url = self.public_url.as_deref().map(resolve_public_url).transpose()?;
        if self.max_webhooks_per_team == 0 {
            bail!("HERALD_MAX_WEBHOOKS_PER_TEAM / --max-webhooks-per-team: must be at least 1");
        }
        if self.max_realtime_endpoints_per_bot == 0 {
            bail!("HERALD_MAX_REALTIME_ENDPOINTS_PER_BOT / --max-realtime-endpoints-per-bot: must be at least 1");
        }
        if self.header_timeout_ms == 0 {
            bail!("HERALD_HEADER_TIMEOUT_MS / --header-timeout-ms: must be more than 0");
        }
        config.serve_limits.header_timeout = Duration::from_millis(self.header_timeout_ms);
        if let Some(max) = self.max_connections {
            let fd_limit = open_file_limit();
            if max == 0 || max as u64 >= fd_limit {
                bail!(
                    "HERALD_MAX_CONNECTIONS / --max-connections: must be from 1 to below the open-file limit ({fd_limit})"
                );
            }
            config.serve_limits.max_connections = max;
        }
        config.auto_deactivate_after = parse_duration(&self.auto_deactivate_after)
            .map_err(|why| anyhow::anyhow!("HERALD_AUTO_DEACTIVATE_AFTER / --auto-deactivate-after: {why}"))?;
        if config.auto_deactivate_after.is_zero() || config.auto_deactivate_after > MAX_AUTO_DEACTIVATE_AFTER {
            bail!("HERALD_AUTO_DEACTIVATE_AFTER / --auto-deactivate-after: must be more than 0 and at most 36500d");
        }
        if !(1.0..=1_000_000.0).contains(&self.recover_rate) {
            bail!("HERALD_RECOVER_RATE / --recover-rate: must be from 1 to 1,000,000 deliveries per second");
        }
        config.recover_rate_per_s = self.recover_rate;
        config.retention =
            parse_duration(&self.retention).map_err(|why| anyhow::anyhow!("HERALD_RETENTION / --retention: {why}"))?;
        if config.retention < Duration::from_secs(1) || config.retention > MAX_AUTO_DEACTIVATE_AFTER {
            bail!("HERALD_RETENTION / --retention: must be at least 1s and at most 36500d");
        }
        if !(1..=1_000_000).contains(&self.team_rate_limit) {
            bail!("HERALD_TEAM_RATE_LIMIT / --team-rate-limit: must be from 1 to 1,000,000 requests a second");
        }
        config.team_rate_limit = self.team_rate_limit;
        config.shutdown_grace = parse_duration(&self.shutdown_grace)
            .map_err(|why| anyhow::anyhow!("HERALD_SHUTDOWN_GRACE / --shutdown-grace: {why}"))?;
        if config.shutdown_grace > Duration::from_secs(3_600) {
            bail!("HERALD_SHUTDOWN_GRACE / --shutdown-grace: must be at most 1h");
        }
        config.limits = Limits {
            webhooks_per_team: self.max_webhooks_per_team,
            realtime_endpoints_per_bot: self.max_realtime_endpoints_per_bot,
        };
        Ok(config)
    }
}

/// Checks `HERALD_PUBLIC_URL` / `--public-url`.
pub fn resolve_public_url(raw: &str) -> anyhow::Result<String> {
    check_public_url(raw.trim()).map_err(|why| anyhow::anyhow!("HERALD_PUBLIC_URL / --public-url: `{raw}` {why}"))
}

pub fn parse_database_url(raw: &str, durability: Durability) -> anyhow::Result<DatabaseLocation> {
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        return Ok(DatabaseLocation::Postgres { url: raw.to_owned() });
    }
    let path = raw
        .strip_prefix("sqlite://")
        .or_else(|| raw.strip_prefix("sqlite:"))
        .unwrap_or(raw);
    if path.is_empty() {
        bail!("HERALD_DATABASE_URL: `{raw}` names no file; use sqlite://PATH");
    }
    Ok(DatabaseLocation::Sqlite {
        path: PathBuf::from(path),
        durability,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn durations_take_a_whole_number_and_a_unit() {
        assert_eq!(parse_duration("5d"), Ok(Duration::from_secs(5 * 86_400)));
        assert_eq!(parse_duration(" 90s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        for bad in ["5", "d", "1.5h", "-1d", "5 days", "", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn resolve(args: &[&str]) -> anyhow::Result<Config> {
        let cli = Cli::try_parse_from(std::iter::once("herald").chain(args.iter().copied()))?;
        cli.serve.resolve()
    }

    #[test]
    fn endpoint_concurrency_reaches_the_engine_and_zero_is_refused_by_name() {
        let config = resolve(&["--endpoint-concurrency", "8"]).expect("a valid setting");
        assert_eq!(config.engine_config().per_endpoint_in_flight, 8);
        let default = resolve(&[]).expect("the defaults");
        assert_eq!(
            default.engine_config().per_endpoint_in_flight,
            DEFAULT_ENDPOINT_CONCURRENCY
        );
        let error = resolve(&["--endpoint-concurrency", "0"]).expect_err("zero connections cannot deliver");
        assert!(error.to_string().contains("HERALD_ENDPOINT_CONCURRENCY"), "{error}");
    }

    #[test]
    fn an_admin_key_shaped_like_a_team_key_is_refused_by_name() {
        let error = resolve(&["--admin-key", "hk_0123456789abcdefghij"]).expect_err("taken for a team key");
        assert!(error.to_string().contains("HERALD_ADMIN_KEY"), "{error}");
        assert!(error.to_string().contains("hk_"), "{error}");
        resolve(&["--admin-key", "ak_0123456789abcdefghij"]).expect("any other key");
    }
}
