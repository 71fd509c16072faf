//! Capture replay on arbitrary bytes behind a valid pcap or pcapng header: never
//! panics, and what it prints is valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphook::config::Config;
use siphook::replay::{ReplayOptions, replay};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("siphook-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("input");
    let mut file = Vec::new();
    if kind % 2 == 0 {
        // pcap, Ethernet, µs.
        file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        file.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        file.extend_from_slice(&65_535u32.to_le_bytes());
        file.extend_from_slice(&u32::from(kind % 4 / 2 * 112 + 1).to_le_bytes());
    }
    file.extend_from_slice(rest);
    if std::fs::write(&path, &file).is_err() {
        return;
    }
    let opts = ReplayOptions::from_config(&Config::default(), true);
    let _ = replay(&path, &opts, |e| {
        serde_json::from_slice::<serde_json::Value>(&e.to_json()).expect("an event is JSON");
    });
});
