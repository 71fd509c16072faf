//! The dependency rule of ARCHITECTURE.md, enforced: every `crate::`, `super::` and
//! `siphook::` path in `src/` points only at its own room or one above it in the
//! table there, and no two files import each other. The rule is read from that
//! table, so it is written in one place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One file of `src/`, by its path relative to the repository (`src/call/event.rs`).
struct Source {
    path: String,
    text: String,
}

/// Which crate a file belongs to: the library, or the binary (`main.rs`, `cli/`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Krate {
    Lib,
    Bin,
}

/// A file's crate and module path (`src/call/event.rs` → Lib, `[call, event]`).
fn module_of(path: &str) -> (Krate, Vec<String>) {
    let rel = path.strip_prefix("src/").unwrap_or(path);
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = rel.split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    match parts.first().map(String::as_str) {
        Some("main") if parts.len() == 1 => (Krate::Bin, Vec::new()),
        Some("lib") if parts.len() == 1 => (Krate::Lib, Vec::new()),
        Some("cli") => (Krate::Bin, parts),
        _ => (Krate::Lib, parts),
    }
}

/// The room a file lives in: the binary is all one room, `cli`.
fn room_of(path: &str) -> Option<String> {
    match module_of(path) {
        (Krate::Bin, _) => Some("cli".into()),
        (Krate::Lib, m) => m.first().cloned(),
    }
}

/// The rooms in the order of ARCHITECTURE.md's "Rooms" table, top first.
fn rooms(doc: &str) -> Vec<String> {
    let section = doc
        .split("\n## Rooms")
        .nth(1)
        .expect("ARCHITECTURE.md has a \"## Rooms\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|l| {
            let cell = l.trim().strip_prefix('|')?.split('|').next()?.trim();
            Some(cell.strip_prefix('`')?.strip_suffix('`')?.to_owned())
        })
        .collect()
}

/// The source with comments and the contents of string and char literals blanked
/// (newlines kept, so offsets still give line numbers): a path in a doc comment or
/// a log message is not an import.
fn code_only(src: &str) -> String {
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
                let end = if b.get(i + 1) == Some(&b'\\') {
                    src[i + 2..].find('\'').map(|n| i + 2 + n)
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
struct PathRef {
    anchor: String,
    segments: Vec<String>,
    line: usize,
    /// The module the path is written in, inline `mod x { … }` blocks included.
    module: Vec<String>,
}

impl PathRef {
    fn text(&self) -> String {
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
fn paths(code: &str, file_module: &[String]) -> Vec<PathRef> {
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
fn path_tail(code: &str, at: usize) -> (Vec<Vec<String>>, usize) {
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
fn absolute(p: &PathRef) -> (bool, Vec<String>) {
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

/// A broken rule, as the test prints it.
type Problem = String;

/// Every import that breaks the room order, and every file of an unlisted room.
fn room_violations(sources: &[Source], order: &[String]) -> Vec<Problem> {
    let rank = |r: &str| order.iter().position(|o| o == r);
    let mut problems = Vec::new();
    for s in sources {
        let Some(room) = room_of(&s.path) else {
            continue; // src/lib.rs only declares the rooms
        };
        let Some(own) = rank(&room) else {
            problems.push(format!(
                "{}: room `{room}` is not in ARCHITECTURE.md's table: give it a row in its place",
                s.path
            ));
            continue;
        };
        let (krate, module) = module_of(&s.path);
        for p in paths(&code_only(&s.text), &module) {
            let (external, abs) = absolute(&p);
            let target = match (krate, external) {
                // The binary's own `crate::` and `super::` paths stay in `cli`.
                (Krate::Bin, false) => continue,
                (Krate::Lib, true) => {
                    problems.push(format!(
                        "{}:{}: `{}`: the library names itself as `crate`",
                        s.path,
                        p.line,
                        p.text()
                    ));
                    continue;
                }
                _ => match abs.first() {
                    Some(t) => t.clone(),
                    None => continue,
                },
            };
            match rank(&target) {
                Some(t) if t <= own => {}
                Some(_) => problems.push(format!(
                    "{}:{}: `{}`: room `{room}` may not import `{target}`, which is below it in ARCHITECTURE.md's table",
                    s.path,
                    p.line,
                    p.text()
                )),
                None => problems.push(format!(
                    "{}:{}: `{}`: `{target}` is not a room of ARCHITECTURE.md's table",
                    s.path,
                    p.line,
                    p.text()
                )),
            }
        }
    }
    problems
}

/// Files that import each other, directly or round a longer circle. A `mod.rs`
/// (or the crate root) declares and re-exports its children, so edges into and out
/// of one do not count.
fn file_circles(sources: &[Source]) -> Vec<Problem> {
    let files: BTreeMap<(Krate, Vec<String>), &str> = sources
        .iter()
        .map(|s| (module_of(&s.path), s.path.as_str()))
        .collect();
    // `a/mod.rs`, `a.rs` beside an `a/` folder, and the crate roots.
    let front_door = |path: &str| {
        let folder = format!("{}/", path.trim_end_matches(".rs"));
        path.ends_with("/mod.rs")
            || !path["src/".len()..].contains('/')
            || sources.iter().any(|s| s.path.starts_with(&folder))
    };
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in sources {
        if front_door(&s.path) {
            continue;
        }
        let (krate, module) = module_of(&s.path);
        for p in paths(&code_only(&s.text), &module) {
            let (external, mut abs) = absolute(&p);
            let krate = if external { Krate::Lib } else { krate };
            // The longest prefix of the path that is a file names what it imports.
            let target = loop {
                if let Some(f) = files.get(&(krate, abs.clone())) {
                    break Some(*f);
                }
                if abs.pop().is_none() {
                    break None;
                }
            };
            if let Some(t) = target
                && t != s.path
                && !front_door(t)
            {
                edges.entry(s.path.as_str()).or_default().insert(t);
            }
        }
    }
    // A file is in a circle when it can reach itself; report each circle once.
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(f) = todo.pop() {
            for &n in edges.get(f).into_iter().flatten() {
                if seen.insert(n) {
                    todo.push(n);
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&str, BTreeSet<&str>> = edges.keys().map(|&f| (f, reach(f))).collect();
    let mut reported = BTreeSet::new();
    let mut problems = Vec::new();
    for (&f, r) in &reachable {
        if !r.contains(f) || reported.contains(f) {
            continue;
        }
        let circle: Vec<&str> = reachable
            .iter()
            .filter(|(g, rg)| rg.contains(f) && r.contains(*g))
            .map(|(g, _)| *g)
            .collect();
        reported.extend(circle.iter().copied());
        problems.push(format!(
            "these files import each other: {}; move what they share into a file both import",
            circle.join(" ↔ ")
        ));
    }
    problems
}

fn read_sources(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let path = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push(Source {
                    text: std::fs::read_to_string(&p).unwrap(),
                    path,
                });
            }
        }
    }
    out
}

#[test]
fn imports_follow_the_rooms_of_architecture_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let order = rooms(&doc);
    assert!(
        order.len() >= 10 && order.first().map(String::as_str) == Some("vocab"),
        "ARCHITECTURE.md's table was not read: {order:?}"
    );
    let sources = read_sources(root);
    let mut problems = room_violations(&sources, &order);
    problems.extend(file_circles(&sources));
    assert!(
        problems.is_empty(),
        "the dependency rule of ARCHITECTURE.md is broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_room_of_the_table_exists_in_src() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let order = rooms(&std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap());
    let present: BTreeSet<String> = read_sources(root)
        .iter()
        .filter_map(|s| room_of(&s.path))
        .collect();
    let missing: Vec<&String> = order.iter().filter(|r| !present.contains(*r)).collect();
    assert!(
        missing.is_empty(),
        "rooms in ARCHITECTURE.md with no code: {missing:?}"
    );
}

/// The checker itself: each kind of breach it exists for is caught, and what only
/// looks like a path is not.
#[test]
fn the_checker_catches_what_it_is_for() {
    let order: Vec<String> = ["vocab", "sip", "call", "admin", "cli"]
        .map(String::from)
        .into();
    let src = |path: &str, text: &str| Source {
        path: path.into(),
        text: text.into(),
    };
    let sources = [
        // Upward, in a brace group, and inline.
        src(
            "src/sip/message.rs",
            "use crate::{vocab::Timestamp, call::Event};\nfn f() { crate::admin::x(); }",
        ),
        // Comments, strings and raw strings are not imports.
        src(
            "src/vocab/time.rs",
            "//! see crate::call\n/* crate::sip */ const S: &str = \"crate::call\"; const R: &str = r#\"crate::sip\"#; const C: char = '\"';",
        ),
        // `super::super::` climbing out of the room.
        src("src/vocab/deep.rs", "use super::super::call::Event;"),
        // The binary names the library as `siphook`; its own `crate::` is its room.
        src(
            "src/cli/run.rs",
            "use siphook::call::Event; use crate::cli::logging;",
        ),
        src("src/main.rs", "mod cli;"),
        src("src/nowhere/mod.rs", ""),
        // A circle of two files, through an inline test module's `super` too.
        src("src/call/a.rs", "use super::b::X;"),
        src(
            "src/call/b.rs",
            "mod tests { use super::*; }\nfn g() { super::a::y(); }",
        ),
        src("src/call/mod.rs", "mod a; mod b; pub use a::y;"),
    ];
    let problems = room_violations(&sources, &order);
    let expect = [
        "src/sip/message.rs:1: `crate::call::Event`: room `sip` may not import `call`",
        "src/sip/message.rs:2: `crate::admin::x`: room `sip` may not import `admin`",
        "src/vocab/deep.rs:1: `super::super::call::Event`: room `vocab` may not import `call`",
        "src/nowhere/mod.rs: room `nowhere` is not in ARCHITECTURE.md's table",
    ];
    for e in expect {
        assert!(
            problems.iter().any(|p| p.starts_with(e)),
            "missed {e:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    assert_eq!(
        file_circles(&sources),
        [
            "these files import each other: src/call/a.rs ↔ src/call/b.rs; move what they share into a file both import"
        ]
    );
}
