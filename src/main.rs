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
    /// Inspect and replay dead letters in the outbox (while siphook is stopped).
    Deadletters {
        #[command(subcommand)]
        action: Deadletters,
    },
    /// Endpoint state kept in the outbox (while siphook is stopped).
    Endpoints {
        #[command(subcommand)]
        action: Endpoints,
    },
}

#[derive(Subcommand)]
enum Endpoints {
    /// Resume an endpoint paused by a 410 Gone.
    Resume {
        /// Configuration file (for the outbox path).
        #[arg(long, short)]
        config: PathBuf,
        /// Endpoint name.
        endpoint: String,
    },
}

#[derive(Subcommand)]
enum Deadletters {
    /// Print dead letters as JSON lines.
    List {
        /// Configuration file (for the outbox path).
        #[arg(long, short)]
        config: PathBuf,
        /// Only this endpoint's.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Move dead letters back to pending; the next start delivers them.
    Replay {
        /// Configuration file (for the outbox path).
        #[arg(long, short)]
        config: PathBuf,
        /// Only this endpoint's.
        #[arg(long)]
        endpoint: Option<String>,
        /// Dead-letter ids (the `offset` that `list` prints); repeatable.
        #[arg(long = "id", conflicts_with = "all")]
        ids: Vec<u64>,
        /// Every dead letter (of `--endpoint`, if given).
        #[arg(long)]
        all: bool,
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
        Command::Deadletters { action } => match deadletters(action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("siphook: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Endpoints {
            action: Endpoints::Resume { config, endpoint },
        } => match resume(&config, &endpoint) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("siphook: {e:#}");
                ExitCode::FAILURE
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
    runtime.block_on(async {
        let stop = shutdown_signal()?;
        gateway::serve(&config, output, stop).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

fn open_outbox(config: &Config) -> anyhow::Result<siphook::outbox::Outbox> {
    siphook::outbox::Outbox::open(&config.outbox.path, config.outbox.max_bytes).with_context(|| {
        format!(
            "opening the outbox at {} (is siphook still running?)",
            config.outbox.path.display()
        )
    })
}

fn resume(config: &std::path::Path, endpoint: &str) -> anyhow::Result<()> {
    let outbox = open_outbox(&Config::load(config)?)?;
    anyhow::ensure!(
        outbox.is_paused(endpoint),
        "endpoint {endpoint} is not paused"
    );
    outbox.set_paused(endpoint, false)?;
    flush(&outbox)?;
    println!("endpoint {endpoint} resumed; it is sent to again on the next start");
    Ok(())
}

fn deadletters(action: Deadletters) -> anyhow::Result<()> {
    let (config, endpoint) = match &action {
        Deadletters::List { config, endpoint }
        | Deadletters::Replay {
            config, endpoint, ..
        } => (config, endpoint.as_deref()),
    };
    let config = Config::load(config)?;
    let outbox = open_outbox(&config)?;
    let dead = outbox.dead_letters(endpoint)?;
    match action {
        Deadletters::List { .. } => {
            for d in dead {
                println!("{}", serde_json::to_string(&d)?);
            }
        }
        Deadletters::Replay { ids, all, .. } => {
            anyhow::ensure!(
                all || !ids.is_empty(),
                "say which: --id ID (repeatable) or --all"
            );
            let now = siphook::call::Timestamp::now().millis();
            let mut replayed = 0;
            let configured = |name: &str| config.endpoints.iter().any(|e| e.name == name);
            for d in dead.iter().filter(|d| all || ids.contains(&d.offset)) {
                // Nothing would ever send a delivery for an endpoint that is not configured.
                if !configured(&d.endpoint) {
                    eprintln!(
                        "skipped {} (endpoint {} is not configured)",
                        d.offset, d.endpoint
                    );
                    continue;
                }
                if outbox.replay(&d.endpoint, d.offset, now)? {
                    replayed += 1;
                }
            }
            let missing: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| !dead.iter().any(|d| d.offset == *id))
                .collect();
            anyhow::ensure!(missing.is_empty(), "no such dead letter: {missing:?}");
            flush(&outbox)?;
            println!("replayed {replayed} dead letter(s); they are delivered on the next start");
        }
    }
    Ok(())
}

/// Makes a replay durable before the command exits.
fn flush(outbox: &siphook::outbox::Outbox) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    rt.block_on(outbox.commit())?;
    Ok(())
}

/// Logs go to stderr so stdout stays pure JSON lines with `--print-events`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

/// Registers SIGTERM and SIGINT handlers at once, before anything starts, so a
/// signal during start-up still ends in a clean shutdown; the returned future
/// resolves on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
