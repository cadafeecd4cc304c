//! Building images: the build engine that `build`, `acquire` and `ensure`
//! share (pre-images in one batch, then one `docker buildx build` per image
//! on the [`scheduler`], dependencies first, through [`docker`]), and the
//! local commands `build`, `acquire` and `run`.

pub mod docker;
pub mod scheduler;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::fingerprint::Fingerprinted;
use crate::plan::{self, Action, Facts, Goal, Step};
use crate::preimage::{self, BuildEnv};
use crate::publish::login::DockerLogin;
use crate::report::{self, LocalRow, Report};
use crate::{ui, Ctx, Status};
use docker::{BuildError, Builder, Docker, Output, PullError};
use scheduler::{Event, JobSpec, Outcome};

/// How the pool runs.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    pub jobs: usize,
    /// How long a build may run, and how long a job may wait for its
    /// dependencies, before it gives up.
    pub timeout: Duration,
    /// `--builder`: the buildx builder to use (else the workspace's
    /// `builders` entry for the arch, else buildx's current one).
    pub builder: Option<String>,
}

/// The builder the builds use (see [`docker::choose_builder`]), checked to
/// exist with `docker`, the handle the builds run with: call it before
/// anything is built.
pub fn builder(ctx: &Ctx, docker: &Docker, opts: &PoolOptions) -> Result<Option<Builder>> {
    match docker::choose_builder(opts.builder.as_deref(), &ctx.repo.workspace.builders, ctx.settings.arch) {
        Some((name, origin)) => Ok(Some(docker.check_builder(&name, &origin)?)),
        None => Ok(None),
    }
}

/// Build the steps that build (dependencies first; dependencies that are
/// not among them must already be available) with `docker`, on `builder`
/// (from [`builder`]). Returns each image's outcome; build failures are
/// outcomes, not errors.
pub fn build_images(
    ctx: &Ctx,
    fps: &BTreeMap<String, Fingerprinted>,
    steps: &[&Step<'_>],
    docker: &Docker,
    opts: &PoolOptions,
    builder: Option<&Builder>,
    _lock: &RepoLock,
) -> Result<BTreeMap<String, Outcome<usize>>> {
    if steps.is_empty() {
        return Ok(BTreeMap::new());
    }
    let log_dir = docker::log_dir(ctx.repo.root())?;
    let run_dir = docker::RunDir::new(ctx.env.as_ref())?;
    let docker = &docker.with_env(run_dir.env());
    let images: Vec<_> = steps.iter().map(|s| s.image).collect();
    ui::progress(format_args!(
        "preparing {} image(s): {}",
        images.len(),
        images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
    ));
    let hidden = ctx.naming.secret_vars();
    let benv = BuildEnv { env: ctx.env.as_ref(), hidden: &hidden, log_dir: &log_dir };
    let pre_failed = preimage::run_all(&ctx.repo, &images, &ctx.settings, &benv);

    let spec_of = |name: &str| ctx.naming.spec(name, &fps[name].fingerprint);
    let by_name: BTreeMap<&str, &Step> = steps.iter().map(|s| (s.image.name.as_str(), *s)).collect();
    let jobs: Vec<JobSpec> =
        steps.iter().map(|s| JobSpec { name: s.image.name.clone(), deps: s.image.depends_on.clone() }).collect();
    let work = |name: &str, progress: &scheduler::Progress<'_>| -> std::result::Result<usize, String> {
        let step = by_name[name];
        if let Some(e) = pre_failed.get(name) {
            return Err(format!("pre-image failed: {e}"));
        }
        let log = log_dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        let dockerfile = crate::discover::dockerfile::rewrite(&step.image.dockerfile, &spec_of);
        let context = ctx.repo.root().join(&step.image.dir);
        let (output, attempts) = match step.action {
            Action::Push { .. } => (Output::Push, 3),
            _ => (Output::Load, 1),
        };
        let args = docker::buildx_args(
            &context,
            &step.tags(&ctx.naming),
            &step.image.config.build_args,
            &ctx.settings,
            output,
            builder,
        );
        let mut attempt = 1;
        loop {
            let r = docker.run_logged(&args, &dockerfile, &log, opts.timeout).map_err(|e| format!("{e:#}"))?;
            match r {
                Ok(()) => return Ok(attempt),
                Err(BuildError::Failed { retryable: true, .. }) if attempt < attempts => {
                    // A retry is progress: dependants keep waiting for it
                    // (each attempt is bounded by the timeout).
                    progress.report();
                    // Backoff: 2s, 4s, ... (registry hiccups, rate limits).
                    std::thread::sleep(Duration::from_secs(2u64.pow(attempt as u32)));
                    attempt += 1;
                    progress.report();
                }
                Err(e) => {
                    let retry_note =
                        if attempt > 1 { format!(" (attempt {attempt} of {attempts})") } else { String::new() };
                    return Err(format!(
                        "{e}{retry_note}; last lines of {}:\n{}",
                        log.display(),
                        docker::tail(&log, 15)
                    ));
                }
            }
        }
    };
    let outcomes = scheduler::run(&jobs, opts.jobs, opts.timeout, &work, |ev| match ev {
        Event::Started(n) => {
            let verb =
                if matches!(by_name[n].action, Action::Push { .. }) { "building and pushing" } else { "building" };
            ui::progress(format_args!("{verb} {n} (log: {})", log_dir.join(format!("{n}.log")).display()))
        }
        // One line here; the failures' log tails come in the final summary.
        Event::Finished(n, o) => {
            crate::report::build_finished(n, o);
            ui::progress(format_args!("{n}: {}", describe_outcome(o).lines().next().unwrap_or("")))
        }
    });
    Ok(outcomes)
}

/// One building run per repository at a time: runs share the image
/// directories (pre-images clean and fill them) and the logs. Held until
/// dropped; [`build_images`] takes it as proof.
pub struct RepoLock {
    _file: std::fs::File,
    waited: bool,
}

impl RepoLock {
    /// Take the lock of the repository at `root`, waiting for the run that
    /// holds it.
    pub fn acquire(root: &std::path::Path) -> Result<RepoLock> {
        // Beside the logs, without making the log directory: nothing is
        // built yet (and maybe nothing will be).
        let dir = root.join("target").join("mzbuild");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let waited = match file.try_lock() {
            Ok(()) => false,
            Err(std::fs::TryLockError::WouldBlock) => {
                ui::progress("another mzbuild run is building in this repository; waiting for it to finish");
                file.lock().with_context(|| format!("locking {}", path.display()))?;
                true
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(anyhow::Error::new(e).context(format!("locking {}", path.display())))
            }
        };
        Ok(RepoLock { _file: file, waited })
    }

    /// Whether another run held the lock first: what it built or
    /// published is missing from the facts gathered before, so the caller
    /// looks again before building.
    pub fn waited(&self) -> bool {
        self.waited
    }
}

/// An image's outcome in words; one that failed or was skipped after an
/// interrupt (whose handler stopped the builds) is `interrupted`.
pub fn describe_outcome(o: &Outcome<usize>) -> String {
    match o {
        Outcome::Failed { .. } | Outcome::Skipped { .. } if crate::process::interrupted() => "interrupted".into(),
        Outcome::Done { value: 1, took } => format!("done in {:.1}s", took.as_secs_f64()),
        Outcome::Done { value, took } => format!("done in {:.1}s after {value} attempts", took.as_secs_f64()),
        Outcome::Failed { error, .. } => format!("FAILED: {error}"),
        Outcome::Skipped { because } => format!("skipped: {because}"),
        Outcome::TimedOut { waiting_for } => format!("gave up waiting for {}", waiting_for.join(", ")),
    }
}

/// Turn failed outcomes into one error that lists them all.
pub fn fail_on_errors(outcomes: &BTreeMap<String, Outcome<usize>>) -> Result<()> {
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|(_, o)| !o.is_success())
        .map(|(n, o)| format!("{n}: {}", describe_outcome(o)))
        .collect();
    if !failed.is_empty() {
        bail!("{} of {} image(s) did not build:\n  {}", failed.len(), outcomes.len(), failed.join("\n  "));
    }
    Ok(())
}

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
    let pulls = crate::util::par_io(&to_pull, 8, |s| docker.pull(&s.spec));
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

/// Parse `90`, `90s`, `15m`, `1h`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration (e.g. 90s, 15m, 1h)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{s}` is not a duration (e.g. 90s, 15m, 1h)")),
    };
    Ok(Duration::from_secs(secs))
}
