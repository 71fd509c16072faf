//! `siphook bench`: the end-to-end load tool's flags, turned into
//! [`BenchOptions`] for [`siphook::bench::run_and_report`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use siphook::bench::{BenchOptions, Limit, Profile, Target, Transport};

use super::logging::{self, LogFormat};

/// `bench`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// A running siphook's SIP (or HEP) address, instead of --spawn. Point one of
    /// its endpoints at http://RECEIVER/hook (allow_http = true) and give its
    /// secret with --secret.
    #[arg(long, required_unless_present = "spawn", requires_all = ["receiver", "secret"])]
    target: Option<SocketAddr>,
    /// Start siphook in this process, with a temporary outbox.
    #[arg(long, conflicts_with = "target")]
    spawn: bool,
    /// Where the webhook receiver listens, with --target.
    #[arg(long, requires = "target")]
    receiver: Option<SocketAddr>,
    /// The endpoint's whsec_ secret, to verify signatures (with --spawn: verify
    /// with this one instead of the spawned siphook's).
    #[arg(long)]
    secret: Option<String>,
    /// udp, tcp, or hep (HEPv3 over UDP).
    #[arg(long, default_value = "udp")]
    transport: Transport,
    /// Calls started per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Number of calls (default: --duration 10s).
    #[arg(long, conflicts_with = "duration")]
    calls: Option<u64>,
    /// Start calls for this long (e.g. 20s).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Between the ACK and the BYE.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    hold: Duration,
    /// answered, or mixed (answered, busy, cancelled, unanswered, transferred).
    #[arg(long, default_value = "answered")]
    profile: Profile,
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
    drain_deadline: Duration,
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
    invite_timeout: Duration,
    /// Publish to NATS JetStream at this URL (nats://127.0.0.1:PORT, a server
    /// with -js) instead of webhooks: the bench creates a stream for the run,
    /// consumes it, and deletes it afterwards.
    #[arg(long, requires = "spawn", conflicts_with = "kafka")]
    nats: Option<String>,
    /// Produce to Kafka instead of webhooks: "mock" starts librdkafka's mock
    /// cluster in this process and consumes the run's topic from it; a
    /// kafka://127.0.0.1:PORT cluster needs a topic siphook-bench (4 partitions).
    #[arg(long, requires = "spawn")]
    kafka: Option<String>,
}

/// Runs the load and prints the report: exit status 1 when events were lost or
/// failed verification, 2 when the run itself could not happen.
pub fn main(args: Args) -> ExitCode {
    let _log = logging::init(LogFormat::Text, "warn");
    let target = match (args.target, args.receiver) {
        (Some(sip), Some(receiver)) => Target::External { sip, receiver },
        _ => Target::Spawn,
    };
    let limit = match (args.calls, args.duration) {
        (Some(n), _) => Limit::Calls(n),
        (None, d) => Limit::Duration(d.unwrap_or(Duration::from_secs(10))),
    };
    let opts = BenchOptions {
        target,
        transport: args.transport,
        rate: args.rate,
        limit,
        hold: args.hold,
        profile: args.profile,
        baseline: args.baseline,
        drain: args.drain_deadline,
        secret: args.secret,
        invite_timeout: args.invite_timeout,
        no_fsync: args.no_fsync,
        fail_every: args.fail_every,
        nats: args.nats,
        kafka: args.kafka,
    };
    let ran = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|rt| {
            Ok(rt.block_on(siphook::bench::run_and_report(
                &opts,
                args.json.as_deref(),
                args.plot.as_deref(),
            ))?)
        });
    match ran {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("siphook: {}", super::describe(&e));
            ExitCode::from(2)
        }
    }
}
