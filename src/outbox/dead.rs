//! Dead letters: deliveries given up on, kept with their event until an operator
//! replays them. They live in the `dead` tree, keyed like `pending`
//! (endpoint NUL offset), so a replay is one move between the two trees.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::Serialize;
use sled::Transactional;

use super::{
    DeliveryState, Outbox, OutboxError, offset_of, pending_key, prefix, read_event, tx_error,
};

/// A dead letter as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Endpoint it was meant for.
    pub endpoint: String,
    /// Outbox offset, the handle for replay.
    pub offset: u64,
    /// The event id.
    pub event_id: String,
    /// The delivery state when it was given up.
    pub state: DeliveryState,
}

impl Outbox {
    /// Gives up on a delivery: it moves to the dead letters, keeping its event.
    pub fn dead_letter(
        &self,
        endpoint: &str,
        offset: u64,
        state: &DeliveryState,
    ) -> Result<(), OutboxError> {
        let s = self.store();
        let key = pending_key(endpoint, offset);
        let state = serde_json::to_vec(state).unwrap_or_default();
        (&s.pending, &s.dead)
            .transaction(|(pending, dead)| {
                dead.insert(key.as_slice(), state.as_slice())?;
                pending.remove(key.as_slice())?;
                Ok(())
            })
            .map_err(|e| tx_error(e, offset))?;
        Ok(())
    }

    /// Dead-letter offsets per endpoint (of one endpoint, if given), from the keys
    /// alone: what replaying "all" needs, without reading a single event.
    pub fn dead_offsets(
        &self,
        endpoint: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<u64>>, OutboxError> {
        let s = self.store();
        let keys = match endpoint {
            Some(e) => s.dead.scan_prefix(prefix(e)).keys(),
            None => s.dead.iter().keys(),
        };
        let mut out: BTreeMap<String, Vec<u64>> = Default::default();
        for k in keys {
            let k = k?;
            let offset = offset_of(&k).ok_or(OutboxError::Corrupt(0))?;
            let name = String::from_utf8_lossy(&k[..k.len().saturating_sub(9)]);
            match out.get_mut(name.as_ref()) {
                Some(v) => v.push(offset),
                None => {
                    out.insert(name.into_owned(), vec![offset]);
                }
            }
        }
        Ok(out)
    }

    /// Number of dead letters of an endpoint (keys only).
    pub fn dead_count(&self, endpoint: &str) -> usize {
        let s = self.store();
        s.dead.scan_prefix(prefix(endpoint)).keys().count()
    }

    /// Dead letters, optionally of one endpoint, in offset order.
    pub fn dead_letters(&self, endpoint: Option<&str>) -> Result<Vec<DeadLetter>, OutboxError> {
        self.dead_letters_page(endpoint, None, usize::MAX)
    }

    /// Up to `limit` dead letters (of one endpoint, or all by endpoint then
    /// offset) after the one named by `after`: the admin API pages through a
    /// backlog that may hold millions without loading it.
    pub fn dead_letters_page(
        &self,
        endpoint: Option<&str>,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, OutboxError> {
        let s = self.store();
        let start = match after {
            Some((e, o)) => Bound::Excluded(pending_key(e, o)),
            None => Bound::Included(endpoint.map(prefix).unwrap_or_default()),
        };
        let want = endpoint.map(prefix);
        let mut out = Vec::new();
        for kv in s.dead.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            if want.as_ref().is_some_and(|p| !k.starts_with(p)) {
                break;
            }
            let offset = offset_of(&k).ok_or(OutboxError::Corrupt(0))?;
            let endpoint = String::from_utf8_lossy(&k[..k.len().saturating_sub(9)]).into_owned();
            let event_id = read_event(&s.events, offset)?
                .map(|e| e.id)
                .unwrap_or_default();
            out.push(DeadLetter {
                endpoint,
                offset,
                event_id,
                state: serde_json::from_slice(&v).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// Moves a dead letter back to pending with a fresh schedule; the next start
    /// delivers it (a running dispatcher does not rescan the store).
    pub fn replay(&self, endpoint: &str, offset: u64, now_ms: i64) -> Result<bool, OutboxError> {
        let s = self.store();
        let key = pending_key(endpoint, offset);
        let state = DeliveryState {
            next_at_ms: now_ms,
            ..DeliveryState::default()
        };
        let state = serde_json::to_vec(&state).unwrap_or_default();
        (&s.dead, &s.pending)
            .transaction(|(dead, pending)| {
                if dead.remove(key.as_slice())?.is_none() {
                    return Ok(false);
                }
                pending.insert(key.as_slice(), state.as_slice())?;
                Ok(true)
            })
            .map_err(|e| tx_error(e, offset))
    }
}
