//! The local Docker engine as the tests see it: the real `docker` CLI, what
//! the engine has, and a recording `docker` (a wrapper around the real CLI,
//! given to the tool as `$MZ_DOCKER`) that counts what the tool asked
//! docker to do, e.g. how many `buildx build`s a run started.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::registry::unique;
use super::run;

/// The real `docker` CLI, found on PATH when the test runs.
pub fn docker_path() -> String {
    let out = run(Command::new("sh").args(["-c", "command -v docker"]));
    assert_eq!(out.code, Some(0), "no `docker` on PATH (run `bash ci/stack.sh up`)\n{out}");
    out.stdout.trim().to_string()
}

/// `repo:tag` of every image in the local engine.
pub fn local_images() -> Vec<String> {
    let out = run(Command::new("docker").args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert_eq!(out.code, Some(0), "docker image ls\n{out}");
    out.stdout.lines().map(str::to_string).collect()
}

/// Whether the local engine has `reference`.
pub fn image_exists(reference: &str) -> bool {
    run(Command::new("docker").args(["image", "inspect", "--format", "ok", reference])).code == Some(0)
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
        let wrapper = dir.join(format!("docker-wrapper-{id}"));
        let record = dir.join(format!("docker-calls-{id}"));
        let script =
            format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$MZ_TEST_DOCKER_RECORD\"\nexec {} \"$@\"\n", docker_path());
        std::fs::write(&wrapper, script).unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
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
        self.builds()
            .iter()
            .map(|l| {
                let words: Vec<&str> = l.split(' ').collect();
                words.windows(2).filter(|w| w[0] == "-t").map(|w| w[1].to_string()).collect()
            })
            .collect()
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
