//! The durable outbox (sled). Every event is written here, and flushed to disk,
//! before any delivery attempt; what is committed survives crashes and restarts.
//!
//! Trees:
//! - `events`: offset → record (references left, call key, sequence, receive time,
//!   event id, the exact JSON bytes that are signed and sent).
//! - `pending`: endpoint NUL offset → delivery state (attempts, next attempt, last result).
//! - `dead`: endpoint NUL offset → dead-letter state (same shape, kept for replay).
//! - `calls`: call id → snapshot of each live call, committed with its events, so a
//!   restart between INVITE and BYE still ends in a correct `call.completed`.
//!
//! An event record is deleted when no endpoint still needs it (its reference count
//! reaches zero); a dead letter keeps its reference until it is replayed and delivered.

mod compact;
mod dead;
pub mod log;
mod store;
pub mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use serde::{Deserialize, Serialize};
use sled::Transactional;

use crate::call::{CallSnapshot, Event, EventType};
pub use compact::{Compacted, Compactor, ONLINE_MAX_LIVE, SPARSE_RATIO, Verdict};
pub use dead::DeadLetter;
use store::{Layout, Store};

/// Why the outbox could not do what was asked. Carries no event content.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// sled reported an I/O or corruption error.
    #[error("outbox storage error: {0}")]
    Storage(#[from] sled::Error),
    /// The store is past `outbox.max_bytes`.
    #[error("outbox is full ({size} bytes on disk, max_bytes {max})")]
    Full {
        /// Current size on disk.
        size: u64,
        /// Configured limit.
        max: u64,
    },
    /// A record did not decode: the store was written by something else.
    #[error("corrupt outbox record at offset {0}")]
    Corrupt(u64),
    /// Another process has the store open.
    #[error("the outbox is in use by another process")]
    Locked,
    /// The store's own files (lock, generation pointer, directories) are unusable.
    #[error("outbox layout: {0}")]
    Layout(String),
    /// A compaction switched generations but could not make the switch durable:
    /// a crash could bring back the old one, so no new event may be taken.
    #[error("outbox generation switch not durable: {0}")]
    Unsynced(String),
}

/// What a stored event carries for its delivery.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Position in the outbox; increases with commit order.
    pub offset: u64,
    /// Stable hash of the call id: per-call ordering without holding the id.
    pub call_key: u64,
    /// The event's per-call sequence.
    pub sequence: u32,
    /// When the SIP message that caused it was received (ms since the epoch).
    pub received_ms: i64,
    /// The event id, sent as `webhook-id`.
    pub id: String,
    /// The exact JSON bytes of the event.
    pub body: bytes::Bytes,
}

/// Where one event stands with one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// Attempts made so far.
    pub attempts: u32,
    /// Earliest time of the next attempt (ms since the epoch).
    pub next_at_ms: i64,
    /// HTTP status of the last attempt, if it got one.
    pub last_status: Option<u16>,
    /// Error of the last attempt (connect error, timeout …), never a secret.
    pub last_error: Option<String>,
}

/// The store. Its sled database is swapped for a compacted copy now and then, so
/// every operation reads it through a lock that a compaction takes alone.
pub struct Outbox {
    store: RwLock<Store>,
    layout: Layout,
    next_offset: AtomicU64,
    /// Every offset below this is on disk: a dispatcher started while the writer
    /// runs (a reload) must not send what a crash could still take back.
    durable_below: AtomicU64,
    max_bytes: u64,
    /// False only in `siphook bench --no-fsync`: commits then skip the flush.
    fsync: bool,
}

const HEADER: usize = 2 + 8 + 4 + 8 + 1;
const NEXT_OFFSET: &[u8] = b"next_offset";

fn pending_key(endpoint: &str, offset: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(endpoint.len() + 9);
    k.extend_from_slice(endpoint.as_bytes());
    k.push(0);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

fn paused_key(endpoint: &str) -> Vec<u8> {
    let mut k = b"paused/".to_vec();
    k.extend_from_slice(endpoint.as_bytes());
    k
}

fn prefix(endpoint: &str) -> Vec<u8> {
    let mut k = endpoint.as_bytes().to_vec();
    k.push(0);
    k
}

fn offset_of(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// Stable 64-bit key of a call id (`call_<hex>`): its first 16 hex digits.
pub fn call_key(call_id: &str) -> u64 {
    call_id
        .strip_prefix("call_")
        .and_then(|h| h.get(..16))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

impl Outbox {
    /// Opens (or creates) the store at `path`; fails with [`OutboxError::Locked`]
    /// while another process has it open.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Outbox, OutboxError> {
        let layout = Layout::lock(path)?;
        let s = layout.open_current()?;
        // Offsets are never reused: a dead letter or a stale pending entry must not
        // come to name another event once the newest events were delivered.
        let after_last = match s.events.last()? {
            Some((k, _)) => offset_of(&k).map_or(0, |o| o + 1),
            None => 0,
        };
        let recorded = s
            .meta
            .get(NEXT_OFFSET)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let next = after_last.max(recorded);
        Ok(Outbox {
            store: RwLock::new(s),
            layout,
            next_offset: AtomicU64::new(next),
            durable_below: AtomicU64::new(next),
            max_bytes,
            fsync: true,
        })
    }

    /// The live generation, for one operation. Never held across another call
    /// that takes it: a compaction waiting for the lock would deadlock the two.
    fn store(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A store whose commits do not fsync: events are "durable" as soon as they are
    /// written to sled's buffers, and a crash loses what sled had not flushed yet.
    /// Only for measuring what the fsync costs (`siphook bench --no-fsync`).
    pub fn without_fsync(mut self) -> Outbox {
        self.fsync = false;
        self
    }

    /// `max_bytes` as opened: past it new events are refused.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        self.layout.root()
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.store().db.size_on_disk().unwrap_or(0)
    }

    /// Refuses new events when the store, at `size` bytes, is past `max_bytes`.
    pub fn check_space(&self, size: u64) -> Result<(), OutboxError> {
        if size > self.max_bytes {
            return Err(OutboxError::Full {
                size,
                max: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Writes an event for `endpoints`; durable only after [`Outbox::commit`].
    pub fn append(
        &self,
        event: &Event,
        body: &[u8],
        endpoints: &[&str],
        now_ms: i64,
    ) -> Result<u64, OutboxError> {
        let s = self.store();
        let offset = self.next_offset.fetch_add(1, Ordering::AcqRel);
        let id = event.id.as_bytes();
        let id_len = u8::try_from(id.len()).map_err(|_| OutboxError::Corrupt(offset))?;
        let refs = u16::try_from(endpoints.len()).unwrap_or(u16::MAX);
        let mut rec = Vec::with_capacity(HEADER + id.len() + body.len());
        rec.extend_from_slice(&refs.to_be_bytes());
        rec.extend_from_slice(&call_key(&event.call.id).to_be_bytes());
        rec.extend_from_slice(&event.sequence.to_be_bytes());
        rec.extend_from_slice(&event.timestamp.millis().to_be_bytes());
        rec.push(id_len);
        rec.extend_from_slice(id);
        rec.extend_from_slice(body);
        // The record goes first: sled's log keeps write order, so a crash never
        // leaves a pending entry without its event.
        s.events.insert(offset.to_be_bytes(), rec)?;
        s.meta.insert(NEXT_OFFSET, &(offset + 1).to_be_bytes())?;
        let state = DeliveryState {
            next_at_ms: now_ms,
            ..DeliveryState::default()
        };
        let state = serde_json::to_vec(&state).unwrap_or_default();
        for e in endpoints {
            s.pending.insert(pending_key(e, offset), state.clone())?;
        }
        Ok(offset)
    }

    /// Flushes everything written so far to disk (fsync). Callers group many
    /// appends under one commit.
    pub async fn commit(&self) -> Result<(), OutboxError> {
        let upto = self.next_offset.load(Ordering::Acquire);
        if self.fsync {
            // Not awaited under the lock. A compaction meanwhile made everything up
            // to `upto` durable in the new generation, so the old one's flush, which
            // may fail once its files are gone, no longer decides.
            let (db, generation) = {
                let s = self.store();
                (s.db.clone(), s.generation)
            };
            let flushed = db.flush_async().await;
            drop(db);
            if let Err(e) = flushed
                && self.store().generation == generation
            {
                return Err(e.into());
            }
        }
        self.durable_below.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    /// Every event below this offset has been committed.
    pub fn durable_below(&self) -> u64 {
        self.durable_below.load(Ordering::Acquire)
    }

    /// Whether an endpoint answered 410 Gone and has not been resumed since; kept
    /// across restarts.
    pub fn is_paused(&self, endpoint: &str) -> bool {
        let s = self.store();
        s.meta.get(paused_key(endpoint)).ok().flatten().is_some()
    }

    /// Pauses (410 Gone) or resumes an endpoint.
    pub fn set_paused(&self, endpoint: &str, paused: bool) -> Result<(), OutboxError> {
        let s = self.store();
        if paused {
            s.meta.insert(paused_key(endpoint), &[1u8])?;
        } else {
            s.meta.remove(paused_key(endpoint))?;
        }
        Ok(())
    }

    /// Keeps the call's state current with this event (or forgets a completed
    /// call); made durable by the same commit as the event.
    pub fn track_call(&self, event: &Event) -> Result<(), OutboxError> {
        let s = self.store();
        if event.event_type == EventType::Completed {
            s.calls.remove(event.call.id.as_bytes())?;
        } else {
            let snap = serde_json::to_vec(&event.snapshot()).unwrap_or_default();
            s.calls.insert(event.call.id.as_bytes(), snap)?;
        }
        Ok(())
    }

    /// Forgets a live call's snapshot (a replay's open calls must not resume as
    /// live ones); durable with the next commit.
    pub fn forget_call(&self, call_id: &str) -> Result<(), OutboxError> {
        let s = self.store();
        s.calls.remove(call_id.as_bytes())?;
        Ok(())
    }

    /// Calls that were live when the process last stopped.
    pub fn active_calls(&self) -> Result<Vec<CallSnapshot>, OutboxError> {
        let s = self.store();
        let mut out = Vec::new();
        for kv in s.calls.iter() {
            let (_, v) = kv?;
            match serde_json::from_slice(&v) {
                Ok(s) => out.push(s),
                Err(e) => tracing::warn!(error = %e, "skipping unreadable call snapshot"),
            }
        }
        Ok(out)
    }

    /// Reads an event record.
    pub fn event(&self, offset: u64) -> Result<Option<StoredEvent>, OutboxError> {
        read_event(&self.store().events, offset)
    }

    /// Every pending delivery of an endpoint, in offset order.
    pub fn pending(&self, endpoint: &str) -> Result<Vec<(u64, DeliveryState)>, OutboxError> {
        self.pending_page(endpoint, 0, usize::MAX)
    }

    /// Up to `limit` pending deliveries of an endpoint from offset `from` on, in
    /// offset order: a large backlog is loaded a page at a time, so delivery can
    /// start before all of it is read.
    pub fn pending_page(
        &self,
        endpoint: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, DeliveryState)>, OutboxError> {
        let s = self.store();
        let mut out = Vec::new();
        let range = pending_key(endpoint, from)..=pending_key(endpoint, u64::MAX);
        for kv in s.pending.range(range).take(limit) {
            let (k, v) = kv?;
            let offset = offset_of(&k).ok_or(OutboxError::Corrupt(0))?;
            out.push((offset, serde_json::from_slice(&v).unwrap_or_default()));
        }
        Ok(out)
    }

    /// What a dispatcher needs of an event to queue it, `(call key, received ms)`,
    /// without copying its body.
    pub fn event_key(&self, offset: u64) -> Result<Option<(u64, i64)>, OutboxError> {
        let s = self.store();
        let Some(rec) = s.events.get(offset.to_be_bytes())? else {
            return Ok(None);
        };
        let read = || {
            let call_key = u64::from_be_bytes(rec.get(2..10)?.try_into().ok()?);
            let received_ms = i64::from_be_bytes(rec.get(14..22)?.try_into().ok()?);
            Some((call_key, received_ms))
        };
        read().map(Some).ok_or(OutboxError::Corrupt(offset))
    }

    /// The endpoint names with pending deliveries, found by skipping from one name
    /// to the next rather than reading every entry (a backlog can be millions).
    pub fn pending_endpoints(&self) -> Result<Vec<String>, OutboxError> {
        let s = self.store();
        let mut names = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        while let Some((k, _)) = s.pending.range(from.as_slice()..).next().transpose()? {
            let cut = k.len().checked_sub(9).filter(|&i| k[i] == 0);
            let Some(cut) = cut else {
                // Not `name \0 offset` (damaged, or written by something else): step
                // past this key alone rather than seek to it for ever.
                from = k.to_vec();
                from.push(0);
                continue;
            };
            let name = &k[..cut];
            names.push(String::from_utf8_lossy(name).into_owned());
            // Keys are `name \0 offset`: `name \1` sorts after all of that name's.
            from = name.to_vec();
            from.push(1);
        }
        Ok(names)
    }

    /// The state of one pending delivery.
    pub fn pending_state(
        &self,
        endpoint: &str,
        offset: u64,
    ) -> Result<Option<DeliveryState>, OutboxError> {
        let s = self.store();
        let v = s.pending.get(pending_key(endpoint, offset))?;
        Ok(v.map(|v| serde_json::from_slice(&v).unwrap_or_default()))
    }

    /// Number of pending deliveries of an endpoint.
    pub fn pending_count(&self, endpoint: &str) -> usize {
        let s = self.store();
        s.pending.scan_prefix(prefix(endpoint)).count()
    }

    /// Records a failed attempt so a restart resumes the schedule where it was.
    pub fn record_attempt(
        &self,
        endpoint: &str,
        offset: u64,
        state: &DeliveryState,
    ) -> Result<(), OutboxError> {
        let s = self.store();
        s.pending.insert(
            pending_key(endpoint, offset),
            serde_json::to_vec(state).unwrap_or_default(),
        )?;
        Ok(())
    }

    /// The endpoint has the event: forget the delivery, and the event once no
    /// endpoint needs it.
    pub fn delivered(&self, endpoint: &str, offset: u64) -> Result<(), OutboxError> {
        self.delivered_many(endpoint, &[offset])
    }

    /// [`Outbox::delivered`] for several events in one transaction: a busy
    /// dispatcher records what finished together at the cost of one.
    pub fn delivered_many(&self, endpoint: &str, offsets: &[u64]) -> Result<(), OutboxError> {
        let s = self.store();
        let keys: Vec<(u64, Vec<u8>)> = offsets
            .iter()
            .map(|&o| (o, pending_key(endpoint, o)))
            .collect();
        (&s.pending, &s.events)
            .transaction(|(pending, events)| {
                for (offset, key) in &keys {
                    if pending.remove(key.as_slice())?.is_some() {
                        release(events, *offset)?;
                    }
                }
                Ok(())
            })
            .map_err(|e| tx_error(e, offsets.first().copied().unwrap_or(0)))
    }
}

/// Drops one reference to an event inside a transaction; the record goes with the last.
fn release(
    events: &sled::transaction::TransactionalTree,
    offset: u64,
) -> sled::transaction::ConflictableTransactionResult<(), ()> {
    let key = offset.to_be_bytes();
    let Some(rec) = events.get(key)? else {
        return Ok(());
    };
    let refs = match rec.get(..2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    };
    if refs <= 1 {
        events.remove(&key)?;
    } else {
        let mut rec = rec.to_vec();
        rec[..2].copy_from_slice(&(refs - 1).to_be_bytes());
        events.insert(&key, rec)?;
    }
    Ok(())
}

fn tx_error(e: sled::transaction::TransactionError<()>, offset: u64) -> OutboxError {
    match e {
        sled::transaction::TransactionError::Storage(s) => OutboxError::Storage(s),
        sled::transaction::TransactionError::Abort(()) => OutboxError::Corrupt(offset),
    }
}

fn read_event(events: &sled::Tree, offset: u64) -> Result<Option<StoredEvent>, OutboxError> {
    let Some(rec) = events.get(offset.to_be_bytes())? else {
        return Ok(None);
    };
    decode(offset, &rec)
        .map(Some)
        .ok_or(OutboxError::Corrupt(offset))
}

fn decode(offset: u64, rec: &[u8]) -> Option<StoredEvent> {
    let call_key = u64::from_be_bytes(rec.get(2..10)?.try_into().ok()?);
    let sequence = u32::from_be_bytes(rec.get(10..14)?.try_into().ok()?);
    let received_ms = i64::from_be_bytes(rec.get(14..22)?.try_into().ok()?);
    let id_len = usize::from(*rec.get(22)?);
    let id = std::str::from_utf8(rec.get(HEADER..HEADER + id_len)?)
        .ok()?
        .to_owned();
    let body = bytes::Bytes::copy_from_slice(rec.get(HEADER + id_len..)?);
    Some(StoredEvent {
        offset,
        call_key,
        sequence,
        received_ms,
        id,
        body,
    })
}
