//! Building images: `build`, `acquire` and `run`, and the build engine that
//! `ensure` shares: pre-images in one batch, then one `docker buildx build`
//! per image on the worker pool, dependencies first.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::docker::{self, BuildError, Output};
use crate::fingerprint::{base32, Fingerprinted};
use crate::pool::{self, Event, JobSpec, Outcome};
use crate::repo::Image;
use crate::Ctx;

/// How the pool runs.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    pub jobs: usize,
    /// How long a build may run, and how long a job may wait for its
    /// dependencies, before it gives up.
    pub timeout: Duration,
}

/// One image build request.
pub struct BuildRequest<'a> {
    pub image: &'a Image,
    pub tags: Vec<String>,
    pub output: Output,
    /// 1, or up to 3 for pushes (retryable failures only).
    pub attempts: usize,
}

/// Build `requests` (dependencies first; dependencies that are not
/// requested must already be available). `docker_env` is
/// added to every docker invocation (e.g. a private DOCKER_CONFIG). Returns
/// each image's outcome; build failures are outcomes, not errors.
pub fn build_images(
    ctx: &Ctx,
    fps: &BTreeMap<String, Fingerprinted>,
    requests: &[BuildRequest<'_>],
    docker_env: &[(String, String)],
    opts: &PoolOptions,
) -> Result<BTreeMap<String, Outcome<usize>>> {
    if requests.is_empty() {
        return Ok(BTreeMap::new());
    }
    let log_dir = docker::log_dir(ctx.repo.root())?;
    let _lock = lock_repository(&log_dir)?;
    let images: Vec<&Image> = requests.iter().map(|r| r.image).collect();
    eprintln!("mzbuild: preparing {} image(s): {}", images.len(), names(&images));
    let pre_failed = crate::preimage::run_all(&ctx.repo, &images, &ctx.settings, &log_dir)?;

    let spec_of = |name: &str| ctx.naming.spec(name, &base32(&fps[name].fingerprint));
    let by_name: BTreeMap<&str, &BuildRequest> = requests.iter().map(|r| (r.image.name.as_str(), r)).collect();
    let jobs: Vec<JobSpec> =
        requests.iter().map(|r| JobSpec { name: r.image.name.clone(), deps: r.image.depends_on.clone() }).collect();
    let work = |name: &str| -> std::result::Result<usize, String> {
        let req = by_name[name];
        if let Some(e) = pre_failed.get(name) {
            return Err(format!("pre-image failed: {e}"));
        }
        let log = log_dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        let dockerfile = crate::dockerfile::rewrite(&req.image.dockerfile, &spec_of);
        let context = ctx.repo.root().join(&req.image.dir);
        let args = docker::buildx_args(&context, &req.tags, &req.image.config.build_args, &ctx.settings, req.output);
        let attempts = req.attempts.max(1);
        let mut attempt = 1;
        loop {
            let r =
                docker::run_logged(&args, &dockerfile, docker_env, &log, opts.timeout).map_err(|e| format!("{e:#}"))?;
            match r {
                Ok(()) => return Ok(attempt),
                Err(BuildError::Failed { retryable: true, .. }) if attempt < attempts => {
                    // Backoff: 2s, 4s, ... (registry hiccups, rate limits).
                    std::thread::sleep(Duration::from_secs(2u64.pow(attempt as u32)));
                    attempt += 1;
                }
                Err(e) => {
                    let retry_note =
                        if attempt > 1 { format!(" (attempt {attempt} of {attempts})") } else { String::new() };
                    return Err(format!(
                        "{}{retry_note}; last lines of {}:\n{}",
                        docker::err_to_anyhow(e),
                        log.display(),
                        docker::tail(&log, 15)
                    ));
                }
            }
        }
    };
    let outcomes = pool::run(&jobs, opts.jobs, opts.timeout, &work, |ev| match ev {
        Event::Started(n) => {
            let verb = if by_name[n].output == Output::Push { "building and pushing" } else { "building" };
            eprintln!("mzbuild: {verb} {n} (log: {})", log_dir.join(format!("{n}.log")).display())
        }
        // One line here; the failures' log tails come in the final summary.
        Event::Finished(n, o) => eprintln!("mzbuild: {n}: {}", describe_outcome(o).lines().next().unwrap_or("")),
    });
    Ok(outcomes)
}

/// One building run per repository at a time: runs share the image
/// directories (pre-images clean and fill them) and the logs. Held until
/// the returned file is dropped.
fn lock_repository(log_dir: &std::path::Path) -> Result<std::fs::File> {
    let path = log_dir.join("..").join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!("mzbuild: another mzbuild run is building in this repository; waiting for it to finish");
            file.lock().with_context(|| format!("locking {}", path.display()))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(anyhow::Error::new(e).context(format!("locking {}", path.display())))
        }
    }
    Ok(file)
}

pub fn describe_outcome(o: &Outcome<usize>) -> String {
    match o {
        Outcome::Done { value: 1, took } => format!("done in {:.1}s", took.as_secs_f64()),
        Outcome::Done { value, took } => format!("done in {:.1}s after {value} attempts", took.as_secs_f64()),
        Outcome::Failed { error, .. } => format!("FAILED: {error}"),
        Outcome::Skipped { because } => format!("skipped: {because}"),
        Outcome::TimedOut { waiting_for } => format!("gave up waiting for {}", waiting_for.join(", ")),
    }
}

fn names(images: &[&Image]) -> String {
    images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
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
/// into the local engine. Never pushes.
pub fn build(ctx: &Ctx, targets: &[String], force: bool, opts: &PoolOptions) -> Result<ExitCode> {
    docker::check_engine()?;
    docker::check_buildx()?;
    let images = ctx.repo.resolve(targets)?;
    let fps = crate::fingerprint::fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
    let local = docker::local_images()?;
    let requests: Vec<BuildRequest> = images
        .iter()
        .filter(|i| {
            let spec = ctx.naming.spec(&i.name, &base32(&fps[&i.name].fingerprint));
            (force && targets.contains(&i.name)) || !local.contains(&spec)
        })
        .map(|i| BuildRequest {
            image: i,
            tags: vec![ctx.naming.spec(&i.name, &base32(&fps[&i.name].fingerprint))],
            output: Output::Load,
            attempts: 1,
        })
        .collect();
    for i in &images {
        if !requests.iter().any(|r| r.image.name == i.name) {
            eprintln!(
                "mzbuild: {}: already built ({})",
                i.name,
                ctx.naming.spec(&i.name, &base32(&fps[&i.name].fingerprint))
            );
        }
    }
    let outcomes = build_images(ctx, &fps, &requests, &[], opts)?;
    fail_on_errors(&outcomes)?;
    for t in targets {
        println!("{}", ctx.naming.spec(t, &base32(&fps[t].fingerprint)));
    }
    Ok(ExitCode::SUCCESS)
}

/// `acquire IMAGE...`: make the images available locally: keep what is
/// there, pull what is published, build the rest. Never pushes.
pub fn acquire(ctx: &Ctx, targets: &[String], opts: &PoolOptions) -> Result<BTreeMap<String, Fingerprinted>> {
    docker::check_engine()?;
    let images = ctx.repo.resolve(targets)?;
    let fps = crate::fingerprint::fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
    let spec = |i: &Image| ctx.naming.spec(&i.name, &base32(&fps[&i.name].fingerprint));
    let local = docker::local_images()?;
    let missing: Vec<&Image> = images.iter().copied().filter(|i| !local.contains(&spec(i))).collect();
    // Pull published images in parallel; whatever cannot be pulled is built.
    let pulled: BTreeSet<String> = std::thread::scope(|s| {
        let handles: Vec<_> = missing
            .iter()
            .filter(|i| i.config.publish)
            .map(|i| {
                let reference = spec(i);
                let name = i.name.clone();
                s.spawn(move || docker::pull(&reference, &[]).then_some(name))
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok().flatten()).collect()
    });
    for n in &pulled {
        eprintln!("mzbuild: {n}: pulled");
    }
    let requests: Vec<BuildRequest> = missing
        .iter()
        .filter(|i| !pulled.contains(&i.name))
        .map(|i| BuildRequest { image: i, tags: vec![spec(i)], output: Output::Load, attempts: 1 })
        .collect();
    if !requests.is_empty() {
        docker::check_buildx()?;
    }
    let outcomes = build_images(ctx, &fps, &requests, &[], opts)?;
    fail_on_errors(&outcomes)?;
    Ok(fps)
}

/// `run IMAGE [-- ARGS]`: acquire, then `docker run --rm --init`.
pub fn run(ctx: &Ctx, image: &str, args: &[String], opts: &PoolOptions) -> Result<ExitCode> {
    let fps = acquire(ctx, &[image.to_string()], opts)?;
    let spec = ctx.naming.spec(image, &base32(&fps[image].fingerprint));
    let status = Command::new(docker::docker_program())
        .args(["run", "--rm", "--init"])
        .arg(&spec)
        .args(args)
        .stdin(Stdio::inherit())
        .status()
        .with_context(|| format!("running docker run {spec}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
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
