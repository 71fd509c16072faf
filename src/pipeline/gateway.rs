//! The front half of the pipeline: listeners → tracker task → event stream. Tests
//! that need no outbox start it alone, through [`Gateway::start`]. The tracker task
//! owns the call table; others ask it questions through [`TrackerQuery`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::call::{CallSnapshot, Event, EventData, Ignored, Tracker, TrackerConfig, TrackerQuery};
use crate::config::Config;
use crate::ingest::tcp::TcpLimits;
use crate::ingest::{self, Inbound, IngestContext, Wire};
use crate::metrics::{Metrics, RateLog};
use crate::sip::ParseOptions;
use crate::vocab::Timestamp;

/// Events waiting for their consumer (the outbox writer); the tracker waits when
/// it is full, so a stalled disk makes ingest shed at the tracker's own queue
/// (`queue_full`) instead of growing memory. Public so tests can fill it exactly.
pub const EVENT_QUEUE: usize = 65_536;

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
    /// Bound HEP-over-UDP addresses, in config order.
    pub hep_udp_addrs: Vec<SocketAddr>,
    /// Bound HEP-over-TCP addresses, in config order.
    pub hep_tcp_addrs: Vec<SocketAddr>,
    /// Every call event, in emission order. Must be consumed, or the tracker stalls
    /// and ingest sheds load.
    pub events: mpsc::Receiver<Event>,
    /// The process's metrics.
    pub metrics: Metrics,
    /// Questions for the tracker task.
    pub queries: mpsc::Sender<TrackerQuery>,
    /// A task ended before shutdown; the watchdog is no longer fed.
    broken: bool,
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
        let udp_wanted = sip.udp.iter().map(|a| (a, Wire::Sip));
        for (addr, wire) in udp_wanted.chain(config.hep.udp.iter().map(|a| (a, Wire::Hep))) {
            let socket = ingest::udp::bind(*addr, sip.udp_receive_buffer).map_err(|source| {
                StartError::Bind {
                    transport: if wire == Wire::Sip { "udp" } else { "hep udp" },
                    addr: *addr,
                    source,
                }
            })?;
            udp.push((socket, wire));
        }
        let mut tcp = Vec::new();
        let tcp_wanted = sip.tcp.iter().map(|a| (a, Wire::Sip));
        for (addr, wire) in tcp_wanted.chain(config.hep.tcp.iter().map(|a| (a, Wire::Hep))) {
            let listener = ingest::tcp::bind(*addr)
                .await
                .map_err(|source| StartError::Bind {
                    transport: if wire == Wire::Sip { "tcp" } else { "hep tcp" },
                    addr: *addr,
                    source,
                })?;
            tcp.push((listener, wire));
        }
        let bound = |wire: Wire, udp_side: bool| -> Vec<SocketAddr> {
            if udp_side {
                udp.iter()
                    .filter(|(_, w)| *w == wire)
                    .filter_map(|(s, _)| s.local_addr().ok())
                    .collect()
            } else {
                tcp.iter()
                    .filter(|(_, w)| *w == wire)
                    .filter_map(|(s, _)| s.local_addr().ok())
                    .collect()
            }
        };
        let udp_addrs = bound(Wire::Sip, true);
        let tcp_addrs = bound(Wire::Sip, false);
        let hep_udp_addrs = bound(Wire::Hep, true);
        let hep_tcp_addrs = bound(Wire::Hep, false);

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
        )
        .with_hep_auth(config.hep.auth_key.as_ref().map(|k| k.0.as_bytes()))
        .with_siptrace_from(&sip.siptrace_from);
        let limits = TcpLimits {
            max_message_bytes: sip.max_message_bytes,
            idle_timeout: sip.tcp_idle_timeout,
            max_connections: sip.max_tcp_connections,
            max_per_source: sip.max_connections_per_source,
            auth_timeout: config.hep.auth_timeout,
        };
        let trusted_sip: Arc<[IpAddr]> = sip.siptrace_from.as_slice().into();
        let trusted_hep: Arc<[IpAddr]> = config.hep.agents.as_slice().into();
        let mut tasks = JoinSet::new();
        for (socket, wire) in udp {
            tasks.spawn(ingest::udp::serve(
                socket,
                wire,
                ctx.clone(),
                shutdown.clone(),
            ));
        }
        for (listener, wire) in tcp {
            let trusted = match wire {
                Wire::Sip => trusted_sip.clone(),
                Wire::Hep => trusted_hep.clone(),
            };
            tasks.spawn(ingest::tcp::serve(
                listener,
                wire,
                ctx.clone(),
                limits,
                trusted,
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
        let (queries, queries_rx) = mpsc::channel(16);
        tasks.spawn(run_tracker(
            tracker,
            in_rx,
            queries_rx,
            ev_tx,
            metrics.clone(),
        ));
        Ok(Gateway {
            udp_addrs,
            tcp_addrs,
            hep_udp_addrs,
            hep_tcp_addrs,
            events: ev_rx,
            metrics,
            queries,
            broken: false,
            shutdown,
            tasks,
        })
    }

    /// Whether every listener and the tracker still run and the tracker answers
    /// within `within`: what the systemd watchdog wants proven. A task that ended
    /// before shutdown (a listener that failed) means a broken pipeline.
    pub async fn alive(&mut self, within: Duration) -> bool {
        if let Some(ended) = self.tasks.try_join_next() {
            tracing::error!(
                panicked = ended.is_err(),
                "a listener or the tracker task ended unexpectedly"
            );
            self.broken = true;
        }
        if self.broken {
            return false;
        }
        let (tx, rx) = oneshot::channel();
        tokio::time::timeout(within, async {
            self.queries.send(TrackerQuery::Ping(tx)).await.is_ok() && rx.await.is_ok()
        })
        .await
        .unwrap_or(false)
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

/// Messages the tracker applies, at most, between two looks at its questions.
const QUERY_EVERY: u32 = 256;

/// The tracker task: applies messages in arrival order and fires timers.
async fn run_tracker(
    mut tracker: Tracker,
    mut rx: mpsc::Receiver<Inbound>,
    mut queries: mpsc::Receiver<TrackerQuery>,
    tx: mpsc::Sender<Event>,
    metrics: Metrics,
) {
    let mut out = Vec::with_capacity(8);
    let mut full_log = RateLog::new(Duration::from_secs(10));
    let mut since_queries = 0u32;
    loop {
        // Under a sustained flood the message branch below always wins; questions
        // (the watchdog's ping, /v1/calls) are answered every so often anyway, or
        // a process working at capacity would look wedged.
        since_queries += 1;
        if since_queries >= QUERY_EVERY {
            since_queries = 0;
            if let Ok(q) = queries.try_recv() {
                tracker.answer(q);
            }
        }
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
            Some(q) = queries.recv() => {
                tracker.answer(q);
                continue;
            }
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
        count_held(&metrics, tracker.take_held_counts());
        metrics
            .calls_active
            .set(i64::try_from(tracker.active_calls()).unwrap_or(i64::MAX));
        for event in out.drain(..) {
            // What `[log] level = "debug"` shows of a call: ids only, never numbers
            // (the call id is a hash; the event itself is in the outbox).
            tracing::debug!(
                event_id = %event.id,
                event_type = event.event_type.as_str(),
                call = %event.call.id,
                sequence = event.sequence,
                "call event emitted"
            );
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

/// Messages held for their INVITE: what became of them. Those that never found
/// it count as `unknown_dialog` too, as they did before they were held (a shed
/// one was counted so when it arrived).
fn count_held(metrics: &Metrics, held: crate::call::HeldCounts) {
    for (outcome, n) in [
        ("applied", held.applied),
        ("expired", held.expired),
        ("shed", held.shed),
    ] {
        if n > 0 {
            metrics.sip_held.with_label_values(&[outcome]).inc_by(n);
            if outcome == "expired" {
                metrics
                    .sip_ignored
                    .with_label_values(&["unknown_dialog"])
                    .inc_by(n);
            }
        }
    }
}
