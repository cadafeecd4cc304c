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
use crate::fingerprint::{fingerprint_all, Fingerprint, Fingerprinted};
use crate::plan::{self, Held, TagMove};
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

/// One image's index: its canonical bytes and their digest.
struct Index {
    bytes: Vec<u8>,
    digest: String,
}

/// What happens to one release tag in one registry.
#[derive(Debug, Clone, PartialEq)]
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
    fn planned(m: &TagMove) -> Outcome {
        match m {
            TagMove::Create => Outcome::Create,
            TagMove::Unchanged => Outcome::Unchanged,
            TagMove::Move { from } => Outcome::Move { from: from.clone() },
        }
    }

    /// The status word: what will happen (a plan) or what happened.
    fn status(&self, done: bool) -> &'static str {
        match (self, done) {
            (Outcome::Create, false) => "create",
            (Outcome::Create, true) => "created",
            (Outcome::Move { .. }, false) => "move",
            (Outcome::Move { .. }, true) => "moved",
            (Outcome::Unchanged, _) => "unchanged",
            (Outcome::Failed, _) => "failed",
        }
    }

    /// As the line shows it: `create`, `moved (from sha256:...)`, `FAILED`.
    fn render(&self, done: bool) -> String {
        match self {
            Outcome::Move { from } => format!("{} (from {from})", self.status(done)),
            Outcome::Failed => "FAILED".to_string(),
            _ => self.status(done).to_string(),
        }
    }

    fn previous(&self) -> Option<String> {
        match self {
            Outcome::Move { from } => Some(from.clone()),
            _ => None,
        }
    }
}

/// One release tag (an image's, in one registry) and what happens to it.
struct TagLine<'a> {
    image: &'a str,
    registry: usize,
    outcome: Outcome,
}

/// What every step of one `tag` run shares.
struct Tagging<'a> {
    ctx: &'a Ctx,
    tag: &'a str,
    clients: Vec<Client>,
    /// The run's document, with `--json`.
    report: Option<Report>,
}

impl Tagging<'_> {
    fn reference(&self, r: usize, name: &str, tag: &str) -> String {
        self.ctx.naming.registries[r].reference(&self.ctx.naming.prefix, name, tag)
    }

    /// The per-arch image of each image and arch, which every registry must
    /// hold with one digest (else the error says which are missing or
    /// drifted, and nothing is tagged).
    fn members<'i>(
        &self,
        member_tags: &[(&'i str, String)],
        member_held: &[Held],
        archs: &[Arch],
        fps: &[BTreeMap<String, Fingerprinted>],
    ) -> Result<BTreeMap<&'i str, Vec<Member>>> {
        let (mut missing, mut drifted) = (vec![], vec![]);
        let mut members: BTreeMap<&str, Vec<Member>> = BTreeMap::new();
        for (((name, member_tag), held), k) in member_tags.iter().zip(member_held).zip(0..) {
            let arch = archs[k % archs.len()];
            for r in plan::lacking(held, self.clients.len()) {
                missing.push(format!("{} ({})", self.reference(r, name, member_tag), arch.gcc()));
            }
            for r in plan::drifted(held) {
                drifted.push(self.reference(r, name, member_tag));
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
                self.ctx.hint("ensure --arch <arch>")
            );
        }
        if !drifted.is_empty() {
            bail!(
                "{} per-arch image(s) have another digest here than in the first registry that has them:\n  {}\n\
                 run {} first; nothing was tagged",
                drifted.len(),
                drifted.join("\n  "),
                self.ctx.hint("repair --arch <arch>")
            );
        }
        Ok(members)
    }

    /// Each image's index entries, from its per-arch manifests (read from
    /// the first registry: they are the same everywhere).
    fn descriptors<'i>(&self, members: &BTreeMap<&'i str, Vec<Member>>) -> Result<BTreeMap<&'i str, Vec<Descriptor>>> {
        let tasks: Vec<(&str, &Member)> =
            members.iter().flat_map(|(name, ms)| ms.iter().map(move |m| (*name, m))).collect();
        let client = &self.clients[0];
        let descriptors = par_io(&tasks, 8, |(name, m)| {
            let repo = client.registry.repository(&self.ctx.naming.prefix, name);
            describe_member(client, &repo, &m.digest, m.arch)
                .with_context(|| format!("{} ({})", self.reference(0, name, &m.fingerprint.tag()), m.arch.gcc()))
        });
        let mut indexes: BTreeMap<&str, Vec<Descriptor>> = BTreeMap::new();
        for ((name, _), d) in tasks.iter().zip(descriptors) {
            indexes.entry(name).or_default().push(d?);
        }
        Ok(indexes)
    }

    /// Per image and registry: create, move or leave the tag.
    fn plan<'i>(&self, images: &[&'i Image], indexes: &BTreeMap<&str, Index>, current: &[Held]) -> Vec<TagLine<'i>> {
        let mut lines = vec![];
        for (image, current) in images.iter().zip(current) {
            for (registry, m) in plan::release_moves(&indexes[image.name.as_str()].digest, current).iter().enumerate() {
                lines.push(TagLine { image: &image.name, registry, outcome: Outcome::planned(m) });
            }
        }
        lines
    }

    /// Writes the index under every tag that is created or moved; a failed
    /// write marks its line and gives an error naming the tag.
    fn write(&self, lines: &mut [TagLine<'_>], indexes: &BTreeMap<&str, Index>) -> Vec<String> {
        let writes: Vec<(usize, &str, usize)> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| matches!(l.outcome, Outcome::Create | Outcome::Move { .. }))
            .map(|(k, l)| (k, l.image, l.registry))
            .collect();
        let results = par_io(&writes, 8, |(_, name, r)| {
            let repo = self.clients[*r].registry.repository(&self.ctx.naming.prefix, name);
            let bytes = &indexes[name].bytes;
            let expected = manifest::digest(bytes);
            let stored = self.clients[*r].put_manifest(&repo, self.tag, manifest::OCI_INDEX, bytes)?;
            if stored != expected {
                bail!("the registry stored the index as {stored}, not as {expected}");
            }
            Ok(())
        });
        let mut errors = vec![];
        for ((k, name, r), result) in writes.iter().zip(results) {
            if let Err(e) = result {
                errors.push(format!("{}: {e:#}", self.reference(*r, name, self.tag)));
                lines[*k].outcome = Outcome::Failed;
            }
        }
        errors
    }

    /// Sign the index of every tag that was created or moved; the errors.
    fn sign(
        &self,
        lines: &[TagLine<'_>],
        indexes: &BTreeMap<&str, Index>,
        signer: &crate::trust::Signer,
    ) -> Vec<String> {
        let written: Vec<(&str, usize)> = lines
            .iter()
            .filter(|l| matches!(l.outcome, Outcome::Create | Outcome::Move { .. }))
            .map(|l| (l.image, l.registry))
            .collect();
        let results = par_io(&written, 8, |(name, r)| {
            let repo = self.clients[*r].registry.repository(&self.ctx.naming.prefix, name);
            signer.sign(&self.clients[*r], &repo, &manifest::digest(&indexes[name].bytes))
        });
        written
            .iter()
            .zip(results)
            .filter_map(|((name, r), res)| {
                res.err().map(|e| format!("{}: signing: {e:#}", self.reference(*r, name, self.tag)))
            })
            .collect()
    }

    /// The lines for stdout (none with `--json`).
    fn show(&self, lines: &[TagLine<'_>], indexes: &BTreeMap<&str, Index>, done: bool) -> String {
        if self.report.is_some() {
            return String::new();
        }
        lines
            .iter()
            .map(|l| {
                let start = format!("{} {}", self.reference(l.registry, l.image, self.tag), indexes[l.image].digest);
                format!("{start} {}\n", l.outcome.render(done))
            })
            .collect()
    }

    /// The document's rows: what happened to each tag, or would.
    fn emit(&self, lines: &[TagLine<'_>], indexes: &BTreeMap<&str, Index>, done: bool, result: RunResult) {
        let Some(report) = &self.report else { return };
        let rows: Vec<TagRow> = lines
            .iter()
            .map(|l| TagRow {
                name: l.image.to_string(),
                registry: self.ctx.naming.registries[l.registry].url.clone(),
                reference: self.reference(l.registry, l.image, self.tag),
                digest: indexes[l.image].digest.clone(),
                status: l.outcome.status(done),
                previous: l.outcome.previous(),
            })
            .collect();
        report.emit(&rows, result);
    }

    /// The CI summary's rows, after the writes.
    fn ci_summary(&self, lines: &[TagLine<'_>], indexes: &BTreeMap<&str, Index>, errors: &[String], headline: String) {
        let rows = lines
            .iter()
            .map(|l| {
                let place = self.reference(l.registry, l.image, self.tag);
                let failure = errors.iter().find(|e| e.starts_with(&format!("{place}: "))).cloned();
                let status = match l.outcome {
                    Outcome::Failed => "failed".to_string(),
                    _ => l.outcome.render(true),
                };
                let digest = Some(indexes[l.image].digest.clone());
                crate::ui::summary::Row { image: l.image.to_string(), status, digest, place, failure, seconds: None }
            })
            .collect();
        let headline =
            if errors.is_empty() { headline } else { format!("{headline}; {} could not be written", errors.len()) };
        crate::publish::ci::write(self.ctx, "tag", errors.is_empty(), headline, rows);
    }
}

pub fn tag(ctx: &Ctx, tag: &str, targets: &[String], opts: &TagOptions) -> Result<Status> {
    let report = opts.json.then(|| Report::new(ctx, "tag"));
    validate_tag(tag)?;
    let archs = archs(opts)?;
    let Some((resolved, images)) = select_images(ctx, targets, opts)? else {
        ui::progress("no published image to tag");
        if let Some(r) = &report {
            r.emit::<TagRow>(&[], RunResult::Success);
        }
        return Ok(Status::Success);
    };
    // Per-arch fingerprints: the settings differ by arch only.
    let mut fps = vec![];
    for arch in &archs {
        let settings = Settings { arch: *arch, ..ctx.settings.clone() };
        fps.push(fingerprint_all(&ctx.repo, &resolved, &settings)?);
    }
    let clients = clients(ctx, if opts.dry_run { Access::Read } else { Access::Write }, opts.timeout)?;
    if !opts.dry_run {
        verify_credentials(ctx, &clients, &images[0].name, "nothing was tagged")?;
    }
    let run = Tagging { ctx, tag, clients, report };

    // What every registry holds: each per-arch image, and the tag now.
    let member_tags: Vec<(&str, String)> =
        images.iter().flat_map(|i| fps.iter().map(|f| (i.name.as_str(), f[&i.name].fingerprint.tag()))).collect();
    let release_tags: Vec<(&str, String)> = images.iter().map(|i| (i.name.as_str(), tag.to_string())).collect();
    let member_held = held(ctx, &run.clients, &member_tags)?;
    // Under a trust policy, only signed per-arch images are indexed.
    if let Some(policy) = &ctx.trust {
        let triples: Vec<(&str, String, &Held)> =
            member_tags.iter().zip(&member_held).map(|((n, t), h)| (*n, t.clone(), h)).collect();
        let untrusted = crate::trust::check(ctx, &run.clients, policy, &triples)?;
        if !untrusted.is_empty() {
            crate::trust::report(ctx, &untrusted, "nothing was tagged");
            if let Some(r) = &run.report {
                r.emit::<TagRow>(&[], RunResult::Failure);
            }
            return Ok(Status::Failure);
        }
    }
    let current = held(ctx, &run.clients, &release_tags)?;
    let members = run.members(&member_tags, &member_held, &archs, &fps)?;
    let descriptors = run.descriptors(&members)?;
    let indexes = index_bytes(&images, descriptors, &members);
    let mut lines = run.plan(&images, &indexes, &current);
    let count = |o: fn(&Outcome) -> bool| lines.iter().filter(|l| o(&l.outcome)).count();
    let created = count(|o| *o == Outcome::Create);
    let moved = count(|o| matches!(o, Outcome::Move { .. }));
    let unchanged = count(|o| *o == Outcome::Unchanged);
    if opts.dry_run {
        ui::result(&run.show(&lines, &indexes, false));
        run.emit(&lines, &indexes, false, RunResult::Success);
        ui::progress(format_args!(
            "dry run: {created} to create, {moved} to move, {unchanged} unchanged; nothing was changed"
        ));
        return Ok(Status::Success);
    }
    // Every index written is signed, when a signing key is configured:
    // opened before the first write (a missing key leaves no unsigned
    // index behind), and only when there is one.
    let signer = if created + moved > 0 { crate::trust::Signer::load(ctx)? } else { None };
    let mut errors = run.write(&mut lines, &indexes);
    if let Some(signer) = &signer {
        errors.extend(run.sign(&lines, &indexes, signer));
    }
    let headline = format!("{tag}: {created} created, {moved} moved, {unchanged} unchanged");
    if crate::publish::ci::wanted(ctx) {
        run.ci_summary(&lines, &indexes, &errors, headline.clone());
    }
    ui::result(&run.show(&lines, &indexes, true));
    run.emit(&lines, &indexes, true, if errors.is_empty() { RunResult::Success } else { RunResult::Failure });
    if !errors.is_empty() {
        ui::error(format_args!("{} tag(s) could not be written:\n  {}", errors.len(), errors.join("\n  ")));
        return Ok(Status::Failure);
    }
    ui::progress(headline);
    Ok(Status::Success)
}

/// The architectures the index lists, each once, in a fixed order.
fn archs(opts: &TagOptions) -> Result<Vec<Arch>> {
    let mut archs = opts.archs.clone();
    archs.sort_by_key(|a| a.go());
    archs.dedup();
    if archs.is_empty() {
        bail!("give at least one --arch");
    }
    Ok(archs)
}

/// The images to fingerprint (the release roots and their dependencies)
/// and, of them, the published ones to tag; none when nothing is published.
fn select_images<'c>(
    ctx: &'c Ctx,
    targets: &[String],
    opts: &TagOptions,
) -> Result<Option<(Vec<&'c Image>, Vec<&'c Image>)>> {
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
        return Ok(None);
    }
    let resolved = ctx.repo.resolve(&roots)?;
    let images = resolved.iter().copied().filter(|i| i.config.publish).collect();
    Ok(Some((resolved, images)))
}

/// Each image's canonical index bytes, its entries in platform order; a
/// progress line shows what each index holds.
fn index_bytes<'i>(
    images: &[&'i Image],
    mut descriptors: BTreeMap<&str, Vec<Descriptor>>,
    members: &BTreeMap<&str, Vec<Member>>,
) -> BTreeMap<&'i str, Index> {
    let mut indexes = BTreeMap::new();
    for image in images {
        let mut descs = descriptors.remove(image.name.as_str()).unwrap_or_default();
        descs.sort_by_key(platform_key);
        let bytes = manifest::oci_index(&descs);
        let digest = manifest::digest(&bytes);
        let shown: Vec<String> = members[image.name.as_str()]
            .iter()
            .map(|m| format!("{} {} ({})", m.arch.gcc(), m.fingerprint.tag(), short(&m.digest)))
            .collect();
        ui::progress(format_args!("{}: {} = {}", image.name, short(&digest), shown.join(", ")));
        indexes.insert(image.name.as_str(), Index { bytes, digest });
    }
    indexes
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

    #[test]
    fn outcomes_render_as_planned_and_as_done() {
        let from = "sha256:0123".to_string();
        let move_ = Outcome::Move { from: from.clone() };
        let cases = [
            (Outcome::Create, ["create", "create", "created", "created"], None),
            (Outcome::Unchanged, ["unchanged", "unchanged", "unchanged", "unchanged"], None),
            (move_, ["move (from sha256:0123)", "move", "moved (from sha256:0123)", "moved"], Some(from)),
            (Outcome::Failed, ["FAILED", "failed", "FAILED", "failed"], None),
        ];
        for (o, [planned, planned_status, done, done_status], previous) in cases {
            assert_eq!(o.render(false), planned, "{o:?}");
            assert_eq!(o.status(false), planned_status, "{o:?}");
            assert_eq!(o.render(true), done, "{o:?}");
            assert_eq!(o.status(true), done_status, "{o:?}");
            assert_eq!(o.previous(), previous, "{o:?}");
        }
    }
}
