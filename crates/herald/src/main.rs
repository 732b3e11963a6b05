//! `herald`: the webhook delivery server. All wiring lives in the library.

use clap::{Parser, Subcommand};
use herald::config::{ServeArgs, parse_database_url, resolve_public_url};
use herald_store::sqlite::Durability;

/// jemalloc instead of glibc's allocator: every delivery allocates and frees
/// many small buffers across threads, and glibc spent about 15% of the
/// server's CPU in `malloc`/`free`, its arena locks and fastbin
/// consolidation; with jemalloc a single-endpoint delivery costs about 70 µs
/// of CPU instead of 94 µs (`herald-bench single`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Webhook delivery server for meeting-data platforms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the delivery engine.
    Serve(ServeArgs),
    /// Try Herald: a server on a temporary store, a built-in receiver, demo
    /// webhooks and a bot, and sample events every few seconds (Ctrl-C ends it).
    Demo(herald::demo::DemoArgs),
    /// Apply the store's schema migrations and exit.
    Migrate {
        #[arg(long, env = "HERALD_DATABASE_URL", default_value = "sqlite://herald.db")]
        database_url: String,
    },
    /// Write a consistent copy of a SQLite store, while a server runs on it
    /// (on PostgreSQL, use the database's own tools).
    Backup {
        /// The new file (it must not exist yet).
        #[arg(long)]
        to: std::path::PathBuf,
        #[arg(long, env = "HERALD_DATABASE_URL", default_value = "sqlite://herald.db")]
        database_url: String,
    },
    /// Copy a stopped SQLite store into an empty PostgreSQL database.
    MigrateStore {
        /// The SQLite store (`sqlite://PATH`); stop its server first.
        #[arg(long)]
        from: String,
        /// The PostgreSQL store (`postgres://…`); it must hold no data yet.
        #[arg(long)]
        to: String,
    },
    /// Print a one-time dashboard sign-in link for a team (opens the store directly).
    DashboardLink {
        /// The team the link opens the dashboard for.
        #[arg(long)]
        team: String,
        #[arg(long, env = "HERALD_DATABASE_URL", default_value = "sqlite://herald.db")]
        database_url: String,
        /// Where people reach the server; default `http://` and the listen address.
        #[arg(long, env = "HERALD_PUBLIC_URL")]
        public_url: Option<String>,
        /// Used for the default public URL.
        #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
    },
}

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    // Logs go to stderr: stdout carries what a command prints for people and
    // scripts (the generated admin key, a dashboard link). The demo says what
    // happens on stdout, so its log shows only warnings unless `HERALD_LOG`
    // asks for more.
    let log = std::env::var("HERALD_LOG").ok().filter(|l| !l.trim().is_empty());
    let default_log = matches!(command, Command::Demo(_)).then_some("warn");
    herald::init_logging(
        std::env::var("HERALD_LOG_FORMAT").ok().as_deref(),
        log.as_deref().or(default_log),
    )?;
    if matches!(command, Command::Serve(_)) {
        reserve_fd_table();
    }
    let threads = match &command {
        Command::Serve(ServeArgs {
            worker_threads: Some(threads),
            ..
        }) => Some(usize::from(*threads)),
        _ => None,
    };
    let mut runtime = match threads {
        // One thread: everything runs on it, with no hand-offs between a
        // worker and the thread that drives the server.
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all().build()?.block_on(run(command))
}

/// The most descriptors [`reserve_fd_table`] makes room for.
const FD_TABLE_RESERVE: u64 = 65_536;

/// Grows this process's descriptor table once, while it has one thread, to
/// its open-file limit (at most [`FD_TABLE_RESERVE`]). The kernel doubles the
/// table when a new socket or file needs a slot past its end, and in a
/// process of several threads each doubling waits for an RCU grace period
/// inside `socket()` or `accept()`: 15-20 ms in which both runtime workers
/// stood still (`perf record -e sched:sched_switch` during `herald-bench
/// isolation`, whose hanging endpoints keep thousands of connections open),
/// the largest latencies of that run. Duplicating stderr to the table's last
/// slot and closing it again leaves the table at that size. Failing changes
/// nothing but that.
fn reserve_fd_table() {
    let limit = herald::config::open_file_limit().min(FD_TABLE_RESERVE);
    let Ok(last) = i32::try_from(limit.saturating_sub(1)) else {
        return;
    };
    if let Err(e) = rustix::io::fcntl_dupfd_cloexec(std::io::stderr(), last) {
        tracing::debug!(error = %e, slots = limit, "cannot reserve the descriptor table");
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let config = args.resolve()?;
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            let app = herald::App::build(config, listener).await?;
            if let Some(key) = app.generated_admin_key() {
                println!("Generated the admin key for this new store (shown once, keep it safe):\n{key}");
            }
            // The bound address, on stdout: with `--listen 127.0.0.1:0` the
            // system picks a free port, and whoever started the server (a
            // test, the benchmark) reads it here.
            println!("listening on http://{}", app.addr());
            tracing::info!(addr = %app.addr(), "herald is listening");
            app.run_until_stopped(herald::shutdown_signal()).await
        }
        Command::Demo(args) => herald::demo::run(args).await,
        Command::Backup { to, database_url } => {
            let report = herald::backup(&parse_database_url(&database_url, Durability::Normal)?, &to)?;
            println!(
                "backed up to {} ({} bytes in {} ms)",
                to.display(),
                report.bytes,
                report.took.as_millis()
            );
            Ok(())
        }
        Command::MigrateStore { from, to } => {
            let report = herald::migrate_store(
                &parse_database_url(&from, Durability::Normal)?,
                &parse_database_url(&to, Durability::Normal)?,
            )
            .await?;
            for (table, rows) in &report.tables {
                println!("{table}: {rows} rows");
            }
            println!("copied; start the servers on the PostgreSQL store");
            Ok(())
        }
        Command::Migrate { database_url } => {
            herald::migrate(&parse_database_url(&database_url, Durability::Normal)?).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::DashboardLink {
            team,
            database_url,
            public_url,
            listen,
        } => {
            let public_url = match public_url {
                Some(url) => resolve_public_url(&url)?,
                None => resolve_public_url(&format!("http://{listen}"))?,
            };
            let location = parse_database_url(&database_url, Durability::Normal)?;
            let ttl = herald::Config::new(location.clone()).dashboard_link_ttl;
            let link = herald::dashboard_link(&location, &team, &public_url, ttl).await?;
            println!("{}", link.url);
            eprintln!("(works once, for {} minutes)", ttl.as_secs() / 60);
            Ok(())
        }
    }
}
