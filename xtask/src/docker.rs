//! Talking to Docker: engine and buildx checks with install hints, the
//! `docker buildx build` command line (a pure function, snapshot-tested), and
//! running a build with its output in a per-image log, killable as a process
//! group.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::settings::Settings;

/// The `docker` program: `$MZ_DOCKER` if set (tests point it at wrappers),
/// else `docker` on PATH.
pub fn docker_program() -> String {
    std::env::var("MZ_DOCKER").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "docker".to_string())
}

pub const STACK_HINT: &str = "`bash ci/stack.sh up` installs and starts it on Debian";

/// Fail unless the engine answers; say what to install or start.
pub fn check_engine() -> Result<()> {
    let docker = docker_program();
    let out = Command::new(&docker).args(["version", "--format", "{{.Server.Version}}"]).stdin(Stdio::null()).output();
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("the docker CLI (`{docker}`) is not installed: install Docker ({STACK_HINT})")
        }
        Err(e) => bail!("cannot run `{docker} version`: {e}"),
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => bail!(
            "the Docker engine is not running or not reachable ({}): start it ({STACK_HINT}, or `dockerd &`), \
             or point DOCKER_HOST at a running engine",
            last_line(&o.stderr)
        ),
    }
}

/// Fail unless the buildx plugin is there.
pub fn check_buildx() -> Result<()> {
    let docker = docker_program();
    let out = Command::new(&docker).args(["buildx", "version"]).stdin(Stdio::null()).output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => bail!(
            "docker buildx is not installed ({}): mzbuild builds and pushes with buildx; install the buildx \
             plugin (Debian: `apt-get install -t trixie docker-buildx`; {STACK_HINT})",
            last_line(&o.stderr)
        ),
        Err(e) => bail!("cannot run `{docker} buildx version`: {e}"),
    }
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

/// What a build does with its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Load into the local engine (never pushed).
    Load,
    /// Push to every tag's registry, in the same step as the build.
    Push,
}

/// The arguments after `docker` for one image build. The Dockerfile comes on
/// stdin (`-f -`): it is the rewritten one.
pub fn buildx_args(
    context: &Path,
    tags: &[String],
    user_build_args: &[(String, String)],
    settings: &Settings,
    output: Output,
) -> Vec<String> {
    let mut args: Vec<String> =
        vec!["buildx".into(), "build".into(), "--progress=plain".into(), "-f".into(), "-".into()];
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
    args.push(match output {
        Output::Load => "--load".into(),
        Output::Push => "--push".into(),
    });
    args.push(context.display().to_string());
    args
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

/// Run `docker ARGS` with `stdin` fed to it, appending all output to `log`.
/// Killed, with its whole process group, after `timeout`.
pub fn run_logged(
    args: &[String],
    stdin: &[u8],
    env: &[(String, String)],
    log: &Path,
    timeout: Duration,
) -> Result<std::result::Result<(), BuildError>> {
    use std::os::unix::process::CommandExt;
    let mut logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    let docker = docker_program();
    writeln!(logf, "$ {docker} {}", args.join(" "))?;
    let mut cmd = Command::new(&docker);
    cmd.args(args).stdin(Stdio::piped()).stdout(logf.try_clone()?).stderr(logf.try_clone()?).process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().with_context(|| format!("starting `{docker} {}`", args[..2].join(" ")))?;
    // Registered before anything can block (the stdin write), so an
    // interrupt from here on kills this build.
    let pgid = child.id();
    crate::cleanup::add_group(pgid);
    {
        let mut sin = child.stdin.take().expect("stdin is piped");
        // A build that fails early closes stdin; its log says why.
        let _ = sin.write_all(stdin);
    }
    let result = wait_or_kill(&mut child, pgid, log, &mut logf, timeout);
    crate::cleanup::remove_group(pgid);
    result
}

fn wait_or_kill(
    child: &mut std::process::Child,
    pgid: u32,
    log: &Path,
    logf: &mut std::fs::File,
    timeout: Duration,
) -> Result<std::result::Result<(), BuildError>> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(Ok(()));
            }
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Ok(Err(BuildError::Failed { summary: format!("{status}"), retryable: looks_retryable(&text) }));
        }
        if start.elapsed() > timeout {
            crate::cleanup::kill_group(pgid);
            let _ = child.kill();
            let _ = child.wait();
            let _ = writeln!(logf, "mzbuild: killed after {timeout:?}");
            return Ok(Err(BuildError::TimedOut(timeout)));
        }
        std::thread::sleep(Duration::from_millis(50));
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

/// Image references present in the local engine (`repo:tag`).
pub fn local_images() -> Result<std::collections::BTreeSet<String>> {
    let out = Command::new(docker_program())
        .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
        .stdin(Stdio::null())
        .output()
        .context("listing local images")?;
    if !out.status.success() {
        bail!("`docker image ls` failed: {}", last_line(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
}

/// `docker pull REF`, quietly; false if it is not available.
pub fn pull(reference: &str, env: &[(String, String)]) -> bool {
    let mut cmd = Command::new(docker_program());
    cmd.args(["pull", "--quiet", reference]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.status().map(|s| s.success()).unwrap_or(false)
}

/// Where per-image logs go.
pub fn log_dir(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target").join("mzbuild").join("logs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

pub fn err_to_anyhow(e: BuildError) -> anyhow::Error {
    match e {
        BuildError::Failed { summary, .. } => anyhow!("docker buildx build failed ({summary})"),
        BuildError::TimedOut(t) => anyhow!("timed out after {}s and was killed", t.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Arch, Profile};
    use expect_test::expect;

    #[test]
    fn buildx_command_line() {
        let settings =
            Settings { profile: Profile::Optimized, arch: Arch::X86_64, coverage: false, sanitizer: "none".into() };
        let args = buildx_args(
            Path::new("/repo/misc/images/app"),
            &["127.0.0.1:5000/mz/app:mzbuild-FP".into(), "127.0.0.1:5001/app:mzbuild-FP".into()],
            &[("VERSION".into(), "1.0".into())],
            &settings,
            Output::Push,
        );
        expect![[r#"buildx build --progress=plain -f - --build-arg VERSION=1.0 --build-arg BUILD_PROFILE=OPTIMIZED --build-arg ARCH_GCC=x86_64 --build-arg ARCH_GO=amd64 --build-arg CI_SANITIZER=none -t 127.0.0.1:5000/mz/app:mzbuild-FP -t 127.0.0.1:5001/app:mzbuild-FP --platform=linux/amd64 --push /repo/misc/images/app"#]]
        .assert_eq(&args.join(" "));
        let settings =
            Settings { profile: Profile::Dev, arch: Arch::Aarch64, coverage: false, sanitizer: "address".into() };
        let args = buildx_args(Path::new("ctx"), &["t".into()], &[], &settings, Output::Load);
        expect![[r#"buildx build --progress=plain -f - --build-arg BUILD_PROFILE=DEV --build-arg ARCH_GCC=aarch64 --build-arg ARCH_GO=arm64 --build-arg CI_SANITIZER=address -t t --platform=linux/arm64 --load ctx"#]]
        .assert_eq(&args.join(" "));
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
