//! Opening the log: every segment read once, the records a commit record
//! follows handed over in order, and what a crash left after the last commit
//! removed (later segments) or zeroed (the rest of that segment), so appending
//! goes on from a clean end.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::{
    COMMIT, Log, LogError, MAGIC, MAGIC_REUSED, MIN_SEGMENT_BYTES, Position, RECORD_HEADER, SEAL,
    SEGMENT_HEADER, SPARE_TMP, Segment, crc, io, segment_name, segment_number, sync_dir,
};

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
            started: Vec::new(),
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
