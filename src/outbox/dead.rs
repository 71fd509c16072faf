//! Dead letters: deliveries given up on, kept with their event until an operator
//! replays them. A dead letter is a state of an event's delivery like pending is,
//! so giving up and replaying are each one record.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{DeliveryState, Outbox, OutboxError, record};

/// A dead letter as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Endpoint it was meant for.
    pub endpoint: String,
    /// Outbox offset, the handle for replay.
    pub offset: u64,
    /// The event id.
    pub event_id: String,
    /// The event's type (`call.completed`).
    pub event_type: String,
    /// siphook's id of the event's call (`call.id`).
    pub call_id: String,
    /// The call's SIP Call-ID.
    pub sip_call_id: String,
    /// The delivery state when it was given up. Shown without the time of a
    /// next attempt: none is scheduled for a dead letter.
    #[serde(serialize_with = "given_up")]
    pub state: DeliveryState,
}

fn given_up<S: serde::Serializer>(s: &DeliveryState, to: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct GivenUp<'a> {
        attempts: u32,
        last_status: Option<u16>,
        last_error: &'a Option<String>,
    }
    GivenUp {
        attempts: s.attempts,
        last_status: s.last_status,
        last_error: &s.last_error,
    }
    .serialize(to)
}

/// The type and call an event's stored JSON names (empty for one that does not
/// parse, which the writer never stores).
fn named(body: &[u8]) -> (String, String, String) {
    #[derive(serde::Deserialize)]
    struct Call {
        id: String,
        sip_call_id: String,
    }
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(rename = "type")]
        kind: String,
        call: Call,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => (b.kind, b.call.id, b.call.sip_call_id),
        Err(_) => Default::default(),
    }
}

impl Outbox {
    /// Gives up on a delivery: it moves to the dead letters, keeping its event.
    pub fn dead_letter(
        &self,
        endpoint: &str,
        offset: u64,
        state: &DeliveryState,
    ) -> Result<(), OutboxError> {
        self.put_state(record::DEAD, endpoint, offset, state)
    }

    /// Dead-letter offsets per endpoint (of one endpoint, if given): what
    /// replaying "all" needs, without reading a single event.
    pub fn dead_offsets(
        &self,
        endpoint: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<u64>>, OutboxError> {
        let i = self.inner();
        Ok(i.index
            .dead
            .iter()
            .filter(|(name, _)| endpoint.is_none_or(|e| e == name.as_str()))
            .map(|(name, m)| (name.clone(), m.keys().copied().collect()))
            .collect())
    }

    /// Number of dead letters of an endpoint.
    pub fn dead_count(&self, endpoint: &str) -> usize {
        self.inner().index.dead.get(endpoint).map_or(0, |m| m.len())
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
        let page: Vec<(String, u64, DeliveryState)> = {
            let i = self.inner();
            let mut page = Vec::new();
            for (name, m) in &i.index.dead {
                if endpoint.is_some_and(|e| e != name.as_str()) {
                    continue;
                }
                let from = match after {
                    Some((e, _)) if e > name.as_str() => continue,
                    Some((e, o)) if e == name.as_str() => o.saturating_add(1),
                    _ => 0,
                };
                for (&o, s) in m.range(from..) {
                    if page.len() >= limit {
                        break;
                    }
                    page.push((name.clone(), o, s.clone()));
                }
                if page.len() >= limit {
                    break;
                }
            }
            page
        };
        let mut out = Vec::with_capacity(page.len());
        for (endpoint, offset, state) in page {
            let (event_id, (event_type, call_id, sip_call_id)) = match self.event(offset)? {
                Some(e) => (e.id, named(&e.body)),
                None => Default::default(),
            };
            out.push(DeadLetter {
                endpoint,
                offset,
                event_id,
                event_type,
                call_id,
                sip_call_id,
                state,
            });
        }
        Ok(out)
    }

    /// Moves a dead letter back to pending with a fresh schedule; the next start
    /// delivers it (a running dispatcher does not rescan the store). Durable with
    /// the next commit.
    pub fn replay(&self, endpoint: &str, offset: u64, now_ms: i64) -> Result<bool, OutboxError> {
        let mut i = self.inner();
        if !i.index.is_dead(endpoint, offset) {
            return Ok(false);
        }
        Self::put(
            &mut i,
            record::REPLAY,
            &record::replay(endpoint, offset, now_ms),
        )?;
        Ok(true)
    }
}
