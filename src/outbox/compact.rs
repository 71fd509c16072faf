//! Compaction: the outbox copied into a fresh sled database when most of its file
//! is the garbage of delivered events (see [`super::store`] for why and how), and
//! the policy of when that pays for the pause it costs.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use super::{Outbox, OutboxError};

/// The file must be at least this many times its live data to be compacted. A
/// fresh copy measured 1.7 to 2.9 times its live data, so this never repeats a
/// compaction that just ran.
pub const SPARSE_RATIO: u64 = 4;

/// Most live data a running service copies: the store is paused for the copy
/// (about 90 MB/s measured, so at most about 0.1 s), and a dispatcher that calls
/// it meanwhile holds a runtime worker, which SIP ingest shares. A larger store
/// is compacted at the next start instead, before ingest opens.
pub const ONLINE_MAX_LIVE: u64 = 8 << 20;

/// A compaction that ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Size on disk before.
    pub before: u64,
    /// Size on disk after.
    pub after: u64,
    /// Bytes of keys and values copied.
    pub live: u64,
    /// How long the store was paused.
    pub took: Duration,
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not due: too small, or checked too recently.
    NotDue,
    /// Most of the file is live data: copying would not shrink it.
    Dense {
        /// Live bytes counted (counting stops once the ratio rules it out).
        live: u64,
    },
    /// Worth it, but more live data than a running service copies.
    TooMuchLive {
        /// Live bytes counted.
        live: u64,
    },
    /// Compacted.
    Done(Compacted),
}

impl Verdict {
    /// Label for `siphook_outbox_compactions_total{result}`, if the check did
    /// more than look at the size.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            Verdict::NotDue => None,
            Verdict::Dense { .. } => Some("dense"),
            Verdict::TooMuchLive { .. } => Some("too_much_live"),
            Verdict::Done(_) => Some("done"),
        }
    }
}

impl Outbox {
    /// Copies the live data into a new generation and switches to it, pausing every
    /// other operation meanwhile. On failure (a full disk, say) the old generation
    /// stays in use, untouched; except [`OutboxError::Unsynced`], after which the
    /// store must take no new events (the writer stops and restarts siphook).
    pub fn compact(&self) -> Result<Compacted, OutboxError> {
        let started = Instant::now();
        let mut live_store = self.store.write().unwrap_or_else(PoisonError::into_inner);
        let before = live_store.db.size_on_disk().unwrap_or(0);
        // A store that cannot flush is failing; copying it would hide that.
        live_store.db.flush()?;
        let (next, live) = self.layout.copy_to_next(&live_store)?;
        if let Err(e) = self.layout.switch(next.generation) {
            // Whether the rename happened is unknown only if syncing it failed; then
            // CURRENT may already name the copy, so the copy is used from now on
            // (it holds everything) and the old files are kept for the next start.
            if self.layout.current_is(next.generation) {
                // A crash could still bring back the old generation and drop what
                // this one takes from now on: the caller must stop taking events.
                *live_store = next;
                return Err(OutboxError::Unsynced(e.to_string()));
            }
            let generation = next.generation;
            drop(next);
            self.layout.remove_all_but(live_store.generation);
            tracing::debug!(generation, "removed an unused outbox copy");
            return Err(e);
        }
        let old = std::mem::replace(&mut *live_store, next);
        let after = live_store.db.size_on_disk().unwrap_or(0);
        let keep = live_store.generation;
        drop(live_store);
        let was_legacy = old.generation == 0;
        // The old database shuts down with its last handle, before its files go.
        drop(old);
        self.layout.remove_all_but(keep);
        if was_legacy {
            self.layout.remove_legacy();
        }
        Ok(Compacted {
            before,
            after,
            live,
            took: started.elapsed(),
        })
    }

    /// Compacts if the file is at least `min_size` and [`SPARSE_RATIO`] times its
    /// live data, copying no more than `max_live`.
    pub fn compact_if_sparse(&self, min_size: u64, max_live: u64) -> Result<Verdict, OutboxError> {
        let size = self.size_on_disk();
        if size < min_size {
            return Ok(Verdict::NotDue);
        }
        let worth = size / SPARSE_RATIO;
        let live = self.store().live_bytes(worth.min(max_live))?;
        if live > worth {
            return Ok(Verdict::Dense { live });
        }
        if live > max_live {
            return Ok(Verdict::TooMuchLive { live });
        }
        self.compact().map(Verdict::Done)
    }
}

/// When a running service checks for compaction: every `[outbox]
/// compact_check_interval`, once the file is past `compact_above` and has grown
/// since a check found it dense or a compaction ran.
#[derive(Debug, Clone)]
pub struct Compactor {
    above: u64,
    max_live: u64,
    every: Duration,
    /// The size the file must reach before the next check.
    floor: u64,
    next_check: Instant,
}

impl Compactor {
    /// A policy for `[outbox] compact_above`, checked at most once `every`; the
    /// first check may run at once.
    pub fn new(above: u64, max_live: u64, every: Duration) -> Compactor {
        Compactor {
            above,
            max_live,
            every,
            floor: above,
            next_check: Instant::now(),
        }
    }

    /// Whether a check is due with the file at `size`. If so the check counts as
    /// started: the next is at least `every` away, even if this one fails.
    pub fn due(&mut self, size: u64) -> bool {
        let now = Instant::now();
        if size < self.floor || now < self.next_check {
            return false;
        }
        self.next_check = now + self.every;
        true
    }

    /// Runs a due check (blocking: it may copy the store).
    pub fn check(&self, outbox: &Outbox) -> Result<Verdict, OutboxError> {
        outbox.compact_if_sparse(self.above, self.max_live)
    }

    /// Takes a check's result, which found the file at `size`, into account.
    pub fn checked(&mut self, size: u64, verdict: &Result<Verdict, OutboxError>) {
        self.floor = match verdict {
            // Look again once it has grown by a quarter: the live share only falls
            // as garbage is added. A failed copy (most often a full disk, which it
            // filled for a moment) is not retried sooner either.
            Ok(Verdict::Dense { .. } | Verdict::TooMuchLive { .. }) | Err(_) => {
                size.saturating_add(size / 4)
            }
            // Twice a fresh copy: a store whose garbage comes back slowly is not
            // rescanned at every check.
            Ok(Verdict::Done(c)) => self.above.max(c.after.saturating_mul(2)),
            Ok(Verdict::NotDue) => self.floor,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy with its minute already passed.
    fn ready(c: &mut Compactor) {
        c.next_check = Instant::now();
    }

    #[test]
    fn a_check_waits_for_the_minute_and_for_growth_after_its_verdict() {
        let mut c = Compactor::new(64, u64::MAX, Duration::from_secs(60));
        assert!(!c.due(63), "below compact_above");
        assert!(c.due(64));
        assert!(!c.due(1 << 30), "at most one check a minute");

        ready(&mut c);
        c.checked(100, &Ok(Verdict::Dense { live: 60 }));
        assert!(
            !c.due(124),
            "a dense file is looked at again after growing a quarter"
        );
        assert!(c.due(125));

        ready(&mut c);
        let failed = Err(OutboxError::Layout("no room".into()));
        c.checked(200, &failed);
        assert!(!c.due(249), "a failed copy is not retried at once");
        assert!(c.due(250));

        ready(&mut c);
        let done = Compacted {
            before: 250,
            after: 40,
            live: 10,
            took: Duration::ZERO,
        };
        c.checked(250, &Ok(Verdict::Done(done)));
        assert!(
            !c.due(79),
            "twice the fresh copy, and never below compact_above"
        );
        assert!(c.due(80));
        ready(&mut c);
        c.checked(80, &Ok(Verdict::Done(Compacted { after: 10, ..done })));
        assert!(!c.due(63));
        assert!(c.due(64));
    }
}
