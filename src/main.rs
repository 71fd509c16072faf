//! The `siphook` binary: command-line parsing and wiring only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use siphook::config::{Config, ConfigError};
use siphook::serve::{EventOutput, LogReload, ServeOptions, Signal};

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
        /// Log line format: `text` for people, `json` for journald and log shippers.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
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
    /// Replay a pcap or pcapng capture through the call tracker, on the capture's
    /// clock: events as JSON lines on stdout, a summary on stderr.
    Replay {
        /// The capture file.
        file: PathBuf,
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
    },
    /// Load test end to end: calls over SIP in, signed webhooks out; latency
    /// quantiles, throughput and loss, optionally against a null relay (all on
    /// 127.0.0.0/8). Exit status 1 when events were lost or failed verification.
    Bench {
        /// A running siphook's SIP (or HEP) address, instead of --spawn. Point one of
        /// its endpoints at http://RECEIVER/hook (allow_http = true) and give its
        /// secret with --secret.
        #[arg(long, required_unless_present = "spawn", requires_all = ["receiver", "secret"])]
        target: Option<std::net::SocketAddr>,
        /// Start siphook in this process, with a temporary outbox.
        #[arg(long, conflicts_with = "target")]
        spawn: bool,
        /// Where the webhook receiver listens, with --target.
        #[arg(long, requires = "target")]
        receiver: Option<std::net::SocketAddr>,
        /// The endpoint's whsec_ secret, to verify signatures (with --spawn: verify
        /// with this one instead of the spawned siphook's).
        #[arg(long)]
        secret: Option<String>,
        /// udp, tcp, or hep (HEPv3 over UDP).
        #[arg(long, default_value = "udp")]
        transport: siphook::bench::Transport,
        /// Calls started per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Number of calls (default: --duration 10s).
        #[arg(long, conflicts_with = "duration")]
        calls: Option<u64>,
        /// Start calls for this long (e.g. 20s).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Between the ACK and the BYE.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        hold: std::time::Duration,
        /// answered, or mixed (answered, busy, cancelled, unanswered, transferred).
        #[arg(long, default_value = "answered")]
        profile: siphook::bench::Profile,
        /// Also run a null relay (UDP in, raw POST out) with the same load, and compare.
        #[arg(long)]
        baseline: bool,
        /// Write the whole result as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Draw the latency histogram and latency over time to this SVG file.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// How long to wait for the last webhooks after the last message.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        drain_deadline: std::time::Duration,
        /// The receiver answers every Nth webhook 503 (a flaky endpoint; siphook
        /// retries it). 0: never.
        #[arg(long, default_value_t = 0)]
        fail_every: u64,
        /// The spawned siphook commits without fsync (to measure what durability
        /// costs; never how siphook runs).
        #[arg(long, requires = "spawn")]
        no_fsync: bool,
        /// The spawned siphook's sip.invite_timeout (unanswered calls of --profile mixed).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
        invite_timeout: std::time::Duration,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
            Ok(config) => {
                for w in config.warnings(&file) {
                    eprintln!("warning: {w}");
                }
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
        Command::Replay {
            file,
            config,
            deliver,
            speed,
            as_fast_as_possible: _,
            drain,
        } => match replay(&file, config.as_deref(), deliver, speed, drain) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("siphook: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            target,
            spawn: _,
            receiver,
            secret,
            transport,
            rate,
            calls,
            duration,
            hold,
            profile,
            baseline,
            json,
            plot,
            drain_deadline,
            no_fsync,
            fail_every,
            invite_timeout,
        } => {
            use siphook::bench::{BenchOptions, Limit, Target};
            let _log = init_logging(LogFormat::Text, "warn");
            let target = match (target, receiver) {
                (Some(sip), Some(receiver)) => Target::External { sip, receiver },
                _ => Target::Spawn,
            };
            let limit = match (calls, duration) {
                (Some(n), _) => Limit::Calls(n),
                (None, d) => Limit::Duration(d.unwrap_or(std::time::Duration::from_secs(10))),
            };
            let opts = BenchOptions {
                target,
                transport,
                rate,
                limit,
                hold,
                profile,
                baseline,
                drain: drain_deadline,
                secret,
                invite_timeout,
                no_fsync,
                fail_every,
            };
            let ran = tokio::runtime::Runtime::new()
                .context("starting the async runtime")
                .and_then(|rt| {
                    Ok(rt.block_on(siphook::bench::run_and_report(
                        &opts,
                        json.as_deref(),
                        plot.as_deref(),
                    ))?)
                });
            match ran {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("siphook: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run {
            config,
            print_events,
            log_format,
        } => {
            // The configured level applies once the file is read; until then, info.
            let initial = Config::load(&config)
                .map(|c| c.log.level)
                .unwrap_or_else(|_| "info".into());
            let log = init_logging(log_format, &initial);
            match run(&config, print_events, log) {
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

fn run(path: &std::path::Path, print_events: bool, log: LogReload) -> anyhow::Result<()> {
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
        siphook::serve::serve(config, opts, signals).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

fn replay(
    file: &std::path::Path,
    config: Option<&std::path::Path>,
    deliver: bool,
    speed: Option<f64>,
    drain: bool,
) -> anyhow::Result<()> {
    use siphook::replay::{Pace, ReplayOptions};
    anyhow::ensure!(
        speed.is_none_or(|s| s.is_finite() && s >= siphook::replay::MIN_SPEED),
        "--speed must be a number of at least {}",
        siphook::replay::MIN_SPEED
    );
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let opts = ReplayOptions::from_config(&config, drain);
    let summary = if deliver {
        let _reload = init_logging(LogFormat::Text, &config.log.level);
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
            siphook::replay::replay_and_deliver(file, &config, opts, speed, stop).await
        })?
    } else {
        use std::io::Write;
        let mut pace = Pace::new(speed);
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        let mut closed = false;
        let summary = siphook::replay::replay(file, &opts, |e| {
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
/// `RUST_LOG`, when set, wins over the configured level at start; the returned
/// function swaps the filter on reload.
fn init_logging(format: LogFormat, level: &str) -> LogReload {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt, reload};
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    // Colour only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
            .init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
    Box::new(move |level: &str| {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// Turns process signals into [`Signal`]s: SIGTERM and SIGINT stop, SIGHUP reads
/// the configuration file again. Handlers are registered before anything starts,
/// so a signal during start-up is not lost.
fn signals(path: std::path::PathBuf) -> anyhow::Result<tokio::sync::mpsc::Receiver<Signal>> {
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
                    let loaded = tokio::task::spawn_blocking(move || Config::load(&p)).await;
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
