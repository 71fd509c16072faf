//! The recent-history index and the live event stream: what answers "did the CRM
//! get the event for that call, and if not, why?" after the outbox has forgotten
//! a delivered event.
//!
//! One task owns a bounded ring of the latest events (their stored bytes, and per
//! endpoint what became of them) and the broadcast that feeds stream clients. The
//! writer and the dispatchers hand it small notes on a bounded queue and never
//! wait: a full queue costs the index a note (counted in
//! `siphook_history_dropped_total`), never a delivery. The admin API asks it
//! questions through a second queue, as it asks the tracker.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::metrics::Metrics;
use crate::outbox::writer::{Announced, Tap};
use crate::vocab::Timestamp;

/// Events the ring holds at most.
pub const HISTORY_EVENTS: usize = 10_000;
/// Bytes of event bodies the ring holds at most (about 10,000 events of 1–3 KB).
pub const HISTORY_BYTES: usize = 32 << 20;
/// Events a stream client may fall behind before it is cut off: the broadcast's
/// ring, shared by every client, so the bound per client costs nothing per client.
pub const STREAM_BUFFER: usize = 4096;
/// Notes waiting for the history task. Past it notes are dropped and counted.
/// Each may hold an event's body (shared with the writer, so a few MiB at most).
const NOTES: usize = 8192;
/// Questions waiting (the admin listener's, a handful at a time).
const QUERIES: usize = 64;

/// One event as a stream client gets it.
#[derive(Debug)]
pub struct StreamItem {
    /// Outbox offset, the SSE `id`; `None` for an event no endpoint wanted
    /// (it is not stored, so a reconnect cannot ask for it again).
    pub offset: Option<u64>,
    /// Event type, the SSE `event`.
    pub kind: &'static str,
    /// The event's stored JSON, the SSE `data`.
    pub body: Bytes,
}

/// What became of a delivery, as a dispatcher reports it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The endpoint answered 2xx.
    Delivered,
    /// An attempt failed; another is scheduled at `next_at_ms`.
    Retrying {
        /// Attempts so far.
        attempts: u32,
        /// HTTP status of the last attempt, if it got one.
        status: Option<u16>,
        /// Why it failed (never a secret).
        error: Option<String>,
        /// When the next attempt is due (ms since the epoch).
        next_at_ms: i64,
    },
    /// Given up: a dead letter.
    Dead {
        /// Attempts made.
        attempts: u32,
        /// HTTP status of the last attempt, if it got one.
        status: Option<u16>,
        /// Why it failed.
        error: Option<String>,
    },
}

enum Note {
    Committed {
        item: Arc<StreamItem>,
        id: String,
        endpoints: Vec<Arc<str>>,
        at_ms: i64,
    },
    Outcome {
        endpoint: Arc<str>,
        offset: u64,
        outcome: Outcome,
        at_ms: i64,
    },
}

/// Which events a search wants: every field given must match exactly.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Search {
    /// siphook's call id (`call_…`).
    pub call_id: Option<String>,
    /// The SIP Call-ID.
    pub sip_call_id: Option<String>,
    /// The caller's number.
    pub ani: Option<String>,
    /// The called number.
    pub dnis: Option<String>,
}

impl Search {
    fn is_empty(&self) -> bool {
        self.call_id.is_none()
            && self.sip_call_id.is_none()
            && self.ani.is_none()
            && self.dnis.is_none()
    }
}

/// An event in the index, with what became of it per endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    /// Outbox offset (`null` for an event no endpoint wanted).
    pub offset: Option<u64>,
    /// The event id (`webhook-id`).
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When it was committed.
    pub committed_at: Timestamp,
    /// Its call, as the event names it.
    pub call: CallRef,
    /// One per endpoint it was for.
    pub deliveries: Vec<DeliveryRecord>,
    /// The stored JSON (the bytes signed for an endpoint without redaction).
    #[serde(skip)]
    pub body: Bytes,
}

/// Which call an event is of.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallRef {
    /// siphook's call id.
    pub id: String,
    /// The SIP Call-ID.
    pub sip_call_id: String,
    /// Caller's number.
    pub ani: Option<String>,
    /// Called number.
    pub dnis: Option<String>,
}

/// Where one event stands with one endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    /// Endpoint name.
    pub endpoint: String,
    /// `pending`, `retrying`, `delivered` or `dead`.
    pub state: &'static str,
    /// When the endpoint acknowledged it.
    pub delivered_at: Option<Timestamp>,
    /// Failed attempts recorded (a delivered event's successful one not counted).
    pub attempts: u32,
    /// HTTP status of the last failed attempt.
    pub last_status: Option<u16>,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
    /// When the next attempt is due, while retrying (never for a dead letter).
    pub next_attempt_at: Option<Timestamp>,
}

enum Query {
    Subscribe {
        after: Option<u64>,
        reply: oneshot::Sender<Subscription>,
    },
    Find {
        search: Search,
        limit: usize,
        reply: oneshot::Sender<Vec<EventRecord>>,
    },
    Get {
        id: String,
        reply: oneshot::Sender<Option<EventRecord>>,
    },
}

/// A stream client's start: what it missed, then the live events, with no gap
/// and no repeat between the two (both taken by the history task at once).
pub struct Subscription {
    /// Events after the client's `Last-Event-ID` still in the index, oldest first.
    pub missed: Vec<Arc<StreamItem>>,
    /// Some events after `Last-Event-ID` are no longer held: the client lost them.
    pub gap: bool,
    /// Everything committed from now on.
    pub live: broadcast::Receiver<Arc<StreamItem>>,
}

/// A handle on the history task: cheap to clone, never waits when noting.
#[derive(Clone)]
pub struct History {
    notes: mpsc::Sender<Note>,
    queries: mpsc::Sender<Query>,
    dropped: prometheus::IntCounter,
    /// One past the newest offset whose note was dropped (0: none): a stream
    /// client asking from before it is told it missed events.
    dropped_below: Arc<AtomicU64>,
}

impl History {
    /// Starts the history task on the current runtime; it ends when every handle
    /// is gone.
    /// `next_offset` is the outbox's at the start: everything before it is
    /// from an earlier run, which this index never held.
    pub fn start(metrics: &Metrics, next_offset: u64) -> History {
        let (notes, notes_rx) = mpsc::channel(NOTES);
        let (queries, queries_rx) = mpsc::channel(QUERIES);
        let dropped_below = Arc::new(AtomicU64::new(0));
        tokio::spawn(ring::run(
            notes_rx,
            queries_rx,
            next_offset.checked_sub(1),
            dropped_below.clone(),
        ));
        History {
            notes,
            queries,
            dropped: metrics.history_dropped.clone(),
            dropped_below,
        }
    }

    fn note(&self, note: Note) {
        if let Err(e) = self.notes.try_send(note) {
            self.dropped.inc();
            if let Note::Committed { item, .. } = e.into_inner()
                && let Some(o) = item.offset
            {
                self.dropped_below.fetch_max(o + 1, Ordering::Relaxed);
            }
        }
    }

    /// The writer's [`Tap`]: every committed event, with the endpoints it is for.
    pub fn tap(&self) -> Tap {
        let me = self.clone();
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        Box::new(move |a: Announced<'_>| {
            let endpoints = a
                .endpoints
                .map(|n| match names.get(n) {
                    Some(arc) => arc.clone(),
                    None => {
                        let arc: Arc<str> = n.into();
                        names.insert(n.to_owned(), arc.clone());
                        arc
                    }
                })
                .collect();
            me.note(Note::Committed {
                item: Arc::new(StreamItem {
                    offset: a.offset,
                    kind: a.kind,
                    body: a.fresh.body.clone(),
                }),
                id: a.fresh.id.clone(),
                endpoints,
                at_ms: Timestamp::now().millis(),
            });
        })
    }

    /// A dispatcher's report on one delivery.
    pub fn outcome(&self, endpoint: &Arc<str>, offset: u64, outcome: Outcome) {
        self.note(Note::Outcome {
            endpoint: endpoint.clone(),
            offset,
            outcome,
            at_ms: Timestamp::now().millis(),
        });
    }

    async fn ask<A>(&self, make: impl FnOnce(oneshot::Sender<A>) -> Query) -> Option<A> {
        let (tx, rx) = oneshot::channel();
        self.queries.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Subscribes to the stream from after `after` (a `Last-Event-ID`), or from
    /// now. `None` when the task is gone (shutting down).
    pub async fn subscribe(&self, after: Option<u64>) -> Option<Subscription> {
        self.ask(|reply| Query::Subscribe { after, reply }).await
    }

    /// The newest `limit` events matching `search`, newest first.
    pub async fn find(&self, search: Search, limit: usize) -> Option<Vec<EventRecord>> {
        self.ask(|reply| Query::Find {
            search,
            limit,
            reply,
        })
        .await
    }

    /// The event with this id, if the index still has it.
    pub async fn get(&self, id: String) -> Option<Option<EventRecord>> {
        self.ask(|reply| Query::Get { id, reply }).await
    }
}

/// One endpoint's dispatcher's way to report outcomes.
#[derive(Clone)]
pub struct EndpointNotes {
    history: History,
    endpoint: Arc<str>,
}

impl EndpointNotes {
    /// Notes for `endpoint`.
    pub fn new(history: &History, endpoint: &str) -> EndpointNotes {
        EndpointNotes {
            history: history.clone(),
            endpoint: endpoint.into(),
        }
    }

    /// The endpoint acknowledged `offset`.
    pub fn delivered(&self, offset: u64) {
        self.history
            .outcome(&self.endpoint, offset, Outcome::Delivered);
    }

    /// An attempt at `offset` failed; `state` says when the next is due.
    pub fn retrying(&self, offset: u64, state: &crate::outbox::DeliveryState) {
        let outcome = Outcome::Retrying {
            attempts: state.attempts,
            status: state.last_status,
            error: state.last_error.clone(),
            next_at_ms: state.next_at_ms,
        };
        self.history.outcome(&self.endpoint, offset, outcome);
    }

    /// `offset` became a dead letter.
    pub fn dead(&self, offset: u64, state: &crate::outbox::DeliveryState) {
        let outcome = Outcome::Dead {
            attempts: state.attempts,
            status: state.last_status,
            error: state.last_error.clone(),
        };
        self.history.outcome(&self.endpoint, offset, outcome);
    }
}

mod ring;

#[cfg(test)]
mod tests;
