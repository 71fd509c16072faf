//! A TCP stream (SIP or HEP, chosen by its first bytes) fed in the chunking the
//! input's first byte picks: the units cut out are the same whatever the
//! chunking, and the framer never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphook::sip::stream::{StreamFramer, Unit};

fn cut(stream: &[u8], chunk: usize) -> (Vec<Unit>, bool) {
    let mut f = StreamFramer::detect(stream, 8192);
    let mut out = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        f.buffer_mut().extend_from_slice(piece);
        loop {
            match f.next_unit() {
                Ok(Some(u)) => out.push(u),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&c, stream)) = data.split_first() else {
        return;
    };
    let whole = cut(stream, stream.len());
    let pieces = cut(stream, usize::from(c % 64) + 1);
    // The same units up to the first error, whatever the chunking.
    let n = whole.0.len().min(pieces.0.len());
    assert_eq!(whole.0[..n], pieces.0[..n]);
    if !whole.1 && !pieces.1 {
        assert_eq!(whole.0, pieces.0);
    }
});
