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

use super::client::Client;
use super::manifest::{self, Content, Descriptor};
use super::{clients, held, verify_credentials, Access};
use crate::config::settings::{Arch, Settings};
use crate::discover::Image;
use crate::fingerprint::{fingerprint_all, Fingerprint};
use crate::plan::{self, TagMove};
use crate::util::par_io;
use crate::{ui, Ctx, Status};

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
}

/// One image's per-arch member of an index.
struct Member {
    arch: Arch,
    fingerprint: Fingerprint,
    /// The digest every registry holds under its `mzbuild-<fp>` tag.
    digest: String,
}

pub fn tag(ctx: &Ctx, tag: &str, targets: &[String], opts: &TagOptions) -> Result<Status> {
    validate_tag(tag)?;
    let archs = index_archs(opts)?;
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
    let members = published_members(ctx, clients.len(), &archs, &fps, &member_tags, &member_held)?;
    let mut indexes = member_descriptors(ctx, &clients, &members)?;
    let bytes_of = index_bytes(&images, &members, &mut indexes);
    let (mut lines, writes) = plan_tags(ctx, tag, &images, &bytes_of, &current);
    if opts.dry_run {
        let counts = Counts::of(&lines);
        ui::result(&show(&lines, false));
        ui::progress(format_args!(
            "dry run: {} to create, {} to move, {} unchanged; nothing was changed",
            counts.created, counts.moved, counts.unchanged
        ));
        return Ok(Status::Success);
    }
    let errors = write_indexes(ctx, &clients, tag, &writes, &mut lines);
    ui::result(&show(&lines, true));
    if !errors.is_empty() {
        ui::error(format_args!("{} tag(s) could not be written:\n  {}", errors.len(), errors.join("\n  ")));
        return Ok(Status::Failure);
    }
    let counts = Counts::of(&lines);
    ui::progress(format_args!(
        "{tag}: {} created, {} moved, {} unchanged",
        counts.created, counts.moved, counts.unchanged
    ));
    Ok(Status::Success)
}

/// The architectures the indexes list: `--arch`, sorted as the index
/// orders them, each once.
fn index_archs(opts: &TagOptions) -> Result<Vec<Arch>> {
    let mut archs = opts.archs.clone();
    archs.sort_by_key(|a| a.go());
    archs.dedup();
    if archs.is_empty() {
        bail!("give at least one --arch");
    }
    Ok(archs)
}

/// Each image's per-arch members (`member_tags`, image by image and arch
/// by arch, as `member_held` holds them); an error (nothing tagged) when
/// one is missing from a registry or has drifted.
fn published_members<'a>(
    ctx: &Ctx,
    registries: usize,
    archs: &[Arch],
    fps: &[BTreeMap<String, crate::fingerprint::Fingerprinted>],
    member_tags: &[(&'a str, String)],
    member_held: &[plan::Held],
) -> Result<BTreeMap<&'a str, Vec<Member>>> {
    let (mut missing, mut drifted) = (vec![], vec![]);
    let mut members: BTreeMap<&str, Vec<Member>> = BTreeMap::new();
    for (((name, member_tag), held), k) in member_tags.iter().zip(member_held).zip(0..) {
        let arch = archs[k % archs.len()];
        for r in plan::lacking(held, registries) {
            missing.push(format!("{} ({})", reference(ctx, r, name, member_tag), arch.gcc()));
        }
        for r in plan::drifted(held) {
            drifted.push(reference(ctx, r, name, member_tag));
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
    Ok(members)
}

/// `<registry>/<prefix><name>:<tag>` for registry #`r`.
fn reference(ctx: &Ctx, r: usize, name: &str, tag: &str) -> String {
    ctx.naming.registries[r].reference(&ctx.naming.prefix, name, tag)
}

/// Each image's index entries, from its per-arch manifests (read from the
/// first registry: they are the same everywhere).
fn member_descriptors<'a>(
    ctx: &Ctx,
    clients: &[Client],
    members: &BTreeMap<&'a str, Vec<Member>>,
) -> Result<BTreeMap<&'a str, Vec<Descriptor>>> {
    let tasks: Vec<(&str, &Member)> =
        members.iter().flat_map(|(name, ms)| ms.iter().map(move |m| (*name, m))).collect();
    let descriptors = par_io(&tasks, 8, |(name, m)| {
        let repo = clients[0].registry.repository(&ctx.naming.prefix, name);
        describe_member(&clients[0], &repo, &m.digest, m.arch)
            .with_context(|| format!("{} ({})", reference(ctx, 0, name, &m.fingerprint.tag()), m.arch.gcc()))
    });
    let mut indexes: BTreeMap<&str, Vec<Descriptor>> = BTreeMap::new();
    for ((name, _), d) in tasks.iter().zip(descriptors) {
        indexes.entry(name).or_default().push(d?);
    }
    Ok(indexes)
}

/// Each image's index: its bytes and digest (shown with its members).
fn index_bytes<'a>(
    images: &[&'a Image],
    members: &BTreeMap<&str, Vec<Member>>,
    indexes: &mut BTreeMap<&str, Vec<Descriptor>>,
) -> BTreeMap<&'a str, (Vec<u8>, String)> {
    let mut bytes_of = BTreeMap::new();
    for image in images {
        let mut descs = indexes.remove(image.name.as_str()).unwrap_or_default();
        descs.sort_by_key(platform_key);
        let bytes = manifest::oci_index(&descs);
        let digest = manifest::digest(&bytes);
        let shown: Vec<String> = members[image.name.as_str()]
            .iter()
            .map(|m| format!("{} {} ({})", m.arch.gcc(), m.fingerprint.tag(), short(&m.digest)))
            .collect();
        ui::progress(format_args!("{}: {} = {}", image.name, short(&digest), shown.join(", ")));
        bytes_of.insert(image.name.as_str(), (bytes, digest));
    }
    bytes_of
}

/// What happens to one image's release tag in one registry: a line of the
/// output.
struct TagLine<'a> {
    image: &'a str,
    registry: usize,
    /// `<reference> <index digest>`.
    start: String,
    outcome: Outcome,
}

enum Outcome {
    Create,
    Unchanged,
    Move {
        from: String,
    },
    /// The write failed.
    Failed,
}

impl Outcome {
    /// As the plan says it (`done`: as what happened).
    fn show(&self, done: bool) -> String {
        match (self, done) {
            (Outcome::Create, false) => "create".into(),
            (Outcome::Create, true) => "created".into(),
            (Outcome::Unchanged, _) => "unchanged".into(),
            (Outcome::Move { from }, false) => format!("move (from {from})"),
            (Outcome::Move { from }, true) => format!("moved (from {from})"),
            (Outcome::Failed, _) => "FAILED".into(),
        }
    }
}

fn show(lines: &[TagLine<'_>], done: bool) -> String {
    lines.iter().map(|l| format!("{} {}\n", l.start, l.outcome.show(done))).collect()
}

#[derive(Default)]
struct Counts {
    created: usize,
    moved: usize,
    unchanged: usize,
}

impl Counts {
    fn of(lines: &[TagLine<'_>]) -> Counts {
        let mut c = Counts::default();
        for l in lines {
            match l.outcome {
                Outcome::Create => c.created += 1,
                Outcome::Move { .. } => c.moved += 1,
                Outcome::Unchanged => c.unchanged += 1,
                Outcome::Failed => {}
            }
        }
        c
    }
}

/// An index to put under the release tag: (image, registry, index bytes).
type IndexWrite<'a> = (&'a str, usize, &'a [u8]);

/// The plan: per image and registry, create, move or leave the tag; and
/// the writes.
fn plan_tags<'a>(
    ctx: &Ctx,
    tag: &str,
    images: &[&'a Image],
    bytes_of: &'a BTreeMap<&'a str, (Vec<u8>, String)>,
    current: &[plan::Held],
) -> (Vec<TagLine<'a>>, Vec<IndexWrite<'a>>) {
    let (mut lines, mut writes) = (vec![], vec![]);
    for (i, image) in images.iter().enumerate() {
        let (bytes, digest) = &bytes_of[image.name.as_str()];
        for (r, m) in plan::release_moves(digest, &current[i]).into_iter().enumerate() {
            if m.writes() {
                writes.push((image.name.as_str(), r, bytes.as_slice()));
            }
            let outcome = match m {
                TagMove::Create => Outcome::Create,
                TagMove::Unchanged => Outcome::Unchanged,
                TagMove::Move { from } => Outcome::Move { from },
            };
            let start = format!("{} {digest}", reference(ctx, r, &image.name, tag));
            lines.push(TagLine { image: &image.name, registry: r, start, outcome });
        }
    }
    (lines, writes)
}

/// Put each index under `tag`; the failures, each also marked in `lines`.
fn write_indexes(
    ctx: &Ctx,
    clients: &[Client],
    tag: &str,
    writes: &[IndexWrite<'_>],
    lines: &mut [TagLine<'_>],
) -> Vec<String> {
    let results = par_io(writes, 8, |(name, r, bytes)| {
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
            errors.push(format!("{}: {e:#}", reference(ctx, *r, name, tag)));
            if let Some(line) = lines.iter_mut().find(|l| l.image == *name && l.registry == *r) {
                line.outcome = Outcome::Failed;
            }
        }
    }
    errors
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
