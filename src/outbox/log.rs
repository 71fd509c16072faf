//! An append-only segment log: the engine the outbox-engine bake-off chose
//! (BENCHMARKS.md "Outbox engines"), a commit costing what the disk's floor costs.
//!
//! - `<dir>/seg-<n>`: segments, numbered up from 1, each `SEGMENT_HEADER` bytes of
//!   header then records. A segment is zero-filled to its full size and synced
//!   (when the file system had room for a spare; else it is made sparse)
//!   before it takes its first record, so a commit overwrites blocks the file
//!   system already has: its `fdatasync` writes data, never a new file size or
//!   extent, which is what makes it as cheap as the in-place floor.
//! - `<dir>/spare`: the next segment, zero-filled ahead of need (or a retired one,
//!   kept for reuse), so a rotation is a rename, not a segment's worth of zeros
//!   written under a commit.
//!
//! A record is `len: u32 LE`, `crc: u32 LE`, `kind: u8`, then `len` bytes. The CRC
//! covers the segment's number, the kind and the bytes: a reused segment's old
//! records fail it and read as the end of the log. A full segment ends with a seal
//! record, and every batch taken with a commit record: an open hands over only
//! records a commit record follows, so a batch is applied whole or not at all. Scanning stops at the first record that does not check: in the newest
//! segment that is where the last commit ended (or was torn by a crash; either way
//! nothing after it was acknowledged); in an older, unsealed one it is damage,
//! reported with the bytes it costs.
//!
//! Appending only fills memory, but for starting a segment (a rename and two
//! syncs, once a segment); [`Log::take`] hands the bytes over as a [`Batch`]
//! that is written and synced without the log (and whoever guards it) being
//! held, so readers and appenders do not wait for a batch's flush.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the log could not do what was asked. Names files, never record contents.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A read, write, sync, rename or removal failed.
    #[error("outbox log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A record larger than a segment can hold.
    #[error("outbox log record of {0} bytes does not fit in a segment")]
    TooLarge(usize),
    /// An earlier failure to start a segment left the log unable to place
    /// records safely: nothing more is taken until it is reopened.
    #[error("outbox log stopped taking records after an earlier error")]
    Stopped,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The header of a segment made from zeros: anything non-zero after its last
/// commit was written by this segment's own commits (a batch cut short).
const MAGIC: &[u8; 8] = b"SIPHLOG1";
/// The header of a segment made from a retired one: after its last commit lie
/// the old segment's bytes, which are not a crash's loss.
const MAGIC_REUSED: &[u8; 8] = b"SIPHLOGR";
/// Magic, then the segment's number.
pub const SEGMENT_HEADER: u64 = 16;
/// `len`, `crc`, `kind`.
pub const RECORD_HEADER: usize = 9;
/// The log's own record: "this segment is complete, the next one follows".
/// Callers' kinds are below [`COMMIT`].
pub const SEAL: u8 = 0xff;
/// The log's own record that ends every batch taken: an open hands over only
/// records followed by one, so a batch is applied whole or not at all.
pub const COMMIT: u8 = 0xfe;
const SPARE: &str = "spare";
/// Smallest segment: room for a header and a few records.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// Where a record sits: enough to read it back and to know which segment it pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The segment's number.
    pub segment: u64,
    /// Byte offset of the record's header in the segment.
    pub at: u64,
}

/// What an open found beyond the records it handed over.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Segments read.
    pub segments: usize,
    /// Records handed over.
    pub records: u64,
    /// Non-zero bytes after the newest segment's last good record, zeroed: a
    /// commit cut short by a crash, or a reused segment's old contents.
    pub tail_bytes: u64,
    /// Older segments that stopped before their seal: `(segment, bytes after the
    /// last good record)`. Each is damage, not a crash's tail.
    pub damaged: Vec<(u64, u64)>,
}

fn crc(segment: u64, kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&segment.to_le_bytes());
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

fn segment_name(n: u64) -> String {
    format!("seg-{n:016}")
}

fn segment_number(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?.parse().ok()
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// One open segment file and its size.
#[derive(Clone)]
struct Segment {
    file: Arc<File>,
    bytes: u64,
}

/// Bytes appended to one segment, not yet on disk.
struct Chunk {
    segment: u64,
    file: Arc<File>,
    at: u64,
    bytes: Vec<u8>,
}

/// What [`Log::take`] handed over: written and synced by [`Batch::write`] on
/// any thread, in the order it was taken. Batches must be written one at a
/// time and in take order (a later one synced first could survive a crash the
/// earlier one did not, behind a hole the next open stops at).
#[derive(Default)]
pub struct Batch {
    chunks: Arc<Vec<Chunk>>,
    dir: PathBuf,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.chunks.iter().all(|c| c.bytes.is_empty())
    }

    /// Bytes to write.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.bytes.len()).sum()
    }

    /// Writes every chunk, each segment synced (`fdatasync`) before the next is
    /// written when `sync`: once this returns, every record in it survives a
    /// power cut. Without `sync` (benchmarks of what the flush costs) a crash of
    /// the machine may take them.
    pub fn write(&self, sync: bool) -> Result<(), LogError> {
        for c in self.chunks.iter() {
            if c.bytes.is_empty() {
                continue;
            }
            let path = self.dir.join(segment_name(c.segment));
            c.file.write_all_at(&c.bytes, c.at).map_err(io(&path))?;
            if sync {
                c.file.sync_data().map_err(io(&path))?;
            }
        }
        Ok(())
    }
}

/// Reads one committed record from a segment handed out by [`Log::reader`]:
/// `None` when what is there does not check (the segment was reused since).
pub fn read_at(reader: &Reader, at: u64) -> Result<Option<(u8, Vec<u8>)>, LogError> {
    let io = |source| LogError::Io {
        path: reader.path.clone(),
        source,
    };
    let mut head = [0u8; RECORD_HEADER];
    reader.file.read_exact_at(&mut head, at).map_err(io)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if at + (RECORD_HEADER + len) as u64 > reader.bytes {
        // Not a record this log wrote: do not allocate what a damaged header says.
        return Ok(None);
    }
    let mut payload = vec![0u8; len];
    reader
        .file
        .read_exact_at(&mut payload, at + RECORD_HEADER as u64)
        .map_err(io)?;
    let want = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if crc(reader.segment, head[8], &payload) != want {
        return Ok(None);
    }
    Ok(Some((head[8], payload)))
}

/// A segment's file, for reading records without holding the log.
pub struct Reader {
    segment: u64,
    file: Arc<File>,
    bytes: u64,
    path: PathBuf,
}

/// The log, open for appending at the end of its newest segment.
pub struct Log {
    dir: PathBuf,
    /// Size of segments made from now on.
    segment_bytes: u64,
    /// The newest segment's number.
    segment: u64,
    /// Where the next record goes in it (what is taken or buffered included).
    end: u64,
    /// Records appended since the last take, per segment, in order.
    chunks: Vec<Chunk>,
    /// The last batch taken, until [`Log::landed`]: its records are read from
    /// memory until they are on disk.
    in_flight: Option<Arc<Vec<Chunk>>>,
    /// Every segment on disk, oldest first.
    files: BTreeMap<u64, Segment>,
    /// A segment could not be started after the newest was sealed: records
    /// placed after the seal would be lost, so none are.
    stopped: bool,
}

impl Log {
    /// Opens the log in `dir` (created if need be), handing every record to `each`
    /// in log order, and leaves it ready to append after the last good record.
    /// New segments are `segment_bytes` long (at least `MIN_SEGMENT_BYTES`); each
    /// existing one is read at the size it has.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        mut each: impl FnMut(Position, u8, &[u8]),
    ) -> Result<(Log, Recovery), LogError> {
        let segment_bytes = segment_bytes.max(MIN_SEGMENT_BYTES);
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(segment_number))
            .collect();
        numbers.sort_unstable();
        let mut recovery = Recovery {
            segments: numbers.len(),
            ..Recovery::default()
        };
        // Half-made spares of an earlier process (a crash while zero-filling).
        for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(SPARE_TMP))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let mut files = BTreeMap::new();
        // Records are handed over only once the commit record that ends their
        // batch is seen: a batch a crash cut short (one segment written, the
        // next not) is dropped whole, never applied in part.
        let mut held: Vec<(Position, u8, Vec<u8>)> = Vec::new();
        let mut committed: Option<Position> = None;
        // (segment, end of its good records, sealed, last non-zero byte + 1,
        // header: Some(reused) or None)
        let mut scanned = Vec::with_capacity(numbers.len());
        for &n in &numbers {
            let path = dir.join(segment_name(n));
            let mut file = File::options()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(io(&path))?;
            let (end, records, sealed) = scan(n, &bytes);
            let mut from = 0;
            for (k, &(pos, kind, _)) in records.iter().enumerate() {
                if kind != COMMIT {
                    continue;
                }
                for (p, kind, payload) in held.drain(..) {
                    each(p, kind, &payload);
                    recovery.records += 1;
                }
                for &(p, kind, ref r) in &records[from..k] {
                    each(p, kind, &bytes[r.clone()]);
                    recovery.records += 1;
                }
                from = k + 1;
                committed = Some(Position {
                    segment: n,
                    at: pos.at + RECORD_HEADER as u64,
                });
            }
            for &(p, kind, ref r) in &records[from..] {
                held.push((p, kind, bytes[r.clone()].to_vec()));
            }
            if !sealed && n != numbers.last().copied().unwrap_or(n) {
                // Damage: what was held from before it cannot be completed.
                held.clear();
            }
            let rest = bytes.get(end as usize..).unwrap_or_default();
            let used = end
                + rest
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(0, |p| p as u64 + 1);
            scanned.push((n, end, sealed, used, header(n, &bytes)));
            files.insert(
                n,
                Segment {
                    file: Arc::new(file),
                    bytes: bytes.len() as u64,
                },
            );
        }
        // The log ends after the last commit record. Later segments hold only
        // records of a batch that never finished: they go; and in the segment of
        // the last commit, what follows it (that batch's first part, its seal, a
        // reused segment's old bytes) is zeroed.
        let last = committed.unwrap_or(Position {
            segment: numbers.first().copied().unwrap_or(1),
            at: SEGMENT_HEADER,
        });
        for &(n, end, ..) in scanned.iter().filter(|s| s.0 > last.segment) {
            let path = dir.join(segment_name(n));
            files.remove(&n);
            std::fs::remove_file(&path).map_err(io(&path))?;
            recovery.tail_bytes += end.saturating_sub(SEGMENT_HEADER);
            recovery.segments -= 1;
        }
        if numbers.iter().any(|&n| n > last.segment) {
            sync_dir(dir)?;
        }
        numbers.retain(|&n| n <= last.segment);
        let mut last_end = SEGMENT_HEADER;
        // Bytes to clear after the last commit, and whether the header is bad.
        let mut clear = 0;
        let mut bad_header = false;
        for &(n, end, sealed, used, head) in &scanned {
            if n == last.segment {
                // Own records after the last commit are a cut batch; after them,
                // a fresh segment has only zeros (so anything else is the cut
                // batch too), a reused one the old segment's bytes.
                let stop = if head == Some(true) {
                    end
                } else {
                    used.max(end)
                };
                recovery.tail_bytes += stop.saturating_sub(last.at);
                clear = stop.saturating_sub(last.at);
                last_end = last.at;
                bad_header = head.is_none();
            } else if n < last.segment && !sealed {
                recovery.damaged.push((n, used.saturating_sub(end).max(1)));
            }
        }
        let mut log = Log {
            dir: dir.to_path_buf(),
            segment_bytes,
            segment: numbers.last().copied().unwrap_or(0),
            end: last_end,
            chunks: Vec::new(),
            in_flight: None,
            files,
            stopped: false,
        };
        if numbers.is_empty() {
            // The first segment is zero-filled like every spare, when the disk
            // has room for it; its commits then never allocate.
            if log.spare_fits() {
                log.prepare_spare()?;
            }
            log.start_segment(1)?;
        } else {
            if bad_header {
                // Started, and killed before its header was written: write it, or
                // the next open would not read what goes in now.
                log.write_header(last.segment)?;
            }
            if clear > 0 {
                // What follows the last commit must not read as records after the
                // next commit writes less than it: zero it now, durably.
                log.zero_tail(clear)?;
            }
        }
        Ok((log, recovery))
    }

    fn write_header(&self, n: u64) -> Result<(), LogError> {
        let path = self.dir.join(segment_name(n));
        let Some(seg) = self.files.get(&n) else {
            return Ok(());
        };
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&n.to_le_bytes());
        seg.file.write_all_at(&header, 0).map_err(io(&path))?;
        seg.file.sync_data().map_err(io(&path))
    }

    fn newest(&self) -> Option<&Segment> {
        self.files.get(&self.segment)
    }

    fn zero_tail(&mut self, len: u64) -> Result<(), LogError> {
        let path = self.dir.join(segment_name(self.segment));
        let Some(seg) = self.newest().cloned() else {
            return Ok(());
        };
        let zeros = vec![0u8; 1 << 20];
        let stop = (self.end + len).min(seg.bytes);
        let mut at = self.end;
        while at < stop {
            let n = (stop - at).min(zeros.len() as u64) as usize;
            seg.file.write_all_at(&zeros[..n], at).map_err(io(&path))?;
            at += n as u64;
        }
        seg.file.sync_data().map_err(io(&path))
    }

    /// Makes `seg-<n>` the newest segment, from the spare when there is one.
    /// Without one the file is made at its full size but sparse: correct, only
    /// its first commits pay for allocating blocks. The name is synced before
    /// anything is written into it.
    fn start_segment(&mut self, n: u64) -> Result<(), LogError> {
        let spare = self.dir.join(SPARE);
        let path = self.dir.join(segment_name(n));
        // Renamed first and opened by its new name: the spare maker may replace
        // `spare` at any moment, and a handle opened before the rename could be
        // to the file it replaced (unlinked, so every record written to it lost).
        let usable = std::fs::metadata(&spare).is_ok_and(|m| m.len() >= self.segment_bytes);
        let from_spare = usable && std::fs::rename(&spare, &path).is_ok();
        let file = if from_spare {
            File::options()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(&path))?
        } else {
            // No spare, or one made for smaller segments (max_bytes was raised):
            // a new file at full size, sparse.
            let f = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io(&path))?;
            f.set_len(self.segment_bytes).map_err(io(&path))?;
            f
        };
        let bytes = file.metadata().map_err(io(&path))?.len();
        let mut old = [0u8; 8];
        let reused = file.read_exact_at(&mut old, 0).is_ok() && old != [0u8; 8];
        let mut header = if reused { MAGIC_REUSED } else { MAGIC }.to_vec();
        header.extend_from_slice(&n.to_le_bytes());
        file.write_all_at(&header, 0).map_err(io(&path))?;
        file.sync_data().map_err(io(&path))?;
        sync_dir(&self.dir)?;
        self.files.insert(
            n,
            Segment {
                file: Arc::new(file),
                bytes,
            },
        );
        self.segment = n;
        self.end = SEGMENT_HEADER;
        Ok(())
    }

    fn push(&mut self, kind: u8, payload: &[u8]) -> Result<Position, LogError> {
        let len = u32::try_from(payload.len()).map_err(|_| LogError::TooLarge(payload.len()))?;
        let at = self.end;
        let segment = self.segment;
        let needs_chunk = self.chunks.last().is_none_or(|c| c.segment != segment);
        if needs_chunk {
            let file = match self.newest() {
                Some(s) => s.file.clone(),
                None => return Err(io(&self.dir)(std::io::ErrorKind::NotFound.into())),
            };
            self.chunks.push(Chunk {
                segment,
                file,
                at,
                bytes: Vec::new(),
            });
        }
        if let Some(c) = self.chunks.last_mut() {
            c.bytes.extend_from_slice(&len.to_le_bytes());
            c.bytes
                .extend_from_slice(&crc(segment, kind, payload).to_le_bytes());
            c.bytes.push(kind);
            c.bytes.extend_from_slice(payload);
        }
        self.end += (RECORD_HEADER + payload.len()) as u64;
        Ok(Position { segment, at })
    }

    /// Adds a record to the next commit; returns where it will sit. A record
    /// that does not fit seals the newest segment and starts the next one (a
    /// rename and two syncs: the only I/O an append does).
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<Position, LogError> {
        let size = (RECORD_HEADER + payload.len()) as u64;
        let room = |bytes: u64| bytes.saturating_sub(SEGMENT_HEADER + 2 * RECORD_HEADER as u64);
        if size > room(self.segment_bytes) {
            return Err(LogError::TooLarge(payload.len()));
        }
        if self.stopped {
            return Err(LogError::Stopped);
        }
        let cap = self.newest().map_or(0, |s| s.bytes);
        // Room is kept for a commit record and a seal after every record.
        if self.end + size + 2 * RECORD_HEADER as u64 > cap {
            let (segment, end) = (self.segment, self.end);
            let chunk_len = self.chunks.last().map(|c| (c.segment, c.bytes.len()));
            self.push(SEAL, &[])?;
            if let Err(e) = self.start_segment(segment + 1) {
                // The seal goes back out: the commit record that ends this batch
                // must land before it, or the open would never see it.
                match chunk_len {
                    Some((s, len)) if s == segment => {
                        if let Some(c) = self.chunks.last_mut() {
                            c.bytes.truncate(len);
                        }
                    }
                    _ => {
                        self.chunks.pop();
                    }
                }
                self.end = end;
                self.stopped = true;
                return Err(e);
            }
        }
        self.push(kind, payload)
    }

    /// Hands over what was appended since the last take, to be written by
    /// [`Batch::write`].
    pub fn take(&mut self) -> Batch {
        if !self.chunks.is_empty() {
            // Room for it is kept by `append`; a failure here cannot happen
            // short of a record count past u32, and would only lose the batch.
            let _ = self.push(COMMIT, &[]);
        }
        let chunks = Arc::new(std::mem::take(&mut self.chunks));
        self.in_flight = Some(chunks.clone());
        Batch {
            chunks,
            dir: self.dir.clone(),
        }
    }

    /// The batch taken last is written: its records are read from disk now.
    pub fn landed(&mut self) {
        self.in_flight = None;
    }

    /// Takes and writes what was appended, synced: for a caller that holds the
    /// log alone anyway (tools, tests, the benchmark).
    pub fn commit(&mut self) -> Result<(), LogError> {
        self.take().write(true)?;
        self.landed();
        Ok(())
    }

    /// The record at `at` if it is not on disk yet (appended, or taken and not
    /// yet written): `(kind, payload)`.
    pub fn unwritten(&self, at: Position) -> Option<(u8, Vec<u8>)> {
        let flying = self.in_flight.iter().flat_map(|c| c.iter());
        let chunk = flying.chain(self.chunks.iter()).find(|c| {
            c.segment == at.segment && c.at <= at.at && at.at < c.at + c.bytes.len() as u64
        })?;
        let from = (at.at - chunk.at) as usize;
        let head = chunk.bytes.get(from..from + RECORD_HEADER)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let payload = chunk
            .bytes
            .get(from + RECORD_HEADER..from + RECORD_HEADER + len)?;
        Some((head[8], payload.to_vec()))
    }

    /// A handle to read `segment`'s records without holding the log.
    pub fn reader(&self, segment: u64) -> Option<Reader> {
        self.files.get(&segment).map(|s| Reader {
            segment,
            file: s.file.clone(),
            bytes: s.bytes,
            path: self.dir.join(segment_name(segment)),
        })
    }

    /// Reads back the record at `at`.
    pub fn read(&self, at: Position) -> Result<Option<(u8, Vec<u8>)>, LogError> {
        if let Some(r) = self.unwritten(at) {
            return Ok(Some(r));
        }
        match self.reader(at.segment) {
            Some(r) => read_at(&r, at.at),
            None => Ok(None),
        }
    }

    /// The newest segment's number: records appended now land in it or later.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// The oldest segment still on disk.
    pub fn oldest(&self) -> u64 {
        self.files.keys().next().copied().unwrap_or(self.segment)
    }

    /// Segments on disk.
    pub fn segments(&self) -> usize {
        self.files.len()
    }

    /// Size of the segments made from now on.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// Drops every segment below `keep_from` (never the newest). The first one
    /// dropped becomes the spare when there is none, so steady traffic reuses
    /// blocks instead of zero-filling new ones. Only segments whose records are
    /// all on disk may go: call it after the batch that sealed them is written.
    pub fn retire_below(&mut self, keep_from: u64) -> Result<usize, LogError> {
        let upto = keep_from.min(self.segment);
        let gone: Vec<u64> = self.files.range(..upto).map(|(&n, _)| n).collect();
        for &n in &gone {
            let path = self.dir.join(segment_name(n));
            let spare = self.dir.join(SPARE);
            let reusable = self
                .files
                .get(&n)
                .is_some_and(|s| s.bytes == self.segment_bytes);
            if reusable && !spare.exists() {
                std::fs::rename(&path, &spare).map_err(io(&path))?;
            } else {
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
            self.files.remove(&n);
        }
        if !gone.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(gone.len())
    }

    /// Whether the next rotation would find no spare.
    pub fn needs_spare(&self) -> bool {
        !self.dir.join(SPARE).exists()
    }

    /// Whether the file system has room for a spare and as much again: zero-
    /// filling one must never take the last free blocks a commit into a
    /// segment made without a spare (sparse) may need.
    pub fn spare_fits(&self) -> bool {
        match rustix::fs::statvfs(&self.dir) {
            Ok(v) => {
                let free = v.f_bavail.saturating_mul(v.f_frsize);
                free >= self.segment_bytes.saturating_mul(2)
            }
            Err(_) => false,
        }
    }

    /// Makes sure a spare exists, so the next rotation renames instead of writing
    /// a whole segment. Slow (a segment's worth of zeros): call it off the commit
    /// path, or through [`Log::spare_maker`] without holding the log.
    pub fn prepare_spare(&self) -> Result<(), LogError> {
        if self.needs_spare() {
            prepare_spare(&self.dir, self.segment_bytes)?;
        }
        Ok(())
    }

    /// What [`Log::prepare_spare`] needs, to run it on another thread.
    pub fn spare_maker(&self) -> impl FnOnce() -> Result<(), LogError> + Send + 'static {
        let (dir, bytes) = (self.dir.clone(), self.segment_bytes);
        move || {
            if dir.join(SPARE).exists() {
                return Ok(());
            }
            prepare_spare(&dir, bytes)
        }
    }

    /// Bytes the log's files take: its segments and the spare.
    pub fn size_on_disk(&self) -> u64 {
        let segments: u64 = self.files.values().map(|s| s.bytes).sum();
        let spare = std::fs::metadata(self.dir.join(SPARE)).map_or(0, |m| m.len());
        segments + spare
    }
}

/// Names of spares being made: each maker writes its own file, so two (a store
/// closed and reopened in one process, its old maker still running) never write
/// one file between them.
static SPARE_MAKERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
const SPARE_TMP: &str = "spare.tmp";

fn prepare_spare(dir: &Path, segment_bytes: u64) -> Result<(), LogError> {
    let n = SPARE_MAKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{SPARE_TMP}.{}.{n}", std::process::id()));
    let zeroed = (|| {
        let mut file = File::create(&tmp)?;
        let zeros = vec![0u8; 1 << 20];
        let mut left = segment_bytes;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    })();
    if let Err(e) = zeroed {
        // A half-made spare must not keep the blocks it took (a full disk).
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    let spare = dir.join(SPARE);
    std::fs::rename(&tmp, &spare).map_err(io(&spare))?;
    sync_dir(dir)
}

/// Whether segment `n`'s header checks: `Some(reused)`, or `None`.
fn header(n: u64, bytes: &[u8]) -> Option<bool> {
    if bytes.get(8..16) != Some(n.to_le_bytes().as_slice()) {
        return None;
    }
    match bytes.get(..8) {
        Some(m) if m == MAGIC.as_slice() => Some(false),
        Some(m) if m == MAGIC_REUSED.as_slice() => Some(true),
        _ => None,
    }
}

/// A record found by [`scan`]: where, its kind, and its payload's bytes.
type Scanned = (Position, u8, std::ops::Range<usize>);

/// Segment `n`'s good records, `(position, kind, payload range)`, the seal not
/// included; where they end, and whether the segment ends with its seal.
fn scan(n: u64, bytes: &[u8]) -> (u64, Vec<Scanned>, bool) {
    let mut records = Vec::new();
    if header(n, bytes).is_none() {
        return (SEGMENT_HEADER, records, false);
    }
    let mut at = SEGMENT_HEADER as usize;
    while let Some(head) = bytes.get(at..at + RECORD_HEADER) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let want = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let kind = head[8];
        let body = at + RECORD_HEADER..at + RECORD_HEADER + len;
        let Some(payload) = bytes.get(body.clone()) else {
            break;
        };
        if (len == 0 && want == 0 && kind == 0) || crc(n, kind, payload) != want {
            break;
        }
        let pos = Position {
            segment: n,
            at: at as u64,
        };
        at = body.end;
        if kind == SEAL {
            return (at as u64, records, true);
        }
        records.push((pos, kind, body));
    }
    (at as u64, records, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 64 * 1024;

    type Seen = Vec<(Position, u8, Vec<u8>)>;

    fn reopen(dir: &Path) -> (Log, Recovery, Seen) {
        let mut seen = Vec::new();
        let (log, rec) = Log::open(dir, SEG, |p, k, b| seen.push((p, k, b.to_vec()))).unwrap();
        (log, rec, seen)
    }

    #[test]
    fn committed_records_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, seen) = reopen(dir.path());
        assert!(seen.is_empty());
        let mut wrote = Vec::new();
        for i in 0..300u32 {
            let body = vec![(i % 251) as u8; 500 + i as usize];
            let p = log.append((i % 7) as u8 + 1, &body).unwrap();
            wrote.push((p, (i % 7) as u8 + 1, body));
            if i % 10 == 9 {
                log.commit().unwrap();
            }
        }
        log.commit().unwrap();
        assert!(
            log.segment() > 2,
            "300 records of ~650 B span several 64 KiB segments"
        );
        let (p, k, b) = &wrote[123];
        assert_eq!(log.read(*p).unwrap(), Some((*k, b.clone())));
        drop(log);
        let (_, rec, seen) = reopen(dir.path());
        assert_eq!(seen, wrote);
        assert_eq!(rec.records, 300);
        assert_eq!((rec.tail_bytes, rec.damaged.len()), (0, 0));
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_whole_record_and_zeroed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = reopen(dir.path());
        for i in 0..20u8 {
            log.append(1, &[i; 100]).unwrap();
        }
        log.commit().unwrap();
        let last = log.append(1, &[99; 100]).unwrap();
        log.commit().unwrap();
        drop(log);
        // The last record's second half never reached the disk.
        let path = dir.path().join(segment_name(1));
        let f = File::options().write(true).open(&path).unwrap();
        f.write_all_at(&[0u8; 60], last.at + 60).unwrap();
        drop(f);
        let (mut log, rec, seen) = reopen(dir.path());
        assert_eq!(seen.len(), 20);
        assert_eq!(rec.tail_bytes, 60, "the torn record's first 60 bytes");
        // The next commit is shorter than the torn one: its leftovers must not read
        // as a record after it.
        log.append(2, &[7; 10]).unwrap();
        log.commit().unwrap();
        drop(log);
        let (_, rec, seen) = reopen(dir.path());
        assert_eq!(seen.len(), 21);
        assert_eq!(seen[20].1, 2);
        assert_eq!(rec.tail_bytes, 0);
    }

    #[test]
    fn retired_segments_are_reused_and_their_old_records_never_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = reopen(dir.path());
        for i in 0..400u32 {
            log.append(3, &i.to_le_bytes().repeat(100)).unwrap();
            log.commit().unwrap();
            log.retire_below(log.segment()).unwrap();
        }
        let live: Vec<u64> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(segment_number))
            .collect();
        assert_eq!(live, vec![log.segment()], "only the newest segment is kept");
        assert!(dir.path().join(SPARE).exists());
        assert_eq!(log.size_on_disk(), 2 * SEG);
        let newest = log.segment();
        drop(log);
        let (log, rec, seen) = reopen(dir.path());
        assert_eq!(log.segment(), newest);
        assert!(seen.iter().all(|(p, _, _)| p.segment == newest));
        let first = u32::from_le_bytes(seen[0].2[..4].try_into().unwrap());
        assert_eq!(
            seen.len() as u32,
            400 - first,
            "every record of the newest segment"
        );
        assert_eq!(rec.damaged, vec![]);
    }

    #[test]
    fn a_batch_cut_between_its_segments_is_dropped_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = reopen(dir.path());
        for i in 0..10u8 {
            log.append(1, &[i; 1000]).unwrap();
        }
        log.commit().unwrap();
        // One batch that starts a new segment halfway through.
        let first = log.segment();
        while log.segment() == first {
            log.append(2, &[7; 1000]).unwrap();
        }
        log.append(2, &[8; 1000]).unwrap();
        log.commit().unwrap();
        let second = log.segment();
        drop(log);
        // The crash came after the first segment's part was synced, before the
        // second's was written: only its header is there.
        let path = dir.path().join(segment_name(second));
        let f = File::options().write(true).open(&path).unwrap();
        f.write_all_at(&vec![0u8; (SEG - SEGMENT_HEADER) as usize], SEGMENT_HEADER)
            .unwrap();
        drop(f);
        let (mut log, rec, seen) = reopen(dir.path());
        assert_eq!(seen.len(), 10, "none of the cut batch is handed over");
        assert!(seen.iter().all(|(_, k, _)| *k == 1));
        assert!(rec.tail_bytes > 0 && rec.damaged.is_empty());
        assert_eq!(
            log.segment(),
            first,
            "appending goes on after the last commit"
        );
        assert!(!path.exists());
        log.append(3, b"after").unwrap();
        log.commit().unwrap();
        drop(log);
        let (_, rec, seen) = reopen(dir.path());
        assert_eq!(seen.len(), 11);
        assert_eq!(seen[10].1, 3);
        assert_eq!((rec.tail_bytes, rec.damaged.len()), (0, 0));
    }

    #[test]
    fn a_segment_that_cannot_start_leaves_the_batch_before_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = reopen(dir.path());
        // Something holds the next segment's name: starting it fails.
        std::fs::write(dir.path().join(segment_name(2)), b"in the way").unwrap();
        let mut kept = 0;
        let failed = loop {
            match log.append(1, &[5; 1000]) {
                Ok(_) => kept += 1,
                Err(e) => break e,
            }
            assert!(kept < 1000, "the segment never filled");
        };
        assert!(matches!(failed, LogError::Io { .. }), "{failed}");
        assert!(matches!(log.append(1, b"x"), Err(LogError::Stopped)));
        log.commit().unwrap();
        drop(log);
        let (_, rec, seen) = reopen(dir.path());
        assert_eq!(
            seen.len(),
            kept,
            "every record before the failure, committed"
        );
        assert!(rec.damaged.is_empty());
    }

    #[test]
    fn a_reused_segments_old_bytes_are_not_reported_as_a_cut_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = reopen(dir.path());
        // Enough turnover that the newest segment is a reused one.
        for i in 0..400u32 {
            log.append(3, &i.to_le_bytes().repeat(100)).unwrap();
            log.commit().unwrap();
            log.retire_below(log.segment()).unwrap();
        }
        drop(log);
        let (_, rec, seen) = reopen(dir.path());
        assert!(!seen.is_empty());
        assert_eq!((rec.tail_bytes, rec.damaged.len()), (0, 0), "a clean stop");
    }
}
