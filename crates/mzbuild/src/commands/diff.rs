//! "Why does this rebuild?": `diff` (which images' fingerprints differ
//! between a revision and the work tree, or the revision a command was
//! given, with the reasons and whether the new tag is already published)
//! and `explain` (one image's full input diff, through its dependencies,
//! against a revision or any recorded fingerprint).
//!
//! Both sides are fingerprinted by the same machinery (a revision's tree is
//! read from git's object store). The revision is listed and its
//! configuration read while the work tree is fingerprinted; its content
//! hashes come after, so that it finds most of them in the blob cache. The
//! engine (a revision's fingerprints, the comparison) is
//! [`fingerprint::changes`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::ctx::{Ctx, Status};
use crate::fingerprint::changes::{compare_computed, finish_rev, look_up_rev, pairing};
use crate::fingerprint::snapshot::{self, compare, Change, Snapshot};
use crate::fingerprint::{self, Computed, Fingerprint};
use crate::git::GitRepo;
use crate::publish::client::is_unreachable;
use crate::publish::{clients, missing, published_status, Access};
use crate::ui;

/// The commit to compare with when none is given, and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// The commit (a full SHA).
    pub commit: String,
    /// How to show it: `` 1a2b3c4 (merge-base with `origin/main`) ``.
    pub label: String,
    /// Whether the branch has an upstream (else the remote's default
    /// branch, or `main`/`master`, was used).
    pub upstream: bool,
}

/// The base of `head` (a commit or `HEAD`): where it left its upstream
/// (`branch`'s, `git merge-base head branch@{upstream}`; `branch` empty: the
/// current branch's); for a branch without one (a new branch, before its
/// first push) where it left the default branch of `remote` (given, else
/// `origin`, else the only remote): `refs/remotes/<remote>/HEAD`, else its
/// `main` or `master`, else the local `main` or `master`.
pub fn default_base(git: &GitRepo, head: &str, branch: &str, remote: Option<&str>) -> Result<Base> {
    let merge_base = |other: &str| {
        git.run(&["merge-base", head, other]).ok().map(|o| String::from_utf8_lossy(&o).trim().to_string())
    };
    let upstream = format!("{branch}@{{upstream}}");
    if let Some(commit) = merge_base(&upstream) {
        let name = git.run(&["rev-parse", "--abbrev-ref", &upstream]).ok();
        let name = name.map_or(upstream.clone(), |n| String::from_utf8_lossy(&n).trim().to_string());
        let label = format!("{} (merge-base with `{name}`)", short_sha(git, &commit));
        return Ok(Base { commit, label, upstream: true });
    }
    let remotes: Vec<String> = git
        .run(&["remote"])
        .map(|o| String::from_utf8_lossy(&o).lines().map(str::to_string).collect())
        .unwrap_or_default();
    let remote = match remote {
        Some(r) => Some(r.to_string()),
        None if remotes.iter().any(|r| r == "origin") => Some("origin".into()),
        None if remotes.len() == 1 => remotes.first().cloned(),
        None => None,
    };
    let mut candidates = vec![];
    if let Some(r) = &remote {
        candidates.extend(["HEAD", "main", "master"].map(|b| format!("refs/remotes/{r}/{b}")));
    }
    candidates.extend(["refs/heads/main".to_string(), "refs/heads/master".to_string()]);
    for c in &candidates {
        if git.resolve_commit(c).is_err() {
            continue;
        }
        let Some(commit) = merge_base(c) else { continue };
        // `refs/remotes/origin/HEAD` is shown as what it points at.
        let name = git.run(&["rev-parse", "--abbrev-ref", c]).ok();
        let name = name.map_or(c.clone(), |n| String::from_utf8_lossy(&n).trim().to_string());
        let label = format!("{} (merge-base with `{name}`)", short_sha(git, &commit));
        return Ok(Base { commit, label, upstream: false });
    }
    bail!(
        "nothing to compare with: the branch has no upstream, and there is no remote default branch \
         (`refs/remotes/<remote>/HEAD`, `main` or `master`) nor a local `main` or `master`; give a revision, \
         e.g. `cargo xtask mzbuild diff HEAD~`"
    )
}

/// `sha` abbreviated as git shows it (`git rev-parse --short`); `sha`
/// itself if git cannot.
pub fn short_sha(git: &GitRepo, sha: &str) -> String {
    match git.run(&["rev-parse", "--short", sha]) {
        Ok(o) => String::from_utf8_lossy(&o).trim().to_string(),
        Err(_) => sha.to_string(),
    }
}

/// `rev` for a header: a full SHA abbreviated (see [`short_sha`]); a name
/// as given.
fn rev_label(git: &GitRepo, rev: &str) -> String {
    if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("`{}`", short_sha(git, rev))
    } else {
        format!("`{rev}`")
    }
}

/// `default_base` of `HEAD`, said on stderr when it is not the upstream.
fn base_of_head(ctx: &Ctx) -> Result<Base> {
    let base = default_base(&ctx.repo.tree.git, "HEAD", "", None)?;
    if !base.upstream {
        ui::progress(format_args!("the branch has no upstream: comparing with {}", base.label));
    }
    Ok(base)
}

/// The fingerprints of `targets` and their dependencies (all images when
/// empty) at revision `rev`: from the revision's memo when it has them,
/// else computed from the object store (and memoised). `None` when a
/// target is not an image there.
pub fn at_rev(ctx: &Ctx, rev: &str, targets: &[String]) -> Result<Option<Computed>> {
    let side = look_up_rev(ctx.repo.tree.git.clone(), rev, &ctx.settings.fingerprint_string(), targets)?;
    finish_rev(side, rev, &ctx.settings, targets)
}

#[derive(Serialize)]
pub struct ImageDiff {
    pub name: String,
    /// `changed`, `added` (no such image at the base) or `removed`.
    pub status: &'static str,
    pub old: Option<String>,
    pub new: Option<String>,
    /// Whether the new tag is in every registry (`null`: not asked, or the
    /// registries could not be reached, or the image is not published).
    pub published: Option<bool>,
    /// The registries could not be reached (offline, or slower than the
    /// budget): `published` is unknown.
    #[serde(skip)]
    pub offline: bool,
    pub reasons: Vec<String>,
    pub change: Option<Change>,
}

/// The images whose fingerprints differ between `base` and `ctx.repo`;
/// with `ask_registries` (the time to give each registry request), whether
/// the new tags are published.
pub fn diff_images(ctx: &Ctx, base: &str, ask_registries: Option<Duration>) -> Result<Vec<ImageDiff>> {
    let images = ctx.repo.resolve(&[])?;
    // The revision is listed and its configuration read while the work
    // tree is fingerprinted; its content hashes come after, so that it
    // finds the work tree's in the blob cache.
    let git = ctx.repo.tree.git.clone();
    let settings = ctx.settings.fingerprint_string();
    let (new, side) = std::thread::scope(|s| {
        let side = s.spawn(|| look_up_rev(git, base, &settings, &[]));
        let new = fingerprint::compute(&ctx.repo, &images, &ctx.settings);
        (new, side.join().expect("looking up the revision panicked"))
    });
    let new = new?;
    let old = finish_rev(side?, base, &ctx.settings, &[])?.expect("every image of a revision");
    let pairing = pairing(&old, &new);
    let mut out = Vec::new();
    for (name, n) in &new.images {
        match old.images.get(name) {
            Some(o) if o.fingerprint == n.fingerprint => {}
            Some(o) => {
                let change = compare_computed(&old, &new, name, &pairing);
                out.push(ImageDiff {
                    name: name.clone(),
                    status: "changed",
                    old: Some(o.fingerprint.to_string()),
                    new: Some(n.fingerprint.to_string()),
                    published: None,
                    offline: false,
                    reasons: change.reasons(),
                    change: Some(change),
                });
            }
            None => out.push(ImageDiff {
                name: name.clone(),
                status: "added",
                old: None,
                new: Some(n.fingerprint.to_string()),
                published: None,
                offline: false,
                reasons: vec![format!("new image (not at {})", rev_label(&ctx.repo.tree.git, base))],
                change: None,
            }),
        }
    }
    for (name, o) in &old.images {
        if !new.images.contains_key(name) {
            out.push(ImageDiff {
                name: name.clone(),
                status: "removed",
                old: Some(o.fingerprint.to_string()),
                new: None,
                published: None,
                offline: false,
                reasons: vec!["image removed".into()],
                change: None,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(budget) = ask_registries {
        published(ctx, &mut out, budget);
    }
    Ok(out)
}

/// Fill in `published` for the new fingerprints of publishable images: true
/// when every registry has the tag. A registry that cannot be asked is a
/// warning, not an error; one that cannot be reached (offline) marks the
/// images `offline`.
fn published(ctx: &Ctx, diffs: &mut [ImageDiff], budget: Duration) {
    let names: Vec<String> = diffs.iter().filter(|d| d.new.is_some()).map(|d| d.name.clone()).collect();
    let images: Vec<&crate::discover::Image> =
        names.iter().filter_map(|n| ctx.repo.images.get(n)).filter(|i| i.config.publish).collect();
    if images.is_empty() {
        return;
    }
    let fps: BTreeMap<String, fingerprint::Fingerprinted> = diffs
        .iter()
        .filter_map(|d| {
            let fp: Fingerprint = d.new.as_ref()?.parse().ok()?;
            Some((d.name.clone(), fingerprint::Fingerprinted { fingerprint: fp }))
        })
        .collect();
    let asked = clients(ctx, Access::Read, Some(budget)).and_then(|c| {
        let held = published_status(ctx, &c, &images, &fps)?;
        Ok(missing(&held, c.len()))
    });
    let is_asked = |d: &ImageDiff| images.iter().any(|i| i.name == d.name);
    match asked {
        Ok(missing) => {
            for d in diffs.iter_mut().filter(|d| is_asked(d)) {
                d.published = Some(!missing.contains_key(&d.name));
            }
        }
        Err(e) if is_unreachable(&e) => {
            for d in diffs.iter_mut().filter(|d| is_asked(d)) {
                d.offline = true;
            }
            ui::warn(format_args!("offline: not checked whether the new tags are published ({e:#})"));
        }
        Err(e) => ui::warn(format_args!("could not ask the registries whether the new tags are published: {e:#}")),
    }
}

/// The text report of `diff`.
pub fn render_diff(diffs: &[ImageDiff], total: usize, base_label: &str, new_label: &str) -> String {
    let mut out = String::new();
    if diffs.is_empty() {
        let _ = writeln!(out, "no image differs between {base_label} and {new_label} ({total} images)");
        return out;
    }
    let _ = writeln!(out, "{} of {total} images differ between {base_label} and {new_label}:", diffs.len());
    for d in diffs {
        let old = d.old.as_deref().unwrap_or("(none)");
        let new = d.new.as_deref().unwrap_or("(none)");
        let published = match (d.published, d.offline) {
            (Some(true), _) => "  already published",
            (Some(false), _) => "  not published: CI builds it",
            (None, true) => "  offline: not checked",
            (None, false) => "",
        };
        let _ = writeln!(out, "{} {old} -> {new}{published}", d.name);
        for r in &d.reasons {
            let _ = writeln!(out, "  {r}");
        }
    }
    out
}

/// How long `diff` gives each registry request (retries included) when it
/// asks whether the new tags are published.
pub const DIFF_BUDGET: Duration = Duration::from_secs(10);

/// `diff [REV]`.
pub fn diff(ctx: &Ctx, rev: Option<&str>, json: bool) -> Result<Status> {
    let report = json.then(|| crate::report::Report::new(ctx, "diff"));
    let git = &ctx.repo.tree.git;
    let (base, label) = match rev {
        Some(r) => (r.to_string(), rev_label(git, r)),
        None => {
            let b = base_of_head(ctx)?;
            (b.commit, b.label)
        }
    };
    let diffs = diff_images(ctx, &base, Some(DIFF_BUDGET))?;
    if let Some(r) = report {
        r.emit(&diffs, crate::report::RunResult::Success);
    } else {
        let new_label = match &ctx.repo.tree.rev {
            Some(r) => rev_label(git, &r.rev),
            None => ctx.repo.tree.label(),
        };
        ui::result(&render_diff(&diffs, ctx.repo.images.len(), &label, &new_label));
    }
    Ok(Status::Success)
}

/// `explain IMAGE [--against REV|FINGERPRINT]`.
pub fn explain(ctx: &Ctx, image: &str, against: Option<&str>, json: bool) -> Result<Status> {
    let report = json.then(|| crate::report::Report::new(ctx, "explain"));
    ctx.repo.image(image)?;
    let targets = [image.to_string()];
    let images = ctx.repo.resolve(&targets)?;
    let computed = fingerprint::compute(&ctx.repo, &images, &ctx.settings)?;
    let new = snapshot::snapshots(&computed);
    let against = match against {
        Some(a) => a.to_string(),
        None => base_of_head(ctx)?.commit,
    };
    // A fingerprint (recorded), else a revision.
    let old: Old = match against.parse::<Fingerprint>() {
        Ok(fp) => match snapshot::load(ctx.repo.root(), &fp)? {
            Some(s) => Old::Records(s),
            None => match ctx.repo.tree.git.resolve_commit(&against) {
                Ok(_) => Old::Rev(against.clone(), rev_snapshots(ctx, &against, image)?),
                Err(_) => return snapshot::bail_unrecorded(&fp, ctx.repo.root()).map(|()| Status::Failure),
            },
        },
        Err(_) => Old::Rev(against.clone(), rev_snapshots(ctx, &against, image)?),
    };
    let label = match &old {
        Old::Records(s) => format!("recorded fingerprint {}", s.fingerprint),
        Old::Rev(..) => rev_label(&ctx.repo.tree.git, &against),
    };
    let mut out = String::new();
    let _ = writeln!(out, "{image}: {} ({}) vs {label}", new[image].fingerprint, ctx.repo.tree.label());
    let first = match &old {
        Old::Records(s) => {
            if s.image != image {
                anyhow::bail!("fingerprint {} was recorded for image `{}`, not `{image}`", s.fingerprint, s.image);
            }
            Some(s.clone())
        }
        Old::Rev(_, map) => map.get(image).cloned(),
    };
    let mut seen = std::collections::BTreeSet::new();
    explain_one(ctx, &new, &old, image, first, &mut out, &mut seen)?;
    if let Some(r) = report {
        let row = crate::report::Explanation {
            name: image.to_string(),
            fingerprint: new[image].fingerprint.to_string(),
            against: match &old {
                Old::Records(s) => s.fingerprint.to_string(),
                Old::Rev(..) => against.clone(),
            },
            lines: out.lines().skip(1).map(str::to_string).collect(),
        };
        r.emit(&[row], crate::report::RunResult::Success);
        return Ok(Status::Success);
    }
    ui::result(&out);
    Ok(Status::Success)
}

enum Old {
    /// The recorded snapshot of the fingerprint asked about; its
    /// dependencies' snapshots are looked up by their recorded fingerprints.
    Records(Snapshot),
    /// The revision's name and snapshots.
    Rev(String, BTreeMap<String, Snapshot>),
}

fn rev_snapshots(ctx: &Ctx, rev: &str, image: &str) -> Result<BTreeMap<String, Snapshot>> {
    Ok(match at_rev(ctx, rev, &[image.to_string()])? {
        Some(computed) => snapshot::snapshots(&computed),
        None => BTreeMap::new(),
    })
}

fn explain_one(
    ctx: &Ctx,
    new: &BTreeMap<String, Snapshot>,
    old: &Old,
    image: &str,
    previous: Option<Snapshot>,
    out: &mut String,
    seen: &mut std::collections::BTreeSet<String>,
) -> Result<()> {
    if !seen.insert(image.to_string()) {
        return Ok(());
    }
    let n = &new[image];
    let Some(o) = previous else {
        let _ = writeln!(out, "  {image} did not exist there: everything is new");
        return Ok(());
    };
    if o.fingerprint == n.fingerprint {
        let _ = writeln!(out, "  unchanged ({})", n.fingerprint);
        return Ok(());
    }
    let c = compare(&o, n);
    for (v, what) in
        [(&c.changed, "changed"), (&c.added, "added"), (&c.removed, "removed"), (&c.mode_changed, "mode changed")]
    {
        for p in v.iter() {
            let _ = writeln!(out, "  {what:<13} {p}");
            if let (Old::Rev(rev, _), "changed", true) = (old, what, p.ends_with("mzbuild.yml")) {
                // Which keys: the file's path says only that it changed.
                let read_old = ctx.repo.tree.git.run(&["cat-file", "blob", &format!("{rev}:{p}")]);
                if let (Ok(a), Ok(b)) = (read_old, ctx.repo.tree.read(p)) {
                    for k in yaml_changes(&String::from_utf8_lossy(&a), &String::from_utf8_lossy(&b)) {
                        let _ = writeln!(out, "  {:<13}   {k}", "");
                    }
                }
            }
        }
    }
    for s in c.settings_changes() {
        let _ = writeln!(out, "  setting       {s}");
    }
    for w in c.word_changes() {
        let _ = writeln!(out, "  pre-image     {w}");
    }
    for d in &c.dependencies {
        let _ = writeln!(
            out,
            "  dependency    {} {} -> {}",
            d.name,
            d.old.as_deref().unwrap_or("(none)"),
            d.new.as_deref().unwrap_or("(none)")
        );
    }
    for d in &c.dependencies {
        let (Some(old_fp), Some(new_fp)) = (&d.old, &d.new) else { continue };
        let _ = writeln!(out, "{}: {new_fp} vs {old_fp}", d.name);
        let prev = match old {
            Old::Rev(_, map) => map.get(&d.name).cloned(),
            Old::Records(_) => {
                let fp: Fingerprint = old_fp.parse()?;
                match snapshot::load(ctx.repo.root(), &fp)? {
                    Some(s) => Some(s),
                    None => {
                        let _ = writeln!(out, "  no record of {old_fp}: its inputs are unknown");
                        continue;
                    }
                }
            }
        };
        explain_one(ctx, new, old, &d.name, prev, out, seen)?;
    }
    Ok(())
}

/// How two versions of an `mzbuild.yml` differ, key by key:
/// `build-args.VERSION: "1.0" -> "1.1"`, `pre-image[0].bin: ...` (pure).
/// Nothing when either does not parse (lint says why).
pub fn yaml_changes(old: &str, new: &str) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_yaml::from_str::<serde_yaml::Value>(old), serde_yaml::from_str(new)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    yaml_diff("", Some(&a), Some(&b), &mut out);
    out
}

fn yaml_diff(at: &str, a: Option<&serde_yaml::Value>, b: Option<&serde_yaml::Value>, out: &mut Vec<String>) {
    use serde_yaml::Value;
    let show = |v: Option<&Value>| match v {
        None => "(none)".to_string(),
        Some(v) => serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}")),
    };
    match (a, b) {
        (Some(Value::Mapping(x)), Some(Value::Mapping(y))) => {
            let key = |k: &Value| match k {
                Value::String(s) => s.clone(),
                other => show(Some(other)),
            };
            let mut keys: Vec<&Value> = y.keys().collect();
            keys.extend(x.keys().filter(|k| !y.contains_key(*k)));
            for k in keys {
                let name = if at.is_empty() { key(k) } else { format!("{at}.{}", key(k)) };
                yaml_diff(&name, x.get(k), y.get(k), out);
            }
        }
        (Some(Value::Sequence(x)), Some(Value::Sequence(y))) => {
            for i in 0..x.len().max(y.len()) {
                yaml_diff(&format!("{at}[{i}]"), x.get(i), y.get(i), out);
            }
        }
        (x, y) if x != y => {
            out.push(format!("{}: {} -> {}", if at.is_empty() { "(document)" } else { at }, show(x), show(y)))
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_changes_by_key() {
        let old =
            "name: app\npre-image:\n  - type: cargo-build\n    bin: foo\nbuild-args:\n  VERSION: '1.0'\n  GONE: x\n";
        let new = "name: app\npre-image:\n  - type: cargo-build\n    bin: [foo, bar]\n  - type: copy\n    source: a\n    destination: b\nbuild-args:\n  VERSION: '1.1'\n  NEW: 2\n";
        expect_test::expect![[r#"
            pre-image[0].bin: "foo" -> ["foo","bar"]
            pre-image[1]: (none) -> {"type":"copy","source":"a","destination":"b"}
            build-args.VERSION: "1.0" -> "1.1"
            build-args.NEW: (none) -> 2
            build-args.GONE: "x" -> (none)"#]]
        .assert_eq(&yaml_changes(old, new).join("\n"));
        assert!(yaml_changes(old, old).is_empty());
        assert!(yaml_changes(old, "a: [").is_empty());
    }
}
