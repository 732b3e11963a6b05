//! Every integration test runs against both stores: SQLite always, and
//! PostgreSQL when `HERALD_TEST_POSTGRES_URL` is set. [`on_every_store!`]
//! turns one test body into a `sqlite` and a `postgres` test; the backend
//! reaches `spawn_app` through a task-local, so test bodies stay unchanged.
//! Each PostgreSQL test gets a schema of its own, dropped when it ends.

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

tokio::task_local! {
    static BACKEND: Backend;
}

#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// The base URL of a PostgreSQL database the tests may create schemas in.
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL backend, if the environment provides one. Without it
    /// the test is skipped, loudly, unless `HERALD_TEST_REQUIRE_ALL=1`.
    pub fn postgres() -> Option<Self> {
        match std::env::var("HERALD_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(Self::Postgres(url)),
            _ => {
                let required = std::env::var("HERALD_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1");
                assert!(
                    !required,
                    "HERALD_TEST_REQUIRE_ALL=1 but HERALD_TEST_POSTGRES_URL is not set"
                );
                eprintln!("skipping the PostgreSQL variant: HERALD_TEST_POSTGRES_URL is not set");
                None
            }
        }
    }

    pub async fn run<F: Future<Output = ()>>(self, test: F) {
        BACKEND.scope(self, test).await;
    }

    /// The backend of the running test (SQLite outside `on_every_store!`).
    pub fn current() -> Self {
        BACKEND.try_with(Clone::clone).unwrap_or(Self::Sqlite)
    }
}

/// Where one test's data lives: a temp dir (the SQLite file, the working
/// directory of a spawned binary) and, on PostgreSQL, a schema of its own.
pub struct TestData {
    pub dir: tempfile::TempDir,
    pub postgres: Option<PgSchema>,
}

impl TestData {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let postgres = match Backend::current() {
            Backend::Sqlite => None,
            Backend::Postgres(base) => Some(PgSchema::create(&base).await),
        };
        Self { dir, postgres }
    }

    /// The `HERALD_DATABASE_URL` of this data.
    pub fn database_url(&self) -> String {
        match &self.postgres {
            Some(pg) => pg.url.clone(),
            None => format!("sqlite://{}", self.dir.path().join("herald.db").display()),
        }
    }
}

pub struct PgSchema {
    base: String,
    name: String,
    /// The base URL with the schema as `search_path`.
    pub url: String,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl PgSchema {
    async fn create(base: &str) -> Self {
        let (client, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL");
        tokio::spawn(connection);
        // Schemas left by runs that were killed are dropped after an hour.
        let stale = client
            .query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'herald_t_%'", &[])
            .await
            .expect("list schemas");
        for row in stale {
            let name: String = row.get(0);
            let created: u64 = name.split('_').nth(2).and_then(|t| t.parse().ok()).unwrap_or(u64::MAX);
            if created.saturating_add(3600) < now_s() {
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await;
            }
        }
        let suffix: [u8; 6] = herald_domain::random_bytes();
        let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("herald_t_{}_{hex}", now_s());
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create schema");
        let url = herald_store::postgres::schema_url(base, &name);
        Self {
            base: base.to_owned(),
            name,
            url,
        }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        herald_store::postgres::drop_schema_blocking(&self.base, &self.name);
    }
}

/// Declares tests that run once per store: `on_every_store! { async fn name() { … } }`
/// makes `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_every_store {
    ($( $(#[$meta:meta])* async fn $name:ident() $body:block )*) => {$(
        $(#[$meta])*
        async fn $name() $body

        mod $name {
            #[tokio::test]
            async fn sqlite() {
                $crate::stores::Backend::Sqlite.run(super::$name()).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(backend) = $crate::stores::Backend::postgres() {
                    backend.run(super::$name()).await;
                }
            }
        }
    )*};
}
