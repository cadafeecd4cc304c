//! Talking to Docker: a [`Docker`] handle (which program, with which extra
//! environment) for engine, buildx and builder checks with install hints,
//! local images, pulls and logins; the run's private directory for what
//! buildx writes ([`RunDir`]); the `docker buildx build` command line (a
//! pure function, snapshot-tested); and running a build with its output in a
//! per-image log, killed with its whole process group on timeout.

pub mod cache;
pub mod local_images;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::config::settings::{Arch, Settings};
use crate::env::Env;
use crate::process::{self, GroupChild, PrivateDir};

/// How to install or start Docker: this repository's `ci/stack.sh` where it
/// is there, the upstream guide elsewhere.
fn install_hint(stack_script: bool) -> &'static str {
    if stack_script {
        "`bash ci/stack.sh up` installs and starts it on Debian"
    } else {
        "see https://docs.docker.com/engine/install/"
    }
}

/// How to run `docker`: the program (`$MZ_DOCKER` if set, else `docker` on
/// PATH; tests point it at wrappers) and environment added to every
/// invocation (a private DOCKER_CONFIG holding logins).
#[derive(Clone, Debug)]
pub struct Docker {
    program: String,
    env: Vec<(String, String)>,
    /// The repository has `ci/stack.sh` (which installs and starts the
    /// engine): hints may name it.
    stack_script: bool,
}

impl Docker {
    pub fn new(env: &dyn Env) -> Docker {
        Docker {
            program: env.non_empty("MZ_DOCKER").unwrap_or_else(|| "docker".into()),
            env: vec![],
            stack_script: false,
        }
    }

    /// The same, with hints that name `ci/stack.sh` when `present`.
    pub fn with_stack_script(mut self, present: bool) -> Docker {
        self.stack_script = present;
        self
    }

    /// The same, with `env` added to every invocation.
    pub fn with_env(&self, env: Vec<(String, String)>) -> Docker {
        let mut d = self.clone();
        d.env.extend(env);
        d
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    /// `docker args...`, stdin closed, with the extra environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = process::command(&self.program);
        cmd.args(args).stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Fail unless the engine answers; say what to install or start.
    pub fn check_engine(&self) -> Result<()> {
        let docker = &self.program;
        let hint = install_hint(self.stack_script);
        match self.command(&["version", "--format", "{{.Server.Version}}"]).output() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("the docker CLI (`{docker}`) is not installed: install Docker ({hint})")
            }
            Err(e) => bail!("cannot run `{docker} version`: {e}"),
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => bail!(
                "the Docker engine is not running or not reachable ({}): start it ({hint}, or `dockerd &`), \
                 or point DOCKER_HOST at a running engine",
                last_line(&o.stderr)
            ),
        }
    }

    /// Fail unless the buildx plugin is there.
    pub fn check_buildx(&self) -> Result<()> {
        let hint = install_hint(self.stack_script);
        match self.command(&["buildx", "version"]).output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => bail!(
                "docker buildx is not installed ({}): mzbuild builds and pushes with buildx; install the buildx \
                 plugin (Debian: `apt-get install -t trixie docker-buildx`; {hint})",
                last_line(&o.stderr)
            ),
            Err(e) => bail!("cannot run `{} buildx version`: {e}", self.program),
        }
    }

    /// Check, before any build, that buildx builder `name` exists (`docker
    /// buildx inspect`); `origin` says where the name came from, for the
    /// error. A builder of the `docker` driver is a docker context's engine:
    /// buildx only builds on it from that context, so its builds run with
    /// `docker --context <its endpoint>`.
    pub fn check_builder(&self, name: &str, origin: &str) -> Result<Builder> {
        let out = self
            .command(&["buildx", "inspect", name])
            .output()
            .with_context(|| format!("running `{} buildx inspect {name}`", self.program))?;
        if !out.status.success() {
            bail!(
                "buildx builder `{name}` ({origin}) is not available: `docker buildx inspect {name}` says: {}; \
                 create it (`docker buildx create --name {name} ...`, or `docker context create {name} ...` for \
                 another engine), or pick another one; nothing was built",
                last_line(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |key: &str| {
            text.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string())).filter(|v| !v.is_empty())
        };
        let context = match field("Driver:").as_deref() {
            Some("docker") => Some(field("Endpoint:").unwrap_or_else(|| name.to_string())),
            _ => None,
        };
        Ok(Builder { name: name.to_string(), context })
    }

    /// Image references present in the local engine (`repo:tag`).
    pub fn local_images(&self) -> Result<BTreeSet<String>> {
        let out = self
            .command(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
            .context("listing local images")?;
        if !out.status.success() {
            bail!("`docker image ls` failed: {}", last_line(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
    }

    /// `docker pull REF`, quietly; when it fails, why (see [`PullError`]).
    pub fn pull(&self, reference: &str) -> std::result::Result<(), PullError> {
        let mut cmd = self.command(&["pull", "--quiet", reference]);
        cmd.stdout(Stdio::null());
        match cmd.output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(PullError::from_stderr(&o.stderr)),
            Err(e) => Err(PullError::Failed(format!("cannot run `{} pull`: {e}", self.program))),
        }
    }

    /// `docker pull REPO@DIGEST`, then tag it `reference` (`REPO:TAG`): what
    /// is pulled is exactly `digest` (the one a trust check verified),
    /// whatever the tag names by then.
    pub fn pull_pinned(&self, reference: &str, digest: &str) -> std::result::Result<(), PullError> {
        let repo = match reference.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => repo,
            _ => reference,
        };
        let pinned = format!("{repo}@{digest}");
        self.pull(&pinned)?;
        match self.command(&["tag", &pinned, reference]).output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(PullError::Failed(format!("`docker tag {pinned} {reference}`: {}", last_line(&o.stderr)))),
            Err(e) => Err(PullError::Failed(format!("cannot run `{} tag`: {e}", self.program))),
        }
    }

    /// `docker login HOST` with the password on stdin, never on a command
    /// line; errors never show the password.
    pub fn login(&self, host: &str, username: &str, password: &str) -> Result<()> {
        let mut child = self
            .command(&["login", host, "--username", username, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running docker login")?;
        // docker drops one trailing `\n`, then one `\r`: with `\r\n` added it
        // stores exactly `password` (which is already trimmed that way, see
        // `client::docker_login_trim`), whatever it ends with.
        child.stdin.take().expect("stdin is piped").write_all(format!("{password}\r\n").as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr).replace(password, "<redacted>");
            bail!("{}", msg.trim());
        }
        Ok(())
    }

    /// `docker run --rm --init SPEC ARGS...`, attached to this terminal.
    pub fn run_attached(&self, spec: &str, args: &[String]) -> Result<ExitStatus> {
        self.command(&["run", "--rm", "--init", spec])
            .args(args)
            .stdin(Stdio::inherit())
            .status()
            .with_context(|| format!("running docker run {spec}"))
    }

    /// Run `docker ARGS` with `stdin` fed to it (from a thread of its own,
    /// so that a stream as large as a build context never waits on this
    /// one), appending all output to `log`. Killed, with its whole process
    /// group, after `timeout`.
    pub fn run_logged(
        &self,
        args: &[String],
        stdin: Feed<'_>,
        log: &Path,
        timeout: Duration,
    ) -> Result<std::result::Result<(), BuildError>> {
        let mut logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        writeln!(logf, "$ {} {}", self.program, args.join(" "))
            .with_context(|| format!("writing log {}", log.display()))?;
        let mut cmd = self.command(&[]);
        cmd.args(args).stdin(Stdio::piped()).stdout(logf.try_clone()?).stderr(logf.try_clone()?);
        // Registered before anything can block (the stdin write), so an
        // interrupt from here on kills this build.
        let mut child = GroupChild::spawn(&mut cmd)
            .with_context(|| format!("starting `{} {}`", self.program, args[..2.min(args.len())].join(" ")))?;
        let mut sin = child.take_stdin().expect("stdin is piped");
        let (waited, fed) = std::thread::scope(|s| {
            let feeder = s.spawn(move || match stdin {
                Feed::Bytes(b) => sin.write_all(b),
                Feed::Stream(f) => f(&mut sin),
            });
            let waited = child.wait_timeout(timeout);
            if waited.is_err() {
                child.kill();
            }
            // The child is gone (or killed): the feeder's writes fail now
            // if they did not end.
            (waited, feeder.join())
        });
        // A build that fails early closes stdin (a broken pipe here); its
        // log says why. Any other error of the feed (a context file that
        // cannot be read) is the reason the build failed.
        let feed_error = match fed {
            Ok(Ok(())) => None,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("the thread writing to its stdin panicked".to_string()),
        };
        if let Some(e) = &feed_error {
            let _ = writeln!(logf, "mzbuild: writing the build's input failed: {e}");
        }
        match waited? {
            Some(status) if status.success() && feed_error.is_none() => Ok(Ok(())),
            Some(_) if feed_error.is_some() => Ok(Err(BuildError::Failed {
                summary: format!("writing its input failed: {}", feed_error.unwrap_or_default()),
                retryable: false,
            })),
            Some(status) => {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                Ok(Err(BuildError::Failed { summary: format!("{status}"), retryable: looks_retryable(&text) }))
            }
            None => {
                let _ = writeln!(logf, "mzbuild: killed after {timeout:?}");
                Ok(Err(BuildError::TimedOut(timeout)))
            }
        }
    }

    /// What the builder the builds use (`builder`, else buildx's current
    /// one) can do for reproducible builds: `docker buildx inspect` says its
    /// driver and BuildKit version. The `docker` driver ignores
    /// `rewrite-timestamp` (measured on docker 26.1); an unknown answer
    /// counts as no support.
    pub fn builder_features(&self, builder: Option<&Builder>) -> BuilderFeatures {
        self.known_builder_features(builder).unwrap_or_default()
    }

    /// The same; `None` when buildx does not answer.
    pub fn known_builder_features(&self, builder: Option<&Builder>) -> Option<BuilderFeatures> {
        let mut args = vec!["buildx", "inspect"];
        if let Some(b) = builder {
            args.push(&b.name);
        }
        match self.command(&args).output() {
            Ok(o) if o.status.success() => Some(parse_builder_features(&String::from_utf8_lossy(&o.stdout))),
            _ => None,
        }
    }
}

/// [`BuilderFeatures`] from the text of `docker buildx inspect`.
pub fn parse_builder_features(text: &str) -> BuilderFeatures {
    let field = |key: &str| text.lines().find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()));
    let driver = field("Driver:").unwrap_or_default();
    let version = field("BuildKit version:").or_else(|| field("Buildkit:")).unwrap_or_default();
    let numbers: Vec<u64> =
        version.trim_start_matches('v').split(['.', '-', '+']).take(2).map_while(|n| n.parse().ok()).collect();
    let recent = matches!(numbers[..], [major, minor] if (major, minor) >= (0, 13));
    BuilderFeatures {
        rewrite_timestamp: driver != "docker" && !driver.is_empty() && recent,
        docker_driver: driver == "docker",
    }
}

/// What a logged command reads on stdin.
#[derive(Clone, Copy)]
pub enum Feed<'a> {
    Bytes(&'a [u8]),
    /// Written by this function, on a thread of its own.
    Stream(&'a (dyn Fn(&mut dyn Write) -> std::io::Result<()> + Sync)),
}

/// The user's docker config directory: $DOCKER_CONFIG, else ~/.docker.
pub fn user_docker_config_dir(env: &dyn Env) -> Option<PathBuf> {
    env.path("DOCKER_CONFIG").or_else(|| env.path("HOME").map(|h| h.join(".docker")))
}

/// Where buildx writes during a run, instead of the user's files: a private
/// directory, removed when the run ends however it ends (see `process`),
/// holding
///
/// - `buildx/`, buildx's state (`BUILDX_CONFIG`): every build records refs
///   and activity there (by default in `~/.docker/buildx`). It starts as a
///   copy of the user's builder definitions (`instances/`, `defaults/`,
///   `current`), so the builder the user selected is still the one used;
/// - `tmp/` (`TMPDIR`): buildx 0.13 writes the Dockerfile it reads from stdin
///   (`-f -`) to `$TMPDIR/dockerfileNNNN/` and never removes it.
pub struct RunDir {
    dir: PrivateDir,
}

impl RunDir {
    pub fn new(env: &dyn Env) -> Result<RunDir> {
        let dir = PrivateDir::new("mzbuild-run-").context("creating a private directory for buildx")?;
        let buildx = dir.path().join("buildx");
        let tmp = dir.path().join("tmp");
        for d in [&buildx, &tmp] {
            std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let user = env.path("BUILDX_CONFIG").or_else(|| user_docker_config_dir(env).map(|d| d.join("buildx")));
        if let Some(user) = user.filter(|u| u.is_dir()) {
            seed_buildx(&user, &buildx)?;
        }
        Ok(RunDir { dir })
    }

    /// The environment that sends buildx's writes here.
    pub fn env(&self) -> Vec<(String, String)> {
        let path = |sub: &str| self.dir.path().join(sub).display().to_string();
        vec![("BUILDX_CONFIG".into(), path("buildx")), ("TMPDIR".into(), path("tmp"))]
    }
}

/// Copy the user's builder definitions from `from` (a buildx config
/// directory) into `to`; not the refs and activity buildx keeps per build.
fn seed_buildx(from: &Path, to: &Path) -> Result<()> {
    let copy = |src: &Path, dst: &Path| -> Result<()> {
        std::fs::copy(src, dst).map(drop).with_context(|| format!("copying {} to {}", src.display(), dst.display()))
    };
    if from.join("current").is_file() {
        copy(&from.join("current"), &to.join("current"))?;
    }
    for sub in ["instances", "defaults"] {
        let Ok(entries) = std::fs::read_dir(from.join(sub)) else { continue };
        let dst = to.join(sub);
        std::fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                copy(&entry.path(), &dst.join(entry.file_name()))?;
            }
        }
    }
    Ok(())
}

/// Why a `docker pull` failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullError {
    /// The registry does not have the image (docker: "manifest unknown",
    /// "not found").
    NotPublished,
    /// Anything else (credentials refused or missing, the registry down),
    /// with docker's last line.
    Failed(String),
}

impl PullError {
    fn from_stderr(stderr: &[u8]) -> PullError {
        let last = last_line(stderr);
        if last.contains("manifest unknown") || last.contains(": not found") {
            PullError::NotPublished
        } else {
            PullError::Failed(last)
        }
    }
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

/// A buildx builder the builds use instead of the current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Builder {
    pub name: String,
    /// The docker context to build from, for a builder of the `docker`
    /// driver (buildx refuses `--builder` for one of another context).
    pub context: Option<String>,
}

/// The builder for builds of `arch`, with where its name comes from:
/// `--builder`, else the workspace's `builders` entry for the arch, else
/// none (buildx's current builder).
pub fn choose_builder(flag: Option<&str>, configured: &BTreeMap<Arch, String>, arch: Arch) -> Option<(String, String)> {
    match (flag, configured.get(&arch)) {
        (Some(f), _) => Some((f.to_string(), "from --builder".to_string())),
        (None, Some(c)) => {
            Some((c.clone(), format!("from Cargo.toml [workspace.metadata.mzbuild] builders.{}", arch.gcc())))
        }
        (None, None) => None,
    }
}

/// What a build does with its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Load into the local engine (never pushed).
    Load,
    /// Push to every tag's registry, in the same step as the build.
    Push,
}

/// Where a build's context and its (rewritten) Dockerfile come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextSource<'a> {
    /// A directory; the Dockerfile on stdin (`-f - DIR`).
    Dir(&'a Path),
    /// A tar on stdin holding the Dockerfile at this path (`-f PATH -`):
    /// buildx reads `-f` inside a tar context.
    Tar { dockerfile: &'a str },
}

/// What reproducible builds need of the builder (see [`Docker::builder_features`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuilderFeatures {
    /// The image exporter honours `rewrite-timestamp=true` (BuildKit 0.13
    /// or later, on a driver other than `docker`): file times in layers made
    /// by `RUN` are clamped to SOURCE_DATE_EPOCH.
    pub rewrite_timestamp: bool,
    /// It is the `docker` driver: the images it builds are in the local
    /// engine, where mzbuild can normalise them itself.
    pub docker_driver: bool,
}

/// What makes a build reproducible beyond its inputs: what the builder can
/// do, and the labels the image gets (`--label`; they are in the image's
/// config, so only values fixed by the fingerprint belong here).
#[derive(Clone, Copy, Debug, Default)]
pub struct Reproducible<'a> {
    pub features: BuilderFeatures,
    pub labels: &'a [(String, String)],
}

/// The arguments after `docker` for one image build from `context`.
pub fn buildx_args(
    context: ContextSource<'_>,
    tags: &[String],
    user_build_args: &[(String, String)],
    settings: &Settings,
    output: Output,
    builder: Option<&Builder>,
    repro: Reproducible<'_>,
) -> Vec<String> {
    let features = repro.features;
    let mut args: Vec<String> = vec![];
    if let Some(c) = builder.and_then(|b| b.context.as_ref()) {
        args.extend(["--context".into(), c.clone()]);
    }
    args.extend(["buildx".into(), "build".into()]);
    if let Some(b) = builder {
        args.extend(["--builder".into(), b.name.clone()]);
    }
    args.push("--progress=plain".into());
    match context {
        ContextSource::Dir(_) => args.extend(["-f".into(), "-".into()]),
        ContextSource::Tar { dockerfile } => args.extend(["-f".into(), dockerfile.into()]),
    }
    let builtin = [
        ("BUILD_PROFILE", settings.profile.upper().to_string()),
        ("ARCH_GCC", settings.arch.gcc().to_string()),
        ("ARCH_GO", settings.arch.go().to_string()),
        ("CI_SANITIZER", settings.sanitizer.clone()),
    ];
    for (k, v) in user_build_args.iter().map(|(k, v)| (k.as_str(), v.clone())).chain(builtin) {
        args.push("--build-arg".into());
        args.push(format!("{k}={v}"));
    }
    for t in tags {
        args.push("-t".into());
        args.push(t.clone());
    }
    args.push(format!("--platform=linux/{}", settings.arch.go()));
    for (k, v) in repro.labels {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    // No attestations: their manifests carry build times and would make the
    // pushed digest differ from build to build.
    args.extend(["--provenance=false".into(), "--sbom=false".into()]);
    args.push(match (output, features.rewrite_timestamp) {
        (Output::Load, false) => "--load".into(),
        (Output::Push, false) => "--push".into(),
        (Output::Load, true) => "--output=type=docker,rewrite-timestamp=true".into(),
        (Output::Push, true) => "--output=type=image,push=true,rewrite-timestamp=true".into(),
    });
    args.push(match context {
        ContextSource::Dir(dir) => dir.display().to_string(),
        ContextSource::Tar { .. } => "-".into(),
    });
    args
}

/// The build-cache records to prune, in an order `docker buildx prune
/// --filter id=<id>` accepts them (children first: a record with children
/// is not pruned), so that the cache forgets the steps whose description
/// contains `marker` and every record built on them, and nothing else.
/// `du` is the output of `docker buildx du --verbose`. Empty when no record
/// matches. (For making one image's cache cold on a shared engine: the
/// tests and benchmarks of the shared layer cache.)
pub fn build_cache_records_to_prune(du: &str, marker: &str) -> Vec<String> {
    let records: Vec<(String, Option<String>, String)> = du
        .split("\n\n")
        .filter_map(|block| {
            let field = |k: &str| {
                block.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
            };
            Some((field("ID:")?, field("Parent:"), field("Description:").unwrap_or_default()))
        })
        .collect();
    let mut doomed: Vec<String> =
        records.iter().filter(|(_, _, d)| d.contains(marker)).map(|(id, _, _)| id.clone()).collect();
    if doomed.is_empty() {
        return doomed;
    }
    loop {
        let kids: Vec<String> = records
            .iter()
            .filter(|(id, p, _)| p.as_ref().is_some_and(|p| doomed.contains(p)) && !doomed.contains(id))
            .map(|(id, _, _)| id.clone())
            .collect();
        if kids.is_empty() {
            break;
        }
        doomed.extend(kids);
    }
    doomed.reverse();
    doomed
}

/// How a build ended, when it did not succeed.
#[derive(Debug)]
pub enum BuildError {
    /// The command failed; `retryable` if its log looks like a network or
    /// registry-side failure (5xx, 429, connection trouble).
    Failed {
        summary: String,
        retryable: bool,
    },
    TimedOut(Duration),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Failed { summary, .. } => write!(f, "docker buildx build failed ({summary})"),
            BuildError::TimedOut(t) => write!(f, "timed out after {}s and was killed", t.as_secs()),
        }
    }
}

/// Registry-side or network failures worth another try; a broken Dockerfile
/// or a failing RUN step is not.
pub fn looks_retryable(log: &str) -> bool {
    // Only the last attempt's output counts.
    let tail = log.rsplit("\n$ ").next().unwrap_or(log).to_ascii_lowercase();
    [
        "connection refused",
        "connection reset",
        "i/o timeout",
        "tls handshake timeout",
        "no such host",
        "temporary failure in name resolution",
        "unexpected eof",
        "broken pipe",
        "500 internal server error",
        "502 bad gateway",
        "503 service unavailable",
        "504 gateway timeout",
        "429 too many requests",
        "toomanyrequests",
    ]
    .iter()
    .any(|p| tail.contains(p))
}

/// The last `n` lines of a log, for error messages.
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("    | {l}")).collect::<Vec<_>>().join("\n")
}

/// Where per-image logs go.
pub fn log_dir(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target").join("mzbuild").join("logs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// `anyhow` form of a build error.
pub fn err_to_anyhow(e: BuildError) -> anyhow::Error {
    anyhow!("{e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::{Arch, Profile};
    use expect_test::expect;

    #[test]
    fn build_cache_records_go_children_first() {
        // `docker buildx du --verbose` as buildx 0.13 prints it (abridged).
        let du = "ID:\t\troot\nDescription:\tmount / from exec sh -c echo t-1\n\n\
                  ID:\t\tchild\nParent:\t\troot\nDescription:\t[2/3] COPY in.txt\n\n\
                  ID:\t\tgrandchild\nParent:\t\tchild\nDescription:\texport\n\n\
                  ID:\t\tother\nParent:\t\tunrelated\nDescription:\texec sh -c echo t-2\n";
        assert_eq!(build_cache_records_to_prune(du, "t-1"), ["grandchild", "child", "root"]);
        assert!(build_cache_records_to_prune(du, "t-3").is_empty());
    }

    #[test]
    fn why_a_pull_failed() {
        // What docker 26's `pull` says (the registries of ci/stack.sh).
        let not_published = "Error response from daemon: manifest for 127.0.0.1:5000/x/app:mzbuild-A not found: \
                             manifest unknown: manifest unknown\n";
        assert_eq!(PullError::from_stderr(not_published.as_bytes()), PullError::NotPublished);
        let refused = "Error response from daemon: Head \"http://127.0.0.1:5001/v2/x/app/manifests/mzbuild-A\": \
                       no basic auth credentials\n";
        assert_eq!(PullError::from_stderr(refused.as_bytes()), PullError::Failed(refused.trim().to_string()));
    }

    #[test]
    fn buildx_command_line() {
        let settings =
            Settings { profile: Profile::Optimized, arch: Arch::X86_64, coverage: false, sanitizer: "none".into() };
        let args = buildx_args(
            ContextSource::Tar { dockerfile: "Dockerfile" },
            &["127.0.0.1:5000/mz/app:mzbuild-FP".into(), "127.0.0.1:5001/app:mzbuild-FP".into()],
            &[("VERSION".into(), "1.0".into())],
            &settings,
            Output::Push,
            None,
            Reproducible::default(),
        );
        expect!["buildx build --progress=plain -f Dockerfile --build-arg VERSION=1.0 --build-arg BUILD_PROFILE=OPTIMIZED --build-arg ARCH_GCC=x86_64 --build-arg ARCH_GO=amd64 --build-arg CI_SANITIZER=none -t 127.0.0.1:5000/mz/app:mzbuild-FP -t 127.0.0.1:5001/app:mzbuild-FP --platform=linux/amd64 --provenance=false --sbom=false --push -"]
        .assert_eq(&args.join(" "));
        let settings =
            Settings { profile: Profile::Dev, arch: Arch::Aarch64, coverage: false, sanitizer: "address".into() };
        let args = buildx_args(
            ContextSource::Dir(Path::new("ctx")),
            &["t".into()],
            &[],
            &settings,
            Output::Load,
            None,
            Reproducible::default(),
        );
        expect!["buildx build --progress=plain -f - --build-arg BUILD_PROFILE=DEV --build-arg ARCH_GCC=aarch64 --build-arg ARCH_GO=arm64 --build-arg CI_SANITIZER=address -t t --platform=linux/arm64 --provenance=false --sbom=false --load ctx"]
        .assert_eq(&args.join(" "));
        // A builder; one of the docker driver is used from its context.
        let remote = Builder { name: "arm-nodes".into(), context: None };
        let args = buildx_args(
            ContextSource::Tar { dockerfile: "Dockerfile" },
            &["t".into()],
            &[],
            &settings,
            Output::Push,
            Some(&remote),
            Reproducible {
                features: BuilderFeatures { rewrite_timestamp: true, docker_driver: false },
                labels: &[("dev.mzbuild.fingerprint".into(), "FP".into())],
            },
        );
        expect!["buildx build --builder arm-nodes --progress=plain -f Dockerfile --build-arg BUILD_PROFILE=DEV --build-arg ARCH_GCC=aarch64 --build-arg ARCH_GO=arm64 --build-arg CI_SANITIZER=address -t t --platform=linux/arm64 --label dev.mzbuild.fingerprint=FP --provenance=false --sbom=false --output=type=image,push=true,rewrite-timestamp=true -"]
        .assert_eq(&args.join(" "));
        let engine = Builder { name: "arm-engine".into(), context: Some("arm-engine".into()) };
        let args = buildx_args(
            ContextSource::Dir(Path::new("ctx")),
            &["t".into()],
            &[],
            &settings,
            Output::Push,
            Some(&engine),
            Reproducible::default(),
        );
        assert!(args.join(" ").starts_with("--context arm-engine buildx build --builder arm-engine --progress=plain"));
    }

    #[test]
    fn rewrite_timestamp_needs_buildkit_0_13_off_the_docker_driver() {
        // `docker buildx inspect` of this machine's default builder (docker 26.1).
        let docker = "Name:          default\nDriver:        docker\nLast Activity: 2026-12-06 02:51:40 +0000 UTC\n\n\
                      Nodes:\nName:      default\nEndpoint:  default\nStatus:    running\n\
                      BuildKit version: v0.0.0+unknown\n";
        assert_eq!(parse_builder_features(docker), BuilderFeatures { rewrite_timestamp: false, docker_driver: true });
        let container = "Name: b\nDriver: docker-container\n\nNodes:\nName: b0\nStatus: running\n\
                         BuildKit version: v0.13.1\n";
        assert!(parse_builder_features(container).rewrite_timestamp);
        let old = container.replace("v0.13.1", "v0.12.5");
        assert!(!parse_builder_features(&old).rewrite_timestamp);
        let unknown = container.replace("v0.13.1", "");
        assert!(!parse_builder_features(&unknown).rewrite_timestamp);
    }

    #[test]
    fn the_builder_comes_from_the_flag_else_the_workspace() {
        let configured: BTreeMap<Arch, String> = [(Arch::Aarch64, "arm-nodes".to_string())].into();
        assert_eq!(choose_builder(None, &configured, Arch::X86_64), None);
        assert_eq!(
            choose_builder(None, &configured, Arch::Aarch64),
            Some(("arm-nodes".into(), "from Cargo.toml [workspace.metadata.mzbuild] builders.aarch64".into()))
        );
        assert_eq!(
            choose_builder(Some("mine"), &configured, Arch::Aarch64),
            Some(("mine".into(), "from --builder".into()))
        );
    }

    #[test]
    fn retryable_failures() {
        assert!(looks_retryable("$ docker buildx\nERROR: failed to push: 503 Service Unavailable"));
        assert!(looks_retryable("dial tcp 127.0.0.1:5999: connect: connection refused"));
        assert!(!looks_retryable(
            "ERROR: failed to solve: dockerfile parse error on line 2: unknown instruction: BOGUS"
        ));
        // An earlier attempt's network error does not make a later syntax error retryable.
        assert!(!looks_retryable("$ a\nconnection refused\n$ b\nunknown instruction: BOGUS"));
    }
}
