//! The outbox's state in memory, rebuilt at open by applying every record of the
//! log in order, and kept current by applying each record as it is appended: the
//! same code path both ways, so what a restart sees is what the running process
//! saw.
//!
//! Besides the state itself it knows which segment holds the record each live
//! item was last written in (its *base*), so the log can retire a segment once
//! nothing is based there, and carry the few live items of a sparse old segment
//! forward rather than keep the whole segment for them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::DeliveryState;
use super::log::Position;
use super::record::{self, Cursor, Target};

/// An event still wanted by some endpoint (pending or dead).
#[derive(Debug, Clone, Copy)]
pub(super) struct EventEntry {
    /// Its base record.
    pub pos: Position,
    /// The record's size, header included.
    pub size: u32,
    pub call_key: u64,
    pub received_ms: i64,
    /// Pending and dead deliveries that still need it.
    pub refs: u32,
}

/// A live item whose base is one record: a call snapshot, a pause flag.
#[derive(Debug, Clone, Copy)]
pub(super) struct Based {
    pub pos: Position,
    pub size: u32,
}

/// What is based in one segment.
#[derive(Debug, Default)]
pub(super) struct SegmentLive {
    /// Bytes of the live items' records.
    pub bytes: u64,
    pub events: BTreeSet<u64>,
    pub calls: BTreeSet<String>,
    pub paused: BTreeSet<String>,
}

/// The live items known by a name and based in one record each.
#[derive(Debug, Clone, Copy)]
enum Named {
    Call,
    Pause,
}

impl SegmentLive {
    fn names(&mut self, which: Named) -> &mut BTreeSet<String> {
        match which {
            Named::Call => &mut self.calls,
            Named::Pause => &mut self.paused,
        }
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.calls.is_empty() && self.paused.is_empty()
    }
}

/// Deliveries of one kind (pending, dead) by endpoint, then offset.
pub(super) type ByEndpoint = BTreeMap<String, BTreeMap<u64, DeliveryState>>;

/// The whole state.
#[derive(Debug, Default)]
pub(super) struct Index {
    pub events: BTreeMap<u64, EventEntry>,
    pub pending: ByEndpoint,
    pub dead: ByEndpoint,
    pub calls: HashMap<String, Based>,
    pub paused: HashMap<String, Based>,
    pub segments: BTreeMap<u64, SegmentLive>,
    /// The next offset to hand out.
    pub next_offset: u64,
    /// Records that did not decode (at open: damage; never written by this code).
    pub undecodable: u64,
}

fn size_of(payload: &[u8]) -> u32 {
    u32::try_from(payload.len() + super::log::RECORD_HEADER).unwrap_or(u32::MAX)
}

impl Index {
    fn segment(&mut self, n: u64) -> &mut SegmentLive {
        self.segments.entry(n).or_default()
    }

    fn unbase(&mut self, pos: Position, size: u32, what: impl FnOnce(&mut SegmentLive)) {
        if let Some(s) = self.segments.get_mut(&pos.segment) {
            s.bytes = s.bytes.saturating_sub(u64::from(size));
            what(s);
            if s.is_empty() {
                self.segments.remove(&pos.segment);
            }
        }
    }

    /// Whether `endpoint`'s delivery of `offset` is pending.
    pub fn is_pending(&self, endpoint: &str, offset: u64) -> bool {
        self.pending
            .get(endpoint)
            .is_some_and(|m| m.contains_key(&offset))
    }

    /// Whether `endpoint`'s delivery of `offset` is a dead letter.
    pub fn is_dead(&self, endpoint: &str, offset: u64) -> bool {
        self.dead
            .get(endpoint)
            .is_some_and(|m| m.contains_key(&offset))
    }

    fn names(&mut self, which: Named) -> &mut HashMap<String, Based> {
        match which {
            Named::Call => &mut self.calls,
            Named::Pause => &mut self.paused,
        }
    }

    /// A named item's base moves to `now`, or the item is gone (`None`).
    fn rebase(&mut self, which: Named, name: String, now: Option<Based>) {
        if let Some(old) = self.names(which).remove(&name) {
            self.unbase(old.pos, old.size, |s| {
                s.names(which).remove(&name);
            });
        }
        if let Some(b) = now {
            let seg = self.segment(b.pos.segment);
            seg.bytes += u64::from(b.size);
            seg.names(which).insert(name.clone());
            self.names(which).insert(name, b);
        }
    }

    /// The oldest segment anything is based in.
    pub fn oldest_based(&self) -> Option<u64> {
        self.segments.keys().next().copied()
    }

    /// Applies one record; returns false if it did not decode.
    pub fn apply(&mut self, pos: Position, kind: u8, payload: &[u8]) -> bool {
        let ok = self.apply_inner(pos, kind, payload).is_some();
        if !ok {
            self.undecodable += 1;
        }
        ok
    }

    fn apply_inner(&mut self, pos: Position, kind: u8, payload: &[u8]) -> Option<()> {
        match kind {
            record::EVENT => {
                let r = record::decode_event(payload)?;
                self.put_event(pos, size_of(payload), r.head, &r.targets);
            }
            record::ATTEMPT => {
                let mut c = Cursor(payload);
                let (offset, name, state) = (c.u64()?, c.str16()?, c.state()?);
                if let Some(s) = self.pending.get_mut(name).and_then(|m| m.get_mut(&offset)) {
                    *s = state;
                }
            }
            record::DELIVERED => {
                let mut c = Cursor(payload);
                let name = c.str16()?.to_owned();
                while let Some(offset) = c.u64() {
                    self.delivered(&name, offset);
                }
            }
            record::DEAD => {
                let mut c = Cursor(payload);
                let (offset, name, state) = (c.u64()?, c.str16()?, c.state()?);
                if take(&mut self.pending, name, offset).is_some() {
                    put(&mut self.dead, name, offset, state);
                }
            }
            record::REPLAY => {
                let mut c = Cursor(payload);
                let (offset, at, name) = (c.u64()?, c.i64()?, c.str16()?);
                if take(&mut self.dead, name, offset).is_some() {
                    let state = DeliveryState {
                        next_at_ms: at,
                        ..DeliveryState::default()
                    };
                    put(&mut self.pending, name, offset, state);
                }
            }
            record::CALL | record::CALL_GONE => {
                let id = Cursor(payload).str16()?.to_owned();
                let now = (kind == record::CALL).then(|| Based {
                    pos,
                    size: size_of(payload),
                });
                self.rebase(Named::Call, id, now);
            }
            record::PAUSE => {
                let mut c = Cursor(payload);
                let paused = c.u8()? == 1;
                let name = c.str16()?.to_owned();
                let now = paused.then(|| Based {
                    pos,
                    size: size_of(payload),
                });
                self.rebase(Named::Pause, name, now);
            }
            record::NEXT => {
                let n = Cursor(payload).u64()?;
                self.next_offset = self.next_offset.max(n);
            }
            _ => return None,
        }
        Some(())
    }

    /// An event record: new, or carried forward (its states replace the old).
    fn put_event(
        &mut self,
        pos: Position,
        size: u32,
        head: record::Head,
        targets: &[(&str, Target)],
    ) {
        let offset = head.offset;
        self.next_offset = self.next_offset.max(offset.saturating_add(1));
        if let Some(old) = self.events.remove(&offset) {
            self.unbase(old.pos, old.size, |s| {
                s.events.remove(&offset);
            });
            for m in self.pending.values_mut().chain(self.dead.values_mut()) {
                m.remove(&offset);
            }
        }
        let mut refs = 0;
        for (name, target) in targets {
            refs += 1;
            match target {
                Target::Fresh(at) => {
                    let state = DeliveryState {
                        next_at_ms: *at,
                        ..DeliveryState::default()
                    };
                    put(&mut self.pending, name, offset, state);
                }
                Target::Pending(s) => put(&mut self.pending, name, offset, s.clone()),
                Target::Dead(s) => put(&mut self.dead, name, offset, s.clone()),
            }
        }
        if refs == 0 {
            return;
        }
        let seg = self.segment(pos.segment);
        seg.bytes += u64::from(size);
        seg.events.insert(offset);
        self.events.insert(
            offset,
            EventEntry {
                pos,
                size,
                call_key: head.call_key,
                received_ms: head.received_ms,
                refs,
            },
        );
    }

    /// A delivery finished: one reference less, the event gone with the last.
    fn delivered(&mut self, name: &str, offset: u64) {
        if take(&mut self.pending, name, offset).is_some() {
            self.release(offset);
        }
    }

    fn release(&mut self, offset: u64) {
        let Some(e) = self.events.get_mut(&offset) else {
            return;
        };
        e.refs = e.refs.saturating_sub(1);
        if e.refs == 0 {
            let e = *e;
            self.events.remove(&offset);
            self.unbase(e.pos, e.size, |s| {
                s.events.remove(&offset);
            });
        }
    }

    /// Where `offset`'s deliveries stand, endpoint by endpoint: what a carried
    /// record must say.
    pub fn targets_of(&self, offset: u64) -> Vec<(String, Target)> {
        let pending = self.pending.iter().filter_map(|(name, m)| {
            m.get(&offset)
                .map(|s| (name.clone(), Target::Pending(s.clone())))
        });
        let dead = self.dead.iter().filter_map(|(name, m)| {
            m.get(&offset)
                .map(|s| (name.clone(), Target::Dead(s.clone())))
        });
        pending.chain(dead).collect()
    }
}

fn take(map: &mut ByEndpoint, name: &str, offset: u64) -> Option<DeliveryState> {
    let m = map.get_mut(name)?;
    let s = m.remove(&offset);
    if m.is_empty() {
        map.remove(name);
    }
    s
}

fn put(map: &mut ByEndpoint, name: &str, offset: u64, state: DeliveryState) {
    match map.get_mut(name) {
        Some(m) => {
            m.insert(offset, state);
        }
        None => {
            map.insert(name.to_owned(), BTreeMap::from([(offset, state)]));
        }
    }
}
