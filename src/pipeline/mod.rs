//! The one room that wires the running pipeline, socket → `ingest` → `sip` →
//! `call` → `outbox` → `deliver`, with `admin` beside it, and runs its lifecycle:
//! start everything in order, tell systemd, prove liveness to its watchdog, apply
//! reloads, and shut down without losing what was received.
//!
//! Start, in this order ([`serve`]):
//! 1. metrics, then the outbox (compacted first if mostly garbage) and the calls
//!    that were live at the last stop;
//! 2. the admin listener is bound (not yet served), so a taken port fails the start
//!    before any task runs;
//! 3. the [`Gateway`]: every SIP and HEP listener bound and serving, then the
//!    tracker task (restoring those calls) that they feed;
//! 4. delivery: one dispatcher per endpoint, each with the extent of its backlog
//!    fixed, then the outbox writer, fed by the tracker (a scan racing the writer
//!    could see events not yet flushed);
//! 5. the admin HTTP server on a thread of its own;
//! 6. READY=1 to systemd, and the bound addresses to whoever asked.
//!
//! Stop: STOPPING → listeners close → the tracker drains → the writer commits →
//! attempts in flight get `service.shutdown_grace` → admin closes → exit 0.

mod gateway;
mod reload;
mod systemd;

pub use gateway::{EVENT_QUEUE, Gateway, StartError};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::admin::AdminState;
use crate::config::{Config, ConfigError};
use crate::deliver::{Delivery, DeliveryError, ReloadError};
use crate::metrics::Metrics;

/// What the binary's signal handlers tell a running siphook.
#[derive(Debug)]
pub enum Signal {
    /// SIGTERM or SIGINT: shut down cleanly.
    Stop,
    /// SIGHUP: the configuration file read again (or why it could not be).
    Reload(Box<Result<Config, ConfigError>>),
}

/// Whether events are also printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutput {
    /// One JSON object per line on stdout (`--print-events`), after its commit.
    JsonLines,
    /// Not printed.
    Quiet,
}

/// Applies a new log filter; the binary owns the subscriber, so it passes this in.
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Where a started siphook listens (port 0 resolved): what tests and tools need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// SIP over UDP.
    pub udp: Vec<SocketAddr>,
    /// SIP over TCP.
    pub tcp: Vec<SocketAddr>,
    /// HEP over UDP.
    pub hep_udp: Vec<SocketAddr>,
    /// HEP over TCP.
    pub hep_tcp: Vec<SocketAddr>,
    /// The admin HTTP listener, if enabled.
    pub admin: Option<SocketAddr>,
}

/// How [`serve`] runs beyond the configuration.
pub struct ServeOptions {
    /// Print events too.
    pub output: EventOutput,
    /// Reloads the log filter on SIGHUP.
    pub log: Option<LogReload>,
    /// Told the bound addresses once siphook is ready.
    pub ready: Option<oneshot::Sender<Bound>>,
}

/// Why `serve` stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Listeners could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The outbox or an endpoint client could not start.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// The outbox kept failing to commit; restart to reopen it.
    #[error("outbox failed: {0}")]
    Outbox(crate::outbox::OutboxError),
    /// A reload failed halfway; restart to start clean from the store.
    #[error(transparent)]
    Reload(ReloadError),
    /// The outbox writer stopped taking events while siphook ran (the tracker
    /// is gone): nothing would be delivered any more.
    #[error("the event pipeline stopped unexpectedly")]
    PipelineEnded,
}

/// How long a pipeline stage may take to answer the watchdog's question.
const ALIVE_WITHIN: Duration = Duration::from_secs(5);

/// Runs siphook until a [`Signal::Stop`] (or the sender is dropped).
pub async fn serve(
    config: Config,
    opts: ServeOptions,
    mut signals: mpsc::Receiver<Signal>,
) -> Result<(), ServeError> {
    let metrics = Metrics::new();
    let outbox = crate::deliver::open_outbox(&config)?;
    let restore = outbox
        .active_calls()
        .map_err(|source| DeliveryError::Outbox {
            path: config.outbox.path.display().to_string(),
            source,
        })?;
    let admin_listener = match config.admin.listen {
        Some(addr) => Some(
            crate::admin::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    transport: "admin http",
                    addr,
                    source,
                })?,
        ),
        None => None,
    };
    let mut gateway = Gateway::start_with(&config, metrics.clone(), restore).await?;
    let events = std::mem::replace(&mut gateway.events, mpsc::channel(1).1);
    let mut delivery = match Delivery::start(
        &config,
        outbox.clone(),
        events,
        echo(opts.output),
        metrics.clone(),
    ) {
        Ok(d) => d,
        Err(e) => {
            drop(gateway.shutdown().await);
            return Err(e.into());
        }
    };
    let stopping = CancellationToken::new();
    let admin_stop = CancellationToken::new();
    let (token_tx, token_rx) = watch::channel(config.admin.token.clone());
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let admin_task = admin_listener.map(|listener| {
        let state = Arc::new(AdminState {
            metrics: metrics.clone(),
            outbox,
            tracker: gateway.queries.clone(),
            endpoints: delivery.endpoints(),
            history: delivery.history(),
            stream_slots: crate::admin::stream_slots(),
            token: token_rx,
            stopping: stopping.clone(),
        });
        run_admin(listener, state, admin_stop.clone())
    });
    tracing::info!(
        udp = ?gateway.udp_addrs,
        tcp = ?gateway.tcp_addrs,
        hep_udp = ?gateway.hep_udp_addrs,
        hep_tcp = ?gateway.hep_tcp_addrs,
        admin = %admin_addr.map_or("off".to_owned(), |a| a.to_string()),
        endpoints = config.endpoints.len(),
        outbox = %config.outbox.path.display(),
        "siphook running"
    );
    systemd::ready();
    if let Some(ready) = opts.ready {
        let _ = ready.send(Bound {
            udp: gateway.udp_addrs.clone(),
            tcp: gateway.tcp_addrs.clone(),
            hep_udp: gateway.hep_udp_addrs.clone(),
            hep_tcp: gateway.hep_tcp_addrs.clone(),
            admin: admin_addr,
        });
    }

    let watchdog = systemd::watchdog_interval();
    let mut tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut current = config;
    let failure = loop {
        tokio::select! {
            s = signals.recv() => match s {
                None | Some(Signal::Stop) => break None,
                Some(Signal::Reload(new)) => {
                    systemd::reloading();
                    // A reload waits for changed endpoints' attempts (up to the
                    // grace): keep systemd's watchdog fed meanwhile; the wait is
                    // bounded, so this cannot hide a wedge for long.
                    let applied = tokio::select! {
                        r = reload::reload(&mut current, *new, &mut delivery, &token_tx, opts.log.as_ref(), &metrics) => r,
                        never = keep_watchdog_fed(watchdog) => match never {},
                    };
                    if let Err(e) = applied {
                        break Some(ServeError::Reload(e));
                    }
                    systemd::ready();
                }
            },
            r = delivery.failed() => break Some(match r {
                Err(e) => ServeError::Outbox(e),
                Ok(()) => ServeError::PipelineEnded,
            }),
            _ = tick.tick(), if watchdog.is_some() => {
                if gateway.alive(ALIVE_WITHIN).await && delivery.alive(ALIVE_WITHIN).await {
                    systemd::watchdog();
                } else {
                    tracing::error!("pipeline did not answer the watchdog; systemd restarts a wedged siphook");
                }
            }
        }
    };
    tracing::info!("shutting down");
    systemd::stopping();
    stopping.cancel();
    drop(gateway.shutdown().await);
    if let Some(e @ ServeError::Outbox(_)) = failure {
        admin_stop.cancel();
        return Err(e);
    }
    let committed = delivery.shutdown().await;
    admin_stop.cancel();
    if let Some(t) = admin_task {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    committed.map_err(ServeError::Outbox)?;
    tracing::info!("stopped");
    Ok(())
}

/// Serves the admin listener on a thread and runtime of its own. Under a flood,
/// ingest and the tracker keep the main runtime's workers busy, and its I/O
/// driver is polled only between their turns: `/healthz` and `/metrics` must
/// not wait for that (measured in docs/operations.md, "Limits and shedding").
fn run_admin(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    stop: CancellationToken,
) -> std::thread::JoinHandle<()> {
    // Registered again with the admin runtime's own driver, so readiness never
    // depends on the main runtime.
    let listener = listener.into_std();
    std::thread::Builder::new()
        .name("siphook-admin".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the admin runtime; admin HTTP is off");
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match listener.and_then(tokio::net::TcpListener::from_std) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot move the admin listener; admin HTTP is off");
                        return;
                    }
                };
                crate::admin::serve(listener, state, stop).await;
            });
        })
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot start the admin thread; admin HTTP is off");
            std::thread::spawn(|| {})
        })
}

/// Sends WATCHDOG=1 every `interval` forever (never, without a watchdog).
async fn keep_watchdog_fed(interval: Option<Duration>) -> std::convert::Infallible {
    loop {
        match interval {
            Some(i) => {
                tokio::time::sleep(i).await;
                systemd::watchdog();
            }
            None => std::future::pending::<()>().await,
        }
    }
}

fn echo(output: EventOutput) -> Option<crate::outbox::writer::Echo> {
    match output {
        EventOutput::JsonLines => Some(Box::new(|json: &[u8]| {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            let written = stdout
                .write_all(json)
                .and_then(|_| stdout.write_all(b"\n"))
                .and_then(|_| stdout.flush());
            if written.is_err() {
                tracing::warn!("stdout closed; events are no longer printed");
            }
        })),
        EventOutput::Quiet => None,
    }
}
