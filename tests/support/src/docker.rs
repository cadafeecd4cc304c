//! The local Docker engine as the tests see it: the real `docker` CLI, what
//! the engine has (images, their files), wrappers around the CLI given to
//! the tool as `$MZ_DOCKER` (a recording `docker` that counts what the tool
//! asked docker to do, e.g. how many `buildx build`s a run started; or one
//! that fakes a command), and the guard that removes the images a test
//! built.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::registry::unique;
use super::{run, Output};

/// The real `docker` CLI, found on PATH when the test runs.
#[track_caller]
pub fn docker_path() -> String {
    let out = run(Command::new("sh").args(["-c", "command -v docker"]));
    assert_eq!(out.code, Some(0), "no `docker` on PATH (run `bash ci/stack.sh up`)\n{out}");
    out.stdout.trim().to_string()
}

/// `docker args...` as a command, to add `.env(..)` to (e.g. `DOCKER_CONFIG`).
/// It runs with the tests' empty `$HOME` and a `TMPDIR` inside it: the
/// docker CLI and buildx keep state in `~/.docker` (build refs, activity)
/// and leave `$TMPDIR/dockerfileNNNN/` behind, and a test run must not
/// write the developer's files.
pub fn command(args: &[&str]) -> Command {
    let home = super::empty_home();
    let tmp = home.join("tmp");
    std::fs::create_dir_all(&tmp).expect("creating the tests' TMPDIR");
    let mut cmd = Command::new("docker");
    cmd.args(args).env("HOME", home).env("TMPDIR", tmp).env_remove("DOCKER_CONFIG").env_remove("BUILDX_CONFIG");
    cmd
}

/// Run `docker args...` to completion.
#[track_caller]
pub fn docker(args: &[&str]) -> Output {
    run(&mut command(args))
}

/// Whether the local engine has `reference`.
pub fn image_exists(reference: &str) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", reference]).code == Some(0)
}

/// `repo:tag` of every image in the local engine.
#[track_caller]
pub fn local_images() -> Vec<String> {
    let out = docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(out.code, Some(0), "docker image ls\n{out}");
    out.stdout.lines().map(str::to_string).collect()
}

/// The paths in an image's filesystem (as `tar -t` lists them, e.g.
/// `data/message.txt`). Works for `FROM scratch` images, which have no shell:
/// the container is only created, never started.
#[track_caller]
pub fn image_files(reference: &str) -> Vec<String> {
    let created = docker(&["create", reference, "/never-run"]);
    assert_eq!(created.code, Some(0), "docker create {reference}\n{created}");
    let id = created.stdout.trim().to_string();
    let listed = run(Command::new("bash")
        .args(["-o", "pipefail", "-c", r#""$0" export "$1" | tar -t"#])
        .arg(docker_path())
        .arg(&id));
    let _ = docker(&["rm", &id]);
    assert_eq!(listed.code, Some(0), "docker export {reference} | tar -t\n{listed}");
    listed.stdout.lines().map(|l| l.trim_end_matches('/').to_string()).collect()
}

/// An executable `dir/name` for `$MZ_DOCKER`: a shell script that runs
/// `prelude` (shell lines, which may `exit` to fake a command) and then the
/// real `docker` with the same arguments.
pub fn wrapper(dir: &Path, name: &str, prelude: &str) -> PathBuf {
    let wrapper = dir.join(name);
    let script = format!("#!/bin/sh\n{prelude}exec '{}' \"$@\"\n", docker_path());
    std::fs::write(&wrapper, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// A wrapper around the real `docker` that appends each invocation's
/// arguments, one line each, to a record file, then runs the real CLI.
pub struct Recorder {
    wrapper: PathBuf,
    record: PathBuf,
}

impl Recorder {
    /// A wrapper and an empty record in `dir` (a test's scratch directory).
    pub fn new(dir: &Path) -> Recorder {
        let id = unique();
        let wrapper =
            wrapper(dir, &format!("docker-wrapper-{id}"), "printf '%s\\n' \"$*\" >> \"$MZ_TEST_DOCKER_RECORD\"\n");
        let record = dir.join(format!("docker-calls-{id}"));
        Recorder { wrapper, record }
    }

    /// Make `cmd` (the tool) use the wrapper as its docker.
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("MZ_DOCKER", &self.wrapper).env("MZ_TEST_DOCKER_RECORD", &self.record)
    }

    /// Every recorded invocation's arguments, one line each, in order.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.record).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// The recorded `docker [--context C] buildx build` invocations.
    pub fn builds(&self) -> Vec<String> {
        self.calls().into_iter().filter(|l| is_build(l)).collect()
    }

    /// The `-t` tags of each recorded build, one list per build.
    pub fn build_tags(&self) -> Vec<Vec<String>> {
        self.builds().iter().map(|l| tags(l)).collect()
    }

    /// Forget what was recorded so far.
    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.record);
    }
}

/// Whether a recorded invocation is a build (`buildx build`, after any
/// global options such as `--context`).
pub fn is_build(call: &str) -> bool {
    let words: Vec<&str> = call.split(' ').collect();
    words.windows(2).any(|w| w == ["buildx", "build"])
}

/// The `-t` tags of one recorded invocation.
pub fn tags(call: &str) -> Vec<String> {
    let words: Vec<&str> = call.split(' ').collect();
    words.windows(2).filter(|w| w[0] == "-t").map(|w| w[1].to_string()).collect()
}

/// Removes, when dropped (also when the test fails), every local image whose
/// reference (`repo:tag`) contains `/<id>/` for one of its ids: the images a
/// test built under its unique registry paths. Errors are ignored.
pub struct RemoveImages {
    ids: Vec<String>,
}

impl RemoveImages {
    /// A guard for the images under the registry paths `ids`.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(ids: I) -> RemoveImages {
        RemoveImages { ids: ids.into_iter().map(Into::into).collect() }
    }
}

impl Drop for RemoveImages {
    fn drop(&mut self) {
        let Ok(out) = command(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]).stderr(Stdio::null()).output()
        else {
            return;
        };
        let mine: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|r| self.ids.iter().any(|id| r.contains(&format!("/{id}/"))))
            .map(str::to_string)
            .collect();
        if !mine.is_empty() {
            let _ = command(&["rmi"]).args(&mine).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
}

/// Copy the static busybox that `ci/stack.sh up` installs to `dir/busybox`,
/// for a `FROM scratch` image whose RUN step needs a program
/// (`COPY busybox /bin/busybox`).
#[track_caller]
pub fn copy_busybox(dir: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "/bin/busybox is missing: `bash ci/stack.sh up` installs busybox-static");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(busybox, dir.join("busybox")).unwrap();
}

/// Make the engine's build cache forget the steps whose description
/// contains `marker` (e.g. a RUN command holding a test's unique id) and
/// every record built on them, as on a fresh CI agent, without touching
/// anything else in the cache: others share the engine (`docker buildx
/// prune -af` would empty it for every concurrent test). The images that
/// hold those layers must be removed first (`docker rmi`): a record an
/// image uses is not pruned.
#[track_caller]
pub fn forget_build_cache(marker: &str) {
    for _ in 0..5 {
        let du = docker(&["buildx", "du", "--verbose"]);
        assert_eq!(du.code, Some(0), "docker buildx du\n{du}");
        let doomed = mzbuild::docker::build_cache_records_to_prune(&du.stdout, marker);
        if doomed.is_empty() {
            return;
        }
        for id in &doomed {
            let out = docker(&["buildx", "prune", "-f", "--filter", &format!("id={id}")]);
            assert_eq!(out.code, Some(0), "docker buildx prune --filter id={id}\n{out}");
        }
    }
    panic!("the build cache still holds records of `{marker}` after 5 rounds of pruning");
}
