//! `ensure`, the CI entry point: publish exactly what is missing, to every
//! registry, and nothing else.
//!
//! Verify every registry's credentials (a wrong token fails before anything
//! is built) -> ask every registry, in parallel, which images it already
//! has (and their digests) -> plan -> copy the images that some registries
//! have to the ones that lack them, through the registry API (the same
//! bytes, no build) -> log in once per registry into a private, temporary
//! DOCKER_CONFIG (token on stdin) -> run the pre-images of the images no
//! registry has in one batch -> build them on the worker pool, each with one
//! `docker buildx build --push` tagged for every registry (retried on
//! registry/network failures) -> summary. A tag that a registry has is never
//! overwritten; drift (one tag, different digests) is reported for
//! `repair`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::Result;

use crate::build::scheduler::Outcome;
use crate::build::{build_images, PoolOptions, RepoLock};
use crate::ctx::{Ctx, Status};
use crate::docker::{Builder, Docker};
use crate::plan::naming::Registry;
use crate::plan::{self, Action, Facts, Goal, Held, Step};
use crate::publish::client::{Client, Credentials};
use crate::publish::login::DockerLogin;
use crate::publish::registry_copy::{copy_steps, Copied};
use crate::publish::report::{self, Row};
use crate::publish::{clients, published_status, verify_credentials, Access};
use crate::report::{Report, RunResult};
use crate::ui;
use crate::ui::show_bytes;

/// `ensure`; a drifted tag (one tag, different content in different
/// registries) fails the run unless `allow_drift`: CI must notice it.
pub fn ensure(ctx: &Ctx, targets: &[String], opts: &PoolOptions, json: bool, allow_drift: bool) -> Result<Status> {
    let t0 = Instant::now();
    let report = json.then(|| Report::new(ctx, "ensure"));
    if let Some(r) = &report {
        // Stopped before the plan: no row yet.
        let r = r.clone();
        crate::report::on_interrupt(move |_| r.render::<Row>(&[], RunResult::Interrupted));
    }
    let images = ctx.repo.resolve(targets)?;
    let fps = crate::fingerprint::snapshot::fingerprint_and_record(&ctx.repo, &images, &ctx.settings)?;
    let t_fp = t0.elapsed();
    let publishable = images.iter().any(|i| i.config.publish);
    // A registry that hangs fails the run within --timeout.
    let clients = clients(ctx, if publishable { Access::Write } else { Access::Configured }, Some(opts.timeout))?;
    // Credentials first: a wrong token must fail before any build.
    if let Some(probe) = images.iter().find(|i| i.config.publish) {
        verify_credentials(ctx, &clients, &probe.name, "nothing was built or pushed")?;
    }
    let mut engine_checked = false;
    let mut lock = None;
    let mut t_check = None;
    // What the registries (and the engine, for unpublished images) have,
    // and the plan; once more after waiting for another run that builds
    // in this repository, which may have published some of these images.
    let (facts, steps) = loop {
        let published = published_status(ctx, &clients, &images, &fps)?;
        // With a trust policy, a tag counts only when a trusted key signed
        // what it names; one that does not is neither skipped, copied nor
        // built over: the run stops here.
        if let Some(policy) = &ctx.trust {
            let untrusted = crate::trust::check_published(ctx, &clients, policy, &images, &fps, &published)?;
            if !untrusted.is_empty() {
                crate::trust::report(ctx, &untrusted, "nothing was copied, built or pushed");
                if let Some(r) = &report {
                    r.emit::<Row>(&[], RunResult::Failure);
                }
                return Ok(Status::Failure);
            }
        }
        t_check.get_or_insert(t0.elapsed() - t_fp);
        let local: BTreeSet<String> = if images.iter().any(|i| !i.config.publish) {
            if !engine_checked {
                ctx.docker.check_engine()?;
                engine_checked = true;
            }
            ctx.docker.local_images()?
        } else {
            BTreeSet::new()
        };
        let facts = Facts { published, local };
        let steps = plan::plan(&images, &fps, &ctx.naming, &Goal::Ensure, &facts);
        if lock.is_some() || !steps.iter().any(|s| s.action.builds()) {
            break (facts, steps);
        }
        let acquired = RepoLock::acquire(ctx.repo.root())?;
        let waited = acquired.waited();
        lock = Some(acquired);
        if !waited {
            break (facts, steps);
        }
        ui::progress("looking at the registries again: the run we waited for may have published some images");
    };
    let t_check = t_check.unwrap_or_default();
    warn_drift(ctx, &facts.published);
    let final_row = |s: &Step<'_>, copies: &BTreeMap<String, std::result::Result<Copied, String>>| -> Row {
        let held = facts.published.get(&s.image.name);
        match copies.get(&s.image.name) {
            Some(copied) => with_digests(ctx, copy_row(ctx, s, "copied", copied), held, Some(copied)),
            None => match held {
                Some(h) if s.action == Action::Published && !plan::drifted(h).is_empty() => {
                    with_digests(ctx, drifted_row(ctx, s, h), held, None)
                }
                _ => with_digests(ctx, row(ctx, s, None), held, None),
            },
        }
    };
    // On a signal: the rows known so far; what was to be copied or built
    // and has not finished is `interrupted`.
    let interrupted_rows = |copies: &BTreeMap<String, std::result::Result<Copied, String>>| -> Vec<(Row, bool)> {
        steps
            .iter()
            .map(|s| match (&s.action, copies.contains_key(&s.image.name)) {
                (Action::Copy { .. }, false) => (interrupted(final_row(s, copies)), false),
                (a, _) if a.builds() => (interrupted(final_row(s, copies)), matches!(a, Action::Push { .. })),
                _ => (final_row(s, copies), false),
            })
            .collect()
    };
    if let Some(r) = &report {
        on_interrupt(r, interrupted_rows(&BTreeMap::new()));
    }
    let to_copy: Vec<&Step> = steps.iter().filter(|s| matches!(s.action, Action::Copy { .. })).collect();
    let to_build: Vec<&Step> = steps.iter().filter(|s| s.action.builds()).collect();
    ui::progress(format_args!(
        "{}; fingerprints {:.0} ms, registry checks {:.0} ms; {} to copy; {} to build",
        ui::count(images.len(), "image", "images"),
        t_fp.as_secs_f64() * 1e3,
        t_check.as_secs_f64() * 1e3,
        to_copy.len(),
        to_build.len()
    ));
    // The signing key, if one is configured, is opened before anything is
    // copied or pushed (a missing key must not leave unsigned images
    // behind), and only then: a run with nothing to publish needs none.
    let publishes = !to_copy.is_empty() || to_build.iter().any(|s| matches!(s.action, Action::Push { .. }));
    let signer = if publishes { crate::trust::Signer::load(ctx)? } else { None };
    // Everything a build needs is checked (and the logins made) before
    // anything is copied or built: a missing builder or a broken engine
    // leaves the registries as they were.
    let build_setup =
        if to_build.is_empty() { None } else { Some(prepare_builds(ctx, &clients, &to_build, opts, engine_checked)?) };
    // Copies first: builds pull their dependencies from the spec registry,
    // which may be one that a copy fills.
    let copies = run_copies(ctx, &clients, &to_copy);
    if let Some(r) = &report {
        on_interrupt(r, interrupted_rows(&copies));
    }
    let failed_copies: BTreeSet<&str> = copies.iter().filter(|(_, r)| r.is_err()).map(|(n, _)| n.as_str()).collect();
    let mut outcomes = BTreeMap::new();
    // Whatever is built from an image that could not be copied is not built.
    let (to_build, blocked): (Vec<&Step>, Vec<&Step>) = to_build.into_iter().partition(|s| {
        let deps = ctx.repo.resolve(std::slice::from_ref(&s.image.name)).unwrap_or_default();
        !deps.iter().any(|d| failed_copies.contains(d.name.as_str()))
    });
    for s in blocked {
        let deps = ctx.repo.resolve(std::slice::from_ref(&s.image.name)).unwrap_or_default();
        let failed: Vec<&str> = deps.iter().map(|d| d.name.as_str()).filter(|d| failed_copies.contains(d)).collect();
        let because = format!("dependency `{}` could not be copied", failed.join("`, `"));
        outcomes.insert(s.image.name.clone(), Outcome::Skipped { because });
    }
    if let (Some(setup), Some(lock)) = (&build_setup, &lock) {
        let cache = match clients.first() {
            Some(spec) => {
                super::cache::push_cache_flags(ctx, spec, &to_build, &fps, &setup.docker, setup.builder.as_ref())
            }
            None => BTreeMap::new(),
        };
        let opts = &PoolOptions { cache, ..opts.clone() };
        outcomes.extend(build_images(ctx, &fps, &to_build, &setup.docker, opts, setup.builder.as_ref(), lock)?);
    }

    let mut rows: Vec<Row> = steps
        .iter()
        .map(|s| match outcomes.get(&s.image.name) {
            Some(o) => row(ctx, s, Some(o)),
            None => final_row(s, &copies),
        })
        .collect();
    if json {
        // What the builds pushed: the registries know the digests.
        let pushed: Vec<&crate::discover::Image> = steps
            .iter()
            .filter(|s| rows.iter().any(|r| r.name == s.image.name && r.status == "pushed"))
            .map(|s| s.image)
            .collect();
        if !pushed.is_empty() {
            let now = published_status(ctx, &clients, &pushed, &fps)?;
            for r in rows.iter_mut() {
                if let Some(h) = now.get(&r.name) {
                    r.digests = digests(ctx, h);
                }
            }
        }
    }
    if let Some(signer) = &signer {
        sign_rows(ctx, &clients, signer, &fps, &mut rows);
    }
    let drifted: Vec<&str> = rows.iter().filter(|r| r.status == "drifted").map(|r| r.name.as_str()).collect();
    let ok = rows.iter().all(|r| r.error.is_none()) && (drifted.is_empty() || allow_drift);
    crate::publish::ci::write_rows(ctx, &clients, "ensure", ok, &rows);
    if !report::print(&rows, report.as_ref(), !allow_drift)? {
        return Ok(Status::Failure);
    }
    if !drifted.is_empty() && !allow_drift {
        ui::error(format_args!(
            "{} drifted (one tag, different content in different registries): run {} to point every registry at \
             one content, or pass --allow-drift to accept it",
            if drifted.len() == 1 { "1 image has".to_string() } else { format!("{} images have", drifted.len()) },
            ctx.hint(&format!("repair {}", drifted.join(" ")))
        ));
        return Ok(Status::Failure);
    }
    ui::progress(format_args!("ensure finished in {}", ui::seconds(t0.elapsed().as_secs_f64())));
    Ok(Status::Success)
}

/// Sign what the run pushed or copied, in the registries it went to (and
/// attest the provenance of what it built); a failure marks the row.
fn sign_rows(
    ctx: &Ctx,
    clients: &[Client],
    signer: &crate::trust::Signer,
    fps: &BTreeMap<String, crate::fingerprint::Fingerprinted>,
    rows: &mut [Row],
) {
    let published: Vec<crate::trust::Published<'_>> = rows
        .iter()
        .filter(|r| r.error.is_none() && matches!(r.status, "pushed" | "copied"))
        .filter_map(|r| {
            let registries =
                r.registries.iter().filter_map(|u| ctx.naming.registries.iter().position(|x| &x.url == u)).collect();
            Some(crate::trust::Published {
                image: ctx.repo.images.get(&r.name)?,
                registries,
                built: r.status == "pushed",
            })
        })
        .collect();
    let failed = crate::trust::sign_all(ctx, clients, signer, fps, &published);
    for r in rows.iter_mut() {
        if let Some(e) = failed.get(&r.name) {
            ui::error(format_args!("{}: {e}", r.name));
            r.error = Some(e.clone());
        }
    }
}

/// What the builds of a run use: docker with the run's logins, and the
/// builder.
struct BuildSetup {
    docker: Docker,
    builder: Option<Builder>,
    /// The private DOCKER_CONFIG `docker` uses; removed on drop.
    _login: Option<DockerLogin>,
}

/// Check the engine, buildx and the builder, and log in to the registries
/// the builds push to, and to the one specs point at (builds pull their
/// published dependencies from it), when they have credentials; with none,
/// the user's own docker config is used as is.
fn prepare_builds(
    ctx: &Ctx,
    clients: &[Client],
    to_build: &[&Step<'_>],
    opts: &PoolOptions,
    engine_checked: bool,
) -> Result<BuildSetup> {
    if !engine_checked {
        ctx.docker.check_engine()?;
    }
    ctx.docker.check_buildx()?;
    let mut pushed_to: BTreeSet<usize> = BTreeSet::from([0]);
    for s in to_build {
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
    let login =
        if with_creds.is_empty() { None } else { Some(DockerLogin::new(&ctx.docker, ctx.env.as_ref(), &with_creds)?) };
    let docker = ctx.docker.with_env(login.as_ref().map(DockerLogin::env).unwrap_or_default());
    let builder = crate::build::builder(ctx, &docker, opts)?;
    Ok(BuildSetup { docker, builder, _login: login })
}

/// Run the copies of a plan, with a progress line per image.
pub fn run_copies(
    ctx: &Ctx,
    clients: &[Client],
    to_copy: &[&Step<'_>],
) -> BTreeMap<String, std::result::Result<Copied, String>> {
    if to_copy.is_empty() {
        return BTreeMap::new();
    }
    ui::progress(format_args!(
        "copying {} between registries: {}",
        ui::count(to_copy.len(), "image", "images"),
        to_copy.iter().map(|s| s.image.name.as_str()).collect::<Vec<_>>().join(", ")
    ));
    let copies = {
        let _live = ui::live::start(Default::default());
        ui::live::copies_started(to_copy.len());
        // The copies run on a thread of their own, so that this one keeps
        // the status line moving.
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::scope(|s| {
            s.spawn(move || tx.send(copy_steps(ctx, clients, to_copy)));
            loop {
                match rx.recv_timeout(ui::live::TICK) {
                    Ok(copies) => break copies,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => ui::live::tick(),
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break BTreeMap::new(),
                }
            }
        })
    };
    for (name, result) in &copies {
        match result {
            Ok(c) => ui::progress(format_args!(
                "{name}: copied {} ({} blob(s) streamed, {} mounted, {} already there)",
                show_bytes(c.bytes),
                c.streamed,
                c.mounted,
                c.present
            )),
            Err(e) => ui::progress(format_args!("{name}: copy FAILED: {}", e.lines().next().unwrap_or(""))),
        }
    }
    copies
}

/// Warn about tags that name different content in different registries.
fn warn_drift(ctx: &Ctx, published: &BTreeMap<String, Held>) {
    for (name, held) in published {
        let drifted = plan::drifted(held);
        if drifted.is_empty() {
            continue;
        }
        ui::warn(format_args!(
            "{name}: its tag names different content in {} than in {}; {} re-points it (ensure never overwrites \
             a tag)",
            drifted.iter().map(|r| ctx.naming.registries[*r].url.as_str()).collect::<Vec<_>>().join(", "),
            plan::source(held).map_or("", |r| ctx.naming.registries[r].url.as_str()),
            ctx.hint(&format!("repair {name}")),
        ));
    }
}

/// An image's row with what every row says (name, fingerprint, spec,
/// publish) and nothing done yet.
fn base_row(step: &Step<'_>, status: &'static str) -> Row {
    Row {
        name: step.image.name.clone(),
        fingerprint: step.fingerprint.to_string(),
        spec: step.spec.clone(),
        publish: step.image.config.publish,
        status,
        registries: vec![],
        from: None,
        bytes_copied: None,
        seconds: 0.0,
        error: None,
        replaced: None,
        digests: BTreeMap::new(),
    }
}

/// The digest each registry holds under a tag, by registry url.
pub fn digests(ctx: &Ctx, held: &Held) -> BTreeMap<String, String> {
    held.iter().enumerate().filter_map(|(r, d)| Some((ctx.naming.registries.get(r)?.url.clone(), d.clone()?))).collect()
}

/// `row` with the digests the registries hold at the end: `held` before
/// the run, and a successful copy's digest where it copied to.
pub fn with_digests(
    ctx: &Ctx,
    row: Row,
    held: Option<&Held>,
    copied: Option<&std::result::Result<Copied, String>>,
) -> Row {
    let mut d = held.map(|h| digests(ctx, h)).unwrap_or_default();
    if let Some(Ok(c)) = copied {
        for url in &row.registries {
            d.insert(url.clone(), c.digest.clone());
        }
    }
    Row { digests: d, ..row }
}

/// A row whose work had not finished when the run was stopped.
fn interrupted(row: Row) -> Row {
    Row { status: "interrupted", seconds: 0.0, error: Some("interrupted before it finished".into()), ..row }
}

/// On a signal, print `rows` with the builds finished by then (a row's
/// flag: it is a build that pushes).
fn on_interrupt(report: &Report, rows: Vec<(Row, bool)>) {
    let report = report.clone();
    crate::report::on_interrupt(move |built| {
        let rows: Vec<Row> = rows
            .iter()
            .map(|(r, pushed)| match built.get(&r.name) {
                Some(b) => r.clone().with_build(b, *pushed),
                None => r.clone(),
            })
            .collect();
        report.render(&rows, RunResult::Interrupted)
    });
}

/// The row of a published image whose tag names different content in
/// some registries (`registries`) than in the reference one (`from`).
fn drifted_row(ctx: &Ctx, step: &Step<'_>, held: &Held) -> Row {
    let url = |r: usize| ctx.naming.registries[r].url.clone();
    Row {
        registries: plan::drifted(held).into_iter().map(url).collect(),
        from: plan::source(held).map(url),
        ..base_row(step, "drifted")
    }
}

/// The row of an image that was copied (`status` copied or repaired).
pub fn copy_row(ctx: &Ctx, step: &Step<'_>, status: &'static str, copied: &std::result::Result<Copied, String>) -> Row {
    let Action::Copy { from, to } = &step.action else { unreachable!("only copy steps are copied") };
    let url = |r: &usize| ctx.naming.registries[*r].url.clone();
    let (status, error, bytes, seconds) = match copied {
        Ok(c) => (status, None, Some(c.bytes), c.took.as_secs_f64()),
        Err(e) => ("failed", Some(e.clone()), None, 0.0),
    };
    Row {
        registries: to.iter().map(url).collect(),
        from: Some(url(from)),
        bytes_copied: bytes,
        seconds,
        error,
        ..base_row(step, status)
    }
}

/// The row of an image that was not copied.
pub fn row(ctx: &Ctx, step: &Step<'_>, outcome: Option<&Outcome<usize>>) -> Row {
    let status = match (&step.action, outcome) {
        (Action::Published, _) => "published",
        (Action::Present, _) => "present",
        (Action::Unpublished, _) => "unpublished",
        _ => "failed",
    };
    let pushed = matches!(step.action, Action::Push { .. });
    let registries = match &step.action {
        Action::Push { registries } => registries.iter().map(|r| ctx.naming.registries[*r].url.clone()).collect(),
        _ => vec![],
    };
    let row = Row { registries, ..base_row(step, status) };
    match (status, outcome) {
        ("failed", Some(o)) => row.with_build(&crate::report::Built::of(o), pushed),
        ("failed", None) => Row { error: Some("not run".into()), ..row },
        _ => row,
    }
}
