//! The configuration loader on arbitrary text: never panics, and never echoes a
//! secret-looking value (`whsec_` and what follows it) in a problem. Problems may
//! name the prefix itself ("must start with \"whsec_\"").
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphook::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(ConfigError::Invalid(problems)) = Config::parse(text) {
        for p in problems {
            let text = p.to_string();
            for (i, _) in text.match_indices("whsec_") {
                let next = text[i + "whsec_".len()..].chars().next();
                assert!(
                    !next.is_some_and(|c| c.is_ascii_alphanumeric() || "+/=_-".contains(c)),
                    "{text}"
                );
            }
        }
    }
});
