//! The local commands: `build` (into the local engine), `acquire` (keep,
//! pull or build) and `run` (acquire, then `docker run`). Never push; the
//! engine they share with `ensure` is [`crate::build`].

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use crate::build::scheduler::Outcome;
use crate::build::{build_images, builder, fail_on_errors, PoolOptions, RepoLock};
use crate::ctx::{Ctx, Status};
use crate::docker::PullError;
use crate::fingerprint::Fingerprinted;
use crate::plan::{self, Action, Facts, Goal, Step};
use crate::publish::login::DockerLogin;
use crate::report::{self, LocalRow, Report};
use crate::ui;

/// `build IMAGE...`: build the images (and dependencies missing locally)
/// into the local engine; `force`d images are rebuilt. Never pushes. Prints
/// the targets' specs.
/// With `json`, the run's document replaces the specs on stdout.
pub fn build(ctx: &Ctx, targets: &[String], force: bool, opts: &PoolOptions, json: bool) -> Result<Status> {
    let report = json.then(|| Report::new(ctx, "build"));
    ctx.docker.check_engine()?;
    ctx.docker.check_buildx()?;
    let builder = builder(ctx, &ctx.docker, opts)?;
    let images = ctx.repo.resolve(targets)?;
    let fps = crate::fingerprint::snapshot::fingerprint_and_record(&ctx.repo, &images, &ctx.settings)?;
    let facts = Facts { local: ctx.docker.local_images()?, ..Facts::default() };
    let force = if force { targets.iter().cloned().collect() } else { BTreeSet::new() };
    let steps = plan::plan(&images, &fps, &ctx.naming, &Goal::Build { force: force.clone() }, &facts);
    for s in steps.iter().filter(|s| s.action == Action::Present) {
        ui::progress(format_args!("{}: already built ({})", s.image.name, s.spec));
    }
    let mut to_build: Vec<&Step> = steps.iter().filter(|s| s.action.builds()).collect();
    let rows = local_rows(&steps, |s| if s.action.builds() { "interrupted" } else { "present" });
    if let Some(r) = &report {
        report::on_interrupt_local(r, rows.clone());
    }
    let mut outcomes = BTreeMap::new();
    if !to_build.is_empty() {
        let lock = RepoLock::acquire(ctx.repo.root())?;
        if lock.waited() {
            // The run we waited for may have built some of them.
            let local = ctx.docker.local_images()?;
            to_build.retain(|s| force.contains(&s.image.name) || !local.contains(&s.spec));
        }
        outcomes = build_images(ctx, &fps, &to_build, &ctx.docker, opts, builder.as_ref(), &lock)?;
        if report.is_none() {
            fail_on_errors(&outcomes)?;
        }
    }
    if let Some(r) = &report {
        return Ok(emit_local(r, &rows, &outcomes));
    }
    let specs: String = targets.iter().map(|t| format!("{}\n", ctx.naming.spec(t, &fps[t].fingerprint))).collect();
    ui::result(&specs);
    Ok(Status::Success)
}

/// `acquire IMAGE...`: make the images available locally: keep what is
/// there, pull what is published, build the rest (saying why each was not
/// pulled). Never pushes. Pulls, and the builds (which pull published
/// dependencies), are logged in to the spec registry when its token is set
/// (see [`DockerLogin::for_pulls`]).
pub fn acquire(ctx: &Ctx, targets: &[String], opts: &PoolOptions) -> Result<BTreeMap<String, Fingerprinted>> {
    let (fps, _, outcomes) = acquire_rows(ctx, targets, opts, None)?;
    fail_on_errors(&outcomes)?;
    Ok(fps)
}

/// `acquire --json`: [`acquire`] printing the run's document, not the specs.
pub fn acquire_json(ctx: &Ctx, targets: &[String], opts: &PoolOptions) -> Result<Status> {
    let report = Report::new(ctx, "acquire");
    let (_, rows, outcomes) = acquire_rows(ctx, targets, opts, Some(&report))?;
    Ok(emit_local(&report, &rows, &outcomes))
}

/// The rows of a local command (`build`, `acquire`): present images
/// `present`, the others `status(step)`.
fn local_rows(steps: &[Step<'_>], status: impl Fn(&Step<'_>) -> &'static str) -> Vec<LocalRow> {
    steps
        .iter()
        .map(|s| {
            let status = if s.action == Action::Present { "present" } else { status(s) };
            LocalRow::new(&s.image.name, s.fingerprint.to_string(), s.spec.clone(), status)
        })
        .collect()
}

/// Print a local command's document, with the failures on stderr.
fn emit_local(report: &Report, rows: &[LocalRow], outcomes: &BTreeMap<String, Outcome<usize>>) -> Status {
    let (rows, result) = report::local_rows(rows, outcomes);
    report.emit(&rows, result);
    match fail_on_errors(outcomes) {
        Ok(()) => Status::Success,
        Err(e) => {
            ui::error(format_args!("{e:#}"));
            Status::Failure
        }
    }
}

/// What [`acquire_rows`] did: the fingerprints, a row per image and the
/// builds' outcomes.
type Acquired = (BTreeMap<String, Fingerprinted>, Vec<LocalRow>, BTreeMap<String, Outcome<usize>>);

/// [`acquire`]'s work: the fingerprints, a row per image (for the
/// document of `report`, also printed on a signal) and the builds' outcomes.
fn acquire_rows(ctx: &Ctx, targets: &[String], opts: &PoolOptions, report: Option<&Report>) -> Result<Acquired> {
    ctx.docker.check_engine()?;
    let images = ctx.repo.resolve(targets)?;
    let fps = crate::fingerprint::snapshot::fingerprint_and_record(&ctx.repo, &images, &ctx.settings)?;
    let facts = Facts { local: ctx.docker.local_images()?, ..Facts::default() };
    let steps = plan::plan(&images, &fps, &ctx.naming, &Goal::Acquire, &facts);
    let mut rows = local_rows(&steps, |_| "interrupted");
    if !steps.iter().any(|s| s.action.builds()) {
        return Ok((fps, rows, BTreeMap::new()));
    }
    let login = DockerLogin::for_pulls(ctx);
    let docker = ctx.docker.with_env(login.as_ref().map(DockerLogin::env).unwrap_or_default());
    // Pull published images in parallel; whatever cannot be pulled is built.
    let to_pull: Vec<&Step> = steps.iter().filter(|s| s.action == Action::PullOrBuild).collect();
    // Under a trust policy, what is pulled is the digest that was verified
    // (by digest, then tagged): a tag re-pointed after the check changes
    // nothing.
    let verified = match &ctx.trust {
        Some(policy) => refuse_untrusted_pulls(ctx, policy, &to_pull, &fps)?,
        None => BTreeMap::new(),
    };
    let pulls = crate::util::par_io(&to_pull, 8, |s| match verified.get(&s.image.name) {
        Some(digest) => docker.pull_pinned(&s.spec, digest),
        None => docker.pull(&s.spec),
    });
    let mut pulled = BTreeSet::new();
    for (s, result) in to_pull.iter().zip(pulls) {
        let name = &s.image.name;
        match result {
            Ok(()) => {
                ui::progress(format_args!("{name}: pulled"));
                pulled.insert(name.clone());
                if let Some(r) = rows.iter_mut().find(|r| &r.name == name) {
                    r.status = "pulled";
                }
            }
            Err(PullError::NotPublished) => {
                ui::progress(format_args!("{name}: not published ({}); building it", s.spec))
            }
            Err(PullError::Failed(why)) => ui::progress(format_args!("{name}: pull failed ({why}); building it")),
        }
    }
    if let Some(r) = report {
        report::on_interrupt_local(r, rows.clone());
    }
    let mut to_build: Vec<&Step> =
        steps.iter().filter(|s| s.action.builds() && !pulled.contains(&s.image.name)).collect();
    if to_build.is_empty() {
        return Ok((fps, rows, BTreeMap::new()));
    }
    docker.check_buildx()?;
    let builder = self::builder(ctx, &docker, opts)?;
    let lock = RepoLock::acquire(ctx.repo.root())?;
    if lock.waited() {
        // The run we waited for may have built some of them.
        let local = ctx.docker.local_images()?;
        to_build.retain(|s| !local.contains(&s.spec));
    }
    let outcomes = build_images(ctx, &fps, &to_build, &docker, opts, builder.as_ref(), &lock)?;
    Ok((fps, rows, outcomes))
}

/// Under a trust policy, fail unless every tag about to be pulled from the
/// spec registry carries a signature by a trusted key of what it names:
/// an untrusted tag is neither pulled nor built around. The digests
/// verified, by image name.
fn refuse_untrusted_pulls(
    ctx: &Ctx,
    policy: &crate::sigstore::Policy,
    to_pull: &[&Step<'_>],
    fps: &BTreeMap<String, Fingerprinted>,
) -> Result<BTreeMap<String, String>> {
    let clients = crate::publish::clients(ctx, crate::publish::Access::Read, None)?;
    let spec_registry = &clients[..1];
    let images: Vec<&crate::discover::Image> = to_pull.iter().map(|s| s.image).collect();
    let published = crate::publish::published_status(ctx, spec_registry, &images, fps)?;
    let untrusted = crate::trust::check_published(ctx, spec_registry, policy, &images, fps, &published)?;
    if !untrusted.is_empty() {
        crate::trust::report(ctx, &untrusted, "nothing was pulled or built");
        anyhow::bail!("{} untrusted published tag(s): see above", untrusted.len());
    }
    Ok(published.into_iter().filter_map(|(name, held)| Some((name, held.into_iter().next().flatten()?))).collect())
}

/// `run IMAGE [-- ARGS]`: acquire, then `docker run --rm --init`; the
/// container's exit status is the command's.
pub fn run(ctx: &Ctx, image: &str, args: &[String], opts: &PoolOptions) -> Result<Status> {
    let fps = acquire(ctx, &[image.to_string()], opts)?;
    let spec = ctx.naming.spec(image, &fps[image].fingerprint);
    let status = ctx.docker.run_attached(&spec, args)?;
    Ok(match status.code() {
        Some(0) => Status::Success,
        Some(c) => Status::Code(u8::try_from(c).unwrap_or(1)),
        None => Status::Failure,
    })
}
