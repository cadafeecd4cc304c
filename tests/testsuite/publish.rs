//! Integration tests: `ensure` and `check` against the two real registries
//! that `ci/stack.sh up` starts (127.0.0.1:5000 plain, 127.0.0.1:5001 with
//! htpasswd auth), with the real `xtask` binary and the real Docker engine.
//!
//! Every test makes its own temporary git repository holding a diamond of
//! `FROM scratch` images (base <- left, right <- top) plus `local-only`
//! (`publish: false`, on base), published under registry paths no other test
//! and no earlier run uses (`t-<pid>-<nanos>-<n>`), so the tests are
//! independent and run in parallel. What is in a registry is asked of its
//! HTTP API with `curl`, never of the tool under test. The registry password
//! goes to `curl` on stdin (`-K -`), never on a command line: the secrets test
//! watches every process's arguments while other tests run.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::body_limit::BodyLimitProxy;
use support::docker::{self, docker, image_exists, local_images, Recorder};
use support::registry::{
    catalog, delete_manifest, manifest_digest, manifest_status, Project, AUTH, PASSWORD, PLAIN, TOKEN_VAR, USER,
};
#[cfg(target_os = "linux")]
use support::run_measured;
use support::{free_port, processes, run, Output};

/// The fixture's publishable images, by name.
const PUBLISHED: [&str; 4] = ["base", "left", "right", "top"];
/// Every image of the fixture, by name.
const ALL: [&str; 5] = ["base", "left", "local-only", "right", "top"];

/// A `Project` (publishing to `127.0.0.1:5000/<id>` and
/// `127.0.0.1:5001/<id>`) holding the diamond and `local-only`.
struct Fixture {
    project: Project,
}

impl Deref for Fixture {
    type Target = Project;
    fn deref(&self) -> &Project {
        &self.project
    }
}

impl Fixture {
    fn new() -> Fixture {
        let project = Project::new();
        let id = project.id.clone();
        project
            // Unique content: tests running at once must not share image
            // IDs, or one test's cleanup (docker rmi) races another's build.
            .file_image("base", "", &format!("base {id}\n"))
            .image("left", "", "MZFROM base\nCOPY left.txt /left.txt\n", &[("left.txt", "left\n")])
            .image("right", "", "MZFROM base\nCOPY right.txt /right.txt\n", &[("right.txt", "right\n")])
            .image(
                "top",
                "",
                "MZFROM left AS l\nMZFROM right\nCOPY --from=l /left.txt /left.txt\nCOPY top.txt /top.txt\n",
                &[("top.txt", "top\n")],
            )
            .image(
                "local-only",
                "publish: false\n",
                "MZFROM base\nCOPY local.txt /local.txt\n",
                &[("local.txt", "local\n")],
            )
            .repo
            .commit_all();
        Fixture { project }
    }

    /// `new`, after an `ensure` that published it.
    fn published() -> Fixture {
        let fx = Fixture::new();
        fx.mz(&["ensure"]).ok();
        fx
    }

    /// Like `mz`, with `$MZ_DOCKER` pointing at a wrapper around the real
    /// `docker` that records each invocation's arguments; also returns the
    /// `-t` tags of each `docker buildx build`, one list per build.
    fn mz_recording(&self, args: &[&str]) -> (Output, Vec<Vec<String>>) {
        self.run_recording(&mut self.command(args))
    }

    /// Run `cmd` (from `command`) as `mz_recording` does.
    fn run_recording(&self, cmd: &mut Command) -> (Output, Vec<Vec<String>>) {
        let recorder = Recorder::new(self.repo.scratch());
        let out = run(recorder.apply(cmd));
        (out, recorder.build_tags())
    }

    /// `ensure --json args...`: the output, its parsed rows, and the images
    /// it built (see `builds`).
    fn ensure_json(&self, args: &[&str]) -> (Output, Vec<Row>, String) {
        let mut all = vec!["ensure", "--json"];
        all.extend_from_slice(args);
        let (out, builds) = self.mz_recording(&all);
        let rows = parse_rows(&out);
        let builds = self.builds(&builds);
        (out, rows, builds)
    }

    /// The `-t` tags of each `docker buildx build`, one line per build,
    /// sorted, each tag as `<registry>/<image>` when it is the image's
    /// current tag in the fixture's registry `plain`, `auth` or `extra`.
    fn builds(&self, builds: &[Vec<String>]) -> String {
        let registries = [("plain", self.plain_url()), ("auth", self.auth_url()), ("extra", self.extra_url())];
        let fps: BTreeMap<&str, String> = ALL.iter().map(|i| (*i, self.fingerprint(i))).collect();
        let mut lines: Vec<String> = builds
            .iter()
            .map(|tags| {
                let tags: Vec<String> = tags
                    .iter()
                    .map(|t| {
                        for (label, url) in &registries {
                            let Some((image, fp)) =
                                t.strip_prefix(&format!("{url}/")).and_then(|r| r.split_once(":mzbuild-"))
                            else {
                                continue;
                            };
                            if fps.get(image).is_some_and(|f| f == fp) {
                                return format!("{label}/{image}");
                            }
                        }
                        t.clone()
                    })
                    .collect();
                format!("{}\n", tags.join(" "))
            })
            .collect();
        lines.sort();
        lines.concat()
    }

    /// `"name: <plain> <auth>"` per image: the HTTP status of its current tag
    /// in each of the two registries.
    fn presence(&self, images: &[&str]) -> String {
        images
            .iter()
            .map(|i| {
                let fp = self.fingerprint(i);
                format!(
                    "{i}: {} {}\n",
                    manifest_status(&self.plain_url(), i, &fp),
                    manifest_status(&self.auth_url(), i, &fp)
                )
            })
            .collect()
    }

    /// The rows as `name status [registries]` lines, sorted by name, with the
    /// fixture's registry urls replaced by `plain`, `auth` and `extra`.
    fn summary(&self, rows: &[Row]) -> String {
        let mut sorted: Vec<&Row> = rows.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        sorted
            .iter()
            .map(|r| {
                let regs: Vec<String> = r
                    .registries
                    .iter()
                    .map(|u| {
                        if *u == self.plain_url() {
                            "plain".to_string()
                        } else if *u == self.auth_url() {
                            "auth".to_string()
                        } else if *u == self.extra_url() {
                            "extra".to_string()
                        } else {
                            u.clone()
                        }
                    })
                    .collect();
                format!("{} {} [{}]\n", r.name, r.status, regs.join(", "))
            })
            .collect()
    }
}

/// One row of `ensure --json` (or `repair --json`).
#[derive(Debug)]
struct Row {
    name: String,
    status: String,
    registries: Vec<String>,
    error: Option<String>,
}

#[track_caller]
fn parse_rows(out: &Output) -> Vec<Row> {
    let first: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("`ensure`/`repair --json` did not print JSON ({e})\n{out}"));
    let command = first["command"].as_str().unwrap_or_else(|| panic!("no command in the document\n{out}"));
    let items = support::json::rows(&out.stdout, command);
    let string = |v: &serde_json::Value, key: &str| -> String {
        v[key].as_str().unwrap_or_else(|| panic!("`{key}` is not a string in {v}\n{out}")).to_string()
    };
    items
        .iter()
        .map(|o| Row {
            name: string(o, "name"),
            status: string(o, "status"),
            registries: o["registries"]
                .as_array()
                .unwrap_or_else(|| panic!("registries is not an array in {o}\n{out}"))
                .iter()
                .map(|r| r.as_str().expect("registry urls are strings").to_string())
                .collect(),
            error: o.get("error").map(|_| string(o, "error")),
        })
        .collect()
}

/// Every file under `dir` (not following symbolic links).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn first_ensure_publishes_everything_publishable_to_both_registries() {
    let fx = Fixture::new();
    let (out, rows, builds) = fx.ensure_json(&[]);
    out.ok();
    assert_eq!(
        fx.summary(&rows),
        "base pushed [plain, auth]\n\
         left pushed [plain, auth]\n\
         local-only built []\n\
         right pushed [plain, auth]\n\
         top pushed [plain, auth]\n",
        "{out}"
    );
    // One build per image, tagged for both registries at once.
    assert_eq!(
        builds,
        "plain/base auth/base\nplain/left auth/left\nplain/local-only\nplain/right auth/right\nplain/top auth/top\n",
        "{out}"
    );
    assert_eq!(fx.presence(&ALL), "base: 200 200\nleft: 200 200\nlocal-only: 404 404\nright: 200 200\ntop: 200 200\n");
    let expected: Vec<String> = PUBLISHED.iter().map(|i| format!("{}/{i}", fx.id)).collect();
    assert_eq!(catalog(&fx.plain_url()), expected);
    assert_eq!(catalog(&fx.auth_url()), expected);
    // local-only was built into the local engine under its spec.
    assert!(image_exists(&fx.spec("local-only")), "local-only is not in the local engine");

    let check = fx.mz(&["check"]);
    assert_eq!(check.ok(), "", "{check}");
    assert!(check.stderr.contains("all 4 publishable images are in every registry"), "{check}");
}

#[test]
fn second_ensure_builds_and_pushes_nothing() {
    let fx = Fixture::published();
    // Coarse file-system timestamps must not hide a rewrite: backdated
    // logs, which a rewrite would set to now.
    fx.repo.backdate_build_logs();
    let logs = fx.logs();
    assert!(
        ["base.log", "left.log", "local-only.log", "right.log", "top.log"].iter().all(|l| logs.contains_key(*l)),
        "the first ensure did not log every build: {logs:?}"
    );

    let (out, rows, builds) = fx.ensure_json(&[]);
    out.ok();
    assert_eq!(
        fx.summary(&rows),
        "base published []\nleft published []\nlocal-only present []\nright published []\ntop published []\n",
        "{out}"
    );
    assert_eq!(builds, "", "{out}");
    assert!(out.stderr.contains("; 0 to build\n"), "{out}");
    assert!(!out.stderr.contains("building"), "{out}");
    // A quick run says how quick: `12ms`, not `0.0s`.
    let took = out.stderr.lines().find_map(|l| l.strip_prefix("mzbuild: ensure finished in ")).unwrap_or_default();
    let ms = took.strip_suffix("ms").is_some_and(|n| n.parse::<u64>().is_ok());
    let s = took.strip_suffix('s').is_some_and(|n| n.parse::<f64>().is_ok_and(|n| n >= 0.1));
    assert!(ms || s, "ensure finished in `{took}`\n{out}");
    assert_eq!(fx.logs(), logs, "the second ensure wrote build logs\n{out}");
}

#[test]
fn an_edit_republishes_exactly_the_image_and_its_dependants() {
    let fx = Fixture::published();
    let before: BTreeMap<&str, String> = ALL.iter().map(|i| (*i, fx.fingerprint(i))).collect();

    fx.repo.write("images/left/left.txt", "left, edited\n");
    let after: BTreeMap<&str, String> = ALL.iter().map(|i| (*i, fx.fingerprint(i))).collect();
    let changed: Vec<&str> = ALL.iter().copied().filter(|i| before[i] != after[i]).collect();
    assert_eq!(changed, ["left", "top"]);

    let (out, rows, builds) = fx.ensure_json(&[]);
    out.ok();
    assert_eq!(
        fx.summary(&rows),
        "base published []\n\
         left pushed [plain, auth]\n\
         local-only present []\n\
         right published []\n\
         top pushed [plain, auth]\n",
        "{out}"
    );
    assert_eq!(builds, "plain/left auth/left\nplain/top auth/top\n", "{out}");
    assert!(out.stderr.contains("; 2 to build\n"), "{out}");
    assert_eq!(fx.presence(&["left", "top"]), "left: 200 200\ntop: 200 200\n");
    // The old tags are still there: content-addressed tags are never overwritten.
    assert_eq!(manifest_status(&fx.plain_url(), "left", &before["left"]), "200");
}

/// `diff` asks both registries about the new tags: "already published"
/// when every registry has the tag, "not published" when one lacks it.
/// The case of the report: an edit committed, the old file restored in the
/// work tree, whose fingerprints are the published ones.
#[test]
fn diff_says_already_published_only_when_every_registry_has_the_tag() {
    let fx = Fixture::published();
    let published = fx.fingerprint("left");
    fx.repo.write("images/left/left.txt", "left, edited\n").commit_all();
    let edited = fx.fingerprint("left");
    let line = |text: &str, image: &str| -> String {
        text.lines().find(|l| l.starts_with(&format!("{image} "))).unwrap_or_default().to_string()
    };
    // The committed edit: its tags are in no registry.
    let out = fx.mz(&["diff", "HEAD~"]);
    let text = out.ok();
    assert_eq!(line(text, "left"), format!("left {published} -> {edited}  not published: CI builds it"), "{out}");
    assert!(line(text, "top").ends_with("  not published: CI builds it"), "{out}");

    // The work tree back at the published content.
    fx.repo.write("images/left/left.txt", "left\n");
    let out = fx.mz(&["diff", "HEAD"]);
    let text = out.ok();
    assert_eq!(line(text, "left"), format!("left {edited} -> {published}  already published"), "{out}");
    assert!(line(text, "top").ends_with("  already published"), "{out}");
    let v = support::json::rows(fx.mz(&["diff", "HEAD", "--json"]).ok(), "diff");
    assert_eq!((v[0]["name"].as_str(), &v[0]["published"]), (Some("left"), &serde_json::Value::Bool(true)));

    // One registry without the tag: not published (CI fills the gap).
    let tag = format!("mzbuild-{published}");
    let digest = manifest_digest(&fx.auth_url(), "left", &tag).expect("left is published");
    delete_manifest(&fx.auth_url(), "left", &digest);
    let text = fx.mz(&["diff", "HEAD"]).ok().to_string();
    assert!(line(&text, "left").ends_with("  not published: CI builds it"), "{text}");
    assert!(line(&text, "top").ends_with("  already published"), "{text}");
}

#[test]
fn check_lists_exactly_the_missing_tags_and_ensure_fills_only_the_gap() {
    let fx = Fixture::new();
    let fps: BTreeMap<&str, String> = PUBLISHED.iter().map(|i| (*i, fx.fingerprint(i))).collect();
    let tag = |url: &str, i: &str| format!("{url}/{i}:mzbuild-{}\n", fps[i]);

    let out = fx.mz(&["check"]);
    out.error();
    let expected: String = PUBLISHED.iter().flat_map(|i| [tag(&fx.plain_url(), i), tag(&fx.auth_url(), i)]).collect();
    assert_eq!(out.stdout, expected, "{out}");
    assert!(out.stderr.contains("4 of 4 publishable images are missing"), "{out}");
    // The hint works as typed: the repository is not the default root.
    let hint = format!("run `cargo xtask mzbuild --root {} ensure` to publish them", fx.repo.root_str());
    assert!(out.stderr.contains(&hint), "{out}");
    assert!(!fx.log_dir().exists(), "check built something");

    fx.mz(&["ensure"]).ok();
    fx.mz(&["check"]).ok();

    // A third registry: only its tags are missing.
    fx.set_registries(&[fx.plain_entry(), fx.auth_entry(), format!("{{ url = \"{}\" }}", fx.extra_url())]);
    for i in PUBLISHED {
        assert_eq!(fx.fingerprint(i), fps[i], "the registries table changed the fingerprint of {i}");
    }
    let out = fx.mz(&["check"]);
    out.error();
    let expected: String = PUBLISHED.iter().map(|i| tag(&fx.extra_url(), i)).collect();
    assert_eq!(out.stdout, expected, "{out}");

    let (out, rows, builds) = fx.ensure_json(&[]);
    out.ok();
    assert_eq!(
        fx.summary(&rows),
        "base copied [extra]\n\
         left copied [extra]\n\
         local-only present []\n\
         right copied [extra]\n\
         top copied [extra]\n",
        "{out}"
    );
    // Copied from the spec registry, not rebuilt; the others are not pushed to again.
    assert_eq!(builds, "", "{out}");
    assert!(out.stderr.contains("; 4 to copy; 0 to build\n"), "{out}");
    // A copy takes time, and says how long.
    let json = support::json::rows(&out.stdout, "ensure");
    let copied: Vec<&serde_json::Value> = json.iter().filter(|r| r["status"] == "copied").collect();
    assert_eq!(copied.len(), PUBLISHED.len(), "{out}");
    for row in copied {
        assert!(row["seconds"].as_f64().unwrap() > 0.0, "a copy without its time: {row}\n{out}");
    }
    for i in PUBLISHED {
        let tag = format!("mzbuild-{}", fps[i]);
        let digest = manifest_digest(&fx.plain_url(), i, &tag);
        assert!(digest.is_some(), "{i} is not in the plain registry");
        assert_eq!(manifest_digest(&fx.extra_url(), i, &tag), digest, "{i}: the copy has another digest");
    }
    fx.mz(&["check"]).ok();
}

#[test]
fn a_wrong_or_missing_token_fails_before_anything_is_built() {
    let fx = Fixture::new();
    let start = Instant::now();
    let (out, builds) = fx.run_recording(fx.command(&["ensure"]).env(TOKEN_VAR, "wrong-token-XYZ123"));
    let took = start.elapsed();
    assert_eq!(builds, Vec::<Vec<String>>::new(), "{out}");
    let stderr = out.error();
    assert!(took < Duration::from_secs(10), "took {took:?}\n{out}");
    assert!(stderr.contains(&format!("registry {} rejected the credentials of user `{USER}`", fx.auth_url())), "{out}");
    assert!(stderr.contains(TOKEN_VAR), "{out}");
    assert!(stderr.trim_end().ends_with("nothing was built or pushed"), "{out}");
    assert!(!out.stderr.contains("wrong-token-XYZ123") && !out.stdout.contains("wrong-token-XYZ123"), "{out}");
    assert!(!fx.log_dir().exists(), "something was built: {:?}", fx.logs());
    assert_eq!(fx.presence(&ALL), "base: 404 404\nleft: 404 404\nlocal-only: 404 404\nright: 404 404\ntop: 404 404\n");
    assert_eq!(catalog(&fx.plain_url()), Vec::<String>::new());
    assert_eq!(catalog(&fx.auth_url()), Vec::<String>::new());

    let (out, builds) = fx.run_recording(fx.command(&["ensure"]).env_remove(TOKEN_VAR));
    assert_eq!(builds, Vec::<Vec<String>>::new(), "{out}");
    let stderr = out.error();
    assert!(
        stderr.contains(&format!(
            "registry {}: the environment variable {TOKEN_VAR} (its token) is not set",
            fx.auth_url()
        )),
        "{out}"
    );
    assert!(!fx.log_dir().exists(), "something was built: {:?}", fx.logs());
}

#[test]
fn a_registry_that_is_down_fails_cleanly_after_retries() {
    let fx = Fixture::new();
    let url = format!("127.0.0.1:{}/x", free_port());
    fx.set_registries(&[format!("{{ url = \"{url}\" }}")]);
    let start = Instant::now();
    let out = fx.mz(&["ensure"]);
    let took = start.elapsed();
    let stderr = out.error();
    assert!(stderr.contains(&format!("registry {url} is unreachable")), "{out}");
    assert!(stderr.contains("3 attempts"), "{out}");
    // Three attempts with a backoff between them, not three at once.
    assert!(took >= Duration::from_secs(2), "no backoff: took {took:?}\n{out}");
    assert!(took < Duration::from_secs(60), "took {took:?}\n{out}");
    assert!(!fx.log_dir().exists(), "something was built: {:?}", fx.logs());

    let out = fx.mz(&["check"]);
    let stderr = out.error();
    assert!(stderr.contains(&format!("registry {url} is unreachable")), "{out}");
}

#[test]
fn a_broken_branch_fails_alone_and_skips_its_dependants() {
    let fx = Fixture::new();
    fx.repo.append("images/right/Dockerfile", "BOGUSINSTRUCTION x\n");
    let (out, rows, builds) = fx.ensure_json(&[]);
    let stderr = out.error();
    // right's build ran once (a broken Dockerfile is not retried); top never ran.
    assert_eq!(
        builds, "plain/base auth/base\nplain/left auth/left\nplain/local-only\nplain/right auth/right\n",
        "{out}"
    );
    assert_eq!(
        fx.summary(&rows),
        "base pushed [plain, auth]\n\
         left pushed [plain, auth]\n\
         local-only built []\n\
         right failed [plain, auth]\n\
         top skipped [plain, auth]\n",
        "{out}"
    );
    let top = rows.iter().find(|r| r.name == "top").unwrap();
    assert!(top.error.as_deref().unwrap_or("").contains("`right` failed"), "{top:?}");
    let log = fx.log_dir().join("right.log");
    assert!(stderr.contains("error: 2 of 5 images did not complete:"), "{out}");
    assert!(stderr.contains(&format!("last lines of {}", log.display())), "{out}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("BOGUSINSTRUCTION"), "{}:\n{text}", log.display());
    assert!(!fx.log_dir().join("top.log").exists(), "top was built");
    assert_eq!(fx.presence(&PUBLISHED), "base: 200 200\nleft: 200 200\nright: 404 404\ntop: 404 404\n");
}

#[test]
fn secrets_stay_out_of_arguments_output_files_and_the_users_docker_config() {
    let fx = Fixture::new();
    let home = fx.repo.scratch().join("home");
    let tmp = fx.repo.scratch().join("tmp");
    std::fs::create_dir(&home).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    let mut cmd = fx.command(&["ensure"]);
    // A private TMPDIR, so the DOCKER_CONFIG directories of tests running
    // beside this one do not count.
    cmd.env("HOME", &home).env("TMPDIR", &tmp).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Every docker command line mzbuild builds, recorded by the CLI it runs
    // (all of them, where the process listings below are samples that a
    // short-lived process can slip between).
    let recorder = Recorder::new(fx.repo.scratch());
    recorder.apply(&mut cmd);

    let done = AtomicBool::new(false);
    let (out, (samples, leaks, configs)) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let (mut samples, mut leaks, mut configs) =
                (0usize, Vec::<String>::new(), std::collections::BTreeSet::new());
            while !done.load(Ordering::SeqCst) {
                samples += 1;
                leaks.extend(processes().into_iter().filter(|l| l.contains(PASSWORD)));
                for e in std::fs::read_dir(&tmp).unwrap().flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with("mzbuild-docker-config-") {
                        configs.insert(name);
                    }
                }
                // The sampling interval, not a wait for an event: the
                // watcher samples until the run ends.
                std::thread::sleep(Duration::from_millis(20));
            }
            (samples, leaks, configs)
        });
        let out = cmd.spawn().and_then(|child| child.wait_with_output());
        done.store(true, Ordering::SeqCst);
        let out = Output::from(out.expect("running xtask"));
        (out, watcher.join().unwrap())
    });
    out.ok();
    // The token was used: the auth registry has everything.
    assert_eq!(fx.presence(&PUBLISHED), "base: 200 200\nleft: 200 200\nright: 200 200\ntop: 200 200\n");

    assert!(samples >= 5, "only {samples} process listings during the run");
    assert_eq!(leaks, Vec::<String>::new(), "the password was on a command line");
    let calls = recorder.calls();
    assert!(calls.iter().any(|c| c.split(' ').any(|w| w == "login")), "no docker login recorded: {calls:#?}");
    assert!(calls.iter().any(|c| support::docker::is_build(c)), "no build recorded: {calls:#?}");
    let leaked: Vec<&String> = calls.iter().filter(|c| c.contains(PASSWORD)).collect();
    assert_eq!(leaked, Vec::<&String>::new(), "the password was on a docker command line");
    assert!(!out.stdout.contains(PASSWORD) && !out.stderr.contains(PASSWORD), "{out}");
    assert!(!configs.is_empty(), "no private DOCKER_CONFIG seen in TMPDIR during the run ({samples} samples)");
    let left: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("mzbuild-docker-config-"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "the private DOCKER_CONFIG was left behind (seen: {configs:?})");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "ensure left files in TMPDIR");
    let files = files_under(fx.repo.root());
    assert!(files.iter().any(|f| f.ends_with("target/mzbuild/logs/top.log")), "no build logs in {files:?}");
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()), "the password is in {}", f.display());
    }
    assert!(!home.join(".docker").exists(), "ensure wrote to $HOME/.docker");
}

/// A user who has used buildx has `~/.docker/buildx` (its selected builder,
/// and refs and activity that every build adds to). Neither `build` (no
/// login) nor `ensure` (with logins) writes there, or anywhere in `~/.docker`:
/// buildx's state goes to the run's private directory, seeded with the
/// user's builder choice. Nor do they leave anything in TMPDIR, where buildx
/// 0.13 writes the Dockerfile it reads from stdin and never removes it.
#[test]
fn buildx_state_and_temporary_files_stay_out_of_the_users_directories() {
    let fx = Fixture::new();
    let home = fx.repo.scratch().join("home");
    let tmp = fx.repo.scratch().join("tmp");
    std::fs::create_dir(&home).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    // The user picks a builder, as `docker buildx use` records it.
    let used = run(docker::command(&["buildx", "use", "default"]).env("HOME", &home));
    assert_eq!(used.code, Some(0), "{used}");
    std::fs::write(home.join(".docker/config.json"), "{}\n").unwrap();
    let snapshot = || -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
        let mut all = files_under(&home);
        all.sort();
        all.into_iter()
            .map(|f| {
                let m = std::fs::metadata(&f).unwrap();
                (f, (m.len(), m.modified().unwrap()))
            })
            .collect()
    };
    let before = snapshot();
    assert!(before.keys().any(|f| f.ends_with(".docker/buildx/current")), "{before:?}");
    let with_env = |args: &[&str]| {
        let mut cmd = fx.command(args);
        cmd.env("HOME", &home).env("TMPDIR", &tmp);
        run(&mut cmd)
    };
    let out = with_env(&["build", "local-only"]);
    out.ok();
    assert_eq!(snapshot(), before, "`build` wrote to $HOME\n{out}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "`build` left files in TMPDIR\n{out}");
    let out = with_env(&["ensure", "top"]);
    out.ok();
    assert!(out.stderr.contains("; 4 to build"), "{out}");
    assert_eq!(snapshot(), before, "`ensure` wrote to $HOME\n{out}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "`ensure` left files in TMPDIR\n{out}");
}

#[test]
fn unpublished_images_are_never_pushed_and_targets_limit_the_set() {
    let fx = Fixture::new();
    let (out, rows, builds) = fx.ensure_json(&["top"]);
    out.ok();
    assert_eq!(
        builds, "plain/base auth/base\nplain/left auth/left\nplain/right auth/right\nplain/top auth/top\n",
        "{out}"
    );
    assert_eq!(
        fx.summary(&rows),
        "base pushed [plain, auth]\nleft pushed [plain, auth]\nright pushed [plain, auth]\ntop pushed [plain, auth]\n",
        "{out}"
    );
    assert!(!fx.log_dir().join("local-only.log").exists(), "local-only was built\n{out}");
    let inspect = docker(&["image", "inspect", "--format", "ok", &fx.spec("local-only")]);
    assert_eq!(inspect.code, Some(1), "local-only is in the local engine\n{inspect}");

    let (out, rows, builds) = fx.ensure_json(&["local-only"]);
    out.ok();
    assert_eq!(builds, "plain/local-only\n", "{out}");
    assert_eq!(fx.summary(&rows), "base published []\nlocal-only built []\n", "{out}");
    assert_eq!(fx.presence(&["local-only"]), "local-only: 404 404\n");
    for url in [fx.plain_url(), fx.auth_url()] {
        assert!(!catalog(&url).contains(&format!("{}/local-only", fx.id)), "local-only is in {url}'s catalog");
    }
    assert!(image_exists(&fx.spec("local-only")), "local-only is not in the local engine");
}

/// An image that no registry has any more is rebuilt and pushed to both;
/// its published dependencies are pulled from the registry specs point at,
/// which needs a login there.
#[test]
fn a_rebuild_pulls_its_dependencies_from_the_spec_registry_with_a_login() {
    let fx = Fixture::new();
    // The auth registry first: specs (and FROM lines) point at it.
    fx.set_registries(&[fx.auth_entry(), fx.plain_entry()]);
    fx.mz(&["ensure"]).ok();
    // Take `top` out of both registries (deletes are enabled there)...
    let tag = format!("mzbuild-{}", fx.fingerprint("top"));
    for url in [fx.plain_url(), fx.auth_url()] {
        let digest = manifest_digest(&url, "top", &tag).unwrap_or_else(|| panic!("top is not in {url}"));
        delete_manifest(&url, "top", &digest);
        assert_eq!(manifest_digest(&url, "top", &tag), None);
    }
    // ...and every image of the fixture out of the local engine, so the
    // rebuild of `top` must pull `left` and `right` from the auth registry.
    let mine: Vec<String> = local_images().into_iter().filter(|r| r.contains(&format!("/{}/", fx.id))).collect();
    assert!(!mine.is_empty());
    assert_eq!(run(docker::command(&["rmi"]).args(&mine)).code, Some(0));

    let (out, rows, builds) = fx.ensure_json(&[]);
    out.ok();
    assert_eq!(
        fx.summary(&rows),
        "base published []\nleft published []\nlocal-only built []\nright published []\ntop pushed [auth, plain]\n",
        "{out}"
    );
    assert_eq!(builds, "auth/local-only\nauth/top plain/top\n", "{out}");
    assert_eq!(fx.presence(&["top"]), "top: 200 200\n");
}

/// A fixture whose images are in the plain registry only, then configured
/// for both: `ensure` fills the gap by copying, with no build.
#[test]
fn a_gap_is_filled_by_copying_with_the_same_digest_and_no_build() {
    let fx = Fixture::new();
    fx.set_registries(&[fx.plain_entry()]);
    fx.mz(&["ensure"]).ok();
    // The auth registry first: the spec registry lacks everything, and the
    // copies come from the second registry.
    fx.set_registries(&[fx.auth_entry(), fx.plain_entry()]);
    let recorder = Recorder::new(fx.repo.scratch());
    let out = run(recorder.apply(&mut fx.command(&["ensure", "--json"])));
    out.ok();
    let rows = parse_rows(&out);
    assert_eq!(
        fx.summary(&rows),
        "base copied [auth]\nleft copied [auth]\nlocal-only built []\nright copied [auth]\ntop copied [auth]\n",
        "{out}"
    );
    // The only build: local-only (publish: false), whose spec now names the
    // auth registry, for the local engine.
    assert_eq!(recorder.build_tags(), [[fx.spec("local-only")]], "ensure built a publishable image\n{out}");
    let json = support::json::rows(&out.stdout, "ensure");
    let copied: Vec<&serde_json::Value> = json.iter().filter(|r| r["status"] == "copied").collect();
    assert_eq!(copied.len(), PUBLISHED.len(), "{out}");
    for row in copied {
        assert_eq!(row["from"], fx.plain_url(), "{row}");
        // Each image streams its own layer (and config); the registries are two
        // hosts, so nothing is mounted across them.
        assert!(row["bytes_copied"].as_u64().unwrap() > 100, "{row}");
    }
    for i in PUBLISHED {
        let tag = format!("mzbuild-{}", fx.fingerprint(i));
        let digest = manifest_digest(&fx.plain_url(), i, &tag);
        assert!(digest.is_some());
        assert_eq!(manifest_digest(&fx.auth_url(), i, &tag), digest, "{i}: the copy has another digest");
    }
    // Nothing left to do.
    let (out, rows, builds) = fx.ensure_json(&[]);
    out.ok();
    assert_eq!(
        fx.summary(&rows),
        "base published []\nleft published []\nlocal-only present []\nright published []\ntop published []\n",
        "{out}"
    );
    assert_eq!(builds, "", "{out}");
    fx.mz(&["check"]).ok();
}

/// Two registry paths on one registry; one gets another build of `base`
/// under the same tag (what an agent without a warm build cache pushes):
/// `check` reports the drift, `ensure` leaves it alone, `repair` re-points
/// the tag at the spec registry's content.
#[test]
fn drift_is_reported_never_overwritten_by_ensure_and_repaired_by_copy() {
    let fx = Fixture::new();
    fx.set_registries(&[fx.plain_entry(), format!("{{ url = \"{}\" }}", fx.extra_url())]);
    fx.mz(&["ensure"]).ok();
    let tag = format!("mzbuild-{}", fx.fingerprint("base"));
    let good = manifest_digest(&fx.plain_url(), "base", &tag).expect("base is published");
    assert_eq!(manifest_digest(&fx.extra_url(), "base", &tag).as_ref(), Some(&good));
    // Another build of base (a label makes its config, so its digest, differ).
    let drifted_ref = format!("{}/base:{tag}", fx.extra_url());
    let build =
        run(docker::command(&["buildx", "build", "--quiet", "--label", "drift=yes", "--push", "-t", &drifted_ref])
            .arg(fx.repo.path("images/base")));
    assert_eq!(build.code, Some(0), "{build}");
    let bad = manifest_digest(&fx.extra_url(), "base", &tag).unwrap();
    assert_ne!(bad, good);
    let _ = docker(&["rmi", &drifted_ref]);

    let out = fx.mz(&["check"]);
    let stderr = out.error();
    assert_eq!(out.stdout, format!("{drifted_ref} {bad} (drift: {} has {good})\n", fx.plain_url()), "{out}");
    // The same, as a document: drifted, with each registry's digest.
    let out = fx.mz(&["check", "--json"]);
    assert_eq!(support::json::result(&out.stdout, "check"), "failure", "{out}");
    let rows = support::json::rows(&out.stdout, "check");
    let base = rows.iter().find(|r| r["name"] == "base").unwrap_or_else(|| panic!("no base row\n{out}"));
    assert_eq!((&base["status"], &base["drifted"]), (&"drifted".into(), &serde_json::json!([fx.extra_url()])), "{out}");
    assert_eq!(
        (&base["digests"][fx.plain_url()], &base["digests"][fx.extra_url()]),
        (&good.clone().into(), &bad.clone().into()),
        "{out}"
    );
    assert!(stderr.contains("1 of 4 publishable images has drifted"), "{out}");
    assert!(stderr.contains(&format!("cargo xtask mzbuild --root {} repair base", fx.repo.root_str())), "{out}");

    // ensure never overwrites a tag: it warns, copies nothing, builds
    // nothing, reports the tag as drifted and fails (CI must notice).
    let (out, rows, builds) = fx.ensure_json(&[]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(
        fx.summary(&rows),
        "base drifted [extra]\nleft published []\nlocal-only present []\nright published []\ntop published []\n",
        "{out}"
    );
    let json = support::json::rows(&out.stdout, "ensure");
    assert_eq!(json[0]["from"], fx.plain_url(), "{out}");
    // The drift, digest by digest: the exit code is 1 and the document says why.
    assert_eq!(support::json::result(&out.stdout, "ensure"), "failure", "{out}");
    let d = &json[0]["digests"];
    assert!(d[fx.plain_url()].is_string() && d[fx.plain_url()] != d[fx.extra_url()], "{out}");
    assert_eq!(builds, "", "{out}");
    assert!(out.stderr.contains("warning: base: its tag names different content in"), "{out}");
    assert!(out.stderr.contains("1 image has drifted") && out.stderr.contains("--allow-drift"), "{out}");
    assert_eq!(manifest_digest(&fx.extra_url(), "base", &tag), Some(bad.clone()));
    // The table says so too; --allow-drift accepts it.
    let out = fx.mz(&["ensure", "--allow-drift"]);
    out.ok();
    let line = out.stderr.lines().find(|l| l.starts_with("base ")).unwrap_or_default();
    assert!(line.contains(" drifted ") && line.contains("the tag names other content in"), "{out}");
    assert!(!line.contains("already in every registry"), "{out}");

    let recorder = Recorder::new(fx.repo.scratch());
    let out = run(recorder.apply(&mut fx.command(&["repair", "--json"])));
    out.ok();
    assert_eq!(
        fx.summary(&parse_rows(&out)),
        "base repaired [extra]\nleft published []\nright published []\ntop published []\n",
        "{out}"
    );
    // What was replaced, per registry: to undo it, or to look into it.
    let json = support::json::rows(&out.stdout, "repair");
    assert_eq!(json[0]["replaced"], serde_json::json!({ fx.extra_url(): bad }), "{out}");
    // Every registry holds the same digest now, and the document says so.
    assert_eq!(json[0]["digests"][fx.extra_url()], good, "{out}");
    assert_eq!(json[0]["digests"][fx.plain_url()], good, "{out}");
    assert_eq!(json[1].get("replaced"), None, "{out}");
    assert_eq!(recorder.calls(), Vec::<String>::new(), "repair ran docker\n{out}");
    assert_eq!(manifest_digest(&fx.extra_url(), "base", &tag), Some(good.clone()));
    assert_eq!(manifest_digest(&fx.plain_url(), "base", &tag), Some(good));
    fx.mz(&["check"]).ok();
    // Nothing left to repair.
    let out = fx.mz(&["repair", "--json"]);
    out.ok();
    assert_eq!(
        fx.summary(&parse_rows(&out)),
        "base published []\nleft published []\nright published []\ntop published []\n",
        "{out}"
    );
}

/// `repair` fingerprints a publishable image whose dependency is not
/// published (`publish: false`): the dependency's fingerprint is part of
/// the image's, so it is computed too (not an internal error), without the
/// fingerprint memo of an earlier command to lean on.
#[test]
fn repair_fingerprints_unpublished_dependencies() {
    let project = Project::new();
    project
        .file_image("base", "publish: false\n", "base\n")
        .image("app", "", "MZFROM base\nCOPY app.txt /app.txt\n", &[("app.txt", "app\n")])
        .repo
        .commit_all();
    let fx = Fixture { project };
    let out = fx.mz(&["--no-cache", "repair", "--json"]);
    out.ok();
    assert_eq!(fx.summary(&parse_rows(&out)), "app unpublished []\n", "{out}");
}

/// A 100 MB layer (random bytes, so compression cannot shrink it) is copied
/// between the two registries with the copying process's peak memory well
/// below the layer's size: blobs are streamed, never held.
// The peak is read from /proc (see `run_measured`): Linux only.
#[cfg(target_os = "linux")]
#[test]
fn a_large_layer_is_copied_in_bounded_memory() {
    let fx = Fixture::new();
    fx.image("big", "", "FROM scratch\nCOPY big.bin /big.bin\n", &[]);
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    let mut file = std::fs::File::create(fx.repo.path("images/big/big.bin")).unwrap();
    let copied = std::io::copy(&mut std::io::Read::take(&mut random, 100 << 20), &mut file).unwrap();
    assert_eq!(copied, 100 << 20);
    drop(file);
    fx.set_registries(&[fx.plain_entry()]);
    fx.mz(&["ensure", "big"]).ok();
    let _ = docker(&["rmi", &fx.spec("big")]);

    fx.set_registries(&[fx.plain_entry(), fx.auth_entry()]);
    let (out, peak) = run_measured(&mut fx.command(&["ensure", "--json", "big"]));
    out.ok();
    assert_eq!(fx.summary(&parse_rows(&out)), "big copied [auth]\n", "{out}");
    let json = support::json::rows(&out.stdout, "ensure");
    let bytes = json[0]["bytes_copied"].as_u64().unwrap();
    assert!(bytes >= 100 << 20, "only {bytes} bytes copied\n{out}");
    let tag = format!("mzbuild-{}", fx.fingerprint("big"));
    let digest = manifest_digest(&fx.plain_url(), "big", &tag);
    assert!(digest.is_some());
    assert_eq!(manifest_digest(&fx.auth_url(), "big", &tag), digest);
    eprintln!("peak RSS of the copying ensure: {:.1} MB for {bytes} bytes", peak as f64 / 1e6);
    assert!(peak < 64 << 20, "peak RSS {peak} bytes copying {bytes} bytes\n{out}");
}

/// A registry that refuses request bodies over 2 MiB (as some proxies in
/// front of registries do) gets a 3 MiB layer in `PATCH` chunks, and the
/// copy still has the source's digest.
#[test]
fn a_registry_that_refuses_large_bodies_gets_the_layer_in_chunks() {
    let fx = Fixture::new();
    fx.repo
        .write("images/chunky/mzbuild.yml", "name: chunky\n")
        .write("images/chunky/Dockerfile", "FROM scratch\nCOPY chunky.bin /chunky.bin\n");
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    let mut file = std::fs::File::create(fx.repo.path("images/chunky/chunky.bin")).unwrap();
    std::io::copy(&mut std::io::Read::take(&mut random, 3 << 20), &mut file).unwrap();
    drop(file);
    fx.set_registries(&[fx.plain_entry()]);
    fx.mz(&["ensure", "chunky"]).ok();
    let _ = run(Command::new("docker").args(["rmi", &fx.spec("chunky")]));

    let proxy = BodyLimitProxy::start(PLAIN, 2 << 20);
    let limited = format!("{}/{}-limited", proxy.host(), fx.id);
    fx.set_registries(&[fx.plain_entry(), format!("{{ url = \"{limited}\" }}")]);
    let out = fx.mz(&["ensure", "--json", "chunky"]);
    out.ok();
    assert_eq!(fx.summary(&parse_rows(&out)), format!("chunky copied [{limited}]\n"), "{out}");
    let seen = proxy.seen();
    let big: Vec<(&str, Option<u64>, bool)> = seen
        .iter()
        .filter(|s| s.length.is_some_and(|l| l > 1 << 20))
        .map(|s| (s.method.as_str(), s.length, s.refused))
        .collect();
    // One refused PUT of the whole layer, then two PATCHes of half of it.
    assert_eq!(big.len(), 3, "{seen:#?}");
    assert_eq!((big[0].0, big[0].2), ("PUT", true), "{seen:#?}");
    assert!(big[1..].iter().all(|(m, l, refused)| *m == "PATCH" && !refused && l.unwrap() <= 2 << 20), "{seen:#?}");
    let tag = format!("mzbuild-{}", fx.fingerprint("chunky"));
    let digest = manifest_digest(&fx.plain_url(), "chunky", &tag);
    assert!(digest.is_some());
    // The proxy passes reads through: ask the registry behind it.
    assert_eq!(manifest_digest(&format!("{PLAIN}/{}-limited", fx.id), "chunky", &tag), digest);
}

/// A token saved from a file ends with a newline (`\r\n` on Windows):
/// `ensure` uses it as `docker login --password-stdin` does, one trailing
/// `\n` then one `\r` dropped, for its own registry requests (the
/// credential check, the HEADs) as for docker's login and push.
#[test]
fn a_token_with_a_trailing_newline_works_as_with_docker_login() {
    let fx = Fixture::new();
    for ending in ["\n", "\r\n"] {
        let out = run(fx.command(&["ensure", "base"]).env(TOKEN_VAR, format!("{PASSWORD}{ending}")));
        out.ok();
        assert_eq!(fx.presence(&["base"]), "base: 200 200\n", "{ending:?}\n{out}");
    }
}

/// Registry tokens never reach cargo: a build script of a cargo-build
/// pre-image, run by `ensure` with the token in the environment, sees
/// neither the token's variable nor its value (it records what it saw in
/// its OUT_DIR, which the image's `extract` copies out).
#[test]
fn registry_tokens_do_not_reach_cargo_build_scripts() {
    let fx = Project::new();
    fx.repo
        .write(
            "Cargo.toml",
            support::registry::cargo_toml(&[fx.plain_entry(), fx.auth_entry()])
                .replace("members = []", "members = [\"tool\"]"),
        )
        .write("tool/Cargo.toml", "[package]\nname = \"tool\"\nversion = \"0.1.0\"\nedition = \"2021\"\n")
        .write("tool/src/main.rs", "fn main() {}\n")
        .write(
            "tool/build.rs",
            format!(
                r#"fn main() {{
    let by_name = std::env::var_os("{TOKEN_VAR}").is_some();
    let by_value: Vec<String> = std::env::vars_os()
        .filter(|(_, v)| v.to_string_lossy().contains("{}"))
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("seen.txt");
    std::fs::write(out, format!("by name: {{by_name}}; by value: {{by_value:?}}\n")).unwrap();
}}
"#,
                // Not the token itself: its first half, so that this file
                // holds no secret (the secrets test looks for the whole).
                &PASSWORD[..PASSWORD.len() / 2]
            ),
        );
    fx.image(
        "tool",
        "pre-image:\n  - type: cargo-build\n    bin: tool\n    strip: false\n    extract:\n      tool:\n        seen.txt: seen.txt\n",
        "FROM scratch\nCOPY tool seen.txt /\n",
        &[(".gitignore", "/tool\n/seen.txt\n")],
    );
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    let out = run(cargo.args(["generate-lockfile", "--offline"]).current_dir(fx.repo.root()));
    assert_eq!(out.code, Some(0), "{out}");
    fx.repo.commit_all();
    let out = fx.mz(&["ensure"]);
    out.ok();
    assert_eq!(
        std::fs::read_to_string(fx.repo.path("images/tool/seen.txt")).unwrap(),
        "by name: false; by value: []\n",
        "{out}"
    );
}

// ---------------------------------------------------------------------------
// The user's own docker credentials (for reads)

/// A user's own docker config (`DOCKER_CONFIG`, holding `config.json`) in a
/// test's scratch directory, and beside it a stand-in credential helper,
/// `docker-credential-mztest`, on a `PATH` of its own: it speaks the helper
/// protocol (the server on stdin, JSON on stdout), records each question
/// (its arguments and the server) and holds the auth registry's login only.
struct UserDocker {
    config: PathBuf,
    bin: PathBuf,
    record: PathBuf,
}

impl UserDocker {
    fn new(dir: &Path, config_json: &str) -> UserDocker {
        let (config, bin) = (dir.join("docker-config"), dir.join("bin"));
        std::fs::create_dir_all(&config).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(config.join("config.json"), config_json).unwrap();
        let record = dir.join("helper-asked");
        // The answer is in a file, so that the password is on no command line.
        let answer = bin.join("answer.json");
        std::fs::write(&answer, format!(r#"{{"ServerURL":"{AUTH}","Username":"{USER}","Secret":"{PASSWORD}"}}"#))
            .unwrap();
        let helper = bin.join("docker-credential-mztest");
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\nread -r server\nprintf '%s %s\\n' \"$*\" \"$server\" >> '{}'\n\
                 case \"$server\" in\n  {AUTH}|https://{AUTH}) cat '{}' ;;\n\
                 \x20 *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
                record.display(),
                answer.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        UserDocker { config, bin, record }
    }

    /// Run `cmd` as this user: their docker config, the helper on PATH, and
    /// no registry token in the environment.
    fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        cmd.env("DOCKER_CONFIG", &self.config).env("PATH", path).env_remove(TOKEN_VAR)
    }

    /// The user's `config.json`, byte for byte.
    fn config_json(&self) -> Vec<u8> {
        std::fs::read(self.config.join("config.json")).unwrap()
    }

    /// What the helper was asked: `<arguments> <server>`, one line each.
    fn asked(&self) -> Vec<String> {
        std::fs::read_to_string(&self.record).unwrap_or_default().lines().map(str::to_string).collect()
    }
}

/// `auths` entry value as `docker login` writes it.
fn auths_entry(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(r#"{{"auth":"{}"}}"#, base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Remove the local images of project `id` (what `acquire` is to pull).
fn remove_local_images(id: &str) {
    let mine: Vec<String> = local_images().into_iter().filter(|r| r.contains(&format!("/{id}/"))).collect();
    if !mine.is_empty() {
        let mut args = vec!["rmi"];
        args.extend(mine.iter().map(String::as_str));
        docker(&args);
    }
}

/// Run `cmd` to completion while sampling every process's arguments; also
/// returns how many samples were taken and the lines that held `secret`.
fn run_watching_arguments(cmd: &mut Command, secret: &str) -> (Output, usize, Vec<String>) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let (mut samples, mut leaks) = (0usize, Vec::<String>::new());
            while !done.load(Ordering::SeqCst) {
                samples += 1;
                leaks.extend(processes().into_iter().filter(|l| l.contains(secret)));
                // The sampling interval, not a wait for an event.
                std::thread::sleep(Duration::from_millis(10));
            }
            (samples, leaks)
        });
        let out = cmd.spawn().and_then(|child| child.wait_with_output());
        done.store(true, Ordering::SeqCst);
        let (samples, leaks) = watcher.join().unwrap();
        (Output::from(out.expect("running xtask")), samples, leaks)
    })
}

/// On a laptop there is no registry token in the environment, but there is
/// the user's `docker login`. Reads use it (`auths` of their config):
/// `check` asks the htpasswd registry with it, `acquire` pulls with it; a
/// helper that cannot be run is a warning, and the registry is asked
/// anonymously. Writes do not: `ensure` still needs the configured token and
/// fails before any build. The user's config is never written.
#[test]
fn reads_use_the_users_docker_login_and_writes_still_need_the_token() {
    let fx = Fixture::new();
    // A commit to diff against: every image differs from it.
    fx.repo.append("images/base/base.txt", "new\n");
    fx.repo.commit_all();
    fx.mz(&["ensure"]).ok();

    // No token and no login: the auth registry will not say.
    let nobody = UserDocker::new(&fx.repo.scratch().join("nobody"), "{}\n");
    let out = run(nobody.apply(&mut fx.command(&["check"])));
    assert!(out.error().contains(&format!("registry {} refused to say whether", fx.auth_url())), "{out}");
    let out = run(nobody.apply(&mut fx.command(&["diff", "HEAD~1"])));
    assert!(out.ok().contains("top ") && !out.stdout.contains("already published"), "{out}");
    assert!(out.stderr.contains("could not ask the registries"), "{out}");

    let config = format!(r#"{{"auths":{{"{AUTH}":{}}}}}"#, auths_entry(USER, PASSWORD));
    let user = UserDocker::new(&fx.repo.scratch().join("user"), &config);
    let before = user.config_json();
    let out = run(user.apply(&mut fx.command(&["check"])));
    out.ok();
    assert!(out.stderr.contains("all 4 publishable images are in every registry"), "{out}");
    assert!(!out.stderr.contains(PASSWORD) && !out.stdout.contains(PASSWORD), "{out}");
    let out = run(user.apply(&mut fx.command(&["diff", "HEAD~1"])));
    assert_eq!(out.ok().matches("  already published\n").count(), 4, "{out}");
    assert!(!out.stderr.contains("could not ask"), "{out}");

    // acquire pulls from the auth registry with the user's login.
    fx.set_registries(&[fx.auth_entry()]);
    remove_local_images(&fx.id);
    let recorder = Recorder::new(fx.repo.scratch());
    let out = run(recorder.apply(user.apply(&mut fx.command(&["acquire", "top"]))));
    out.ok();
    for i in PUBLISHED {
        assert!(out.stderr.contains(&format!("mzbuild: {i}: pulled\n")), "{i} was not pulled\n{out}");
    }
    assert_eq!(recorder.builds(), Vec::<String>::new(), "{out}");
    assert!(image_exists(&fx.spec("top")), "{out}");
    fx.set_registries(&[fx.plain_entry(), fx.auth_entry()]);

    // A credential store that is not installed: a warning, then anonymous.
    let broken = UserDocker::new(&fx.repo.scratch().join("broken"), r#"{"credsStore":"mz-not-installed"}"#);
    let out = run(broken.apply(&mut fx.command(&["check"])));
    let stderr = out.error();
    assert!(
        stderr.contains(&format!(
            "warning: registry {}: cannot use your docker login: credential helper \
             docker-credential-mz-not-installed failed for {AUTH}: it is not installed",
            fx.auth_url()
        )),
        "{out}"
    );
    assert!(stderr.contains("refused to say whether"), "{out}");

    // Writes need the configured token, whatever the user's docker has.
    fx.repo.append("images/base/base.txt", "changed\n");
    fx.repo.commit_all();
    let (out, builds) = fx.run_recording(user.apply(&mut fx.command(&["ensure"])));
    assert!(
        out.error().contains(&format!(
            "registry {}: the environment variable {TOKEN_VAR} (its token) is not set",
            fx.auth_url()
        )),
        "{out}"
    );
    assert_eq!(builds, Vec::<Vec<String>>::new(), "{out}");
    assert_eq!(user.config_json(), before, "the user's docker config was written");
}

/// A registry's `credHelpers` entry names a helper: reads ask it (the
/// server on stdin) and use what it answers, which appears on no command
/// line, in no output and in no file the runs leave behind. `ensure`
/// without the configured token never asks it and fails before any build.
#[test]
fn a_credential_helper_is_asked_and_its_answer_stays_in_memory() {
    let fx = Fixture::published();
    let user = UserDocker::new(
        &fx.repo.scratch().join("user"),
        &format!(r#"{{"auths":{{"{AUTH}":{{}}}},"credHelpers":{{"{AUTH}":"mztest","example.com":"other"}}}}"#),
    );
    let before = user.config_json();
    let tmp = fx.repo.scratch().join("tmp");
    std::fs::create_dir(&tmp).unwrap();

    let mut cmd = fx.command(&["check"]);
    user.apply(&mut cmd).env("TMPDIR", &tmp);
    let (out, samples, leaks) = run_watching_arguments(&mut cmd, PASSWORD);
    out.ok();
    assert!(out.stderr.contains("all 4 publishable images are in every registry"), "{out}");
    assert_eq!(user.asked(), [format!("get {AUTH}")], "{out}");
    assert!(samples >= 2, "only {samples} process listings during the run");
    assert_eq!(leaks, Vec::<String>::new(), "the password was on a command line");
    assert!(!out.stderr.contains(PASSWORD) && !out.stdout.contains(PASSWORD), "{out}");

    // acquire, from the auth registry, with the same login.
    fx.set_registries(&[fx.auth_entry()]);
    remove_local_images(&fx.id);
    let mut cmd = fx.command(&["acquire", "base"]);
    user.apply(&mut cmd).env("TMPDIR", &tmp);
    let (out, _, leaks) = run_watching_arguments(&mut cmd, PASSWORD);
    out.ok();
    assert!(out.stderr.contains("mzbuild: base: pulled\n"), "{out}");
    assert_eq!(leaks, Vec::<String>::new(), "the password was on a command line");
    assert!(!out.stderr.contains(PASSWORD) && !out.stdout.contains(PASSWORD), "{out}");
    fx.set_registries(&[fx.plain_entry(), fx.auth_entry()]);

    let asked = user.asked().len();
    fx.repo.append("images/base/base.txt", "changed\n");
    fx.repo.commit_all();
    let (out, builds) = fx.run_recording(user.apply(&mut fx.command(&["ensure"])).env("TMPDIR", &tmp));
    assert!(out.error().contains(&format!("the environment variable {TOKEN_VAR} (its token) is not set")), "{out}");
    assert_eq!(builds, Vec::<Vec<String>>::new(), "{out}");
    assert_eq!(user.asked().len(), asked, "ensure asked the user's credential helper");

    for f in files_under(fx.repo.root()).into_iter().chain(files_under(&tmp)).chain(files_under(&user.config)) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()), "the password is in {}", f.display());
    }
    assert_eq!(user.config_json(), before, "the user's docker config was written");
}

/// Docker Desktop's layout, as on a Mac: the current context is
/// `desktop-linux` (named in the user's `config.json`, its endpoint under
/// `contexts/`), and buildx is a plugin in `~/.docker/cli-plugins`. `ensure`
/// logs in into a private DOCKER_CONFIG, and docker must still find both
/// there: the build goes through the user's plugin, on the user's context.
#[test]
fn the_users_context_and_cli_plugins_reach_the_private_docker_config() {
    let fx = Fixture::new();
    let user = fx.repo.scratch().join("desktop");
    let config = user.join("docker-config");
    let plugins = config.join("cli-plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let real = ["/usr/local/lib", "/usr/local/libexec", "/usr/lib", "/usr/libexec"]
        .iter()
        .map(|d| Path::new(d).join("docker/cli-plugins/docker-buildx"))
        .find(|p| p.exists())
        .expect("the buildx plugin is installed (`bash ci/stack.sh up`)");
    let record = user.join("buildx-ran");
    let plugin = plugins.join("docker-buildx");
    std::fs::write(
        &plugin,
        format!("#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n", record.display(), real.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let mut create =
        support::docker::command(&["context", "create", "desktop-linux", "--docker", &format!("host={host}")]);
    run(create.env("DOCKER_CONFIG", &config)).ok();
    std::fs::write(config.join("config.json"), "{\"currentContext\": \"desktop-linux\"}\n").unwrap();
    let before = std::fs::read(config.join("config.json")).unwrap();

    let out = run(fx.command(&["ensure"]).env("DOCKER_CONFIG", &config));
    out.ok();
    let ran = std::fs::read_to_string(&record).unwrap_or_default();
    assert!(
        ran.lines().any(|l| l.starts_with("buildx build")),
        "the user's buildx plugin was not used: {ran:?}\n{out}"
    );
    assert_eq!(std::fs::read(config.join("config.json")).unwrap(), before, "the user's config.json was written");
}

/// The table a dry run prints on stdout, as `summary` shows a real run's
/// rows (the plan's actions in the real run's words: `copy` is `copied`),
/// and each building image's wave.
fn plan_summary(fx: &Fixture, out: &Output) -> (String, BTreeMap<String, String>) {
    let label = |u: &str| {
        if u == fx.plain_url() {
            "plain".to_string()
        } else if u == fx.auth_url() {
            "auth".to_string()
        } else {
            u.to_string()
        }
    };
    let mut lines = vec![];
    let mut waves = BTreeMap::new();
    let table = out.stdout.split("\n\n").next().unwrap_or_default();
    for l in table.lines().skip(1) {
        let words: Vec<&str> = l.split_whitespace().collect();
        let [name, action, wave, ..] = words[..] else { panic!("not a plan row: {l}\n{out}") };
        let (status, registries) = match action {
            "copy" => ("copied", l.rsplit(" to ").next().unwrap_or_default()),
            "push" => ("pushed", l.split_once("  build, push to ").map(|(_, r)| r).unwrap_or_default()),
            "build" => ("built", ""),
            other => (other, ""),
        };
        let regs: Vec<String> = registries.split(", ").filter(|r| !r.is_empty()).map(label).collect();
        lines.push(format!("{name} {status} [{}]\n", regs.join(", ")));
        if wave != "-" {
            waves.insert(name.to_string(), wave.to_string());
        }
    }
    lines.sort();
    (lines.concat(), waves)
}

#[test]
fn ensure_dry_run_changes_nothing_and_the_real_run_does_what_it_planned() {
    let fx = Fixture::published();
    // A gap (right is missing from the auth registry), an edit (left, so
    // top too) and an unpublished image no longer in the engine.
    let right = format!("mzbuild-{}", fx.fingerprint("right"));
    delete_manifest(&fx.auth_url(), "right", &manifest_digest(&fx.auth_url(), "right", &right).unwrap());
    fx.repo.write("images/left/left.txt", "left, edited\n");
    docker(&["rmi", &fx.spec("local-only")]).ok();
    let world = || {
        let mut mine: Vec<String> = local_images().into_iter().filter(|i| i.contains(&fx.id)).collect();
        mine.sort();
        (catalog(&fx.plain_url()), catalog(&fx.auth_url()), fx.presence(&PUBLISHED), mine, fx.logs())
    };
    let before = world();
    assert_eq!(before.2, "base: 200 200\nleft: 404 404\nright: 200 404\ntop: 404 404\n");

    let recorder = Recorder::new(fx.repo.scratch());
    let out = run(recorder.apply(&mut fx.command(&["ensure", "--dry-run"])));
    out.ok();
    assert_eq!(world(), before, "the dry run changed something\n{out}");
    let calls = recorder.calls();
    assert!(
        calls.iter().all(|c| !["build", "push", "pull", "login", "rmi", "tag"].iter().any(|w| c.contains(w))),
        "the dry run asked docker for more than reads: {calls:?}\n{out}"
    );
    let (plan, waves) = plan_summary(&fx, &out);
    assert_eq!(
        plan,
        "base published []\n\
         left pushed [plain, auth]\n\
         local-only built []\n\
         right copied [auth]\n\
         top pushed [plain, auth]\n",
        "{out}"
    );
    assert_eq!(format!("{waves:?}"), r#"{"left": "1", "local-only": "1", "top": "2"}"#, "{out}");
    assert!(out.stderr.contains("dry run of ensure: 1 to copy, 3 to build in 2 waves; nothing was built"), "{out}");

    // The real run does what the plan said.
    let (out, rows, builds) = fx.ensure_json(&[]);
    out.ok();
    assert_eq!(fx.summary(&rows), plan, "{out}");
    assert_eq!(builds, "plain/left auth/left\nplain/local-only\nplain/top auth/top\n", "{out}");
    // And a plan after it: nothing to do.
    let out = fx.mz(&["ensure", "--dry-run"]);
    assert!(out.stderr.contains("dry run of ensure: nothing to build;"), "{out}");
    assert!(!out.ok().contains(" push ") && !out.stdout.contains(" copy "), "{out}");
}

#[test]
fn build_dry_run_plans_waves_from_the_local_engine_and_builds_nothing() {
    let fx = Fixture::new();
    let mine = || local_images().into_iter().filter(|i| i.contains(&fx.id)).collect::<Vec<_>>();
    let out = fx.mz(&["build", "top", "--dry-run"]);
    let (plan, waves) = plan_summary(&fx, &out);
    assert_eq!(plan, "base built []\nleft built []\nright built []\ntop built []\n", "{out}");
    assert_eq!(format!("{waves:?}"), r#"{"base": "1", "left": "2", "right": "2", "top": "3"}"#, "{out}");
    assert_eq!(mine(), Vec::<String>::new(), "{out}");
    assert!(!fx.log_dir().exists(), "the dry run built something: {:?}", fx.logs());

    fx.mz(&["build", "top"]).ok();
    let out = fx.mz(&["build", "top", "--dry-run"]);
    assert_eq!(plan_summary(&fx, &out).0, "base present []\nleft present []\nright present []\ntop present []\n");
    assert!(out.stderr.contains("dry run of build: nothing to build; nothing was built"), "{out}");
    let out = fx.mz(&["build", "top", "--force", "--dry-run"]);
    assert_eq!(plan_summary(&fx, &out).0, "base present []\nleft present []\nright present []\ntop built []\n");
    assert_eq!(plan_summary(&fx, &out).1.get("top").map(String::as_str), Some("1"), "{out}");
}

/// A stand-in `buildkite-agent` in `dir`: each call appends its arguments
/// (one line) to `dir/calls` and its stdin to `dir/stdin-<n>`.
fn fake_buildkite_agent(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("buildkite-agent");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nd='{}'\nn=$(cat \"$d/calls\" 2>/dev/null | wc -l)\necho \"$*\" >>\"$d/calls\"\ncat >\"$d/stdin-$n\"\n",
            dir.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// With `$GITHUB_STEP_SUMMARY` set, `ensure`, `check`, `repair` and `tag`
/// append a Markdown summary to it (a table with each image's status, time,
/// digest and registries; failures with their log tail, collapsed); with
/// `$BUILDKITE` set and `buildkite-agent` on PATH, the same Markdown goes
/// to `buildkite-agent annotate` on stdin, styled by the result.
#[test]
fn ci_summaries_go_to_github_and_buildkite() {
    let fx = Fixture::new();
    let dir = fx.repo.scratch().join("ci");
    std::fs::create_dir_all(&dir).unwrap();
    let bin = fake_buildkite_agent(&dir);
    let summary_file = dir.join("step-summary.md");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let ci = |args: &[&str]| {
        let mut cmd = fx.command(args);
        cmd.env("GITHUB_STEP_SUMMARY", &summary_file).env("BUILDKITE", "true").env("PATH", &path);
        run(&mut cmd)
    };
    let calls = || std::fs::read_to_string(dir.join("calls")).unwrap_or_default();
    let annotation = |n: usize| std::fs::read_to_string(dir.join(format!("stdin-{n}"))).unwrap();
    let summary = || std::fs::read_to_string(&summary_file).unwrap_or_default();
    let (plain, auth) = (fx.plain_url(), fx.auth_url());
    let digest = |i: &str| manifest_digest(&plain, i, &format!("mzbuild-{}", fx.fingerprint(i))).unwrap();

    // A failing build: the summary says which, with its log tail.
    fx.repo.append("images/right/Dockerfile", "BOGUSINSTRUCTION x\n");
    let out = ci(&["ensure"]);
    out.error();
    let md = summary();
    assert!(md.starts_with("### ❌ mzbuild ensure: 2 of 5 images did not complete\n\n"), "{md}");
    assert!(md.contains("| image | status | time | digest | where |\n|---|---|---:|---|---|\n"), "{md}");
    let base = md.lines().find(|l| l.starts_with("| base | pushed | ")).unwrap_or_else(|| panic!("{md}"));
    assert!(base.ends_with(&format!(" | `{}` | {plain}, {auth} |", digest("base"))), "{base}");
    assert!(md.contains("\n| local-only | built | "), "{md}");
    assert!(md.contains("\n| right | failed | "), "{md}");
    assert!(md.contains("\n| top | skipped | - | - | "), "{md}");
    let details = md.split("<details><summary>right: failed</summary>").nth(1).unwrap_or_else(|| panic!("{md}"));
    assert!(details.contains("BOGUSINSTRUCTION") && details.contains("</details>"), "{md}");
    assert_eq!(calls(), "annotate --style error --context mzbuild\n");
    assert_eq!(annotation(0), md, "the annotation is not the summary");

    // Fixed: a second section is appended, and the annotation is a success.
    let broken = std::fs::read_to_string(fx.repo.path("images/right/Dockerfile")).unwrap();
    fx.repo.write("images/right/Dockerfile", broken.replace("BOGUSINSTRUCTION x\n", ""));
    ci(&["ensure"]).ok();
    let second = summary()[md.len()..].to_string();
    assert!(second.starts_with("### ✅ mzbuild ensure: 5 images ok\n"), "{second}");
    assert!(
        second.contains(&format!("\n| base | published | - | `{}` | {plain}, {auth} |", digest("base"))),
        "{second}"
    );
    assert!(second.contains(&format!("| `{}` | {plain}, {auth} |", digest("right"))), "{second}");
    assert_eq!(calls().lines().nth(1), Some("annotate --style success --context mzbuild"));
    assert_eq!(annotation(1), second);

    // check: every publishable image, with its digest.
    let before = summary().len();
    ci(&["check"]).ok();
    let md = summary()[before..].to_string();
    assert!(
        md.starts_with("### ✅ mzbuild check: 4 publishable images, all in every registry with one digest\n"),
        "{md}"
    );
    assert!(md.contains(&format!("\n| top | published | - | `{}` | {plain}, {auth} |", digest("top"))), "{md}");

    // repair: a gap in the auth registry is filled by a copy.
    let tag = format!("mzbuild-{}", fx.fingerprint("left"));
    delete_manifest(&auth, "left", &manifest_digest(&auth, "left", &tag).unwrap());
    let before = summary().len();
    ci(&["check"]).error();
    let md = summary()[before..].to_string();
    assert!(md.starts_with("### ❌ mzbuild check: 1 of 4 publishable images missing or drifted\n"), "{md}");
    assert!(md.contains(&format!("\n| left | missing | - | `{}` | missing from {auth} |", digest("left"))), "{md}");
    let before = summary().len();
    ci(&["repair"]).ok();
    let md = summary()[before..].to_string();
    assert!(md.starts_with("### ✅ mzbuild repair: 4 images ok\n"), "{md}");
    let left = md.lines().find(|l| l.starts_with("| left | copied | ")).unwrap_or_else(|| panic!("{md}"));
    assert!(left.ends_with(&format!(" | `{}` | from {plain} to {auth} |", digest("left"))), "{left}");

    // tag: one row per image and registry, with the index's digest.
    let before = summary().len();
    let out = ci(&["--arch", "x86_64", "tag", "v1.0.0"]);
    let stdout = out.ok().to_string();
    let md = summary()[before..].to_string();
    assert!(md.starts_with("### ✅ mzbuild tag: v1.0.0: 8 created, 0 moved, 0 unchanged\n"), "{md}");
    let index = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{auth}/top:v1.0.0 ")))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(md.contains(&format!("\n| top | created | - | `{index}` | {auth}/top:v1.0.0 |")), "{md}");
    assert_eq!(calls().lines().count(), 6, "{}", calls());

    // Without the variables: neither a summary nor an annotation.
    let (len, n) = (summary().len(), calls().lines().count());
    let mut cmd = fx.command(&["check"]);
    run(cmd.env("PATH", &path)).ok();
    assert_eq!((summary().len(), calls().lines().count()), (len, n));
}
