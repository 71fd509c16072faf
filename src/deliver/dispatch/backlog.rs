//! The backlog a dispatcher finds at start: read a page at a time between
//! deliveries, so a restart with millions of pending events starts sending at
//! once, while each call's order holds (what the writer commits meanwhile waits).

use super::Dispatcher;

/// Backlog entries read per turn of the dispatcher: a restart with a million
/// pending events starts delivering after one page, not after reading them all.
const LOAD_PAGE: usize = 4096;

impl Dispatcher {
    /// Rebuilds the queues from the outbox after a start.
    pub(super) fn load(&mut self) -> Result<(), crate::outbox::OutboxError> {
        self.dead = self.outbox.dead_count(&self.ep.name);
        self.paused = self.outbox.is_paused(&self.ep.name);
        if self.paused {
            tracing::warn!(endpoint = %self.ep.name, "endpoint paused after 410 Gone; resume it while siphook runs with the admin API's POST /v1/endpoints/{}/resume (`siphook endpoints resume` works only while siphook is stopped: the outbox is locked)", self.ep.name);
        }
        // Only what is committed: later events reach this dispatcher from the
        // writer, after their commit.
        let durable = self.outbox.durable_below();
        self.loaded_through = durable.checked_sub(1);
        self.loading = (durable > 0).then_some((0, durable));
        self.publish_state();
        Ok(())
    }

    /// Reads the next page of the backlog into the queues.
    pub(super) fn load_page(&mut self) -> Result<(), crate::outbox::OutboxError> {
        let Some((from, end)) = self.loading else {
            return Ok(());
        };
        let page = self.outbox.pending_page(&self.ep.name, from, LOAD_PAGE)?;
        let full = page.len() == LOAD_PAGE;
        let mut next = end;
        for (offset, state) in page {
            if offset >= end {
                break;
            }
            next = offset + 1;
            match self.outbox.event_key(offset)? {
                Some((call_key, received_ms)) => {
                    self.enqueue_quietly(offset, call_key, received_ms, state)
                }
                // The event is gone (a crash between its removal and this entry's):
                // nothing left to send.
                None => self.outbox.delivered(&self.ep.name, offset)?,
            }
        }
        if full && next < end {
            self.loading = Some((next, end));
        } else {
            self.finish_loading();
        }
        self.publish_counts();
        Ok(())
    }

    /// The backlog is read (or cannot be): what the writer announced meanwhile
    /// joins the queues, behind it.
    pub(super) fn finish_loading(&mut self) {
        self.loading = None;
        for c in std::mem::take(&mut self.held) {
            self.committed(c);
        }
    }
}
