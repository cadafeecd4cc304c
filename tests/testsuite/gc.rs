//! `gc` against real registries filled by `ensure` over a generated git
//! history: what it lists, what `--apply` deletes (and nothing else), a
//! digest that a kept tag shares, a registry that does not allow deletion,
//! a registry that fails or hangs during the run, and `--local`.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use support::child::Running;
use support::docker::{docker, image_exists};
use support::http::{Reply, Response, Server};
use support::own_registry::OwnRegistry;
use support::registry::{curl, manifest_digest, Project, ACCEPT, PLAIN};
use support::{git_home, run};
use tcp_proxy::Proxy;

/// Commit everything, dated `days_ago` days back (author and committer).
fn commit_dated(project: &Project, days_ago: u64) {
    let when =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - days_ago * 86_400;
    let date = format!("@{when} +0000");
    project.repo.git(["add", "-A"]);
    let mut cmd = Command::new("git");
    cmd.current_dir(project.repo.root())
        .args(["commit", "-q", "--allow-empty", "-m", "commit"])
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .envs([
            ("GIT_AUTHOR_NAME", "t"),
            ("GIT_AUTHOR_EMAIL", "t@t"),
            ("GIT_COMMITTER_NAME", "t"),
            ("GIT_COMMITTER_EMAIL", "t@t"),
        ]);
    git_home(&mut cmd, support::empty_home());
    let out = run(&mut cmd);
    assert_eq!(out.code, Some(0), "git commit\n{out}");
}

/// The tags of `<host>/<id>/<image>`.
#[track_caller]
fn tags(host: &str, id: &str, image: &str) -> BTreeSet<String> {
    let url = format!("http://{host}/v2/{id}/{image}/tags/list?n=1000");
    let out = curl(&["-fs", &url], false);
    assert_eq!(out.code, Some(0), "GET {url}\n{out}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v["tags"].as_array().into_iter().flatten().map(|t| t.as_str().unwrap().to_string()).collect()
}

/// What `gc` printed for `<host>/<id>/<image>`: the tags after `verb`
/// (`delete` / `deleted`) and after `keep`.
fn listed(stdout: &str, location: &str, verb: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut inside = false;
    for line in stdout.lines() {
        if !line.starts_with(' ') {
            inside = line.starts_with(&format!("{location}:"));
            continue;
        }
        if let Some(rest) = line.strip_prefix(&format!("  {verb} ")).filter(|_| inside) {
            out.insert(rest.split([' ', ':']).next().unwrap().to_string());
        }
    }
    out
}

/// Copy the manifest of `<host>/<id>/<image>:<from>` to tag `to` (the same
/// digest under a second tag: what two fingerprints of one content look
/// like with reproducible builds).
#[track_caller]
fn retag(host: &str, id: &str, image: &str, from: &str, to: &str) {
    put_manifest(host, id, image, from, to, None);
}

/// Store the manifest of `<host>/<id>/<image>:<from>` as tag `to`; with
/// `note`, as a new manifest (the same blobs, an annotation added: another
/// digest), as cosign's signature manifests are.
#[track_caller]
fn put_manifest(host: &str, id: &str, image: &str, from: &str, to: &str, note: Option<&str>) {
    let get = format!("http://{host}/v2/{id}/{image}/manifests/{from}");
    let out = curl(&["-fs", "-H", ACCEPT, "-D", "-", &get], false);
    assert_eq!(out.code, Some(0), "GET {get}\n{out}");
    let (head, body) = out.stdout.split_once("\r\n\r\n").unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim()))
        .unwrap();
    let body = match note {
        None => body.to_string(),
        Some(note) => {
            let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
            v["annotations"] = serde_json::json!({ "test.note": note });
            v.to_string()
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifest.json");
    std::fs::write(&file, body).unwrap();
    let put = format!("http://{host}/v2/{id}/{image}/manifests/{to}");
    let ct = format!("Content-Type: {content_type}");
    let data = format!("@{}", file.display());
    let out = curl(&["-fs", "-X", "PUT", "-H", &ct, "--data-binary", &data, &put], false);
    assert_eq!(out.code, Some(0), "PUT {put}\n{out}");
}

/// A history on `main`: `commits` commits, each a new `app.txt` (the app's
/// fingerprint changes every commit), `base.txt` changed at commits 1, 11,
/// 21, ..., dated so that the last is `newest_days` days old; `run`
/// (`ensure`, or `build` into the local engine) after each. `at(i)` runs after commit i's ensure. Returns each commit's
/// (sha, app fingerprint, base fingerprint).
fn history(
    project: &Project,
    commits: usize,
    newest_days: u64,
    run: &[&str],
    mut at: impl FnMut(usize),
) -> Vec<(String, String, String)> {
    let id = project.id.clone();
    project.image("base", "", "FROM scratch\nCOPY base.txt /base.txt\n", &[]).image(
        "app",
        "",
        "MZFROM base\nCOPY app.txt /app.txt\n",
        &[],
    );
    // Each build also pushes its layer cache beside it: gc must handle
    // `mzbuild-<fp>-cache` tags.
    project.repo.append("Cargo.toml", "cache = { to = \"beside\" }\n");
    project.repo.git(["checkout", "-q", "-b", "main"]);
    let mut out = vec![];
    for i in 1..=commits {
        project.repo.write("images/app/app.txt", format!("app {id} {i}\n"));
        if i % 10 == 1 {
            project.repo.write("images/base/base.txt", format!("base {id} {i}\n"));
        }
        commit_dated(project, newest_days + (commits - i) as u64);
        project.mz(run).ok();
        let sha = project.repo.git(["rev-parse", "HEAD"]).trim().to_string();
        out.push((sha, project.fingerprint("app"), project.fingerprint("base")));
        at(i);
    }
    out
}

/// `gc` over ~30 commits with two release tags, on the plain registry and
/// on a registry of our own that does not allow deletion: the dry run
/// lists exactly the tags no kept revision needs; `--apply` deletes exactly
/// those (where deletion is allowed; the other registry is reported, and
/// is no error); a tag that shares its digest with a kept one stays, and so
/// does a registry release index's member; every kept tag still pulls; a
/// second `--apply` deletes nothing.
#[test]
fn gc_deletes_exactly_what_no_kept_revision_needs() {
    let no_delete = OwnRegistry::start(false);
    let project = Project::new();
    project.set_registries(&[project.plain_entry(), project.entry_at(no_delete.host())]);
    let id = project.id.clone();
    let commits = history(&project, 30, 10, &["ensure"], |i| {
        match i {
            // A registry release index that no git tag matches: its
            // members are kept by digest.
            5 => drop(project.mz(&["--arch", "x86_64", "tag", "rc"]).ok().to_string()),
            10 => drop(project.repo.git(["tag", "v1.0"])),
            20 => drop(project.repo.git(["tag", "v2.0"])),
            _ => {}
        }
    });
    // A branch with one young commit: kept by --keep-days only.
    project.repo.git(["checkout", "-q", "-b", "feature"]);
    project.repo.write("images/app/app.txt", format!("app {id} feature\n"));
    commit_dated(&project, 0);
    project.mz(&["ensure"]).ok();
    let feature = project.fingerprint("app");
    project.repo.git(["checkout", "-q", "main"]);
    // An old-looking fingerprint tag naming the newest commit's digest.
    let shared = "mzbuild-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let newest = format!("mzbuild-{}", commits[29].1);
    for host in [PLAIN, no_delete.host()] {
        retag(host, &id, "app", &newest, shared);
    }

    // Kept: the last 10 commits of main, v1.0 (commit 10) and v2.0
    // (commit 20) with their base, rc's commit 5 (by digest), the feature
    // commit (young), the shared tag (by digest). Each build also pushed
    // its layer cache beside it to the spec registry (`mzbuild-<fp>-cache`):
    // it goes with its fingerprint; commit 5's goes (only the image is
    // kept, by digest).
    let mut doomed: BTreeSet<String> = commits
        .iter()
        .enumerate()
        .filter(|(i, _)| ![4, 9, 19].contains(i) && *i < 20)
        .flat_map(|(_, c)| [format!("mzbuild-{}", c.1), format!("mzbuild-{}-cache", c.1)])
        .collect();
    doomed.insert(format!("mzbuild-{}-cache", commits[4].1));
    assert_eq!(doomed.len(), 35);
    let doomed_at = |host: &str| -> BTreeSet<String> {
        doomed.iter().filter(|t| host == PLAIN || !t.ends_with("-cache")).cloned().collect()
    };
    let all_app = tags(PLAIN, &id, "app");
    let all_base = tags(PLAIN, &id, "base");
    let all_app_elsewhere = tags(no_delete.host(), &id, "app");
    assert!(all_app.contains(&format!("mzbuild-{feature}")) && all_app.contains("rc"));

    let gc = ["--arch", "x86_64", "gc", "--keep-revs", "10", "--keep-days", "3"];
    let out = project.mz(&gc);
    let stdout = out.ok();
    for host in [PLAIN, no_delete.host()] {
        assert_eq!(listed(stdout, &format!("{host}/{id}/app"), "delete"), doomed_at(host), "{out}");
        assert_eq!(listed(stdout, &format!("{host}/{id}/base"), "delete"), BTreeSet::new(), "{out}");
        let kept = listed(stdout, &format!("{host}/{id}/app"), "keep");
        assert!(kept.contains(shared), "the shared digest is not reported as kept\n{out}");
        assert!(kept.contains(&format!("mzbuild-{}", commits[4].1)), "rc's member is not kept\n{out}");
    }
    assert!(out.stderr.contains("dry run, nothing was deleted"), "{out}");
    assert_eq!(tags(PLAIN, &id, "app"), all_app, "the dry run deleted something");

    let out = project.mz(&[&gc[..], &["--apply"]].concat());
    let stdout = out.ok();
    assert_eq!(listed(stdout, &format!("{PLAIN}/{id}/app"), "deleted"), doomed_at(PLAIN), "{out}");
    let left: BTreeSet<String> = all_app.difference(&doomed).cloned().collect();
    assert_eq!(tags(PLAIN, &id, "app"), left, "{out}");
    assert_eq!(tags(PLAIN, &id, "base"), all_base, "{out}");
    assert!(
        out.stderr.contains(&format!("registry {} (HTTP 405", no_delete.host()))
            && out.stderr.contains("does not allow deletion"),
        "{out}"
    );
    assert_eq!(tags(no_delete.host(), &id, "app"), all_app_elsewhere, "{out}");
    // Every kept tag still pulls.
    for tag in ["rc", shared, &newest, &format!("mzbuild-{feature}")] {
        let reference = format!("{PLAIN}/{id}/app:{tag}");
        let pulled = docker(&["pull", "--quiet", &reference]);
        assert_eq!(pulled.code, Some(0), "docker pull {reference}\n{pulled}");
    }
    for c in [&commits[9], &commits[19]] {
        for (image, fp) in [("app", &c.1), ("base", &c.2)] {
            let reference = format!("{PLAIN}/{id}/{image}:mzbuild-{fp}");
            let pulled = docker(&["pull", "--quiet", &reference]);
            assert_eq!(pulled.code, Some(0), "a release's image is gone: {reference}\n{pulled}");
        }
    }

    // Again: nothing left to delete where deletion works.
    let out = project.mz(&[&gc[..], &["--apply"]].concat());
    let stdout = out.ok();
    assert_eq!(listed(stdout, &format!("{PLAIN}/{id}/app"), "deleted"), BTreeSet::new(), "{out}");
    assert_eq!(tags(PLAIN, &id, "app"), left);
}

/// A project with a 4-commit history on `main` published to the plain
/// registry; `gc --keep-revs 1` would delete 3 app tags.
fn small_history() -> (Project, Vec<(String, String, String)>) {
    let project = Project::new();
    project.set_registries(&[project.plain_entry()]);
    let commits = history(&project, 4, 30, &["ensure"], |_| {});
    (project, commits)
}

/// A registry that fails some reads during `gc --apply` (the manifest of
/// the kept tag answers 500): nothing in that repository is deleted, the
/// run fails naming it; a registry that hangs fails the run within
/// `--timeout`, deleting nothing. Kept tags are never touched. Then, on
/// the working registry, a deleted image's cosign signature goes with it
/// and a kept one's stays.
#[test]
fn a_failing_or_hanging_registry_during_gc_deletes_nothing_it_should_keep() {
    let (project, commits) = small_history();
    let id = project.id.clone();
    let kept = format!("mzbuild-{}", commits[3].1);
    let before = tags(PLAIN, &id, "app");
    let deletes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = deletes.clone();
    let failing_read = format!("/manifests/{kept}");
    let server = Server::start(move |req| {
        if req.method == "DELETE" {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if req.method == "GET" && req.target.ends_with(&failing_read) {
            return Reply::Respond(Response::empty(500));
        }
        Reply::Forward(PLAIN.to_string())
    });
    project.set_registries(&[project.entry_at(&server.host())]);
    let gc = ["--arch", "x86_64", "gc", "--keep-revs", "1", "--keep-days", "0", "--apply", "--timeout", "5s"];
    let out = project.mz(&gc);
    let err = out.error();
    assert!(err.contains(&format!("{}/{id}/app", server.host())) && err.contains("nothing deleted there"), "{out}");
    assert_eq!(deletes.load(std::sync::atomic::Ordering::SeqCst), 0, "{out}");
    assert_eq!(tags(PLAIN, &id, "app"), before);

    // A registry that accepts connections and never answers.
    let proxy = Proxy::start(PLAIN).unwrap();
    proxy.stall(true);
    project.set_registries(&[project.entry_at(&proxy.host())]);
    let (out, _) = Running::spawn(&mut project.command(&gc)).finish(Duration::from_secs(60));
    let err = out.error();
    assert!(err.contains("did not answer") && err.contains("within 5s (--timeout"), "{out}");
    assert_eq!(tags(PLAIN, &id, "app"), before);

    // The same through a working registry: only the 3 old tags go, with
    // the signature of one of them; the kept one's signature stays.
    let url = format!("{PLAIN}/{id}");
    let sig = |tag: &str| {
        let digest = manifest_digest(&url, "app", tag).unwrap();
        format!("{}.sig", digest.replace(':', "-"))
    };
    let (old_sig, kept_sig) = (sig(&format!("mzbuild-{}", commits[0].1)), sig(&kept));
    put_manifest(PLAIN, &id, "app", &format!("mzbuild-{}", commits[0].1), &old_sig, Some("old"));
    put_manifest(PLAIN, &id, "app", &kept, &kept_sig, Some("kept"));
    project.set_registries(&[project.plain_entry()]);
    let out = project.mz(&gc);
    assert!(out.ok().contains(&format!("  deleted {old_sig} (attached to sha256:")), "{out}");
    let left = tags(PLAIN, &id, "app");
    let kept_cache = format!("{kept}-cache");
    let expected: BTreeSet<String> = before
        .iter()
        .filter(|t| **t == kept || **t == kept_cache || !t.starts_with("mzbuild-"))
        .cloned()
        .chain([kept_sig])
        .collect();
    assert_eq!(left, expected, "{out}");
}

/// `gc --local`: the local engine's images of commits no longer kept go,
/// but not one that a stopped container uses, nor a kept one.
#[test]
fn gc_local_removes_old_images_but_never_one_a_container_uses() {
    let project = Project::new();
    let id = project.id.clone();
    let commits = history(&project, 4, 30, &["build", "app"], |_| {});
    let image = |i: usize| format!("{PLAIN}/{id}/app:mzbuild-{}", commits[i].1);
    let base = format!("{PLAIN}/{id}/base:mzbuild-{}", commits[0].2);
    for i in 0..4 {
        assert!(image_exists(&image(i)), "{}", image(i));
    }
    let created = docker(&["create", &image(0), "/never-run"]);
    assert_eq!(created.code, Some(0), "{created}");
    let container = created.stdout.trim().to_string();
    let gc = ["--arch", "x86_64", "gc", "--local", "--keep-revs", "1", "--keep-days", "0"];
    let out = project.mz(&gc);
    let stdout = out.ok();
    assert!(stdout.contains(&format!("  keep {}: a container uses it", image(0))), "{out}");
    let listed: BTreeSet<&str> = stdout.lines().filter_map(|l| l.strip_prefix("  delete ")).collect();
    assert_eq!(listed, BTreeSet::from([image(1).as_str(), image(2).as_str()]), "{out}");
    assert!(image_exists(&image(1)), "the dry run deleted something");
    let out = project.mz(&[&gc[..], &["--apply"]].concat());
    out.ok();
    let _ = docker(&["rm", &container]);
    assert!(!image_exists(&image(1)) && !image_exists(&image(2)), "{out}");
    assert!(image_exists(&image(0)) && image_exists(&image(3)) && image_exists(&base), "{out}");
}
