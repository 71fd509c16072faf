//! `--spawn`: siphook itself, in this process, on its own runtime and threads (as
//! `siphook run` has), with a fresh outbox in a temporary directory that is removed
//! afterwards, listening on loopback port 0 and delivering to the bench's receiver.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{BenchError, Transport};
use crate::config::Config;
use crate::pipeline::{Bound, EventOutput, ServeOptions, Signal};

/// Longest siphook may take to start, and to stop.
const START_WITHIN: Duration = Duration::from_secs(20);
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// Attempts in flight towards the receiver.
pub(crate) const MAX_IN_FLIGHT: usize = super::relay::MAX_IN_FLIGHT;

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> Result<TempDir, BenchError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path =
            std::env::temp_dir().join(format!("siphook-bench-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|source| BenchError::TempDir {
            path: path.display().to_string(),
            source,
        })?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A siphook running for the bench.
pub(crate) struct Spawned {
    /// Its addresses.
    pub(crate) bound: Bound,
    signals: mpsc::Sender<Signal>,
    thread: std::thread::JoinHandle<Result<(), BenchError>>,
    _dir: TempDir,
}

/// The configuration the bench runs siphook with.
pub(crate) fn config_text(
    transport: Transport,
    outbox: &std::path::Path,
    receiver_url: &str,
    reach: &str,
    secret: &str,
    invite_timeout: Duration,
) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let (udp, tcp, hep) = match transport {
        Transport::Udp => ("[\"127.0.0.1:0\"]", "[]", "[]"),
        Transport::Tcp => ("[]", "[\"127.0.0.1:0\"]", "[]"),
        Transport::Hep => ("[]", "[]", "[\"127.0.0.1:0\"]"),
    };
    format!(
        "[sip]\n\
         udp = {udp}\n\
         tcp = {tcp}\n\
         invite_timeout = \"{invite_ms}ms\"\n\
         [hep]\n\
         udp = {hep}\n\
         [outbox]\n\
         path = {outbox}\n\
         [admin]\n\
         listen = \"127.0.0.1:0\"\n\
         [log]\n\
         level = \"warn\"\n\
         [service]\n\
         shutdown_grace = \"2s\"\n\
         [[endpoints]]\n\
         name = \"bench\"\n\
         url = {url}\n\
         {reach}\n\
         secrets = [{secret}]\n\
         max_in_flight = {MAX_IN_FLIGHT}\n\
         timeout = \"10s\"\n\
         retry_schedule = [\"0s\", \"1s\", \"2s\", \"4s\"]\n",
        invite_ms = invite_timeout.as_millis(),
        outbox = quote(&outbox.display().to_string()),
        url = quote(receiver_url),
        secret = quote(secret),
    )
}

impl Spawned {
    /// Starts siphook and waits until it listens.
    pub(crate) async fn start(
        transport: Transport,
        receiver_url: &str,
        reach: &str,
        secret: &str,
        invite_timeout: Duration,
        no_fsync: bool,
    ) -> Result<Spawned, BenchError> {
        let dir = TempDir::create()?;
        let text = config_text(
            transport,
            &dir.0.join("outbox"),
            receiver_url,
            reach,
            secret,
            invite_timeout,
        );
        let mut config = Config::parse(&text)?;
        config.outbox.fsync = !no_fsync;
        let (ready_tx, ready_rx) = oneshot::channel();
        let (signals, signals_rx) = mpsc::channel(4);
        let thread = std::thread::Builder::new()
            .name("siphook-serve".into())
            .spawn(move || {
                // As `siphook run` builds it, named so the CPU report can tell
                // siphook's threads from the tool's (bench/cpu.rs).
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name("siphook-rt")
                    .build()
                    .map_err(BenchError::Runtime)?;
                let opts = ServeOptions {
                    output: EventOutput::Quiet,
                    log: None,
                    ready: Some(ready_tx),
                };
                runtime.block_on(crate::pipeline::serve(config, opts, signals_rx))?;
                Ok(())
            })
            .map_err(BenchError::Runtime)?;
        match tokio::time::timeout(START_WITHIN, ready_rx).await {
            Ok(Ok(bound)) => Ok(Spawned {
                bound,
                signals,
                thread,
                _dir: dir,
            }),
            // It gave up before it was ready: say why.
            Ok(Err(_)) => Err(join(thread).await.err().unwrap_or(BenchError::Timeout {
                what: "siphook to start",
            })),
            Err(_) => {
                drop(signals);
                Err(BenchError::Timeout {
                    what: "siphook to start",
                })
            }
        }
    }

    /// Where the generator sends for `transport`.
    pub(crate) fn target(&self, transport: Transport) -> Option<std::net::SocketAddr> {
        match transport {
            Transport::Udp => self.bound.udp.first(),
            Transport::Tcp => self.bound.tcp.first(),
            Transport::Hep => self.bound.hep_udp.first(),
        }
        .copied()
    }

    /// Stops siphook cleanly (it commits and finishes attempts in flight) and
    /// removes its directory.
    pub(crate) async fn stop(self) -> Result<(), BenchError> {
        let _ = self.signals.send(Signal::Stop).await;
        let result = tokio::time::timeout(STOP_WITHIN, join(self.thread)).await;
        match result {
            Ok(r) => r,
            Err(_) => Err(BenchError::Timeout {
                what: "siphook to stop",
            }),
        }
    }
}

async fn join(thread: std::thread::JoinHandle<Result<(), BenchError>>) -> Result<(), BenchError> {
    match tokio::task::spawn_blocking(move || thread.join()).await {
        Ok(Ok(r)) => r,
        _ => Err(BenchError::Panicked),
    }
}
