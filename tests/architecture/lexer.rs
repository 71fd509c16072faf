//! Reading Rust source just well enough to find its module paths: comments and
//! literals blanked, then every `crate::`, `super::`, `self::` and `siphook::` path
//! with brace groups expanded and inline modules tracked.

/// The source with comments and the contents of string and char literals blanked
/// (newlines kept, so offsets still give line numbers): a path in a doc comment or
/// a log message is not an import.
pub fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = src[i..].find('\n').map_or(b.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (mut depth, mut j) = (1, i + 2);
                while j < b.len() && depth > 0 {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            // r"…", r#"…"#, and br"…" (the `b` is an ident, so look past it).
            b'r' if (!ident_before(b, i) || (b[i - 1] == b'b' && !ident_before(b, i - 1)))
                && matches!(b.get(i + 1), Some(b'"' | b'#'))
                && raw_string_end(b, i + 1).is_some() =>
            {
                let end = raw_string_end(b, i + 1).unwrap_or(b.len());
                blank(&mut out, i + 1, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i + 1, j);
                i = j + 1;
            }
            // A char literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            b'\'' => {
                // After a backslash the next byte is escaped ('\'' included).
                let end = if b.get(i + 1) == Some(&b'\\') {
                    src.get(i + 3..)
                        .and_then(|rest| rest.find('\''))
                        .map(|n| i + 3 + n)
                } else {
                    let ch = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (b.get(i + 1 + ch) == Some(&b'\'')).then_some(i + 1 + ch)
                };
                match end {
                    Some(e) => {
                        blank(&mut out, i + 1, e);
                        i = e + 1;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ident_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// Where a raw string starting at `at` (`#…"` or `"`) ends, just past its close.
fn raw_string_end(b: &[u8], at: usize) -> Option<usize> {
    let hashes = b[at..].iter().take_while(|c| **c == b'#').count();
    if b.get(at + hashes) != Some(&b'"') {
        return None;
    }
    let close: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    let body = at + hashes + 1;
    b[body..]
        .windows(close.len())
        .position(|w| w == close.as_slice())
        .map(|p| body + p + close.len())
}

/// One path as written: its anchor (`crate`, `super`, `self`, `siphook`), the
/// segments after it, the line, and the module it was written in.
#[derive(Debug, Clone)]
pub struct PathRef {
    pub anchor: String,
    pub segments: Vec<String>,
    pub line: usize,
    /// The module the path is written in, inline `mod x { … }` blocks included.
    pub module: Vec<String>,
}

impl PathRef {
    pub fn text(&self) -> String {
        std::iter::once(self.anchor.as_str())
            .chain(self.segments.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("::")
    }
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every path anchored at `crate`, `super`, `self` or `siphook` in `code` (already
/// [`code_only`]), brace groups expanded (`crate::{a::X, b}` is two paths).
pub fn paths(code: &str, file_module: &[String]) -> Vec<PathRef> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    // Inline modules: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'{' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == b'}' {
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
            depth = depth.saturating_sub(1);
            i += 1;
            continue;
        }
        if !is_ident(c) || ident_before(b, i) || (i > 0 && b[i - 1] == b'$') {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        let word = &code[start..i];
        if word == "mod" {
            let rest = &code[i..];
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let after = rest.trim_start()[name.len()..].trim_start();
            if !name.is_empty() && after.starts_with('{') {
                inline.push((name, depth + 1));
            }
            continue;
        }
        if !matches!(word, "crate" | "super" | "self" | "siphook") || !code[i..].starts_with("::") {
            continue;
        }
        let module: Vec<String> = file_module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(n, _)| n.clone()))
            .collect();
        let line = code[..start].matches('\n').count() + 1;
        let (tails, end) = path_tail(code, i + 2);
        for segments in tails {
            out.push(PathRef {
                anchor: word.to_owned(),
                segments,
                line,
                module: module.clone(),
            });
        }
        i = end;
    }
    out
}

/// The segments after `anchor::` starting at `at`, one list per path a brace group
/// expands to, and where the path ends.
pub fn path_tail(code: &str, at: usize) -> (Vec<Vec<String>>, usize) {
    let b = code.as_bytes();
    let mut i = at;
    let mut prefix = Vec::new();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'{' {
            let mut all = Vec::new();
            i += 1;
            loop {
                while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    return (all, i + 1);
                }
                let (tails, end) = path_tail(code, i);
                if end <= i {
                    return (all, i + 1);
                }
                all.extend(tails.into_iter().map(|t| {
                    let mut p = prefix.clone();
                    p.extend(t);
                    p
                }));
                i = end;
                // Skip `as name` and anything else up to the next item.
                while i < b.len() && b[i] != b',' && b[i] != b'}' {
                    i += 1;
                }
            }
        }
        let start = i;
        while i < b.len() && (is_ident(b[i]) || b[i] == b'*') {
            i += 1;
        }
        if i == start {
            return (vec![prefix], i);
        }
        prefix.push(code[start..i].to_owned());
        if code[i..].starts_with("::") {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// The absolute module path a path names, in its crate (`super` and `self`
/// resolved against where it was written).
pub fn absolute(p: &PathRef) -> (bool, Vec<String>) {
    match p.anchor.as_str() {
        "siphook" => (true, p.segments.clone()),
        "crate" => (false, p.segments.clone()),
        _ => {
            let mut base = p.module.clone();
            let mut segs = p.segments.as_slice();
            if p.anchor == "super" {
                base.pop();
                while segs.first().is_some_and(|s| s == "super") {
                    base.pop();
                    segs = &segs[1..];
                }
            }
            base.extend(segs.iter().cloned());
            (false, base)
        }
    }
}

/// `use crate as c;`, `use super::super as root;`, `extern crate self as me;`: a
/// name for a module that the path scan would not follow.
pub fn aliases(code: &str) -> Vec<(usize, String)> {
    let words: Vec<(usize, &str)> = code
        .match_indices(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .scan(0, |start, (at, sep)| {
            let word = (*start, &code[*start..at]);
            *start = at + sep.len();
            Some(word)
        })
        .filter(|(_, w)| !w.is_empty())
        .collect();
    words
        .windows(2)
        .filter(|w| matches!(w[0].1, "crate" | "super" | "self") && w[1].1 == "as")
        .filter(|w| in_use_item(code, w[0].0))
        .map(|w| {
            let line = code[..w[0].0].matches('\n').count() + 1;
            (line, format!("{} as", w[0].1))
        })
        .collect()
}

/// Whether `at` is inside a `use` or `extern crate` item (`self as usize` is a cast):
/// walk back through the braces of a use group to the item's start.
fn in_use_item(code: &str, at: usize) -> bool {
    let mut end = at;
    loop {
        let Some(d) = code[..end].rfind([';', '{', '}']) else {
            return starts_an_import(&code[..end]);
        };
        if starts_an_import(&code[d + 1..end]) {
            return true;
        }
        if code.as_bytes()[d] != b'{' {
            return false;
        }
        end = d;
    }
}

fn starts_an_import(item: &str) -> bool {
    let item = item.trim_start();
    let item = match item.strip_prefix("pub") {
        Some(rest) if rest.starts_with('(') => rest.split_once(')').map_or(rest, |(_, r)| r),
        Some(rest) => rest,
        None => item,
    }
    .trim_start();
    item.starts_with("use ") || item.starts_with("extern crate ")
}
