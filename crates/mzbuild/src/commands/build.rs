//! The local commands: `build` (into the local engine), `acquire` (keep,
//! pull or build) and `run` (acquire, then `docker run`). Never push; the
//! engine they share with `ensure` is [`crate::build`].

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use crate::build::{build_images, builder, fail_on_errors, PoolOptions, RepoLock};
use crate::ctx::{Ctx, Status};
use crate::docker::PullError;
use crate::fingerprint::Fingerprinted;
use crate::plan::{self, Action, Facts, Goal, Step};
use crate::publish::login::DockerLogin;
use crate::ui;

/// `build IMAGE...`: build the images (and dependencies missing locally)
/// into the local engine; `force`d images are rebuilt. Never pushes. Prints
/// the targets' specs.
pub fn build(ctx: &Ctx, targets: &[String], force: bool, opts: &PoolOptions) -> Result<Status> {
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
    if !to_build.is_empty() {
        let lock = RepoLock::acquire(ctx.repo.root())?;
        if lock.waited() {
            // The run we waited for may have built some of them.
            let local = ctx.docker.local_images()?;
            to_build.retain(|s| force.contains(&s.image.name) || !local.contains(&s.spec));
        }
        let outcomes = build_images(ctx, &fps, &to_build, &ctx.docker, opts, builder.as_ref(), &lock)?;
        fail_on_errors(&outcomes)?;
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
    ctx.docker.check_engine()?;
    let images = ctx.repo.resolve(targets)?;
    let fps = crate::fingerprint::snapshot::fingerprint_and_record(&ctx.repo, &images, &ctx.settings)?;
    let facts = Facts { local: ctx.docker.local_images()?, ..Facts::default() };
    let steps = plan::plan(&images, &fps, &ctx.naming, &Goal::Acquire, &facts);
    if !steps.iter().any(|s| s.action.builds()) {
        return Ok(fps);
    }
    let login = DockerLogin::for_pulls(ctx);
    let docker = ctx.docker.with_env(login.as_ref().map(DockerLogin::env).unwrap_or_default());
    // Pull published images in parallel; whatever cannot be pulled is built.
    let to_pull: Vec<&Step> = steps.iter().filter(|s| s.action == Action::PullOrBuild).collect();
    let pulls = crate::util::par_io(&to_pull, 8, |s| docker.pull(&s.spec));
    let mut pulled = BTreeSet::new();
    for (s, result) in to_pull.iter().zip(pulls) {
        let name = &s.image.name;
        match result {
            Ok(()) => {
                ui::progress(format_args!("{name}: pulled"));
                pulled.insert(name.clone());
            }
            Err(PullError::NotPublished) => {
                ui::progress(format_args!("{name}: not published ({}); building it", s.spec))
            }
            Err(PullError::Failed(why)) => ui::progress(format_args!("{name}: pull failed ({why}); building it")),
        }
    }
    let mut to_build: Vec<&Step> =
        steps.iter().filter(|s| s.action.builds() && !pulled.contains(&s.image.name)).collect();
    if to_build.is_empty() {
        return Ok(fps);
    }
    docker.check_buildx()?;
    let builder = builder(ctx, &docker, opts)?;
    let lock = RepoLock::acquire(ctx.repo.root())?;
    if lock.waited() {
        // The run we waited for may have built some of them.
        let local = ctx.docker.local_images()?;
        to_build.retain(|s| !local.contains(&s.spec));
    }
    let outcomes = build_images(ctx, &fps, &to_build, &docker, opts, builder.as_ref(), &lock)?;
    fail_on_errors(&outcomes)?;
    Ok(fps)
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
