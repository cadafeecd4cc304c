//! Integration tests: retries, pulls and interruption, end to end, with the
//! real `xtask` binary, the real Docker engine (buildx) and the two real
//! registries that `ci/stack.sh up` starts (127.0.0.1:5000 plain,
//! 127.0.0.1:5001 with htpasswd auth).
//!
//! - a push through a TCP proxy that goes down (connections refused, live
//!   ones dropped) is retried and lands in the registry;
//! - `acquire` pulls what is published and builds only the rest, locally,
//!   pushing nothing;
//! - SIGINT during a build stops the build (down to its RUN step's process),
//!   removes the private docker logins, exits 130 and pushes nothing.
//!
//! Every test uses registry paths no other test and no earlier run uses
//! (`t-<pid>-<nanos>-<n>`) and removes the local images it created. What is
//! in a registry is asked of its HTTP API with `curl`, never of the tool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use support::child::Running;
use support::docker::{copy_busybox, docker, image_exists, local_images, Recorder};
use support::proxy::Proxy;
use support::registry::{catalog, manifest_status, Project, PASSWORD, PLAIN, TOKEN_VAR};
use support::{processes, run, wait_until};

// ---------------------------------------------------------------------------
// Processes

/// When dropped, kills (by pid) every process whose arguments contain one
/// of `patterns` (unique to the test): a tool that fails to stop its builds
/// must not leave them running after the test.
struct KillLeftovers {
    patterns: Vec<String>,
}

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        let Ok(ps) = Command::new("ps").args(["-eo", "pid=,args="]).output() else { return };
        for line in String::from_utf8_lossy(&ps.stdout).lines() {
            let Some((pid, args)) = line.trim_start().split_once(' ') else { continue };
            if self.patterns.iter().any(|p| args.contains(p.as_str())) && pid != std::process::id().to_string() {
                let _ = Command::new("kill").args(["-KILL", pid]).stderr(Stdio::null()).status();
            }
        }
    }
}

/// The `$ docker buildx build` command lines in a log (one per attempt;
/// `docker` may be a wrapper's path).
fn buildx_attempts(log: &str) -> usize {
    log.lines().filter(|l| l.starts_with("$ ") && l.contains("docker") && l.contains(" buildx build ")).count()
}

/// How many attempts to push a log shows (see [`is_push_attempt`]).
fn push_attempts(log: &str) -> usize {
    log.lines().filter(|l| is_push_attempt(l)).count()
}

/// A log line that starts an attempt to push: `buildx build --push`, or, on
/// the docker driver (where mzbuild builds into the engine, normalises the
/// image's times and pushes it), `docker push`.
fn is_push_attempt(line: &str) -> bool {
    line.starts_with("$ ")
        && line.contains("docker")
        && ((line.contains(" buildx build ") && line.contains(" --push")) || line.contains(" push "))
}

/// A committed project with one image, `payload` (a file unique to it),
/// publishing to its path on the registry at `host` (a proxy, for one), and
/// to the auth registry (which needs a login) when `auth`.
fn payload_at(host: &str, auth: bool) -> Project {
    let fx = Project::new();
    let mut registries = vec![fx.entry_at(host)];
    if auth {
        registries.push(fx.auth_entry());
    }
    fx.set_registries(&registries);
    fx.file_image("payload", "", &fx.id);
    fx.repo.commit_all();
    fx
}

// ---------------------------------------------------------------------------
// Tests

/// The registry goes away (connections refused, live ones dropped) right
/// after `ensure` has checked it, and stays away until the push has failed
/// and the second attempt has started (and at least 3 s): the push is
/// retried, through the same proxy, and lands.
#[test]
fn pushes_are_retried_when_the_registry_flakes() {
    let mut proxy = Proxy::start(PLAIN).unwrap();
    let port = proxy.port();
    let fx = payload_at(&proxy.host(), false);
    let url = format!("127.0.0.1:{port}/{}", fx.id);
    let fp = fx.fingerprint("payload");
    let direct = format!("{PLAIN}/{}", fx.id);
    assert_eq!(manifest_status(&direct, "payload", &fp), "404");

    let mut running = Running::spawn(&mut fx.command(&["ensure"]));
    let to_build = running.wait_for_line("to build", Duration::from_secs(120));
    assert_eq!(
        to_build.as_deref().map(|l| l.ends_with("; 1 to build")),
        Some(true),
        "no `1 to build` line\n{}",
        running.stderr_so_far()
    );
    let checks = proxy.accepted();
    assert!(checks >= 1, "the registry check did not go through the proxy");

    proxy.down();
    let down_at = Instant::now();
    let log = fx.log("payload");
    let second_attempt = wait_until(Duration::from_secs(120), || {
        let attempts = push_attempts(&std::fs::read_to_string(&log).unwrap_or_default());
        (attempts >= 2 && down_at.elapsed() >= Duration::from_secs(3)) || running.exited()
    });
    let down_for = down_at.elapsed();
    proxy.up().unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port} again: {e}"));
    let (out, _) = running.finish(Duration::from_secs(300));
    assert!(second_attempt, "no second attempt within 120 s\n{out}");

    out.ok();
    let text = std::fs::read_to_string(&log).unwrap();
    let attempts = push_attempts(&text);
    assert!(attempts >= 2, "the log shows {attempts} attempt(s) (down for {down_for:?}):\n{text}\n{out}");
    // The first attempt failed on the refused connection; the last one pushed.
    let mut sections: Vec<String> = vec![];
    for line in text.lines() {
        if is_push_attempt(line) {
            sections.push(String::new());
        }
        if let Some(last) = sections.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    assert_eq!(sections.len(), attempts, "{text}");
    assert!(sections[0].contains("connection refused"), "the first attempt did not fail on the refusal:\n{text}");
    assert!(!sections[attempts - 1].contains("ERROR"), "the last attempt failed:\n{text}");
    assert!(sections[attempts - 1].contains(&format!("{url}/payload:mzbuild-{fp}")), "{text}");
    assert!(proxy.accepted() > checks, "nothing went through the proxy after it came back\n{out}");

    // The progress line counts the attempts, and the summary says pushed.
    let done = "mzbuild: payload: done in ";
    let progress = out.stderr.lines().find(|l| l.starts_with(done)).unwrap_or_else(|| panic!("no `{done}`\n{out}"));
    assert!(
        progress.ends_with(&format!(" after {attempts} attempts")),
        "`{progress}` (log: {attempts} attempts)\n{out}"
    );
    let summary: Vec<&str> = out
        .stderr
        .lines()
        .find(|l| l.starts_with("payload "))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(
        (summary.first().copied(), summary.get(1).copied(), summary.get(3..).map(|s| s.join(" "))),
        (Some("payload"), Some("pushed"), Some(format!("to {url}"))),
        "{out}"
    );
    assert!(out.stderr.contains("mzbuild: ensure finished in "), "{out}");

    // In the registry, asked directly (not through the proxy).
    assert_eq!(manifest_status(&direct, "payload", &fp), "200");
    assert_eq!(catalog(&direct), [format!("{}/payload", fx.id)]);
    eprintln!("registry down for {down_for:?}; {progress}");
}

/// `acquire` on images of which some are published: pulls those (never
/// builds them), builds the unpublished one locally, pushes nothing.
#[test]
fn acquire_pulls_published_images_and_builds_the_rest() {
    let fx = Project::new();
    fx.set_registries(&[fx.plain_entry()]);
    let plain = fx.plain_url();
    fx.file_image("base", "", &fx.id)
        .image("app", "", "MZFROM base\nCOPY app.txt /app.txt\n", &[("app.txt", "app\n")])
        .image("tool", "publish: false\n", "MZFROM base\nCOPY tool.txt /tool.txt\n", &[("tool.txt", "tool\n")]);
    fx.repo.commit_all();

    // Publish app (and base); tool, unpublished and not asked for, is not built.
    let out = fx.mz(&["ensure", "app"]);
    out.ok();
    assert!(out.stderr.contains("; 2 to build\n"), "{out}");
    let specs: BTreeMap<&str, String> = ["app", "base", "tool"].iter().map(|i| (*i, fx.spec(i))).collect();
    let fps: BTreeMap<&str, String> = ["app", "base", "tool"].iter().map(|i| (*i, fx.fingerprint(i))).collect();
    assert_eq!(catalog(&plain), [format!("{}/app", fx.id), format!("{}/base", fx.id)], "{out}");
    assert!(!fx.log("tool").exists(), "ensure app built tool\n{out}");

    // Nothing of this fixture in the local engine.
    for i in ["app", "base"] {
        let _ = docker(&["rmi", &specs[i]]);
    }
    let present: Vec<String> = local_images().into_iter().filter(|r| r.contains(&format!("/{}/", fx.id))).collect();
    assert_eq!(present, Vec::<String>::new());
    // Coarse file-system timestamps must not hide a rewrite: backdated
    // logs, which a rewrite would set to now.
    fx.repo.backdate_build_logs();
    let logs = fx.logs();
    assert_eq!(logs.keys().collect::<Vec<_>>(), ["app.log", "base.log"]);

    let recorder = Recorder::new(fx.repo.scratch());
    let out = run(recorder.apply(&mut fx.command(&["acquire", "app", "tool"])));
    assert_eq!(out.ok(), format!("{}\n{}\n", specs["app"], specs["tool"]), "{out}");
    for line in ["mzbuild: base: pulled", "mzbuild: app: pulled", "mzbuild: building tool (log: "] {
        assert!(out.stderr.lines().any(|l| l.starts_with(line)), "no `{line}`\n{out}");
    }
    for line in ["mzbuild: building base", "mzbuild: building app", "mzbuild: tool: pulled"] {
        assert!(!out.stderr.contains(line), "`{line}`\n{out}");
    }
    for i in ["app", "base", "tool"] {
        assert!(image_exists(&specs[i]), "{} is not in the local engine\n{out}", specs[i]);
    }

    // The docker calls: two pulls, one local build (of tool), no push.
    let calls = recorder.calls().join("\n");
    let mut pulls: Vec<&str> = calls.lines().filter(|l| l.starts_with("pull ")).collect();
    pulls.sort();
    assert_eq!(pulls, [format!("pull --quiet {}", specs["app"]), format!("pull --quiet {}", specs["base"])], "{calls}");
    let builds: Vec<&str> =
        calls.lines().filter(|l| l.starts_with("buildx build ") || l.starts_with("build ")).collect();
    assert_eq!(builds.len(), 1, "{calls}");
    let words: Vec<&str> = builds[0].split(' ').collect();
    let tags: Vec<&str> = words.windows(2).filter(|w| w[0] == "-t").map(|w| w[1]).collect();
    assert_eq!(tags, [specs["tool"].as_str()], "{calls}");
    assert!(words.contains(&"--load") && !words.contains(&"--push"), "{calls}");
    assert!(!calls.lines().any(|l| l.starts_with("push") || l.contains("--push")), "{calls}");

    // Only tool's log is new; app's and base's were not touched.
    let mut after = fx.logs();
    assert!(after.remove("tool.log").is_some(), "no tool.log");
    assert_eq!(after, logs, "acquire wrote the logs of pulled images\n{out}");
    let tool_log = std::fs::read_to_string(fx.log("tool")).unwrap();
    assert_eq!(
        tool_log.lines().filter(|l| l.starts_with("$ ") && l.contains(" buildx build ")).count(),
        1,
        "{tool_log}"
    );

    // Nothing was pushed.
    assert_eq!(manifest_status(&plain, "tool", &fps["tool"]), "404");
    assert_eq!(catalog(&plain), [format!("{}/app", fx.id), format!("{}/base", fx.id)], "{out}");
}

/// `acquire` logs in to the spec registry with its configured token, as
/// `ensure` does (a private config, the token on stdin), so that it pulls
/// what only an auth registry has instead of building it; and when it
/// builds what it was to pull, it says why, per image: not published, or
/// the pull failed (and docker's reason).
#[test]
fn acquire_logs_in_to_pull_and_says_why_it_builds() {
    let fx = Project::new();
    fx.set_registries(&[fx.auth_entry()]);
    fx.file_image("app", "", &fx.id).file_image("new", "", &fx.id);
    fx.repo.commit_all();
    fx.mz(&["ensure", "app"]).ok();
    let (app, new) = (fx.spec("app"), fx.spec("new"));
    let remove_local = || {
        for spec in [&app, &new] {
            let _ = docker(&["rmi", spec]);
        }
    };
    // The user has no docker login of their own.
    let config = fx.repo.scratch().join("docker-config");
    std::fs::create_dir(&config).unwrap();

    remove_local();
    let recorder = Recorder::new(fx.repo.scratch());
    let out = run(recorder.apply(fx.command(&["acquire", "app", "new"]).env("DOCKER_CONFIG", &config)));
    out.ok();
    assert!(out.stderr.contains("mzbuild: app: pulled\n"), "{out}");
    assert!(out.stderr.contains(&format!("mzbuild: new: not published ({new}); building it\n")), "{out}");
    assert_eq!(recorder.build_tags(), [[new.clone()]], "{out}");
    let calls = recorder.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("login 127.0.0.1:5001 --username mzbuild --password-stdin")),
        "{calls:?}"
    );
    assert!(!out.stderr.contains(PASSWORD), "{out}");

    // Without the token the pull fails, and it says so.
    remove_local();
    let out = run(fx.command(&["acquire", "app"]).env("DOCKER_CONFIG", &config).env_remove(TOKEN_VAR));
    out.ok();
    assert!(
        out.stderr.contains("mzbuild: app: pull failed (")
            && out.stderr.contains("no basic auth credentials); building it\n"),
        "{out}"
    );
    assert!(std::fs::read_dir(&config).unwrap().next().is_none(), "acquire wrote to the user's docker config");
}

/// SIGINT while an image's RUN step runs: the build (its docker client and
/// the RUN step's process) stops, the private DOCKER_CONFIG with the logins
/// is removed, the exit status is 130, and nothing is pushed. `--json` still
/// prints one valid document: what finished (a local build), and the
/// interrupted build, with `"result": "interrupted"`.
#[test]
fn ctrl_c_stops_builds_and_removes_the_logins() {
    // Both registries: the auth one needs a login.
    let fx = Project::new();
    // A sleep no other build runs, so that its process is this test's.
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().subsec_nanos();
    let seconds = 3000 + (nanos ^ std::process::id()) % 1000;
    let sleep = format!("/bin/busybox sleep {seconds}");
    fx.image(
        "sleeper",
        "",
        &format!("FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"{seconds}\"]\n"),
        &[],
    );
    copy_busybox(&fx.repo.path("images/sleeper"));
    // Finishes before the interrupt; local (publish: false): nothing pushed.
    fx.image("quick", "publish: false\n", "FROM scratch\nCOPY busybox /bin/busybox\n", &[]);
    copy_busybox(&fx.repo.path("images/quick"));
    fx.repo.commit_all();
    let fp = fx.fingerprint("sleeper");
    // Its builds' command lines name its tag (the context is a tar on stdin).
    let context = format!("/sleeper:mzbuild-{fp}");
    let tmp = fx.repo.scratch().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let configs = || -> Vec<String> {
        std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("mzbuild-docker-config-"))
            .collect()
    };

    // Dropped last: after `running` has had its chance to stop them.
    let _leftovers = KillLeftovers { patterns: vec![sleep.clone(), context.clone()] };
    let mut running = Running::spawn(fx.command(&["ensure", "--json"]).env("TMPDIR", &tmp));
    let log = fx.log("sleeper");
    let step = wait_until(Duration::from_secs(120), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("[2/2] RUN") || running.exited()
    });
    assert!(step && !running.exited(), "the RUN step did not start\n{}", running.stderr_so_far());
    let started = wait_until(Duration::from_secs(60), || processes().iter().any(|p| p.contains(&sleep)));
    assert!(started, "no `{sleep}` process\n{}", running.stderr_so_far());
    assert_eq!(configs().len(), 1, "no private DOCKER_CONFIG in TMPDIR during the build");
    assert!(processes().iter().any(|p| p.contains("buildx build") && p.contains(&context)), "no buildx process");
    let quick = wait_until(Duration::from_secs(120), || running.stderr_so_far().contains("quick: done"));
    assert!(quick, "quick was not built\n{}", running.stderr_so_far());

    let status = run(Command::new("kill").args(["-INT", &running.pid().to_string()]));
    assert_eq!(status.code, Some(0), "{status}");
    let sent = Instant::now();
    let begun = running.started;
    let (out, ended) = running.finish(Duration::from_secs(60));
    let took = ended - sent;
    assert_eq!(out.code, Some(130), "{out}");
    assert!(took < Duration::from_secs(5), "exited {took:?} after SIGINT\n{out}");
    assert!(out.stderr.contains("interrupted"), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
    assert_eq!(configs(), Vec::<String>::new(), "the private DOCKER_CONFIG was left behind\n{out}");
    // The document: valid, interrupted, with what finished.
    assert_eq!(support::json::result(&out.stdout, "ensure"), "interrupted", "{out}");
    let rows: BTreeMap<String, String> = support::json::rows(&out.stdout, "ensure")
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["status"].as_str().unwrap().to_string()))
        .collect();
    let want = [("quick", "built"), ("sleeper", "interrupted")];
    assert_eq!(rows, want.map(|(n, s)| (n.to_string(), s.to_string())).into(), "{out}");

    // The build is gone, down to the RUN step's process.
    let mut left = vec![];
    let gone = wait_until(Duration::from_secs(10), || {
        left = processes()
            .into_iter()
            .filter(|p| p.contains(&sleep) || (p.contains("buildx build") && p.contains(&context)))
            .collect();
        left.is_empty()
    });
    assert!(gone, "still running 10 s after the exit: {left:?}\n{out}");
    let stopped_after = ended.elapsed();

    for url in [fx.plain_url(), fx.auth_url()] {
        assert_eq!(manifest_status(&url, "sleeper", &fp), "404", "sleeper was pushed to {url}");
        assert_eq!(catalog(&url), Vec::<String>::new(), "{url}");
    }
    eprintln!(
        "ran {:?} before SIGINT; exited {took:?} after it; build processes gone {stopped_after:?} after the exit",
        sent - begun
    );
}

/// `pid`'s children: (pid, arguments).
fn children(pid: u32) -> Vec<(u32, String)> {
    let ps = run(Command::new("ps").args(["-eo", "pid=,ppid=,args="]));
    assert_eq!(ps.code, Some(0), "{ps}");
    ps.stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (child, parent) = (words.next()?.parse().ok()?, words.next()?.parse::<u32>().ok()?);
            (parent == pid).then(|| (child, words.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// What the kill -9 and SIGTERM tests share: `payload` publishing behind
/// `proxy` and to the auth registry (so that a run logs in), a TMPDIR of
/// its own, and the guard that kills the builds of `payload` a run left
/// behind (after the test's own `Running`s, declared later, are gone).
struct MidPush {
    // Dropped first, then the project, then the proxy.
    _leftovers: KillLeftovers,
    tmp: PathBuf,
    context: String,
    fx: Project,
    proxy: Proxy,
}

impl MidPush {
    fn new() -> MidPush {
        let proxy = Proxy::start(PLAIN).unwrap();
        let fx = payload_at(&proxy.host(), true);
        // Its builds' and pushes' command lines name its tag.
        let context = format!("{}/payload:mzbuild-", fx.id);
        let tmp = fx.repo.scratch().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let _leftovers = KillLeftovers { patterns: vec![context.clone()] };
        MidPush { _leftovers, tmp, context, fx, proxy }
    }

    /// Whether the process listing line `p` is a build of `payload`.
    fn is_build(&self, p: &str) -> bool {
        (p.contains("buildx build") || p.contains("docker push") || p.contains(" push ")) && p.contains(&self.context)
    }

    /// An `ensure` whose push hangs, with `tmp` as its TMPDIR: the proxy
    /// forwards the registry checks and then holds every new connection
    /// without answering. Returns once buildx is pushing (its log says so,
    /// and connections are being held).
    fn stalled(&self) -> Running {
        self.stalled_with(None)
    }

    /// `stalled`, with `$MZ_DOCKER` set to `docker` if given.
    fn stalled_with(&self, docker: Option<&Path>) -> Running {
        let (fx, proxy) = (&self.fx, &self.proxy);
        proxy.stall(false);
        let _ = std::fs::remove_file(fx.log("payload"));
        let mut cmd = fx.command(&["ensure"]);
        cmd.env("TMPDIR", &self.tmp);
        if let Some(docker) = docker {
            cmd.env("MZ_DOCKER", docker);
        }
        let running = Running::spawn(&mut cmd);
        let to_build = running.wait_for_line("to build", Duration::from_secs(120));
        assert!(to_build.is_some_and(|l| l.ends_with("; 1 to build")), "{}", running.stderr_so_far());
        let held = proxy.held();
        proxy.stall(true);
        let pushing = wait_until(Duration::from_secs(120), || {
            let log = std::fs::read_to_string(fx.log("payload")).unwrap_or_default();
            (log.contains(" pushing ") || log.contains("The push refers to repository")) && proxy.held() > held
        });
        assert!(pushing, "the push did not start\n{}", running.stderr_so_far());
        running
    }
}

/// kill -9 of `ensure` in the middle of a push. Nothing of the run survives:
/// no docker CLI or buildx plugin process of it (the CLI's buildx plugin is
/// a grandchild of mzbuild, which PR_SET_PDEATHSIG does not reach), and
/// nothing in its TMPDIR (the private DOCKER_CONFIG with the logins,
/// buildx's state and the Dockerfile buildx writes for `-f -`): mzbuild's
/// watchdog process cleans up. When the watchdog is killed as well, the
/// private directories stay, and the next run sweeps them (their names hold
/// the owner's pid).
#[test]
fn kill_9_mid_push_leaves_nothing_behind() {
    let mid = MidPush::new();
    let MidPush { fx, proxy, tmp, .. } = &mid;
    let buildx = |p: &String| mid.is_build(p);

    // mzbuild alone.
    let running = mid.stalled();
    let pid = running.pid();
    let mine = children(pid);
    let watchdog: Vec<u32> =
        mine.iter().filter(|(_, a)| a.starts_with(env!("CARGO_BIN_EXE_xtask"))).map(|c| c.0).collect();
    assert_eq!(watchdog.len(), 1, "no watchdog among {mine:?}");
    let running_builds: Vec<String> = processes().into_iter().filter(buildx).collect();
    // The docker CLI (and, for a buildx push, its buildx plugin; on the
    // docker driver mzbuild pushes with `docker push`).
    assert!(!running_builds.is_empty(), "{running_builds:?}");
    let during = entries(tmp);
    assert!(during.iter().any(|n| n.starts_with("mzbuild-docker-config-")), "{during:?}");
    assert!(during.iter().any(|n| n.starts_with("mzbuild-run-")), "{during:?}");
    assert_eq!(run(Command::new("kill").args(["-KILL", &pid.to_string()])).code, Some(0));
    let (out, _) = running.finish(Duration::from_secs(30));
    assert_eq!(out.code, None, "not killed by a signal\n{out}");
    let mut left = vec![];
    let gone = wait_until(Duration::from_secs(30), || {
        left = processes().into_iter().filter(buildx).collect();
        left.is_empty()
    });
    assert!(gone, "builds of the killed run still running 30 s after kill -9: {left:?}");
    let cleaned = wait_until(Duration::from_secs(30), || entries(tmp).is_empty());
    assert!(cleaned, "left in TMPDIR after kill -9: {:?} (before: {during:?})", entries(tmp));

    // Again, with docker under a wrapper script that runs it as a child (as
    // CI wrappers that log do): the docker CLI is then mzbuild's
    // grandchild, and its buildx plugin a great-grandchild.
    let wrapper = fx.repo.scratch().join("docker-child");
    std::fs::write(&wrapper, format!("#!/bin/sh\n'{}' \"$@\"\n", support::docker::docker_path())).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let running = mid.stalled_with(Some(&wrapper));
    let pid = running.pid();
    let tree: Vec<String> = processes().into_iter().filter(buildx).collect();
    // The wrapper and the docker CLI (and a buildx plugin, for a buildx push).
    assert!(tree.iter().any(|p| p.starts_with("/bin/sh ")) && tree.len() >= 2, "{tree:?}");
    assert_eq!(run(Command::new("kill").args(["-KILL", &pid.to_string()])).code, Some(0));
    let (out, _) = running.finish(Duration::from_secs(30));
    assert_eq!(out.code, None, "{out}");
    let gone = wait_until(Duration::from_secs(30), || {
        left = processes().into_iter().filter(buildx).collect();
        left.is_empty()
    });
    assert!(gone, "builds of the killed run (under a wrapper) still running 30 s after kill -9: {left:?}");
    // Killed, not ended by themselves: an orphaned build runs on until the
    // engine gives up on the registry, and logs that.
    let log = std::fs::read_to_string(fx.log("payload")).unwrap();
    assert!(!log.contains("ERROR"), "the build outlived mzbuild and ended by itself:\n{log}");
    let cleaned = wait_until(Duration::from_secs(30), || entries(tmp).is_empty());
    assert!(cleaned, "left in TMPDIR after kill -9: {:?}", entries(tmp));

    // mzbuild and its watchdog: the directories stay, with the logins...
    let running = mid.stalled();
    let pid = running.pid();
    let watchdog: Vec<String> = children(pid)
        .into_iter()
        .filter(|(_, a)| a.starts_with(env!("CARGO_BIN_EXE_xtask")))
        .map(|c| c.0.to_string())
        .collect();
    assert_eq!(watchdog.len(), 1);
    // The watchdog first: it starts cleaning up as soon as mzbuild is gone.
    assert_eq!(run(Command::new("kill").args(["-KILL", &watchdog[0], &pid.to_string()])).code, Some(0));
    let (out, _) = running.finish(Duration::from_secs(30));
    assert_eq!(out.code, None, "{out}");
    let stale = entries(tmp);
    let prefix = |p: &str| format!("{p}{pid}-");
    assert!(stale.iter().any(|n| n.starts_with(&prefix("mzbuild-docker-config-"))), "{stale:?}");
    assert!(stale.iter().any(|n| n.starts_with(&prefix("mzbuild-run-"))), "{stale:?}");
    // ... until the next run, which pushes and sweeps them.
    let gone = wait_until(Duration::from_secs(30), || !processes().iter().any(buildx));
    assert!(gone, "{:?}", processes().into_iter().filter(buildx).collect::<Vec<_>>());
    proxy.stall(false);
    let out = run(fx.command(&["ensure"]).env("TMPDIR", tmp));
    out.ok();
    assert_eq!(entries(tmp), Vec::<String>::new(), "not swept (before: {stale:?})\n{out}");
}

/// SIGTERM (a cancelled CI job) in the middle of a push: exit status 143,
/// the builds stopped, the private directories removed.
#[test]
fn sigterm_mid_push_exits_143_and_cleans_up() {
    let mid = MidPush::new();
    let running = mid.stalled();
    assert_eq!(run(Command::new("kill").args(["-TERM", &running.pid().to_string()])).code, Some(0));
    let (out, _) = running.finish(Duration::from_secs(60));
    assert_eq!(out.code, Some(143), "{out}");
    assert!(out.stderr.contains("interrupted"), "{out}");
    assert_eq!(entries(&mid.tmp), Vec::<String>::new(), "{out}");
    let gone = wait_until(Duration::from_secs(30), || !processes().iter().any(|p| mid.is_build(p)));
    assert!(gone, "builds still running after SIGTERM\n{out}");
}

/// A dependency whose build is retried (its RUN step fails with a network
/// error the first time, as a flaky download does) takes longer than
/// `--timeout` in all, each attempt well within it: its dependant waits for
/// it and is built and pushed, rather than "giving up waiting" for an image
/// that then succeeds.
#[test]
fn a_retried_dependency_keeps_its_dependants_waiting() {
    let fx = Project::new();
    fx.set_registries(&[fx.plain_entry()]);
    // Each attempt takes 6 s (the RUN step's sleep) and a little, then fails
    // unless the context's state.txt says `ok`; the timeout is 12 s. Two
    // attempts and the 2 s backoff take about 16 s.
    fx.image(
        "dep",
        "",
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY state.txt /state.txt\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox sleep 6; /bin/busybox grep -q ok /state.txt || \
         { echo 'fetching: read tcp: connection reset by peer'; exit 1; }\"]\n",
        &[("state.txt", &format!("fail {}\n", fx.id))],
    )
    .image("after", "", "MZFROM dep\nCOPY after.txt /after.txt\n", &[("after.txt", "after\n")]);
    copy_busybox(&fx.repo.path("images/dep"));
    fx.repo.commit_all();
    let fp = fx.fingerprint("after");
    // The first attempt fails, retryably, and the next one (after a 2 s
    // backoff) succeeds: the docker that mzbuild runs (a wrapper) makes
    // state.txt say `ok` once the first `buildx build` has ended, so no
    // window of the test's timing decides which attempt sees what.
    // (Unique, or the RUN step's success could come from the build cache.)
    let (seen, state) = (fx.repo.scratch().join("first-build-seen"), fx.repo.path("images/dep/state.txt"));
    // mzbuild reads the context as it starts a build (a tar on stdin), so
    // the wrapper marks state.txt `ok` after the first build has ended.
    let prelude = format!(
        "case \"$*\" in *'buildx build'*) if [ ! -e '{seen}' ]; then touch '{seen}'; '{docker}' \"$@\"; rc=$?; \
         printf 'ok {id}\\n' > '{state}'; exit $rc; fi;; esac\n",
        seen = seen.display(),
        state = state.display(),
        docker = support::docker::docker_path(),
        id = fx.id
    );
    let docker = support::docker::wrapper(fx.repo.scratch(), "docker-second-attempt-ok", &prelude);
    let running = Running::spawn(fx.command(&["ensure", "--timeout", "12s"]).env("MZ_DOCKER", &docker));
    let log = fx.log("dep");
    let (out, _) = running.finish(Duration::from_secs(120));
    out.ok();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(buildx_attempts(&text), 2, "{text}");
    assert!(text.contains("connection reset by peer"), "the first attempt did not fail as it should\n{text}");
    assert!(out.stderr.contains("mzbuild: dep: done in ") && out.stderr.contains(" after 2 attempts"), "{out}");
    assert!(out.stderr.contains("mzbuild: after: done in "), "{out}");
    assert!(!out.stderr.contains("gave up waiting"), "{out}");
    assert_eq!(manifest_status(&fx.plain_url(), "after", &fp), "200", "{out}");
}

/// A registry that accepts connections and never answers: `ensure
/// --timeout 3s` fails cleanly within about that (it took 3 attempts of
/// 30 s and the backoff, over 90 s, whatever --timeout said), naming the
/// registry and the timeout, and builds nothing.
#[test]
fn a_hanging_registry_fails_ensure_within_the_timeout() {
    let proxy = Proxy::start(PLAIN).unwrap();
    proxy.stall(true);
    let fx = payload_at(&proxy.host(), false);
    let url = format!("{}/{}", proxy.host(), fx.id);
    let running = Running::spawn(&mut fx.command(&["ensure", "--timeout", "3s"]));
    // Well under the 90 s of before, with room for a loaded machine.
    let (out, _) = running.finish(Duration::from_secs(45));
    let err = out.error();
    assert!(
        err.contains(&format!("registry {url} did not answer HEAD")) && err.contains("within 3s (--timeout"),
        "{out}"
    );
    assert!(proxy.held() >= 1, "the request did not reach the registry\n{out}");
    assert!(!fx.log("payload").exists(), "something was built\n{out}");
    // The other commands that ask registries take --timeout too.
    for args in [&["check"][..], &["repair"], &["tag", "v1", "--dry-run"]] {
        let mut cmd = fx.command(args);
        cmd.args(["--timeout", "3s"]);
        let (out, _) = Running::spawn(&mut cmd).finish(Duration::from_secs(45));
        let err = out.error();
        assert!(
            err.contains(&format!("registry {url} did not answer")) && err.contains("within 3s (--timeout"),
            "{out}"
        );
    }
}

/// A TLS server whose certificate no public authority signed (`openssl
/// s_server`, self-signed), stopped when dropped.
struct UntrustedTls {
    port: u16,
    server: std::process::Child,
    _dir: tempfile::TempDir,
}

impl UntrustedTls {
    fn start() -> UntrustedTls {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let out = run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=registry.test", "-days", "1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        assert_eq!(out.code, Some(0), "openssl req\n{out}");
        let port = support::free_port();
        let server = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let up = wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(up, "openssl s_server did not listen on {port}");
        UntrustedTls { port, server, _dir: dir }
    }
}

impl Drop for UntrustedTls {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A registry whose certificate is not trusted fails at once, with an error
/// that says TLS and the certificate; it is not retried, and not blamed on
/// a `--timeout` that did not pass. (Registries on 127.0.0.1 are spoken to
/// over http: 0.0.0.0, which reaches the same server, over https.)
#[test]
fn an_untrusted_certificate_is_a_tls_error_not_a_timeout() {
    let tls = UntrustedTls::start();
    let fx = payload_at(&format!("0.0.0.0:{}", tls.port), false);
    let url = format!("0.0.0.0:{}/{}", tls.port, fx.id);
    let begun = Instant::now();
    let out = run(&mut fx.command(&["check", "--timeout", "3s"]));
    let took = begun.elapsed();
    let err = out.error();
    assert!(err.contains(&format!("registry {url}: TLS failed")) && err.contains("certificate"), "{out}");
    assert!(!err.contains("within 3s") && !err.contains("--timeout"), "{out}");
    assert!(took < Duration::from_secs(3), "retried for {took:?}\n{out}");
    // A refused connection is retried while there is time; giving up before
    // the timeout passed is not called a timeout either.
    let url = format!("127.0.0.1:{}/{}", support::free_port(), fx.id);
    fx.set_registries(&[format!("{{ url = \"{url}\" }}")]);
    let out = run(&mut fx.command(&["check", "--timeout", "3s"]));
    let err = out.error();
    assert!(err.contains(&format!("registry {url} is unreachable or failing (HEAD ")), "{out}");
    assert!(err.contains("2 attempts; no time for another within --timeout 3s"), "{out}");
    assert!(!err.contains("did not answer"), "{out}");
}

/// Two `ensure`s at once in one repository (two CI jobs on one agent): the
/// second waits for the first's lock, then looks at the registries again
/// and finds everything the first pushed: it builds and pushes nothing.
#[test]
fn a_second_ensure_that_waited_rechecks_the_registries() {
    let fx = Project::new();
    // A build that takes a while (its RUN step sleeps 3 s), new to the
    // build cache, and an image built on it.
    fx.image(
        "slow",
        "",
        &format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"sleep 3 # {}\"]\n",
            fx.id
        ),
        &[],
    )
    .image("after", "", "MZFROM slow\nCOPY after.txt /after.txt\n", &[("after.txt", "after\n")]);
    copy_busybox(&fx.repo.path("images/slow"));
    fx.repo.commit_all();
    let first = Running::spawn(&mut fx.command(&["ensure"]));
    let log = fx.log("slow");
    let building =
        wait_until(Duration::from_secs(120), || std::fs::read_to_string(&log).unwrap_or_default().contains("RUN"));
    assert!(building, "the first run did not start building\n{}", first.stderr_so_far());
    let recorder = Recorder::new(fx.repo.scratch());
    let second = run(recorder.apply(&mut fx.command(&["ensure"])));
    let (first, _) = first.finish(Duration::from_secs(120));
    first.ok();
    assert!(first.stderr.contains("; 2 to build"), "{first}");
    second.ok();
    let lines: Vec<&str> = second.stderr.lines().collect();
    assert!(lines[0].contains("waiting for it to finish"), "{second}");
    assert!(lines[1].contains("looking at the registries again"), "{second}");
    assert!(lines[2].ends_with("; 0 to copy; 0 to build"), "{second}");
    assert_eq!(recorder.builds(), Vec::<String>::new(), "the second run built again\n{second}");
    for image in ["slow", "after"] {
        let row = second.stderr.lines().find(|l| l.starts_with(&format!("{image} "))).unwrap_or_default();
        assert!(row.split_whitespace().nth(1) == Some("published"), "`{row}`\n{second}");
    }
}
