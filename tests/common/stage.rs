//! Faults only root can stage (a tmpfs to fill, a network namespace): whether
//! this run can, and what to do when it cannot.

use std::path::{Path, PathBuf};

/// Whether a root-only fault can be staged here; prints why not, or fails when
/// CI demands the tools (`SIPHOOK_REQUIRE_TOOLS=1`).
pub fn can_stage(what: &str, problem: Option<String>) -> bool {
    let Some(problem) = problem else {
        return true;
    };
    if std::env::var("SIPHOOK_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{what}: {problem} (SIPHOOK_REQUIRE_TOOLS=1)");
    }
    eprintln!("SKIPPED {what}: {problem}");
    false
}

/// `None` when running as root, else why not.
pub fn not_root() -> Option<String> {
    let uid = std::process::Command::new("id").arg("-u").output();
    match uid {
        Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "0" => None,
        Ok(_) => Some("needs root".into()),
        Err(e) => Some(format!("cannot run id: {e}")),
    }
}

/// A small tmpfs mounted for one test; unmounted when dropped, even on a panic.
pub struct Tmpfs {
    /// Where it is mounted.
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process of the test that is still being reaped must not leave
        // the mount behind.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}
