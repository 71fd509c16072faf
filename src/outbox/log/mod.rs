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
//! Appending only fills memory, but for starting a segment (a rename and a
//! header write, once a segment; its syncs go with the next batch); [`Log::take`] hands the bytes over as a [`Batch`]
//! that is written and synced without the log (and whoever guards it) being
//! held, so readers and appenders do not wait for a batch's flush.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod open;
mod spare;

pub use open::Recovery;
pub use spare::{Retired, SpareMaker};
use spare::{SPARE_TMP, needs_spare, prepare_spare, spare_fits};

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
    /// Segments started since the last take: their headers and names are made
    /// durable before any chunk is written.
    started: Vec<(u64, Arc<File>)>,
    dir: PathBuf,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.started.is_empty() && self.chunks.iter().all(|c| c.bytes.is_empty())
    }

    /// Writes every chunk, each segment synced (`fdatasync`) before the next is
    /// written when `sync`: once this returns, every record in it survives a
    /// power cut. Without `sync` (benchmarks of what the flush costs) a crash of
    /// the machine may take them.
    ///
    /// A segment started in this batch has its header and its name synced
    /// first, here rather than under the log's lock (a directory sync can wait
    /// for the file system's journal, seconds on a busy disk, and appenders
    /// would wait with it). So a seal that reaches the disk always has its next
    /// segment there; a crash before that leaves a segment with no commit in
    /// it, which the next open removes.
    pub fn write(&self, sync: bool) -> Result<(), LogError> {
        if sync && !self.started.is_empty() {
            for (n, file) in &self.started {
                let path = self.dir.join(segment_name(*n));
                file.sync_data().map_err(io(&path))?;
            }
            sync_dir(&self.dir)?;
        }
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
    /// Segments started since the last take, not yet synced: the next batch
    /// syncs them before its records.
    started: Vec<(u64, Arc<File>)>,
}

impl Log {
    fn newest(&self) -> Option<&Segment> {
        self.files.get(&self.segment)
    }

    /// Makes `seg-<n>` the newest segment, from the spare when there is one.
    /// Without one the file is made at its full size but sparse: correct, only
    /// its first commits pay for allocating blocks. Its header and name are
    /// synced by the next batch, before its records (see [`Batch::write`]).
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
        let file = Arc::new(file);
        self.started.push((n, file.clone()));
        self.files.insert(n, Segment { file, bytes });
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
    /// rename and a header write into the page cache: the only I/O an append
    /// does).
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
            started: std::mem::take(&mut self.started),
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

    /// Takes every segment below `keep_from` (never the newest) off the log, for
    /// [`Retired::apply`] to rename into the spare (so steady traffic reuses
    /// blocks instead of zero-filling new ones) or remove. Only memory changes:
    /// the file work is left to the caller, outside whatever guards the log.
    /// Only segments whose records are all on disk may go: call it after the
    /// batch that sealed them is written.
    pub fn plan_retire(&mut self, keep_from: u64) -> Retired {
        let upto = keep_from.min(self.segment);
        let gone: Vec<u64> = self.files.range(..upto).map(|(&n, _)| n).collect();
        let mut files = Vec::with_capacity(gone.len());
        for n in gone {
            if let Some(s) = self.files.remove(&n) {
                let reusable = s.bytes == self.segment_bytes;
                files.push((self.dir.join(segment_name(n)), reusable));
            }
        }
        Retired {
            dir: self.dir.clone(),
            files,
        }
    }

    /// [`Log::plan_retire`] and [`Retired::apply`] at once: for a caller that
    /// holds the log alone (tools, tests, the benchmark).
    pub fn retire_below(&mut self, keep_from: u64) -> Result<usize, LogError> {
        self.plan_retire(keep_from).apply().map_err(|(e, _)| e)
    }

    /// Whether the next rotation would find no spare.
    pub fn needs_spare(&self) -> bool {
        needs_spare(&self.dir)
    }

    /// Whether it is time to make a spare that is missing: once the newest
    /// segment is half full. Right after a rotation the segment before is
    /// usually about to retire and become the spare itself; zero-filling one
    /// then writes a segment of zeros the disk's commits queue behind.
    pub fn spare_due(&self) -> bool {
        self.end.saturating_mul(2) >= self.segment_bytes
    }

    /// Whether the file system has room for a spare and as much again: zero-
    /// filling one must never take the last free blocks a commit into a
    /// segment made without a spare (sparse) may need.
    pub fn spare_fits(&self) -> bool {
        spare_fits(&self.dir, self.segment_bytes)
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
    pub fn spare_maker(&self) -> SpareMaker {
        SpareMaker {
            dir: self.dir.clone(),
            segment_bytes: self.segment_bytes,
        }
    }

    /// Bytes the log's files take: its segments and the spare.
    pub fn size_on_disk(&self) -> u64 {
        let segments: u64 = self.files.values().map(|s| s.bytes).sum();
        let spare = std::fs::metadata(self.dir.join(SPARE)).map_or(0, |m| m.len());
        segments + spare
    }
}

#[cfg(test)]
mod tests;
