//! `siphook replay FILE…`: a capture through the parser and tracker on the
//! capture's clock, printed as JSON lines or, with `--deliver`, sent through the
//! outbox to the configured endpoints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use siphook::config::Config;
use siphook::replay::{MIN_SPEED, Pace, ReplayOptions};

use super::logging::{self, LogFormat};

/// `replay`'s arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The capture file; several are replayed in the order given, as one capture.
    #[arg(required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Configuration (timers, correlation headers; endpoints with --deliver).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Send the events through the outbox to the configured endpoints instead.
    #[arg(long, requires = "config")]
    deliver: bool,
    /// Pace events at N times the capture's speed (default: as fast as possible).
    #[arg(long, conflicts_with = "as_fast_as_possible")]
    speed: Option<f64>,
    /// No pacing (the default).
    #[arg(long)]
    as_fast_as_possible: bool,
    /// At the end, complete calls still open as their timeouts would.
    #[arg(long)]
    drain: bool,
}

/// Replays; the summary goes to stderr.
pub fn main(args: Args) -> ExitCode {
    super::exit(replay(
        &args.files,
        args.config.as_deref(),
        args.deliver,
        args.speed,
        args.drain,
    ))
}

fn replay(
    files: &[PathBuf],
    config: Option<&Path>,
    deliver: bool,
    speed: Option<f64>,
    drain: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        speed.is_none_or(|s| s.is_finite() && s >= MIN_SPEED),
        "--speed must be a number of at least {MIN_SPEED}"
    );
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let opts = ReplayOptions::from_config(&config, drain);
    let summary = if deliver {
        let _reload = logging::init(LogFormat::Text, &config.log.level);
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        runtime.block_on(async {
            // Watched from now on: Ctrl-C during the replay too ends in a clean stop.
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    let _ = tx.send(());
                }
            });
            let stop = async {
                let _ = rx.await;
            };
            siphook::replay::replay_and_deliver(files, &config, opts, speed, stop).await
        })?
    } else {
        use std::io::Write;
        let mut pace = Pace::new(speed);
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        let mut closed = false;
        let summary = siphook::replay::replay_files(files, &opts, |e| {
            pace.wait(e);
            if !closed {
                let json = e.to_json();
                closed = stdout
                    .write_all(&json)
                    .and_then(|_| stdout.write_all(b"\n"))
                    .is_err();
            }
        })?;
        let _ = stdout.flush();
        summary
    };
    eprint!("{summary}");
    Ok(())
}
