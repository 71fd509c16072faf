//! The commit path: a batch taken under the lock, written and synced outside it,
//! and then what keeps the disk bounded: segments nothing is based in retired,
//! a sparse log's oldest live records carried forward, the next spare zero-filled
//! on a thread of its own.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use super::log;
use super::record::{self, Target};
use super::{Inner, Outbox, OutboxError, Shared, lock};

/// Carried forward per commit at most, so a carry never makes one commit slow.
const CARRY_BUDGET: u64 = 256 << 10;
/// A hold of the store's lock by the commit's bookkeeping worth a warning:
/// appends on the async workers wait that long, and so does ingest behind them.
const SLOW_HOLD: std::time::Duration = std::time::Duration::from_millis(100);
/// Segments kept before any is carried: below this the disk is small anyway,
/// and a young segment's live records are mostly about to be delivered.
const CARRY_AFTER_SEGMENTS: usize = 4;

impl Shared {
    pub(super) fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Writes and syncs what was appended, then retires what nothing needs and
    /// carries a sparse old segment's live records forward (for the next
    /// commit). Blocking: runs on a blocking thread or in a tool.
    pub(super) fn commit(self: &Arc<Self>) -> Result<(), OutboxError> {
        let _turn = lock(&self.turn);
        if let Some(why) = lock(&self.failed).clone() {
            return Err(OutboxError::Failed(why));
        }
        // What may be retired is decided as of the take: the index then says
        // what the records in this batch and before it leave live. A record
        // appended while the batch is written (an acknowledgement that frees
        // a segment) must not retire anything before it is on disk itself.
        let (batch, upto, keep) = {
            let mut i = self.inner();
            let upto = i.index.next_offset;
            // Segments below the newest were sealed in this batch or an earlier
            // one, so once it is written all they hold is on disk.
            let keep = i
                .index
                .oldest_based()
                .unwrap_or(u64::MAX)
                .min(i.log.segment());
            (i.log.take(), upto, keep)
        };
        if !batch.is_empty()
            && let Err(e) = batch.write(self.fsync.load(Ordering::Relaxed))
        {
            *lock(&self.failed) = Some(e.to_string());
            return Err(e.into());
        }
        self.durable_below.fetch_max(upto, Ordering::AcqRel);
        // Under the lock only memory changes (and carry's reads, bounded by its
        // budget): the renames, removals and directory syncs of retiring run
        // after it, so appends on the async workers never wait for the disk.
        // What an earlier retirement left goes first; until it has gone, nothing
        // newer is retired.
        let behind = match lock(&self.unretired).take() {
            Some(left) => left.apply().err(),
            None => None,
        };
        let (retired, spare, held) = {
            let mut i = self.inner();
            let held = std::time::Instant::now();
            i.log.landed();
            let retired = if behind.is_none() && i.log.oldest() < keep {
                i.log.plan_retire(keep)
            } else {
                log::Retired::default()
            };
            let carried = carry(&mut i);
            self.carried.fetch_add(carried, Ordering::Relaxed);
            let spare = i.log.spare_due().then(|| i.log.spare_maker());
            (retired, spare, held.elapsed())
        };
        if held > SLOW_HOLD
            && let Some(suppressed) = lock(&self.slow_log).allow()
        {
            tracing::warn!(
                ms = held.as_millis() as u64,
                suppressed,
                "the outbox's bookkeeping after a commit held its lock long; appends waited"
            );
        }
        let failed = match behind {
            Some(f) => Some(f),
            None => retired.apply().err(),
        };
        if let Some((e, left)) = failed {
            // What was committed stands; the segments left are tried again at
            // the next commit, before any newer one.
            tracing::warn!(error = %e, "cannot retire an old outbox segment");
            *lock(&self.unretired) = Some(left);
        }
        if let Some(maker) = spare
            && maker.needed()
            && !self.making_spare.swap(true, Ordering::AcqRel)
        {
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("outbox-spare".into())
                .spawn(move || {
                    if let Err(e) = maker.make() {
                        tracing::warn!(error = %e, "cannot prepare the outbox's next segment ahead; the next one is made when needed");
                    }
                    me.making_spare.store(false, Ordering::Release);
                });
            if spawned.is_err() {
                self.making_spare.store(false, Ordering::Release);
            }
        }
        Ok(())
    }
}

/// Rewrites the live records of the oldest segment at the head of the log, up to
/// [`CARRY_BUDGET`], when the log is past a few segments and at most half of it
/// is live: then the segment can go with the next commit. The whole log's share
/// decides, not the oldest segment's: carried stragglers gather into dense
/// segments, which must move on too, or the sparse ones behind them never go.
/// Returns the bytes carried.
fn carry(i: &mut Inner) -> u64 {
    let Some(oldest) = i.index.oldest_based() else {
        return 0;
    };
    if i.log.segments() < CARRY_AFTER_SEGMENTS || oldest != i.log.oldest() {
        return 0;
    }
    let live_bytes: u64 = i.index.segments.values().map(|s| s.bytes).sum();
    let log_bytes = (i.log.segments() as u64).saturating_mul(i.log.segment_bytes());
    if live_bytes.saturating_mul(2) > log_bytes {
        return 0;
    }
    let Some(live) = i.index.segments.get(&oldest) else {
        return 0;
    };
    let Some(reader) = i.log.reader(oldest) else {
        return 0;
    };
    let events: Vec<u64> = live.events.iter().copied().collect();
    let calls: Vec<String> = live.calls.iter().cloned().collect();
    let paused: Vec<String> = live.paused.iter().cloned().collect();
    let mut budget = CARRY_BUDGET;
    for offset in events {
        let Some(e) = i.index.events.get(&offset).copied() else {
            continue;
        };
        let Ok(Some((record::EVENT, old))) = log::read_at(&reader, e.pos.at) else {
            continue;
        };
        let Some(r) = record::decode_event(&old) else {
            continue;
        };
        let targets = i.index.targets_of(offset);
        let targets: Vec<(&str, Target)> = targets
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        let payload = record::event(r.head, r.id, &targets, r.body);
        if !carry_one(i, record::EVENT, &payload, &mut budget) {
            return CARRY_BUDGET - budget;
        }
    }
    for id in calls {
        let Some(c) = i.index.calls.get(&id).copied() else {
            continue;
        };
        let Ok(Some((record::CALL, payload))) = log::read_at(&reader, c.pos.at) else {
            continue;
        };
        if !carry_one(i, record::CALL, &payload, &mut budget) {
            return CARRY_BUDGET - budget;
        }
    }
    for name in paused {
        if !carry_one(i, record::PAUSE, &record::pause(&name, true), &mut budget) {
            return CARRY_BUDGET - budget;
        }
    }
    CARRY_BUDGET - budget
}

/// Appends one carried record; whether to go on (it worked and budget is left).
fn carry_one(i: &mut Inner, kind: u8, payload: &[u8], budget: &mut u64) -> bool {
    match Outbox::put(i, kind, payload) {
        Ok(()) => {
            *budget = budget.saturating_sub(payload.len() as u64);
            *budget > 0
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot carry an outbox record forward; the old segment stays");
            false
        }
    }
}

/// A caller waiting for the next commit.
type Waiter = tokio::sync::oneshot::Sender<Result<(), OutboxError>>;

/// The store's own commit thread, for async callers (the writer, shutdown). A
/// thread that lives as long as the store: handing it a batch is one wake-up,
/// where a blocking task is a spawn and a pool lookup per commit, and callers
/// that ask while a commit runs share the next one.
pub(super) struct Committer {
    tx: Option<std::sync::mpsc::Sender<Waiter>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    pub(super) fn start(shared: Arc<Shared>) -> Result<Committer, OutboxError> {
        let (tx, rx) = std::sync::mpsc::channel::<Waiter>();
        let thread = std::thread::Builder::new()
            .name("siphook-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Every waiter made its appends before asking, so all of
                    // them are in the batch this commit takes.
                    let rest: Vec<Waiter> = rx.try_iter().collect();
                    let result = shared.commit();
                    for w in rest {
                        let shared_result = match &result {
                            Ok(()) => Ok(()),
                            Err(e) => Err(OutboxError::Failed(e.to_string())),
                        };
                        let _ = w.send(shared_result);
                    }
                    let _ = first.send(result);
                }
            })
            .map_err(|e| OutboxError::Layout(format!("cannot start the commit thread: {e}")))?;
        Ok(Committer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Waits for a commit that covers everything appended before the call.
    pub(super) async fn commit(&self) -> Result<(), OutboxError> {
        let gone = || OutboxError::Failed("the commit thread is gone".into());
        let (waiter, answer) = tokio::sync::oneshot::channel();
        self.tx
            .as_ref()
            .ok_or_else(gone)?
            .send(waiter)
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

impl Drop for Committer {
    /// The thread ends with its queue; joined so the store's files are closed
    /// when the store is (a reopen in the same process finds them free).
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
