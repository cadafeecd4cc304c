//! The shared layer cache (`[workspace.metadata.mzbuild] cache`): `ensure`
//! imports the cache of the same image at the previous commit, so that an
//! agent with an empty build cache does not re-run a `RUN` step below an
//! edit; a cache source that is not published is skipped with a note.
//! Against the real engine and the plain registry of `ci/stack.sh`.

use support::docker::{self, copy_busybox, docker};
use support::registry::{curl, Project, ACCEPT, AUTH, PLAIN};

/// A project publishing to the plain registry only, with `cache` set to
/// `cache` (a TOML inline table; empty: the key left out), holding `slow`:
/// busybox, a RUN step that records when it ran (`/stamp`) and takes 2 s,
/// then `in.txt` above it.
fn slow_project(cache: &str) -> Project {
    slow_project_at(cache, false)
}

/// `slow_project`, publishing to the auth registry instead when `auth`.
fn slow_project_at(cache: &str, auth: bool) -> Project {
    let project = Project::new();
    project.set_registries(&[if auth { project.auth_entry() } else { project.plain_entry() }]);
    if !cache.is_empty() {
        project.repo.append("Cargo.toml", format!("cache = {cache}\n"));
    }
    let id = &project.id;
    project.image(
        "slow",
        "",
        &format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo {id} > /id; \
             /bin/busybox date +%s%N > /stamp; /bin/busybox sleep 2\"]\nCOPY in.txt /in.txt\n"
        ),
        &[("in.txt", "one\n")],
    );
    copy_busybox(&project.repo.path("images/slow"));
    project.repo.commit_all();
    project
}

/// The layer digests of `<plain>/<id>/slow:<tag>`.
#[track_caller]
fn layers(project: &Project, tag: &str) -> Vec<String> {
    layers_at(PLAIN, project, tag)
}

/// The layer digests of `<host>/<id>/slow:<tag>`.
#[track_caller]
fn layers_at(host: &str, project: &Project, tag: &str) -> Vec<String> {
    let url = format!("http://{host}/v2/{}/slow/manifests/{tag}", project.id);
    let out = curl(&["-f", "-H", ACCEPT, &url], host == AUTH);
    assert_eq!(out.code, Some(0), "GET {url}\n{out}");
    let manifest: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

/// The engine as a fresh CI agent has it for this project: none of its
/// images, and no build-cache record of its RUN step (which holds the
/// project's id) or of anything built on it. Only this project's records
/// go: the engine is shared (see `forget_build_cache`).
fn cold(project: &Project) {
    let mine: Vec<String> =
        docker::local_images().into_iter().filter(|r| r.contains(&format!("/{}/", project.id))).collect();
    if !mine.is_empty() {
        let mut args = vec!["rmi"];
        args.extend(mine.iter().map(String::as_str));
        let out = docker(&args);
        assert_eq!(out.code, Some(0), "docker rmi\n{out}");
    }
    docker::forget_build_cache(&project.id);
}

#[test]
fn a_cold_agent_imports_the_run_layer_from_the_previous_commits_image() {
    let project = slow_project(r#"{ to = "inline" }"#);
    project.mz(&["ensure"]).ok();
    let first = format!("mzbuild-{}", project.fingerprint("slow"));
    let before = layers(&project, &first);

    project.repo.write("images/slow/in.txt", "two\n").commit_all();
    cold(&project);
    let out = project.mz(&["ensure"]);
    out.ok();
    let second = format!("mzbuild-{}", project.fingerprint("slow"));
    assert_ne!(first, second);
    let log = std::fs::read_to_string(project.log("slow")).unwrap();
    let source = format!("--cache-from=type=registry,ref={PLAIN}/{}/slow:{first}", project.id);
    assert!(log.contains(&source), "the build does not import {first}:\n{log}");
    assert!(log.contains("--cache-to=type=inline"), "{log}");
    let after = layers(&project, &second);
    // The RUN step's layer (busybox, RUN, in.txt) is the one the first
    // build made: a RUN that ran again would record another /stamp.
    assert_eq!(before[1], after[1], "the RUN layer was rebuilt, not imported:\n{log}");
    assert_ne!(before[2], after[2]);

    // The control: cold again, importing nothing, the RUN step runs again.
    project.repo.write("images/slow/in.txt", "three\n");
    let toml = std::fs::read_to_string(project.repo.path("Cargo.toml")).unwrap();
    project.repo.write("Cargo.toml", toml.replace(r#"cache = { to = "inline" }"#, r#"cache = { from = "none" }"#));
    project.repo.commit_all();
    cold(&project);
    project.mz(&["ensure"]).ok();
    let third = format!("mzbuild-{}", project.fingerprint("slow"));
    let log = std::fs::read_to_string(project.log("slow")).unwrap();
    assert!(!log.contains("--cache-from"), "{log}");
    assert_ne!(layers(&project, &third)[1], before[1], "without the cache the RUN step must run again");
}

#[test]
fn a_cache_source_that_is_not_published_is_skipped_with_a_note() {
    let project = Project::new();
    project.set_registries(&[project.plain_entry()]);
    project.file_image("app", "", &format!("app {}\n", project.id)).repo.commit_all();
    let unpublished = format!("mzbuild-{}", project.fingerprint("app"));
    project.repo.write("images/app/app.txt", format!("app {} 2\n", project.id)).commit_all();
    let out = project.mz(&["ensure"]);
    out.ok();
    let note =
        format!("cache: app: {PLAIN}/{}/app:{unpublished} (the previous commit) is not published: skipped", project.id);
    assert!(out.stderr.contains(&note), "{out}");
    // On buildx's docker driver nothing is exported by default (inline
    // metadata would change the digest), and that is said.
    assert!(out.stderr.contains("cannot export a registry cache"), "{out}");
    let log = std::fs::read_to_string(project.log("app")).unwrap();
    assert!(!log.contains("--cache-from") && !log.contains("--cache-to"), "{log}");
    assert!(!project.log_dir().join("app.cache.log").exists());
}

/// The cache sources are looked up with the registry's credentials and
/// imported through the run's private docker login: a registry that needs
/// a login works as for pushes.
#[test]
fn the_cache_is_imported_through_the_private_login() {
    let project = slow_project_at(r#"{ to = "inline" }"#, true);
    project.mz(&["ensure"]).ok();
    let first = format!("mzbuild-{}", project.fingerprint("slow"));
    let before = layers_at(AUTH, &project, &first);
    project.repo.write("images/slow/in.txt", "two\n").commit_all();
    cold(&project);
    let out = project.mz(&["ensure"]);
    out.ok();
    let log = std::fs::read_to_string(project.log("slow")).unwrap();
    assert!(
        log.contains(&format!("--cache-from=type=registry,ref={AUTH}/{}/slow:{first}", project.id)),
        "{out}\n{log}"
    );
    let second = format!("mzbuild-{}", project.fingerprint("slow"));
    assert_eq!(layers_at(AUTH, &project, &second)[1], before[1], "the RUN layer was rebuilt, not imported:\n{log}");
}

/// The config of `<plain>/<id>/slow:<tag>`, as JSON.
#[track_caller]
fn config(project: &Project, tag: &str) -> serde_json::Value {
    let url = format!("http://{PLAIN}/v2/{}/slow/manifests/{tag}", project.id);
    let out = curl(&["-f", "-H", ACCEPT, &url], false);
    assert_eq!(out.code, Some(0), "GET {url}\n{out}");
    let manifest: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let digest = manifest["config"]["digest"].as_str().unwrap();
    let url = format!("http://{PLAIN}/v2/{}/slow/blobs/{digest}", project.id);
    let out = curl(&["-fL", &url], false);
    assert_eq!(out.code, Some(0), "GET {url}\n{out}");
    serde_json::from_str(&out.stdout).unwrap()
}

/// With `to = "beside"` on buildx's `docker` driver (no registry cache
/// export), the inline cache goes to `mzbuild-<fp>-cache` beside the image,
/// and the image itself carries none (inline metadata holds builder-local
/// times, which would make its digest differ between agents); a cold agent
/// imports the RUN layer from it.
#[test]
fn the_cache_beside_the_image_leaves_the_image_alone_and_a_cold_agent_imports_it() {
    let project = slow_project(r#"{ to = "beside" }"#);
    project.mz(&["ensure"]).ok();
    let first = format!("mzbuild-{}", project.fingerprint("slow"));
    let cache_key = "moby.buildkit.cache.v0";
    assert!(config(&project, &first).get(cache_key).is_none(), "the image carries cache metadata");
    assert!(config(&project, &format!("{first}-cache")).get(cache_key).is_some(), "no inline cache beside it");
    let before = layers(&project, &first);
    // The image's layers are the normalised ones (file times clamped to
    // SOURCE_DATE_EPOCH after the build, on this driver); the cache tag
    // holds the builder's own, which its metadata describes.
    assert_eq!(layers(&project, &format!("{first}-cache")).len(), before.len(), "the cache tag has other steps");

    project.repo.write("images/slow/in.txt", "two\n").commit_all();
    cold(&project);
    project.mz(&["ensure"]).ok();
    let second = format!("mzbuild-{}", project.fingerprint("slow"));
    let log = std::fs::read_to_string(project.log("slow")).unwrap();
    let source = format!("--cache-from=type=registry,ref={PLAIN}/{}/slow:{first}-cache", project.id);
    assert!(log.contains(&source), "the build does not import {first}-cache:\n{log}");
    assert_eq!(layers(&project, &second)[1], before[1], "the RUN layer was rebuilt, not imported:\n{log}");
    assert!(config(&project, &second).get(cache_key).is_none());
}
