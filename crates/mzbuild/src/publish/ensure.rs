//! `ensure`, the CI entry point: publish exactly what is missing, to every
//! registry, and nothing else.
//!
//! Verify every registry's credentials (a wrong token fails before anything
//! is built) -> ask every registry, in parallel, which images it already
//! has -> plan -> log in once per registry into a private, temporary
//! DOCKER_CONFIG (token on stdin) -> run the pre-images of the missing
//! images in one batch -> build them on the worker pool, each with one
//! `docker buildx build --push` tagged for the registries that lack it
//! (retried on registry/network failures) -> summary.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{bail, Result};

use super::client::Credentials;
use super::login::DockerLogin;
use super::report::{self, Row};
use super::targets::Registry;
use super::{clients, published_status};
use crate::build::scheduler::Outcome;
use crate::build::{build_images, describe_outcome, PoolOptions};
use crate::fingerprint::fingerprint_all;
use crate::plan::{self, Action, Facts, Goal, Step};
use crate::util::par_io;
use crate::{ui, Ctx, Status};

pub fn ensure(ctx: &Ctx, targets: &[String], opts: &PoolOptions, json: bool) -> Result<Status> {
    let t0 = Instant::now();
    let images = ctx.repo.resolve(targets)?;
    let fps = fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
    let t_fp = t0.elapsed();
    let publishable = images.iter().any(|i| i.config.publish);
    let clients = clients(ctx, publishable)?;
    // Credentials first: a wrong token must fail before any build.
    if let Some(probe) = images.iter().find(|i| i.config.publish) {
        let errors: Vec<String> = par_io(&clients, clients.len(), |c| {
            c.verify_credentials(&c.registry.repository(&ctx.naming.prefix, &probe.name)).err()
        })
        .into_iter()
        .flatten()
        .map(|e| format!("{e:#}"))
        .collect();
        if !errors.is_empty() {
            bail!("{}\nnothing was built or pushed", errors.join("\n"));
        }
    }
    let missing = published_status(ctx, &clients, &images, &fps)?;
    let t_check = t0.elapsed() - t_fp;
    let mut engine_checked = false;
    let local: BTreeSet<String> = if images.iter().any(|i| !i.config.publish) {
        ctx.docker.check_engine()?;
        engine_checked = true;
        ctx.docker.local_images()?
    } else {
        BTreeSet::new()
    };
    let steps = plan::plan(&images, &fps, &ctx.naming, &Goal::Ensure, &Facts { missing, local });
    let to_build: Vec<&Step> = steps.iter().filter(|s| s.action.builds()).collect();
    ui::progress(format_args!(
        "{} image(s); fingerprints {:.0} ms, registry checks {:.0} ms; {} to build",
        images.len(),
        t_fp.as_secs_f64() * 1e3,
        t_check.as_secs_f64() * 1e3,
        to_build.len()
    ));
    let mut outcomes = BTreeMap::new();
    if !to_build.is_empty() {
        if !engine_checked {
            ctx.docker.check_engine()?;
        }
        ctx.docker.check_buildx()?;
        // Log in to the registries this run pushes to, and to the one specs
        // point at (builds pull their published dependencies from it), when
        // they have credentials; with none, the user's own docker config is
        // used as is.
        let mut pushed_to: BTreeSet<usize> = BTreeSet::from([0]);
        for s in &to_build {
            if let Action::Push { registries } = &s.action {
                pushed_to.extend(registries);
            }
        }
        let with_creds: Vec<(&Registry, &Credentials)> = clients
            .iter()
            .enumerate()
            .filter(|(i, _)| pushed_to.contains(i))
            .filter_map(|(_, c)| c.credentials().map(|cr| (&c.registry, cr)))
            .collect();
        let login = if with_creds.is_empty() {
            None
        } else {
            Some(DockerLogin::new(&ctx.docker, ctx.env.as_ref(), &with_creds)?)
        };
        let docker = ctx.docker.with_env(login.as_ref().map(DockerLogin::env).unwrap_or_default());
        outcomes = build_images(ctx, &fps, &to_build, &docker, opts)?;
    }

    let rows: Vec<Row> = steps.iter().map(|s| row(ctx, s, outcomes.get(&s.image.name))).collect();
    if !report::print(&rows, json)? {
        return Ok(Status::Failure);
    }
    ui::progress(format_args!("ensure finished in {:.1}s", t0.elapsed().as_secs_f64()));
    Ok(Status::Success)
}

fn row(ctx: &Ctx, step: &Step<'_>, outcome: Option<&Outcome<usize>>) -> Row {
    let (status, seconds, error) = match (&step.action, outcome) {
        (Action::Published, _) => ("published", 0.0, None),
        (Action::Present, _) => ("present", 0.0, None),
        (a, Some(Outcome::Done { took, .. })) => {
            (if matches!(a, Action::Push { .. }) { "pushed" } else { "built" }, took.as_secs_f64(), None)
        }
        (_, Some(o @ Outcome::Failed { took, .. })) => ("failed", took.as_secs_f64(), Some(describe_outcome(o))),
        (_, Some(o @ Outcome::Skipped { .. })) => ("skipped", 0.0, Some(describe_outcome(o))),
        (_, Some(o @ Outcome::TimedOut { .. })) => ("timed-out", 0.0, Some(describe_outcome(o))),
        (_, None) => ("failed", 0.0, Some("not run".into())),
    };
    let registries = match &step.action {
        Action::Push { registries } => registries.iter().map(|r| ctx.naming.registries[*r].url.clone()).collect(),
        _ => vec![],
    };
    Row {
        name: step.image.name.clone(),
        fingerprint: step.fingerprint.to_string(),
        spec: step.spec.clone(),
        publish: step.image.config.publish,
        status,
        registries,
        seconds,
        error,
    }
}
