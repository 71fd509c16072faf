//! Group commit: events that arrive while a flush runs are written together and
//! made durable by the next single flush, so durability costs one fsync per batch
//! rather than per event, and an idle system flushes at once without a timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{Compactor, Outbox, OutboxError, Verdict, call_key};
use crate::call::Event;
use crate::config::EndpointConfig;
use crate::metrics::{Metrics, RateLog};
use crate::vocab::Timestamp;

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
    mut compactor: Compactor,
    metrics: Metrics,
) -> Result<(), OutboxError> {
    let mut batch: Vec<Event> = Vec::with_capacity(64);
    let mut stored: Vec<Stored> = Vec::with_capacity(64);
    let mut errors = RateLog::new(Duration::from_secs(10));
    let mut size = outbox.size_on_disk();
    metrics
        .outbox_max_bytes
        .set(i64::try_from(outbox.max_bytes()).unwrap_or(i64::MAX));
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
                // An idle store is compacted too: a backlog that drained at night
                // leaves its garbage with no batch to follow.
                size = match compact(&outbox, &mut compactor, &metrics, size).await {
                    Ok(size) => size,
                    Err(e) => {
                        let e = broken(&outbox, &metrics, e, &mut rx, &mut control, &mut errors);
                        return Err(e.await);
                    }
                };
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
        // Between batches, with everything so far committed: a compaction copies
        // only durable data, and no commit of the writer's can race its switch.
        size = match compact(&outbox, &mut compactor, &metrics, size).await {
            Ok(size) => size,
            Err(e) => {
                let e = broken(&outbox, &metrics, e, &mut rx, &mut control, &mut errors);
                return Err(e.await);
            }
        };
    }
    Ok(())
}

/// Runs a compaction check, if one is due, on a blocking thread, so the runtime
/// goes on taking SIP traffic into its queues meanwhile; returns the size on
/// disk after, or the error after which the store must take no more events.
async fn compact(
    outbox: &Arc<Outbox>,
    compactor: &mut Compactor,
    metrics: &Metrics,
    size: u64,
) -> Result<u64, OutboxError> {
    if !compactor.due(size) {
        return Ok(size);
    }
    let (store, policy) = (outbox.clone(), compactor.clone());
    let verdict = tokio::task::spawn_blocking(move || policy.check(&store))
        .await
        .unwrap_or_else(|e| Err(OutboxError::Layout(format!("compaction task failed: {e}"))));
    compactor.checked(size, &verdict);
    match &verdict {
        Ok(Verdict::Done(c)) => {
            tracing::info!(
                before = c.before,
                after = c.after,
                live = c.live,
                paused_ms = c.took.as_millis() as u64,
                "outbox compacted"
            );
            metrics
                .outbox_compaction_duration
                .observe(c.took.as_secs_f64());
        }
        Ok(Verdict::TooMuchLive { live }) => {
            tracing::warn!(
                size,
                live,
                "outbox is mostly garbage but holds too much live data to compact while running; it is compacted at the next start"
            )
        }
        Ok(v) => tracing::debug!(size, verdict = ?v, "outbox compaction not worth it"),
        // Reported by the writer, which stops taking events.
        Err(OutboxError::Unsynced(_)) => {}
        Err(e) => {
            tracing::error!(error = %e, "outbox compaction failed; the store is unchanged")
        }
    }
    let label = match &verdict {
        Ok(v) => v.label(),
        Err(_) => Some("failed"),
    };
    if let Some(label) = label {
        metrics.outbox_compactions.with_label_values(&[label]).inc();
    }
    if let Err(e @ OutboxError::Unsynced(_)) = verdict {
        return Err(e);
    }
    let size = outbox.size_on_disk();
    metrics
        .outbox_size_bytes
        .set(i64::try_from(size).unwrap_or(i64::MAX));
    Ok(size)
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

/// One flush (fsync), timed. Not retried: sled keeps the first I/O error and
/// returns it from every later call until the store is reopened.
async fn commit(outbox: &Outbox, metrics: &Metrics) -> Result<(), OutboxError> {
    let started = Instant::now();
    outbox.commit().await?;
    metrics
        .outbox_commit_duration
        .observe(started.elapsed().as_secs_f64());
    Ok(())
}

/// How often a failed store checks whether the disk takes writes again.
const SPACE_PROBE_EVERY: Duration = Duration::from_secs(1);
/// What the probe must be able to write: room for sled to reopen and recover
/// (it writes in 512 KiB segments), so a restart does not fail at once again.
const SPACE_PROBE_BYTES: usize = 1 << 20;
/// The probe's file, next to sled's own files (sled ignores names it does not know).
const SPACE_PROBE_FILE: &str = ".siphook-space-probe";

/// The store failed a write (disk full, I/O error) and sled will fail every later
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
