//! The history task's state: the ring of recent events, what became of each,
//! and the broadcast stream clients subscribe to.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::{
    CallRef, DeliveryRecord, EventRecord, HISTORY_BYTES, HISTORY_EVENTS, NOTES, Note, Outcome,
    Query, STREAM_BUFFER, Search, StreamItem, Subscription,
};
use crate::vocab::Timestamp;

/// One event in the ring.
pub(super) struct Entry {
    pub(super) item: Arc<StreamItem>,
    id: String,
    at_ms: i64,
    /// Read from the body the first time a search needs it.
    call: Option<CallRef>,
    deliveries: Vec<(Arc<str>, Progress)>,
}

#[derive(Default)]
struct Progress {
    delivered_ms: Option<i64>,
    dead: bool,
    attempts: u32,
    status: Option<u16>,
    error: Option<String>,
    next_at_ms: Option<i64>,
}

impl Entry {
    fn call(&mut self) -> &CallRef {
        let body = &self.item.body;
        self.call.get_or_insert_with(|| call_of(body))
    }

    fn record(&mut self) -> EventRecord {
        let call = self.call().clone();
        EventRecord {
            offset: self.item.offset,
            id: self.id.clone(),
            kind: self.item.kind,
            committed_at: Timestamp(self.at_ms),
            call,
            deliveries: self
                .deliveries
                .iter()
                .map(|(endpoint, p)| DeliveryRecord {
                    endpoint: endpoint.to_string(),
                    state: match p {
                        p if p.delivered_ms.is_some() => "delivered",
                        p if p.dead => "dead",
                        p if p.attempts > 0 => "retrying",
                        _ => "pending",
                    },
                    delivered_at: p.delivered_ms.map(Timestamp),
                    attempts: p.attempts,
                    last_status: p.status,
                    last_error: p.error.clone(),
                    next_attempt_at: p
                        .next_at_ms
                        .filter(|_| !p.dead && p.delivered_ms.is_none())
                        .map(Timestamp),
                })
                .collect(),
            body: self.item.body.clone(),
        }
    }

    fn matches(&mut self, s: &Search) -> bool {
        let c = self.call();
        s.call_id.as_ref().is_none_or(|v| *v == c.id)
            && s.sip_call_id.as_ref().is_none_or(|v| *v == c.sip_call_id)
            && s.ani.as_ref().is_none_or(|v| c.ani.as_ref() == Some(v))
            && s.dnis.as_ref().is_none_or(|v| c.dnis.as_ref() == Some(v))
    }
}

/// The call an event's JSON names; empty fields for a body that does not parse
/// (it always does: the writer made it).
fn call_of(body: &[u8]) -> CallRef {
    #[derive(Deserialize)]
    struct Body {
        call: CallRef,
    }
    serde_json::from_slice::<Body>(body)
        .map(|b| b.call)
        .unwrap_or_default()
}

pub(super) struct Ring {
    pub(super) entries: VecDeque<Entry>,
    /// Number of the front entry: entry `n` sits at `n - first`.
    first: u64,
    /// Where each stored offset's entry is.
    offsets: HashMap<u64, u64>,
    bytes: usize,
    /// Offset of the newest event that left the ring: a subscriber asking from
    /// before it has missed something.
    pub(super) forgotten_through: Option<u64>,
    live: broadcast::Sender<Arc<StreamItem>>,
}

impl Ring {
    pub(super) fn new() -> Ring {
        Ring {
            entries: VecDeque::new(),
            first: 0,
            offsets: HashMap::new(),
            bytes: 0,
            forgotten_through: None,
            live: broadcast::channel(STREAM_BUFFER).0,
        }
    }

    fn push(&mut self, entry: Entry) {
        self.bytes += entry.item.body.len();
        // No receiver is not an error: nobody is watching.
        let _ = self.live.send(entry.item.clone());
        if let Some(o) = entry.item.offset {
            self.offsets
                .insert(o, self.first + self.entries.len() as u64);
        }
        self.entries.push_back(entry);
        while self.entries.len() > HISTORY_EVENTS || self.bytes > HISTORY_BYTES {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.first += 1;
            self.bytes -= old.item.body.len();
            if let Some(o) = old.item.offset {
                self.offsets.remove(&o);
                self.forgotten_through = Some(o);
            }
        }
    }

    fn by_offset(&mut self, offset: u64) -> Option<&mut Entry> {
        let n = *self.offsets.get(&offset)?;
        self.entries.get_mut(usize::try_from(n - self.first).ok()?)
    }

    pub(super) fn apply(&mut self, note: Note) {
        match note {
            Note::Committed {
                item,
                id,
                endpoints,
                at_ms,
            } => self.push(Entry {
                item,
                id,
                at_ms,
                call: None,
                deliveries: endpoints
                    .into_iter()
                    .map(|e| (e, Progress::default()))
                    .collect(),
            }),
            Note::Outcome {
                endpoint,
                offset,
                outcome,
                at_ms,
            } => {
                let Some(e) = self.by_offset(offset) else {
                    return;
                };
                let Some((_, p)) = e.deliveries.iter_mut().find(|(n, _)| *n == endpoint) else {
                    return;
                };
                match outcome {
                    Outcome::Delivered => {
                        p.delivered_ms = Some(at_ms);
                        p.dead = false;
                    }
                    Outcome::Retrying {
                        attempts,
                        status,
                        error,
                        next_at_ms,
                    } => {
                        (p.attempts, p.status, p.error) = (attempts, status, error);
                        p.next_at_ms = Some(next_at_ms);
                        // A replayed dead letter that fails again is retrying.
                        p.dead = false;
                    }
                    Outcome::Dead {
                        attempts,
                        status,
                        error,
                    } => {
                        (p.attempts, p.status, p.error) = (attempts, status, error);
                        p.dead = true;
                    }
                }
            }
        }
    }

    /// `dropped_below`: one past the newest offset the index missed (0: none).
    pub(super) fn subscribe(&self, after: Option<u64>, dropped_below: u64) -> Subscription {
        let live = self.live.subscribe();
        let Some(after) = after else {
            return Subscription {
                missed: Vec::new(),
                gap: false,
                live,
            };
        };
        let missed = self
            .entries
            .iter()
            .filter(|e| e.item.offset.is_some_and(|o| o > after))
            .map(|e| e.item.clone())
            .collect();
        Subscription {
            missed,
            gap: self.forgotten_through.is_some_and(|f| f > after)
                || dropped_below.checked_sub(1).is_some_and(|d| d > after),
            live,
        }
    }

    pub(super) fn find(&mut self, search: &Search, limit: usize) -> Vec<EventRecord> {
        if search.is_empty() {
            return self
                .entries
                .iter_mut()
                .rev()
                .take(limit)
                .map(Entry::record)
                .collect();
        }
        self.entries
            .iter_mut()
            .rev()
            .filter_map(|e| e.matches(search).then(|| e.record()))
            .take(limit)
            .collect()
    }
}

pub(super) async fn run(
    mut notes: mpsc::Receiver<Note>,
    mut queries: mpsc::Receiver<Query>,
    forgotten_through: Option<u64>,
    dropped_below: Arc<AtomicU64>,
) {
    let mut ring = Ring::new();
    ring.forgotten_through = forgotten_through;
    loop {
        tokio::select! {
            n = notes.recv() => match n {
                Some(n) => {
                    ring.apply(n);
                    // What else is queued, without a wake-up each.
                    for _ in 0..1024 {
                        match notes.try_recv() {
                            Ok(n) => ring.apply(n),
                            Err(_) => break,
                        }
                    }
                }
                None => return,
            },
            q = queries.recv() => {
                // A question sees every note queued before it (bounded: the
                // queue's capacity).
                for _ in 0..NOTES {
                    match notes.try_recv() {
                        Ok(n) => ring.apply(n),
                        Err(_) => break,
                    }
                }
                match q {
                Some(Query::Subscribe { after, reply }) => {
                    let dropped = dropped_below.load(Ordering::Relaxed);
                    let _ = reply.send(ring.subscribe(after, dropped));
                }
                Some(Query::Find { search, limit, reply }) => {
                    let _ = reply.send(ring.find(&search, limit));
                }
                Some(Query::Get { id, reply }) => {
                    let found = ring.entries.iter_mut().rev().find(|e| e.id == id).map(|e| e.record());
                    let _ = reply.send(found);
                }
                None => return,
                }
            }
        }
    }
}
