//! Delivery to endpoints: signing, the transports (webhook, NATS JetStream), and
//! the per-endpoint dispatcher with its retry policy, ordering and dead letters,
//! shared by every transport.

pub mod control;
pub mod dispatch;
pub mod encode;
pub mod format;
pub mod history;
pub mod redact;
pub mod sign;
pub mod transport;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use control::{EndpointCommand, EndpointStatus, TestResult};

use crate::call::Event;
use crate::config::{Config, EndpointConfig};
use crate::metrics::Metrics;
use crate::outbox::writer::{self, Sinks};
use crate::outbox::{Outbox, OutboxError};

/// Why delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The outbox could not be opened.
    #[error("cannot open outbox {path}: {source}")]
    Outbox {
        /// Configured path.
        path: String,
        /// The storage error.
        source: OutboxError,
    },
    /// An endpoint's TLS material or broker settings are unusable.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    /// The outbox writer is gone (the process is stopping).
    #[error("delivery is stopping")]
    Stopped,
}

/// Why a reload did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Refused before anything changed: the old endpoints run on.
    #[error(transparent)]
    Rejected(DeliveryError),
    /// Failed halfway (the store could not be read after routing switched): some
    /// endpoint may have no dispatcher. The process should exit so its supervisor
    /// restarts it from the store, which holds every pending delivery.
    #[error("reload failed halfway, restart needed: {0}")]
    Broken(DeliveryError),
}

/// Opens the configured outbox (reading its log once, and moving a store of the
/// earlier sled engine into it the first time).
pub fn open_outbox(config: &Config) -> Result<Arc<Outbox>, DeliveryError> {
    let outbox = Outbox::open(&config.outbox.path, config.outbox.max_bytes).map_err(|source| {
        DeliveryError::Outbox {
            path: config.outbox.path.display().to_string(),
            source,
        }
    })?;
    Ok(Arc::new(if config.outbox.fsync {
        outbox
    } else {
        outbox.without_fsync()
    }))
}

/// Capacity of an endpoint's command queue (operator requests are rare).
const COMMANDS: usize = 16;

type Sink = mpsc::UnboundedSender<writer::Committed>;

/// A running endpoint dispatcher, as [`Delivery`] keeps it.
struct Running {
    config: EndpointConfig,
    /// The TLS files' contents when it started: a certificate renewed in place
    /// changes no setting, yet must reach the client on reload.
    tls_files: [u8; 32],
    /// Where the writer announces this endpoint's committed events.
    sink: Sink,
    commands: mpsc::Sender<EndpointCommand>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The command queues of the endpoints in force; replaced whole on reload, so a
/// reader never sees half a reload.
pub type Endpoints = Arc<BTreeMap<String, mpsc::Sender<EndpointCommand>>>;

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Endpoints that did not exist before.
    pub added: Vec<String>,
    /// Endpoints no longer configured (their pending deliveries stay stored).
    pub removed: Vec<String>,
    /// Endpoints whose settings changed (restarted with the new ones).
    pub changed: Vec<String>,
}

/// The running outbox writer and endpoint dispatchers.
pub struct Delivery {
    /// The store, shared with the admin API and the CLI.
    pub outbox: Arc<Outbox>,
    /// Taken when it ends: a finished handle must not be polled again.
    writer: Option<tokio::task::JoinHandle<Result<(), OutboxError>>>,
    control: mpsc::Sender<writer::Control>,
    running: BTreeMap<String, Running>,
    published: watch::Sender<Endpoints>,
    metrics: Metrics,
    /// `service.shutdown_grace`, read by each dispatcher when it stops, so a
    /// reloaded value applies to every endpoint.
    grace: watch::Sender<Duration>,
    /// The recent-history index and live stream, fed by the writer and every
    /// dispatcher.
    history: history::History,
}

impl Delivery {
    /// Resumes every endpoint's pending deliveries from `outbox` and starts
    /// committing `events`. `echo` sees each event's JSON after its commit.
    pub fn start(
        config: &Config,
        outbox: Arc<Outbox>,
        events: mpsc::Receiver<Event>,
        echo: Option<crate::outbox::writer::Echo>,
        metrics: Metrics,
    ) -> Result<Delivery, DeliveryError> {
        warn_unconfigured(&outbox, config);
        let history = history::History::start(&metrics, outbox.durable_below());
        // Every backlog's extent (what was committed) is fixed before the writer
        // runs: a scan racing the writer could see unflushed events. Its pages are
        // read later, up to that extent only.
        let mut prepared = Vec::new();
        for ep in &config.endpoints {
            let client = transport::Transport::new(ep)?;
            let d = prepare(config, ep, client, &outbox, &metrics, &history)?;
            prepared.push((ep.clone(), d));
        }
        let (control, control_rx) = mpsc::channel(4);
        let mut running = BTreeMap::new();
        let grace = watch::channel(config.service.shutdown_grace).0;
        for (ep, dispatcher) in prepared {
            let r = spawn(ep.clone(), dispatcher, grace.subscribe());
            running.insert(ep.name, r);
        }
        let sinks = running
            .iter()
            .map(|(name, r)| (name.clone(), r.sink.clone()))
            .collect();
        let endpoints: Arc<[_]> = config.endpoints.clone().into();
        let writer = tokio::spawn(writer::run(
            outbox.clone(),
            endpoints,
            events,
            control_rx,
            Sinks {
                endpoints: sinks,
                echo,
                tap: Some(history.tap()),
            },
            metrics.clone(),
        ));
        let d = Delivery {
            outbox,
            writer: Some(writer),
            control,
            running,
            published: watch::channel(Arc::default()).0,
            metrics,
            grace,
            history,
        };
        d.publish();
        Ok(d)
    }

    /// The recent-history index and live event stream (for the admin API).
    pub fn history(&self) -> history::History {
        self.history.clone()
    }

    fn publish(&self) {
        let map: BTreeMap<_, _> = self
            .running
            .iter()
            .map(|(name, r)| (name.clone(), r.commands.clone()))
            .collect();
        self.published.send_replace(Arc::new(map));
    }

    /// The endpoints in force, kept current across reloads (for the admin API).
    pub fn endpoints(&self) -> watch::Receiver<Endpoints> {
        self.published.subscribe()
    }

    /// Whether the writer and every dispatcher answer within `within`: the
    /// watchdog's proof that delivery is not wedged.
    pub async fn alive(&self, within: Duration) -> bool {
        let endpoints = self.published.borrow().clone();
        tokio::time::timeout(within, async {
            let (tx, rx) = oneshot::channel();
            if self.control.send(writer::Control::Ping(tx)).await.is_err() || rx.await.is_err() {
                return false;
            }
            for commands in endpoints.values() {
                let (tx, rx) = oneshot::channel();
                if commands.send(EndpointCommand::Status(tx)).await.is_err() || rx.await.is_err() {
                    return false;
                }
            }
            true
        })
        .await
        .unwrap_or(false)
    }

    /// Applies a new configuration's endpoints without losing or duplicating a
    /// delivery: the writer switches routing between two batches, then removed
    /// and changed dispatchers stop, then new and changed ones load their backlog
    /// from the store and run. Unchanged endpoints are not touched. An endpoint
    /// that cannot start (unusable TLS file) rejects the reload before anything moved.
    pub async fn reload(&mut self, config: &Config) -> Result<ReloadSummary, ReloadError> {
        let mut summary = ReloadSummary::default();
        let mut fresh = Vec::new();
        for ep in &config.endpoints {
            match self.running.get(&ep.name) {
                Some(r) if r.config == *ep && r.tls_files == tls_files_digest(ep) => continue,
                Some(_) => summary.changed.push(ep.name.clone()),
                None => summary.added.push(ep.name.clone()),
            }
            let client = transport::Transport::new(ep)
                .map_err(|e| ReloadError::Rejected(DeliveryError::Transport(e)))?;
            fresh.push((ep.clone(), client));
        }
        summary.removed = self
            .running
            .keys()
            .filter(|n| !config.endpoints.iter().any(|e| &e.name == *n))
            .cloned()
            .collect();
        self.grace.send_replace(config.service.shutdown_grace);

        // 1. Route by the new endpoints. Fresh channels buffer the new
        //    dispatchers' events until they run.
        let mut channels = HashMap::new();
        let mut sinks = HashMap::new();
        for ep in &config.endpoints {
            if fresh.iter().any(|(f, _)| f.name == ep.name) {
                let (tx, rx) = mpsc::unbounded_channel();
                sinks.insert(ep.name.clone(), tx.clone());
                channels.insert(ep.name.clone(), (tx, rx));
            } else if let Some(r) = self.running.get(&ep.name) {
                sinks.insert(ep.name.clone(), r.sink.clone());
            }
        }
        let (applied, applied_rx) = oneshot::channel();
        let route = writer::Control::Route {
            endpoints: config.endpoints.clone().into(),
            sinks,
            applied,
        };
        if self.control.send(route).await.is_err() || applied_rx.await.is_err() {
            return Err(ReloadError::Broken(DeliveryError::Stopped));
        }
        // 2. The old routing is fully announced: stop what goes away or changes,
        //    all at once, so the graces run side by side rather than add up.
        let stopping: Vec<Running> = summary
            .removed
            .iter()
            .chain(&summary.changed)
            .filter_map(|name| self.running.remove(name))
            .collect();
        for r in &stopping {
            r.stop.cancel();
        }
        for r in stopping {
            let _ = r.task.await;
        }
        for name in &summary.removed {
            self.clear_metrics(name);
        }
        // 3. Start from the store, which holds every event routed to them so far.
        for (ep, client) in fresh {
            let prepared = prepare(
                config,
                &ep,
                client,
                &self.outbox,
                &self.metrics,
                &self.history,
            );
            let dispatcher = match prepared {
                Ok(d) => d,
                Err(e) => {
                    self.publish();
                    return Err(ReloadError::Broken(e));
                }
            };
            let channel = channels.remove(&ep.name);
            let r = match channel {
                Some(ch) => spawn_on(ep.clone(), dispatcher, self.grace.subscribe(), ch),
                None => spawn(ep.clone(), dispatcher, self.grace.subscribe()),
            };
            self.running.insert(ep.name, r);
        }
        self.publish();
        Ok(summary)
    }

    /// A removed endpoint's series would otherwise report its last values forever.
    fn clear_metrics(&self, name: &str) {
        let m = &self.metrics;
        let _ = m.outbox_pending.remove_label_values(&[name]);
        let _ = m.outbox_oldest_pending_seconds.remove_label_values(&[name]);
        let _ = m.deadletters.remove_label_values(&[name]);
        for s in dispatch::STATE_LABELS {
            let _ = m.endpoint_state.remove_label_values(&[name, s]);
        }
    }

    /// Resolves if the outbox writer ends while siphook runs: on a storage error
    /// it cannot get past (a disk that keeps failing), or because its input
    /// closed (the tracker is gone). Either way the process should exit.
    pub async fn failed(&mut self) -> Result<(), OutboxError> {
        let Some(writer) = self.writer.as_mut() else {
            return std::future::pending().await;
        };
        let ended = writer.await;
        self.writer = None;
        match ended {
            Ok(result) => result,
            Err(e) => {
                tracing::error!("the outbox writer task failed: {e}");
                Ok(())
            }
        }
    }

    /// Waits for the writer to commit everything its input held (the input must be
    /// closed first), then stops the dispatchers, each giving its attempts in
    /// flight up to `service.shutdown_grace`, and commits what they recorded.
    /// Unfinished deliveries stay pending.
    pub async fn shutdown(mut self) -> Result<(), OutboxError> {
        let written = match self.writer.take() {
            Some(w) => w.await.unwrap_or(Ok(())),
            None => Ok(()),
        };
        for r in self.running.values() {
            r.stop.cancel();
        }
        for (_, r) in std::mem::take(&mut self.running) {
            let _ = r.task.await;
        }
        // Deliveries, dead letters and pauses recorded during the grace.
        let recorded = self.outbox.commit().await;
        written.and(recorded)
    }
}

/// Warns about deliveries kept for an endpoint that was removed or renamed: they
/// wait, with their events, until it is configured again.
fn warn_unconfigured(outbox: &Outbox, config: &Config) {
    match outbox.pending_endpoints() {
        Ok(names) => {
            for name in names {
                if !config.endpoints.iter().any(|e| e.name == name) {
                    let n = outbox.pending_count(&name);
                    tracing::warn!(endpoint = %name, pending = n, "pending deliveries for an endpoint that is not configured; they are kept until it is");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot scan pending deliveries"),
    }
}

fn prepare(
    config: &Config,
    ep: &EndpointConfig,
    client: transport::Transport,
    outbox: &Arc<Outbox>,
    metrics: &Metrics,
    history: &history::History,
) -> Result<dispatch::Dispatcher, DeliveryError> {
    let notes = history::EndpointNotes::new(history, &ep.name);
    dispatch::prepare(ep.clone(), client, outbox.clone(), metrics.clone(), notes).map_err(
        |source| DeliveryError::Outbox {
            path: config.outbox.path.display().to_string(),
            source,
        },
    )
}

/// Digest of an endpoint's CA, client certificate and key files (an unreadable
/// file counts as its error text, so a fix to it is a change too).
fn tls_files_digest(ep: &EndpointConfig) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for path in [&ep.ca_file, &ep.client_cert_file, &ep.client_key_file] {
        match path.as_ref().map(std::fs::read) {
            Some(Ok(bytes)) => h.update(&bytes),
            Some(Err(e)) => h.update(e.to_string().as_bytes()),
            None => {}
        }
        h.update([0]);
    }
    h.finalize().into()
}

fn spawn(
    ep: EndpointConfig,
    dispatcher: dispatch::Dispatcher,
    grace: watch::Receiver<Duration>,
) -> Running {
    spawn_on(ep, dispatcher, grace, mpsc::unbounded_channel())
}

fn spawn_on(
    ep: EndpointConfig,
    dispatcher: dispatch::Dispatcher,
    grace: watch::Receiver<Duration>,
    (sink, rx): (Sink, mpsc::UnboundedReceiver<writer::Committed>),
) -> Running {
    let (commands, commands_rx) = mpsc::channel(COMMANDS);
    let stop = CancellationToken::new();
    let task = tokio::spawn(dispatch::run(
        dispatcher,
        rx,
        commands_rx,
        stop.clone(),
        grace,
    ));
    Running {
        tls_files: tls_files_digest(&ep),
        config: ep,
        sink,
        commands,
        stop,
        task,
    }
}
