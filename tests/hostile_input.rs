//! Mutated and truncated SIP must never panic the parser or the framer: a bounded,
//! seeded mutation loop over valid messages (the fuzz targets of the hardening work
//! go further; this runs in every test run).

mod common;

use common::CallSpec;
use siphook::sip::{Framer, ParseOptions, parse};

/// xorshift64*: deterministic, so a failure reproduces from its iteration number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b"\"",
    b"\\",
    b"%",
    b"%3B",
    b"?",
    b"=",
    b" ",
    b"\t",
    b"\r\n ",
    b"tag=",
    b"Replaces=",
    b"sip:",
    b"tel:",
    b"@",
    b"SIP/2.0 ",
    b"\xff",
    b"\xc3",
    b"\0",
    b"99999999999999999999",
    b"-1",
    b"i: ",
    b"l: 5\r\n",
    b"Content-Length: 70000\r\n",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.truncate(at),
            2 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(at..at, piece.iter().copied());
            }
            3 if at < v.len() => {
                let end = (at + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            _ => {
                let from = rng.below(v.len());
                let end = (from + rng.below(32)).min(v.len());
                let chunk: Vec<u8> = v[from..end].to_vec();
                v.splice(at..at, chunk);
            }
        }
    }
    v
}

fn seeds() -> Vec<Vec<u8>> {
    let c = CallSpec::new("fuzz-seed");
    let mut s: Vec<Vec<u8>> = c
        .answered_flow()
        .into_iter()
        .map(String::into_bytes)
        .collect();
    s.push(
        c.invite_with(
            1,
            &[
                "Refer-To: <sip:c@h?Replaces=a%3Bto-tag%3D1%3Bfrom-tag%3D2>",
                "Reason: Q.850;cause=16;text=\"x\"",
                "Identity: a.eyJ9.c;info=<x>",
                "Session-Expires: 90;refresher=uac",
                "P-Asserted-Identity: \"A\" <tel:+1555>",
            ],
        )
        .into_bytes(),
    );
    s.push(b"INVITE tel:+15551234567 SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z\r\nf: <sip:a@h>;tag=1\r\nt: <sip:b@h>\r\ni: x\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n".to_vec());
    s
}

#[test]
fn mutated_messages_never_panic_the_parser() {
    let opts = ParseOptions {
        correlation_headers: vec!["X-CID".into()],
        max_message_bytes: 65536,
    };
    let seeds = seeds();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut parsed = 0;
    for i in 0..30_000 {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        if parse(&input, &opts).is_ok() {
            parsed += 1;
        }
    }
    // The mutations must leave some messages valid, or the loop tests nothing deep.
    assert!(parsed > 1_000, "only {parsed} mutated messages parsed");
}

#[test]
fn random_chunkings_never_panic_the_framer_and_frame_identically() {
    let stream: Vec<u8> = seeds().concat();
    let mut rng = Rng(0xfeed_beef_0000_0001);
    let mut reference = Framer::new(65536);
    reference.extend(&stream);
    let mut expected = Vec::new();
    while let Ok(Some(m)) = reference.next_message() {
        expected.push(m);
    }
    assert_eq!(expected.len(), seeds().len());
    for _ in 0..2_000 {
        let mut f = Framer::new(65536);
        let mut got = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let n = 1 + rng.below(64);
            let end = (at + n).min(stream.len());
            f.extend(&stream[at..end]);
            at = end;
            while let Ok(Some(m)) = f.next_message() {
                got.push(m);
            }
        }
        assert_eq!(got, expected);
        // And a mutated stream only ever yields frames or an error.
        let mut f = Framer::new(4096);
        f.extend(&mutate(&mut rng, &stream));
        for _ in 0..64 {
            match f.next_message() {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
    }
}
