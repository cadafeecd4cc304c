//! Integration tests: local builds (`build`, `run`) on the real Docker engine,
//! with the real `xtask` binary, on this repository and on temporary git
//! repositories.
//!
//! Every command gets its own `--image-registry 127.0.0.1:5000/t-<unique>`, so
//! specs never collide with other tests or earlier runs, and every test
//! removes the tags it created when it ends (also when it fails).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::child::Running;
use support::docker::{copy_busybox, image_exists, image_files};
use support::registry::{catalog, scratch, tags_status, unique};
use support::{processes, run, wait_until, xtask_command, Output, TempRepo};

/// `mzbuild --root ROOT --image-registry REGISTRY args...` on `repo`.
fn mz_command(repo: &TempRepo, registry: &str, args: &[&str]) -> Command {
    let mut all = vec!["--image-registry", registry];
    all.extend_from_slice(args);
    repo.mzbuild_command(&all)
}

fn mz(repo: &TempRepo, registry: &str, args: &[&str]) -> Output {
    run(&mut mz_command(repo, registry, args))
}

#[track_caller]
fn fingerprint(repo: &TempRepo, registry: &str, image: &str) -> String {
    mz(repo, registry, &["fingerprint", image]).fingerprint()
}

/// The spec of `image`, checked to be under `registry`.
#[track_caller]
fn spec(repo: &TempRepo, registry: &str, image: &str) -> String {
    let spec = mz(repo, registry, &["spec", image]).line();
    let prefix = format!("{registry}/{image}:mzbuild-");
    assert!(spec.starts_with(&prefix), "spec `{spec}` does not start with `{prefix}`");
    spec
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
    repo.image("images/root", "name: root\n", "FROM scratch\nCOPY root.txt /etc/root.txt\n");
    // Unique content: tests running at once must not share image IDs, or
    // one test's cleanup (docker rmi) races another's build.
    repo.write("images/root/root.txt", format!("root {}\n", unique()));
    repo.image(
        "images/hello",
        "name: hello\npre-image:\n  - type: cargo-build\n    bin: hello\n",
        "MZFROM root\nCOPY hello /usr/local/bin/hello\n",
    );
    repo.write("images/hello/.gitignore", "/hello\n");
    repo.image(
        "images/data",
        "name: data\npre-image:\n  - type: copy\n    source: test/data\n    destination: data\n    matching: \"*.txt\"\n",
        "MZFROM root\nCOPY data/ /data/\n",
    );
    repo.write("images/data/.gitignore", "/data\n");
    repo.image(
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
        repo.image(&format!("images/{name}"), &format!("name: {name}\n"), "FROM scratch\nCOPY file.txt /file.txt\n");
        repo.write(&format!("images/{name}/file.txt"), format!("{name} {}\n", unique()));
    }
    repo.commit_all();
    repo
}

/// Ctrl-C while the cargo pre-image runs (here: a build script that
/// sleeps): cargo stops, and the run says it was interrupted, not `FAILED`
/// with cargo's SIGKILL; `build` logged in nowhere, so no logins are
/// mentioned. (No `hello: interrupted` line is printed: the image had not
/// reached its build; an assertion on "every such line" held for none.)
#[test]
fn ctrl_c_during_the_cargo_pre_image_is_an_interruption() {
    let repo = cargo_fixture();
    // Unique, so that the process found is this test's.
    let marker = unique();
    repo.write(
        "services/hello/build.rs",
        format!("fn main() {{\n    // {marker}\n    std::thread::sleep(std::time::Duration::from_secs(600));\n}}\n"),
    );
    let (registry, _images) = scratch();
    // Its dependency built: hello's build is reported as soon as cargo ends.
    mz(&repo, &registry, &["build", "root"]).ok();
    let mut running = Running::spawn(&mut mz_command(&repo, &registry, &["build", "hello"]));
    let script = |p: &String| p.contains(repo.root_str()) && p.contains("build-script-build") && !p.contains("rustc");
    let started = wait_until(Duration::from_secs(300), || running.exited() || processes().iter().any(script));
    assert!(started && !running.exited(), "the build script did not start\n{}", running.stderr_so_far());
    let status = run(Command::new("kill").args(["-INT", &running.pid().to_string()]));
    assert_eq!(status.code, Some(0), "{status}");
    let (out, _) = running.finish(Duration::from_secs(60));
    assert_eq!(out.code, Some(130), "{out}");
    assert!(out.stderr.lines().any(|l| l == "mzbuild: interrupted; stopped running builds"), "{out}");
    assert!(!out.stderr.contains("FAILED") && !out.stderr.contains("SIGKILL"), "{out}");
    assert!(
        !out.stderr.lines().any(|l| l.starts_with("mzbuild: hello: ") && l != "mzbuild: hello: interrupted"),
        "{out}"
    );
    assert!(!out.stderr.contains("docker logins"), "{out}");
    let gone = wait_until(Duration::from_secs(30), || !processes().iter().any(script));
    assert!(gone, "the build script outlived the interrupt");
}

#[test]
fn this_repository_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap();
    let root = root.to_str().unwrap();
    let (registry, _images) = scratch();
    let mz = |args: &[&str]| {
        let mut cmd = xtask_command(["mzbuild", "--root", root, "--image-registry", &registry]);
        cmd.args(args);
        support::git_home(&mut cmd, support::empty_home());
        run(&mut cmd)
    };
    let specs: Vec<String> =
        ["base", "greeter", "greetings", "bundle"].iter().map(|i| mz(&["spec", i]).line()).collect();
    let out = mz(&["run", "bundle", "--", "Alice"]);
    assert_eq!(out.ok(), "greeter 0.1.0: hello, Alice! (from the greetings image)\n", "{out}");
    for spec in &specs {
        assert!(image_exists(spec), "{spec} was not built locally\n{out}");
    }
}

#[test]
fn temp_repo_app_runs_and_follows_its_path_dependency() {
    let repo = cargo_fixture();
    let (registry, _images) = scratch();
    for image in ["root", "hello", "data", "app"] {
        spec(&repo, &registry, image);
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
        spec(&repo, &registry, image);
    }

    // With the status line forced (stderr is a pipe here): cargo's units
    // counted as they come, and its "done" line.
    let out = mz(&repo, &registry, &["--progress", "tty", "run", "app"]);
    assert_eq!(out.ok(), "words v2 | from the data file\n", "{out}");
    assert!(out.stderr.contains("mzbuild: cargo build: Compiling "), "{out}");
    assert!(out.stderr.contains("mzbuild: cargo build: done in "), "{out}");
    // Only what changed was rebuilt: `data` and `root` were already there.
    assert!(out.stderr.contains("mzbuild: building hello"), "{out}");
    assert!(!out.stderr.contains("mzbuild: building data"), "`data` was rebuilt\n{out}");
    assert!(!out.stderr.contains("mzbuild: building root"), "`root` was rebuilt\n{out}");
}

#[test]
fn ignored_outputs_neither_count_nor_reach_the_image() {
    let repo = cargo_fixture();
    let (registry, _images) = scratch();
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

    let data = spec(&repo, &registry, "data");
    spec(&repo, &registry, "root");
    let out = mz(&repo, &registry, &["build", "data"]);
    assert_eq!(out.ok(), format!("{data}\n"), "{out}");
    // Not deleted (it is not mzbuild's to delete), just not sent.
    assert!(repo.path("images/data/data/stale.txt").exists(), "the stale ignored file was deleted");
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
    let (registry, _images) = scratch();
    let specs: Vec<String> = ["root", "hello", "data", "app"].iter().map(|i| spec(&repo, &registry, i)).collect();
    assert_eq!(catalog(&registry), Vec::<String>::new(), "the registry already has {registry}");

    let out = mz(&repo, &registry, &["build", "app"]);
    assert_eq!(out.ok(), format!("{}\n", specs[3]), "{out}");
    for spec in &specs {
        assert!(image_exists(spec), "{spec} was not built locally\n{out}");
    }
    // Again, as a document: everything is there; `acquire` finds it too.
    for command in ["build", "acquire"] {
        let out = mz(&repo, &registry, &[command, "app", "--json"]);
        let rows = support::json::rows(out.ok(), command);
        let mut got: Vec<(&str, &str)> =
            rows.iter().map(|r| (r["name"].as_str().unwrap(), r["status"].as_str().unwrap())).collect();
        got.sort();
        assert_eq!(got, [("app", "present"), ("data", "present"), ("hello", "present"), ("root", "present")], "{out}");
    }
    assert_eq!(catalog(&registry), Vec::<String>::new(), "`build` pushed\n{out}");
    for image in ["root", "hello", "data", "app"] {
        assert_eq!(tags_status(&registry, image), "404", "`build` pushed {registry}/{image}\n{out}");
    }
}

#[test]
fn a_broken_dockerfile_fails_with_the_log_tail() {
    let repo = copy_fixture(&["fine"]);
    repo.image("images/broken", "name: broken\n", "FROM scratch\nBOGUS nonsense\n");
    repo.image("images/after", "name: after\n", "MZFROM broken\nCOPY file.txt /after.txt\n");
    repo.write("images/after/file.txt", "after\n");
    repo.commit_all();
    let (registry, _images) = scratch();
    let broken = spec(&repo, &registry, "broken");
    let after = spec(&repo, &registry, "after");
    let fine = spec(&repo, &registry, "fine");

    // One job: `broken` goes first (most dependants), its dependant `after`
    // fails at once, and `fine`, which does not depend on it, is still built.
    let out = mz(&repo, &registry, &["build", "--jobs", "1", "--timeout", "120s", "after", "fine"]);
    let error = out.error_message();
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
    let (registry, _images) = scratch();
    let specs: Vec<String> = names.iter().map(|i| spec(&repo, &registry, i)).collect();
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
    let (registry, _images) = scratch();
    let one = spec(&repo, &registry, "one");
    let wrapper = support::docker::wrapper(
        repo.scratch(),
        "docker-without-buildx",
        "if [ \"$1\" = buildx ]; then echo \"docker: 'buildx' is not a docker command.\" >&2; exit 1; fi\n",
    );
    // The wrapper reaches the engine: only buildx is missing.
    let version = run(Command::new(&wrapper).args(["version", "--format", "{{.Server.Version}}"]));
    assert_eq!(version.code, Some(0), "the wrapper does not reach the engine\n{version}");

    let out = run(mz_command(&repo, &registry, &["build", "one"]).env("MZ_DOCKER", &wrapper));
    let error = out.error_message();
    assert!(error.contains("buildx is not installed"), "does not say that buildx is missing\n{out}");
    assert!(error.contains("docker-buildx"), "does not say how to install buildx\n{out}");
    assert!(!error.contains("not running"), "blames the engine\n{out}");
    assert_eq!(out.stdout, "", "{out}");
    assert!(!image_exists(&one), "{one} was built without buildx");
}

#[test]
fn engine_not_running_is_reported() {
    let repo = copy_fixture(&["one"]);
    let (registry, _images) = scratch();
    let socket = repo.scratch().join("no-engine-here.sock");
    assert!(!socket.exists());
    let out = run(mz_command(&repo, &registry, &["build", "one"])
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env_remove("DOCKER_CONTEXT"));
    let error = out.error_message();
    assert!(!out.stderr.contains("mzbuild: preparing"), "went on to prepare a build without an engine\n{out}");
    assert!(error.contains("engine is not running"), "does not say that the engine is not running\n{out}");
    // Another repository's users are not sent to this one's CI script.
    assert!(error.contains("https://docs.docker.com/engine/install/"), "does not say how to start the engine\n{out}");
    assert!(!error.contains("ci/stack.sh"), "names a script this repository does not have\n{out}");
    assert_eq!(out.stdout, "", "{out}");
    // A repository with `ci/stack.sh` (this one) is told to run it.
    repo.write("ci/stack.sh", "#!/bin/sh\n");
    let out = run(mz_command(&repo, &registry, &["build", "one"])
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env_remove("DOCKER_CONTEXT"));
    assert!(out.error_message().contains("`bash ci/stack.sh up`"), "does not say how to start the engine\n{out}");
}

/// A build that runs past `--timeout` is killed (its whole process group;
/// buildkit then cancels the RUN step) and reported as timed out.
#[test]
fn a_build_over_the_timeout_is_killed() {
    let repo = TempRepo::new();
    repo.write("slow/mzbuild.yml", "name: slow\n");
    repo.write(
        "slow/Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"300\"]\n",
    );
    copy_busybox(&repo.path("slow"));
    repo.commit_all();
    let (registry, _images) = scratch();
    let start = std::time::Instant::now();
    // The RUN step sleeps (300 s) so that the build runs past its timeout.
    let out = repo.mzbuild(&["--image-registry", &registry, "build", "slow", "--timeout", "3s"]);
    let took = start.elapsed();
    let err = out.error_message();
    assert!(err.contains("slow: FAILED: timed out after 3s and was killed"), "{err}");
    // Killed, not waited for: the RUN step alone would take 300 s.
    assert!(took < Duration::from_secs(120), "took {took:?}");
    // The RUN step's container is gone too (buildkit stops it soon after).
    let gone =
        wait_until(Duration::from_secs(10), || !processes().iter().any(|p| p.contains("/bin/busybox sleep 300")));
    assert!(gone, "the build's sleep is still running 10 s after the run ended");
}

/// On the docker driver the image is normalised after its build (`docker
/// save | docker load`): that step is bounded by `--timeout` too, and what
/// it started is killed with its process group.
#[test]
fn a_hanging_normalisation_is_killed_at_the_timeout() {
    let repo = TempRepo::new();
    repo.write("img/mzbuild.yml", "name: img\n");
    repo.write("img/Dockerfile", "FROM scratch\nCOPY busybox /bin/busybox\n");
    copy_busybox(&repo.path("img"));
    repo.commit_all();
    let (registry, _images) = scratch();
    // `docker save` never ends (a sleep no other test runs).
    let docker = support::docker::wrapper(
        repo.scratch(),
        "docker-save-hangs",
        "if [ \"$1\" = save ]; then exec sleep 297; fi\n",
    );
    let out = run(repo
        .mzbuild_command(&["--image-registry", &registry, "build", "--force", "img", "--timeout", "20s"])
        .env("MZ_DOCKER", &docker));
    let err = out.error_message();
    assert!(err.contains("docker save | docker load timed out after 20s and was killed"), "{out}");
    let gone = wait_until(Duration::from_secs(10), || !processes().iter().any(|p| p.contains("sleep 297")));
    assert!(gone, "the hanging docker save is still running after the run ended");
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
    let (registry, _images) = scratch();
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
    repo.write("img/.gitignore", "/stuff\n");
    repo.commit_all();
    let out = repo.mzbuild(&["--image-registry", &registry, "build", "img"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
}

/// Two building runs in one repository do not interleave (they share the
/// image directories and the logs): the second waits for the first. The
/// first run's docker (a wrapper) holds its `buildx build` until the test
/// has seen the second run say it waits: no time window to hit.
#[test]
fn concurrent_runs_in_one_repository_take_turns() {
    let repo = TempRepo::new();
    repo.write("slow/mzbuild.yml", "name: slow\n");
    // The unique id makes the RUN step new to the build cache.
    let id = unique();
    repo.write(
        "slow/Dockerfile",
        format!("FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"true # {id}\"]\n"),
    );
    copy_busybox(&repo.path("slow"));
    repo.commit_all();
    let (registry, _images) = scratch();
    let (building, release) = (repo.scratch().join("building"), repo.scratch().join("release"));
    let gate = format!(
        "case \"$*\" in *'buildx build'*) touch '{}'; while [ ! -e '{}' ]; do sleep 0.05; done;; esac\n",
        building.display(),
        release.display()
    );
    let docker = support::docker::wrapper(repo.scratch(), "docker-gate", &gate);
    let first = Running::spawn(
        repo.mzbuild_command(&["--image-registry", &registry, "build", "--force", "slow"]).env("MZ_DOCKER", &docker),
    );
    // Until the first run holds the lock and is building.
    let started = wait_until(Duration::from_secs(60), || building.exists());
    assert!(started, "the first build did not start\n{}", first.stderr_so_far());
    let second =
        Running::spawn(&mut repo.mzbuild_command(&["--image-registry", &registry, "build", "--force", "slow"]));
    let waiting = "mzbuild: another mzbuild run is building in this repository; waiting for it to finish";
    let waits = second.wait_for_line(waiting, Duration::from_secs(60));
    std::fs::write(&release, "").unwrap();
    assert!(waits.is_some(), "the second run did not wait\n{}", second.stderr_so_far());
    let (first, _) = first.finish(Duration::from_secs(120));
    first.ok();
    let (second, _) = second.finish(Duration::from_secs(120));
    second.ok();
    assert!(second.stderr.starts_with(&format!("{waiting}\n")), "{second}");
}

/// A repository with one image, `slow`, whose RUN step sleeps 3 s (the
/// unique id makes it new to the build cache, and is in its step line).
fn slow_fixture(id: &str) -> TempRepo {
    let repo = TempRepo::new();
    repo.write("slow/mzbuild.yml", "name: slow\n");
    repo.write(
        "slow/Dockerfile",
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"sleep 3 # {id}\"]\n"
        ),
    );
    copy_busybox(&repo.path("slow"));
    repo.commit_all();
    repo
}

/// A terminal of its own: a tmux server on a private socket, killed (with
/// what runs in it) when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Run `cmd` (its program, arguments and environment changes) in a new
    /// 160x40 terminal; `MZ-EXIT=<status>` is printed when it ends.
    fn run(cmd: &Command, dir: &Path) -> Tmux {
        let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
        // `env -u VAR... VAR=VALUE... program args...`
        let mut line = String::from("env");
        for (k, _) in cmd.get_envs().filter(|(_, v)| v.is_none()) {
            line.push_str(&format!(" -u {}", k.to_string_lossy()));
        }
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                line.push_str(&format!(" {}={}", k.to_string_lossy(), quote(v)));
            }
        }
        line.push(' ');
        line.push_str(&quote(cmd.get_program()));
        for a in cmd.get_args() {
            line.push(' ');
            line.push_str(&quote(a));
        }
        let script = dir.join("in-terminal.sh");
        std::fs::write(&script, format!("{line}\necho MZ-EXIT=$?\nexec sleep 600\n")).unwrap();
        let tmux = Tmux { socket: format!("mzbuild-test-{}", unique()) };
        let out = run(Command::new("tmux")
            .args(["-L", &tmux.socket, "-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "40", "sh"])
            .arg(&script)
            .env("TERM", "xterm-256color"));
        assert_eq!(out.code, Some(0), "tmux (`bash ci/stack.sh up` installs it) did not start\n{out}");
        tmux
    }

    /// What the terminal shows now, line by line (trailing blanks trimmed).
    fn screen(&self) -> Vec<String> {
        let out = run(Command::new("tmux").args(["-L", &self.socket, "capture-pane", "-p"]));
        let mut lines: Vec<String> = out.stdout.lines().map(|l| l.trim_end().to_string()).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}

/// On a terminal, a slow build shows a live status line at the bottom (how
/// many images are done, running and queued; the running one's elapsed
/// time and latest build step), updating while the build runs, with the
/// finished lines above it; at the end the line is gone and the plain lines
/// remain.
#[test]
fn a_terminal_shows_a_live_status_line() {
    let id = unique();
    let repo = slow_fixture(&id);
    let (registry, _images) = scratch();
    let term = Tmux::run(&mz_command(&repo, &registry, &["build", "slow"]), repo.scratch());
    let marker = format!("[2/2] RUN [\"/bin/busybox\", \"sh\", \"-c\", \"sleep 3 # {id}\"]");
    // Every distinct status line seen while the RUN step runs.
    let mut statuses: Vec<String> = vec![];
    let mut during = vec![];
    let ended = wait_until(Duration::from_secs(120), || {
        let screen = term.screen();
        let last = screen.last().cloned().unwrap_or_default();
        if last.contains(&marker) {
            if !statuses.contains(&last) {
                statuses.push(last);
            }
            during = screen.clone();
        }
        screen.iter().any(|l| l.starts_with("MZ-EXIT="))
    });
    let end = term.screen();
    assert!(ended, "the build did not end:\n{}", end.join("\n"));
    let during = during.join("\n");
    assert!(!statuses.is_empty(), "no status line with the RUN step was seen; at the end:\n{}", end.join("\n"));
    assert!(
        statuses[0].starts_with("mzbuild: 0/1 done, 1 running, 0 queued · slow ") && statuses[0].contains(" #"),
        "{statuses:?}"
    );
    assert!(statuses.len() >= 2, "the status line did not update during a 3 s step: {statuses:?}");
    assert!(
        during.contains("mzbuild: building slow (log: "),
        "the started line is not above the status line:\n{during}"
    );
    // The final screen: the plain lines, the spec, and no status line.
    let end = end.join("\n");
    assert!(end.contains("mzbuild: slow: done in "), "{end}");
    assert!(end.contains(&format!("{registry}/slow:mzbuild-")), "no spec on the final screen:\n{end}");
    assert!(end.contains("MZ-EXIT=0"), "{end}");
    assert!(!end.contains("running,"), "the status line was left on the screen:\n{end}");
}

/// Not on a terminal (CI logs), the output is plain lines as ever: no
/// status line, no escapes, no carriage returns; `--progress tty` draws the
/// status line anyway; `-v` streams the build log; `--color`, `NO_COLOR`
/// and `CLICOLOR_FORCE` decide colours.
#[test]
fn ci_logs_get_plain_lines_and_flags_change_them() {
    let id = unique();
    let repo = slow_fixture(&id);
    let (registry, _images) = scratch();
    let out = mz(&repo, &registry, &["build", "slow"]);
    assert_eq!(out.code, Some(0), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let started = format!("mzbuild: building slow (log: {})", repo.build_log("slow").display());
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[..2], ["mzbuild: preparing 1 image(s): slow", started.as_str()], "{out}");
    assert!(lines[2].starts_with("mzbuild: slow: done in "), "{out}");
    assert!(!out.stderr.contains(['\x1b', '\r']), "escapes in a CI log\n{out:?}");

    // Forced, with -v: the status line and the log, on a pipe.
    let out = mz(&repo, &registry, &["--progress", "tty", "-v", "build", "--force", "slow"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("mzbuild: 0/1 done, 1 running, 0 queued · slow "), "no status line\n{out}");
    // BuildKit numbers its steps in the order they start (a cached step may
    // come first): any number. (The context is a tar on stdin: BuildKit
    // loads it as a remote context.)
    let streamed = out.stderr.lines().any(|l| l.contains("slow | #") && l.contains("load remote build context"));
    assert!(streamed, "-v did not stream the log\n{out}");
    assert!(out.stderr.contains(&format!("sleep 3 # {id}")), "-v did not stream the log\n{out}");

    // Colours: on when forced, NO_COLOR first, --color over both.
    let green = "\x1b[1m\x1b[32mmzbuild:\x1b[0m";
    let colours = |flags: &[&str], env: &[(&str, &str)]| {
        let mut args = flags.to_vec();
        args.extend(["--progress", "plain", "build", "slow"]);
        let mut cmd = mz_command(&repo, &registry, &args);
        cmd.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run(&mut cmd);
        assert_eq!(out.code, Some(0), "{out}");
        out.stderr.contains(green)
    };
    assert!(!colours(&[], &[]));
    assert!(colours(&[], &[("CLICOLOR_FORCE", "1")]));
    assert!(!colours(&[], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]));
    assert!(colours(&["--color", "always"], &[("NO_COLOR", "1")]));
    assert!(!colours(&["--color", "never"], &[("CLICOLOR_FORCE", "1")]));
}
