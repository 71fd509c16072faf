//! What an attempt's outcome does to its call's queue and to the endpoint: a
//! delivery moves the queue on, a failure waits its turn on the retry schedule,
//! a broker that cannot take anything holds every event without spending its
//! attempts, a 410 pauses the endpoint, and a refusal makes a dead letter.

use std::time::Instant;

use super::{Attempted, BREAKER_THRESHOLD, Dispatcher, MAX_RETRY_AFTER, now_ms};

/// How often an endpoint whose broker stays unavailable for the same reason
/// says so again.
const UNAVAILABLE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
use crate::deliver::control::LastError;
use crate::deliver::transport::{Outcome, Unavailable};
use crate::outbox::DeliveryState;
use crate::vocab::Timestamp;

impl Dispatcher {
    pub(super) fn finish(&mut self, done: Attempted) {
        let name = self.ep.name.clone();
        let Attempted {
            offset,
            call_key,
            received_ms,
            outcome,
            elapsed,
        } = done;
        match &outcome {
            Outcome::Delivered { status: 200 } => self.gauges.delivered_200.inc(),
            _ => self
                .metrics
                .deliveries
                .with_label_values(&[name.as_str(), outcome.label(), &outcome.code()])
                .inc(),
        }
        self.gauges.attempt_duration.observe(elapsed.as_secs_f64());
        if !matches!(outcome, Outcome::Unavailable { .. }) {
            // The peer answered: whatever it refused before, it takes or judges
            // events now.
            self.misconfigured = None;
        }
        let mut state = self.heads.remove(&offset).unwrap_or_default();
        state.attempts += 1;
        match outcome {
            Outcome::Delivered { .. } => {
                let latency = (now_ms() - received_ms).max(0) as f64 / 1000.0;
                self.gauges.latency.observe(latency);
                self.consecutive_failures = 0;
                self.next_probe = None;
                self.misconfigured = None;
                self.unpark();
                self.delivered.push(offset);
                self.notes.delivered(offset);
                self.advance(call_key, offset);
            }
            Outcome::Retry {
                status,
                error,
                retry_after,
            } => {
                self.consecutive_failures += 1;
                if self.consecutive_failures == BREAKER_THRESHOLD {
                    // Open: the first probe waits an interval too.
                    self.next_probe = Some(Instant::now() + self.ep.circuit_probe_interval);
                }
                self.note_error(status, &error);
                if let Some(suppressed) = self.log_limit.allow() {
                    tracing::warn!(endpoint = %name, offset, attempts = state.attempts, ?status, %error, suppressed, "delivery attempt failed; retrying on schedule");
                }
                state.last_status = status;
                state.last_error = Some(error);
                match self.ep.retry_schedule.get(state.attempts as usize).copied() {
                    Some(delay) => {
                        let delay = self
                            .jitter(delay)
                            .max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
                        state.next_at_ms =
                            now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                        self.notes.retrying(offset, &state);
                        if let Err(e) = self.outbox.record_attempt(&name, offset, &state) {
                            tracing::error!(endpoint = %name, offset, error = %e, "cannot record attempt");
                        }
                        self.ready.insert((state.next_at_ms, offset, call_key));
                        self.heads.insert(offset, state);
                    }
                    None => self.give_up(offset, call_key, state, "retry schedule exhausted"),
                }
            }
            Outcome::Unavailable { reason, error } => {
                self.unavailable(offset, call_key, state, reason, error);
            }
            Outcome::Gone => {
                state.last_status = Some(410);
                state.last_error = Some("HTTP 410 Gone".into());
                self.note_error(Some(410), "HTTP 410 Gone");
                state.attempts -= 1; // the event itself was not refused
                tracing::error!(endpoint = %name, "endpoint answered 410 Gone: paused until resumed (POST /v1/endpoints/{{name}}/resume, or siphook endpoints resume while siphook is stopped); events keep queuing");
                self.paused = true;
                if let Err(e) = self.outbox.set_paused(&name, true) {
                    tracing::error!(endpoint = %name, error = %e, "cannot record the pause; it ends with this process");
                }
                self.ready.insert((now_ms(), offset, call_key));
                self.heads.insert(offset, state);
            }
            Outcome::Rejected { status, error } => {
                state.last_status = (status > 0).then_some(status);
                self.note_error(state.last_status, &error);
                state.last_error = Some(error);
                self.give_up(offset, call_key, state, "rejected by the endpoint");
            }
        }
        self.publish_state();
        self.publish_counts();
    }

    /// The broker could not take the event, through no fault of the event: it
    /// keeps its attempts (it never becomes a dead letter this way) and waits a
    /// probe interval, so an outage is bounded only by the outbox's `max_bytes`.
    fn unavailable(
        &mut self,
        offset: u64,
        call_key: u64,
        mut state: DeliveryState,
        reason: Unavailable,
        error: String,
    ) {
        state.attempts = state.attempts.saturating_sub(1);
        self.consecutive_failures += 1;
        if self.consecutive_failures == BREAKER_THRESHOLD {
            self.next_probe = Some(Instant::now() + self.ep.circuit_probe_interval);
        }
        // One line when the reason changes, then one a minute: an outage of an
        // hour is a handful of lines, not one per event or per second.
        let quiet = self
            .unavailable_logged
            .is_some_and(|(r, at)| r == reason && at.elapsed() < UNAVAILABLE_LOG_EVERY);
        if reason.needs_operator() && self.misconfigured != Some(reason) {
            tracing::error!(endpoint = %self.ep.name, reason = reason.as_str(), %error, "the broker refuses this endpoint's events until its configuration is fixed; they wait in the outbox");
            self.unavailable_logged = Some((reason, Instant::now()));
        } else if !quiet {
            tracing::warn!(endpoint = %self.ep.name, reason = reason.as_str(), %error, pending = self.pending.len(), "broker unavailable; events wait in the outbox");
            self.unavailable_logged = Some((reason, Instant::now()));
        }
        self.misconfigured = reason.needs_operator().then_some(reason);
        self.note_error(None, &error);
        state.last_status = None;
        state.last_error = Some(error);
        let delay = self.jitter(self.ep.circuit_probe_interval);
        state.next_at_ms = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
        self.notes.retrying(offset, &state);
        self.ready.insert((state.next_at_ms, offset, call_key));
        self.parked.insert(offset, (state.next_at_ms, call_key));
        self.heads.insert(offset, state);
    }

    /// Between attempts, what the transport knows of its peer: refused
    /// credentials or a missing stream show on an idle endpoint too, and clear
    /// when the transport sees them fixed.
    pub(super) fn check_standing(&mut self) {
        match self.client.standing() {
            Some(Some((reason, error))) if self.misconfigured != Some(reason) => {
                tracing::error!(endpoint = %self.ep.name, reason = reason.as_str(), %error, "the broker refuses this endpoint's events until its configuration is fixed; they wait in the outbox");
                self.misconfigured = Some(reason);
                self.note_error(None, &error);
            }
            Some(None) if self.misconfigured.is_some() => {
                tracing::info!(endpoint = %self.ep.name, "the broker takes this endpoint's events again");
                self.misconfigured = None;
                self.unpark();
            }
            _ => return,
        }
        self.publish_state();
    }

    /// The broker took an event again: what waited only for it is due now.
    pub(super) fn unpark(&mut self) {
        if self.unavailable_logged.take().is_some() {
            tracing::info!(endpoint = %self.ep.name, waiting = self.parked.len(), "the broker takes events again; what waited goes out in per-call order");
        }
        self.unpark_heads();
    }

    fn unpark_heads(&mut self) {
        let now = now_ms();
        for (offset, (at, call_key)) in self.parked.drain() {
            if at > now && self.ready.remove(&(at, offset, call_key)) {
                self.ready.insert((now, offset, call_key));
                if let Some(s) = self.heads.get_mut(&offset) {
                    s.next_at_ms = now;
                }
            }
        }
    }

    fn give_up(&mut self, offset: u64, call_key: u64, state: DeliveryState, why: &str) {
        if let Some(suppressed) = self.log_limit.allow() {
            tracing::warn!(endpoint = %self.ep.name, offset, attempts = state.attempts, last_status = ?state.last_status, last_error = ?state.last_error, suppressed, "dead letter: {why}");
        }
        self.notes.dead(offset, &state);
        if let Err(e) = self.outbox.dead_letter(&self.ep.name, offset, &state) {
            tracing::error!(endpoint = %self.ep.name, offset, error = %e, "cannot record dead letter");
        }
        self.dead += 1;
        self.advance(call_key, offset);
    }

    fn note_error(&mut self, status: Option<u16>, error: &str) {
        self.last_error = Some(LastError {
            at: Timestamp::now(),
            status,
            error: error.to_owned(),
        });
    }
}
