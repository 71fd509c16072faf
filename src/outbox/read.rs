//! Reading the store: events (their bodies read back from the log without
//! holding the lock), pending deliveries a page at a time, live calls.

use super::log::{self, Position};
use super::record;
use super::{DeliveryState, Outbox, OutboxError, StoredEvent};
use crate::call::CallSnapshot;

impl Outbox {
    /// Calls that were live when the process last stopped.
    pub fn active_calls(&self) -> Result<Vec<CallSnapshot>, OutboxError> {
        let places: Vec<Position> = {
            let i = self.inner();
            let mut p: Vec<Position> = i.index.calls.values().map(|c| c.pos).collect();
            p.sort_unstable();
            p
        };
        let mut out = Vec::with_capacity(places.len());
        for pos in places {
            let Some((record::CALL, payload)) = self.read(pos)? else {
                continue;
            };
            let mut c = record::Cursor(&payload);
            if c.str16().is_none() {
                continue;
            }
            match serde_json::from_slice(c.rest()) {
                Ok(s) => out.push(s),
                Err(e) => tracing::warn!(error = %e, "skipping unreadable call snapshot"),
            }
        }
        Ok(out)
    }

    /// Reads a record back; from disk without holding the lock during the read.
    fn read(&self, pos: Position) -> Result<Option<(u8, Vec<u8>)>, OutboxError> {
        let reader = {
            let i = self.inner();
            if let Some(r) = i.log.unwritten(pos) {
                return Ok(Some(r));
            }
            i.log.reader(pos.segment)
        };
        match reader {
            Some(r) => Ok(log::read_at(&r, pos.at)?),
            None => Ok(None),
        }
    }

    /// Reads an event.
    pub fn event(&self, offset: u64) -> Result<Option<StoredEvent>, OutboxError> {
        // Twice at most: a carry may move the record between finding and reading it.
        let mut moved_from = None;
        loop {
            let Some(pos) = self.inner().index.events.get(&offset).map(|e| e.pos) else {
                return Ok(None);
            };
            let payload = match self.read(pos)? {
                Some((record::EVENT, payload)) => payload,
                _ if moved_from.is_none() => {
                    moved_from = Some(pos);
                    continue;
                }
                _ => return Err(OutboxError::Corrupt(offset)),
            };
            let r = record::decode_event(&payload).ok_or(OutboxError::Corrupt(offset))?;
            let (head, id, body_at) = (r.head, r.id.to_owned(), payload.len() - r.body.len());
            // The body is the record's tail: shared, not copied again.
            let body = bytes::Bytes::from(payload).slice(body_at..);
            return Ok(Some(StoredEvent {
                offset,
                call_key: head.call_key,
                sequence: head.sequence,
                received_ms: head.received_ms,
                id,
                body,
            }));
        }
    }

    /// Every pending delivery of an endpoint, in offset order.
    pub fn pending(&self, endpoint: &str) -> Result<Vec<(u64, DeliveryState)>, OutboxError> {
        self.pending_page(endpoint, 0, usize::MAX)
    }

    /// Up to `limit` pending deliveries of an endpoint from offset `from` on, in
    /// offset order: a large backlog is handed over a page at a time, so delivery
    /// can start before all of it is queued.
    pub fn pending_page(
        &self,
        endpoint: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, DeliveryState)>, OutboxError> {
        let i = self.inner();
        Ok(i.index.pending.get(endpoint).map_or_else(Vec::new, |m| {
            m.range(from..)
                .take(limit)
                .map(|(&o, s)| (o, s.clone()))
                .collect()
        }))
    }

    /// What a dispatcher needs of an event to queue it, `(call key, received ms)`,
    /// without reading its body.
    pub fn event_key(&self, offset: u64) -> Result<Option<(u64, i64)>, OutboxError> {
        let i = self.inner();
        Ok(i.index
            .events
            .get(&offset)
            .map(|e| (e.call_key, e.received_ms)))
    }

    /// The endpoint names with pending deliveries.
    pub fn pending_endpoints(&self) -> Result<Vec<String>, OutboxError> {
        Ok(self.inner().index.pending.keys().cloned().collect())
    }

    /// The state of one pending delivery.
    pub fn pending_state(
        &self,
        endpoint: &str,
        offset: u64,
    ) -> Result<Option<DeliveryState>, OutboxError> {
        let i = self.inner();
        Ok(i.index
            .pending
            .get(endpoint)
            .and_then(|m| m.get(&offset))
            .cloned())
    }

    /// Number of pending deliveries of an endpoint.
    pub fn pending_count(&self, endpoint: &str) -> usize {
        self.inner()
            .index
            .pending
            .get(endpoint)
            .map_or(0, |m| m.len())
    }
}
