//! `siphook bench`: the end-to-end load tool. Plays complete calls at a fixed rate
//! into siphook's SIP (or HEP) listener, receives the signed webhooks on a local
//! HTTP server, matches every event to the SIP message that caused it, and reports
//! latency quantiles, throughput, loss, duplicates, ordering and bad signatures;
//! optionally next to a null relay (the baseline) driven by the same generator.
//!
//! Everything stays on 127.0.0.0/8. Times are `std::time::Instant`s of this
//! process: a latency is "webhook fully received" minus "SIP message handed to the
//! socket".

mod cpu;
mod error;
mod flow;
mod generator;
mod jetstream;
mod kafka;
mod output;
mod plot;
mod receiver;
mod relay;
mod report;
mod spawn;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use cpu::CpuUse;
pub use error::BenchError;
pub use flow::Profile;
pub use output::{Report, RunConfig};
pub use report::{PhaseResult, Quantiles, Ratios};

/// The secret the spawned siphook signs with (a test secret, never a real one).
pub const BENCH_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Highest rate accepted, calls per second.
const MAX_RATE: f64 = 100_000.0;
/// Most calls one phase plays.
const MAX_CALLS: u64 = 2_000_000;
/// Longest run, hold, drain.
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// How the SIP reaches siphook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// SIP over UDP, one message per datagram.
    Udp,
    /// SIP over one TCP connection.
    Tcp,
    /// Each message wrapped in HEPv3, over UDP.
    Hep,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Transport, String> {
        match s {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            "hep" => Ok(Transport::Hep),
            other => Err(format!("unknown transport {other:?} (udp, tcp or hep)")),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Hep => "hep",
        })
    }
}

/// Which siphook is measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One started in this process, with a temporary outbox.
    Spawn,
    /// One already running, whose endpoint posts to `http://{receiver}/hook`.
    External {
        /// Its SIP (or HEP) listener.
        sip: SocketAddr,
        /// Where the bench's receiver listens.
        receiver: SocketAddr,
    },
}

/// How many calls a phase plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Exactly this many.
    Calls(u64),
    /// `rate × duration` of them.
    Duration(Duration),
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Which siphook.
    pub target: Target,
    /// How the SIP is sent.
    pub transport: Transport,
    /// Calls started per second.
    pub rate: f64,
    /// How many calls.
    pub limit: Limit,
    /// Between the ACK and the BYE (or the REFER).
    pub hold: Duration,
    /// Which calls.
    pub profile: Profile,
    /// Also run the null relay with the same load, after siphook.
    pub baseline: bool,
    /// How long to wait, after the last message, for the last webhooks.
    pub drain: Duration,
    /// The secret webhooks are verified with: required for an external target;
    /// with `Spawn`, overrides [`BENCH_SECRET`] for verification only (siphook still
    /// signs with `BENCH_SECRET`), which makes every signature bad.
    pub secret: Option<String>,
    /// The spawned siphook's `sip.invite_timeout`: when unanswered calls end.
    pub invite_timeout: Duration,
    /// The spawned siphook commits without fsync: what durability costs is the
    /// difference from a run with it.
    pub no_fsync: bool,
    /// The receiver answers every Nth webhook 503 (0: none): a flaky endpoint, for
    /// soaking the retry path.
    pub fail_every: u64,
    /// Publish to JetStream at this `nats://` URL instead of posting webhooks;
    /// the bench consumes the stream (with `Spawn`).
    pub nats: Option<String>,
    /// Produce to Kafka instead: `mock` (librdkafka's mock cluster, in this
    /// process) or a `kafka://` URL; the bench consumes the topic (with `Spawn`).
    pub kafka: Option<String>,
}

impl BenchOptions {
    /// A spawned siphook, UDP, answered calls, `calls` calls at `rate`, no baseline.
    pub fn spawn(rate: f64, calls: u64) -> BenchOptions {
        BenchOptions {
            target: Target::Spawn,
            transport: Transport::Udp,
            rate,
            limit: Limit::Calls(calls),
            hold: Duration::ZERO,
            profile: Profile::Answered,
            baseline: false,
            drain: Duration::from_secs(10),
            secret: None,
            invite_timeout: Duration::from_secs(2),
            no_fsync: false,
            fail_every: 0,
            nats: None,
            kafka: None,
        }
    }

    /// Calls per phase.
    fn calls(&self) -> u64 {
        match self.limit {
            Limit::Calls(n) => n,
            Limit::Duration(d) => (d.as_secs_f64() * self.rate).ceil() as u64,
        }
    }

    fn check(&self) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::Option(m));
        if !(self.rate.is_finite() && self.rate >= 0.1 && self.rate <= MAX_RATE) {
            return bad(format!("--rate must be between 0.1 and {MAX_RATE}"));
        }
        let calls = self.calls();
        if calls == 0 || calls > MAX_CALLS {
            return bad(format!(
                "a run plays 1 to {MAX_CALLS} calls (--calls, or --rate × --duration); this one {calls}"
            ));
        }
        if let Limit::Duration(d) = self.limit
            && d > MAX_DURATION
        {
            return bad("--duration is at most 1h".into());
        }
        if self.hold > MAX_DURATION || self.drain > MAX_DURATION {
            return bad("--hold and --drain are at most 1h".into());
        }
        if self.invite_timeout < Duration::from_millis(10) || self.invite_timeout > MAX_DURATION {
            return bad("the invite timeout is 10ms to 1h".into());
        }
        if self.no_fsync && self.target != Target::Spawn {
            return bad("--no-fsync needs --spawn: it cannot change a running siphook".into());
        }
        let broker = match (&self.nats, &self.kafka) {
            (Some(_), Some(_)) => return bad("--nats and --kafka: one stream at a time".into()),
            (Some(url), None) => Some(("nats", url)),
            (None, Some(url)) => Some(("kafka", url)),
            (None, None) => None,
        };
        if let Some((scheme, url)) = broker {
            if self.target != Target::Spawn {
                return bad(format!(
                    "--{scheme} needs --spawn: the bench points the siphook it starts at its stream"
                ));
            }
            if self.fail_every > 0 {
                return bad(
                    "--fail-every refuses webhooks; a stream consumer cannot refuse".into(),
                );
            }
            if !(scheme == "kafka" && url == "mock") {
                loopback_broker(scheme, url)?;
            }
        }
        if let Target::External { sip, receiver } = &self.target {
            for a in [sip, receiver] {
                if !a.ip().is_loopback() || !a.is_ipv4() {
                    return Err(BenchError::NotLoopback(*a));
                }
            }
            if self.secret.is_none() {
                return bad("--target needs --secret, the endpoint's whsec_ secret".into());
            }
        }
        Ok(())
    }
}

/// A short id that makes this run's Call-IDs unique.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}",
        (nanos as u64) ^ (u64::from(std::process::id()) << 40)
    )
}

/// Waits until `done` or `deadline`, polling every few milliseconds.
async fn wait_until(deadline: Instant, done: impl Fn() -> bool) {
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the bench: siphook, then (with `baseline`) the null relay, and analyses.
pub async fn run(opts: &BenchOptions) -> Result<Report, BenchError> {
    opts.check()?;
    let calls =
        usize::try_from(opts.calls()).map_err(|_| BenchError::Option("too many calls".into()))?;
    let secret = opts.secret.as_deref().unwrap_or(BENCH_SECRET);
    let verifier = receiver::Verifier::new(secret)?;
    let id = run_id();
    let (event_prefix, relay_prefix) = (format!("sb{id}-s-"), format!("sb{id}-n-"));
    let base = Instant::now();
    let bind = match opts.target {
        Target::Spawn => SocketAddr::from(([127, 0, 0, 1], 0)),
        Target::External { receiver, .. } => receiver,
    };
    let receiver = receiver::Receiver::start(
        bind,
        verifier,
        base,
        opts.profile,
        event_prefix.clone(),
        relay_prefix.clone(),
        opts.fail_every,
    )
    .await?;
    let mut js = None;
    let mut topic = None;
    let sink = match (&opts.nats, &opts.kafka) {
        (Some(url), _) => {
            let c = jetstream::Consumer::start(url, &id, receiver.recorder()).await?;
            let reach = format!(
                "subject = {}\ncircuit_probe_interval = \"200ms\"",
                toml::Value::String(c.subject.clone())
            );
            js = Some(c);
            Sink::Broker {
                kind: "nats",
                url: url.clone(),
                reach,
            }
        }
        (None, Some(spec)) => {
            let c = kafka::Consumer::start(spec, &id, receiver.recorder())?;
            let reach = format!(
                "topic = {}\ncircuit_probe_interval = \"200ms\"",
                toml::Value::String(c.topic.clone())
            );
            let url = c.url.clone();
            topic = Some(c);
            Sink::Broker {
                kind: "kafka",
                url,
                reach,
            }
        }
        (None, None) => Sink::Webhook,
    };
    let result = phases(
        opts,
        calls,
        &receiver,
        &sink,
        &event_prefix,
        &relay_prefix,
        base,
    )
    .await;
    if let Some(c) = js {
        c.stop().await;
    }
    if let Some(c) = topic {
        c.stop().await;
    }
    receiver.stop().await;
    let (siphook, baseline) = result?;
    let ratios = baseline.as_ref().and_then(|b| {
        Some(Ratios::of(
            siphook.latency_ms.as_ref()?,
            b.latency_ms.as_ref()?,
        ))
    });
    let mut report = Report {
        config: RunConfig {
            target: match &opts.target {
                Target::Spawn => "spawn".into(),
                Target::External { sip, .. } => sip.to_string(),
            },
            transport: opts.transport,
            rate: opts.rate,
            calls: opts.calls(),
            duration_s: match opts.limit {
                Limit::Duration(d) => Some(d.as_secs_f64()),
                Limit::Calls(_) => None,
            },
            hold_s: opts.hold.as_secs_f64(),
            profile: opts.profile,
            baseline: opts.baseline,
            drain_s: opts.drain.as_secs_f64(),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            no_fsync: opts.no_fsync,
            sink: match &sink {
                Sink::Webhook => "webhook".into(),
                Sink::Broker { kind, .. } => (*kind).into(),
            },
        },
        siphook,
        baseline,
        ratios,
        failures: Vec::new(),
        warnings: Vec::new(),
    };
    report.judge();
    Ok(report)
}

/// Where the spawned siphook's endpoint sends.
enum Sink {
    /// To the bench's webhook receiver.
    Webhook,
    /// To the run's JetStream stream or Kafka topic.
    Broker {
        /// `nats` or `kafka`.
        kind: &'static str,
        /// The endpoint's URL.
        url: String,
        /// The endpoint's other keys: the subject or topic, and a quick probe
        /// (a broker's outage is measured by the probe interval, a webhook's by
        /// its schedule).
        reach: String,
    },
}

/// A `nats://` or `kafka://` URL the bench may use: 127.0.0.0/8 only.
fn loopback_broker(scheme: &str, url: &str) -> Result<(), BenchError> {
    let addr = url
        .strip_prefix(&format!("{scheme}://"))
        .and_then(|r| r.parse::<SocketAddr>().ok());
    match addr {
        Some(a) if a.ip().is_loopback() && a.is_ipv4() => Ok(()),
        Some(a) => Err(BenchError::NotLoopback(a)),
        None => Err(BenchError::Option(format!(
            "--{scheme} {url}: use {scheme}://127.0.0.1:PORT"
        ))),
    }
}

async fn phases(
    opts: &BenchOptions,
    calls: usize,
    receiver: &receiver::Receiver,
    sink: &Sink,
    event_prefix: &str,
    relay_prefix: &str,
    base: Instant,
) -> Result<(PhaseResult, Option<PhaseResult>), BenchError> {
    let plan = |target, prefix| generator::Plan {
        transport: opts.transport,
        target,
        rate: opts.rate,
        calls,
        hold: opts.hold,
        profile: opts.profile,
        prefix,
        base,
    };
    // Unanswered calls end when the invite timeout fires after their INVITE.
    let timers = if opts.profile.has_timers() && opts.target == Target::Spawn {
        opts.invite_timeout
    } else {
        Duration::ZERO
    };

    // siphook.
    let (target, spawned) = match opts.target {
        Target::Spawn => {
            let (url, reach) = match sink {
                Sink::Webhook => (
                    format!("http://{}/hook", receiver.addr),
                    "allow_http = true",
                ),
                Sink::Broker { url, reach, .. } => (url.clone(), reach.as_str()),
            };
            let s = spawn::Spawned::start(
                opts.transport,
                &url,
                reach,
                BENCH_SECRET,
                opts.invite_timeout,
                opts.no_fsync,
            )
            .await?;
            match s.target(opts.transport) {
                Some(t) => (t, Some(s)),
                None => {
                    let _ = s.stop().await;
                    return Err(BenchError::NoListener(opts.transport));
                }
            }
        }
        Target::External { sip, .. } => (sip, None),
    };
    let cpu_from = cpu::sample();
    let sent = generator::run(&plan(target, event_prefix)).await;
    let sent = match sent {
        Ok(s) => s,
        Err(e) => {
            if let Some(s) = spawned {
                let _ = s.stop().await;
            }
            return Err(e);
        }
    };
    let expected = sent.expected_events(opts.profile);
    wait_until(Instant::now() + opts.drain + timers, || {
        receiver.distinct_events() >= expected
    })
    .await;
    // Before the stop: a thread's time is read while it lives.
    let cpu_used = cpu::between(&cpu_from, &cpu::sample(), spawned.is_some());
    if let Some(s) = spawned {
        s.stop().await?;
    }
    let seen = receiver.take();
    let mut siphook = report::analyse_events(
        opts.profile,
        &sent,
        report::EventTally {
            events: &seen.events,
            bad_signatures: seen.bad_signatures,
            duplicates: seen.duplicates,
            malformed: seen.malformed,
            refused: seen.refused,
        },
    );
    siphook.cpu = Some(cpu_used);
    drop(seen);
    drop(sent);
    if !opts.baseline {
        return Ok((siphook, None));
    }

    // The null relay, same load.
    let url: hyper::Uri = format!("http://{}/baseline", receiver.addr)
        .parse()
        .map_err(|_| BenchError::Option("receiver address".into()))?;
    let relay = relay::Relay::start(opts.transport, url).await?;
    let cpu_from = cpu::sample();
    let sent = generator::run(&plan(relay.addr, relay_prefix)).await;
    let sent = match sent {
        Ok(s) => s,
        Err(e) => {
            relay.stop().await;
            return Err(e);
        }
    };
    let messages = sent.messages;
    wait_until(Instant::now() + opts.drain, || {
        receiver.relayed() >= messages
    })
    .await;
    let cpu_used = cpu::between(&cpu_from, &cpu::sample(), true);
    let errors = relay.errors.load(std::sync::atomic::Ordering::Relaxed);
    relay.stop().await;
    let seen = receiver.take();
    let mut baseline = report::analyse_relay(opts.profile, &sent, &seen.relayed, errors);
    baseline.cpu = Some(cpu_used);
    Ok((siphook, Some(baseline)))
}

/// What `siphook bench` does: runs, prints the table on stdout, writes the JSON
/// report to `json` and the SVG plot to `plot` if given. `Ok(false)`: the run was made and failed.
pub async fn run_and_report(
    opts: &BenchOptions,
    json: Option<&Path>,
    plot: Option<&Path>,
) -> Result<bool, BenchError> {
    let report = run(opts).await?;
    print!("{}", report.table());
    if let Some(path) = plot {
        plot::write_svg(&report, path)?;
    }
    if let Some(path) = json {
        let text = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, text).map_err(|source| BenchError::WriteJson {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(report.passed())
}
