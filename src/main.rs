//! The `siphook` binary: command-line parsing and dispatch only. Each subcommand's
//! body is a module of `cli/`; the library does the work.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Run(cli::run::Args),
    /// Validate a configuration file: prints `ok` or every problem (exit status 2).
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
    },
    /// Inspect and replay dead letters in the outbox (while siphook is stopped).
    Deadletters {
        #[command(subcommand)]
        action: cli::store::Deadletters,
    },
    /// Endpoint state kept in the outbox (while siphook is stopped).
    Endpoints {
        #[command(subcommand)]
        action: cli::store::Endpoints,
    },
    /// Replay a pcap or pcapng capture through the call tracker, on the capture's
    /// clock: events as JSON lines on stdout, a summary on stderr.
    Replay(cli::replay::Args),
    /// Load test end to end: calls over SIP in, signed webhooks out; latency
    /// quantiles, throughput and loss, optionally against a null relay (all on
    /// 127.0.0.0/8). Exit status 1 when events were lost or failed verification.
    Bench(cli::bench::Args),
    /// Follow a running siphook's events live (its admin API's event stream):
    /// one line per event, or the JSON with --json.
    Tail(cli::tail::Args),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => cli::run::main(args),
        Command::CheckConfig { file } => cli::check::main(&file),
        Command::Deadletters { action } => cli::exit(cli::store::deadletters(action)),
        Command::Endpoints { action } => cli::exit(cli::store::endpoints(action)),
        Command::Replay(args) => cli::replay::main(args),
        Command::Bench(args) => cli::bench::main(args),
        Command::Tail(args) => cli::tail::main(args),
    }
}
