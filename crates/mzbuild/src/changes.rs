//! "Why does this rebuild?": `diff` (which images' fingerprints differ
//! between a revision and the work tree, or the revision a command was
//! given, with the reasons and whether the new tag is already published)
//! and `explain` (one image's full input diff, through its dependencies,
//! against a revision or any recorded fingerprint).
//!
//! Both sides are fingerprinted by the same machinery (a revision's tree is
//! read from git's object store); the work tree goes first, so that the
//! revision's side finds most content hashes in the blob cache.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::discover::Repo;
use crate::fingerprint::snapshot::{self, compare, Change, Snapshot};
use crate::fingerprint::{self, Fingerprint};
use crate::publish::{clients, published_status};
use crate::{ui, Ctx, Status};

/// The revision to compare with when none is given: where the current
/// branch left its upstream (`git merge-base HEAD @{upstream}`).
pub fn default_base(repo: &Repo) -> Result<String> {
    let out = repo.tree.git.run(&["merge-base", "HEAD", "@{upstream}"]).map_err(|_| {
        anyhow::anyhow!(
            "the current branch has no upstream to compare with: give a revision, e.g. `main` or `origin/main` \
             (or set one with `git branch --set-upstream-to`)"
        )
    })?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// Every image's snapshot in `repo`.
fn all_snapshots(repo: &Repo, ctx: &Ctx) -> Result<BTreeMap<String, Snapshot>> {
    let images = repo.resolve(&[])?;
    let computed = fingerprint::compute(repo, &images, &ctx.settings)?;
    Ok(snapshot::snapshots(repo, &images, &ctx.settings, &computed))
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
    pub reasons: Vec<String>,
    pub change: Option<Change>,
}

/// The images whose fingerprints differ between `base` and `ctx.repo`.
pub fn diff_images(ctx: &Ctx, base: &str, ask_registries: bool) -> Result<Vec<ImageDiff>> {
    let new = all_snapshots(&ctx.repo, ctx)?;
    let old_repo = ctx.repo.at_rev(base, false)?;
    let old = all_snapshots(&old_repo, ctx).with_context(|| format!("fingerprinting `{base}`"))?;
    let mut out = Vec::new();
    for (name, n) in &new {
        match old.get(name) {
            Some(o) if o.fingerprint == n.fingerprint => {}
            Some(o) => {
                let change = compare(o, n);
                out.push(ImageDiff {
                    name: name.clone(),
                    status: "changed",
                    old: Some(o.fingerprint.to_string()),
                    new: Some(n.fingerprint.to_string()),
                    published: None,
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
                reasons: vec![format!("new image (not at `{base}`)")],
                change: None,
            }),
        }
    }
    for (name, o) in &old {
        if !new.contains_key(name) {
            out.push(ImageDiff {
                name: name.clone(),
                status: "removed",
                old: Some(o.fingerprint.to_string()),
                new: None,
                published: None,
                reasons: vec!["image removed".into()],
                change: None,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if ask_registries {
        published(ctx, &mut out);
    }
    Ok(out)
}

/// Fill in `published` for the new fingerprints of publishable images; a
/// registry that cannot be asked is a warning, not an error.
fn published(ctx: &Ctx, diffs: &mut [ImageDiff]) {
    let names: Vec<String> = diffs.iter().filter(|d| d.new.is_some()).map(|d| d.name.clone()).collect();
    let images: Vec<&crate::Image> =
        names.iter().filter_map(|n| ctx.repo.images.get(n)).filter(|i| i.config.publish).collect();
    if images.is_empty() {
        return;
    }
    let fps: BTreeMap<String, fingerprint::Fingerprinted> = diffs
        .iter()
        .filter_map(|d| {
            let fp: Fingerprint = d.new.as_ref()?.parse().ok()?;
            Some((d.name.clone(), fingerprint::Fingerprinted { fingerprint: fp, inputs: vec![] }))
        })
        .collect();
    match clients(ctx, false).and_then(|c| published_status(ctx, &c, &images, &fps)) {
        Ok(missing) => {
            for d in diffs.iter_mut() {
                if images.iter().any(|i| i.name == d.name) {
                    d.published = Some(!missing.contains_key(&d.name));
                }
            }
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
        let published = match d.published {
            Some(true) => "  already published",
            Some(false) => "  not published: CI builds it",
            None => "",
        };
        let _ = writeln!(out, "{} {old} -> {new}{published}", d.name);
        for r in &d.reasons {
            let _ = writeln!(out, "  {r}");
        }
    }
    out
}

/// `diff [REV]`.
pub fn diff(ctx: &Ctx, rev: Option<&str>, json: bool) -> Result<Status> {
    let base = match rev {
        Some(r) => r.to_string(),
        None => default_base(&ctx.repo)?,
    };
    let diffs = diff_images(ctx, &base, true)?;
    if json {
        ui::result(&(serde_json::to_string_pretty(&diffs)? + "\n"));
    } else {
        ui::result(&render_diff(&diffs, ctx.repo.images.len(), &format!("`{base}`"), &ctx.repo.tree.label()));
    }
    Ok(Status::Success)
}

/// `explain IMAGE [--against REV|FINGERPRINT]`.
pub fn explain(ctx: &Ctx, image: &str, against: Option<&str>) -> Result<Status> {
    ctx.repo.image(image)?;
    let targets = [image.to_string()];
    let images = ctx.repo.resolve(&targets)?;
    let computed = fingerprint::compute(&ctx.repo, &images, &ctx.settings)?;
    let new = snapshot::snapshots(&ctx.repo, &images, &ctx.settings, &computed);
    let against = match against {
        Some(a) => a.to_string(),
        None => default_base(&ctx.repo)?,
    };
    // A fingerprint (recorded), else a revision.
    let old: Old = match against.parse::<Fingerprint>() {
        Ok(fp) => match snapshot::load(ctx.repo.root(), &fp)? {
            Some(s) => Old::Records(s),
            None => match ctx.repo.tree.git.resolve_commit(&against) {
                Ok(_) => Old::Rev(rev_snapshots(ctx, &against, image)?),
                Err(_) => return snapshot::bail_unrecorded(&fp, ctx.repo.root()).map(|()| Status::Failure),
            },
        },
        Err(_) => Old::Rev(rev_snapshots(ctx, &against, image)?),
    };
    let label = match &old {
        Old::Records(s) => format!("recorded fingerprint {}", s.fingerprint),
        Old::Rev(_) => format!("`{against}`"),
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
        Old::Rev(map) => map.get(image).cloned(),
    };
    let mut seen = std::collections::BTreeSet::new();
    explain_one(ctx, &new, &old, image, first, &mut out, &mut seen)?;
    ui::result(&out);
    Ok(Status::Success)
}

enum Old {
    /// The recorded snapshot of the fingerprint asked about; its
    /// dependencies' snapshots are looked up by their recorded fingerprints.
    Records(Snapshot),
    Rev(BTreeMap<String, Snapshot>),
}

fn rev_snapshots(ctx: &Ctx, rev: &str, image: &str) -> Result<BTreeMap<String, Snapshot>> {
    let repo = ctx.repo.at_rev(rev, false)?;
    if !repo.images.contains_key(image) {
        return Ok(BTreeMap::new());
    }
    let images = repo.resolve(&[image.to_string()])?;
    let computed = fingerprint::compute(&repo, &images, &ctx.settings)?;
    Ok(snapshot::snapshots(&repo, &images, &ctx.settings, &computed))
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
        }
    }
    if let Some((a, b)) = &c.settings {
        let _ = writeln!(out, "  settings      `{a}` -> `{b}`");
    }
    if let Some((a, b)) = &c.extras {
        let _ = writeln!(out, "  pre-image     {a:?} -> {b:?}");
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
            Old::Rev(map) => map.get(&d.name).cloned(),
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
