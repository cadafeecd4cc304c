//! What a fingerprint was computed from, kept to answer "why does this
//! rebuild?": an image's [`Snapshot`] (inputs with their modes and content
//! hashes, pre-image words, settings, dependencies' fingerprints), the pure
//! comparison of two snapshots ([`compare`]), and the records that build and
//! ensure leave under `target/mzbuild/fingerprints/` so that any fingerprint
//! seen before can be explained later.
//!
//! A record is small: `<FINGERPRINT>.json` names the image, its settings,
//! words and dependencies, and its inputs as ranges of entries of a shared
//! manifest, `manifests/<sha1>` (one `<mode> <content sha1> <path>` entry per
//! unique input of the run, each ended by a NUL byte, so that any path
//! works; content-addressed, written once). Fingerprints already recorded
//! are skipped, so a run that changes nothing writes nothing. The newest
//! [`KEEP_MANIFESTS`] manifests are kept, with the records that use them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use super::hash::FileHash;
use super::{Computed, Fingerprint};
use crate::config::settings::{self, Settings};
use crate::discover::{Image, Repo};
use crate::preimage::cargo_build::RUSTFLAGS_WORD;

/// One image's fingerprint and everything it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub image: String,
    pub fingerprint: Fingerprint,
    pub settings: String,
    /// Each pre-image's `extra()` word, in order.
    pub extras: Vec<String>,
    /// Direct dependencies and their fingerprints.
    pub depends_on: BTreeMap<String, Fingerprint>,
    /// Inputs, sorted by path.
    pub inputs: Vec<(String, FileHash)>,
}

/// Snapshots of every image of `computed`.
pub fn snapshots(computed: &Computed) -> BTreeMap<String, Snapshot> {
    computed.images.keys().map(|name| (name.clone(), computed.snapshot(name))).collect()
}

/// How two snapshots of one image differ.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Change {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Contents changed (the mode may have too).
    pub changed: Vec<String>,
    /// Only the mode changed (exec bit, symlink).
    pub mode_changed: Vec<String>,
    /// (old, new) settings string, when it differs.
    pub settings: Option<(String, String)>,
    /// (old, new) pre-image words, when they differ.
    pub extras: Option<(Vec<String>, Vec<String>)>,
    /// Dependencies whose fingerprint differs, or that were added or
    /// removed: (name, old, new).
    pub dependencies: Vec<DepChange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DepChange {
    pub name: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        *self == Change::default()
    }

    /// One line per kind of change, e.g. `2 files changed: a, b`.
    pub fn reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        let list = |v: &[String]| {
            let shown: Vec<&str> = v.iter().take(5).map(String::as_str).collect();
            let more = if v.len() > 5 { format!(" and {} more", v.len() - 5) } else { String::new() };
            format!("{}{more}", shown.join(", "))
        };
        let files = |n: usize| if n == 1 { "1 file".to_string() } else { format!("{n} files") };
        for (v, what) in [
            (&self.changed, "changed"),
            (&self.added, "added"),
            (&self.removed, "removed"),
            (&self.mode_changed, "changed mode"),
        ] {
            if !v.is_empty() {
                out.push(format!("{} {what}: {}", files(v.len()), list(v)));
            }
        }
        let settings = self.settings_changes();
        if !settings.is_empty() {
            out.push(format!("settings changed: {}", settings.join(", ")));
        }
        out.extend(self.word_changes());
        for d in &self.dependencies {
            out.push(match (&d.old, &d.new) {
                (Some(_), Some(_)) => format!("dependency `{}` changed", d.name),
                (None, Some(_)) => format!("dependency `{}` added (MZFROM)", d.name),
                (Some(_), None) => format!("dependency `{}` removed (MZFROM)", d.name),
                (None, None) => unreachable!("a dependency change has a side"),
            });
        }
        out
    }
}

impl Change {
    /// The settings that differ, one by one: `profile: optimized -> dev`.
    pub fn settings_changes(&self) -> Vec<String> {
        let Some((a, b)) = &self.settings else { return Vec::new() };
        let (old, new) = (settings::fields(a), settings::fields(b));
        if old.len() != new.len() {
            return vec![format!("settings: `{a}` -> `{b}`")];
        }
        old.iter().zip(&new).filter(|(o, n)| o != n).map(|((name, o), (_, n))| format!("{name}: {o} -> {n}")).collect()
    }

    /// The pre-image words that differ, by what they come from: the
    /// `image-rustflags` of `[workspace.metadata.mzbuild]`; a cargo-build's
    /// profile/coverage/sanitizer word, unless the settings changed (which
    /// says it already); a pre-image added, removed or of another type (the
    /// image's `mzbuild.yml` says how).
    pub fn word_changes(&self) -> Vec<String> {
        let Some((a, b)) = &self.extras else { return Vec::new() };
        let split = |w: &str| match w.split_once(RUSTFLAGS_WORD) {
            Some((flags, rustflags)) => (flags.to_string(), Some(rustflags.to_string())),
            None => (w.to_string(), None),
        };
        let mut out = Vec::new();
        if a.len() != b.len() {
            out.push(format!("pre-images: {} -> {} (see mzbuild.yml)", a.len(), b.len()));
        }
        let none = || "(none)".to_string();
        let mut rustflags = None;
        for (i, (x, y)) in a.iter().zip(b).enumerate().filter(|(_, (x, y))| x != y) {
            let ((fx, rx), (fy, ry)) = (split(x), split(y));
            if rx != ry && rustflags.is_none() {
                rustflags = Some(format!(
                    "image-rustflags (Cargo.toml [workspace.metadata.mzbuild]): {} -> {}",
                    rx.unwrap_or_else(none),
                    ry.unwrap_or_else(none)
                ));
            }
            if fx != fy && self.settings.is_none() {
                out.push(format!("pre-image #{}: another type or order (see mzbuild.yml)", i + 1));
            }
        }
        out.extend(rustflags);
        out
    }
}

/// How `new` differs from `old` (pure).
pub fn compare(old: &Snapshot, new: &Snapshot) -> Change {
    let mut c = Change::default();
    let (mut i, mut j) = (0, 0);
    let (a, b) = (&old.inputs, &new.inputs);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                if x.1.digest != y.1.digest {
                    c.changed.push(x.0.clone());
                } else if x.1.mode != y.1.mode {
                    c.mode_changed.push(x.0.clone());
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                c.removed.push(x.0.clone());
                i += 1;
            }
            (Some(x), None) => {
                c.removed.push(x.0.clone());
                i += 1;
            }
            (_, Some(y)) => {
                c.added.push(y.0.clone());
                j += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    compare_words(
        &mut c,
        (&old.settings, &new.settings),
        (&old.extras, &new.extras),
        (old.depends_on.iter(), new.depends_on.iter()),
    );
    c
}

/// Fill in how an image differs besides its inputs (for [`compare`] and
/// `changes::compare_computed`): the settings strings, the pre-image words
/// and the direct dependencies, each side's as (name, fingerprint).
pub fn compare_words<'a>(
    c: &mut Change,
    settings: (&str, &str),
    extras: (&[String], &[String]),
    depends_on: (
        impl IntoIterator<Item = (&'a String, &'a Fingerprint)>,
        impl IntoIterator<Item = (&'a String, &'a Fingerprint)>,
    ),
) {
    if settings.0 != settings.1 {
        c.settings = Some((settings.0.to_string(), settings.1.to_string()));
    }
    if extras.0 != extras.1 {
        c.extras = Some((extras.0.to_vec(), extras.1.to_vec()));
    }
    let old: BTreeMap<&String, &Fingerprint> = depends_on.0.into_iter().collect();
    let new: BTreeMap<&String, &Fingerprint> = depends_on.1.into_iter().collect();
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).copied().collect();
    for name in names {
        let (o, n) = (old.get(name), new.get(name));
        if o != n {
            c.dependencies.push(DepChange {
                name: name.clone(),
                old: o.map(ToString::to_string),
                new: n.map(ToString::to_string),
            });
        }
    }
}

// ---------------------------------------------------------------------------
// Records.

/// Manifests kept (with the records that use them).
pub const KEEP_MANIFESTS: usize = 32;

#[derive(Serialize, Deserialize)]
struct Record {
    image: String,
    fingerprint: String,
    settings: String,
    extras: Vec<String>,
    depends_on: BTreeMap<String, String>,
    /// The manifest file (its SHA-1) and this image's entries of it, as
    /// [start, end) ranges.
    manifest: String,
    inputs: Vec<(usize, usize)>,
    /// How manifest entries end: 1 = NUL (0, the first format, ended them
    /// with a newline, which a path may contain).
    #[serde(default)]
    format: u32,
}

/// Where records live.
pub fn record_dir(root: &Path) -> PathBuf {
    root.join("target").join("mzbuild").join("fingerprints")
}

/// Record every fingerprint of `computed` not recorded yet. Returns how
/// many were written.
pub fn record(root: &Path, computed: &Computed) -> Result<usize> {
    let dir = record_dir(root);
    let todo: Vec<(&String, &super::Computed1)> =
        computed.images.iter().filter(|(_, c)| !dir.join(format!("{}.json", c.fingerprint)).exists()).collect();
    if todo.is_empty() {
        return Ok(0);
    }
    // The manifest: one entry per unique input of the run.
    let mut text = String::with_capacity(computed.paths.len() * 80);
    for (path, h) in computed.paths.iter().zip(&computed.hashes) {
        let _ = write!(text, "{:o} {} {path}\0", h.mode, crate::git::hex(&h.digest));
    }
    let manifest = crate::git::hex(&Sha1::digest(text.as_bytes()));
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).with_context(|| format!("creating {}", manifests.display()))?;
    let mpath = manifests.join(&manifest);
    if mpath.exists() {
        // In use again: it counts as new when manifests are pruned.
        let _ = std::fs::File::options()
            .write(true)
            .open(&mpath)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    } else {
        crate::cachefile::write_atomic(&mpath, text.as_bytes())?;
    }
    for (name, c) in &todo {
        // Inputs are a subset of the unique files, both ascending: ranges
        // of manifest entries.
        let ranges: Vec<(usize, usize)> = computed.index_runs(name).into_iter().map(|r| (r.start, r.end)).collect();
        let rec = Record {
            image: name.to_string(),
            fingerprint: c.fingerprint.to_string(),
            settings: computed.settings.clone(),
            extras: c.extras.clone(),
            depends_on: c.depends_on.iter().map(|(d, fp)| (d.clone(), fp.to_string())).collect(),
            manifest: manifest.clone(),
            inputs: ranges,
            format: 1,
        };
        crate::cachefile::write_atomic(&dir.join(format!("{}.json", c.fingerprint)), &serde_json::to_vec(&rec)?)?;
    }
    prune(&dir, &mpath);
    Ok(todo.len())
}

/// Keep the newest [`KEEP_MANIFESTS`] manifests (`newest` among them);
/// remove the records of the others.
fn prune(dir: &Path, newest: &Path) {
    let manifests = dir.join("manifests");
    let before: Vec<String> = list_names(&manifests);
    if before.len() <= KEEP_MANIFESTS {
        return;
    }
    crate::cachefile::prune(&manifests, KEEP_MANIFESTS, newest);
    let kept: std::collections::BTreeSet<String> = list_names(&manifests).into_iter().collect();
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let keep = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            .is_some_and(|r| kept.contains(&r.manifest));
        if !keep {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn list_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|es| es.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The recorded snapshot of fingerprint `fp`, if it was recorded.
pub fn load(root: &Path, fp: &Fingerprint) -> Result<Option<Snapshot>> {
    let dir = record_dir(root);
    let path = dir.join(format!("{fp}.json"));
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let bad =
        |why: &str| anyhow!("{}: {why}: remove it (it is re-recorded by the next build of that image)", path.display());
    let rec: Record = serde_json::from_slice(&bytes).map_err(|e| bad(&format!("not a fingerprint record ({e})")))?;
    let mpath = dir.join("manifests").join(&rec.manifest);
    let text = std::fs::read_to_string(&mpath)
        .map_err(|e| bad(&format!("its manifest {} is unreadable ({e})", mpath.display())))?;
    let entries: Vec<&str> = match rec.format {
        0 => text.lines().collect(),
        1 => text.split_terminator('\0').collect(),
        f => return Err(bad(&format!("unknown manifest format {f}"))),
    };
    let mut inputs = Vec::new();
    for &(a, b) in &rec.inputs {
        for entry in entries.get(a..b).ok_or_else(|| bad("input ranges beyond its manifest"))? {
            inputs.push(parse_entry(entry).ok_or_else(|| bad(&format!("bad manifest entry {entry:?}")))?);
        }
    }
    let parse_fp = |s: &str| s.parse::<Fingerprint>().map_err(|_| bad("bad fingerprint"));
    Ok(Some(Snapshot {
        image: rec.image,
        fingerprint: parse_fp(&rec.fingerprint)?,
        settings: rec.settings,
        extras: rec.extras,
        depends_on: rec.depends_on.iter().map(|(k, v)| Ok((k.clone(), parse_fp(v)?))).collect::<Result<_>>()?,
        inputs,
    }))
}

fn parse_entry(entry: &str) -> Option<(String, FileHash)> {
    let mut parts = entry.splitn(3, ' ');
    let mode = u16::from_str_radix(parts.next()?, 8).ok()?;
    let hex = parts.next()?;
    let path = parts.next()?;
    let oid = crate::git::parse_hex(hex)?;
    Some((path.to_string(), FileHash { mode, digest: oid }))
}

/// Fingerprint `images`, recording each new fingerprint with its inputs
/// (build, acquire, run and ensure). A record that cannot be written is a
/// warning: it never fails a build.
pub fn fingerprint_and_record(
    repo: &Repo,
    images: &[&Image],
    settings: &Settings,
) -> Result<BTreeMap<String, super::Fingerprinted>> {
    let computed = super::compute(repo, images, settings)?;
    if repo.tree.rev.is_none() {
        if let Err(e) = record(repo.root(), &computed) {
            crate::ui::warn(format_args!(
                "could not record fingerprints for `explain` (builds are not affected): {e:#}"
            ));
        }
    }
    Ok(computed.fps())
}

/// Check a revision-or-fingerprint argument: a fingerprint when it parses
/// as one and is recorded.
pub fn bail_unrecorded(fp: &Fingerprint, root: &Path) -> Result<()> {
    bail!(
        "fingerprint {fp} was never recorded in {}: records are made by `build`, `acquire`, `run` and `ensure` \
         in this work tree; give a git revision to compare with instead",
        record_dir(root).display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(inputs: &[(&str, u16, u8)], deps: &[(&str, u8)]) -> Snapshot {
        Snapshot {
            image: "a".into(),
            fingerprint: Fingerprint([0; 20]),
            settings: "s".into(),
            extras: vec![],
            depends_on: deps.iter().map(|(n, f)| (n.to_string(), Fingerprint([*f; 20]))).collect(),
            inputs: inputs.iter().map(|(p, m, d)| (p.to_string(), FileHash { mode: *m, digest: [*d; 20] })).collect(),
        }
    }

    #[test]
    fn compare_names_every_kind_of_change() {
        let old = snap(
            &[("a", 0o100644, 1), ("b", 0o100644, 2), ("c", 0o100644, 3), ("e", 0o100644, 5)],
            &[("x", 1), ("y", 1)],
        );
        let mut new = snap(
            &[("b", 0o100755, 2), ("c", 0o100644, 9), ("d", 0o100644, 4), ("e", 0o100644, 5)],
            &[("x", 2), ("z", 1)],
        );
        new.settings = "t".into();
        let c = compare(&old, &new);
        assert_eq!(c.added, ["d"]);
        assert_eq!(c.removed, ["a"]);
        assert_eq!(c.changed, ["c"]);
        assert_eq!(c.mode_changed, ["b"]);
        assert_eq!(c.settings, Some(("s".into(), "t".into())));
        let deps: Vec<(&str, bool, bool)> =
            c.dependencies.iter().map(|d| (d.name.as_str(), d.old.is_some(), d.new.is_some())).collect();
        assert_eq!(deps, [("x", true, true), ("y", true, false), ("z", false, true)]);
        expect_test::expect![[r#"
            1 file changed: c
            1 file added: d
            1 file removed: a
            1 file changed mode: b
            settings changed: settings: s -> t
            dependency `x` changed
            dependency `y` removed (MZFROM)
            dependency `z` added (MZFROM)"#]]
        .assert_eq(&c.reasons().join("\n"));
        assert!(compare(&old, &old).is_empty());
    }

    #[test]
    fn manifest_entries_round_trip() {
        let h = FileHash { mode: 0o100755, digest: [0xab; 20] };
        for path in ["dir/a b.txt", "new\nline", "tab\tand space "] {
            let entry = format!("{:o} {} {path}", h.mode, crate::git::hex(&h.digest));
            assert_eq!(parse_entry(&entry), Some((path.to_string(), h)));
        }
    }

    #[test]
    fn settings_and_words_read_as_what_a_user_sets() {
        use crate::config::settings::{Arch, Profile};
        let s = |profile| Settings { profile, arch: Arch::X86_64, coverage: false, sanitizer: "none".into() };
        let (opt, dev) = (s(Profile::Optimized), s(Profile::Dev));
        let cargo = |s: &Settings, flags: &[&str]| {
            let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
            crate::preimage::cargo_build::extra(s, &flags)
        };
        let mut old = snap(&[], &[]);
        let mut new = snap(&[], &[]);
        old.settings = opt.fingerprint_string();
        new.settings = dev.fingerprint_string();
        old.extras = vec![cargo(&opt, &[]), String::new()];
        new.extras = vec![cargo(&dev, &["-Cx"]), String::new()];
        let c = compare(&old, &new);
        expect_test::expect![[r#"
            settings changed: profile: optimized -> dev
            image-rustflags (Cargo.toml [workspace.metadata.mzbuild]): (none) -> ["-Cx"]"#]]
        .assert_eq(&c.reasons().join("\n"));
        // The same settings: a cargo-build word that moved, a pre-image more.
        new.settings = old.settings.clone();
        new.extras = vec![String::new(), cargo(&opt, &[]), String::new()];
        expect_test::expect![[r#"
            pre-images: 2 -> 3 (see mzbuild.yml)
            pre-image #1: another type or order (see mzbuild.yml)
            pre-image #2: another type or order (see mzbuild.yml)"#]]
        .assert_eq(&compare(&old, &new).reasons().join("\n"));
    }
}
