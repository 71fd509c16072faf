//! The dispatcher of one endpoint: per-call ordering, concurrency across calls,
//! the retry schedule, the circuit breaker, 410 pausing and dead letters.
//!
//! For one call, event N+1 is not attempted until N succeeded or was dead-lettered;
//! different calls proceed concurrently up to `max_in_flight`, so a slow call never
//! blocks the others. All state that must survive a restart lives in the outbox.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::control::{EndpointCommand, LastError};
use super::history::EndpointNotes;
use super::transport::{Outcome, Transport, Unavailable};
use crate::config::EndpointConfig;
use crate::metrics::Metrics;
use crate::outbox::writer::{Committed, Fresh};
use crate::outbox::{DeliveryState, Outbox};
use crate::vocab::Timestamp;

/// Bytes of event bodies a dispatcher keeps from the writer's announcements for
/// its queued events; past it (an endpoint that is down and a growing queue) the
/// rest are read from the store when their turn comes.
const FRESH_BYTES: usize = 8 << 20;

/// Consecutive failures that open the circuit.
const BREAKER_THRESHOLD: u32 = 10;
/// The most a `Retry-After` may push an attempt out.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The endpoint's state, as `/v1/endpoints` and `siphook_endpoint_state` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// Sending normally.
    Healthy,
    /// Too many consecutive failures: probing once per interval.
    CircuitOpen,
    /// The broker refuses for a reason only an operator can fix (credentials,
    /// no stream for the subject): events wait, and `/readyz` says so.
    Misconfigured,
    /// A 410 Gone: nothing is sent until an operator resumes the endpoint.
    Paused,
}

impl EndpointState {
    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Healthy => "healthy",
            EndpointState::CircuitOpen => "circuit_open",
            EndpointState::Misconfigured => "misconfigured",
            EndpointState::Paused => "paused",
        }
    }
}

struct Attempted {
    offset: u64,
    call_key: u64,
    received_ms: i64,
    outcome: Outcome,
    elapsed: Duration,
}

mod backlog;
mod gauges;
mod operator;
mod outcome;

pub use gauges::STATE_LABELS;
use gauges::{Gauges, STATES};

/// A dispatcher with its pending deliveries loaded. Load every endpoint before the
/// outbox writer routes events to it: a scan racing the writer could see unflushed
/// events.
pub fn prepare(
    ep: EndpointConfig,
    client: Transport,
    outbox: Arc<Outbox>,
    metrics: Metrics,
    notes: EndpointNotes,
) -> Result<Dispatcher, crate::outbox::OutboxError> {
    let mut d = Dispatcher::new(Arc::new(ep), client, outbox, metrics, notes);
    d.load()?;
    // The first page now, so a small backlog is whole before anything runs; a
    // large one goes on between deliveries (see `run`).
    d.load_page()?;
    Ok(d)
}

/// Announcements taken at once while a backlog loads.
const HELD_PER_TURN: usize = 4096;

/// How often the oldest-pending gauge is refreshed: it ages while nothing happens.
const AGE_TICK: Duration = Duration::from_secs(1);

/// Runs a prepared dispatcher until `shutdown`, then gives attempts in flight up
/// to `grace` to finish; what does not finish stays pending for the next start.
pub async fn run(
    mut d: Dispatcher,
    mut rx: mpsc::UnboundedReceiver<Committed>,
    mut commands: mpsc::Receiver<EndpointCommand>,
    shutdown: CancellationToken,
    grace: tokio::sync::watch::Receiver<Duration>,
) {
    let mut tick = tokio::time::interval(AGE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if d.loading.is_some()
            && let Err(e) = d.load_page()
        {
            // What is not loaded stays pending in the store for the next start.
            tracing::error!(endpoint = %d.ep.name, error = %e, "cannot read the rest of the backlog");
            d.finish_loading();
        }
        d.dispatch_due();
        // While the backlog loads, the loop comes round again at once.
        let wake = if d.loading.is_some() {
            Some(Duration::ZERO)
        } else {
            d.next_wake()
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            c = rx.recv() => match c {
                Some(c) => {
                    d.committed(c);
                    // While a backlog loads, announcements only wait: take what
                    // is queued now, so their bodies do not sit in the channel.
                    for _ in 0..HELD_PER_TURN {
                        if d.loading.is_none() {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(c) => d.committed(c),
                            Err(_) => break,
                        }
                    }
                }
                None => break,
            },
            Some(c) = commands.recv() => d.command(c),
            Some(done) = d.in_flight.join_next_with_id(), if !d.in_flight.is_empty() => {
                d.joined(done);
                // Whatever else finished meanwhile is recorded in the same
                // transaction.
                while let Some(more) = d.in_flight.try_join_next_with_id() {
                    d.joined(more);
                }
                d.record_delivered();
            }
            _ = tick.tick() => {
                d.publish_counts();
                d.check_standing();
            }
            _ = tokio::time::sleep(wake.unwrap_or(Duration::from_secs(3600))), if wake.is_some() => {}
        }
    }
    let grace = *grace.borrow();
    d.drain(grace).await;
}

/// One endpoint's delivery state (see the module docs).
pub struct Dispatcher {
    ep: Arc<EndpointConfig>,
    client: Transport,
    outbox: Arc<Outbox>,
    metrics: Metrics,
    /// Per call, its pending offsets in order; the head is the only one that may run.
    queues: HashMap<u64, VecDeque<u64>>,
    /// Delivery state of each queue head.
    heads: HashMap<u64, DeliveryState>,
    /// Heads waiting for their time: (next attempt, offset, call key).
    ready: BTreeSet<(i64, u64, u64)>,
    in_flight: JoinSet<Attempted>,
    /// What each running attempt is for, so a task that fails can be accounted.
    attempts: HashMap<tokio::task::Id, (u64, u64, i64)>,
    /// Every queued offset with its SIP receive time: the pending count, the
    /// oldest pending age, and a guard against queuing one delivery twice.
    pending: BTreeMap<u64, i64>,
    /// Offsets up to this one were committed when the backlog was loaded, and
    /// loaded if pending; the writer's announcements of them (possible across a
    /// reload) are already queued.
    loaded_through: Option<u64>,
    /// The backlog still being read: the next offset to read from, and the first
    /// offset not in the backlog.
    pub(super) loading: Option<(u64, u64)>,
    /// Events the writer announced while the backlog loads: they are queued after
    /// it, so a call's new event never overtakes its older ones still unread.
    held: Vec<Committed>,
    /// Queued events' bodies as the writer announced them (see [`FRESH_BYTES`]).
    fresh: HashMap<u64, Arc<Fresh>>,
    fresh_bytes: usize,
    gauges: Gauges,
    /// The state `siphook_endpoint_state` shows, so it is set only on a change.
    shown_state: Option<EndpointState>,
    last_error: Option<LastError>,
    /// Delivered, not yet recorded in the store (see `record_delivered`).
    delivered: Vec<u64>,
    /// One per-event warning a second: an endpoint refusing everything must not
    /// write a log line per event.
    log_limit: crate::metrics::RateLog,
    dead: usize,
    consecutive_failures: u32,
    next_probe: Option<Instant>,
    paused: bool,
    /// Set by a broker's refusal only an operator can fix; cleared by the next
    /// delivery.
    misconfigured: Option<Unavailable>,
    /// Heads waiting only because the broker was unavailable, with when they
    /// were due: the first delivery after it returns makes them due at once.
    parked: HashMap<u64, (i64, u64)>,
    /// The unavailability last logged, and when (see `outcome.rs`).
    unavailable_logged: Option<(Unavailable, Instant)>,
    rng: u64,
    /// Outcomes for the recent-history index.
    notes: EndpointNotes,
}

fn now_ms() -> i64 {
    Timestamp::now().millis()
}

impl Dispatcher {
    fn new(
        ep: Arc<EndpointConfig>,
        client: Transport,
        outbox: Arc<Outbox>,
        metrics: Metrics,
        notes: EndpointNotes,
    ) -> Dispatcher {
        let seed = u64::try_from(now_ms()).unwrap_or(1) ^ 0x9e37_79b9_7f4a_7c15;
        let gauges = Gauges::of(&metrics, &ep.name);
        let mut d = Dispatcher {
            ep,
            client,
            outbox,
            metrics,
            queues: HashMap::new(),
            heads: HashMap::new(),
            ready: BTreeSet::new(),
            in_flight: JoinSet::new(),
            attempts: HashMap::new(),
            pending: BTreeMap::new(),
            loaded_through: None,
            loading: None,
            held: Vec::new(),
            fresh: HashMap::new(),
            fresh_bytes: 0,
            gauges,
            shown_state: None,
            last_error: None,
            delivered: Vec::new(),
            log_limit: crate::metrics::RateLog::new(Duration::from_secs(1)),
            dead: 0,
            consecutive_failures: 0,
            next_probe: None,
            paused: false,
            misconfigured: None,
            parked: HashMap::new(),
            unavailable_logged: None,
            rng: seed | 1,
            notes,
        };
        d.publish_state();
        d
    }

    /// A newly committed event from the writer.
    fn committed(&mut self, mut c: Committed) {
        if self.loaded_through.is_some_and(|l| c.offset <= l) {
            return;
        }
        if self.loading.is_some() {
            // A long backlog may hold many: only their places are kept.
            c.fresh = None;
            self.held.push(c);
            return;
        }
        let state = DeliveryState {
            next_at_ms: now_ms(),
            ..Default::default()
        };
        if let Some(f) = c.fresh
            && self.fresh_bytes + f.body.len() <= FRESH_BYTES
            && !self.pending.contains_key(&c.offset)
        {
            self.fresh_bytes += f.body.len();
            self.fresh.insert(c.offset, f);
        }
        self.enqueue(c.offset, c.call_key, c.received_ms, state);
    }

    fn enqueue(&mut self, offset: u64, call_key: u64, received_ms: i64, state: DeliveryState) {
        self.enqueue_quietly(offset, call_key, received_ms, state);
        self.publish_counts();
    }

    /// `enqueue` without refreshing the gauges (a backlog page does it once).
    fn enqueue_quietly(
        &mut self,
        offset: u64,
        call_key: u64,
        received_ms: i64,
        state: DeliveryState,
    ) {
        if self.pending.insert(offset, received_ms).is_some() {
            return; // already queued: a delivery must never run twice at once
        }
        let q = self.queues.entry(call_key).or_default();
        q.push_back(offset);
        if q.len() == 1 {
            let at = self.due_at(&state);
            self.ready.insert((at, offset, call_key));
            self.heads.insert(offset, state);
        }
        // A queued event that is not the head waits; its stored state is read
        // again when it becomes one.
    }

    fn state(&self) -> EndpointState {
        if self.paused {
            EndpointState::Paused
        } else if self.misconfigured.is_some() {
            EndpointState::Misconfigured
        } else if self.breaker_open() {
            EndpointState::CircuitOpen
        } else {
            EndpointState::Healthy
        }
    }

    /// Too many failures in a row: one probe at a time, once per interval.
    fn breaker_open(&self) -> bool {
        self.consecutive_failures >= BREAKER_THRESHOLD
    }

    fn publish_state(&mut self) {
        let current = self.state();
        if self.shown_state == Some(current) {
            return;
        }
        self.shown_state = Some(current);
        for (s, gauge) in STATES.iter().zip(&self.gauges.state) {
            gauge.set(i64::from(*s == current));
        }
    }

    /// Seconds the oldest pending event has waited since its SIP message.
    fn oldest_pending_seconds(&self) -> Option<f64> {
        let (_, &received_ms) = self.pending.first_key_value()?;
        Some((now_ms() - received_ms).max(0) as f64 / 1000.0)
    }

    fn publish_counts(&self) {
        let g = &self.gauges;
        g.pending
            .set(i64::try_from(self.pending.len()).unwrap_or(i64::MAX));
        g.oldest_pending
            .set(self.oldest_pending_seconds().unwrap_or(0.0));
        g.dead.set(i64::try_from(self.dead).unwrap_or(i64::MAX));
    }

    /// Starts every due head the limits allow.
    fn dispatch_due(&mut self) {
        if self.paused {
            return;
        }
        let now = now_ms();
        while self.in_flight.len() < self.ep.max_in_flight {
            let Some(&(at, offset, call_key)) = self.ready.first() else {
                return;
            };
            if at > now {
                return;
            }
            if self.breaker_open() {
                // One probe at a time, once per interval.
                let due = self.next_probe.is_none_or(|t| Instant::now() >= t);
                if !due || !self.in_flight.is_empty() {
                    return;
                }
                self.next_probe = Some(Instant::now() + self.ep.circuit_probe_interval);
            }
            self.ready.pop_first();
            self.start(offset, call_key);
        }
    }

    fn start(&mut self, offset: u64, call_key: u64) {
        let received_ms = self.pending.get(&offset).copied();
        let stored = match (self.fresh.get(&offset), received_ms) {
            (Some(f), Some(received_ms)) => Ok(Some((f.clone(), received_ms))),
            _ => self.outbox.event(offset).map(|e| {
                e.map(|e| {
                    let fresh = Fresh {
                        id: e.id,
                        body: e.body,
                    };
                    (Arc::new(fresh), e.received_ms)
                })
            }),
        };
        let (event, received_ms) = match stored {
            Ok(Some(e)) => e,
            Ok(None) => {
                tracing::warn!(endpoint = %self.ep.name, offset, "pending delivery without its event; dropping the entry");
                let _ = self.outbox.delivered(&self.ep.name, offset);
                self.advance(call_key, offset);
                return;
            }
            Err(e) => {
                tracing::error!(endpoint = %self.ep.name, offset, error = %e, "cannot read event; retrying later");
                self.ready.insert((now_ms() + 1000, offset, call_key));
                return;
            }
        };
        let (ep, client) = (self.ep.clone(), self.client.clone());
        let task = self.in_flight.spawn(async move {
            let unix = Timestamp::now().millis() / 1000;
            let (outcome, elapsed) = client.attempt(&ep, &event.id, &event.body, unix).await;
            Attempted {
                offset,
                call_key,
                received_ms,
                outcome,
                elapsed,
            }
        });
        self.attempts
            .insert(task.id(), (offset, call_key, received_ms));
    }

    /// An attempt task ended. One that panicked still counts as a failed attempt,
    /// or its call's queue would never move again.
    fn joined(&mut self, done: Result<(tokio::task::Id, Attempted), tokio::task::JoinError>) {
        match done {
            Ok((id, done)) => {
                self.attempts.remove(&id);
                self.finish(done);
            }
            Err(e) => {
                let Some((offset, call_key, received_ms)) = self.attempts.remove(&e.id()) else {
                    return;
                };
                tracing::error!(endpoint = %self.ep.name, offset, "delivery attempt task failed: {e}");
                self.finish(Attempted {
                    offset,
                    call_key,
                    received_ms,
                    outcome: Outcome::Retry {
                        status: None,
                        error: "attempt task failed".into(),
                        retry_after: None,
                    },
                    elapsed: Duration::ZERO,
                });
            }
        }
    }

    /// When the dispatcher next has something to do (a due head or probe).
    fn next_wake(&self) -> Option<Duration> {
        if self.paused || self.in_flight.len() >= self.ep.max_in_flight {
            return None;
        }
        if self.breaker_open() && !self.in_flight.is_empty() {
            return None; // the probe's answer, not a timer, decides what happens next
        }
        let &(at, _, _) = self.ready.first()?;
        let mut wait = Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0));
        if self.breaker_open()
            && let Some(t) = self.next_probe
        {
            wait = wait.max(t.saturating_duration_since(Instant::now()));
        }
        Some(wait)
    }

    /// Records every delivery finished since the last call, in one transaction.
    /// Until then a crash re-sends them (same `webhook-id`), as it would have
    /// before their record reached the disk anyway.
    fn record_delivered(&mut self) {
        if self.delivered.is_empty() {
            return;
        }
        if let Err(e) = self.outbox.delivered_many(&self.ep.name, &self.delivered) {
            tracing::error!(endpoint = %self.ep.name, count = self.delivered.len(), error = %e, "cannot record deliveries; they are sent again after a restart");
        }
        self.delivered.clear();
    }

    /// The head is done (delivered or dead): the call's next event may go.
    fn advance(&mut self, call_key: u64, offset: u64) {
        self.pending.remove(&offset);
        self.parked.remove(&offset);
        if let Some(f) = self.fresh.remove(&offset) {
            self.fresh_bytes -= f.body.len();
        }
        let Some(q) = self.queues.get_mut(&call_key) else {
            return;
        };
        if q.front() == Some(&offset) {
            q.pop_front();
        }
        match q.front().copied() {
            Some(next) => {
                let state = self
                    .outbox
                    .pending_state(&self.ep.name, next)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let at = self.due_at(&state);
                self.ready.insert((at, next, call_key));
                self.heads.insert(next, state);
            }
            None => {
                self.queues.remove(&call_key);
            }
        }
    }

    /// When a delivery may next be tried: a never-tried one waits the schedule's
    /// first delay after its commit, a retried one until the time it recorded.
    fn due_at(&self, state: &DeliveryState) -> i64 {
        if state.attempts > 0 {
            return state.next_at_ms;
        }
        let first = self.ep.retry_schedule.first().copied().unwrap_or_default();
        state.next_at_ms + i64::try_from(first.as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// ±20% so retries of many events do not arrive in lockstep.
    fn jitter(&mut self, d: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let factor = 0.8 + (self.rng % 4001) as f64 / 10_000.0;
        d.mul_f64(factor)
    }
}
