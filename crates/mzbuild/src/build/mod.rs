//! Building images: the build engine that `build`, `acquire` and `ensure`
//! share (pre-images in one batch, then one `docker buildx build` per image
//! on the [`scheduler`], dependencies first, through [`crate::docker`]). The
//! local commands `build`, `acquire` and `run` are in
//! [`crate::commands::build`].

pub mod context;
pub mod dockerignore;
pub mod dry_run;
pub mod normalise;
pub mod scheduler;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::ctx::Ctx;
use crate::docker::{self, BuildError, Builder, ContextSource, Docker, Feed, Output, Reproducible};
use crate::fingerprint::Fingerprinted;
use crate::plan::{Action, Step};
use crate::preimage::{self, BuildEnv};
use crate::ui;
use scheduler::{Event, JobSpec, Outcome};

/// The label that carries an image's fingerprint. No revision or source
/// label: one fingerprint is built at many commits (and in forks), and a
/// label that differs between them would give one tag two digests (see
/// docs/reproducible.md).
pub const FINGERPRINT_LABEL: &str = "dev.mzbuild.fingerprint";

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
    /// Each image's shared-cache flags (see [`docker::cache`]); none for
    /// an image not listed.
    pub cache: BTreeMap<String, docker::cache::CacheFlags>,
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
    // One fixed time for every build (see `context::SOURCE_DATE_EPOCH`):
    // buildx 0.13 passes it on as the build argument of that name.
    let mut env = run_dir.env();
    env.push(("SOURCE_DATE_EPOCH".into(), context::SOURCE_DATE_EPOCH.to_string()));
    let docker = &docker.with_env(env);
    let features = docker.builder_features(builder);
    let normalise = features.docker_driver && !features.rewrite_timestamp;
    let images: Vec<_> = steps.iter().map(|s| s.image).collect();
    ui::progress(format_args!(
        "preparing {} image(s): {}",
        images.len(),
        images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
    ));
    let hidden = ctx.naming.secret_vars();
    let benv = BuildEnv { env: ctx.env.as_ref(), hidden: &hidden, log_dir: &log_dir };
    let _live = ui::live::start(crate::cachefile::history::History::load(ctx.repo.root()).estimates());
    let pre = preimage::run_all(&ctx.repo, &images, &ctx.settings, &benv);
    let pre_failed = &pre.failed;

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
        let image = step.image;
        let written = pre.written.get(name).map(Vec::as_slice).unwrap_or_default();
        let context = context::BuildContext::new(
            ctx.repo.root(),
            &image.dir,
            name,
            ctx.repo.tree.under(&image.dir),
            written,
            dockerfile,
        )
        .map_err(|e| format!("{e:#}"))?;
        let feed = |out: &mut dyn std::io::Write| context.write_tar(out);
        let labels = [(FINGERPRINT_LABEL.to_string(), step.fingerprint.to_string())];
        let (output, attempts) = match step.action {
            Action::Push { .. } => (Output::Push, 3),
            _ => (Output::Load, 1),
        };
        // On the docker driver (which ignores rewrite-timestamp) the image
        // is built into the engine, normalised there, then pushed.
        let normalising = normalise && builder.is_none();
        let tags = step.tags(&ctx.naming);
        let present = if normalising && output == Output::Push {
            docker.local_images().map_err(|e| format!("{e:#}"))?
        } else {
            Default::default()
        };
        let mut args = docker::buildx_args(
            ContextSource::Tar { dockerfile: context::DOCKERFILE },
            &tags,
            &step.image.config.build_args,
            &ctx.settings,
            if normalising { Output::Load } else { output },
            builder,
            Reproducible { features, labels: &labels },
        );
        if let Some(cache) = opts.cache.get(name) {
            args.extend(cache.args());
        }
        let mut attempt = retrying("docker buildx build", attempts, progress, &log, || {
            docker.run_logged(&args, Feed::Stream(&feed), &log, opts.timeout).map_err(|e| format!("{e:#}"))
        })?;
        if normalising {
            normalise::normalise(docker, &tags, context::SOURCE_DATE_EPOCH, &log, opts.timeout)
                .map_err(|e| format!("{e:#}; last lines of {}:\n{}", log.display(), docker::tail(&log, 15)))?;
            if output == Output::Push {
                for t in &tags {
                    let push = ["push".to_string(), t.clone()];
                    let n = retrying("docker push", attempts, progress, &log, || {
                        docker.run_logged(&push, Feed::Bytes(b""), &log, opts.timeout).map_err(|e| format!("{e:#}"))
                    })?;
                    // The attempts that count are the push's.
                    attempt = attempt.max(n);
                }
                // As after `buildx build --push`, the pushed tags are not
                // left in the engine (unless they were there before).
                let added: Vec<&str> = tags.iter().filter(|t| !present.contains(*t)).map(String::as_str).collect();
                if !added.is_empty() {
                    let mut rmi = vec!["rmi"];
                    rmi.extend(added);
                    let _ = docker
                        .command(&rmi)
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status();
                }
            }
        }
        if let Some(beside) = opts.cache.get(name).and_then(|c| c.beside()) {
            let cache_log = log_dir.join(format!("{name}.cache.log"));
            let _ = std::fs::remove_file(&cache_log);
            let mut cache_args = docker::buildx_args(
                ContextSource::Tar { dockerfile: context::DOCKERFILE },
                &[beside.to_string()],
                &step.image.config.build_args,
                &ctx.settings,
                Output::Push,
                builder,
                Reproducible { features, labels: &labels },
            );
            cache_args.extend(docker::cache::BESIDE_ARGS.iter().map(|s| s.to_string()));
            push_cache_beside(docker, &cache_args, Feed::Stream(&feed), &cache_log, opts.timeout);
        }
        Ok(attempt)
    };
    let names: Vec<&str> = steps.iter().map(|s| s.image.name.as_str()).collect();
    ui::live::images(&names, opts.jobs);
    let outcomes = scheduler::run(&jobs, opts.jobs, opts.timeout, &work, |ev| match ev {
        Event::Started(n) => {
            let verb =
                if matches!(by_name[n].action, Action::Push { .. }) { "building and pushing" } else { "building" };
            let log = log_dir.join(format!("{n}.log"));
            ui::progress(format_args!("{verb} {n} (log: {})", log.display()));
            // The last run's log goes before the status line reads it (the
            // worker gets the job after this).
            let _ = std::fs::remove_file(&log);
            ui::live::image_started(n, &log);
        }
        // One line here; the failures' log tails come in the final summary.
        Event::Finished(n, o) => {
            ui::live::image_finished(n);
            record_finished(n, o);
            ui::progress(format_args!("{n}: {}", describe_outcome(o).lines().next().unwrap_or("")))
        }
        Event::Tick => ui::live::tick(),
    });
    crate::cachefile::history::History::update(ctx.repo.root(), |h| {
        for (n, o) in &outcomes {
            if let Outcome::Done { took, .. } = o {
                h.images.insert(n.clone(), took.as_secs_f64());
            }
        }
    });
    Ok(outcomes)
}

/// Run `attempt` up to `attempts` times while it fails in a way worth
/// another try (see [`docker::looks_retryable`]), with a backoff; the
/// number of the attempt that succeeded, or the error with `log`'s tail.
fn retrying(
    what: &str,
    attempts: usize,
    progress: &scheduler::Progress<'_>,
    log: &std::path::Path,
    mut attempt: impl FnMut() -> std::result::Result<std::result::Result<(), BuildError>, String>,
) -> std::result::Result<usize, String> {
    let mut n = 1;
    loop {
        match attempt()? {
            Ok(()) => return Ok(n),
            Err(BuildError::Failed { retryable: true, .. }) if n < attempts => {
                // A retry is progress: dependants keep waiting for it
                // (each attempt is bounded by the timeout).
                progress.report();
                // Backoff: 2s, 4s, ... (registry hiccups, rate limits).
                std::thread::sleep(Duration::from_secs(2u64.pow(n as u32)));
                n += 1;
                progress.report();
            }
            Err(e) => {
                let retry_note = if n > 1 { format!(" (attempt {n} of {attempts})") } else { String::new() };
                let e = match e {
                    BuildError::Failed { summary, .. } => format!("{what} failed ({summary})"),
                    e => e.to_string(),
                };
                return Err(format!("{e}{retry_note}; last lines of {}:\n{}", log.display(), docker::tail(log, 15)));
            }
        }
    }
}

/// Push the image just built again, with its inline cache, to `args`'
/// one tag beside it (see [`docker::cache`]): every step is cached, so it
/// costs the push alone. A failure is a note, never the build's.
fn push_cache_beside(docker: &Docker, args: &[String], feed: Feed<'_>, log: &std::path::Path, timeout: Duration) {
    let failed = match docker.run_logged(args, feed, log, timeout) {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("{e:#}"),
    };
    ui::note(format_args!(
        "cache: pushing the layer cache beside the image failed ({failed}; see {}); the image is published",
        log.display()
    ));
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
/// A finished build, as a row needs it.
#[derive(Clone, Debug)]
pub struct Built {
    /// `done`, `failed`, `skipped`, `timed-out`, `interrupted`.
    pub status: &'static str,
    pub seconds: f64,
    pub error: Option<String>,
}

impl Built {
    pub fn of(o: &Outcome<usize>) -> Built {
        let error = (!o.is_success()).then(|| describe_outcome(o));
        let (status, took) = match o {
            Outcome::Failed { .. } | Outcome::Skipped { .. } if crate::process::interrupted() => ("interrupted", None),
            Outcome::Done { took, .. } => ("done", Some(took)),
            Outcome::Failed { took, .. } => ("failed", Some(took)),
            Outcome::Skipped { .. } => ("skipped", None),
            Outcome::TimedOut { .. } => ("timed-out", None),
        };
        Built { status, seconds: took.map_or(0.0, |t| t.as_secs_f64()), error }
    }
}

/// The builds finished in this run, for the document of an interrupted
/// `--json` run (see `report`).
static FINISHED: std::sync::Mutex<BTreeMap<String, Built>> = std::sync::Mutex::new(BTreeMap::new());

fn record_finished(name: &str, outcome: &Outcome<usize>) {
    FINISHED.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), Built::of(outcome));
}

/// The builds finished so far in this run.
pub fn finished() -> BTreeMap<String, Built> {
    FINISHED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
