//! Group commit: events that arrive while a flush runs are written together and
//! made durable by the next single flush, so durability costs one fsync per batch
//! rather than per event, and an idle system flushes at once without a timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{Outbox, OutboxError, call_key};
use crate::call::Event;
use crate::config::EndpointConfig;
use crate::metrics::{Metrics, RateLog};
use crate::vocab::Timestamp;

/// Largest number of events grouped into one commit.
const MAX_BATCH: usize = 4096;

/// A durable event, announced to the dispatcher of each endpoint that wants it.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Outbox offset.
    pub offset: u64,
    /// Per-call ordering key.
    pub call_key: u64,
    /// When the SIP message behind it was received (ms since the epoch): the
    /// dispatcher reports how long its oldest pending event has waited.
    pub received_ms: i64,
    /// The event as the writer stored it, shared by every endpoint: the first
    /// attempt sends these bytes instead of reading back what the writer just
    /// had in memory. `None` once a dispatcher chose not to keep it (a backlog
    /// is read meanwhile, or its cache is full): then the store has it.
    pub fresh: Option<Arc<Fresh>>,
}

/// An event's id and exact stored JSON, held in memory between its commit and
/// its delivery.
#[derive(Debug)]
pub struct Fresh {
    /// The event id (`webhook-id`).
    pub id: String,
    /// The bytes the store holds for it.
    pub body: bytes::Bytes,
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

/// An event as the writer announces it once durable, to whoever watches every
/// event (the recent-history index and its live stream).
pub struct Announced<'a> {
    /// Its outbox offset; `None` when no endpoint wanted it (it is not stored).
    pub offset: Option<u64>,
    /// Its id and stored bytes.
    pub fresh: &'a Arc<Fresh>,
    /// The event type's wire name (`call.answered`): what a stream filters on
    /// without reading the body.
    pub kind: &'static str,
    /// The endpoints it is for.
    pub endpoints: &'a mut dyn Iterator<Item = &'a str>,
}

/// Sees every event after its commit, in commit order. Called on the writer's
/// task: it must not wait (hand the event on and return).
pub type Tap = Box<dyn FnMut(Announced<'_>) + Send>;

/// Sinks for committed events.
pub struct Sinks {
    /// Per endpoint name, its dispatcher's queue.
    pub endpoints: HashMap<String, mpsc::UnboundedSender<Committed>>,
    /// Called with every event's JSON after its commit (`--print-events`).
    pub echo: Option<Echo>,
    /// Sees every event after its commit (see [`Tap`]).
    pub tap: Option<Tap>,
}

/// An event written in this batch, announced once the batch is durable.
struct Stored {
    fresh: Arc<Fresh>,
    kind: &'static str,
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
    metrics
        .outbox_max_bytes
        .set(i64::try_from(outbox.max_bytes()).unwrap_or(i64::MAX));
    let opened = outbox.opened();
    metrics
        .outbox_open_cut_bytes
        .set(i64::try_from(opened.cut_bytes).unwrap_or(i64::MAX));
    metrics
        .outbox_open_damaged_bytes
        .set(i64::try_from(opened.damaged_bytes).unwrap_or(i64::MAX));

    // Readiness is right from the start and follows the store while no event
    // arrives (a full store drained by deliveries, or space freed by hand).
    let _ = refresh_space(&outbox, &metrics, size);
    let mut recheck = tokio::time::interval(SPACE_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flush = tokio::time::interval(IDLE_FLUSH);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            _ = flush.tick() => {
                // Acknowledgements and attempts appended by the dispatchers, and
                // what a carry moved, reach the disk while no event comes to
                // take them along. Not timed: the commit histogram is of batches.
                let flushed = outbox.commit().await;
                if let Err(e) = flushed.map(|()| after_commit(&outbox, &metrics)) {
                    let e = broken(&outbox, &metrics, e, &mut rx, &mut control, &mut errors);
                    return Err(e.await);
                }
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
        let space = refresh_space(&outbox, &metrics, size);
        // A write the store refused (not for space): after this batch is
        // committed and announced, the writer stops taking events.
        let mut failed: Option<OutboxError> = None;
        for event in batch.drain(..) {
            // The call's state goes with its event (after it, in the same batch,
            // which the store applies whole or not at all); not for an event the
            // store refused.
            let mut track = |event: &Event| {
                if let Err(e) = outbox.track_call(event)
                    && let Some(suppressed) = errors.allow()
                {
                    tracing::error!(error = %e, suppressed, "cannot persist call state");
                }
            };
            let body = bytes::Bytes::from(event.to_json());
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
                if space.is_ok() {
                    track(&event);
                }
                stored.push(Stored {
                    offset: u64::MAX,
                    call_key: call_key(&event.call.id),
                    received_ms,
                    targets,
                    kind: event.event_type.as_str(),
                    fresh: Arc::new(Fresh { id: event.id, body }),
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
                Ok(offset) => {
                    track(&event);
                    stored.push(Stored {
                        offset,
                        call_key: call_key(&event.call.id),
                        received_ms,
                        targets,
                        kind: event.event_type.as_str(),
                        fresh: Arc::new(Fresh { id: event.id, body }),
                    });
                }
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
                    if !e.refuses_one_event() && failed.is_none() {
                        failed = Some(e);
                    }
                }
            }
        }
        if let Err(e) = commit(&outbox, &metrics).await {
            // Nothing of this batch is durable or announced: it is lost, and counted.
            let lost = stored.iter().filter(|s| s.offset != u64::MAX).count();
            metrics
                .events_refused
                .with_label_values(&["storage_error"])
                .inc_by(u64::try_from(lost).unwrap_or(u64::MAX));
            return Err(broken(&outbox, &metrics, e, &mut rx, &mut control, &mut errors).await);
        }
        size = outbox.size_on_disk();
        metrics
            .outbox_size_bytes
            .set(i64::try_from(size).unwrap_or(i64::MAX));
        for Stored {
            fresh,
            kind,
            offset,
            call_key: key,
            received_ms,
            targets,
        } in stored.drain(..)
        {
            if let Some(echo) = sinks.echo.as_mut() {
                echo(&fresh.body);
            }
            if let Some(tap) = sinks.tap.as_mut() {
                let mut names = targets.iter().map(|&i| endpoints[i].name.as_str());
                tap(Announced {
                    offset: (offset != u64::MAX).then_some(offset),
                    fresh: &fresh,
                    kind,
                    endpoints: &mut names,
                });
            }
            for i in targets {
                if let Some(tx) = sinks.endpoints.get(&endpoints[i].name) {
                    let _ = tx.send(Committed {
                        offset,
                        call_key: key,
                        received_ms,
                        fresh: Some(fresh.clone()),
                    });
                }
            }
        }
        if let Some(e) = failed {
            // What was committed before it is announced; nothing more is taken.
            return Err(broken(&outbox, &metrics, e, &mut rx, &mut control, &mut errors).await);
        }
        flush.reset();
    }
    Ok(())
}

/// How long an acknowledgement may wait in memory for a commit while no event
/// arrives; losing it to a crash means one duplicate delivery, never a loss.
const IDLE_FLUSH: Duration = Duration::from_millis(200);

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

/// One commit (write + fdatasync), timed. Not retried: after a failed write the
/// store cannot tell what reached the disk, so it refuses every later commit
/// until it is reopened.
async fn commit(outbox: &Outbox, metrics: &Metrics) -> Result<(), OutboxError> {
    let started = Instant::now();
    outbox.commit().await?;
    metrics
        .outbox_commit_duration
        .observe(started.elapsed().as_secs_f64());
    after_commit(outbox, metrics);
    Ok(())
}

/// The store's gauges after a commit (which may have retired or carried).
fn after_commit(outbox: &Outbox, metrics: &Metrics) {
    metrics
        .outbox_segments
        .set(i64::try_from(outbox.segments()).unwrap_or(i64::MAX));
    let (carried, shown) = (outbox.carried_bytes(), metrics.outbox_carried_bytes.get());
    metrics
        .outbox_carried_bytes
        .inc_by(carried.saturating_sub(shown));
}

/// How often a failed store checks whether the disk takes writes again.
const SPACE_PROBE_EVERY: Duration = Duration::from_secs(1);
/// What the probe must be able to write: room for the log to reopen and start
/// a segment, so a restart does not fail at once again.
const SPACE_PROBE_BYTES: usize = 1 << 20;
/// The probe's file, in the store's directory beside the log.
const SPACE_PROBE_FILE: &str = ".siphook-space-probe";

/// The store failed a write (disk full, I/O error) and refuses every later
/// one, so the only way back is a fresh process. Meanwhile: not ready (reason
/// `outbox_storage_error`), every new event refused and counted, the watchdog and
/// reloads still answered. Once the disk takes a probe write again, the error is
/// returned and the process exits non-zero for its supervisor to restart it;
/// exiting earlier would only fail to reopen the store on a still-full disk and
/// use up systemd's start limit. Everything committed before is on disk.
async fn broken(
    outbox: &Outbox,
    metrics: &Metrics,
    error: OutboxError,
    rx: &mut mpsc::Receiver<Event>,
    control: &mut mpsc::Receiver<Control>,
    errors: &mut RateLog,
) -> OutboxError {
    metrics.outbox_accepting.set(0);
    metrics.outbox_storage_failing.set(1);
    tracing::error!(error = %error, "outbox cannot write to disk: refusing events, not ready; siphook exits once the disk takes writes again, for its supervisor to restart it (committed events are on disk)");
    let mut probe = tokio::time::interval_at(
        tokio::time::Instant::now() + SPACE_PROBE_EVERY,
        SPACE_PROBE_EVERY,
    );
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            Some(c) = control.recv() => match c {
                // Nothing is routed any more; the reload itself must not hang.
                Control::Route { applied, .. } => {
                    let _ = applied.send(());
                }
                Control::Ping(reply) => {
                    let _ = reply.send(());
                }
            },
            e = rx.recv() => match e {
                Some(event) => {
                    metrics.events_refused.with_label_values(&["storage_error"]).inc();
                    if let Some(suppressed) = errors.allow() {
                        tracing::error!(error = %error, event_id = %event.id, suppressed, "event refused: the outbox cannot write to disk");
                    }
                }
                None => return error,
            },
            _ = probe.tick() => {
                if disk_takes_writes(outbox.path()).await {
                    tracing::error!(error = %error, "the disk takes writes again; exiting so the supervisor restarts siphook on a reopened outbox");
                    return error;
                }
            }
        }
    }
}

/// Whether [`SPACE_PROBE_BYTES`] can be written and synced next to the store.
async fn disk_takes_writes(dir: &std::path::Path) -> bool {
    let file = dir.join(SPACE_PROBE_FILE);
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let written = std::fs::File::create(&file).and_then(|mut f| {
            f.write_all(&vec![0u8; SPACE_PROBE_BYTES])?;
            f.sync_all()
        });
        let _ = std::fs::remove_file(&file);
        written.is_ok()
    })
    .await
    .unwrap_or(false)
}
