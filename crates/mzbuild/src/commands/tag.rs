//! `tag TAG [IMAGE...] --arch x86_64 --arch aarch64`: release tags for
//! multi-arch images, the original's `publish_multiarch_images` without
//! docker.
//!
//! Each image's per-arch fingerprints are computed (the settings differ by
//! arch only; nothing is built), every per-arch image `mzbuild-<fp>` must
//! be in every registry with one digest (else nothing is tagged, and the
//! error says which are missing or drifted), and each registry gets
//! `<registry>/<prefix><name>:TAG` pointing at an OCI image index of them,
//! whose digests, sizes and platforms come from the per-arch manifests and
//! their configs. The index bytes are canonical, so the same images give
//! the same index digest: a tag that already names it is left alone (a
//! re-run writes nothing), one that names other content is moved.
//!
//! The images: the named ones, or every published image (without the
//! `mainline: false` ones on tag builds: `--mainline-only`, or
//! `$BUILDKITE_TAG` set, as the original), plus their published
//! dependencies.

use std::time::Duration;

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};

use crate::config::settings::{Arch, Settings};
use crate::ctx::{Ctx, Status};
use crate::discover::Image;
use crate::fingerprint::{fingerprint_all, Fingerprint};
use crate::plan::{self, TagMove};
use crate::publish::client::Client;
use crate::publish::manifest::{self, Content, Descriptor};
use crate::publish::{clients, held, verify_credentials, Access};
use crate::report::{Report, RunResult, TagRow};
use crate::ui;
use crate::util::par_io;

/// How `tag` runs.
#[derive(Clone, Debug)]
pub struct TagOptions {
    /// The architectures the index lists.
    pub archs: Vec<Arch>,
    /// Print the plan; change nothing.
    pub dry_run: bool,
    /// Leave out `mainline: false` images (also when `$BUILDKITE_TAG` is set).
    pub mainline_only: bool,
    /// Bound on each registry request (`--timeout`).
    pub timeout: Option<Duration>,
    /// Print the run's document on stdout, not the lines.
    pub json: bool,
}

/// One image's per-arch member of an index.
struct Member {
    arch: Arch,
    fingerprint: Fingerprint,
    /// The digest every registry holds under its `mzbuild-<fp>` tag.
    digest: String,
}

pub fn tag(ctx: &Ctx, tag: &str, targets: &[String], opts: &TagOptions) -> Result<Status> {
    let report = opts.json.then(|| Report::new(ctx, "tag"));
    validate_tag(tag)?;
    let mut archs = opts.archs.clone();
    archs.sort_by_key(|a| a.go());
    archs.dedup();
    if archs.is_empty() {
        bail!("give at least one --arch");
    }
    let mainline_only = opts.mainline_only || ctx.env.non_empty("BUILDKITE_TAG").is_some();
    // Every image (none named) must not silently leave out a broken one.
    if targets.is_empty() {
        ctx.repo.resolve(&[])?;
    }
    for t in targets {
        ctx.repo.image(t)?;
    }
    let roots = plan::release_roots(&ctx.repo.images, targets, mainline_only).map_err(|e| anyhow!(e))?;
    if roots.is_empty() {
        ui::progress("no published image to tag");
        if let Some(r) = &report {
            r.emit::<TagRow>(&[], RunResult::Success);
        }
        return Ok(Status::Success);
    }
    let resolved = ctx.repo.resolve(&roots)?;
    let images: Vec<&Image> = resolved.iter().copied().filter(|i| i.config.publish).collect();

    // Per-arch fingerprints: the settings differ by arch only.
    let mut fps: Vec<BTreeMap<String, crate::fingerprint::Fingerprinted>> = vec![];
    for arch in &archs {
        let settings = Settings { arch: *arch, ..ctx.settings.clone() };
        fps.push(fingerprint_all(&ctx.repo, &resolved, &settings)?);
    }
    let clients = clients(ctx, if opts.dry_run { Access::Read } else { Access::Write }, opts.timeout)?;
    if !opts.dry_run {
        verify_credentials(ctx, &clients, &images[0].name, "nothing was tagged")?;
    }

    // What every registry holds: each per-arch image, and the tag now.
    let member_tags: Vec<(&str, String)> =
        images.iter().flat_map(|i| fps.iter().map(|f| (i.name.as_str(), f[&i.name].fingerprint.tag()))).collect();
    let release_tags: Vec<(&str, String)> = images.iter().map(|i| (i.name.as_str(), tag.to_string())).collect();
    let member_held = held(ctx, &clients, &member_tags)?;
    let current = held(ctx, &clients, &release_tags)?;

    let reference = |r: usize, name: &str, t: &str| ctx.naming.registries[r].reference(&ctx.naming.prefix, name, t);
    let (mut missing, mut drifted) = (vec![], vec![]);
    let mut members: BTreeMap<&str, Vec<Member>> = BTreeMap::new();
    for (((name, member_tag), held), k) in member_tags.iter().zip(&member_held).zip(0..) {
        let arch = archs[k % archs.len()];
        for r in plan::lacking(held, clients.len()) {
            missing.push(format!("{} ({})", reference(r, name, member_tag), arch.gcc()));
        }
        for r in plan::drifted(held) {
            drifted.push(reference(r, name, member_tag));
        }
        if let Some(digest) = held.iter().flatten().next() {
            let fingerprint = fps[k % archs.len()][*name].fingerprint;
            members.entry(name).or_default().push(Member { arch, fingerprint, digest: digest.clone() });
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} per-arch image(s) are not in every registry:\n  {}\npublish them first, for this same tree: \
             {} (cargo-build images on an agent of that architecture); nothing was tagged",
            missing.len(),
            missing.join("\n  "),
            ctx.hint("ensure --arch <arch>")
        );
    }
    if !drifted.is_empty() {
        bail!(
            "{} per-arch image(s) have another digest here than in the first registry that has them:\n  {}\n\
             run {} first; nothing was tagged",
            drifted.len(),
            drifted.join("\n  "),
            ctx.hint("repair --arch <arch>")
        );
    }

    // Each image's index, from its per-arch manifests (read from the first
    // registry: they are the same everywhere).
    let tasks: Vec<(&str, &Member)> =
        members.iter().flat_map(|(name, ms)| ms.iter().map(move |m| (*name, m))).collect();
    let descriptors = par_io(&tasks, 8, |(name, m)| {
        let repo = clients[0].registry.repository(&ctx.naming.prefix, name);
        describe_member(&clients[0], &repo, &m.digest, m.arch)
            .with_context(|| format!("{} ({})", reference(0, name, &m.fingerprint.tag()), m.arch.gcc()))
    });
    let mut indexes: BTreeMap<&str, Vec<Descriptor>> = BTreeMap::new();
    for ((name, _), d) in tasks.iter().zip(descriptors) {
        indexes.entry(name).or_default().push(d?);
    }

    // The plan: per image and registry, create, move or leave the tag.
    let mut writes: Vec<(&str, usize, &[u8])> = vec![];
    let mut bytes_of: BTreeMap<&str, (Vec<u8>, String)> = BTreeMap::new();
    for image in &images {
        let mut descs = indexes.remove(image.name.as_str()).unwrap_or_default();
        descs.sort_by_key(platform_key);
        let bytes = manifest::oci_index(&descs);
        let digest = manifest::digest(&bytes);
        let shown: Vec<String> = members[image.name.as_str()]
            .iter()
            .map(|m| format!("{} {} ({})", m.arch.gcc(), m.fingerprint.tag(), short(&m.digest)))
            .collect();
        ui::progress(format_args!("{}: {} = {}", image.name, short(&digest), shown.join(", ")));
        bytes_of.insert(&image.name, (bytes, digest));
    }
    // (image, registry, the stdout line's start, what happens).
    let mut lines: Vec<(&str, usize, String, String)> = vec![];
    let (mut created, mut moved, mut unchanged) = (0, 0, 0);
    for (i, image) in images.iter().enumerate() {
        let (bytes, digest) = &bytes_of[image.name.as_str()];
        for (r, m) in plan::release_moves(digest, &current[i]).iter().enumerate() {
            let what = match m {
                TagMove::Create => {
                    created += 1;
                    "create".to_string()
                }
                TagMove::Unchanged => {
                    unchanged += 1;
                    "unchanged".to_string()
                }
                TagMove::Move { from } => {
                    moved += 1;
                    format!("move (from {from})")
                }
            };
            lines.push((&image.name, r, format!("{} {digest}", reference(r, &image.name, tag)), what));
            if m.writes() {
                writes.push((image.name.as_str(), r, bytes.as_slice()));
            }
        }
    }
    let show = |lines: &[(&str, usize, String, String)]| -> String {
        if report.is_some() {
            return String::new();
        }
        lines.iter().map(|(_, _, start, what)| format!("{start} {what}\n")).collect()
    };
    // The document's rows: what happened to each tag, or would.
    let emit = |lines: &[(&str, usize, String, String)], result: RunResult| {
        let Some(report) = &report else { return };
        let rows: Vec<TagRow> = lines
            .iter()
            .map(|(name, r, _, what)| TagRow {
                name: name.to_string(),
                registry: ctx.naming.registries[*r].url.clone(),
                reference: reference(*r, name, tag),
                digest: bytes_of[name].1.clone(),
                status: match what.split(' ').next().unwrap_or("") {
                    "create" => "create",
                    "created" => "created",
                    "move" => "move",
                    "moved" => "moved",
                    "unchanged" => "unchanged",
                    _ => "failed",
                },
                previous: what.split_once("(from ").map(|(_, f)| f.trim_end_matches(')').to_string()),
            })
            .collect();
        report.emit(&rows, result);
    };
    if opts.dry_run {
        ui::result(&show(&lines));
        emit(&lines, RunResult::Success);
        ui::progress(format_args!(
            "dry run: {created} to create, {moved} to move, {unchanged} unchanged; nothing was changed"
        ));
        return Ok(Status::Success);
    }
    let results = par_io(&writes, 8, |(name, r, bytes)| {
        let repo = clients[*r].registry.repository(&ctx.naming.prefix, name);
        let expected = manifest::digest(bytes);
        let stored = clients[*r].put_manifest(&repo, tag, manifest::OCI_INDEX, bytes)?;
        if stored != expected {
            bail!("the registry stored the index as {stored}, not as {expected}");
        }
        Ok(())
    });
    let mut errors = vec![];
    for ((name, r, _), result) in writes.iter().zip(results) {
        if let Err(e) = result {
            errors.push(format!("{}: {e:#}", reference(*r, name, tag)));
            if let Some(line) = lines.iter_mut().find(|(n, reg, _, _)| n == name && reg == r) {
                line.3 = "FAILED".into();
            }
        }
    }
    for line in &mut lines {
        line.3 = line.3.replace("create", "created").replacen("move (", "moved (", 1);
    }
    if crate::publish::ci::wanted(ctx) {
        let rows = lines
            .iter()
            .map(|(name, r, _, what)| {
                let place = reference(*r, name, tag);
                let failure = errors.iter().find(|e| e.starts_with(&format!("{place}: "))).cloned();
                let status = if what == "FAILED" { "failed".to_string() } else { what.clone() };
                let digest = Some(bytes_of[name].1.clone());
                crate::ui::summary::Row { image: name.to_string(), status, digest, place, failure, seconds: None }
            })
            .collect();
        let headline = format!("{tag}: {created} created, {moved} moved, {unchanged} unchanged");
        let headline =
            if errors.is_empty() { headline } else { format!("{headline}; {} could not be written", errors.len()) };
        crate::publish::ci::write(ctx, "tag", errors.is_empty(), headline, rows);
    }
    ui::result(&show(&lines));
    emit(&lines, if errors.is_empty() { RunResult::Success } else { RunResult::Failure });
    if !errors.is_empty() {
        ui::error(format_args!("{} tag(s) could not be written:\n  {}", errors.len(), errors.join("\n  ")));
        return Ok(Status::Failure);
    }
    ui::progress(format_args!("{tag}: {created} created, {moved} moved, {unchanged} unchanged"));
    Ok(Status::Success)
}

/// A Docker tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; `mzbuild-*` tags are
/// content-addressed and belong to `ensure`.
fn validate_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        bail!("`{tag}` is not a valid tag: use letters, digits, `_`, `.` and `-` (not first), at most 128");
    }
    if tag.starts_with("mzbuild-") {
        bail!("`{tag}`: mzbuild-* tags are content-addressed (ensure writes them); pick a release tag such as v1.2.3");
    }
    Ok(())
}

/// The index entry for the per-arch image `digest` of `repo`: its own
/// manifest, with the platform its config declares, which must be `arch`;
/// or, when the per-arch image is itself an index (buildx attestations),
/// its manifest for `arch`.
fn describe_member(client: &Client, repo: &str, digest: &str, arch: Arch) -> Result<Descriptor> {
    let m = client.get_manifest(repo, digest)?.ok_or_else(|| anyhow!("its manifest {digest} vanished"))?;
    let wrong = |p: &manifest::Platform| {
        anyhow!(
            "it is a {} image, not linux/{}: it was built for another platform (was it built with --arch {}?)",
            p.show(),
            arch.go(),
            arch.gcc()
        )
    };
    match manifest::parse(&m.media_type, &m.bytes)? {
        Content::Image { config, .. } => {
            let platform = manifest::config_platform(&client.get_blob(repo, &config.digest)?)?;
            if platform.os != "linux" || platform.architecture != arch.go() {
                return Err(wrong(&platform));
            }
            Ok(Descriptor {
                media_type: m.media_type,
                digest: digest.to_string(),
                size: m.bytes.len() as u64,
                urls: vec![],
                platform: Some(platform),
                annotations: BTreeMap::new(),
            })
        }
        Content::Index { manifests } => {
            let platforms = manifest::platform_manifests(&manifests);
            let found = platforms
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == arch.go()));
            match (found, platforms.first()) {
                (Some(d), _) => Ok(Descriptor { annotations: BTreeMap::new(), ..(*d).clone() }),
                (None, Some(other)) => Err(wrong(other.platform.as_ref().unwrap_or(&manifest::Platform {
                    architecture: "unknown".into(),
                    os: "unknown".into(),
                    variant: None,
                }))),
                (None, None) => bail!("it is an index without any platform's manifest"),
            }
        }
    }
}

fn platform_key(d: &Descriptor) -> (String, String, String) {
    match &d.platform {
        Some(p) => (p.os.clone(), p.architecture.clone(), p.variant.clone().unwrap_or_default()),
        None => Default::default(),
    }
}

/// `sha256:0123456789ab`, for progress lines.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_tags_are_docker_tags_and_not_ours() {
        for ok in ["v1.2.3", "latest", "unstable", "v0.1.0--main.gabc123", "1_x"] {
            validate_tag(ok).unwrap();
        }
        for bad in ["", "-x", ".x", "a/b", "a:b", &"x".repeat(129)] {
            let e = validate_tag(bad).unwrap_err().to_string();
            assert!(e.contains("not a valid tag"), "{bad}: {e}");
        }
        let e = validate_tag("mzbuild-ABC").unwrap_err().to_string();
        assert!(e.contains("content-addressed"), "{e}");
    }
}
