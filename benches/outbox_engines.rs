//! The outbox-engine bake-off (issue "Durable commit at the disk's floor"): the
//! outbox's own workload on every candidate engine, in one run, beside the bare
//! `write` + `fdatasync` floor measured in that same run.
//!
//! Run: `cargo bench --bench outbox_engines` (about 10 minutes here). Knobs:
//! `ENGINES_ROUNDS` (3), `ENGINES_CHURN_EVENTS` (7,200,000: an hour at 500 calls/s,
//! four events a call), `ENGINES_PENDING` (1,000,000), `ENGINES_ONLY=sled,fjall`.
//! It writes into a temporary directory under `ENGINES_DIR` (default: the system's
//! temporary directory; point it at the disk the outbox lives on).
//!
//! The workload, as `src/outbox` puts it on sled today:
//! - a batch of events (about 600 bytes each), each pending for two endpoints, and
//!   one call snapshot upsert per event, committed durably: that is the latency
//!   measured, per batch size (1, 16, 256);
//! - the previous batch's acknowledgements for both endpoints, not forced to disk
//!   (a lost acknowledgement means one duplicate delivery, never a lost event);
//! - one event in a hundred dead-lettered for the second endpoint.
//!
//! Rounds interleave the engines, so the machine's noise falls on all of them, and
//! each figure is the median over rounds. CPU is the whole process's user + system
//! time (`/proc/self/stat`, background threads included) over the events written.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use siphook::outbox::log::{Log, Position};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// What one batch writes; built once, shared by every engine.
struct Batch {
    /// `(offset, record)`: the outbox's event record (header + id + body).
    events: Vec<(u64, Vec<u8>)>,
    /// `(call id, snapshot)`: one upsert per event, or the call's removal with its
    /// fourth (`call.completed`).
    calls: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

const ENDPOINTS: [&str; 2] = ["crm", "billing"];

fn pending_key(endpoint: &str, offset: u64) -> Vec<u8> {
    let mut k = endpoint.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// The pending entry's value as the outbox writes it (serde_json of a fresh state).
const STATE: &[u8] =
    br#"{"attempts":0,"next_at_ms":1764700000000,"last_status":null,"last_error":null}"#;

fn batch(first: u64, n: usize) -> Batch {
    let mut events = Vec::with_capacity(n);
    let mut calls = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let o = first + i;
        let mut rec = vec![0u8; 23];
        rec.extend_from_slice(format!("evt_{o:026}").as_bytes());
        let body = format!(
            r#"{{"id":"evt_{o:026}","type":"call.answered","version":1,"timestamp":"2026-12-02T21:00:00.000Z","call":{{"id":"call_{o:032x}","sip_call_id":"bench-{o}@10.0.0.1","ani":"+14445550100","dnis":"+15555550199","from":"sip:+14445550100@10.0.0.1","to":"sip:+15555550199@10.0.0.2","direction":"inbound","sequence":3}},"data":{{"answered_at":"2026-12-02T21:00:00.000Z","ring_ms":1200,"source":"udp:10.0.0.1:5060","user_agent":"bench"}}}}"#
        );
        rec.extend_from_slice(body.as_bytes());
        rec.resize(600, b' ');
        events.push((o, rec));
        calls.push((
            format!("call_{:032x}", o / 4).into_bytes(),
            (o % 4 != 3).then(|| vec![b's'; 300]),
        ));
    }
    Batch { events, calls }
}

/// One candidate, doing what the outbox does. Every method but `commit` may leave
/// its writes in memory; `commit` returns once they all survive a power cut (or,
/// for the engines that cannot promise that, once they do what they can).
trait Engine {
    fn write(&mut self, b: &Batch) -> Res<()>;
    fn commit(&mut self) -> Res<()>;
    fn ack(&mut self, endpoint: &str, offsets: &[u64]) -> Res<()>;
    fn dead(&mut self, endpoint: &str, offset: u64) -> Res<()>;
    /// The first pending delivery and its event's bytes: what a dispatcher reads
    /// first after a restart.
    fn first_pending(&mut self) -> Res<Option<(Vec<u8>, usize)>>;
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Floor,
    FloorInPlace,
    Sled,
    SledFsync,
    Fjall,
    Redb,
    Log,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Floor => "write+fdatasync",
            Kind::FloorInPlace => "  same, in place",
            Kind::Sled => "sled (today)",
            Kind::SledFsync => "sled + fsync",
            Kind::Fjall => "fjall SyncData",
            Kind::Redb => "redb Immediate",
            Kind::Log => "segment log",
        }
    }
    fn is_floor(self) -> bool {
        matches!(self, Kind::Floor | Kind::FloorInPlace)
    }
    fn key(self) -> &'static str {
        match self {
            Kind::Floor => "floor",
            Kind::FloorInPlace => "floor-in-place",
            Kind::Sled => "sled",
            Kind::SledFsync => "sled-fsync",
            Kind::Fjall => "fjall",
            Kind::Redb => "redb",
            Kind::Log => "log",
        }
    }
    fn open(self, dir: &Path) -> Res<Box<dyn Engine>> {
        Ok(match self {
            Kind::Floor => Box::new(Floor::open(dir, false)?),
            Kind::FloorInPlace => Box::new(Floor::open(dir, true)?),
            Kind::Sled => Box::new(Sled::open(dir, false)?),
            Kind::SledFsync => Box::new(Sled::open(dir, true)?),
            Kind::Fjall => Box::new(Fjall::open(dir)?),
            Kind::Redb => Box::new(Redb::open(dir)?),
            Kind::Log => Box::new(SegLog::open(dir)?),
        })
    }
}

/// The floor: the batch's bytes appended to one file and `fdatasync`ed; no index,
/// no acknowledgements. No engine can commit for less. Appending grows the file, so
/// each `fdatasync` also commits the new size to the file system's journal; "in
/// place" writes over blocks written (and synced) beforehand instead, the cost of a
/// log on preallocated, zero-filled segments.
struct Floor {
    file: File,
    buf: Vec<u8>,
    /// In place: where the next batch goes, wrapping within the zero-filled file.
    at: Option<u64>,
}

/// What the in-place floor zero-fills first: more than one run writes.
const IN_PLACE_BYTES: u64 = 64 << 20;

impl Floor {
    fn open(dir: &Path, in_place: bool) -> Res<Floor> {
        std::fs::create_dir_all(dir)?;
        let mut file = File::options()
            .create(true)
            .append(!in_place)
            .write(true)
            .open(dir.join("log"))?;
        if in_place {
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..IN_PLACE_BYTES >> 20 {
                file.write_all(&zeros)?;
            }
            file.sync_all()?;
        }
        Ok(Floor {
            file,
            buf: Vec::new(),
            at: in_place.then_some(0),
        })
    }
}

impl Engine for Floor {
    fn write(&mut self, b: &Batch) -> Res<()> {
        for (_, rec) in &b.events {
            self.buf.extend_from_slice(rec);
        }
        Ok(())
    }
    fn commit(&mut self) -> Res<()> {
        match &mut self.at {
            Some(at) => {
                use std::os::unix::fs::FileExt;
                if *at + self.buf.len() as u64 > IN_PLACE_BYTES {
                    *at = 0;
                }
                self.file.write_all_at(&self.buf, *at)?;
                *at += self.buf.len() as u64;
            }
            None => self.file.write_all(&self.buf)?,
        }
        self.buf.clear();
        self.file.sync_data()?;
        Ok(())
    }
    fn ack(&mut self, _: &str, _: &[u64]) -> Res<()> {
        Ok(())
    }
    fn dead(&mut self, _: &str, _: u64) -> Res<()> {
        Ok(())
    }
    fn first_pending(&mut self) -> Res<Option<(Vec<u8>, usize)>> {
        Ok(None)
    }
}

/// sled 0.34 as `src/outbox` uses it: `flush()` is `sync_file_range` on Linux. With
/// `fsync`, an `fsync` of its data file follows, which also makes the file's growth
/// durable.
struct Sled {
    db: sled::Db,
    events: sled::Tree,
    pending: sled::Tree,
    calls: sled::Tree,
    dead: sled::Tree,
    data: Option<File>,
}

impl Sled {
    fn open(dir: &Path, fsync: bool) -> Res<Sled> {
        let db = sled::Config::new().path(dir).open()?;
        let data = if fsync {
            Some(File::open(dir.join("db"))?)
        } else {
            None
        };
        Ok(Sled {
            events: db.open_tree("events")?,
            pending: db.open_tree("pending")?,
            calls: db.open_tree("calls")?,
            dead: db.open_tree("dead")?,
            db,
            data,
        })
    }
}

impl Engine for Sled {
    fn write(&mut self, b: &Batch) -> Res<()> {
        for (o, rec) in &b.events {
            self.events.insert(o.to_be_bytes(), rec.as_slice())?;
            for e in ENDPOINTS {
                self.pending.insert(pending_key(e, *o), STATE)?;
            }
        }
        for (k, v) in &b.calls {
            match v {
                Some(v) => self.calls.insert(k.as_slice(), v.as_slice())?,
                None => self.calls.remove(k.as_slice())?,
            };
        }
        Ok(())
    }
    fn commit(&mut self) -> Res<()> {
        self.db.flush()?;
        if let Some(f) = &self.data {
            f.sync_all()?;
        }
        Ok(())
    }
    fn ack(&mut self, endpoint: &str, offsets: &[u64]) -> Res<()> {
        for o in offsets {
            self.pending.remove(pending_key(endpoint, *o))?;
            if endpoint == ENDPOINTS[1] {
                self.events.remove(o.to_be_bytes())?;
            }
        }
        Ok(())
    }
    fn dead(&mut self, endpoint: &str, offset: u64) -> Res<()> {
        self.dead.insert(pending_key(endpoint, offset), STATE)?;
        Ok(())
    }
    fn first_pending(&mut self) -> Res<Option<(Vec<u8>, usize)>> {
        let Some((k, _)) = self.pending.first()? else {
            return Ok(None);
        };
        let off: [u8; 8] = k[k.len() - 8..].try_into()?;
        let rec = self.events.get(off)?.map_or(0, |v| v.len());
        Ok(Some((k.to_vec(), rec)))
    }
}

/// fjall 3: one write batch across keyspaces, then `persist(SyncData)`, which is
/// `fdatasync` of its journal (`journal/writer.rs`); a new journal file is followed
/// by an `fsync` of its directory (`journal/mod.rs`).
struct Fjall {
    db: fjall::Database,
    events: fjall::Keyspace,
    pending: fjall::Keyspace,
    calls: fjall::Keyspace,
    dead: fjall::Keyspace,
    batch: Option<fjall::OwnedWriteBatch>,
}

impl Fjall {
    fn open(dir: &Path) -> Res<Fjall> {
        let db = fjall::Database::builder(dir).open()?;
        let ks = |n| db.keyspace(n, fjall::KeyspaceCreateOptions::default);
        Ok(Fjall {
            events: ks("events")?,
            pending: ks("pending")?,
            calls: ks("calls")?,
            dead: ks("dead")?,
            batch: None,
            db,
        })
    }
    fn batch(&mut self) -> &mut fjall::OwnedWriteBatch {
        self.batch.get_or_insert_with(|| self.db.batch())
    }
    fn flush_batch(&mut self) -> Res<()> {
        if let Some(b) = self.batch.take() {
            b.commit()?;
        }
        Ok(())
    }
}

impl Engine for Fjall {
    fn write(&mut self, b: &Batch) -> Res<()> {
        let (events, pending, calls) = (
            self.events.clone(),
            self.pending.clone(),
            self.calls.clone(),
        );
        let wb = self.batch();
        for (o, rec) in &b.events {
            wb.insert(&events, o.to_be_bytes(), rec.as_slice());
            for e in ENDPOINTS {
                wb.insert(&pending, pending_key(e, *o), STATE);
            }
        }
        for (k, v) in &b.calls {
            match v {
                Some(v) => wb.insert(&calls, k.as_slice(), v.as_slice()),
                None => wb.remove(&calls, k.as_slice()),
            }
        }
        Ok(())
    }
    fn commit(&mut self) -> Res<()> {
        self.flush_batch()?;
        self.db.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }
    fn ack(&mut self, endpoint: &str, offsets: &[u64]) -> Res<()> {
        let (events, pending) = (self.events.clone(), self.pending.clone());
        let mut wb = self.db.batch();
        for o in offsets {
            wb.remove(&pending, pending_key(endpoint, *o));
            if endpoint == ENDPOINTS[1] {
                wb.remove(&events, o.to_be_bytes());
            }
        }
        wb.commit()?;
        Ok(())
    }
    fn dead(&mut self, endpoint: &str, offset: u64) -> Res<()> {
        let dead = self.dead.clone();
        self.batch()
            .insert(&dead, pending_key(endpoint, offset), STATE);
        Ok(())
    }
    fn first_pending(&mut self) -> Res<Option<(Vec<u8>, usize)>> {
        let Some(g) = self.pending.first_key_value() else {
            return Ok(None);
        };
        let k = g.key()?;
        let off: [u8; 8] = k[k.len() - 8..].try_into()?;
        let rec = self.events.get(off)?.map_or(0, |v| v.len());
        Ok(Some((k.to_vec(), rec)))
    }
}

const R_EVENTS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");
const R_PENDING: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("pending");
const R_CALLS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("calls");
const R_DEAD: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("dead");

/// redb 4: one write transaction per commit with `Durability::Immediate`, which is
/// `fdatasync` of its one file (`file_backend/optimized.rs`). Acknowledgements are
/// transactions with `Durability::None`, made durable by the next commit.
struct Redb {
    db: redb::Database,
    staged: Vec<Batch>,
    dead: Vec<Vec<u8>>,
}

impl Redb {
    fn open(dir: &Path) -> Res<Redb> {
        std::fs::create_dir_all(dir)?;
        let db = redb::Database::create(dir.join("outbox.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(R_EVENTS)?;
        tx.open_table(R_PENDING)?;
        tx.open_table(R_CALLS)?;
        tx.open_table(R_DEAD)?;
        tx.commit()?;
        Ok(Redb {
            db,
            staged: Vec::new(),
            dead: Vec::new(),
        })
    }
}

impl Engine for Redb {
    fn write(&mut self, b: &Batch) -> Res<()> {
        // redb has no write buffer outside a transaction: the commit does it all.
        self.staged.push(Batch {
            events: b.events.clone(),
            calls: b.calls.clone(),
        });
        Ok(())
    }
    fn commit(&mut self) -> Res<()> {
        let tx = self.db.begin_write()?;
        {
            let mut events = tx.open_table(R_EVENTS)?;
            let mut pending = tx.open_table(R_PENDING)?;
            let mut calls = tx.open_table(R_CALLS)?;
            let mut dead = tx.open_table(R_DEAD)?;
            for b in self.staged.drain(..) {
                for (o, rec) in &b.events {
                    events.insert(*o, rec.as_slice())?;
                    for e in ENDPOINTS {
                        pending.insert(pending_key(e, *o).as_slice(), STATE)?;
                    }
                }
                for (k, v) in &b.calls {
                    match v {
                        Some(v) => calls.insert(k.as_slice(), v.as_slice())?,
                        None => calls.remove(k.as_slice())?,
                    };
                }
            }
            for k in self.dead.drain(..) {
                dead.insert(k.as_slice(), STATE)?;
            }
        }
        tx.commit()?;
        Ok(())
    }
    fn ack(&mut self, endpoint: &str, offsets: &[u64]) -> Res<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(redb::Durability::None)?;
        {
            let mut events = tx.open_table(R_EVENTS)?;
            let mut pending = tx.open_table(R_PENDING)?;
            for o in offsets {
                pending.remove(pending_key(endpoint, *o).as_slice())?;
                if endpoint == ENDPOINTS[1] {
                    events.remove(*o)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
    fn dead(&mut self, endpoint: &str, offset: u64) -> Res<()> {
        self.dead.push(pending_key(endpoint, offset));
        Ok(())
    }
    fn first_pending(&mut self) -> Res<Option<(Vec<u8>, usize)>> {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.db.begin_read()?;
        let pending = tx.open_table(R_PENDING)?;
        let Some((k, _)) = pending.first()? else {
            return Ok(None);
        };
        let k = k.value().to_vec();
        let off = u64::from_be_bytes(k[k.len() - 8..].try_into()?);
        let events = tx.open_table(R_EVENTS)?;
        let rec = events.get(off)?.map_or(0, |v| v.value().len());
        Ok(Some((k, rec)))
    }
}

/// `siphook::outbox::log` with the index a store built on it keeps in memory:
/// every pending event's position and references, and each live call's newest
/// snapshot. A segment goes once no pending event or live call has a record in it.
/// The spare segment is zero-filled after a commit, outside the timed part, as the
/// store's background thread would.
struct SegLog {
    log: Log,
    /// Pending events: offset → (where its record is, endpoints still to deliver).
    events: BTreeMap<u64, (Position, u8)>,
    /// Live calls → where their newest snapshot is.
    calls: HashMap<Vec<u8>, Position>,
    /// Offsets each endpoint has pending, by endpoint.
    pending: [BTreeSet<u64>; 2],
}

const SEGMENT_BYTES: u64 = 64 << 20;
const EVENT: u8 = 1;
const ACK: u8 = 2;
const CALL: u8 = 3;
const CALL_END: u8 = 4;
const DEAD: u8 = 5;

impl SegLog {
    fn open(dir: &Path) -> Res<SegLog> {
        let mut events = BTreeMap::new();
        let mut calls = HashMap::new();
        let mut pending = [BTreeSet::new(), BTreeSet::new()];
        let (log, _) = Log::open(dir, SEGMENT_BYTES, |p, kind, b| match kind {
            EVENT => {
                let o = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
                events.insert(o, (p, 2u8));
                pending[0].insert(o);
                pending[1].insert(o);
            }
            ACK => {
                let ep = usize::from(b[0]).min(1);
                for c in b[1..].chunks_exact(8) {
                    let o = u64::from_le_bytes(c.try_into().unwrap_or_default());
                    if pending[ep].remove(&o)
                        && let Some(e) = events.get_mut(&o)
                    {
                        e.1 -= 1;
                        if e.1 == 0 {
                            events.remove(&o);
                        }
                    }
                }
            }
            CALL => {
                calls.insert(b[1..1 + usize::from(b[0])].to_vec(), p);
            }
            CALL_END => {
                calls.remove(&b[1..1 + usize::from(b[0])]);
            }
            _ => {}
        })?;
        Ok(SegLog {
            log,
            events,
            calls,
            pending,
        })
    }

    fn retire(&mut self) -> Res<()> {
        let pinned = self.events.values().next().map(|(p, _)| p.segment);
        let calls = self.calls.values().map(|p| p.segment).min();
        let keep = pinned.into_iter().chain(calls).min().unwrap_or(u64::MAX);
        self.log.retire_below(keep)?;
        Ok(())
    }
}

impl Engine for SegLog {
    fn write(&mut self, b: &Batch) -> Res<()> {
        let mut rec = Vec::with_capacity(8 + 600);
        for (o, r) in &b.events {
            rec.clear();
            rec.extend_from_slice(&o.to_le_bytes());
            rec.extend_from_slice(r);
            let p = self.log.append(EVENT, &rec)?;
            self.events.insert(*o, (p, 2));
            self.pending[0].insert(*o);
            self.pending[1].insert(*o);
        }
        for (k, v) in &b.calls {
            rec.clear();
            rec.push(k.len() as u8);
            rec.extend_from_slice(k);
            match v {
                Some(v) => {
                    rec.extend_from_slice(v);
                    let p = self.log.append(CALL, &rec)?;
                    self.calls.insert(k.clone(), p);
                }
                None => {
                    self.log.append(CALL_END, &rec)?;
                    self.calls.remove(k);
                }
            }
        }
        Ok(())
    }
    fn commit(&mut self) -> Res<()> {
        self.log.commit()?;
        Ok(())
    }
    fn ack(&mut self, endpoint: &str, offsets: &[u64]) -> Res<()> {
        let ep = usize::from(endpoint == ENDPOINTS[1]);
        let mut rec = vec![ep as u8];
        for o in offsets {
            if self.pending[ep].remove(o) {
                rec.extend_from_slice(&o.to_le_bytes());
                if let Some(e) = self.events.get_mut(o) {
                    e.1 -= 1;
                    if e.1 == 0 {
                        self.events.remove(o);
                    }
                }
            }
        }
        if rec.len() > 1 {
            self.log.append(ACK, &rec)?;
        }
        self.retire()?;
        // Outside the timed commit, as the store's own thread would.
        self.log.prepare_spare()?;
        Ok(())
    }
    fn dead(&mut self, endpoint: &str, offset: u64) -> Res<()> {
        let mut rec = vec![u8::from(endpoint == ENDPOINTS[1])];
        rec.extend_from_slice(&offset.to_le_bytes());
        self.log.append(DEAD, &rec)?;
        Ok(())
    }
    fn first_pending(&mut self) -> Res<Option<(Vec<u8>, usize)>> {
        let Some((o, (p, _))) = self.events.iter().next() else {
            return Ok(None);
        };
        let rec = self.log.read(*p)?.map_or(0, |(_, b)| b.len());
        Ok(Some((o.to_be_bytes().to_vec(), rec)))
    }
}

/// User + system CPU of this process so far (every thread), from `/proc/self/stat`.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name
    // (state is the first); clock ticks are 100 a second on Linux.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Bytes the directory takes on the file system (allocated blocks, not lengths).
fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    quantile(&mut v, 0.5)
}

struct Commits {
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_event: f64,
}

/// `n` durable commits of batches of `size` on a fresh store, with the workload's
/// acknowledgements and dead letters in between.
fn commits(kind: Kind, dir: &Path, size: usize, n: usize) -> Res<Commits> {
    let mut e = kind.open(dir)?;
    let batches: Vec<Batch> = (0..n).map(|i| batch((i * size) as u64, size)).collect();
    let mut lat = Vec::with_capacity(n);
    let cpu0 = cpu();
    let mut prev: Vec<u64> = Vec::new();
    for b in &batches {
        let t = Instant::now();
        e.write(b)?;
        e.commit()?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        for ep in ENDPOINTS {
            e.ack(ep, &prev)?;
        }
        prev = b.events.iter().map(|(o, _)| *o).collect();
        for o in prev.iter().filter(|o| *o % 100 == 0) {
            e.dead(ENDPOINTS[1], *o)?;
        }
    }
    let cpu_used = cpu().saturating_sub(cpu0);
    drop(e);
    let _ = std::fs::remove_dir_all(dir);
    Ok(Commits {
        p50_us: quantile(&mut lat.clone(), 0.5),
        p99_us: quantile(&mut lat, 0.99),
        cpu_us_per_event: cpu_used.as_secs_f64() * 1e6 / (n * size) as f64,
    })
}

/// `total` events through the store in batches of 256, each acknowledged by both
/// endpoints a batch later: the bytes on disk after that churn, and after the
/// engine's own background work has had a few seconds.
fn churn(kind: Kind, dir: &Path, total: usize) -> Res<(u64, u64, f64)> {
    let mut e = kind.open(dir)?;
    let size = 256;
    let started = Instant::now();
    let mut prev: Vec<u64> = Vec::new();
    for i in 0..total / size {
        let b = batch((i * size) as u64, size);
        e.write(&b)?;
        e.commit()?;
        for ep in ENDPOINTS {
            e.ack(ep, &prev)?;
        }
        prev = b.events.iter().map(|(o, _)| *o).collect();
    }
    for ep in ENDPOINTS {
        e.ack(ep, &prev)?;
    }
    e.commit()?;
    let secs = started.elapsed().as_secs_f64();
    let right_after = disk_usage(dir);
    std::thread::sleep(Duration::from_secs(5));
    let settled = disk_usage(dir);
    drop(e);
    let _ = std::fs::remove_dir_all(dir);
    Ok((right_after, settled, total as f64 / secs))
}

/// Fills a store with `total` pending events, closes it, and times the open and
/// the read of the first pending delivery and its event.
fn reopen(kind: Kind, dir: &Path, total: usize) -> Res<(f64, f64)> {
    {
        let mut e = kind.open(dir)?;
        let size = 256;
        for i in 0..total.div_ceil(size) {
            e.write(&batch((i * size) as u64, size))?;
            e.commit()?;
        }
    }
    let t = Instant::now();
    let mut e = kind.open(dir)?;
    let opened = t.elapsed().as_secs_f64() * 1e3;
    let first = e.first_pending()?;
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    if first.is_none_or(|(_, len)| len == 0) {
        return Err(format!("{}: no first pending event after reopen", kind.name()).into());
    }
    drop(e);
    let _ = std::fs::remove_dir_all(dir);
    Ok((opened, first_ms))
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Res<()> {
    let rounds = env_usize("ENGINES_ROUNDS", 3);
    let churn_events = env_usize("ENGINES_CHURN_EVENTS", 7_200_000);
    let pending = env_usize("ENGINES_PENDING", 1_000_000);
    let base: PathBuf =
        std::env::var_os("ENGINES_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let tmp = tempfile::tempdir_in(base)?;
    let only = std::env::var("ENGINES_ONLY").unwrap_or_default();
    let kinds: Vec<Kind> = [
        Kind::Floor,
        Kind::FloorInPlace,
        Kind::Sled,
        Kind::SledFsync,
        Kind::Fjall,
        Kind::Redb,
        Kind::Log,
    ]
    .into_iter()
    .filter(|k| k.is_floor() || only.is_empty() || only.split(',').any(|o| o == k.key()))
    .collect();
    let sizes = [(1usize, 2000usize), (16, 500), (256, 100)];

    println!("commit latency, median of {rounds} interleaved rounds (µs; CPU µs per event)");
    println!(
        "{:<18} {:>24} {:>24} {:>24}",
        "engine", "batch 1: p50 p99 cpu", "batch 16: p50 p99 cpu", "batch 256: p50 p99 cpu"
    );
    let mut results: Vec<Vec<Vec<Commits>>> = kinds
        .iter()
        .map(|_| sizes.iter().map(|_| Vec::new()).collect())
        .collect();
    for round in 0..rounds {
        for (si, (size, n)) in sizes.iter().enumerate() {
            for (ki, kind) in kinds.iter().enumerate() {
                let dir = tmp.path().join(format!("{}-{round}-{size}", kind.key()));
                results[ki][si].push(commits(*kind, &dir, *size, *n)?);
            }
        }
    }
    // The lower of the two floors: what a commit cannot beat on this disk.
    let mut floor_p99 = [f64::INFINITY; 3];
    for (ki, kind) in kinds.iter().enumerate() {
        let mut line = format!("{:<18}", kind.name());
        for (si, runs) in results[ki].iter().enumerate() {
            let p50 = median(runs.iter().map(|c| c.p50_us).collect());
            let p99 = median(runs.iter().map(|c| c.p99_us).collect());
            let cpu = median(runs.iter().map(|c| c.cpu_us_per_event).collect());
            if kind.is_floor() {
                floor_p99[si] = floor_p99[si].min(p99);
            }
            line += &format!(" {p50:>7.0} {p99:>7.0} {cpu:>7.1}");
        }
        println!("{line}");
    }
    println!("p99 / the lower floor's p99:");
    for (ki, kind) in kinds.iter().enumerate().skip(2) {
        let mut line = format!("{:<18}", kind.name());
        for (si, runs) in results[ki].iter().enumerate() {
            let p99 = median(runs.iter().map(|c| c.p99_us).collect());
            line += &format!(" {:>23.2}x", p99 / floor_p99[si]);
        }
        println!("{line}");
    }

    println!("\nchurn: {churn_events} events (batches of 256, all acknowledged), bytes on disk");
    for kind in kinds.iter().skip(2) {
        let dir = tmp.path().join(format!("{}-churn", kind.key()));
        let (after, settled, rate) = churn(*kind, &dir, churn_events)?;
        println!(
            "{:<18} right after {:>7.1} MiB   5 s later {:>7.1} MiB   ({rate:.0} events/s)",
            kind.name(),
            after as f64 / 1048576.0,
            settled as f64 / 1048576.0
        );
    }

    println!("\nreopen with {pending} pending events");
    for kind in kinds.iter().skip(2) {
        let dir = tmp.path().join(format!("{}-reopen", kind.key()));
        let (open_ms, first_ms) = reopen(*kind, &dir, pending)?;
        println!(
            "{:<18} open {open_ms:>8.1} ms   first delivery read {first_ms:>8.1} ms",
            kind.name()
        );
    }
    Ok(())
}
