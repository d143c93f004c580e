//! The `herald` command: `serve` (the default), `migrate`, `version`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use herald::{config::Config, roles::Roles, server, store::Store};

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Event delivery over gRPC tails and signed webhooks"
)]
struct Cli {
    /// TOML configuration file (also HERALD_CONFIG).
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the version and exit.
    Version,
}

/// Roles on the command line win over `roles` in the file or `HERALD_ROLES`; neither flag
/// keeps the configured roles (both by default).
#[derive(Args, Default)]
struct ServeArgs {
    /// Serve the gRPC API and publishes (only this, unless --worker is given too).
    #[arg(long)]
    api: bool,
    /// Run the delivery worker, the reconciler and retention (only this, unless --api is
    /// given too); health is still served on listen_addr.
    #[arg(long)]
    worker: bool,
}

// glibc's malloc showed up at ~15% of the server's CPU under load (arena lock
// contention and consolidation); mimalloc keeps per-thread heaps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    if let Command::Version = command {
        println!("herald {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let roles = match &command {
        Command::Serve(args) if args.api || args.worker => Some(Roles {
            api: args.api,
            worker: args.worker,
        }),
        _ => None,
    };
    let loaded = Config::load(cli.config.as_deref()).and_then(|config| match roles {
        Some(roles) => config.with_roles(roles),
        None => Ok(config),
    });
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("herald: {e}");
            std::process::exit(2);
        }
    };
    herald::logging::init(&config);
    tracing::info!(config = %config.redacted(), "effective configuration");

    match command {
        Command::Migrate => {
            let store = Store::connect(config.database_url.expose()).await?;
            store.migrate().await?;
            tracing::info!("migrations applied");
        }
        Command::Serve(_) => serve(config).await?,
        Command::Version => unreachable!("handled above"),
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = server::start(config).await?;
    if let Some(key) = &running.generated_admin_key {
        // Printed, not logged: a log pipeline must never carry a secret.
        println!(
            "\nNo admin key was configured, so one was generated. It is shown only once:\n\n    {key}\n\nUse it as `authorization: Bearer {key}`.\n"
        );
    }
    let token = running.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight calls");
        token.cancel();
    });
    running.wait().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
