//! The spare segment and retired ones: zero-filling the next segment ahead of
//! need, and renaming a retired segment into the spare (or removing it), all
//! off the log's lock.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{LogError, SPARE, io, sync_dir};

/// Old segments [`Log::plan_retire`] took off the log, to be renamed into the
/// spare or removed by [`Retired::apply`] without the log being held.
#[derive(Debug, Default)]
#[must_use = "the segments stay on disk until applied"]
pub struct Retired {
    pub(super) dir: PathBuf,
    /// `(path, whether it may become the spare)`, oldest first.
    pub(super) files: Vec<(PathBuf, bool)>,
}

impl Retired {
    /// Segments taken off.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether none were.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Renames the first reusable segment into the spare when there is none
    /// (never over one: a spare zero-filled meanwhile stays), removes the rest,
    /// then syncs the directory. The log no longer names these files, so this
    /// may run on any thread at any time; a crash before it leaves segments
    /// whose records later ones supersede.
    ///
    /// Oldest first, and a failure hands back what is left, to be applied
    /// before anything newer is retired: a segment left behind a newer one that
    /// went would come back at the next open without the acknowledgements that
    /// newer one held.
    ///
    /// A segment becoming the spare is first renamed to a name the open clears
    /// and that name synced: the spare may be started as the next segment (its
    /// header rewritten) at once, and a power cut must not find the old
    /// segment's name on that file.
    pub fn apply(mut self) -> Result<usize, (LogError, Retired)> {
        if self.files.is_empty() {
            return Ok(0);
        }
        let spare = self.dir.join(SPARE);
        let done = self.files.len();
        while let Some((path, reusable)) = self.files.first().cloned() {
            let step = (|| {
                if reusable && needs_spare(&self.dir) {
                    let n = SPARE_MAKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let private = self.dir.join(format!("{SPARE_TMP}.retired.{n}"));
                    std::fs::rename(&path, &private).map_err(io(&path))?;
                    sync_dir(&self.dir)?;
                    if !place_spare(&private, &spare)? {
                        std::fs::remove_file(&private).map_err(io(&private))?;
                    }
                    Ok(())
                } else {
                    std::fs::remove_file(&path).map_err(io(&path))
                }
            })();
            if let Err(e) = step {
                return Err((e, self));
            }
            self.files.remove(0);
        }
        sync_dir(&self.dir).map_err(|e| (e, Retired::default()))?;
        Ok(done)
    }
}

/// Makes the log's spare without the log: checked and made off its lock.
pub struct SpareMaker {
    pub(super) dir: PathBuf,
    pub(super) segment_bytes: u64,
}

impl SpareMaker {
    /// Whether there is no spare and room for one ([`Log::spare_fits`]): two
    /// cheap reads of the file system.
    pub fn needed(&self) -> bool {
        needs_spare(&self.dir) && spare_fits(&self.dir, self.segment_bytes)
    }

    /// Zero-fills a spare if one is still missing. Slow: a segment's worth of
    /// zeros and a sync.
    pub fn make(self) -> Result<(), LogError> {
        if !needs_spare(&self.dir) {
            return Ok(());
        }
        prepare_spare(&self.dir, self.segment_bytes)
    }
}

/// Names of spares being made: each maker writes its own file, so two (a store
/// closed and reopened in one process, its old maker still running) never write
/// one file between them.
pub(super) static SPARE_MAKERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub(super) const SPARE_TMP: &str = "spare.tmp";

pub(super) fn prepare_spare(dir: &Path, segment_bytes: u64) -> Result<(), LogError> {
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
    // A segment retired meanwhile may have become the spare: it stays, and the
    // zeros go (replacing it would free its blocks for nothing, and the next
    // rotation would zero-fill again).
    match place_spare(&tmp, &dir.join(SPARE)) {
        Ok(true) => sync_dir(dir),
        Ok(false) => std::fs::remove_file(&tmp).map_err(io(&tmp)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

pub(super) fn needs_spare(dir: &Path) -> bool {
    !dir.join(SPARE).exists()
}

pub(super) fn spare_fits(dir: &Path, segment_bytes: u64) -> bool {
    match rustix::fs::statvfs(dir) {
        Ok(v) => {
            let free = v.f_bavail.saturating_mul(v.f_frsize);
            free >= segment_bytes.saturating_mul(2)
        }
        Err(_) => false,
    }
}

/// Renames `from` to `spare` unless a spare is there already: whether it was
/// placed. Never replaces one, so two placers (the spare maker, a retirement)
/// racing keep one spare and leave the other file to its caller.
fn place_spare(from: &Path, spare: &Path) -> Result<bool, LogError> {
    let placed = rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        spare,
        rustix::fs::RenameFlags::NOREPLACE,
    );
    match placed {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        // A file system or kernel without RENAME_NOREPLACE: a plain rename,
        // checked first (the check and the rename are not one step there).
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            if spare.exists() {
                return Ok(false);
            }
            std::fs::rename(from, spare).map_err(io(spare))?;
            Ok(true)
        }
        Err(e) => Err(io(spare)(e.into())),
    }
}
