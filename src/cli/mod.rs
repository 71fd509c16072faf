//! The binary's subcommands, one module each. This is the binary's edge: errors
//! become `anyhow` here, with context, and each command chooses its exit status.

pub mod bench;
pub mod check;
pub mod logging;
pub mod replay;
pub mod run;
pub mod store;
pub mod tail;

use std::process::ExitCode;

/// Exit status 0, or the error on stderr and status 1: what the commands that
/// have no special statuses return.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("siphook: {e:#}");
            ExitCode::FAILURE
        }
    }
}
