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

// Tests drive real processes and read their own environment directly;
// the repository ban (clippy.toml) is for the engine.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use common::child::Running;
use common::docker::{copy_busybox, docker, image_exists, local_images, Recorder};
use common::registry::{catalog, manifest_status, Project, PLAIN};
use common::{processes, run, wait_until};

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

/// The `$ docker buildx build` command lines in a log (one per attempt).
fn buildx_attempts(log: &str) -> usize {
    log.lines().filter(|l| l.starts_with("$ docker buildx build ")).count()
}

// ---------------------------------------------------------------------------
// A TCP proxy that can go down and come back on the same port

struct Proxy {
    port: u16,
    target: String,
    shared: Arc<ProxyShared>,
    acceptor: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

#[derive(Default)]
struct ProxyShared {
    /// Live connections by id: (client side, registry side).
    live: Mutex<BTreeMap<usize, (TcpStream, TcpStream)>>,
    /// Connections accepted and forwarded, in total.
    accepted: AtomicUsize,
    next_id: AtomicUsize,
}

impl Proxy {
    /// A proxy on a free port of 127.0.0.1 forwarding to `target`.
    fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut proxy = Proxy { port, target: target.to_string(), shared: Arc::default(), acceptor: None };
        proxy.serve(listener);
        proxy
    }

    fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, target, stopping) = (self.shared.clone(), self.target.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            // Returning drops the listener: connections are refused from then on.
            while !stopping.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        // A poll interval (so that `down` can stop the
                        // loop), not a wait for an event.
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(&target) else { continue };
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
                shared.live.lock().unwrap().insert(id, (c2, s2));
                let done = Arc::new(AtomicUsize::new(0));
                for (from, to) in [(client.try_clone(), server.try_clone()), (server.try_clone(), client.try_clone())] {
                    let (Ok(mut from), Ok(mut to)) = (from, to) else { continue };
                    let (shared, done) = (shared.clone(), done.clone());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                        let _ = from.shutdown(Shutdown::Read);
                        if done.fetch_add(1, Ordering::SeqCst) == 1 {
                            shared.live.lock().unwrap().remove(&id);
                        }
                    });
                }
            }
        });
        self.acceptor = Some((stop, handle));
    }

    /// Stop accepting (connections are refused) and drop the live ones.
    fn down(&mut self) {
        if let Some((stop, handle)) = self.acceptor.take() {
            stop.store(true, Ordering::SeqCst);
            handle.join().unwrap();
        }
        for (_, (client, server)) in std::mem::take(&mut *self.shared.live.lock().unwrap()) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }

    /// Listen again, on the same port.
    fn up(&mut self) {
        let mut listener = None;
        wait_until(Duration::from_secs(10), || {
            listener = TcpListener::bind(("127.0.0.1", self.port)).ok();
            listener.is_some()
        });
        let listener = listener.unwrap_or_else(|| panic!("cannot listen on 127.0.0.1:{} again", self.port));
        self.serve(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
    }
}

// ---------------------------------------------------------------------------
// Tests

/// The registry goes away (connections refused, live ones dropped) right
/// after `ensure` has checked it, and stays away until the push has failed
/// and the second attempt has started (and at least 3 s): the push is
/// retried, through the same proxy, and lands.
#[test]
fn pushes_are_retried_when_the_registry_flakes() {
    let mut proxy = Proxy::start(PLAIN);
    let port = proxy.port;
    let fx = Project::new();
    fx.set_registries(&[format!("{{ url = \"127.0.0.1:{port}/{}\" }}", fx.id)]);
    let url = format!("127.0.0.1:{port}/{}", fx.id);
    fx.image("payload", "", "FROM scratch\nCOPY payload.txt /payload.txt\n", &[("payload.txt", &fx.id)]);
    fx.repo.commit_all();
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
        let attempts = buildx_attempts(&std::fs::read_to_string(&log).unwrap_or_default());
        (attempts >= 2 && down_at.elapsed() >= Duration::from_secs(3)) || running.exited()
    });
    let down_for = down_at.elapsed();
    proxy.up();
    let (out, _) = running.finish(Duration::from_secs(300));
    assert!(second_attempt, "no second attempt within 120 s\n{out}");

    out.ok();
    let text = std::fs::read_to_string(&log).unwrap();
    let attempts = buildx_attempts(&text);
    assert!(attempts >= 2, "the log shows {attempts} attempt(s) (down for {down_for:?}):\n{text}\n{out}");
    // The first attempt failed on the refused connection; the last one pushed.
    let sections: Vec<&str> = text.split("$ docker buildx build ").skip(1).collect();
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
    fx.image("base", "", "FROM scratch\nCOPY base.txt /base.txt\n", &[("base.txt", &fx.id)])
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

/// SIGINT while an image's RUN step runs: the build (its docker client and
/// the RUN step's process) stops, the private DOCKER_CONFIG with the logins
/// is removed, the exit status is 130, and nothing is pushed.
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
    fx.repo.commit_all();
    let fp = fx.fingerprint("sleeper");
    let context = fx.repo.path("images/sleeper").display().to_string();
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
    let _leftovers = KillLeftovers { patterns: vec![sleep.clone(), format!("--push {context}")] };
    let mut running = Running::spawn(fx.command(&["ensure"]).env("TMPDIR", &tmp));
    let log = fx.log("sleeper");
    let step = wait_until(Duration::from_secs(120), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("[2/2] RUN") || running.exited()
    });
    assert!(step && !running.exited(), "the RUN step did not start\n{}", running.stderr_so_far());
    let started = wait_until(Duration::from_secs(60), || processes().iter().any(|p| p.contains(&sleep)));
    assert!(started, "no `{sleep}` process\n{}", running.stderr_so_far());
    assert_eq!(configs().len(), 1, "no private DOCKER_CONFIG in TMPDIR during the build");
    assert!(processes().iter().any(|p| p.contains("buildx build") && p.contains(&context)), "no buildx process");

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
