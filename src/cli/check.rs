//! `siphook check-config FILE`: validate a file without starting anything.

use std::path::Path;
use std::process::ExitCode;

use siphook::config::Config;

/// Prints `ok` (after any warnings), or every problem with exit status 2.
pub fn main(file: &Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            for w in config.warnings(file) {
                eprintln!("warning: {w}");
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
