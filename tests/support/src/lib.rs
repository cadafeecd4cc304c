//! Helpers shared by the integration tests (`tests/testsuite`, one binary): run the real `xtask` binary, and
//! build temporary git repositories to run it on. Every helper the tests
//! share lives here, once (`docker` for the engine, `registry` for the two
//! registries of `ci/stack.sh`, `child` for a process to watch while it
//! runs, `token_registry` for a bearer-token registry); look here before
//! writing one in a test module.
//!
//! Nothing here changes process-wide state (environment, working directory):
//! the tests of one binary run in parallel threads, so every setting goes on
//! the child `Command` instead. Nothing here sleeps to synchronise: waits
//! poll for the event with a deadline (`wait_until`) or read a child's output
//! (`child::Running`).

// Tests drive real processes and read their own environment directly;
// the repository ban (clippy.toml) is for the engine.
#![allow(clippy::disallowed_methods)]

pub mod body_limit;
pub mod child;
pub mod docker;
pub mod http;
pub mod json;
pub mod own_registry;
pub mod registry;
pub mod token_registry;

/// A TCP proxy that counts, goes down and comes back, or stalls (shared with
/// `cargo xtask bench copy`).
pub use tcp_proxy as proxy;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// Environment variables that change what `mzbuild` computes; removed from
/// every child so that tests do not depend on the developer's shell or CI.
pub const SETTINGS_ENV: &[&str] = &["CI_LTO", "CI_COVERAGE_ENABLED", "CI_SANITIZER", "MZ_GHCR", "MZ_ROOT"];

/// What a finished child process left behind.
#[derive(Debug)]
pub struct Output {
    /// `None` when the process was killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Assert exit status 0 and return stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "expected success\n{self}");
        &self.stdout
    }

    /// Assert a clean failure (exit status 1: an error, not a panic, which
    /// exits with 101) and return stderr.
    #[track_caller]
    pub fn error(&self) -> &str {
        assert_eq!(self.code, Some(1), "expected a clean failure (exit status 1)\n{self}");
        assert!(!self.stderr.contains("panicked"), "the error is a panic\n{self}");
        assert!(self.stderr.lines().any(|l| l.starts_with("error: ")), "no `error: ` line on stderr\n{self}");
        &self.stderr
    }

    /// Like `error`, but return stderr from the first `error: ` line on,
    /// without the progress lines before it.
    #[track_caller]
    pub fn error_message(&self) -> &str {
        let stderr = self.error();
        let at = if stderr.starts_with("error: ") { 0 } else { stderr.find("\nerror: ").unwrap() + 1 };
        &stderr[at..]
    }

    /// Assert success and exactly one line on stdout; return it without the
    /// newline.
    #[track_caller]
    pub fn line(&self) -> String {
        let stdout = self.ok();
        assert!(stdout.ends_with('\n') && stdout.lines().count() == 1, "expected one line\n{self}");
        stdout.trim_end().to_string()
    }

    /// Assert success and one line that is a fingerprint (32 characters of
    /// base32); return it.
    #[track_caller]
    pub fn fingerprint(&self) -> String {
        let fp = self.line();
        assert!(
            fp.len() == 32 && fp.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
            "not a fingerprint: {fp:?}\n{self}"
        );
        fp
    }
}

impl From<std::process::Output> for Output {
    fn from(out: std::process::Output) -> Output {
        Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status: {:?}\n--- stdout ---\n{}--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Run `cmd` to completion, capturing its output.
#[track_caller]
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}")).into()
}

/// Run `cmd` to completion with `stdin` on its standard input (how secrets
/// reach `curl` and `docker login`: never on a command line).
#[track_caller]
pub fn run_with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut pipe = child.stdin.take().unwrap();
    // The child may exit without reading (a usage error): that is its
    // output to report, not a panic here.
    let _ = pipe.write_all(stdin.as_bytes());
    drop(pipe);
    child.wait_with_output().unwrap().into()
}

/// `curl -s -K - args...` with `config` (curl config lines such as
/// `user = "U:P"` or `header = "Authorization: Bearer T"`, or nothing) on
/// stdin, so that no secret is on a command line.
pub fn curl(config: &str, args: &[&str]) -> Output {
    run_with_stdin(Command::new("curl").args(["-s", "-K", "-"]).args(args), config)
}

/// Poll `cond` every 20 ms until it holds or `timeout` passes; whether it
/// held. The way to wait for an event (never a bare sleep).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `cmd` to completion like `run`, and measure it: the peak resident
/// set size of that process alone, in bytes.
///
/// Not its `ru_maxrss`: a process started from this one inherits this
/// process's high-water mark at its `exec` (Linux keeps the larger of the
/// old and new address space's), and this test binary, which runs every
/// integration test, may have grown past what the child uses. So the child's
/// own high-water mark (`VmHWM` of `/proc/<pid>/status`, which counts from
/// its `exec`) is read every 5 ms until it exits (waited for without being
/// reaped, so its pid cannot be reused meanwhile); the mark only grows, so
/// a reading can only miss growth in the last few milliseconds of its life.
#[cfg(target_os = "linux")]
#[track_caller]
#[allow(clippy::zombie_processes)] // reaped by waitpid, which std's Child does not know about
pub fn run_measured(cmd: &mut Command) -> (Output, u64) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let stdout = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let me = std::env::current_exe().unwrap();
    let status_file = format!("/proc/{pid}/status");
    let exe_link = format!("/proc/{pid}/exe");
    let mut peak = 0u64;
    loop {
        // Before its exec the child still runs this binary (and shares or
        // copies its memory): not its own mark yet.
        if std::fs::read_link(&exe_link).is_ok_and(|exe| exe != me) {
            let status = std::fs::read_to_string(&status_file).unwrap_or_default();
            let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).map(|v| v.trim().trim_end_matches(" kB"));
            if let Some(kb) = hwm.and_then(|v| v.parse::<u64>().ok()) {
                peak = peak.max(kb * 1024);
            }
        }
        // SAFETY: a zeroed siginfo_t for waitid to fill; the child is ours.
        let exited = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let rc =
                libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT);
            assert_eq!(rc, 0, "waitid failed: {}", std::io::Error::last_os_error());
            info.si_pid() != 0
        };
        if exited {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut status = 0;
    // SAFETY: reaps the child, which has exited; `child` is never waited on.
    let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(reaped, pid, "waitpid failed: {}", std::io::Error::last_os_error());
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let output = Output {
        code,
        stdout: String::from_utf8_lossy(&stdout.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.join().unwrap()).into_owned(),
    };
    assert!(peak > 0, "no memory reading of {cmd:?}\n{output}");
    (output, peak)
}

/// The arguments of every process on the machine (`ps -eo args`), one
/// process per line.
pub fn processes() -> Vec<String> {
    let ps = run(Command::new("ps").args(["-eo", "args"]));
    assert_eq!(ps.code, Some(0), "{ps}");
    ps.stdout.lines().map(str::to_string).collect()
}

/// A port on 127.0.0.1 that nothing listens on (for now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The real `xtask` binary with `args`, with the settings environment
/// (`SETTINGS_ENV`) and `$MZ_DOCKER` (the docker CLI it runs) of the
/// developer's shell removed. Add `.env(..)` / `.current_dir(..)` as needed.
pub fn xtask_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(xtask_bin());
    cmd.args(args);
    for var in SETTINGS_ENV {
        cmd.env_remove(var);
    }
    cmd.env_remove("MZ_DOCKER");
    // Neither CI summaries of the test runs (into the CI job running the
    // tests) nor colours (tests read stderr as plain text), unless a test
    // asks for them.
    for var in ["GITHUB_STEP_SUMMARY", "BUILDKITE", "CLICOLOR_FORCE", "NO_COLOR"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Run the real `xtask` binary with `args` (see `xtask_command`).
#[track_caller]
pub fn xtask<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(&mut xtask_command(args))
}

/// A directory to use as `$HOME`, empty when the test binary starts, so that
/// neither git nor the tool reads the developer's git configuration (global
/// excludes, signing, hooks). Tools may keep state there (docker writes
/// `.docker/`), so each test process has its own, under cargo's scratch
/// directory for integration tests; those of finished processes are removed.
pub fn empty_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let scratch = target_tmpdir();
        for entry in std::fs::read_dir(&scratch).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix("home-"));
            if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let home = scratch.join(format!("home-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        home
    })
}

/// Point `cmd` at `home` for all git configuration: `$HOME`, no
/// `$XDG_CONFIG_HOME`, no system configuration.
pub fn git_home<'a>(cmd: &'a mut Command, home: &Path) -> &'a mut Command {
    cmd.env("HOME", home).env_remove("XDG_CONFIG_HOME").env_remove("GIT_CONFIG_GLOBAL").env("GIT_CONFIG_NOSYSTEM", "1")
}

/// `git args` in `dir`, isolated from the developer's configuration (see
/// `empty_home`), with a fixed identity. Panics unless it succeeds; returns
/// stdout.
#[track_caller]
pub fn git<I, S>(dir: &Path, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).args(args);
    git_home(&mut cmd, empty_home());
    for (k, v) in [
        ("GIT_AUTHOR_NAME", "t"),
        ("GIT_AUTHOR_EMAIL", "t@t"),
        ("GIT_COMMITTER_NAME", "t"),
        ("GIT_COMMITTER_EMAIL", "t@t"),
    ] {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    assert_eq!(out.code, Some(0), "{cmd:?} failed\n{out}");
    out.stdout
}

/// A git repository in a temporary directory, deleted on drop.
pub struct TempRepo {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl TempRepo {
    /// A new repository (`git init`) with nothing in it.
    pub fn new() -> TempRepo {
        let dir = tempfile::Builder::new().prefix("xtask-test").tempdir().unwrap();
        // Canonical, so that paths printed by the tool compare equal.
        let root = dir.path().canonicalize().unwrap().join("repo");
        std::fs::create_dir(&root).unwrap();
        git(&root, ["init", "-q", "."]);
        TempRepo { dir, root }
    }

    /// A repository built by a script that takes the directory to create as
    /// its only argument, such as `tests/fixtures/public-fixture.sh`.
    pub fn from_script(script: &Path) -> TempRepo {
        let dir = tempfile::Builder::new().prefix("xtask-test").tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("repo");
        let mut cmd = Command::new("bash");
        cmd.arg(script).arg(&root);
        git_home(&mut cmd, empty_home());
        let out = run(&mut cmd);
        assert_eq!(out.code, Some(0), "{} failed\n{out}", script.display());
        TempRepo { dir, root }
    }

    /// A copy of this repository (`cp -a`: files, modes and git metadata) in
    /// a new temporary directory: quicker than building it again.
    pub fn copy(&self) -> TempRepo {
        let dir = tempfile::Builder::new().prefix("xtask-test").tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("repo");
        let out = run(Command::new("cp").arg("-a").arg(&self.root).arg(&root));
        assert_eq!(out.code, Some(0), "cp -a {} {}\n{out}", self.root.display(), root.display());
        TempRepo { dir, root }
    }

    /// The repository's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root as a string, for command lines.
    pub fn root_str(&self) -> &str {
        self.root.to_str().expect("temporary directory path is UTF-8")
    }

    /// A scratch directory beside the repository (not inside it), deleted
    /// with it.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// The path of `rel` in the repository.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Every file of the build log directory (`target/mzbuild/logs`) with
    /// its modification time and size: what a run built, and what it
    /// left alone.
    pub fn build_logs(&self) -> std::collections::BTreeMap<String, (std::time::SystemTime, u64)> {
        let Ok(entries) = std::fs::read_dir(self.path("target/mzbuild/logs")) else { return Default::default() };
        entries
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                (e.file_name().to_string_lossy().into_owned(), (m.modified().unwrap(), m.len()))
            })
            .collect()
    }

    /// The build log of `image` (`target/mzbuild/logs/<image>.log`).
    pub fn build_log(&self, image: &str) -> PathBuf {
        self.path(&format!("target/mzbuild/logs/{image}.log"))
    }

    /// Set the modification time of every build log far into the past, so
    /// that `build_logs` tells a rewrite (which sets it to now) from no write
    /// at once, with no wait for a coarse file-system clock to tick.
    pub fn backdate_build_logs(&self) {
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        for name in self.build_logs().keys() {
            let path = self.path(&format!("target/mzbuild/logs/{name}"));
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(when).unwrap();
        }
    }

    /// Write an image directory `dir`: its `mzbuild.yml` and `Dockerfile`.
    pub fn image(&self, dir: &str, mzbuild_yml: &str, dockerfile: &str) -> &Self {
        self.write(&format!("{dir}/mzbuild.yml"), mzbuild_yml).write(&format!("{dir}/Dockerfile"), dockerfile)
    }

    /// Write `rel` (creating its parent directories).
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> &Self {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        self
    }

    /// Append to `rel` (creating it if needed).
    pub fn append(&self, rel: &str, contents: impl AsRef<[u8]>) -> &Self {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(self.path(rel)).unwrap();
        f.write_all(contents.as_ref()).unwrap();
        self
    }

    /// Create directory `rel` and its parents.
    pub fn mkdir(&self, rel: &str) -> &Self {
        std::fs::create_dir_all(self.path(rel)).unwrap();
        self
    }

    /// Delete file `rel`.
    pub fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.path(rel)).unwrap_or_else(|e| panic!("removing {rel}: {e}"));
        self
    }

    /// A symlink at `rel` pointing at `target` (taken literally, so relative
    /// targets are relative to `rel`'s directory).
    pub fn symlink(&self, target: &str, rel: &str) -> &Self {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &path).unwrap();
        self
    }

    /// Set the permission bits of `rel` (e.g. `0o755`).
    pub fn chmod(&self, rel: &str, mode: u32) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    /// Set the modification time of every file, symlink and directory of
    /// the work tree (not `.git`, except its `info/exclude`) to `when`:
    /// what mzbuild's caches need to trust stat data (it must be older than
    /// the run that records it by two seconds, see `mzbuild::cachefile`),
    /// without waiting. Changes each entry's ctime, as any change does.
    pub fn backdate(&self, when: SystemTime) -> &Self {
        fn set(path: &Path, when: SystemTime) {
            use std::os::unix::ffi::OsStrExt;
            let secs = when.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as libc::time_t;
            let t = libc::timespec { tv_sec: secs, tv_nsec: 0 };
            let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid C string and two timespecs.
            let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
            assert_eq!(rc, 0, "utimensat {}", path.display());
        }
        fn walk(dir: &Path, when: SystemTime) {
            for e in std::fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                if e.file_name() == ".git" {
                    continue;
                }
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path(), when);
                }
                set(&e.path(), when);
            }
        }
        walk(&self.root, when);
        set(&self.root, when);
        if self.path(".git/info/exclude").exists() {
            set(&self.path(".git/info/exclude"), when);
        }
        self
    }

    /// [`TempRepo::backdate`] to a fixed time long past.
    pub fn backdate_all(&self) -> &Self {
        self.backdate(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
    }

    /// Set the modification time of `rel` (not following a symlink).
    pub fn set_mtime(&self, rel: &str, when: SystemTime) -> &Self {
        use std::os::unix::ffi::OsStrExt;
        let secs = when.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        let t = libc::timespec { tv_sec: secs.as_secs() as libc::time_t, tv_nsec: secs.subsec_nanos() as libc::c_long };
        let c = std::ffi::CString::new(self.path(rel).as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string and two timespecs.
        let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [t, t].as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
        assert_eq!(rc, 0, "utimensat {rel}");
        self
    }

    /// The modification time of `rel` (not following a symlink).
    pub fn mtime(&self, rel: &str) -> SystemTime {
        std::fs::symlink_metadata(self.path(rel)).unwrap().modified().unwrap()
    }

    /// The permission bits of `rel`.
    pub fn mode(&self, rel: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(self.path(rel)).unwrap().permissions().mode() & 0o7777
    }

    /// `git args` in the repository (see `git`).
    #[track_caller]
    pub fn git<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        git(&self.root, args)
    }

    /// Stage everything git sees and commit it.
    pub fn commit_all(&self) -> &Self {
        self.git(["add", "-A"]);
        self.git(["commit", "-q", "--allow-empty", "-m", "commit"]);
        self
    }

    /// The real `xtask` binary on this repository: `mzbuild --root ROOT
    /// args...`, with `$HOME` pointing at `empty_home()`.
    pub fn mzbuild_command(&self, args: &[&str]) -> Command {
        let mut cmd = xtask_command(["mzbuild", "--root", self.root_str()]);
        cmd.args(args);
        git_home(&mut cmd, empty_home());
        cmd
    }

    /// The inputs of `image` (x86_64, default settings), as `describe` lists
    /// them.
    #[track_caller]
    pub fn inputs(&self, image: &str) -> Vec<String> {
        describe_inputs(self.mzbuild(&["--arch", "x86_64", "describe", image]).ok())
    }

    /// Run `mzbuild_command(args)` to completion.
    #[track_caller]
    pub fn mzbuild(&self, args: &[&str]) -> Output {
        run(&mut self.mzbuild_command(args))
    }
}

impl Default for TempRepo {
    fn default() -> Self {
        TempRepo::new()
    }
}

/// The path of a file in `tests/` of this repository.
pub fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The profile directory the running test binary was built into
/// (`target/debug`): it is `target/debug/deps/<test>-<hash>`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("the test binary is in a directory");
    deps.parent().expect("deps/ is in the profile directory").to_path_buf()
}

/// The `xtask` binary that cargo built beside the running test binary (what
/// `env!("CARGO_BIN_EXE_xtask")` names in the test crate; cargo sets that
/// only for the `xtask` package's own integration tests, so this library
/// finds it the way cargo-test-support finds `cargo`).
pub fn xtask_bin() -> PathBuf {
    profile_dir().join(format!("xtask{}", std::env::consts::EXE_SUFFIX))
}

/// Cargo's scratch directory for integration tests (`target/tmp`, what
/// `env!("CARGO_TARGET_TMPDIR")` names in the test crate).
pub fn target_tmpdir() -> PathBuf {
    profile_dir().parent().expect("the profile directory is in target/").join("tmp")
}

/// One row of a fixture's `.expected` file (`tests/fixtures/*.expected`):
/// what a settings name (see `settings_flags`) gives an image.
#[derive(Debug)]
pub struct Vector {
    pub settings: String,
    pub image: String,
    pub fingerprint: String,
    pub spec: String,
}

/// The rows of `tests/fixtures/<file>` (tab-separated; `#` comments and
/// blank lines skipped), which must start with its provenance header.
#[track_caller]
pub fn vectors(file: &str) -> Vec<Vector> {
    let text = std::fs::read_to_string(tests_dir().join("fixtures").join(file)).unwrap();
    // The files are the independent anchors of fingerprints: each says
    // where its rows came from.
    assert!(text.starts_with("# Provenance: "), "{file} does not start with its `# Provenance: ` header");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let [settings, image, fingerprint, spec] = cols[..] else { panic!("bad row {line:?} in {file}") };
            Vector {
                settings: settings.into(),
                image: image.into(),
                fingerprint: fingerprint.into(),
                spec: spec.into(),
            }
        })
        .collect()
}

/// The command-line flags of a settings name of the `.expected` files.
#[track_caller]
pub fn settings_flags(settings: &str) -> &'static [&'static str] {
    match settings {
        "optimized" => &["--arch", "x86_64"],
        "release" => &["--release", "--arch", "x86_64"],
        "dev" => &["--dev", "--arch", "x86_64"],
        "dev-coverage" => &["--dev", "--coverage", "--arch", "x86_64"],
        "optimized-address" => &["--sanitizer", "address", "--arch", "x86_64"],
        "release-aarch64" => &["--release", "--arch", "aarch64"],
        other => panic!("unknown settings `{other}` in an .expected file"),
    }
}

/// The `inputs` section of `mzbuild describe` output, one path per entry.
#[track_caller]
pub fn describe_inputs(describe: &str) -> Vec<String> {
    let mut lines = describe.lines().skip_while(|l| !l.starts_with("inputs"));
    let header = lines.next().unwrap_or_else(|| panic!("no `inputs` section in\n{describe}"));
    let inputs: Vec<String> = lines.map(|l| l.strip_prefix("  ").expect("indented input").to_string()).collect();
    // The header ends with the count, e.g. `inputs (15):`.
    let count = format!("({}):", inputs.len());
    assert!(header.ends_with(&count), "header `{header}` does not count {} inputs", inputs.len());
    inputs
}

/// `git push args...` in `repo` (running its pre-push hook) with `cargo`
/// on PATH standing for the repository's `cargo xtask` alias: it logs its
/// working directory and arguments to `cargo.log` in the scratch
/// directory and runs the `xtask` binary under test (a temporary
/// repository has no xtask of its own to build).
pub fn push(repo: &TempRepo, args: &[&str]) -> Output {
    let bin = repo.scratch().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = repo.scratch().join("cargo.log");
    let cargo = bin.join("cargo");
    std::fs::write(
        &cargo,
        format!(
            "#!/bin/sh\necho \"$PWD: $*\" >> '{}'\n[ \"$1\" = xtask ] || exit 97\nshift\nexec '{}' \"$@\"\n",
            log.display(),
            xtask_bin().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = std::process::Command::new("git");
    cmd.current_dir(repo.root()).arg("push").args(args).env("PATH", path);
    for var in SETTINGS_ENV {
        cmd.env_remove(var);
    }
    git_home(&mut cmd, empty_home());
    run(&mut cmd)
}
