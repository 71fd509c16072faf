//! Wires the pipeline together: listeners → tracker task → event stream. Tests and
//! the binary start siphook the same way, through [`Gateway::start`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{Metrics, RateLog};
use crate::call::{CallSnapshot, Event, EventData, Ignored, Timestamp, Tracker, TrackerConfig};
use crate::config::Config;
use crate::ingest::tcp::TcpLimits;
use crate::ingest::{self, Inbound, IngestContext};
use crate::sip::ParseOptions;

/// Events waiting for their consumer; the tracker waits when it is full.
const EVENT_QUEUE: usize = 65_536;

/// Why siphook could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("cannot listen on {transport} {addr}: {source}")]
    Bind {
        /// "udp" or "tcp".
        transport: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running siphook.
pub struct Gateway {
    /// Bound UDP addresses, in config order (port 0 resolved).
    pub udp_addrs: Vec<SocketAddr>,
    /// Bound TCP addresses, in config order (port 0 resolved).
    pub tcp_addrs: Vec<SocketAddr>,
    /// Every call event, in emission order. Must be consumed, or the tracker stalls
    /// and ingest sheds load.
    pub events: mpsc::Receiver<Event>,
    /// The process's metrics.
    pub metrics: Metrics,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Gateway {
    /// Binds every listener and starts the tracker. Fails before anything runs if any
    /// address cannot be bound.
    pub async fn start(config: &Config, metrics: Metrics) -> Result<Gateway, StartError> {
        Gateway::start_with(config, metrics, Vec::new()).await
    }

    /// Like [`Gateway::start`], continuing the calls that were live when the previous
    /// process stopped (from the outbox).
    pub async fn start_with(
        config: &Config,
        metrics: Metrics,
        restore: Vec<CallSnapshot>,
    ) -> Result<Gateway, StartError> {
        let sip = &config.sip;
        let mut udp = Vec::new();
        for addr in &sip.udp {
            let socket = ingest::udp::bind(*addr, sip.udp_receive_buffer).map_err(|source| {
                StartError::Bind {
                    transport: "udp",
                    addr: *addr,
                    source,
                }
            })?;
            udp.push(socket);
        }
        let mut tcp = Vec::new();
        for addr in &sip.tcp {
            let listener = ingest::tcp::bind(*addr)
                .await
                .map_err(|source| StartError::Bind {
                    transport: "tcp",
                    addr: *addr,
                    source,
                })?;
            tcp.push(listener);
        }
        let udp_addrs = udp.iter().filter_map(|s| s.local_addr().ok()).collect();
        let tcp_addrs = tcp.iter().filter_map(|s| s.local_addr().ok()).collect();

        let shutdown = CancellationToken::new();
        let (in_tx, in_rx) = mpsc::channel(sip.queue_capacity);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        let ctx = IngestContext::new(
            in_tx,
            ParseOptions {
                correlation_headers: sip.correlation_headers.clone(),
                max_message_bytes: sip.max_message_bytes,
            },
            metrics.clone(),
        );
        let limits = TcpLimits {
            max_message_bytes: sip.max_message_bytes,
            idle_timeout: sip.tcp_idle_timeout,
            max_connections: sip.max_tcp_connections,
        };
        let mut tasks = JoinSet::new();
        for socket in udp {
            tasks.spawn(ingest::udp::serve(socket, ctx.clone(), shutdown.clone()));
        }
        for listener in tcp {
            tasks.spawn(ingest::tcp::serve(
                listener,
                ctx.clone(),
                limits,
                shutdown.clone(),
            ));
        }
        // The tracker ends when every sender of `in_tx` is gone: listeners first,
        // then the tracker drains what they queued.
        drop(ctx);
        let mut tracker = Tracker::new(TrackerConfig::from(sip));
        if !restore.is_empty() {
            tracing::info!(
                calls = restore.len(),
                "resuming calls that were active at the last stop"
            );
            tracker.restore(restore, Timestamp::now());
        }
        tasks.spawn(run_tracker(tracker, in_rx, ev_tx, metrics.clone()));
        Ok(Gateway {
            udp_addrs,
            tcp_addrs,
            events: ev_rx,
            metrics,
            shutdown,
            tasks,
        })
    }

    /// A token that stops the gateway when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops listening, lets the tracker finish what was queued, and waits for
    /// every task. Events still queued remain readable from `events`.
    pub async fn shutdown(mut self) -> mpsc::Receiver<Event> {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.events
    }
}

/// The tracker task: applies messages in arrival order and fires timers.
async fn run_tracker(
    mut tracker: Tracker,
    mut rx: mpsc::Receiver<Inbound>,
    tx: mpsc::Sender<Event>,
    metrics: Metrics,
) {
    let mut out = Vec::with_capacity(8);
    let mut full_log = RateLog::new(Duration::from_secs(10));
    loop {
        let sleep = tracker.next_deadline().map(|d| {
            Duration::from_millis(
                u64::try_from(d.millis() - Timestamp::now().millis()).unwrap_or(0),
            )
        });
        // Messages first: a timer may only fire once everything received before its
        // deadline has been applied (a BYE queued behind a burst must beat the timer).
        let inbound = tokio::select! {
            biased;
            m = rx.recv() => match m {
                Some(m) => Some(m),
                None => break,
            },
            _ = tokio::time::sleep(sleep.unwrap_or(Duration::from_secs(3600))) => None,
        };
        match inbound {
            Some(Inbound { msg, meta }) => {
                // Timers that fell due before this message was received go first.
                tracker.on_time(meta.received_at, &mut out);
                if let Err(why) = tracker.on_message(&msg, &meta, &mut out) {
                    metrics.sip_ignored.with_label_values(&[why.as_str()]).inc();
                    if why == Ignored::TableFull {
                        metrics
                            .calls_dropped
                            .with_label_values(&["table_full"])
                            .inc();
                        if let Some(suppressed) = full_log.allow() {
                            tracing::warn!(call_id = %msg.call_id.chars().take(64).filter(|c| !c.is_control()).collect::<String>(), suppressed, "call table full (sip.max_active_calls): new call not tracked");
                        }
                    }
                }
            }
            None => tracker.on_time(Timestamp::now(), &mut out),
        }
        metrics
            .calls_active
            .set(i64::try_from(tracker.active_calls()).unwrap_or(i64::MAX));
        for event in out.drain(..) {
            metrics
                .events_total
                .with_label_values(&[event.event_type.as_str()])
                .inc();
            if let EventData::Completed(c) = &event.data {
                metrics
                    .calls_total
                    .with_label_values(&[c.disposition.as_str()])
                    .inc();
            }
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// Whether events are also printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutput {
    /// One JSON object per line on stdout (`--print-events`), after its commit.
    JsonLines,
    /// Not printed.
    Quiet,
}

/// Why `serve` stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Listeners could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The outbox or an endpoint client could not start.
    #[error(transparent)]
    Delivery(#[from] crate::deliver::DeliveryError),
    /// The outbox kept failing to commit; restart to reopen it.
    #[error("outbox failed: {0}")]
    Outbox(crate::outbox::OutboxError),
}

/// Runs siphook until `stop` resolves, then shuts down cleanly: listeners stop,
/// the tracker drains, every queued event is committed, dispatchers stop.
pub async fn serve(
    config: &Config,
    output: EventOutput,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let metrics = Metrics::new();
    let outbox = crate::deliver::open_outbox(config)?;
    let restore =
        outbox
            .active_calls()
            .map_err(|source| crate::deliver::DeliveryError::Outbox {
                path: config.outbox.path.display().to_string(),
                source,
            })?;
    let mut gateway = Gateway::start_with(config, metrics.clone(), restore).await?;
    let events = std::mem::replace(&mut gateway.events, mpsc::channel(1).1);
    let echo: Option<crate::outbox::writer::Echo> = match output {
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
    };
    let mut delivery = match crate::deliver::Delivery::start(config, outbox, events, echo, metrics)
    {
        Ok(d) => d,
        Err(e) => {
            drop(gateway.shutdown().await);
            return Err(e.into());
        }
    };
    tracing::info!(
        udp = ?gateway.udp_addrs,
        tcp = ?gateway.tcp_addrs,
        endpoints = config.endpoints.len(),
        outbox = %config.outbox.path.display(),
        "siphook running"
    );
    let failure = tokio::select! {
        _ = stop => None,
        e = delivery.failed() => Some(e),
    };
    tracing::info!("shutting down");
    drop(gateway.shutdown().await);
    if let Some(e) = failure {
        return Err(ServeError::Outbox(e));
    }
    delivery.shutdown().await;
    Ok(())
}
