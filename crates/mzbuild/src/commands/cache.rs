//! Which earlier images a build imports its layer cache from, and what it
//! exports (`[workspace.metadata.mzbuild] cache`, see `docs/cache.md`).
//!
//! The sources are the same image at the merge-base with the default
//! branch and at the previous commit (`HEAD~`): their fingerprints come from
//! the revision machinery of `diff` (memoised per tree), and a source is
//! used only when the spec registry has it. A source that is the image's own
//! fingerprint, missing, or unreadable is skipped with a note: the cache
//! never fails a build and never changes a fingerprint. The export (see
//! [`crate::docker::cache`]) goes to `mzbuild-<fp>-cache` beside the image
//! (a registry cache where the builder can export one; with `to =
//! "beside"`, the inline cache of a second build elsewhere), unless `to =
//! "inline"` puts it into the image.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::cache::{CacheFrom, CacheTo};
use crate::ctx::Ctx;
use crate::docker::cache::{cache_tag, CacheFlags, Export};
use crate::docker::{Builder, Docker};
use crate::fingerprint::{Fingerprint, Fingerprinted};
use crate::plan::{Action, Step};
use crate::publish::client::Client;
use crate::ui;
use crate::util::par_io;

/// The cache flags of each pushed build of `steps`; `spec` is the client of
/// the spec registry (the first one), where cache sources are looked up
/// and exported to.
pub fn push_cache_flags(
    ctx: &Ctx,
    spec: &Client,
    steps: &[&Step<'_>],
    fps: &BTreeMap<String, Fingerprinted>,
    docker: &Docker,
    builder: Option<&Builder>,
) -> BTreeMap<String, CacheFlags> {
    let config = ctx.repo.workspace.cache;
    let pushed: Vec<&str> =
        steps.iter().filter(|s| matches!(s.action, Action::Push { .. })).map(|s| s.image.name.as_str()).collect();
    if pushed.is_empty() {
        return BTreeMap::new();
    }
    let reference = |name: &str, tag: &str| spec.registry.reference(&ctx.naming.prefix, name, tag);
    let registry_export = match config.to {
        CacheTo::Registry => true,
        CacheTo::Auto | CacheTo::Beside => {
            let can = docker.can_export_cache(builder);
            if !can && config.to == CacheTo::Auto {
                ui::note(
                    "cache: the builder (buildx's `docker` driver) cannot export a registry cache, and inline \
                     metadata in the image would change its digest: nothing is exported; `cache = { to = \"beside\" }` \
                     pushes the cache beside the image (see docs/cache.md)",
                );
            }
            can
        }
        CacheTo::Inline | CacheTo::None => false,
    };
    let sources = match config.from {
        CacheFrom::None => BTreeMap::new(),
        CacheFrom::Auto => sources(ctx, spec, &pushed, fps),
    };
    pushed
        .iter()
        .map(|name| {
            let tag = fps[*name].fingerprint.tag();
            let beside = reference(name, &cache_tag(&tag));
            let to = match config.to {
                CacheTo::None => None,
                CacheTo::Inline => Some(Export::Inline),
                _ if registry_export => Some(Export::Registry(beside)),
                CacheTo::Beside => Some(Export::InlineBeside(beside)),
                _ => None,
            };
            let from = sources.get(*name).cloned().unwrap_or_default();
            (name.to_string(), CacheFlags { from, to })
        })
        .collect()
}

/// The revisions whose images are cache sources, most useful first: the
/// merge-base with the default branch, and the previous commit.
fn source_revisions(ctx: &Ctx) -> Vec<(String, String)> {
    let git = &ctx.repo.tree.git;
    let mut revs = vec![];
    match super::diff::default_base(git, "HEAD", "", None) {
        Ok(base) => revs.push((base.commit, base.label)),
        Err(_) => ui::note("cache: no default branch to take a merge-base with: no cache from it"),
    }
    match git.resolve_commit("HEAD~") {
        Ok(prev) => revs.push((prev, "the previous commit".into())),
        Err(_) => ui::note("cache: HEAD has no parent: no cache from a previous commit"),
    }
    let mut seen = BTreeSet::new();
    revs.retain(|(c, _)| seen.insert(c.clone()));
    revs
}

/// For each of `names`, the published references to import from.
fn sources(
    ctx: &Ctx,
    spec: &Client,
    names: &[&str],
    fps: &BTreeMap<String, Fingerprinted>,
) -> BTreeMap<String, Vec<String>> {
    // (image, fingerprint at a revision, which revision)
    let mut wanted: Vec<(String, Fingerprint, String)> = vec![];
    for (commit, label) in source_revisions(ctx) {
        let computed = match super::diff::at_rev(ctx, &commit, &[]) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                ui::note(format_args!("cache: cannot fingerprint {label}: {e:#}; no cache from it"));
                continue;
            }
        };
        for name in names {
            let Some(c) = computed.images.get(*name) else { continue };
            let known = wanted.iter().any(|(n, f, _)| n == name && *f == c.fingerprint);
            if c.fingerprint != fps[*name].fingerprint && !known {
                wanted.push((name.to_string(), c.fingerprint, label.clone()));
            }
        }
    }
    // Each source's image tag (inline metadata, when it was built with it)
    // and its registry cache tag.
    let lookups: Vec<(usize, String, String)> = wanted
        .iter()
        .enumerate()
        .flat_map(|(i, (name, fp, _))| {
            let repo = spec.registry.repository(&ctx.naming.prefix, name);
            [(i, repo.clone(), fp.tag()), (i, repo, cache_tag(&fp.tag()))]
        })
        .collect();
    let found = par_io(&lookups, 16, |(_, repo, tag)| spec.manifest_digest(repo, tag));
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((i, _, tag), found) in lookups.iter().zip(found) {
        let (name, _, label) = &wanted[*i];
        let reference = spec.registry.reference(&ctx.naming.prefix, name, tag);
        match found {
            Ok(Some(_)) => out.entry(name.clone()).or_default().push(reference),
            // The image tag of a source that is not published: said once
            // (its cache tag is usually missing too: not worth a line).
            Ok(None) if !tag.ends_with("-cache") => {
                ui::note(format_args!("cache: {name}: {reference} ({label}) is not published: skipped"))
            }
            Ok(None) => {}
            Err(e) => ui::note(format_args!("cache: {name}: cannot read {reference} ({label}): {e:#}; skipped")),
        }
    }
    out
}
