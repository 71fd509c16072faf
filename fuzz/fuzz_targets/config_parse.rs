//! The configuration loader on arbitrary text: never panics, and never echoes a
//! secret-looking value in a problem.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphook::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(ConfigError::Invalid(problems)) = Config::parse(text) {
        for p in problems {
            assert!(!p.to_string().contains("whsec_"), "{p}");
        }
    }
});
