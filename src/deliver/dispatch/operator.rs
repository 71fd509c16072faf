//! What an operator asks of a running dispatcher (status, resume, replay, test
//! delivery) and its orderly stop: kept apart from the delivery loop itself.

use std::time::Duration;

use super::{Dispatcher, now_ms};
use crate::deliver::control::{self, EndpointCommand, EndpointStatus, TestResult};
use crate::outbox::DeliveryState;
use crate::vocab::Timestamp;

impl Dispatcher {
    pub(super) fn status(&self) -> EndpointStatus {
        EndpointStatus {
            name: self.ep.name.clone(),
            state: self.state().as_str(),
            pending: self.pending.len(),
            oldest_pending_seconds: self.oldest_pending_seconds(),
            in_flight: self.in_flight.len(),
            dead_letters: self.dead,
            consecutive_failures: self.consecutive_failures,
            last_error: self.last_error.clone(),
        }
    }

    /// An operator's request (admin API).
    pub(super) fn command(&mut self, c: EndpointCommand) {
        match c {
            EndpointCommand::Status(reply) => {
                let _ = reply.send(self.status());
            }
            EndpointCommand::Resume(reply) => {
                let was = self.paused;
                if was {
                    if let Err(e) = self.outbox.set_paused(&self.ep.name, false) {
                        tracing::error!(endpoint = %self.ep.name, error = %e, "cannot record the resume; the pause returns at the next start");
                    }
                    self.paused = false;
                    self.consecutive_failures = 0;
                    tracing::info!(endpoint = %self.ep.name, "endpoint resumed by the operator");
                    self.publish_state();
                }
                let _ = reply.send(was);
            }
            EndpointCommand::Replay { offsets, reply } => {
                let _ = reply.send(self.replay(offsets));
            }
            EndpointCommand::Test(reply) => {
                let (ep, client) = (self.ep.clone(), self.client.clone());
                tokio::spawn(async move {
                    let now = Timestamp::now();
                    let (id, body) = control::test_event(&ep.name, now);
                    let (outcome, elapsed) = client
                        .attempt(&ep, &id, &body.into(), now.millis() / 1000)
                        .await;
                    let _ = reply.send(TestResult::new(&ep.name, id, &outcome, elapsed));
                });
            }
        }
    }

    /// Dead letters back to pending, queued behind their call's other events.
    fn replay(&mut self, wanted: Vec<u64>) -> Vec<u64> {
        let name = self.ep.name.clone();
        let mut replayed = Vec::new();
        for offset in wanted {
            let now = now_ms();
            match self.outbox.replay(&name, offset, now) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!(endpoint = %name, offset, error = %e, "cannot replay dead letter");
                    continue;
                }
            }
            self.dead = self.dead.saturating_sub(1);
            replayed.push(offset);
            // Pending in the store again: a backlog page not read yet picks it up
            // in offset order, behind its call's older events on that page.
            if self.loading.is_some_and(|(from, _)| offset >= from) {
                continue;
            }
            let pending = DeliveryState {
                next_at_ms: now,
                ..Default::default()
            };
            match self.outbox.event(offset) {
                Ok(Some(ev)) => self.enqueue(offset, ev.call_key, ev.received_ms, pending),
                // The event is gone: nothing left to send.
                Ok(None) => {
                    let _ = self.outbox.delivered(&name, offset);
                }
                // Stays pending in the store; the next start loads it again.
                Err(e) => {
                    tracing::error!(endpoint = %name, offset, error = %e, "cannot read a replayed event; it is sent after the next start");
                }
            }
        }
        if !replayed.is_empty() {
            tracing::info!(endpoint = %name, count = replayed.len(), "dead letters replayed by the operator");
        }
        self.publish_counts();
        replayed
    }

    /// Lets attempts in flight finish, up to `grace`, recording their outcome;
    /// the rest are abandoned and stay pending (sent again, same `webhook-id`).
    pub(super) async fn drain(&mut self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.in_flight.join_next_with_id()).await {
                Ok(Some(done)) => self.joined(done),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(endpoint = %self.ep.name, abandoned = self.in_flight.len(), "shutdown grace over: attempts in flight abandoned; they are sent again after the next start");
                    self.in_flight.abort_all();
                    break;
                }
            }
        }
        self.record_delivered();
        self.publish_counts();
    }
}
