//! `herald`: the webhook delivery server. All wiring lives in the library.

use clap::{Parser, Subcommand};
use herald::config::{ServeArgs, parse_database_url};
use herald_store::sqlite::Durability;

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
    /// Apply the store's schema migrations and exit.
    Migrate {
        #[arg(long, env = "HERALD_DATABASE_URL", default_value = "sqlite://herald.db")]
        database_url: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    match Cli::parse().command {
        Command::Serve(args) => {
            let config = args.resolve()?;
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            let app = herald::App::build(config, listener).await?;
            if let Some(key) = app.generated_admin_key() {
                println!("Generated the admin key for this new store (shown once, keep it safe):\n{key}");
            }
            tracing::info!(addr = %app.addr(), "herald is listening");
            app.run_until_stopped(herald::shutdown_signal()).await
        }
        Command::Migrate { database_url } => {
            herald::migrate(&parse_database_url(&database_url, Durability::Normal)?).await?;
            println!("migrations applied");
            Ok(())
        }
    }
}
