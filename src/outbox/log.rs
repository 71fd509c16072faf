//! An append-only segment log: the engine the outbox-engine bake-off points to
//! (BENCHMARKS.md "Outbox engines"), a commit costing what the disk's floor costs.
//!
//! - `<dir>/seg-<n>`: segments, numbered up from 1, each `SEGMENT_HEADER` bytes of
//!   header then records. A segment is zero-filled to its full size and synced
//!   before it takes its first record, so a commit overwrites blocks the file
//!   system already has: its `fdatasync` writes data, never a new file size or
//!   extent, which is what makes it as cheap as the in-place floor.
//! - `<dir>/spare`: the next segment, zero-filled ahead of need (or a retired one,
//!   kept for reuse), so a rotation is a rename, not 64 MiB written under a commit.
//!
//! A record is `len: u32 LE`, `crc: u32 LE`, `kind: u8`, then `len` bytes. The CRC
//! covers the segment's number, the kind and the bytes: a reused segment's old
//! records fail it and read as the end of the log. Scanning stops at the first
//! record that does not check: in the newest segment that is where the last commit
//! ended (or was torn by a crash; either way nothing after it was acknowledged); in
//! an older one it is damage, reported with the bytes it costs.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const MAGIC: &[u8; 8] = b"SIPHLOG1";
/// Magic, then the segment's number.
pub const SEGMENT_HEADER: u64 = 16;
/// `len`, `crc`, `kind`.
pub const RECORD_HEADER: usize = 9;
const SPARE: &str = "spare";
/// Smallest segment: room for a header and a few records.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// Where a record sits: enough to read it back and to know which segment it pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
    /// Non-zero bytes after the newest segment's last good record: a commit cut
    /// short by a crash, or a reused segment's old contents.
    pub tail_bytes: u64,
    /// Segments before the newest whose records stopped early: `(segment, bytes
    /// after the last good record)`. Each is damage, not a crash's tail.
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

/// The log, open for appending at the end of its newest segment.
pub struct Log {
    dir: PathBuf,
    segment_bytes: u64,
    /// The newest segment's number, file and end.
    segment: u64,
    file: File,
    end: u64,
    /// Records appended since the last commit, framed, in order.
    buf: Vec<u8>,
    /// Oldest segment still on disk.
    oldest: u64,
}

impl Log {
    /// Opens the log in `dir` (created if need be), handing every record to `each`
    /// in log order, and leaves it ready to append after the last good record.
    /// Segments are `segment_bytes` long (at least `MIN_SEGMENT_BYTES`); a log must
    /// be reopened with the size it was written with.
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
        let mut last_end = SEGMENT_HEADER;
        for (i, &n) in numbers.iter().enumerate() {
            let path = dir.join(segment_name(n));
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io(&path))?;
            let (end, records) = scan(n, &bytes, &mut each);
            recovery.records += records;
            let rest = bytes.get(end as usize..).unwrap_or_default();
            let after = rest
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |p| p as u64 + 1);
            if i + 1 == numbers.len() {
                recovery.tail_bytes = after;
                last_end = end;
            } else if after > 0 {
                recovery.damaged.push((n, after));
            }
        }
        let oldest = numbers.first().copied().unwrap_or(1);
        let mut log = match numbers.last() {
            Some(&n) => {
                let path = dir.join(segment_name(n));
                let file = File::options().write(true).open(&path).map_err(io(&path))?;
                Log {
                    dir: dir.to_path_buf(),
                    segment_bytes,
                    segment: n,
                    file,
                    end: last_end,
                    buf: Vec::new(),
                    oldest,
                }
            }
            None => {
                let file = Self::take_spare(dir, segment_bytes, 1)?;
                Log {
                    dir: dir.to_path_buf(),
                    segment_bytes,
                    segment: 1,
                    file,
                    end: SEGMENT_HEADER,
                    buf: Vec::new(),
                    oldest,
                }
            }
        };
        if recovery.tail_bytes > 0 {
            // What follows the last good record must not read as records after
            // the next commit writes less than it: zero it now, durably.
            log.zero_tail(recovery.tail_bytes)?;
        }
        Ok((log, recovery))
    }

    fn zero_tail(&mut self, len: u64) -> Result<(), LogError> {
        let path = self.dir.join(segment_name(self.segment));
        let zeros = vec![0u8; 1 << 20];
        let mut at = self.end;
        while at < self.end + len {
            let n = (self.end + len - at).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], at).map_err(io(&path))?;
            at += n as u64;
        }
        self.file.sync_data().map_err(io(&path))
    }

    /// Makes `seg-<n>` from the spare (or a new zero-filled file) and syncs the name.
    fn take_spare(dir: &Path, segment_bytes: u64, n: u64) -> Result<File, LogError> {
        let spare = dir.join(SPARE);
        if !spare.exists() {
            prepare_spare(dir, segment_bytes)?;
        }
        let path = dir.join(segment_name(n));
        let file = File::options()
            .write(true)
            .open(&spare)
            .map_err(io(&spare))?;
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&n.to_le_bytes());
        file.write_all_at(&header, 0).map_err(io(&spare))?;
        file.sync_data().map_err(io(&spare))?;
        std::fs::rename(&spare, &path).map_err(io(&path))?;
        sync_dir(dir)?;
        Ok(file)
    }

    /// Adds a record to the next commit; returns where it will sit.
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<Position, LogError> {
        let size = RECORD_HEADER + payload.len();
        if size as u64 > self.segment_bytes - SEGMENT_HEADER {
            return Err(LogError::TooLarge(payload.len()));
        }
        if self.end + (self.buf.len() + size) as u64 > self.segment_bytes {
            // This record starts the next segment: what is buffered goes to this
            // one first, durably, so a segment is complete before its successor.
            self.commit()?;
            self.rotate()?;
        }
        let at = self.end + self.buf.len() as u64;
        let len = u32::try_from(payload.len()).map_err(|_| LogError::TooLarge(payload.len()))?;
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf
            .extend_from_slice(&crc(self.segment, kind, payload).to_le_bytes());
        self.buf.push(kind);
        self.buf.extend_from_slice(payload);
        Ok(Position {
            segment: self.segment,
            at,
        })
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        let next = self.segment + 1;
        self.file = Self::take_spare(&self.dir, self.segment_bytes, next)?;
        self.segment = next;
        self.end = SEGMENT_HEADER;
        Ok(())
    }

    /// Writes what was appended and `fdatasync`s it: once this returns, every record
    /// appended before survives a power cut.
    pub fn commit(&mut self) -> Result<(), LogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(segment_name(self.segment));
        self.file
            .write_all_at(&self.buf, self.end)
            .map_err(io(&path))?;
        self.file.sync_data().map_err(io(&path))?;
        self.end += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Reads back the record at `at` (committed ones only).
    pub fn read(&self, at: Position) -> Result<Option<(u8, Vec<u8>)>, LogError> {
        let path = self.dir.join(segment_name(at.segment));
        let file = File::open(&path).map_err(io(&path))?;
        let mut head = [0u8; RECORD_HEADER];
        file.read_exact_at(&mut head, at.at).map_err(io(&path))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if at.at + (RECORD_HEADER + len) as u64 > self.segment_bytes {
            // Not a record this log wrote: do not allocate what a damaged header says.
            return Ok(None);
        }
        let mut payload = vec![0u8; len];
        file.read_exact_at(&mut payload, at.at + RECORD_HEADER as u64)
            .map_err(io(&path))?;
        let want = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if crc(at.segment, head[8], &payload) != want {
            return Ok(None);
        }
        Ok(Some((head[8], payload)))
    }

    /// The newest segment's number: records appended now land in it or later.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// The oldest segment still on disk.
    pub fn oldest(&self) -> u64 {
        self.oldest
    }

    /// Drops every segment below `keep_from` (never the newest). The first one
    /// dropped becomes the spare when there is none, so steady traffic reuses
    /// blocks instead of zero-filling new ones.
    pub fn retire_below(&mut self, keep_from: u64) -> Result<usize, LogError> {
        let upto = keep_from.min(self.segment);
        let mut retired = 0;
        while self.oldest < upto {
            let path = self.dir.join(segment_name(self.oldest));
            let spare = self.dir.join(SPARE);
            if spare.exists() {
                std::fs::remove_file(&path).map_err(io(&path))?;
            } else {
                std::fs::rename(&path, &spare).map_err(io(&path))?;
            }
            self.oldest += 1;
            retired += 1;
        }
        if retired > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(retired)
    }

    /// Makes sure a spare exists, so the next rotation renames instead of writing
    /// a whole segment. Slow (a segment's worth of zeros): call it off the commit
    /// path.
    pub fn prepare_spare(&self) -> Result<(), LogError> {
        if self.dir.join(SPARE).exists() {
            return Ok(());
        }
        prepare_spare(&self.dir, self.segment_bytes)
    }

    /// Bytes the log's files take.
    pub fn size_on_disk(&self) -> u64 {
        let segments = self.segment - self.oldest + 1;
        let spare = u64::from(self.dir.join(SPARE).exists());
        (segments + spare) * self.segment_bytes
    }
}

fn prepare_spare(dir: &Path, segment_bytes: u64) -> Result<(), LogError> {
    let tmp = dir.join("spare.tmp");
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = segment_bytes;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n]).map_err(io(&tmp))?;
        left -= n as u64;
    }
    file.sync_all().map_err(io(&tmp))?;
    let spare = dir.join(SPARE);
    std::fs::rename(&tmp, &spare).map_err(io(&spare))?;
    sync_dir(dir)
}

/// Hands over segment `n`'s good records; returns where they end and how many.
fn scan(n: u64, bytes: &[u8], each: &mut impl FnMut(Position, u8, &[u8])) -> (u64, u64) {
    let header_ok = bytes.get(..8) == Some(MAGIC.as_slice())
        && bytes.get(8..16) == Some(n.to_le_bytes().as_slice());
    if !header_ok {
        return (SEGMENT_HEADER, 0);
    }
    let mut at = SEGMENT_HEADER as usize;
    let mut records = 0;
    while let Some(head) = bytes.get(at..at + RECORD_HEADER) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let want = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let kind = head[8];
        let Some(payload) = bytes.get(at + RECORD_HEADER..at + RECORD_HEADER + len) else {
            break;
        };
        if (len == 0 && want == 0 && kind == 0) || crc(n, kind, payload) != want {
            break;
        }
        each(
            Position {
                segment: n,
                at: at as u64,
            },
            kind,
            payload,
        );
        records += 1;
        at += RECORD_HEADER + len;
    }
    (at as u64, records)
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
}
