//! The `siphook` binary: command-line parsing and wiring only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use siphook::config::{Config, ConfigError};
use siphook::gateway::{self, EventOutput};

#[derive(Parser)]
#[command(
    version,
    about = "Passive SIP tap that turns call signalling into webhooks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Also write every event to stdout as one JSON line.
        #[arg(long)]
        print_events: bool,
    },
    /// Validate a configuration file: prints `ok` or every problem (exit status 2).
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            config,
            print_events,
        } => {
            init_logging();
            match run(&config, print_events) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("siphook: {e:#}");
                    if e.downcast_ref::<ConfigError>().is_some() {
                        ExitCode::from(2)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

fn run(path: &std::path::Path, print_events: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let output = if print_events {
        EventOutput::JsonLines
    } else {
        EventOutput::Quiet
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(gateway::serve(&config, output, shutdown_signal()))?;
    Ok(())
}

/// Logs go to stderr so stdout stays pure JSON lines with `--print-events`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops siphook");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
