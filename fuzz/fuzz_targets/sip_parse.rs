//! SIP parsing (normalization, rsip, the typed view) on arbitrary bytes: never
//! panics, and what parses has a Call-ID within the field limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphook::sip::{ParseOptions, parse};

fuzz_target!(|data: &[u8]| {
    let opts = ParseOptions {
        correlation_headers: vec!["X-CID".into(), "Session-ID".into()],
        max_message_bytes: 65_536,
    };
    if let Ok(m) = parse(data, &opts) {
        assert!(!m.call_id.is_empty() && m.call_id.len() <= 256);
    }
});
