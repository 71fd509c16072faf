//! The durable outbox. Every event is written here, and synced to disk, before
//! any delivery attempt; what is committed survives a crash and a power cut.
//!
//! The store is a segment log (`log.rs`, chosen by the bake-off in BENCHMARKS.md
//! "Outbox engines") of the records in `record.rs`: events with their endpoints,
//! delivery attempts and acknowledgements, dead letters, call snapshots. Its state
//! lives in memory (`index.rs`), rebuilt at open by reading the log once; the
//! bodies stay on disk and are read back when sent. A commit is one write and one
//! `fdatasync` per batch, run off the async workers while appends and reads go on.
//!
//! The disk stays bounded without copying the store: a segment is retired once
//! nothing live is based in it, and the few live records of a sparse old segment
//! (a dead letter, a call that lasts an hour, a retry far behind) are carried
//! forward into the newest segment first. On disk, in `[outbox] path`:
//!
//! - `LOCK`: held (flock) while a process has the store open;
//! - `log/seg-<n>`, `log/spare`: the segments and the next one, zero-filled ahead.
//!
//! A store written by siphook's earlier sled engine is moved into the log at the
//! first open (`legacy.rs`).

mod commit;
mod dead;
mod index;
mod legacy;
pub mod log;
mod read;
mod record;
pub mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::call::{Event, EventType};
pub use dead::DeadLetter;
use index::Index;
use log::{Log, LogError};
use record::{Head, Target};

/// Why the outbox could not do what was asked. Carries no event content.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The log could not read, write or sync its files.
    #[error("outbox storage error: {0}")]
    Storage(#[from] LogError),
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
    /// The store's own files (lock, directories, an earlier engine's store) are
    /// unusable.
    #[error("outbox layout: {0}")]
    Layout(String),
    /// An earlier commit failed: what it held may not be on disk, so nothing
    /// after it may be announced as durable until the store is reopened.
    #[error("outbox stopped after a failed commit: {0}")]
    Failed(String),
}

impl OutboxError {
    /// Whether only the one event it was about is refused: the store is full,
    /// the event does not fit a segment, or its record would not read back.
    /// Any other error means the store cannot write, and takes nothing more.
    pub fn refuses_one_event(&self) -> bool {
        matches!(
            self,
            OutboxError::Full { .. }
                | OutboxError::Corrupt(_)
                | OutboxError::Storage(LogError::TooLarge(_))
        )
    }
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

/// What an open found and repaired, for the log and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Records read.
    pub records: u64,
    /// Bytes after the last whole record of the newest segment that were cut:
    /// a commit a crash interrupted (never one that was acknowledged).
    pub cut_bytes: u64,
    /// Bytes lost to damage in older segments (a disk fault, not a crash).
    pub damaged_bytes: u64,
    /// Records that checked but did not decode.
    pub undecodable: u64,
    /// Events moved from the earlier sled engine's store at this open.
    pub migrated: Option<u64>,
}

/// The state behind the lock, and the log it mirrors.
struct Inner {
    log: Log,
    index: Index,
}

/// What commits and the threads they run on share.
struct Shared {
    inner: Mutex<Inner>,
    /// Held while a batch is written: batches reach the disk in the order they
    /// were taken.
    turn: Mutex<()>,
    /// Every offset below this is on disk.
    durable_below: AtomicU64,
    /// Set by a failed commit, with why.
    failed: Mutex<Option<String>>,
    /// A spare segment is being zero-filled.
    making_spare: AtomicBool,
    /// Retired segments a failed removal left on disk: applied before any newer
    /// one is retired, so the segments on disk never skip one.
    unretired: Mutex<Option<log::Retired>>,
    /// One slow-hold warning in ten seconds.
    slow_log: Mutex<crate::metrics::RateLog>,
    /// Bytes carried forward out of sparse old segments, in all.
    carried: AtomicU64,
    fsync: AtomicBool,
}

/// The store: the log, its state in memory, and the directory's lock.
pub struct Outbox {
    shared: Arc<Shared>,
    committer: commit::Committer,
    root: PathBuf,
    opened: Opened,
    max_bytes: u64,
    /// The open `LOCK` file; the flock goes with it.
    _lock: File,
}

/// The size of new segments for a store of at most `max_bytes`: a sixty-fourth,
/// between 64 KiB and 16 MiB (16 MiB at the default 1 GiB). Small enough that the
/// segment being filled and the spare hide little of the limit, that zero-filling
/// a spare is a short burst, and that a carry moves little at a time; large
/// enough that a rotation (a rename and two syncs) comes every few seconds at
/// most at full load.
pub fn segment_bytes(max_bytes: u64) -> u64 {
    (max_bytes / 64).clamp(64 << 10, 16 << 20) & !4095
}

/// Stable 64-bit key of a call id (`call_<hex>`): its first 16 hex digits.
pub fn call_key(call_id: &str) -> u64 {
    call_id
        .strip_prefix("call_")
        .and_then(|h| h.get(..16))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Outbox {
    /// Opens (or creates) the store at `path`, moving a store of the earlier
    /// engine into it first; fails with [`OutboxError::Locked`] while another
    /// process has it open.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Outbox, OutboxError> {
        let lock_file = legacy::lock(path)?;
        let migrated = legacy::migrate(path, segment_bytes(max_bytes))?;
        let mut index = Index::default();
        let (mut log, recovery) = Log::open(
            &legacy::log_dir(path),
            segment_bytes(max_bytes),
            |pos, kind, payload| {
                index.apply(pos, kind, payload);
            },
        )?;
        // The next offset goes into the newest segment at every open, as into
        // every segment started: retiring old segments never brings offsets back.
        let payload = record::next(index.next_offset);
        let pos = log.append(record::NEXT, &payload)?;
        index.apply(pos, record::NEXT, &payload);
        let opened = Opened {
            records: recovery.records,
            cut_bytes: recovery.tail_bytes,
            damaged_bytes: recovery.damaged.iter().map(|(_, b)| b).sum(),
            undecodable: index.undecodable,
            migrated,
        };
        if opened.cut_bytes > 0 {
            tracing::warn!(
                bytes = opened.cut_bytes,
                "the outbox's last commit before the stop was cut short (a crash or power cut mid-write); nothing it held had been acknowledged, and its bytes were cleared"
            );
        }
        for (segment, bytes) in &recovery.damaged {
            tracing::error!(
                segment,
                bytes,
                "an outbox segment is damaged (a disk fault): the records after the damage are lost"
            );
        }
        if opened.undecodable > 0 {
            tracing::error!(
                records = opened.undecodable,
                "outbox records that checked but did not decode were skipped"
            );
        }
        let next = index.next_offset;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner { log, index }),
            turn: Mutex::new(()),
            durable_below: AtomicU64::new(next),
            failed: Mutex::new(None),
            making_spare: AtomicBool::new(false),
            unretired: Mutex::new(None),
            slow_log: Mutex::new(crate::metrics::RateLog::new(
                std::time::Duration::from_secs(10),
            )),
            carried: AtomicU64::new(0),
            fsync: AtomicBool::new(true),
        });
        // The NEXT record, and anything the open repaired, is on disk before a
        // single event is taken.
        shared.commit()?;
        Ok(Outbox {
            committer: commit::Committer::start(shared.clone())?,
            shared,
            root: path.to_path_buf(),
            opened,
            max_bytes,
            _lock: lock_file,
        })
    }

    /// What the open found and repaired.
    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.shared.inner()
    }

    /// A store whose commits do not fsync: a machine crash loses what the page
    /// cache had not written. Only for measuring what the sync costs
    /// (`siphook bench --no-fsync`).
    pub fn without_fsync(self) -> Outbox {
        self.shared.fsync.store(false, Ordering::Relaxed);
        self
    }

    /// `max_bytes` as opened: past it new events are refused.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Bytes the store takes on disk: its segments and the spare (one `stat`).
    pub fn size_on_disk(&self) -> u64 {
        self.inner().log.size_on_disk()
    }

    /// Bytes carried forward out of sparse old segments since the open.
    pub fn carried_bytes(&self) -> u64 {
        self.shared.carried.load(Ordering::Relaxed)
    }

    /// Segments on disk (the spare not counted).
    pub fn segments(&self) -> usize {
        self.inner().log.segments()
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

    /// Appends a record and applies it; the caller holds the lock.
    fn put(i: &mut Inner, kind: u8, payload: &[u8]) -> Result<(), OutboxError> {
        let before = i.log.segment();
        let pos = i.log.append(kind, payload)?;
        // A record the index cannot read back (a name cut mid-character) would
        // be skipped at every open too: say so now rather than announce it.
        let applied = i.index.apply(pos, kind, payload);
        if i.log.segment() != before {
            let next = record::next(i.index.next_offset);
            let pos = i.log.append(record::NEXT, &next)?;
            i.index.apply(pos, record::NEXT, &next);
        }
        if !applied {
            return Err(OutboxError::Corrupt(i.index.next_offset));
        }
        Ok(())
    }

    fn write(&self, kind: u8, payload: &[u8]) -> Result<(), OutboxError> {
        Self::put(&mut self.inner(), kind, payload)
    }

    /// Writes an event for `endpoints`; durable only after [`Outbox::commit`].
    pub fn append(
        &self,
        event: &Event,
        body: &[u8],
        endpoints: &[&str],
        now_ms: i64,
    ) -> Result<u64, OutboxError> {
        let mut i = self.inner();
        let offset = i.index.next_offset;
        let head = Head {
            offset,
            call_key: call_key(&event.call.id),
            sequence: event.sequence,
            received_ms: event.timestamp.millis(),
        };
        let targets: Vec<(&str, Target)> = endpoints
            .iter()
            .map(|&e| (e, Target::Fresh(now_ms)))
            .collect();
        let payload = record::event(head, &event.id, &targets, body);
        Self::put(&mut i, record::EVENT, &payload)?;
        Ok(offset)
    }

    /// Writes and syncs everything appended so far, on the store's commit
    /// thread: the async workers go on meanwhile. Callers group many appends
    /// under one commit.
    pub async fn commit(&self) -> Result<(), OutboxError> {
        self.committer.commit().await
    }

    /// [`Outbox::commit`], blocking the caller: for tools that hold the store alone.
    pub fn sync(&self) -> Result<(), OutboxError> {
        self.shared.commit()
    }

    /// Every event below this offset has been committed.
    pub fn durable_below(&self) -> u64 {
        self.shared.durable_below.load(Ordering::Acquire)
    }

    /// Whether an endpoint answered 410 Gone and has not been resumed since; kept
    /// across restarts.
    pub fn is_paused(&self, endpoint: &str) -> bool {
        self.inner().index.paused.contains_key(endpoint)
    }

    /// Pauses (410 Gone) or resumes an endpoint; durable with the next commit.
    pub fn set_paused(&self, endpoint: &str, paused: bool) -> Result<(), OutboxError> {
        let mut i = self.inner();
        if i.index.paused.contains_key(endpoint) == paused {
            return Ok(());
        }
        Self::put(&mut i, record::PAUSE, &record::pause(endpoint, paused))
    }

    /// Keeps the call's state current with this event (or forgets a completed
    /// call); made durable by the same commit as the event.
    pub fn track_call(&self, event: &Event) -> Result<(), OutboxError> {
        if event.event_type == EventType::Completed {
            return self.forget_call(&event.call.id);
        }
        let snap = serde_json::to_vec(&event.snapshot()).unwrap_or_default();
        self.write(record::CALL, &record::call(&event.call.id, &snap))
    }

    /// Forgets a live call's snapshot (a replay's open calls must not resume as
    /// live ones); durable with the next commit.
    pub fn forget_call(&self, call_id: &str) -> Result<(), OutboxError> {
        let mut i = self.inner();
        if !i.index.calls.contains_key(call_id) {
            return Ok(());
        }
        Self::put(&mut i, record::CALL_GONE, &record::call(call_id, &[]))
    }

    /// Records a failed attempt so a restart resumes the schedule where it was.
    pub fn record_attempt(
        &self,
        endpoint: &str,
        offset: u64,
        state: &DeliveryState,
    ) -> Result<(), OutboxError> {
        self.put_state(record::ATTEMPT, endpoint, offset, state)
    }

    /// Writes an `ATTEMPT` or `DEAD` record for a delivery that is pending;
    /// nothing for one that is not (delivered or given up meanwhile).
    fn put_state(
        &self,
        kind: u8,
        endpoint: &str,
        offset: u64,
        state: &DeliveryState,
    ) -> Result<(), OutboxError> {
        let mut i = self.inner();
        if !i.index.is_pending(endpoint, offset) {
            return Ok(());
        }
        Self::put(&mut i, kind, &record::state(endpoint, offset, state))
    }

    /// The endpoint has the event: forget the delivery, and the event once no
    /// endpoint needs it.
    pub fn delivered(&self, endpoint: &str, offset: u64) -> Result<(), OutboxError> {
        self.delivered_many(endpoint, &[offset])
    }

    /// [`Outbox::delivered`] for several events in one record: a busy dispatcher
    /// records what finished together at the cost of one. Durable with the next
    /// commit; a crash before it means those events are delivered again (at
    /// least once, never lost).
    pub fn delivered_many(&self, endpoint: &str, offsets: &[u64]) -> Result<(), OutboxError> {
        let mut i = self.inner();
        let Some(m) = i.index.pending.get(endpoint) else {
            return Ok(());
        };
        let known: Vec<u64> = offsets
            .iter()
            .copied()
            .filter(|o| m.contains_key(o))
            .collect();
        if known.is_empty() {
            return Ok(());
        }
        Self::put(
            &mut i,
            record::DELIVERED,
            &record::delivered(endpoint, &known),
        )
    }
}

impl Drop for Outbox {
    /// What was appended but not committed (acknowledgements, a pause) is
    /// written on the way out, as sled's own shutdown flush did.
    fn drop(&mut self) {
        if let Err(e) = self.shared.commit() {
            tracing::warn!(error = %e, "outbox: the last acknowledgements could not be written at close; those events are delivered again after the restart");
        }
    }
}
