//! The dependency rule of ARCHITECTURE.md, enforced: every `crate::`, `super::` and
//! `siphook::` path in `src/` points only at its own room or one earlier in the
//! table there, no two files import each other, and `src/lib.rs` declares the
//! rooms in that order. The rule is read from that table, so it is written once.

mod lexer;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use lexer::{absolute, aliases, code_only, path_tail, paths};

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
        let code = code_only(&s.text);
        for (line, alias) in aliases(&code) {
            problems.push(format!(
                "{}:{line}: `{alias}`: an alias of the crate or a parent module hides what is imported; name the room",
                s.path
            ));
        }
        if krate == Krate::Lib
            && let Some(at) = code.find("anyhow")
        {
            problems.push(format!(
                "{}:{}: `anyhow` in the library: return a typed error (thiserror); anyhow belongs to the binary's edge (cli)",
                s.path,
                code[..at].matches('\n').count() + 1
            ));
        }
        for p in paths(&code, &module) {
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
                    "{}:{}: `{}`: room `{room}` may not import `{target}`, which comes after it in ARCHITECTURE.md's table. Move what both need into a room earlier than both, or pass it down as a value, channel or callback; do not reorder the table to silence this",
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

/// Files that import each other, directly or round a longer circle. A front door
/// (a `mod.rs`, an `x.rs` beside its `x/` folder, a crate root) may be imported
/// by its children and import them; an item it re-exports (`pub use view::build`)
/// counts as an import of the child file it comes from.
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
    // What each front door re-exports from a child file: `pub use view::build;`
    // in sip/mod.rs makes `super::build` an import of sip/view.rs.
    let mut reexports: BTreeMap<&str, BTreeMap<String, &str>> = BTreeMap::new();
    for s in sources.iter().filter(|s| front_door(&s.path)) {
        let (krate, module) = module_of(&s.path);
        let code = code_only(&s.text);
        for (at, _) in code.match_indices("pub use ") {
            for tail in path_tail(&code, at + "pub use ".len()).0 {
                let (Some(child), Some(item)) = (tail.first(), tail.last()) else {
                    continue;
                };
                let mut m = module.clone();
                m.push(child.clone());
                if let Some(f) = files.get(&(krate, m)) {
                    reexports
                        .entry(s.path.as_str())
                        .or_default()
                        .insert(item.clone(), *f);
                }
            }
        }
    }
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in sources {
        if front_door(&s.path) {
            continue;
        }
        let (krate, module) = module_of(&s.path);
        for p in paths(&code_only(&s.text), &module) {
            let (external, abs) = absolute(&p);
            let krate = if external { Krate::Lib } else { krate };
            // The longest prefix of the path that is a file names what it imports;
            // through a front door, the child file that item is re-exported from.
            let target = (0..=abs.len()).rev().find_map(|n| {
                let f = *files.get(&(krate, abs[..n].to_vec()))?;
                let through = abs
                    .get(n)
                    .and_then(|item| reexports.get(f)?.get(item).copied());
                Some(through.unwrap_or(f))
            });
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
fn lib_rs_declares_the_rooms_in_the_table_s_order() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let order = rooms(&std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap());
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ")?.strip_suffix(';'))
        .collect();
    let library: Vec<&str> = order
        .iter()
        .map(String::as_str)
        .filter(|r| *r != "cli")
        .collect();
    assert_eq!(declared, library, "src/lib.rs against ARCHITECTURE.md");
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
        // Later rooms: in a brace group, inline, after an escaped char literal,
        // and a name that is no room at all.
        src(
            "src/sip/message.rs",
            "use crate::{vocab::Timestamp, call::Event};\nfn f() { crate::admin::x(); }\nconst Q: [char; 2] = ['\\'','\"']; use crate::call::Tracker;\nuse crate::ghost::X;",
        ),
        // Comments, strings, raw strings and casts are not imports.
        src(
            "src/vocab/time.rs",
            "//! see crate::call\n/* crate::sip */ const S: &str = \"crate::call\"; const R: &str = r#\"a \" crate::sip\"#; const C: char = '\"'; fn n(self) -> u8 { self as u8 }",
        ),
        // `super::super::` climbing out of the room.
        src("src/vocab/deep.rs", "use super::super::call::Event;"),
        // An alias, the library naming itself, and anyhow outside the binary.
        src(
            "src/call/c.rs",
            "use crate as c;\nuse siphook::vocab::Timestamp;\nfn f() -> anyhow::Result<()> { Ok(()) }",
        ),
        // The binary names the library as `siphook`; its own `crate::` is its room.
        src(
            "src/cli/run.rs",
            "use siphook::call::Event; use crate::cli::logging; fn f() -> anyhow::Result<()> { Ok(()) }",
        ),
        src("src/main.rs", "mod cli;"),
        src("src/nowhere/mod.rs", ""),
        // A circle of two files, one side only through an inline test module.
        src("src/call/a.rs", "use super::b::X;"),
        src("src/call/b.rs", "mod tests { use super::super::a::y; }"),
        src("src/call/mod.rs", "mod a; mod b; pub use a::y;"),
        // A circle through what a mod.rs re-exports.
        src("src/admin/x.rs", "use super::build;"),
        src("src/admin/y.rs", "use super::Thing;"),
        src(
            "src/admin/mod.rs",
            "mod x; mod y; pub use x::Thing; pub use y::build;",
        ),
        // `d.rs` beside a `d/` folder is a front door: a child may use it.
        src("src/call/d.rs", "mod e; fn g() { self::e::z(); }"),
        src("src/call/d/e.rs", "use super::Y; pub fn z() {}"),
    ];
    let problems = room_violations(&sources, &order);
    let expect = [
        "src/sip/message.rs:1: `crate::call::Event`: room `sip` may not import `call`",
        "src/sip/message.rs:2: `crate::admin::x`: room `sip` may not import `admin`",
        "src/sip/message.rs:3: `crate::call::Tracker`: room `sip` may not import `call`",
        "src/sip/message.rs:4: `crate::ghost::X`: `ghost` is not a room",
        "src/vocab/deep.rs:1: `super::super::call::Event`: room `vocab` may not import `call`",
        "src/call/c.rs:1: `crate as`: an alias",
        "src/call/c.rs:2: `siphook::vocab::Timestamp`: the library names itself as `crate`",
        "src/call/c.rs:3: `anyhow` in the library",
        "src/nowhere/mod.rs: room `nowhere` is not in ARCHITECTURE.md's table",
    ];
    for e in expect {
        assert!(
            problems.iter().any(|p| p.starts_with(e)),
            "missed {e:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    let circle = |a: &str, b: &str| {
        format!(
            "these files import each other: {a} ↔ {b}; move what they share into a file both import"
        )
    };
    assert_eq!(
        file_circles(&sources),
        [
            circle("src/admin/x.rs", "src/admin/y.rs"),
            circle("src/call/a.rs", "src/call/b.rs")
        ]
    );
}
