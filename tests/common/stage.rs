//! Faults only root can stage (a tmpfs to fill, a network namespace): whether
//! this run can, and what to do when it cannot.

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
