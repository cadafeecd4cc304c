//! Integration tests: the build context is a normalised tar of exactly the
//! image's inputs and its pre-images' outputs (no file of the image
//! directory is deleted any more), with fixed times, so that one
//! fingerprint builds one digest.

use support::docker::{copy_busybox, docker, image_files};
use support::registry::{manifest_digest, unique, Project};

/// The files a test plants that git ignores and no pre-image writes: the
/// user's, which a build must neither delete nor send.
const PRIVATE: [&str; 4] = [".env", "dev.local", ".venv/bin/python", "out/stale.txt"];

/// `images/app`: a busybox image whose `COPY . /ctx/` shows its context,
/// with a `.dockerignore`, a copy pre-image writing the ignored `out/`, and
/// the user's ignored files of [`PRIVATE`] (each holding `token`).
fn private_files_fixture(token: &str) -> Project {
    let project = Project::new();
    project
        .image(
            "app",
            "pre-image:\n  - type: copy\n    source: data\n    destination: out\n",
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY . /ctx/\nENTRYPOINT [\"/bin/busybox\"]\n",
            &[
                (".gitignore", "/.env\n/dev.local\n/.venv/\n/out/\n"),
                (".dockerignore", "skipped.txt\nsub\n!sub/kept.txt\n"),
                ("skipped.txt", "left out by .dockerignore\n"),
                ("sub/kept.txt", "an exception of .dockerignore\n"),
                ("sub/other.txt", "left out by .dockerignore\n"),
                ("unique.txt", &unique()),
            ],
        )
        .repo
        .write("data/generated.txt", "copied by the pre-image\n");
    copy_busybox(&project.repo.path("images/app"));
    project.repo.commit_all();
    for f in PRIVATE {
        project.repo.write(&format!("images/app/{f}"), format!("TOKEN={token}\n"));
    }
    project
}

/// The paths below `/ctx` in `reference`.
fn context_in_image(reference: &str) -> Vec<String> {
    let mut files: Vec<String> =
        image_files(reference).into_iter().filter_map(|f| f.strip_prefix("ctx/").map(str::to_string)).collect();
    files.sort();
    files
}

#[track_caller]
fn assert_private_files_intact(project: &Project, token: &str, after: &str) {
    for f in PRIVATE {
        let path = project.repo.path(&format!("images/app/{f}"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{f} is gone after {after}: {e}"));
        assert_eq!(text, format!("TOKEN={token}\n"), "{f} changed after {after}");
    }
}

/// An ignored `.env`, `dev.local`, `.venv/` (and a stale pre-image output)
/// survive `build`, `ensure` and `run`, and are not in the image; what the
/// pre-image wrote in this run is; `.dockerignore` keeps its meaning; the
/// Dockerfile and `.dockerignore` are copied as from a directory context.
#[test]
fn ignored_files_survive_build_ensure_and_run_and_stay_out_of_the_image() {
    let token = format!("tok-{}", unique());
    let project = private_files_fixture(&token);
    let spec = project.spec("app");

    let out = project.mz(&["build", "app"]);
    assert_eq!(out.ok(), format!("{spec}\n"), "{out}");
    assert_private_files_intact(&project, &token, "build");
    let expected = [
        ".dockerignore",
        ".gitignore",
        "Dockerfile",
        "busybox",
        "mzbuild.yml",
        "out",
        "out/generated.txt",
        "sub",
        "sub/kept.txt",
        "unique.txt",
    ];
    assert_eq!(context_in_image(&spec), expected, "{out}");
    // Every entry of the context has the fixed time (1970-01-01).
    let listed = docker(&["run", "--rm", &spec, "ls", "-ln", "--full-time", "/ctx", "/ctx/out"]);
    for line in listed.ok().lines().filter(|l| l.starts_with('-') || l.starts_with('d')) {
        assert!(line.contains(" 1970-01-01 00:00:00"), "not at the fixed time: {line}\n{listed}");
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[2..4], ["0", "0"], "not owned by 0:0: {line}\n{listed}");
    }

    let out = project.mz(&["ensure"]);
    out.ok();
    assert_private_files_intact(&project, &token, "ensure");

    let out = project.mz(&["run", "app", "--", "cat", "/ctx/out/generated.txt", "/ctx/sub/kept.txt"]);
    assert_eq!(out.ok(), "copied by the pre-image\nan exception of .dockerignore\n", "{out}");
    assert_private_files_intact(&project, &token, "run");
    let grep = docker(&["run", "--rm", &spec, "grep", "-r", "-l", &token, "/ctx"]);
    assert_eq!(grep.code, Some(1), "the token is in the image:\n{grep}");
    assert!(manifest_digest(&project.plain_url(), "app", spec.rsplit(':').next().unwrap()).is_some());
}
