//! The store's directory, and the way in from the engine before the segment log.
//!
//! siphook up to the bake-off kept the outbox in sled: `<path>/CURRENT` naming a
//! generation `<path>/gen-<n>/` (or, before generations, sled's files directly in
//! `<path>`), with the trees `events`, `pending`, `dead`, `calls` and `meta`.
//! The first open by this version reads that store once, writes everything still
//! pending, dead or live into a new log beside it, syncs it, renames it into place
//! and only then removes the sled files. A crash at any point leaves either the
//! sled store (the next open migrates again, from the start) or the complete log
//! marked as migrated from it (the next open finishes removing the sled files).
//! A sled store beside a log without that mark was written after the upgrade (an
//! older siphook run here since): the open refuses it rather than delete it.
//! Nothing is dropped.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::log::Log;
use super::record::{self, Head, Target};
use super::{DeliveryState, OutboxError};

const LOCK: &str = "LOCK";
const LOG: &str = "log";
const MIGRATING: &str = "log.migrating";
const CURRENT: &str = "CURRENT";
/// In the log while the sled files it was moved from are not all removed yet.
const FROM_SLED: &str = "FROM-SLED";
/// What sled 0.34 puts in its directory.
const SLED_FILES: [&str; 3] = ["db", "conf", "blobs"];
const SLED_SNAPSHOT_PREFIX: &str = "snap.";
/// The sled store's event record: references, call key, sequence, receive time,
/// id length, then id and body (big-endian).
const SLED_HEADER: usize = 2 + 8 + 4 + 8 + 1;

fn layout_error(what: &str, path: &Path, e: impl std::fmt::Display) -> OutboxError {
    OutboxError::Layout(format!("{what} {}: {e}", path.display()))
}

/// Where the segments live.
pub(super) fn log_dir(root: &Path) -> PathBuf {
    root.join(LOG)
}

/// Creates `root` if needed and takes its lock, held as long as the file is.
pub(super) fn lock(root: &Path) -> Result<File, OutboxError> {
    std::fs::create_dir_all(root).map_err(|e| layout_error("creating", root, e))?;
    let path = root.join(LOCK);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| layout_error("opening", &path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(OutboxError::Locked),
        Err(std::fs::TryLockError::Error(e)) => Err(layout_error("locking", &path, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| layout_error("syncing", dir, e))
}

/// The sled store in `root`, if there is one: its directory.
fn sled_store(root: &Path) -> Result<Option<PathBuf>, OutboxError> {
    let current = root.join(CURRENT);
    match std::fs::read_to_string(&current) {
        Ok(s) => {
            let generation: u64 = s
                .trim()
                .parse()
                .map_err(|_| layout_error("reading", &current, "not a generation number"))?;
            let dir = if generation == 0 {
                root.to_path_buf()
            } else {
                root.join(format!("gen-{generation}"))
            };
            Ok(dir.join("conf").exists().then_some(dir))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(root.join("conf").exists().then(|| root.to_path_buf()))
        }
        Err(e) => Err(layout_error("reading", &current, e)),
    }
}

/// Removes every file the sled engine left in `root`.
fn remove_sled(root: &Path) -> Result<(), OutboxError> {
    let entries = std::fs::read_dir(root).map_err(|e| layout_error("listing", root, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let sled = SLED_FILES.contains(&name)
            || name.starts_with(SLED_SNAPSHOT_PREFIX)
            || name == CURRENT
            || name == "CURRENT.tmp"
            || name
                .strip_prefix("gen-")
                .is_some_and(|n| n.parse::<u64>().is_ok());
        if !sled {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| layout_error("removing", &path, e))?;
    }
    sync_dir(root)
}

/// Moves a sled store in `root` into the log, if there is one; returns how many
/// events it moved. Runs before the log is opened.
pub(super) fn migrate(root: &Path, segment_bytes: u64) -> Result<Option<u64>, OutboxError> {
    let tmp = root.join(MIGRATING);
    if tmp.exists() {
        // A migration cut short: the sled store is still there, start again.
        std::fs::remove_dir_all(&tmp).map_err(|e| layout_error("removing", &tmp, e))?;
    }
    let Some(dir) = sled_store(root)? else {
        return Ok(None);
    };
    let marker = log_dir(root).join(FROM_SLED);
    if marker.exists() {
        // Migrated, but the sled files were not all removed before a stop.
        tracing::info!(path = %root.display(), "removing the outbox's earlier sled store, migrated at an earlier start");
        remove_sled(root)?;
        std::fs::remove_file(&marker).map_err(|e| layout_error("removing", &marker, e))?;
        return Ok(None);
    }
    if log_dir(root).exists() {
        return Err(OutboxError::Layout(format!(
            "{} holds both the segment log and a sled store written after the upgrade \
             (an older siphook ran here since): start that older siphook until its \
             outbox is empty, then remove its files (CURRENT, gen-*, db, conf, blobs)",
            root.display()
        )));
    }
    tracing::info!(path = %dir.display(), "moving the outbox from the earlier sled store into the segment log");
    let moved = copy(&dir, &tmp, segment_bytes)?;
    let marker = tmp.join(FROM_SLED);
    File::create(&marker)
        .and_then(|f| f.sync_all())
        .map_err(|e| layout_error("writing", &marker, e))?;
    sync_dir(&tmp)?;
    let target = log_dir(root);
    std::fs::rename(&tmp, &target).map_err(|e| layout_error("renaming", &tmp, e))?;
    sync_dir(root)?;
    remove_sled(root)?;
    let marker = target.join(FROM_SLED);
    std::fs::remove_file(&marker).map_err(|e| layout_error("removing", &marker, e))?;
    sync_dir(&target)?;
    tracing::info!(
        events = moved,
        "outbox migrated from sled; the sled files are removed"
    );
    Ok(Some(moved))
}

fn sled_error(dir: &Path) -> impl Fn(sled::Error) -> OutboxError + '_ {
    move |e| layout_error("reading the earlier sled store in", dir, e)
}

/// `endpoint NUL offset(BE)`.
fn split_key(key: &[u8]) -> Option<(&str, u64)> {
    let cut = key.len().checked_sub(9)?;
    if key.get(cut) != Some(&0) {
        return None;
    }
    let name = std::str::from_utf8(&key[..cut]).ok()?;
    let offset = u64::from_be_bytes(key.get(cut + 1..)?.try_into().ok()?);
    Some((name, offset))
}

/// Copies what the sled store at `dir` still holds into a new log at `to`.
fn copy(dir: &Path, to: &Path, segment_bytes: u64) -> Result<u64, OutboxError> {
    let err = sled_error(dir);
    let db = sled::Config::new().path(dir).open().map_err(&err)?;
    let tree = |name: &str| db.open_tree(name).map_err(&err);
    let (events, pending, dead, calls, meta) = (
        tree("events")?,
        tree("pending")?,
        tree("dead")?,
        tree("calls")?,
        tree("meta")?,
    );
    let mut targets: HashMap<u64, Vec<(String, Target)>> = HashMap::new();
    for (source, is_dead) in [(&pending, false), (&dead, true)] {
        for kv in source.iter() {
            let (k, v) = kv.map_err(&err)?;
            let Some((name, offset)) = split_key(&k) else {
                tracing::warn!("skipping an unreadable delivery key in the sled store");
                continue;
            };
            let state: DeliveryState = serde_json::from_slice(&v).unwrap_or_default();
            let t = if is_dead {
                Target::Dead(state)
            } else {
                Target::Pending(state)
            };
            targets
                .entry(offset)
                .or_default()
                .push((name.to_owned(), t));
        }
    }
    let (mut log, _) = Log::open(to, segment_bytes, |_, _, _| {})?;
    let mut next_offset = meta
        .get(b"next_offset")
        .map_err(&err)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes);
    let mut moved = 0u64;
    let mut unflushed = 0usize;
    for kv in events.iter() {
        let (k, rec) = kv.map_err(&err)?;
        let Some(offset) = <[u8; 8]>::try_from(k.as_ref()).ok().map(u64::from_be_bytes) else {
            continue;
        };
        next_offset = next_offset.max(offset + 1);
        let Some(t) = targets.remove(&offset) else {
            continue;
        };
        let decoded = (|| {
            let head = Head {
                offset,
                call_key: u64::from_be_bytes(rec.get(2..10)?.try_into().ok()?),
                sequence: u32::from_be_bytes(rec.get(10..14)?.try_into().ok()?),
                received_ms: i64::from_be_bytes(rec.get(14..22)?.try_into().ok()?),
            };
            let id_len = usize::from(*rec.get(22)?);
            let id = std::str::from_utf8(rec.get(SLED_HEADER..SLED_HEADER + id_len)?).ok()?;
            Some((head, id, rec.get(SLED_HEADER + id_len..)?))
        })();
        let Some((head, id, body)) = decoded else {
            return Err(OutboxError::Corrupt(offset));
        };
        let t: Vec<(&str, Target)> = t.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let payload = record::event(head, id, &t, body);
        log.append(record::EVENT, &payload)?;
        moved += 1;
        unflushed += payload.len();
        if unflushed > 8 << 20 {
            // Written as it goes, so a large backlog is not held twice in memory.
            log.take().write(false)?;
            unflushed = 0;
        }
    }
    for kv in calls.iter() {
        let (k, v) = kv.map_err(&err)?;
        let Ok(id) = std::str::from_utf8(&k) else {
            continue;
        };
        log.append(record::CALL, &record::call(id, &v))?;
    }
    for kv in meta.scan_prefix(b"paused/") {
        let (k, _) = kv.map_err(&err)?;
        if let Ok(name) = std::str::from_utf8(&k[b"paused/".len()..]) {
            log.append(record::PAUSE, &record::pause(name, true))?;
        }
    }
    log.append(record::NEXT, &record::next(next_offset))?;
    log.take().write(false)?;
    // Everything was written unsynced; one pass syncs it all, and the names.
    let entries = std::fs::read_dir(to).map_err(|e| layout_error("listing", to, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| layout_error("syncing", &path, e))?;
    }
    sync_dir(to)?;
    if !targets.is_empty() {
        tracing::warn!(
            deliveries = targets.len(),
            "sled store deliveries without their event were not moved (written by something else)"
        );
    }
    Ok(moved)
}
