//! The `herald` binary's library half: settings ([`config`]) and the wiring of
//! store, engine, API and dashboard into one [`App`] that tests start exactly
//! as `main` does, on a listener bound to port 0.

pub mod config;
pub mod demo;
mod retention;
pub mod serve;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use herald_api::{ApiSettings, AppState};
use herald_dashboard::{DashboardSettings, DashboardState};
use herald_domain::keys::ApiKey;
use herald_engine::{Engine, Metrics};
use herald_store::Store;
use herald_store::postgres::PgStore;
use herald_store::sqlite::SqliteStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, DatabaseLocation};

/// A built Herald: store open, engine running, listener bound.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    engine: Engine,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    grace: std::time::Duration,
    serve_limits: serve::ServeLimits,
    generated_admin_key: Option<ApiKey>,
}

impl App {
    /// Opens the store (migrating it), resolves the admin key, starts the
    /// engine and prepares the API on `listener`.
    pub async fn build(config: Config, listener: TcpListener) -> anyhow::Result<Self> {
        let store = open_store(&config.database).await?;
        let (admin_hash, generated_admin_key) = match &config.admin_key {
            Some(key) => (ApiKey::new(key.clone()).hash(), None),
            None => match store.admin_key_hash().await? {
                Some(hash) => (hash, None),
                None => {
                    let key = ApiKey::generate_admin_key();
                    if store.init_admin_key_hash(&key.hash()).await? {
                        (key.hash(), Some(key))
                    } else {
                        let hash = store.admin_key_hash().await?.context("admin key vanished")?;
                        (hash, None)
                    }
                }
            },
        };
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        // The engine holds only the queue role of the store.
        let queue = Arc::clone(&store) as Arc<dyn herald_store::Queue>;
        let engine = Engine::start(
            queue,
            config.engine_config(),
            Arc::new(Metrics::default()),
            tracker.clone(),
            shutdown.clone(),
        )
        .await?;
        let public_url = match &config.public_url {
            Some(url) => url.clone(),
            None => format!(
                "http://{}",
                listener.local_addr().context("the listener has no address")?
            ),
        };
        let settings = ApiSettings {
            target_policy: config.target_policy(),
            max_body_bytes: config.max_body_bytes,
            public_url: public_url.clone(),
            dashboard_link_ttl: config.dashboard_link_ttl,
            limits: config.limits,
            clock: config.clock.clone(),
            team_rate_limit: config.team_rate_limit,
        };
        let dashboard = DashboardState::new(
            Arc::clone(&store),
            engine.clone(),
            DashboardSettings {
                public_url,
                target_policy: config.target_policy(),
                session_ttl: config.dashboard_session_ttl,
                limits: config.limits,
                clock: config.clock.clone(),
            },
        );
        tracker.spawn(retention::run(
            Arc::clone(&store) as Arc<dyn herald_store::Retention>,
            config.retention,
            shutdown.clone(),
        ));
        let state = AppState::new(store, engine.clone(), admin_hash, settings);
        let router = herald_api::router(state).merge(herald_dashboard::router(dashboard));
        Ok(Self {
            listener,
            router,
            engine,
            tracker,
            shutdown,
            grace: config.shutdown_grace,
            serve_limits: config.serve_limits,
            generated_admin_key,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The admin key, if this start generated it: to be shown once.
    pub fn generated_admin_key(&self) -> Option<&str> {
        self.generated_admin_key.as_ref().map(ApiKey::reveal)
    }

    /// Serves until `signal` completes; then stops claiming work and answers
    /// `/readyz` with 503 while attempts in flight finish within the grace
    /// period (requests are still served meanwhile, so that a load balancer
    /// sees the 503), stops accepting requests, and gives back this node's
    /// leases.
    pub async fn run_until_stopped(self, signal: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (shutdown, tracker, grace) = (self.shutdown.clone(), self.tracker.clone(), self.grace);
        serve::serve(self.listener, self.router, self.serve_limits, async move {
            signal.await;
            tracing::info!("stopping: /readyz answers 503; attempts in flight may finish");
            shutdown.cancel();
            tracker.close();
            if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
                tracing::warn!("attempts still in flight after the grace period; they will be retried");
            }
        })
        .await
        .context("the HTTP server failed")?;
        self.engine.release_all().await;
        Ok(())
    }
}

async fn open_store(location: &DatabaseLocation) -> anyhow::Result<Arc<dyn Store>> {
    match location {
        DatabaseLocation::Sqlite { path, durability } => {
            let store = SqliteStore::open(path, *durability)
                .with_context(|| format!("cannot open the SQLite store at {}", path.display()))?;
            Ok(Arc::new(store))
        }
        DatabaseLocation::Postgres { url } => {
            let store = PgStore::open(url, herald_store::postgres::DEFAULT_POOL_SIZE)
                .await
                .context("cannot open the PostgreSQL store")?;
            Ok(Arc::new(store))
        }
    }
}

/// Opens the store and applies its migrations, nothing else (`herald migrate`).
pub async fn migrate(location: &DatabaseLocation) -> anyhow::Result<()> {
    open_store(location).await.map(|_| ())
}

/// Copies a stopped SQLite store into an empty PostgreSQL one (`herald
/// migrate-store`), migrating both to this binary's schema first.
pub async fn migrate_store(
    from: &DatabaseLocation,
    to: &DatabaseLocation,
) -> anyhow::Result<herald_store::postgres::ImportReport> {
    let (DatabaseLocation::Sqlite { path, .. }, DatabaseLocation::Postgres { url }) = (from, to) else {
        anyhow::bail!("--from must be a sqlite:// store and --to a postgres:// one");
    };
    if !path.exists() {
        anyhow::bail!("--from: there is no SQLite store at {}", path.display());
    }
    let target = PgStore::open(url, 2)
        .await
        .context("--to: cannot open the PostgreSQL store")?;
    target
        .import_sqlite(path)
        .await
        .context("cannot copy the store (nothing was written to PostgreSQL)")
}

/// Copies a SQLite store to `to` while a server may be running on it
/// (`herald backup`). A server started on the copy has everything committed
/// before the copy began.
pub fn backup(location: &DatabaseLocation, to: &std::path::Path) -> anyhow::Result<herald_store::sqlite::BackupReport> {
    match location {
        DatabaseLocation::Sqlite { path, .. } => herald_store::sqlite::backup(path, to).map_err(|e| match e {
            herald_store::StoreError::NotFound => anyhow::anyhow!("there is no SQLite store at {}", path.display()),
            other => anyhow::Error::new(other).context("cannot back up the store"),
        }),
        DatabaseLocation::Postgres { .. } => anyhow::bail!(
            "herald backup copies SQLite stores; back up PostgreSQL with its own tools (pg_dump, or base backups with WAL archiving)"
        ),
    }
}

/// Mints a one-time dashboard sign-in link for a team straight in the store
/// (`herald dashboard-link`), as `POST /api/v1/teams/{teamId}/dashboard-links` does.
pub async fn dashboard_link(
    location: &DatabaseLocation,
    team: &str,
    public_url: &str,
    ttl: std::time::Duration,
) -> anyhow::Result<herald_api::dashboard_links::DashboardLink> {
    let team = herald_domain::ids::TeamId::parse(team)
        .with_context(|| format!("--team: `{team}` is not a team id like team_…"))?;
    let store = open_store(location).await?;
    herald_api::dashboard_links::mint(store.as_ref(), &team, public_url, ttl, herald_engine::now_ms())
        .await
        .map_err(|e| match e {
            herald_store::StoreError::NotFound => anyhow::anyhow!("--team: there is no team {team} in this store"),
            other => anyhow::Error::new(other).context("cannot store the link"),
        })
}

/// The log filter: `HERALD_LOG` (default `info`). The platform certificate
/// verifier logs an ERROR for every certificate it refuses, that is once per
/// attempt to a customer endpoint with a bad certificate; that failure is in
/// the attempt log, and the engine logs a count of them at most once a minute,
/// so the verifier's own lines are off unless `HERALD_LOG` names it.
pub fn log_filter(raw: Option<&str>) -> tracing_subscriber::EnvFilter {
    const VERIFIER: &str = "rustls_platform_verifier";
    let raw = raw.filter(|r| !r.trim().is_empty()).unwrap_or("info");
    let filter = tracing_subscriber::EnvFilter::try_new(raw).unwrap_or_else(|_| "info".into());
    if raw.contains(VERIFIER) {
        return filter;
    }
    match format!("{VERIFIER}=off").parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Sets up logging to stderr: `HERALD_LOG_FORMAT` `text` (the default, for
/// people) or `json` (one object a line, for log pipelines: the line's
/// fields at the top level, and the fields of the span it happened in, such
/// as an attempt's `event_id` and `delivery_id`, under `span`), filtered by
/// `HERALD_LOG` ([`log_filter`]).
pub fn init_logging(format: Option<&str>, filter: Option<&str>) -> anyhow::Result<()> {
    let filter = log_filter(filter);
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format.map(str::trim).filter(|f| !f.is_empty()).unwrap_or("text") {
        "text" => logs.init(),
        "json" => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        other => anyhow::bail!("HERALD_LOG_FORMAT: `{other}` is neither `text` nor `json`"),
    }
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn the_certificate_verifiers_own_lines_are_off_unless_asked_for() {
        for raw in [None, Some(""), Some("info"), Some("herald=debug,warn")] {
            let filter = log_filter(raw).to_string();
            assert!(filter.contains("rustls_platform_verifier=off"), "{raw:?}: {filter}");
        }
        let asked = log_filter(Some("info,rustls_platform_verifier=error")).to_string();
        assert!(!asked.contains("=off"), "{asked}");
    }
}
