//! `siphook run`: the daemon. Loads the file, turns process signals into
//! [`Signal`]s and hands both to [`siphook::pipeline::serve`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use siphook::config::{Config, ConfigError};
use siphook::pipeline::{EventOutput, LogReload, ServeOptions, Signal};

use super::logging::{self, LogFormat};

/// `run`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file.
    #[arg(long, short)]
    config: PathBuf,
    /// Also write every event to stdout as one JSON line.
    #[arg(long)]
    print_events: bool,
    /// Log line format: `text` for people, `json` for journald and log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Runs until SIGTERM or SIGINT; exit status 2 for a configuration that does not
/// validate, 1 for any other failure.
pub fn main(args: Args) -> ExitCode {
    // The configured level applies once the file is read; until then, info.
    let initial = Config::load(&args.config)
        .map(|c| c.log.level)
        .unwrap_or_else(|_| "info".into());
    let log = logging::init(args.log_format, &initial);
    match run(&args.config, args.print_events, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let why = super::describe(&e);
            tracing::error!("{why}");
            eprintln!("siphook: {why}");
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(path: &Path, print_events: bool, log: LogReload) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    for w in config.warnings(path) {
        tracing::warn!("{w}");
    }
    let output = if print_events {
        EventOutput::JsonLines
    } else {
        EventOutput::Quiet
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let signals = signals(path.to_owned())?;
        let opts = ServeOptions {
            output,
            log: Some(log),
            ready: None,
        };
        siphook::pipeline::serve(config, opts, signals).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

/// Turns process signals into [`Signal`]s: SIGTERM and SIGINT stop, SIGHUP reads
/// the configuration file again. Handlers are registered before anything starts,
/// so a signal during start-up is not lost.
fn signals(path: PathBuf) -> anyhow::Result<tokio::sync::mpsc::Receiver<Signal>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("watching SIGHUP")?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                _ = term.recv() => Signal::Stop,
                _ = int.recv() => Signal::Stop,
                _ = hup.recv() => {
                    tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
                    let p = path.clone();
                    // Warnings as at start: the edit being reloaded is where a typo
                    // (an events glob that matches nothing) is new.
                    let loaded = tokio::task::spawn_blocking(move || {
                        let c = Config::load(&p);
                        if let Ok(c) = &c {
                            for w in c.warnings(&p) {
                                tracing::warn!("{w}");
                            }
                        }
                        c
                    })
                    .await;
                    match loaded {
                        Ok(c) => Signal::Reload(Box::new(c)),
                        Err(_) => continue,
                    }
                }
            };
            if tx.send(s).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
