//! `ensure` (the CI entry point) and `check`: publish exactly what is
//! missing, to every registry, and nothing else.
//!
//! ensure: verify every registry's credentials (a wrong token fails before
//! anything is built) -> ask every registry, in parallel, which images it
//! already has -> log in once per registry into a private, temporary
//! DOCKER_CONFIG (token on stdin) -> run the pre-images of the missing images
//! in one batch -> build them on the worker pool, each with one `docker
//! buildx build --push` tagged for the registries that lack it (retried on
//! registry/network failures) -> summary.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::build::{build_images, describe_outcome, BuildRequest, PoolOptions};
use crate::docker::{self, Output};
use crate::fingerprint::{base32, fingerprint_all};
use crate::pool::Outcome;
use crate::registry::Registry;
use crate::registry_api::{credentials, Client, Credentials};
use crate::repo::Image;
use crate::settings::ProcessEnv;
use crate::Ctx;

/// Which registries (by index into `Naming::registries`) lack each image.
pub type Missing = BTreeMap<String, Vec<usize>>;

/// Ask every registry about every publishable image, in parallel.
pub fn published_status(
    ctx: &Ctx,
    clients: &[Client],
    images: &[&Image],
    fps: &BTreeMap<String, crate::fingerprint::Fingerprinted>,
) -> Result<Missing> {
    let mut tasks: Vec<(String, usize, String, String)> = Vec::new();
    for i in images.iter().filter(|i| i.config.publish) {
        let fp = base32(&fps[&i.name].fingerprint);
        for (r, c) in clients.iter().enumerate() {
            tasks.push((
                i.name.clone(),
                r,
                c.registry.repository(&ctx.naming.prefix, &i.name),
                format!("mzbuild-{fp}"),
            ));
        }
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    for t in &tasks {
        tx.send(t).unwrap();
    }
    drop(tx);
    let threads = tasks.len().clamp(1, 16);
    let results: Vec<Result<Vec<(String, usize, bool)>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                s.spawn(move || -> Result<Vec<(String, usize, bool)>> {
                    let mut out = vec![];
                    for (name, r, repo, tag) in rx {
                        let exists = clients[*r].manifest_exists(repo, tag)?;
                        out.push((name.clone(), *r, exists));
                    }
                    Ok(out)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("registry check thread panicked")).collect()
    });
    let mut missing: Missing = BTreeMap::new();
    for r in results {
        for (name, reg, exists) in r? {
            if !exists {
                missing.entry(name).or_default().push(reg);
            }
        }
    }
    for v in missing.values_mut() {
        v.sort_unstable();
    }
    Ok(missing)
}

fn clients(ctx: &Ctx, require_credentials: bool) -> Result<Vec<Client>> {
    let mut errors = vec![];
    let mut out = vec![];
    for reg in &ctx.naming.registries {
        match credentials(reg, &ProcessEnv, require_credentials) {
            Ok(c) => out.push(Client::new(reg, c)),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(out)
}

/// A private DOCKER_CONFIG with one login per registry, removed on drop (and
/// on Ctrl-C / SIGTERM). The user's ~/.docker is never touched.
struct DockerLogin {
    dir: tempfile::TempDir,
}

impl Drop for DockerLogin {
    fn drop(&mut self) {
        crate::cleanup::remove_dir(&self.dir.path().to_path_buf());
    }
}

impl DockerLogin {
    fn new(registries: &[(&Registry, &Credentials)]) -> Result<DockerLogin> {
        let dir = tempfile::Builder::new()
            .prefix("mzbuild-docker-config-")
            .tempdir()
            .context("creating a private DOCKER_CONFIG")?;
        crate::cleanup::add_dir(dir.path().to_path_buf());
        seed_config(dir.path(), registries)?;
        for (reg, creds) in registries {
            let mut child = Command::new(docker::docker_program())
                .args(["login", reg.host(), "--username", &creds.username, "--password-stdin"])
                .env("DOCKER_CONFIG", dir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("running docker login")?;
            child.stdin.take().unwrap().write_all(creds.password.as_bytes())?;
            let out = child.wait_with_output()?;
            if !out.status.success() {
                let msg = String::from_utf8_lossy(&out.stderr).replace(&creds.password, "<redacted>");
                bail!(
                    "docker login to {} as `{}` (token from {}) failed: {}",
                    reg.host(),
                    creds.username,
                    creds.source,
                    msg.trim()
                );
            }
        }
        Ok(DockerLogin { dir })
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("DOCKER_CONFIG".into(), self.dir.path().display().to_string())];
        // Keep the user's buildx builders (and the selected one).
        if std::env::var_os("BUILDX_CONFIG").is_none() {
            if let Some(buildx) = user_docker_config_dir().map(|d| d.join("buildx")).filter(|d| d.is_dir()) {
                env.push(("BUILDX_CONFIG".into(), buildx.display().to_string()));
            }
        }
        env
    }
}

/// The user's docker config directory: $DOCKER_CONFIG, else ~/.docker.
fn user_docker_config_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".docker")))
}

/// Start the private config from the user's `config.json`, so builds keep
/// the user's other logins (private base images, Docker Hub pulls) and
/// settings; but without a credential store, and without credential helpers
/// for the registries we log in to, so our logins land in this private file
/// only, never in the user's keychain or helper.
fn seed_config(dir: &std::path::Path, registries: &[(&Registry, &Credentials)]) -> Result<()> {
    let Some(user) = user_docker_config_dir() else { return Ok(()) };
    let Ok(text) = std::fs::read_to_string(user.join("config.json")) else { return Ok(()) };
    let Ok(mut config) = serde_json::from_str::<serde_json::Value>(&text) else { return Ok(()) };
    if let Some(obj) = config.as_object_mut() {
        obj.remove("credsStore");
        if let Some(helpers) = obj.get_mut("credHelpers").and_then(|h| h.as_object_mut()) {
            for (reg, _) in registries {
                helpers.remove(reg.host());
            }
        }
        if let Some(auths) = obj.get_mut("auths").and_then(|a| a.as_object_mut()) {
            for (reg, _) in registries {
                auths.remove(reg.host());
            }
        }
    }
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[derive(Serialize)]
struct Row {
    name: String,
    fingerprint: String,
    spec: String,
    publish: bool,
    /// published | pushed | built | present | failed | skipped | timed-out
    status: &'static str,
    registries: Vec<String>,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn ensure(ctx: &Ctx, targets: &[String], opts: &PoolOptions, json: bool) -> Result<ExitCode> {
    let t0 = Instant::now();
    let images = ctx.repo.resolve(targets)?;
    let fps = fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
    let t_fp = t0.elapsed();
    let publishable = images.iter().any(|i| i.config.publish);
    let clients = clients(ctx, publishable)?;
    // Credentials first: a wrong token must fail before any build.
    if publishable {
        let probe = images.iter().find(|i| i.config.publish).unwrap();
        let errors: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = clients
                .iter()
                .map(|c| s.spawn(move || c.verify_credentials(&c.registry.repository(&ctx.naming.prefix, &probe.name))))
                .collect();
            hs.into_iter().filter_map(|h| h.join().unwrap().err().map(|e| format!("{e:#}"))).collect()
        });
        if !errors.is_empty() {
            bail!("{}\nnothing was built or pushed", errors.join("\n"));
        }
    }
    let missing = published_status(ctx, &clients, &images, &fps)?;
    let t_check = t0.elapsed() - t_fp;
    let spec = |n: &str| ctx.naming.spec(n, &base32(&fps[n].fingerprint));
    let mut engine_checked = false;
    let local: BTreeSet<String> = if images.iter().any(|i| !i.config.publish) {
        docker::check_engine()?;
        engine_checked = true;
        docker::local_images()?
    } else {
        BTreeSet::new()
    };
    let mut requests = vec![];
    for i in &images {
        if i.config.publish {
            if let Some(regs) = missing.get(&i.name) {
                let tags = regs
                    .iter()
                    .map(|r| {
                        ctx.naming.registries[*r].tag(&ctx.naming.prefix, &i.name, &base32(&fps[&i.name].fingerprint))
                    })
                    .collect();
                requests.push(BuildRequest { image: i, tags, output: Output::Push, attempts: 3 });
            }
        } else if !local.contains(&spec(&i.name)) {
            requests.push(BuildRequest { image: i, tags: vec![spec(&i.name)], output: Output::Load, attempts: 1 });
        }
    }
    eprintln!(
        "mzbuild: {} image(s); fingerprints {:.0} ms, registry checks {:.0} ms; {} to build",
        images.len(),
        t_fp.as_secs_f64() * 1e3,
        t_check.as_secs_f64() * 1e3,
        requests.len()
    );
    let mut outcomes = BTreeMap::new();
    let mut login = None;
    if !requests.is_empty() {
        if !engine_checked {
            docker::check_engine()?;
        }
        docker::check_buildx()?;
        // Log in to the registries this run pushes to, and to the one specs
        // point at (builds pull their published dependencies from it), when
        // they have credentials; with none, the user's own docker config is
        // used as is.
        let mut pushed_to: BTreeSet<usize> = missing.values().flatten().copied().collect();
        pushed_to.insert(0);
        let with_creds: Vec<(&Registry, &Credentials)> = clients
            .iter()
            .enumerate()
            .filter(|(i, _)| pushed_to.contains(i))
            .filter_map(|(_, c)| c.credentials().map(|cr| (&c.registry, cr)))
            .collect();
        if !with_creds.is_empty() {
            login = Some(DockerLogin::new(&with_creds)?);
        }
        let env = login.as_ref().map(DockerLogin::env).unwrap_or_default();
        outcomes = build_images(ctx, &fps, &requests, &env, opts)?;
    }
    drop(login);

    let mut rows = vec![];
    for i in &images {
        let fp = base32(&fps[&i.name].fingerprint);
        let req = requests.iter().find(|r| r.image.name == i.name);
        let (status, seconds, error) = match (req, outcomes.get(&i.name)) {
            (None, _) => (if i.config.publish { "published" } else { "present" }, 0.0, None),
            (Some(r), Some(Outcome::Done { took, .. })) => {
                (if r.output == Output::Push { "pushed" } else { "built" }, took.as_secs_f64(), None)
            }
            (Some(_), Some(o @ Outcome::Failed { took, .. })) => {
                ("failed", took.as_secs_f64(), Some(describe_outcome(o)))
            }
            (Some(_), Some(o @ Outcome::Skipped { .. })) => ("skipped", 0.0, Some(describe_outcome(o))),
            (Some(_), Some(o @ Outcome::TimedOut { .. })) => ("timed-out", 0.0, Some(describe_outcome(o))),
            (Some(_), None) => ("failed", 0.0, Some("not run".into())),
        };
        let registries = match req {
            Some(r) if r.output == Output::Push => {
                missing[&i.name].iter().map(|r| ctx.naming.registries[*r].url.clone()).collect()
            }
            _ => vec![],
        };
        rows.push(Row {
            name: i.name.clone(),
            spec: spec(&i.name),
            fingerprint: fp,
            publish: i.config.publish,
            status,
            registries,
            seconds,
            error,
        });
    }
    print_summary(&rows, json)?;
    let failed: Vec<&Row> = rows.iter().filter(|r| r.error.is_some()).collect();
    if !failed.is_empty() {
        eprintln!("error: {} of {} image(s) did not complete:", failed.len(), rows.len());
        for r in failed {
            eprintln!("  {}: {}", r.name, r.error.as_deref().unwrap_or(""));
        }
        return Ok(ExitCode::FAILURE);
    }
    eprintln!("mzbuild: ensure finished in {:.1}s", t0.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn print_summary(rows: &[Row], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(5).max(5);
    eprintln!("{:w$}  {:10}  {:>7}  detail", "image", "result", "time");
    for r in rows {
        let detail = match (r.status, &r.error) {
            (_, Some(e)) => e.lines().next().unwrap_or("").to_string(),
            ("pushed", None) => format!("to {}", r.registries.join(", ")),
            ("published", None) => "already in every registry".into(),
            ("present", None) => "not published (publish: false); already built locally".into(),
            ("built", None) => "built locally (publish: false)".into(),
            _ => String::new(),
        };
        let time = if r.seconds > 0.0 { format!("{:.1}s", r.seconds) } else { "-".into() };
        eprintln!("{:w$}  {:10}  {:>7}  {detail}", r.name, r.status, time);
    }
    Ok(())
}

/// `check`: exit 0 iff every publishable image is in every registry.
pub fn check(ctx: &Ctx, targets: &[String]) -> Result<ExitCode> {
    let images = ctx.repo.resolve(targets)?;
    let fps = fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
    let clients = clients(ctx, false)?;
    let missing = published_status(ctx, &clients, &images, &fps)?;
    let n_pub = images.iter().filter(|i| i.config.publish).count();
    if missing.is_empty() {
        eprintln!("mzbuild: all {n_pub} publishable image(s) are in every registry");
        return Ok(ExitCode::SUCCESS);
    }
    for (name, regs) in &missing {
        for r in regs {
            println!("{}", ctx.naming.registries[*r].tag(&ctx.naming.prefix, name, &base32(&fps[name].fingerprint)));
        }
    }
    eprintln!(
        "error: {} of {n_pub} publishable image(s) are missing from at least one registry (listed on stdout); \
         run `cargo xtask mzbuild ensure` to publish them",
        missing.len()
    );
    Ok(ExitCode::FAILURE)
}
