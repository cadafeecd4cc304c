//! `gc`: delete the `mzbuild-*` tags that no kept revision needs, from
//! every registry (or, with `--local`, the local engine's images). See
//! `docs/gc.md`.
//!
//! The keep set is computed from git with the revision machinery of `diff`
//! (memoised per tree and settings): the fingerprints, for every given
//! architecture, of
//!
//! - the last `--keep-revs` commits of each kept branch (default: the
//!   default branch);
//! - the commits of the git tags that match `--keep-tags` (release tags,
//!   `v*` by default): every image at that commit, dependencies included;
//! - every commit on any ref whose committer date is within `--keep-days`.
//!   Age comes from git, not from the registry: with reproducible builds an
//!   image's `created` is a constant. A tag that no commit of the local
//!   history produces counts as old.
//!
//! A kept commit that cannot be fingerprinted fails the run before anything
//! is deleted. The registry side (what a tag names, shared digests,
//! signatures, deletion) is [`crate::publish::gc`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::config::settings::{Arch, Settings};
use crate::ctx::{Ctx, Status};
use crate::fingerprint::changes::{finish_rev, look_up_rev};
use crate::publish::gc::{apply_repo, classify, plan_repo, Applied, RepoGc, TagKind};
use crate::publish::{clients, Access};
use crate::ui;
use crate::util::par_io;

/// How `gc` runs.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// The architectures whose fingerprints are kept.
    pub archs: Vec<Arch>,
    /// Kept branches (default: the default branch).
    pub keep_branches: Vec<String>,
    /// How many commits of each kept branch.
    pub keep_revs: usize,
    /// Git tag patterns whose commits are kept (`v*`).
    pub keep_tags: Vec<String>,
    /// Commits younger than this many days are kept.
    pub keep_days: u64,
    /// Delete; else print what would be deleted.
    pub apply: bool,
    /// Bound on each registry request.
    pub timeout: Option<Duration>,
    /// The local engine's images instead of the registries'.
    pub local: bool,
}

/// The commits whose images are kept, each with why.
pub fn kept_commits(ctx: &Ctx, opts: &GcOptions) -> Result<BTreeMap<String, String>> {
    let git = &ctx.repo.tree.git;
    let lines = |args: &[&str]| -> Result<Vec<String>> {
        let out = git.run(args).with_context(|| format!("git {}", args.join(" ")))?;
        Ok(String::from_utf8_lossy(&out).lines().map(str::to_string).filter(|l| !l.is_empty()).collect())
    };
    let mut commits: BTreeMap<String, String> = BTreeMap::new();
    let branches = match opts.keep_branches.is_empty() {
        true => vec![default_branch(ctx)?],
        false => opts.keep_branches.clone(),
    };
    for b in &branches {
        git.resolve_commit(b).with_context(|| format!("--keep-branch `{b}` is not a branch or commit here"))?;
        let n = opts.keep_revs.to_string();
        for c in lines(&["rev-list", "--max-count", &n, b])? {
            commits.entry(c).or_insert_with(|| format!("one of the last {n} commits of `{b}`"));
        }
    }
    for pattern in &opts.keep_tags {
        for tag in lines(&["tag", "--list", pattern])? {
            let c = git.resolve_commit(&format!("refs/tags/{tag}"))?;
            commits.insert(c, format!("git tag `{tag}`"));
        }
    }
    if opts.keep_days > 0 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let since = now.saturating_sub(opts.keep_days * 86_400).to_string();
        for c in lines(&["rev-list", "--all", "--max-age", &since])? {
            commits.entry(c).or_insert_with(|| format!("younger than {} days", opts.keep_days));
        }
    }
    Ok(commits)
}

/// The default branch: the remote's `HEAD`, else its `main` or `master`,
/// else the local `main` or `master`.
fn default_branch(ctx: &Ctx) -> Result<String> {
    let git = &ctx.repo.tree.git;
    let candidates = ["refs/remotes/origin/HEAD", "refs/remotes/origin/main", "refs/remotes/origin/master"];
    for c in candidates.iter().copied().chain(["refs/heads/main", "refs/heads/master"]) {
        if git.resolve_commit(c).is_ok() {
            return Ok(c.to_string());
        }
    }
    bail!("no default branch (`origin/HEAD`, `main` or `master`): name the branches to keep with --keep-branch")
}

/// The kept fingerprints (base32) of every image at `commits`, for every
/// arch, and the names of the images seen.
fn kept_fingerprints(
    ctx: &Ctx,
    commits: &BTreeMap<String, String>,
    archs: &[Arch],
) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
    let (mut keep, mut images) = (BTreeSet::new(), BTreeSet::new());
    for arch in archs {
        let settings = Settings { arch: *arch, ..ctx.settings.clone() };
        for (commit, why) in commits {
            let side = look_up_rev(ctx.repo.tree.git.clone(), commit, &settings.fingerprint_string(), &[]);
            let computed = side
                .and_then(|s| finish_rev(s, commit, &settings, &[]))
                .with_context(|| format!("fingerprinting kept commit {commit} ({why}); nothing was deleted"))?;
            for (name, c) in computed.into_iter().flat_map(|c| c.images) {
                keep.insert(c.fingerprint.to_string());
                images.insert(name);
            }
        }
    }
    Ok((keep, images))
}

/// `gc` of the registries, or with `opts.local` of the local engine.
pub fn gc(ctx: &Ctx, opts: &GcOptions) -> Result<Status> {
    let commits = kept_commits(ctx, opts)?;
    ui::progress(format_args!(
        "gc: keeping the images of {} for {}",
        ui::count(commits.len(), "commit", "commits"),
        opts.archs.iter().map(|a| a.gcc()).collect::<Vec<_>>().join(", ")
    ));
    let (keep, mut images) = kept_fingerprints(ctx, &commits, &opts.archs)?;
    images.extend(ctx.repo.images.keys().cloned());
    if opts.local {
        return gc_local(ctx, opts, &keep, &images);
    }
    let clients = clients(ctx, if opts.apply { Access::Write } else { Access::Read }, opts.timeout)?;
    let tasks: Vec<(usize, &str)> =
        (0..clients.len()).flat_map(|r| images.iter().map(move |i| (r, i.as_str()))).collect();
    let results = par_io(&tasks, 4, |(r, image)| {
        let client = &clients[*r];
        let repository = client.registry.repository(&ctx.naming.prefix, image);
        let mut plan = plan_repo(client, &repository, image, &keep)
            .map_err(|e| format!("{}/{repository}: {e:#}; nothing deleted there", client.registry.host()))?;
        if let Some(p) = plan.as_mut().filter(|p| opts.apply && !p.delete.is_empty()) {
            apply_repo(client, p);
        }
        Ok::<_, String>(plan)
    });
    let mut text = String::new();
    let (mut errors, mut unsupported) = (vec![], BTreeSet::new());
    let (mut doomed, mut bytes) = (0usize, 0u64);
    for result in results {
        match result {
            Ok(Some(plan)) => {
                doomed += plan.delete.iter().map(|d| d.tags.len()).sum::<usize>();
                bytes += plan.delete.iter().filter_map(|d| d.size).sum::<u64>();
                describe(&mut text, &plan, opts.apply);
                match &plan.applied {
                    Applied::Unsupported(why) => {
                        unsupported.insert(format!("{} ({why})", plan.location.split('/').next().unwrap_or("")));
                    }
                    Applied::Failed(e) => errors.push(format!("{}: {e}", plan.location)),
                    _ => {}
                }
                errors.extend(plan.unreadable.iter().map(|u| format!("{}: cannot read {u}; kept", plan.location)));
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    ui::result(&text);
    for u in &unsupported {
        ui::warn(format_args!("registry {u} does not allow deletion: nothing was deleted there"));
    }
    let verb = if opts.apply { "deleted" } else { "would delete" };
    ui::progress(format_args!("gc: {verb} {} ({})", ui::count(doomed, "tag", "tags"), ui::show_bytes(bytes)));
    Ok(finish(opts.apply, &errors))
}

/// `gc --local`: the same decision for the local engine's images of this
/// repository (`<registry>/<prefix><image>:mzbuild-<fp>`, for every
/// publish target and the spec registry); never one that a container,
/// running or stopped, uses. A tag is removed with `docker rmi` (an image
/// with other tags keeps them).
fn gc_local(ctx: &Ctx, opts: &GcOptions, keep: &BTreeSet<String>, images: &BTreeSet<String>) -> Result<Status> {
    let docker = &ctx.docker;
    docker.check_engine()?;
    let mut repos: BTreeSet<String> = BTreeSet::new();
    for name in images {
        repos.insert(format!("{}/{}{name}", ctx.naming.spec_registry, ctx.naming.prefix));
        for r in &ctx.naming.registries {
            repos.insert(format!("{}/{}{name}", r.url, ctx.naming.prefix));
        }
    }
    let used = docker.container_image_ids()?;
    let mut text = String::new();
    let (mut doomed, mut errors) = (0usize, vec![]);
    for (reference, id) in docker.mzbuild_images()? {
        let Some((repo, tag)) = reference.rsplit_once(':') else { continue };
        if !repos.contains(repo) {
            continue;
        }
        let TagKind::Fingerprint(fp) = classify(tag) else { continue };
        if keep.contains(&fp) {
            continue;
        }
        if used.contains(&id) {
            let _ = writeln!(text, "  keep {reference}: a container uses it");
            continue;
        }
        doomed += 1;
        match opts.apply {
            false => {
                let _ = writeln!(text, "  delete {reference}");
            }
            true => match docker.remove_image(&reference) {
                Ok(()) => {
                    let _ = writeln!(text, "  deleted {reference}");
                }
                Err(e) => errors.push(format!("{e:#}")),
            },
        }
    }
    if !text.is_empty() {
        ui::result(&format!("local engine:\n{text}"));
    }
    let verb = if opts.apply { "deleted" } else { "would delete" };
    ui::progress(format_args!("gc --local: {verb} {}", ui::count(doomed, "local image tag", "local image tags")));
    Ok(finish(opts.apply, &errors))
}

/// The end of a run, registry or local: the dry run's reminder, then the
/// errors, which make it fail.
fn finish(apply: bool, errors: &[String]) -> Status {
    if !apply {
        ui::progress("gc: dry run, nothing was deleted; pass --apply to delete");
    }
    for e in errors {
        ui::error(e);
    }
    if errors.is_empty() {
        Status::Success
    } else {
        Status::Failure
    }
}

/// One repository's lines: a header, then one line per tag that goes or
/// that stays only because a kept tag names its digest.
fn describe(text: &mut String, plan: &RepoGc, apply: bool) {
    if plan.delete.is_empty() && plan.shared.is_empty() {
        return;
    }
    let n: usize = plan.delete.iter().map(|d| d.tags.len()).sum();
    let bytes: u64 = plan.delete.iter().filter_map(|d| d.size).sum();
    let _ = writeln!(
        text,
        "{}: {} tags, keep {}, delete {} ({} manifests, {})",
        plan.location,
        plan.tags,
        plan.kept,
        n,
        plan.delete.len(),
        ui::show_bytes(bytes)
    );
    let verb = match (&plan.applied, apply) {
        (Applied::Done, true) => "deleted",
        _ => "delete",
    };
    for d in &plan.delete {
        let size = d.size.map(ui::show_bytes).unwrap_or_else(|| "size unknown".into());
        for t in &d.tags {
            let _ = writeln!(text, "  {verb} {t} ({}, {size})", short(&d.digest));
        }
        for (t, _) in &d.attached {
            let _ = writeln!(text, "  {verb} {t} (attached to {})", short(&d.digest));
        }
    }
    for (t, by) in &plan.shared {
        let _ = writeln!(text, "  keep {t}: its digest is also tagged `{by}`, which is kept");
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}
