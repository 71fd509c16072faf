//! Framing agrees with parsing: for every message the TCP framer cuts out of a
//! stream, the parser's view of those bytes (its unfolded header section) names one
//! body length, and it is exactly the body the framer cut. A framer that disagrees
//! with the parser about where a message ends is the request-smuggling class of bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siphook::sip::{Framer, ParseOptions, normalize, parse};

fuzz_target!(|data: &[u8]| {
    let opts = ParseOptions {
        correlation_headers: vec![],
        max_message_bytes: 8192,
    };
    // The first byte picks the chunking, so the framer's incremental paths (a
    // header end found across reads, a body trickling in) are checked too.
    let Some((&c, stream)) = data.split_first() else {
        return;
    };
    let mut framer = Framer::new(8192);
    let mut messages = Vec::new();
    'feed: for piece in stream.chunks(usize::from(c % 64) + 1) {
        framer.extend(piece);
        loop {
            match framer.next_message() {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    for message in messages {
        let Ok(section) = normalize::split(&message) else {
            panic!("the framer cut a message whose header section the parser cannot read");
        };
        let lengths: Vec<&str> = section
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("Content-Length"))
            .map(|h| h.value.as_ref())
            .collect();
        assert!(!lengths.is_empty(), "framed without a Content-Length the parser sees");
        for l in lengths {
            assert_eq!(
                l.parse::<usize>().ok(),
                Some(section.body.len()),
                "the parser's Content-Length is not the body the framer cut"
            );
        }
        // And the parser takes the message as framed, without panicking.
        let _ = parse(&message, &opts);
    }
});
