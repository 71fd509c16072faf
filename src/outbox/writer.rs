//! Group commit: events that arrive while a flush runs are written together and
//! made durable by the next single flush, so durability costs one fsync per batch
//! rather than per event, and an idle system flushes at once without a timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{Outbox, OutboxError, call_key};
use crate::admin::{Metrics, RateLog};
use crate::call::{Event, Timestamp};
use crate::config::EndpointConfig;

/// Largest number of events grouped into one commit.
const MAX_BATCH: usize = 4096;

/// A durable event, announced to the dispatcher of each endpoint that wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Outbox offset.
    pub offset: u64,
    /// Per-call ordering key.
    pub call_key: u64,
    /// When the SIP message behind it was received (ms since the epoch): the
    /// dispatcher reports how long its oldest pending event has waited.
    pub received_ms: i64,
}

/// Changes the writer applies between two batches, so every event is routed by
/// exactly one endpoint set: a reload never splits a batch.
pub enum Control {
    /// From the next batch on, route by `endpoints` into `sinks`; `applied` fires
    /// once every event routed the old way is committed and announced.
    Route {
        /// The endpoints in force.
        endpoints: Arc<[EndpointConfig]>,
        /// Their dispatchers' queues.
        sinks: HashMap<String, mpsc::UnboundedSender<Committed>>,
        /// Acknowledges the switch.
        applied: oneshot::Sender<()>,
    },
    /// Answers when the writer is between batches: proof for the watchdog that it
    /// is not wedged.
    Ping(oneshot::Sender<()>),
}

/// Sees each committed event's JSON (`--print-events`).
pub type Echo = Box<dyn FnMut(&[u8]) + Send>;

/// Sinks for committed events.
pub struct Sinks {
    /// Per endpoint name, its dispatcher's queue.
    pub endpoints: HashMap<String, mpsc::UnboundedSender<Committed>>,
    /// Called with every event's JSON after its commit (`--print-events`).
    pub echo: Option<Echo>,
}

/// An event written in this batch, announced once the batch is durable.
struct Stored {
    body: Vec<u8>,
    offset: u64,
    call_key: u64,
    received_ms: i64,
    /// Indexes into the endpoint list of the endpoints that want it.
    targets: Vec<usize>,
}

/// Stores and commits events from `rx` until it closes.
pub async fn run(
    outbox: Arc<Outbox>,
    mut endpoints: Arc<[EndpointConfig]>,
    mut rx: mpsc::Receiver<Event>,
    mut control: mpsc::Receiver<Control>,
    mut sinks: Sinks,
    metrics: Metrics,
) -> Result<(), OutboxError> {
    let mut batch: Vec<Event> = Vec::with_capacity(64);
    let mut stored: Vec<Stored> = Vec::with_capacity(64);
    let mut errors = RateLog::new(Duration::from_secs(10));
    let mut size = outbox.size_on_disk();
    // Readiness is right from the start and follows the store while no event
    // arrives (a full store drained by deliveries, or space freed by hand).
    let _ = refresh_space(&outbox, &metrics, size);
    let mut recheck = tokio::time::interval(SPACE_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            biased;
            Some(c) = control.recv() => {
                match c {
                    Control::Route { endpoints: e, sinks: s, applied } => {
                        endpoints = e;
                        sinks.endpoints = s;
                        let _ = applied.send(());
                    }
                    Control::Ping(reply) => {
                        let _ = reply.send(());
                    }
                }
                continue;
            }
            e = rx.recv() => match e {
                Some(e) => e,
                None => break,
            },
            _ = recheck.tick() => {
                size = outbox.size_on_disk();
                let _ = refresh_space(&outbox, &metrics, size);
                continue;
            }
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let now = Timestamp::now().millis();
        // Measured once per batch, after its commit: listing sled's files is not free.
        let space = refresh_space(&outbox, &metrics, size);
        for event in batch.drain(..) {
            if let Err(e) = outbox.track_call(&event)
                && let Some(suppressed) = errors.allow()
            {
                tracing::error!(error = %e, suppressed, "cannot persist call state");
            }
            let body = event.to_json();
            let targets: Vec<usize> = endpoints
                .iter()
                .enumerate()
                .filter(|(_, e)| {
                    e.wants(
                        event.event_type.as_str(),
                        event.call.dnis.as_deref(),
                        event.call.ani.as_deref(),
                    )
                })
                .map(|(i, _)| i)
                .collect();
            let received_ms = event.timestamp.millis();
            if targets.is_empty() {
                stored.push(Stored {
                    body,
                    offset: u64::MAX,
                    call_key: call_key(&event.call.id),
                    received_ms,
                    targets,
                });
                continue;
            }
            let names: Vec<&str> = targets
                .iter()
                .map(|&i| endpoints[i].name.as_str())
                .collect();
            let result = match &space {
                Err(OutboxError::Full { size, max }) => Err(OutboxError::Full {
                    size: *size,
                    max: *max,
                }),
                _ => outbox.append(&event, &body, &names, now),
            };
            match result {
                Ok(offset) => stored.push(Stored {
                    body,
                    offset,
                    call_key: call_key(&event.call.id),
                    received_ms,
                    targets,
                }),
                Err(e) => {
                    let reason = if matches!(e, OutboxError::Full { .. }) {
                        "outbox_full"
                    } else {
                        "storage_error"
                    };
                    metrics.events_refused.with_label_values(&[reason]).inc();
                    if let Some(suppressed) = errors.allow() {
                        tracing::error!(error = %e, event_id = %event.id, suppressed, "event refused by the outbox");
                    }
                }
            }
        }
        commit(&outbox, &metrics, &mut errors).await?;
        size = outbox.size_on_disk();
        metrics
            .outbox_size_bytes
            .set(i64::try_from(size).unwrap_or(i64::MAX));
        for Stored {
            body,
            offset,
            call_key: key,
            received_ms,
            targets,
        } in stored.drain(..)
        {
            if let Some(echo) = sinks.echo.as_mut() {
                echo(&body);
            }
            for i in targets {
                if let Some(tx) = sinks.endpoints.get(&endpoints[i].name) {
                    let _ = tx.send(Committed {
                        offset,
                        call_key: key,
                        received_ms,
                    });
                }
            }
        }
    }
    Ok(())
}

/// How often the store's size is measured while no event arrives.
const SPACE_RECHECK: Duration = Duration::from_secs(5);

/// Whether the store, at `size` bytes, takes new events; keeps the readiness gauge
/// (`/readyz` reads it) current and logs only its changes.
fn refresh_space(outbox: &Outbox, metrics: &Metrics, size: u64) -> Result<(), OutboxError> {
    let space = outbox.check_space(size);
    let accepting = space.is_ok();
    if accepting != (metrics.outbox_accepting.get() == 1) {
        metrics.outbox_accepting.set(i64::from(accepting));
        match &space {
            Err(e) => tracing::error!(error = %e, "outbox full: refusing new events, not ready"),
            Ok(()) => tracing::info!(size, "outbox below max_bytes again: accepting events"),
        }
    }
    space
}

/// How long a failing flush is retried before the writer gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// Flushes, retrying a failing disk with backoff: nothing is announced that is not
/// durable, so meanwhile the pipeline stalls and ingest sheds (counted). sled keeps
/// an I/O error until the store is reopened, so after `GIVE_UP_AFTER` the error is
/// returned and the process exits for its supervisor to restart it; everything
/// committed before is on disk.
async fn commit(
    outbox: &Outbox,
    metrics: &Metrics,
    errors: &mut RateLog,
) -> Result<(), OutboxError> {
    let mut backoff = Duration::from_millis(10);
    let failing_since = Instant::now();
    loop {
        let started = Instant::now();
        match outbox.commit().await {
            Ok(()) => {
                metrics
                    .outbox_commit_duration
                    .observe(started.elapsed().as_secs_f64());
                return Ok(());
            }
            Err(e) if failing_since.elapsed() >= GIVE_UP_AFTER => {
                tracing::error!(error = %e, "outbox commit failing for {}s; stopping so the service restarts", GIVE_UP_AFTER.as_secs());
                return Err(e);
            }
            Err(e) => {
                if let Some(suppressed) = errors.allow() {
                    tracing::error!(error = %e, suppressed, "outbox commit failed; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
