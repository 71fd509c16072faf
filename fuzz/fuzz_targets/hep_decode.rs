//! The HEPv3 decoder on arbitrary bytes: never panics; a decoded payload lies
//! inside the packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphook::sip::hep;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = hep::decode(data) {
        assert!(p.payload.len() <= data.len());
        assert_eq!(hep::frame_len(data), Ok(Some(data.len())));
    }
});
