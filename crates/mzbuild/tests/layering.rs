//! The engine's layering, enforced: every file under `src/` is read, the
//! modules it names (`crate::`, `super::` and `self::` paths, in `use`
//! items and inline) become arrows between files, and the test fails when
//! an arrow runs from a lower floor to a higher one, or when files import
//! each other in a circle. It runs with the rest of `cargo test` (CI:
//! `ci/test.sh`).
//!
//! An arrow goes to the file that defines the module a path names: the
//! longest prefix of the path that is a module file (`crate::git::tree::Tree`
//! -> `git/tree.rs`, `crate::git::GitRepo` -> `git/mod.rs`). Comments and
//! string literals are not read. A folder's `mod.rs` (and `lib.rs`) is the
//! face of its children: it declares them and may re-export and use them
//! by their bare names (`use tree::Tree`), and they may use what it
//! defines; such bare paths are not read, so a `mod.rs` and its own child
//! are never a circle. Between siblings and across folders, every path
//! counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The floors, lowest first: a module may import its own floor (without a
/// circle) and the floors below, never one above. Every top-level module of
/// `src/` must be listed; the crate root (`lib.rs`: module list and
/// re-exports) stands above all.
///
/// - 0: leaves that know nothing of mzbuild: printing, the environment,
///   small helpers.
/// - 1: children and signals (`process`); mzbuild's cache files
///   (`cachefile`: where they live, their format, when stat data proves a
///   file unchanged).
/// - 2: `git`: what git sees (the object store, the index, the listing of
///   the work tree, `Tree`, the blob-id cache).
/// - 3: `config`: `mzbuild.yml`, the root `Cargo.toml`, the crate graph,
///   settings (reads files from a `Tree`).
/// - 4: `docker`: the docker CLI (runs processes with settings; knows no
///   image, plan or registry).
/// - 5 to 8: the pipeline: `discover` (images and their graph), `preimage`,
///   `fingerprint`, `plan` (with the naming of images).
/// - 9: `ctx`: what a command runs against (repository, settings, naming,
///   docker), taken by the engines above it.
/// - 10, 11: `build` (the worker pool, buildx), `publish` (registries).
/// - 12: `commands`: every command's top level.
const FLOORS: &[(&str, u32)] = &[
    ("ui", 0),
    ("env", 0),
    ("util", 0),
    ("process", 1),
    ("cachefile", 1),
    // cosign's formats and keys: knows nothing of mzbuild.
    ("sigstore", 1),
    ("git", 2),
    ("config", 3),
    ("docker", 4),
    ("discover", 5),
    ("preimage", 6),
    ("fingerprint", 7),
    ("plan", 8),
    ("ctx", 9),
    ("build", 10),
    ("publish", 11),
    // The `--json` run document: above the build engine it reports on.
    ("report", 11),
    // Signatures, attestations and the trust check of published tags, in
    // registries: beside the registry client it uses.
    ("trust", 11),
    ("commands", 12),
];

/// The crate root's floor: above every module.
const ROOT_FLOOR: u32 = 13;

/// A source file: its module path (`[]` for `lib.rs`) and its text.
struct File {
    module: Vec<String>,
    text: String,
}

#[test]
fn no_upward_import_and_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    collect(&src, &src, &mut files);
    assert!(files.len() > 40, "read only {} files under {}", files.len(), src.display());
    let problems = check(&files);
    assert!(problems.is_empty(), "the engine's layering is broken:\n  {}", problems.join("\n  "));
}

/// The checker itself catches what it claims to.
#[test]
fn the_check_catches_an_upward_import_and_a_cycle() {
    let file = |module: &[&str], text: &str| {
        (module.join("/"), File { module: module.iter().map(|s| s.to_string()).collect(), text: text.to_string() })
    };
    let ok: BTreeMap<String, File> = [
        file(&[], "pub mod git;\npub mod plan;\npub mod config;\n"),
        file(&["git"], "pub mod index;\npub mod tree;\nuse tree::Tree;\n"),
        file(
            &["git", "tree"],
            "use super::{index::Index, Oid}; // crate::plan in a comment\nconst S: &str = \"crate::plan\";",
        ),
        file(&["git", "index"], "fn f() -> crate::git::tree::Tree { todo!() }\nmod tests { use super::*; }"),
        file(&["config"], "use crate::git::tree::Tree;\nfn f() { crate::git::hex(); }"),
        file(&["plan"], "use crate::{config, git::{self, tree::Tree}};\n"),
    ]
    .into_iter()
    .collect();
    let problems = check(&ok);
    // git/tree.rs -> git/index.rs -> git/tree.rs: a circle (git/mod.rs and
    // its child git/tree.rs are not one).
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("circle") && problems[0].contains("git/tree.rs"), "{problems:#?}");

    let bad: BTreeMap<String, File> = [
        file(&[], "pub mod git;\npub mod plan;\npub mod config;\n"),
        file(&["git"], ""),
        file(&["config"], "fn f() -> crate::plan::Step { todo!() }"),
        file(&["plan"], "use crate::{ui, config::Thing};\n"),
        file(&["nowhere"], ""),
    ]
    .into_iter()
    .collect();
    let problems = check(&bad);
    assert!(problems.iter().any(|p| p.contains("config.rs imports plan.rs")), "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("`nowhere`") && p.contains("FLOORS")), "{problems:#?}");
    // `crate::ui` names no module file here: the crate root, above all.
    assert!(problems.iter().any(|p| p.contains("plan.rs imports lib.rs")), "{problems:#?}");
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, File>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap().to_str().unwrap().trim_end_matches(".rs").to_string();
        let mut module: Vec<String> = rel.split('/').map(str::to_string).collect();
        if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
            module.pop();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        out.insert(module.join("/"), File { module, text });
    }
}

/// Every problem: upward imports, unranked modules, circles.
fn check(files: &BTreeMap<String, File>) -> Vec<String> {
    let name = |key: &str| match files.get(key) {
        Some(f) if f.module.is_empty() => "lib.rs".to_string(),
        _ if files.keys().any(|k| k != key && k.starts_with(&format!("{key}/"))) => format!("{key}/mod.rs"),
        _ => format!("{key}.rs"),
    };
    let floors: BTreeMap<&str, u32> = FLOORS.iter().copied().collect();
    let floor = |module: &[String]| match module.first() {
        None => Some(ROOT_FLOOR),
        Some(top) => floors.get(top.as_str()).copied(),
    };
    let mut problems = BTreeSet::new();
    let mut arrows: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (key, file) in files {
        let Some(from_floor) = floor(&file.module) else {
            problems.insert(format!("module `{}` has no floor: add it to FLOORS", file.module[0]));
            continue;
        };
        for path in paths(file) {
            // The file that defines the longest module prefix of `path`.
            let Some(target) = (0..=path.len()).rev().map(|n| path[..n].join("/")).find(|k| files.contains_key(k))
            else {
                continue;
            };
            let (to_key, to) = files.get_key_value(&target).unwrap();
            if to_key == key {
                continue;
            }
            arrows.entry(key).or_default().insert(to_key);
            match floor(&to.module) {
                None => {
                    problems.insert(format!("module `{}` has no floor: add it to FLOORS", to.module[0]));
                }
                Some(to_floor) if to_floor > from_floor => {
                    problems.insert(format!(
                        "{} imports {} ({}): floor {from_floor} may not use floor {to_floor}",
                        name(key),
                        name(to_key),
                        path.join("::")
                    ));
                }
                Some(_) => {}
            }
        }
    }
    for circle in circles(&arrows) {
        let names: Vec<String> = circle.iter().map(|k| name(k)).collect();
        problems.insert(format!("files import each other in a circle: {}", names.join(", ")));
    }
    problems.into_iter().collect()
}

/// The strongly connected components of more than one file (Tarjan).
fn circles<'a>(arrows: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    struct State<'a, 'g> {
        arrows: &'g BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        out: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(s: &mut State<'a, '_>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        for &w in s.arrows.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let at = s.stack.iter().position(|&x| x == v).unwrap();
            let mut component: Vec<&str> = s.stack.split_off(at);
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State { arrows, index: BTreeMap::new(), low: BTreeMap::new(), stack: vec![], out: vec![] };
    for &v in arrows.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// The absolute module paths a file names.
fn paths(file: &File) -> Vec<Vec<String>> {
    let code = strip(&file.text);
    let mut out = Vec::new();
    let toks = tokens(&code);
    let mut i = 0;
    while i < toks.len() {
        let depth = toks[i].1;
        // `use` trees, with their braces.
        if toks[i].0 == "use" && (i == 0 || toks[i - 1].0 != "::") {
            let end = (i..toks.len()).find(|&j| toks[j].0 == ";").unwrap_or(toks.len());
            for p in expand(&toks[i + 1..end].iter().map(|t| t.0.as_str()).collect::<Vec<_>>()) {
                if let Some(abs) = absolute(file, depth, &p) {
                    out.push(abs);
                }
            }
            i = end;
            continue;
        }
        // Inline paths: `crate::a::b`, `super::x`, `self::y`.
        let starts_path = matches!(toks[i].0.as_str(), "crate" | "super" | "self")
            && toks.get(i + 1).is_some_and(|t| t.0 == "::")
            && (i == 0 || toks[i - 1].0 != "::");
        if starts_path {
            let mut p = vec![toks[i].0.clone()];
            let mut j = i + 1;
            while toks.get(j).is_some_and(|t| t.0 == "::") && toks.get(j + 1).is_some_and(|t| is_ident(&t.0)) {
                p.push(toks[j + 1].0.clone());
                j += 2;
            }
            if let Some(abs) = absolute(file, depth, &p) {
                out.push(abs);
            }
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

/// `p` from the crate root, if it is a path into this crate. `depth`: how
/// many inline `mod x { }` blocks the path is in (their `super` is the
/// file's own module).
fn absolute(file: &File, depth: usize, p: &[String]) -> Option<Vec<String>> {
    let mut module = file.module.clone();
    let mut inline = depth;
    let mut rest = p;
    match rest.first()?.as_str() {
        "crate" => {
            module.clear();
            rest = &rest[1..];
        }
        "self" => rest = &rest[1..],
        "super" => {
            while rest.first().is_some_and(|s| s == "super") {
                if inline > 0 {
                    inline -= 1;
                } else {
                    module.pop()?;
                }
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    module.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(module)
}

/// Expand a `use` tree (`crate::{a, b::{c, self}}`) into its paths.
fn expand(toks: &[&str]) -> Vec<Vec<String>> {
    fn tree(toks: &[&str], at: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        while let Some(&t) = toks.get(*at) {
            match t {
                "{" => {
                    *at += 1;
                    while toks.get(*at).is_some_and(|t| *t != "}") {
                        tree(toks, at, &path, out);
                        if toks.get(*at) == Some(&",") {
                            *at += 1;
                        }
                    }
                    *at += 1;
                    return;
                }
                "," | "}" => break,
                "as" => *at += 2,
                t => {
                    if is_ident(t) {
                        path.push(t.to_string());
                    }
                    *at += 1;
                }
            }
        }
        if !path.is_empty() {
            out.push(path);
        }
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < toks.len() {
        tree(toks, &mut at, &[], &mut out);
        at += 1;
    }
    out
}

fn is_ident(t: &str) -> bool {
    t.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && t.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Identifiers, `::` and single punctuation, each with how many inline
/// `mod x { ... }` blocks it is in.
fn tokens(code: &str) -> Vec<(String, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let mut out: Vec<(String, usize)> = Vec::new();
    // Brace depths at which inline modules were opened.
    let mut modules: Vec<usize> = Vec::new();
    let mut braces = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((chars[start..i].iter().collect(), modules.len()));
            continue;
        }
        if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(("::".into(), modules.len()));
            i += 2;
            continue;
        }
        if c == '{' {
            let n = out.len();
            if n >= 2 && out[n - 2].0 == "mod" && is_ident(&out[n - 1].0) {
                modules.push(braces);
            }
            braces += 1;
        }
        if c == '}' {
            braces -= 1;
            if modules.last() == Some(&braces) {
                modules.pop();
            }
        }
        if !c.is_whitespace() {
            out.push((c.to_string(), modules.len()));
        }
        i += 1;
    }
    out
}

/// `code` without comments, string and character literals (each replaced
/// by a space or an empty literal), so that only code is read.
fn strip(code: &str) -> String {
    let b: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
            continue;
        }
        // Raw strings: r"..", r#".."#, br#".."#.
        let raw_at = if c == 'r' && (i == 0 || !ident(b[i - 1])) {
            Some(i + 1)
        } else if c == 'b' && next == Some('r') && (i == 0 || !ident(b[i - 1])) {
            Some(i + 2)
        } else {
            None
        };
        if let Some(mut j) = raw_at {
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) == Some(&'"') {
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
                continue;
            }
        }
        if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
            continue;
        }
        if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), not a lifetime.
            if next == Some('\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
                continue;
            }
            if b.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}
