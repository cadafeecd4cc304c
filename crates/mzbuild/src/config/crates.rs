//! The cargo workspace as mzbuild needs it: which crate builds which binary
//! or example, and each crate's path dependencies, so that a cargo-build
//! pre-image's inputs are the crates its binaries are built from.
//!
//! Two rules for which dependencies count ([`PathDependencies`]): the
//! original mzbuild's (entries with a `path` key in `[dependencies]`,
//! `[build-dependencies]` and, for an example, its own crate's
//! `[dev-dependencies]`), which is the default because it gives the
//! original's tags; and cargo's, which also follows `{ workspace = true }`
//! path dependencies and `[target.'cfg(..)'.*]` tables. Both are always
//! read, so that the default can say what it leaves out.
//!
//! Read straight from the `Cargo.toml` files (no `cargo metadata`: it needs a
//! valid lock file and the network, and is slow).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, bail, Context, Result};
use toml::Value;

use crate::git::tree::Tree;

/// Which path dependencies make a crate's files inputs of the cargo-build
/// images built from it (`[workspace.metadata.mzbuild] path-dependencies`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathDependencies {
    /// The original mzbuild's: entries with a `path` key in `[dependencies]`
    /// and `[build-dependencies]` (and an example's own crate's
    /// `[dev-dependencies]`). Gives the original's tags.
    #[default]
    Original,
    /// Every path dependency cargo builds with: also `{ workspace = true }`
    /// entries whose `[workspace.dependencies]` entry is a path, and the
    /// `[target.'cfg(..)'.*]` tables. Safer; changes tags.
    Cargo,
}

#[derive(Debug, Clone)]
pub struct Crate {
    pub name: String,
    /// Repository-relative directory (`""` for a root package).
    pub dir: String,
    pub bins: Vec<String>,
    pub examples: Vec<String>,
    /// Directories of the entries with a `path` key in `[dependencies]` and
    /// `[build-dependencies]` (the original's `path_dependencies` and
    /// `path_build_dependencies`).
    pub path_deps: BTreeSet<String>,
    /// Directories of the entries with a `path` key in `[dev-dependencies]`.
    pub path_dev_deps: BTreeSet<String>,
    /// Path dependencies that cargo builds with but the original does not
    /// follow.
    pub cargo_only_deps: Vec<CargoOnlyDep>,
}

/// A path dependency the original mzbuild does not see: a `{ workspace =
/// true }` entry whose `[workspace.dependencies]` entry has a `path`, or an
/// entry of a `[target.'cfg(..)'.*]` table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CargoOnlyDep {
    /// The dependency's directory.
    pub dir: String,
    /// The table and key, as written: `[dependencies] mz-sql-parser = { workspace = true }`.
    pub entry: String,
    pub dev: bool,
}

/// The crates of the cargo workspace, by directory.
#[derive(Debug, Default)]
pub struct CrateGraph {
    pub crates: BTreeMap<String, Crate>,
}

impl CrateGraph {
    /// Read the crates of the workspace whose root manifest is
    /// `root_manifest` (parsed once, by `WorkspaceConfig`).
    pub fn load(tree: &Tree, root_manifest: &Value) -> Result<CrateGraph> {
        let mut ws = CrateGraph::default();
        let workspace = root_manifest.get("workspace");
        let ws_deps = workspace.and_then(|w| w.get("dependencies")).and_then(Value::as_table);

        let mut pending: Vec<String> = vec![];
        if root_manifest.get("package").is_some() {
            pending.push(String::new());
        }
        if let Some(w) = workspace {
            let excluded: Vec<String> =
                strings(w.get("exclude")).into_iter().map(|e| e.trim_end_matches('/').to_string()).collect();
            for member in strings(w.get("members")) {
                let member = member.trim_end_matches('/');
                for dir in expand_member(tree, member)? {
                    if !excluded.iter().any(|e| dir == *e || dir.starts_with(&format!("{e}/"))) {
                        pending.push(dir);
                    }
                }
            }
        }
        // Path dependencies inside the workspace are members too (as in
        // cargo), so follow them.
        while let Some(dir) = pending.pop() {
            if ws.crates.contains_key(&dir) {
                continue;
            }
            let manifest_path = join(&dir, "Cargo.toml");
            let manifest = if dir.is_empty() { root_manifest.clone() } else { read_manifest(tree, &manifest_path)? };
            let krate =
                parse_crate(tree, &dir, &manifest, ws_deps).with_context(|| format!("reading {manifest_path}"))?;
            pending.extend(krate.path_deps.iter().chain(&krate.path_dev_deps).cloned());
            pending.extend(krate.cargo_only_deps.iter().map(|d| d.dir.clone()));
            ws.crates.insert(dir, krate);
        }
        Ok(ws)
    }

    /// The crate that defines binary `bin`.
    pub fn crate_for_bin(&self, bin: &str) -> Result<&Crate> {
        self.crate_for(bin, |c| &c.bins, "binary")
    }

    pub fn crate_for_example(&self, example: &str) -> Result<&Crate> {
        self.crate_for(example, |c| &c.examples, "example")
    }

    fn crate_for(&self, name: &str, list: impl Fn(&Crate) -> &Vec<String>, what: &str) -> Result<&Crate> {
        let found: Vec<&Crate> = self.crates.values().filter(|c| list(c).iter().any(|b| b == name)).collect();
        match found.as_slice() {
            [c] => Ok(c),
            [] => {
                let mut all: Vec<&str> =
                    self.crates.values().flat_map(|c| list(c).iter().map(String::as_str)).collect();
                all.sort_unstable();
                let (a, plural) = if what == "example" { ("an", "examples") } else { ("a", "binaries") };
                bail!(
                    "no crate of the workspace has {a} {what} named `{name}` (the workspace's {plural}: {}); \
                     fix the name or add the {what} to a crate",
                    if all.is_empty() { "none".to_string() } else { all.join(", ") }
                )
            }
            many => bail!(
                "several crates have a {what} named `{name}`: {}; cargo cannot tell which to build",
                many.iter().map(|c| format!("{} ({})", c.name, c.dir)).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The directories of `krate` and of every crate it reaches over path
    /// dependencies and path build-dependencies; with `dev` (an example's
    /// crate), also over `krate`'s own path dev-dependencies (cargo never
    /// builds a dependency's dev-dependencies). Which dependencies count is
    /// `rule`'s; the original's `transitive_path_dependencies` is
    /// `PathDependencies::Original`.
    pub fn closure(&self, krate: &Crate, dev: bool, rule: PathDependencies) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![krate.dir.clone()];
        if dev {
            stack.extend(krate.path_dev_deps.iter().cloned());
            if rule == PathDependencies::Cargo {
                stack.extend(krate.cargo_only_deps.iter().filter(|d| d.dev).map(|d| d.dir.clone()));
            }
        }
        while let Some(dir) = stack.pop() {
            if !seen.insert(dir.clone()) {
                continue;
            }
            if let Some(c) = self.crates.get(&dir) {
                stack.extend(c.path_deps.iter().cloned());
                if rule == PathDependencies::Cargo {
                    stack.extend(c.cargo_only_deps.iter().filter(|d| !d.dev).map(|d| d.dir.clone()));
                }
            }
        }
        seen
    }

    /// The dependencies by which cargo's rule reaches crates outside
    /// `closure` (the original's closure of `krate`, `dev` as for
    /// [`CrateGraph::closure`]): `(manifest, entry, directory)` each.
    pub fn unfollowed(&self, krate: &Crate, dev: bool, closure: &BTreeSet<String>) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for dir in closure {
            let Some(c) = self.crates.get(dir) else { continue };
            for d in &c.cargo_only_deps {
                if (!d.dev || (dev && c.dir == krate.dir)) && !closure.contains(&d.dir) {
                    out.push((join(&c.dir, "Cargo.toml"), d.entry.clone(), d.dir.clone()));
                }
            }
        }
        out
    }
}

fn read_manifest(tree: &Tree, rel: &str) -> Result<Value> {
    let bytes = tree.read(rel)?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow!("{rel}: not valid UTF-8"))?;
    let value: Value = toml::from_str(&text).map_err(|e| anyhow!("{rel}: invalid TOML: {e}"))?;
    Ok(value)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn join(dir: &str, rel: &str) -> String {
    if dir.is_empty() {
        rel.to_string()
    } else {
        format!("{dir}/{rel}")
    }
}

/// Lexically normalise `dir/rel` (resolving `.` and `..`); an error if it
/// leaves the repository.
pub fn normalize(dir: &str, rel: &str) -> Result<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for comp in rel.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    bail!("path `{rel}` (relative to `{dir}`) leaves the repository");
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Directories matching a `members` entry (which may be a glob such as
/// `src/*`) that hold a git-visible `Cargo.toml`.
fn expand_member(tree: &Tree, member: &str) -> Result<Vec<String>> {
    let member = normalize("", member)?;
    if !member.contains(['*', '?', '[']) {
        return Ok(vec![member]);
    }
    let glob = globset::GlobBuilder::new(&member)
        .literal_separator(true)
        .build()
        .with_context(|| format!("workspace member pattern `{member}`"))?
        .compile_matcher();
    Ok(tree
        .files
        .iter()
        .filter_map(|f| f.strip_suffix("/Cargo.toml"))
        .filter(|dir| glob.is_match(dir))
        .map(str::to_string)
        .collect())
}

fn parse_crate(tree: &Tree, dir: &str, manifest: &Value, ws_deps: Option<&toml::Table>) -> Result<Crate> {
    let package = manifest.get("package").ok_or_else(|| anyhow!("no [package] section"))?;
    let name =
        package.get("name").and_then(Value::as_str).ok_or_else(|| anyhow!("[package] has no `name`"))?.to_string();
    let (bins, examples) = targets(tree, dir, manifest, package, &name);
    let deps = path_dependencies(tree, dir, manifest, ws_deps)?;
    Ok(Crate {
        name,
        dir: dir.to_string(),
        bins: bins.into_iter().collect(),
        examples: examples.into_iter().collect(),
        path_deps: deps.path_deps,
        path_dev_deps: deps.path_dev_deps,
        cargo_only_deps: deps.cargo_only_deps.into_iter().collect(),
    })
}

/// The crate's binaries and examples: those its manifest names, and those
/// cargo finds by its file layout (unless `autobins` / `autoexamples` is
/// false).
fn targets(
    tree: &Tree,
    dir: &str,
    manifest: &Value,
    package: &Value,
    name: &str,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let auto = |key: &str| package.get(key).and_then(Value::as_bool).unwrap_or(true);
    let rel = |f: &'_ String| -> String {
        if dir.is_empty() {
            f.clone()
        } else {
            f[dir.len() + 1..].to_string()
        }
    };
    let named = |key: &str| -> BTreeSet<String> {
        let tables = manifest.get(key).and_then(Value::as_array).into_iter().flatten();
        tables.filter_map(|t| t.get("name").and_then(Value::as_str)).map(str::to_string).collect()
    };
    let mut bins = named("bin");
    let mut examples = named("example");
    let autobins = auto("autobins");
    let autoexamples = auto("autoexamples");
    for f in tree.under(dir) {
        let r = rel(f);
        if autobins {
            if r == "src/main.rs" {
                bins.insert(name.to_string());
            }
            if let Some(n) = auto_target(&r, "src/bin/") {
                bins.insert(n.to_string());
            }
        }
        if autoexamples {
            if let Some(n) = auto_target(&r, "examples/") {
                examples.insert(n.to_string());
            }
        }
    }
    (bins, examples)
}

/// A crate's path dependencies, by the rule that follows them.
#[derive(Default)]
struct PathDeps {
    path_deps: BTreeSet<String>,
    path_dev_deps: BTreeSet<String>,
    cargo_only_deps: BTreeSet<CargoOnlyDep>,
}

fn path_dependencies(tree: &Tree, dir: &str, manifest: &Value, ws_deps: Option<&toml::Table>) -> Result<PathDeps> {
    let mut deps = PathDeps::default();
    for (table_name, target_table, table) in dependency_tables(manifest) {
        let dev = table_name.ends_with(".dev-dependencies]") || table_name == "[dev-dependencies]";
        for (dep_name, spec) in table.as_table().into_iter().flatten() {
            let Some((p, written)) = dependency_path(dir, &table_name, dep_name, spec, ws_deps)? else { continue };
            if !tree.contains(&join(&p, "Cargo.toml")) {
                bail!("{table_name} `{dep_name}` points at `{p}`, which has no Cargo.toml git can see");
            }
            if target_table || spec.get("path").is_none() {
                deps.cargo_only_deps.insert(CargoOnlyDep { dir: p, entry: format!("{table_name} {written}"), dev });
            } else if dev {
                deps.path_dev_deps.insert(p);
            } else {
                deps.path_deps.insert(p);
            }
        }
    }
    Ok(deps)
}

/// The dependency tables of a manifest: (the table as written, whether it
/// is a `[target.*]` one, the table).
fn dependency_tables(manifest: &Value) -> Vec<(String, bool, &Value)> {
    let mut tables: Vec<(String, bool, &Value)> = vec![];
    for key in ["dependencies", "build-dependencies", "dev-dependencies"] {
        if let Some(t) = manifest.get(key) {
            tables.push((format!("[{key}]"), false, t));
        }
    }
    for (cfg, target) in manifest.get("target").and_then(Value::as_table).into_iter().flatten() {
        for key in ["dependencies", "build-dependencies", "dev-dependencies"] {
            if let Some(t) = target.get(key) {
                tables.push((format!("[target.'{cfg}'.{key}]"), true, t));
            }
        }
    }
    tables
}

/// The directory of a path dependency (`path = ...`, or `workspace = true`
/// with a path in [workspace.dependencies]) and the entry as written; None
/// for other dependencies.
fn dependency_path(
    dir: &str,
    table_name: &str,
    dep_name: &str,
    spec: &Value,
    ws_deps: Option<&toml::Table>,
) -> Result<Option<(String, String)>> {
    if let Some(p) = spec.get("path").and_then(Value::as_str) {
        let path = normalize(dir, p).with_context(|| format!("{table_name} `{dep_name}`"))?;
        Ok(Some((path, format!("{dep_name} = {{ path = \"{p}\" }}"))))
    } else if spec.get("workspace").and_then(Value::as_bool) == Some(true) {
        // The path, if any, is in [workspace.dependencies], relative to the
        // root.
        let path = ws_deps
            .and_then(|d| d.get(dep_name))
            .and_then(|d| d.get("path"))
            .and_then(Value::as_str)
            .map(|p| normalize("", p))
            .transpose()
            .with_context(|| format!("[workspace.dependencies] `{dep_name}`"))?;
        Ok(path.map(|p| (p, format!("{dep_name} = {{ workspace = true }}"))))
    } else {
        Ok(None)
    }
}

/// `src/bin/foo.rs` or `src/bin/foo/main.rs` -> `foo` (for `prefix` `src/bin/`).
fn auto_target<'a>(rel: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = rel.strip_prefix(prefix)?;
    if let Some(stem) = rest.strip_suffix(".rs") {
        if !stem.contains('/') {
            return Some(stem);
        }
    }
    rest.strip_suffix("/main.rs").filter(|d| !d.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize("src/foo", "../bar").unwrap(), "src/bar");
        assert_eq!(normalize("src/foo", "./x/../y/").unwrap(), "src/foo/y");
        assert!(normalize("src", "../../x").is_err());
    }

    #[test]
    fn auto_targets() {
        assert_eq!(auto_target("src/bin/a.rs", "src/bin/"), Some("a"));
        assert_eq!(auto_target("src/bin/b/main.rs", "src/bin/"), Some("b"));
        assert_eq!(auto_target("src/bin/b/util.rs", "src/bin/"), None);
        assert_eq!(auto_target("examples/e.rs", "examples/"), Some("e"));
    }
}
