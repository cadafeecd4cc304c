//! Integration tests: local builds (`build`, `run`) on the real Docker engine,
//! with the real `xtask` binary, on this repository and on temporary git
//! repositories.
//!
//! Every command gets its own `--image-registry 127.0.0.1:5000/t-<unique>`, so
//! specs never collide with other tests or earlier runs, and every test
//! removes the tags it created when it ends (also when it fails).

// Tests drive real processes and read their own environment directly;
// the repository ban (clippy.toml) is for the engine.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{run, xtask_command, Output, TempRepo};

/// The plain registry that `ci/stack.sh up` starts.
const REGISTRY: &str = "127.0.0.1:5000";

/// A registry path that no other test, and no earlier run, uses:
/// `127.0.0.1:5000/t-<unique>`.
fn unique_registry() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{REGISTRY}/t-{:x}-{:x}-{n}", std::process::id(), nanos % (1 << 48))
}

/// The real `docker` CLI, found on PATH when the test runs.
fn docker_path() -> PathBuf {
    let out = run(Command::new("sh").args(["-c", "command -v docker"]));
    assert_eq!(out.code, Some(0), "no `docker` on PATH (run `bash ci/stack.sh up`)\n{out}");
    PathBuf::from(out.stdout.trim())
}

fn docker(args: &[&str]) -> Output {
    run(Command::new(docker_path()).args(args))
}

/// Removes the image tags a test created when it goes out of scope (also when
/// the test fails). Errors (e.g. a tag that was never built) are ignored.
#[derive(Default)]
struct Cleanup {
    specs: Vec<String>,
}

impl Cleanup {
    fn add(&mut self, spec: &str) {
        if !self.specs.iter().any(|s| s == spec) {
            self.specs.push(spec.to_string());
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.specs.is_empty() {
            return;
        }
        let _ = Command::new(docker_path())
            .arg("rmi")
            .args(&self.specs)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// `mzbuild --root ROOT --image-registry REGISTRY args...` on `repo`, with no
/// `$MZ_DOCKER` from the developer's shell.
fn mz_command(repo: &TempRepo, registry: &str, args: &[&str]) -> Command {
    let mut all = vec!["--image-registry", registry];
    all.extend_from_slice(args);
    let mut cmd = repo.mzbuild_command(&all);
    cmd.env_remove("MZ_DOCKER");
    cmd
}

fn mz(repo: &TempRepo, registry: &str, args: &[&str]) -> Output {
    run(&mut mz_command(repo, registry, args))
}

/// The one-line output of a successful introspection command.
#[track_caller]
fn line(repo: &TempRepo, registry: &str, args: &[&str]) -> String {
    let out = mz(repo, registry, args);
    let stdout = out.ok();
    assert!(stdout.ends_with('\n') && stdout.lines().count() == 1, "expected one line\n{out}");
    stdout.trim_end().to_string()
}

fn fingerprint(repo: &TempRepo, registry: &str, image: &str) -> String {
    let fp = line(repo, registry, &["fingerprint", image]);
    assert_eq!(fp.len(), 32, "not a fingerprint: {fp}");
    fp
}

/// The spec of `image`, registered for removal at the end of the test.
fn spec(repo: &TempRepo, registry: &str, image: &str, cleanup: &mut Cleanup) -> String {
    let spec = line(repo, registry, &["spec", image]);
    let prefix = format!("{registry}/{image}:mzbuild-");
    assert!(spec.starts_with(&prefix), "spec `{spec}` does not start with `{prefix}`");
    cleanup.add(&spec);
    spec
}

/// Assert a clean failure: exit status 1 (an error, not a panic), and an
/// `error: ` line. Progress lines may come first; returns the stderr from the
/// `error: ` line on.
#[track_caller]
fn failure(out: &Output) -> &str {
    assert_eq!(out.code, Some(1), "expected a clean failure (exit status 1)\n{out}");
    assert!(!out.stderr.contains("panicked"), "the error is a panic\n{out}");
    let at = if out.stderr.starts_with("error: ") {
        0
    } else {
        out.stderr.find("\nerror: ").unwrap_or_else(|| panic!("no `error: ` line on stderr\n{out}")) + 1
    };
    &out.stderr[at..]
}

/// Whether the local engine has `reference`.
fn image_exists(reference: &str) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", reference]).code == Some(0)
}

/// The paths in an image's filesystem (as `tar -t` lists them, e.g.
/// `data/message.txt`). Works for `FROM scratch` images, which have no shell:
/// the container is only created, never started.
fn image_files(reference: &str) -> Vec<String> {
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

/// The repositories of the plain registry under `registry`'s path (e.g.
/// `t-1a2b/app`). The catalog is sorted, so asking for the entries after the
/// bare path gets those under it first.
fn pushed_repositories(registry: &str) -> Vec<String> {
    let path = registry.strip_prefix(&format!("{REGISTRY}/")).expect("a path on the plain registry");
    let url = format!("http://{REGISTRY}/v2/_catalog?n=1000&last={path}");
    let out = run(Command::new("curl").args(["-sS", "--fail", &url]));
    assert_eq!(out.code, Some(0), "curl {url}\n{out}");
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {}", out.stdout));
    let repos = v["repositories"].as_array().unwrap_or_else(|| panic!("{url}: no `repositories`: {v}"));
    repos.iter().map(|r| r.as_str().unwrap().to_string()).filter(|r| r.starts_with(&format!("{path}/"))).collect()
}

/// The HTTP status of `GET /v2/<path>/<image>/tags/list` on the plain registry.
fn tags_list_status(registry: &str, image: &str) -> String {
    let path = registry.strip_prefix(&format!("{REGISTRY}/")).unwrap();
    let url = format!("http://{REGISTRY}/v2/{path}/{image}/tags/list");
    let out = run(Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]));
    assert_eq!(out.code, Some(0), "curl {url}\n{out}");
    out.stdout
}

/// Write an image directory: `mzbuild.yml` and `Dockerfile`.
fn image(repo: &TempRepo, dir: &str, mzbuild_yml: &str, dockerfile: &str) {
    repo.write(&format!("{dir}/mzbuild.yml"), mzbuild_yml).write(&format!("{dir}/Dockerfile"), dockerfile);
}

const WORDS_V1: &str = "pub fn text() -> &'static str {\n    \"words v1\"\n}\n";
const WORDS_V2: &str = "pub fn text() -> &'static str {\n    \"words v2\"\n}\n";

/// A cargo workspace with a library and a binary that depends on it by path,
/// and four images:
///
/// ```text
/// root (FROM scratch) <- hello (cargo-build of `hello`) <- app
///                     <- data (copy of test/data/*.txt) <- app
/// ```
///
/// `app` runs `hello /data/message.txt`, which prints the library's text and
/// the file's contents.
fn cargo_fixture() -> TempRepo {
    let repo = TempRepo::new();
    repo.write(".gitignore", "/target/\n")
        .write(
            "Cargo.toml",
            r#"[workspace]
resolver = "2"
members = ["libs/*", "services/*"]

[workspace.metadata.mzbuild]
image-rustflags = ["-C", "target-feature=+crt-static"]
"#,
        )
        .write("libs/words/Cargo.toml", "[package]\nname = \"words\"\nversion = \"0.1.0\"\nedition = \"2021\"\n")
        .write("libs/words/src/lib.rs", WORDS_V1)
        .write(
            "services/hello/Cargo.toml",
            "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nwords = { path = \"../../libs/words\" }\n",
        )
        .write(
            "services/hello/src/main.rs",
            r#"fn main() {
    let path = std::env::args().nth(1).expect("usage: hello FILE");
    let data = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    print!("{} | {}", words::text(), data);
}
"#,
        )
        .write("test/data/message.txt", "from the data file\n")
        .write("test/data/notes.md", "not matched by *.txt\n");
    image(&repo, "images/root", "name: root\n", "FROM scratch\nCOPY root.txt /etc/root.txt\n");
    // Unique content: tests running at once must not share image IDs, or
    // one test's cleanup (docker rmi) races another's build.
    repo.write("images/root/root.txt", format!("root {}\n", unique_registry()));
    image(
        &repo,
        "images/hello",
        "name: hello\npre-image:\n  - type: cargo-build\n    bin: hello\n",
        "MZFROM root\nCOPY hello /usr/local/bin/hello\n",
    );
    repo.write("images/hello/.gitignore", "/hello\n");
    image(
        &repo,
        "images/data",
        "name: data\npre-image:\n  - type: copy\n    source: test/data\n    destination: data\n    matching: \"*.txt\"\n",
        "MZFROM root\nCOPY data/ /data/\n",
    );
    repo.write("images/data/.gitignore", "/data\n");
    image(
        &repo,
        "images/app",
        "name: app\n",
        "MZFROM hello AS h\nMZFROM data\nCOPY --from=h /usr/local/bin/hello /usr/local/bin/hello\n\
         ENTRYPOINT [\"/usr/local/bin/hello\", \"/data/message.txt\"]\n",
    );
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.args(["generate-lockfile", "--offline"]).current_dir(repo.root());
    let out = run(&mut cargo);
    assert_eq!(out.code, Some(0), "cargo generate-lockfile\n{out}");
    repo.commit_all();
    assert!(repo.git(["ls-files"]).lines().any(|l| l == "Cargo.lock"), "Cargo.lock is not committed");
    repo
}

/// Images that only `COPY` a file each (no cargo): `names` with no
/// dependencies between them.
fn copy_fixture(names: &[&str]) -> TempRepo {
    let repo = TempRepo::new();
    repo.write(".gitignore", "/target/\n");
    for name in names {
        image(&repo, &format!("images/{name}"), &format!("name: {name}\n"), "FROM scratch\nCOPY file.txt /file.txt\n");
        repo.write(&format!("images/{name}/file.txt"), format!("{name} {}\n", unique_registry()));
    }
    repo.commit_all();
    repo
}

#[test]
fn this_repository_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap();
    let root = root.to_str().unwrap();
    let registry = unique_registry();
    let mut cleanup = Cleanup::default();
    let mz = |args: &[&str]| {
        let mut cmd = xtask_command(["mzbuild", "--root", root, "--image-registry", &registry]);
        cmd.args(args).env_remove("MZ_DOCKER");
        common::git_home(&mut cmd, common::empty_home());
        run(&mut cmd)
    };
    for image in ["base", "greeter", "greetings", "bundle"] {
        let out = mz(&["spec", image]);
        cleanup.add(out.ok().trim());
    }
    let out = mz(&["run", "bundle", "--", "Alice"]);
    assert_eq!(out.ok(), "greeter 0.1.0: hello, Alice! (from the greetings image)\n", "{out}");
    for spec in &cleanup.specs {
        assert!(image_exists(spec), "{spec} was not built locally\n{out}");
    }
}

#[test]
fn temp_repo_app_runs_and_follows_its_path_dependency() {
    let repo = cargo_fixture();
    let registry = unique_registry();
    let mut cleanup = Cleanup::default();
    for image in ["root", "hello", "data", "app"] {
        spec(&repo, &registry, image, &mut cleanup);
    }

    let out = mz(&repo, &registry, &["run", "app"]);
    assert_eq!(out.ok(), "words v1 | from the data file\n", "{out}");

    let before: Vec<String> = ["hello", "data", "app"].iter().map(|i| fingerprint(&repo, &registry, i)).collect();
    repo.write("libs/words/src/lib.rs", WORDS_V2);
    let after: Vec<String> = ["hello", "data", "app"].iter().map(|i| fingerprint(&repo, &registry, i)).collect();
    assert_ne!(before[0], after[0], "editing the path dependency libs/words did not change `hello`");
    assert_eq!(before[1], after[1], "editing libs/words changed `data`, which does not build it");
    assert_ne!(before[2], after[2], "editing libs/words did not change `app` (depends on `hello`)");
    for image in ["hello", "app"] {
        spec(&repo, &registry, image, &mut cleanup);
    }

    let out = mz(&repo, &registry, &["run", "app"]);
    assert_eq!(out.ok(), "words v2 | from the data file\n", "{out}");
    // Only what changed was rebuilt: `data` and `root` were already there.
    assert!(out.stderr.contains("mzbuild: building hello"), "{out}");
    assert!(!out.stderr.contains("mzbuild: building data"), "`data` was rebuilt\n{out}");
    assert!(!out.stderr.contains("mzbuild: building root"), "`root` was rebuilt\n{out}");
}

#[test]
fn ignored_outputs_neither_count_nor_reach_the_image() {
    let repo = cargo_fixture();
    let registry = unique_registry();
    let mut cleanup = Cleanup::default();
    let fps = |repo: &TempRepo| -> Vec<String> {
        ["hello", "data", "app"].iter().map(|i| fingerprint(repo, &registry, i)).collect()
    };
    let clean = fps(&repo);

    repo.write("images/hello/hello", "junk, not the binary\n").write("images/data/data/stale.txt", "stale\n");
    let ignored = repo.git(["status", "--porcelain", "--ignored", "--untracked-files=all"]);
    for path in ["images/hello/hello", "images/data/data/stale.txt"] {
        assert!(ignored.lines().any(|l| l == format!("!! {path}")), "git does not ignore {path}:\n{ignored}");
    }
    assert_eq!(fps(&repo), clean, "ignored files in contexts changed fingerprints");

    // The control: the same kind of file, not ignored, counts.
    repo.write("images/data/visible.txt", "seen\n");
    assert_ne!(fingerprint(&repo, &registry, "data"), clean[1], "an untracked, not ignored file did not count");
    repo.remove("images/data/visible.txt");

    let data = spec(&repo, &registry, "data", &mut cleanup);
    spec(&repo, &registry, "root", &mut cleanup);
    let out = mz(&repo, &registry, &["build", "data"]);
    assert_eq!(out.ok(), format!("{data}\n"), "{out}");
    assert!(!repo.path("images/data/data/stale.txt").exists(), "the stale ignored file is still in the context");
    assert_eq!(std::fs::read_to_string(repo.path("images/data/data/message.txt")).unwrap(), "from the data file\n");
    assert!(!repo.path("images/data/data/notes.md").exists(), "copied a file that `matching` excludes");

    let files = image_files(&data);
    for present in ["data/message.txt", "etc/root.txt"] {
        assert!(files.iter().any(|f| f == present), "{present} is not in {data}: {files:?}");
    }
    for absent in ["data/stale.txt", "data/notes.md"] {
        assert!(!files.iter().any(|f| f == absent), "{absent} is in {data}: {files:?}");
    }
    assert_eq!(fps(&repo)[1], clean[1], "building changed the fingerprint of `data`");
}

#[test]
fn a_local_build_pushes_nothing() {
    let repo = cargo_fixture();
    let registry = unique_registry();
    let mut cleanup = Cleanup::default();
    let specs: Vec<String> =
        ["root", "hello", "data", "app"].iter().map(|i| spec(&repo, &registry, i, &mut cleanup)).collect();
    assert_eq!(pushed_repositories(&registry), Vec::<String>::new(), "the registry already has {registry}");

    let out = mz(&repo, &registry, &["build", "app"]);
    assert_eq!(out.ok(), format!("{}\n", specs[3]), "{out}");
    for spec in &specs {
        assert!(image_exists(spec), "{spec} was not built locally\n{out}");
    }
    assert_eq!(pushed_repositories(&registry), Vec::<String>::new(), "`build` pushed\n{out}");
    for image in ["root", "hello", "data", "app"] {
        assert_eq!(tags_list_status(&registry, image), "404", "`build` pushed {registry}/{image}\n{out}");
    }
}

#[test]
fn a_broken_dockerfile_fails_with_the_log_tail() {
    let repo = copy_fixture(&["fine"]);
    image(&repo, "images/broken", "name: broken\n", "FROM scratch\nBOGUS nonsense\n");
    image(&repo, "images/after", "name: after\n", "MZFROM broken\nCOPY file.txt /after.txt\n");
    repo.write("images/after/file.txt", "after\n");
    repo.commit_all();
    let registry = unique_registry();
    let mut cleanup = Cleanup::default();
    let broken = spec(&repo, &registry, "broken", &mut cleanup);
    let after = spec(&repo, &registry, "after", &mut cleanup);
    let fine = spec(&repo, &registry, "fine", &mut cleanup);

    // One job: `broken` goes first (most dependants), its dependant `after`
    // fails at once, and `fine`, which does not depend on it, is still built.
    let out = mz(&repo, &registry, &["build", "--jobs", "1", "--timeout", "120s", "after", "fine"]);
    let error = failure(&out);
    let log = repo.path("target/mzbuild/logs/broken.log");
    let log_str = log.to_str().unwrap();
    assert!(error.contains(log_str), "the error does not show the log path {log_str}\n{out}");
    // The tail is indented and quoted with `|`; the rest is the tool's own words.
    let (tail, own): (Vec<&str>, Vec<&str>) = error.lines().partition(|l| l.trim_start().starts_with('|'));
    assert!(
        own.iter().any(|l| l.replace(log_str, "").contains("broken")),
        "the error does not name the image `broken` (other than in its log path)\n{out}"
    );
    assert!(
        tail.iter().any(|l| l.contains("unknown instruction") && l.contains("BOGUS")),
        "the error does not show the docker error in a tail of the log\n{out}"
    );
    assert!(
        own.iter().any(|l| l.trim_start().starts_with("after:") && l.contains("`broken`")),
        "the error does not report `after` as failed because of `broken`\n{out}"
    );
    assert!(!out.stderr.contains("mzbuild: building after"), "`after` was started on a failed dependency\n{out}");
    assert!(!own.iter().any(|l| l.trim_start().starts_with("fine:")), "the error lists the image that built\n{out}");
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}\n{out}", log.display()));
    assert!(text.contains("unknown instruction: BOGUS"), "{} does not hold the docker error:\n{text}", log.display());
    assert!(image_exists(&fine), "the independent image `fine` was not built\n{out}");
    assert!(!image_exists(&broken) && !image_exists(&after), "a failed image exists\n{out}");
    assert_eq!(out.stdout, "", "{out}");
}

#[test]
fn independent_images_build_with_two_jobs() {
    let names = ["one", "three", "two"];
    let repo = copy_fixture(&names);
    let registry = unique_registry();
    let mut cleanup = Cleanup::default();
    let specs: Vec<String> = names.iter().map(|i| spec(&repo, &registry, i, &mut cleanup)).collect();
    for spec in &specs {
        assert!(!image_exists(spec), "{spec} exists before the build");
    }

    let out = mz(&repo, &registry, &["build", "--jobs", "2", "one", "three", "two"]);
    let expected: String = specs.iter().map(|s| format!("{s}\n")).collect();
    assert_eq!(out.ok(), expected, "{out}");
    for spec in &specs {
        assert!(image_exists(spec), "{spec} was not built\n{out}");
    }
    for (name, spec) in names.iter().zip(&specs) {
        let files = image_files(spec);
        assert!(files.iter().any(|f| f == "file.txt"), "no file.txt in {name} ({spec}): {files:?}");
    }
}

#[test]
fn missing_buildx_is_reported() {
    let repo = copy_fixture(&["one"]);
    let registry = unique_registry();
    let mut cleanup = Cleanup::default();
    let one = spec(&repo, &registry, "one", &mut cleanup);
    let wrapper = repo.scratch().join("docker-without-buildx");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = buildx ]; then echo \"docker: 'buildx' is not a docker command.\" >&2; exit 1; fi\n\
             exec '{}' \"$@\"\n",
            docker_path().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The wrapper reaches the engine: only buildx is missing.
    let version = run(Command::new(&wrapper).args(["version", "--format", "{{.Server.Version}}"]));
    assert_eq!(version.code, Some(0), "the wrapper does not reach the engine\n{version}");

    let out = run(mz_command(&repo, &registry, &["build", "one"]).env("MZ_DOCKER", &wrapper));
    let error = failure(&out);
    assert!(error.contains("buildx is not installed"), "does not say that buildx is missing\n{out}");
    assert!(error.contains("docker-buildx"), "does not say how to install buildx\n{out}");
    assert!(!error.contains("not running"), "blames the engine\n{out}");
    assert_eq!(out.stdout, "", "{out}");
    assert!(!image_exists(&one), "{one} was built without buildx");
}

#[test]
fn engine_not_running_is_reported() {
    let repo = copy_fixture(&["one"]);
    let registry = unique_registry();
    let socket = repo.scratch().join("no-engine-here.sock");
    assert!(!socket.exists());
    let out = run(mz_command(&repo, &registry, &["build", "one"])
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env_remove("DOCKER_CONTEXT"));
    let error = failure(&out);
    assert!(!out.stderr.contains("mzbuild: preparing"), "went on to prepare a build without an engine\n{out}");
    assert!(error.contains("engine is not running"), "does not say that the engine is not running\n{out}");
    assert!(error.contains("ci/stack.sh up"), "does not say how to start the engine\n{out}");
    assert_eq!(out.stdout, "", "{out}");
}

/// A build that runs past `--timeout` is killed (its whole process group;
/// buildkit then cancels the RUN step) and reported as timed out.
#[test]
fn a_build_over_the_timeout_is_killed() {
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "/bin/busybox is missing: `bash ci/stack.sh up` installs busybox-static");
    let repo = TempRepo::new();
    repo.write("slow/mzbuild.yml", "name: slow\n");
    repo.write(
        "slow/Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"300\"]\n",
    );
    std::fs::copy(busybox, repo.path("slow/busybox")).unwrap();
    repo.commit_all();
    let registry = unique_registry();
    let start = std::time::Instant::now();
    let out = repo.mzbuild(&["--image-registry", &registry, "build", "slow", "--timeout", "3s"]);
    let took = start.elapsed();
    let err = failure(&out);
    assert!(err.contains("slow: FAILED: timed out after 3s and was killed"), "{err}");
    // Killed, not waited for: the RUN step alone would take 300 s.
    assert!(took < std::time::Duration::from_secs(120), "took {took:?}");
    // The RUN step's container is gone too.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let ps = std::process::Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains("/bin/busybox sleep 300"),
        "the build's sleep is still running"
    );
}

/// A pre-image output that git does not ignore would become an input once
/// built (the fingerprint would change after every build): a warning says
/// which and how to fix it; with the output ignored, no warning.
#[test]
fn unignored_pre_image_outputs_are_reported() {
    let repo = TempRepo::new();
    repo.write("img/mzbuild.yml", "name: img\npre-image:\n  - type: copy\n    source: data\n    destination: stuff\n");
    repo.write("img/Dockerfile", "FROM scratch\nCOPY stuff /stuff\n");
    repo.write("data/a.txt", "a\n");
    repo.write("data/b.txt", "b\n");
    repo.commit_all();
    let registry = unique_registry();
    let out = repo.mzbuild(&["--image-registry", &registry, "build", "img"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "warning: image `img`: pre-image output img/stuff/a.txt (and 1 more) is not git-ignored, so it becomes an input \
             and the image's fingerprint changes after every build; add `/stuff` to img/.gitignore"
        ),
        "{}",
        out.stderr
    );
    let mut cleanup = Cleanup { specs: vec![] };
    cleanup.add(&format!("{registry}/img:mzbuild-{}", repo.mzbuild(&["fingerprint", "img"]).stdout.trim()));
    repo.write("img/.gitignore", "/stuff\n");
    repo.commit_all();
    let out = repo.mzbuild(&["--image-registry", &registry, "build", "img"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    cleanup.add(&format!("{registry}/img:mzbuild-{}", repo.mzbuild(&["fingerprint", "img"]).stdout.trim()));
}

/// Two building runs in one repository do not interleave (they share the
/// image directories and the logs): the second waits for the first.
#[test]
fn concurrent_runs_in_one_repository_take_turns() {
    let repo = TempRepo::new();
    repo.write("slow/mzbuild.yml", "name: slow\n");
    // The unique id makes the RUN step new to the build cache.
    let id = unique_registry().replace(['/', ':', '.'], "-");
    repo.write(
        "slow/Dockerfile",
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"sleep 3 # {id}\"]\n"
        ),
    );
    std::fs::copy("/bin/busybox", repo.path("slow/busybox")).unwrap();
    repo.commit_all();
    let registry = unique_registry();
    let mut first = repo.mzbuild_command(&["--image-registry", &registry, "build", "--force", "slow"]);
    let first = first.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Until the first run holds the lock and is building.
    let log = repo.path("target/mzbuild/logs/slow.log");
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("RUN") {
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "the first build did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = repo.mzbuild(&["--image-registry", &registry, "build", "--force", "slow"]);
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert!(
        second
            .stderr
            .starts_with("mzbuild: another mzbuild run is building in this repository; waiting for it to finish\n"),
        "{}",
        second.stderr
    );
    let mut cleanup = Cleanup::default();
    cleanup.add(&format!("{registry}/slow:mzbuild-{}", repo.mzbuild(&["fingerprint", "slow"]).stdout.trim()));
}
