//! Where the outbox's files live, and how a compaction moves it to fresh ones.
//!
//! sled 0.34 does not give the space of deleted records back to the file system
//! (spacejam/sled#1333): under steady traffic its file grows for ever while the live
//! data stays small. The only cure is to copy the live data into a new database and
//! drop the old one, so the store is a series of generations:
//!
//! - `<path>/LOCK`: held (flock) while a process has the store open;
//! - `<path>/CURRENT`: the number of the live generation, replaced atomically;
//! - `<path>/gen-<n>/`: one sled database.
//!
//! A crash at any point of a compaction leaves `CURRENT` naming a complete
//! generation; whatever else is there is removed by the next open. A store written
//! before generations (sled's files directly in `<path>`) opens as generation 0 and
//! moves into `gen-1` with its first compaction.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::OutboxError;

/// The trees of one generation. Every handle here keeps the database open: a
/// compaction drops them all before it removes the old files.
pub(super) struct Store {
    pub(super) db: sled::Db,
    pub(super) events: sled::Tree,
    pub(super) pending: sled::Tree,
    pub(super) dead: sled::Tree,
    pub(super) calls: sled::Tree,
    pub(super) meta: sled::Tree,
    /// Which generation this is (0: the layout from before generations).
    pub(super) generation: u64,
}

/// Records copied per sled batch: large enough to amortise the batch, small
/// enough not to hold a big backlog twice in memory.
const COPY_BATCH: usize = 4096;

impl Store {
    fn open(dir: &Path, generation: u64) -> Result<Store, OutboxError> {
        let db = sled::Config::new().path(dir).open()?;
        Ok(Store {
            events: db.open_tree("events")?,
            pending: db.open_tree("pending")?,
            dead: db.open_tree("dead")?,
            calls: db.open_tree("calls")?,
            meta: db.open_tree("meta")?,
            db,
            generation,
        })
    }

    fn trees(&self) -> [&sled::Tree; 5] {
        [
            &self.events,
            &self.pending,
            &self.dead,
            &self.calls,
            &self.meta,
        ]
    }

    /// Bytes of keys and values held, counting no further than `stop_past`: what a
    /// compaction would copy, found without reading a large store to its end.
    pub(super) fn live_bytes(&self, stop_past: u64) -> Result<u64, OutboxError> {
        let mut live = 0u64;
        for tree in self.trees() {
            for kv in tree.iter() {
                let (k, v) = kv?;
                live += (k.len() + v.len()) as u64;
                if live > stop_past {
                    return Ok(live);
                }
            }
        }
        Ok(live)
    }
}

/// The store's directory, locked against a second process for as long as this lives.
pub(super) struct Layout {
    root: PathBuf,
    /// The open `LOCK` file; the flock goes with it.
    _lock: File,
}

const LOCK: &str = "LOCK";
const CURRENT: &str = "CURRENT";
const CURRENT_TMP: &str = "CURRENT.tmp";
/// What sled 0.34 puts in its directory: a generation-0 store is these files.
const LEGACY_FILES: [&str; 3] = ["db", "conf", "blobs"];
const LEGACY_SNAPSHOT_PREFIX: &str = "snap.";

fn generation_dir_name(generation: u64) -> String {
    format!("gen-{generation}")
}

fn generation_of_dir(name: &str) -> Option<u64> {
    name.strip_prefix("gen-")?.parse().ok()
}

fn layout_error(what: &str, path: &Path, e: std::io::Error) -> OutboxError {
    OutboxError::Layout(format!("{what} {}: {e}", path.display()))
}

/// fsync of a directory: makes the names created, renamed or removed in it durable.
fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| layout_error("syncing", dir, e))
}

/// fsync of every file and directory under `dir`, and of `dir` itself.
fn sync_tree(dir: &Path) -> Result<(), OutboxError> {
    let entries = std::fs::read_dir(dir).map_err(|e| layout_error("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| layout_error("listing", dir, e))?;
        let path = entry.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| layout_error("syncing", &path, e))?;
        }
    }
    sync_dir(dir)
}

impl Layout {
    /// Creates `root` if needed and takes its lock.
    pub(super) fn lock(root: &Path) -> Result<Layout, OutboxError> {
        std::fs::create_dir_all(root).map_err(|e| layout_error("creating", root, e))?;
        let path = root.join(LOCK);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| layout_error("opening", &path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(OutboxError::Locked),
            Err(std::fs::TryLockError::Error(e)) => return Err(layout_error("locking", &path, e)),
        }
        Ok(Layout {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    /// The store's directory.
    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    fn generation_dir(&self, generation: u64) -> PathBuf {
        if generation == 0 {
            self.root.clone()
        } else {
            self.root.join(generation_dir_name(generation))
        }
    }

    /// Opens the live generation (a new store is generation 1) and removes what an
    /// interrupted compaction left behind.
    pub(super) fn open_current(&self) -> Result<Store, OutboxError> {
        let legacy = LEGACY_FILES.iter().any(|f| self.root.join(f).exists());
        let store = match self.read_current()? {
            Some(generation) => {
                let dir = self.generation_dir(generation);
                // A new store names generation 1 before creating it, so a crash in
                // between leaves no `db` there; any other missing store is an error.
                let created_not_yet = generation == 1 && !legacy && !dir.join("db").exists();
                if !created_not_yet && !dir.join("conf").exists() {
                    return Err(OutboxError::Layout(format!(
                        "{} names generation {generation}, but {} holds no store",
                        self.root.join(CURRENT).display(),
                        dir.display()
                    )));
                }
                if legacy && generation != 0 {
                    // A migration cut short, or an older siphook run here since:
                    // which, only an operator can tell, so nothing is deleted.
                    tracing::warn!(path = %self.root.display(), "the outbox directory holds a store from before generations beside generation {generation}; it is not used, and is kept for an operator to remove");
                }
                Store::open(&dir, generation)?
            }
            None if legacy => Store::open(&self.root, 0)?,
            None => {
                if let Some(name) = self.generation_names().first() {
                    return Err(OutboxError::Layout(format!(
                        "{} is missing but {} holds {name}: restore CURRENT with the number of the newest complete generation, or move the directory away",
                        self.root.join(CURRENT).display(),
                        self.root.display()
                    )));
                }
                self.switch(1)?;
                Store::open(&self.generation_dir(1), 1)?
            }
        };
        self.remove_all_but(store.generation);
        Ok(store)
    }

    /// Names of the `gen-<n>` directories here.
    fn generation_names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| generation_of_dir(n).is_some())
            .collect()
    }

    fn read_current(&self) -> Result<Option<u64>, OutboxError> {
        let path = self.root.join(CURRENT);
        match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().parse().map(Some).map_err(|_| {
                OutboxError::Layout(format!(
                    "{} does not hold a generation number",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(layout_error("reading", &path, e)),
        }
    }

    /// Whether `CURRENT` names `generation` now.
    pub(super) fn current_is(&self, generation: u64) -> bool {
        matches!(self.read_current(), Ok(Some(g)) if g == generation)
    }

    /// Copies every record of `from` into a new generation and makes it durable;
    /// returns it and the bytes copied. Nothing may write to `from` meanwhile. On
    /// failure the partial copy is removed and `from` is untouched.
    pub(super) fn copy_to_next(&self, from: &Store) -> Result<(Store, u64), OutboxError> {
        let generation = from.generation + 1;
        let dir = self.generation_dir(generation);
        let copied = (|| {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| layout_error("removing", &dir, e))?;
            }
            let to = Store::open(&dir, generation)?;
            let mut live = 0u64;
            for (src, dst) in from.trees().into_iter().zip(to.trees()) {
                let mut batch = sled::Batch::default();
                let mut in_batch = 0;
                for kv in src.iter() {
                    let (k, v) = kv?;
                    live += (k.len() + v.len()) as u64;
                    batch.insert(k, v);
                    in_batch += 1;
                    if in_batch == COPY_BATCH {
                        dst.apply_batch(std::mem::take(&mut batch))?;
                        // Paced by a flush, so sled's log buffers do not hold a
                        // large store twice over before anything reaches disk.
                        to.db.flush()?;
                        in_batch = 0;
                    }
                }
                dst.apply_batch(batch)?;
            }
            to.db.flush()?;
            // sled's flush syncs the data of its log (sync_file_range on Linux),
            // not a new file's size or the names in the directory: the old
            // generation is deleted on the strength of this one, so sync it all.
            sync_tree(&dir)?;
            Ok((to, live))
        })();
        if copied.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        copied
    }

    /// Makes `generation` the live one: written beside, synced, renamed over
    /// `CURRENT`, and the rename synced. Once this returns, a restart opens it.
    pub(super) fn switch(&self, generation: u64) -> Result<(), OutboxError> {
        let tmp = self.root.join(CURRENT_TMP);
        File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(format!("{generation}\n").as_bytes())?;
                f.sync_all()
            })
            .map_err(|e| layout_error("writing", &tmp, e))?;
        let current = self.root.join(CURRENT);
        std::fs::rename(&tmp, &current).map_err(|e| layout_error("replacing", &current, e))?;
        sync_dir(&self.root)
    }

    /// Removes every `gen-<n>` directory but `keep`'s. Best effort: what stays is
    /// removed by the next open.
    pub(super) fn remove_all_but(&self, keep: u64) {
        for name in self.generation_names() {
            if generation_of_dir(&name) == Some(keep) {
                continue;
            }
            let path = self.root.join(&name);
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an old outbox generation; the next start tries again");
            }
        }
    }

    /// Removes sled's files of a store from before generations, once its first
    /// compaction has moved it into `gen-1`; never at open, where they could be
    /// newer than the generations (an older siphook run here since).
    pub(super) fn remove_legacy(&self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(LEGACY_FILES.contains(&name) || name.starts_with(LEGACY_SNAPSHOT_PREFIX)) {
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the outbox's files from before generations");
            }
        }
    }
}
