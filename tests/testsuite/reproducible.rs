//! Integration tests: the build context is a normalised tar of exactly the
//! image's inputs and its pre-images' outputs (no file of the image
//! directory is deleted any more), with fixed times, so that one
//! fingerprint builds one digest.

use std::path::{Path, PathBuf};
use std::process::Command;

use support::docker::{copy_busybox, docker, image_files, RemoveImages};
use support::registry::{manifest_digest, unique, Project, PLAIN};
use support::{run, xtask_command, Output};

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
    // The fingerprint as a label (fixed by the tag, so it is safe to add).
    let label =
        docker(&["image", "inspect", "--format", "{{index .Config.Labels \"dev.mzbuild.fingerprint\"}}", &spec]);
    assert_eq!(label.ok().trim(), project.fingerprint("app"), "{label}");
    // The image as built, before its times were clamped, is not left
    // behind untagged: one image carries this fingerprint.
    let filter = format!("label=dev.mzbuild.fingerprint={}", project.fingerprint("app"));
    let ids = docker(&["image", "ls", "-q", "--no-trunc", "--filter", &filter]);
    assert_eq!(ids.ok().lines().count(), 1, "an image is left behind: {ids}");
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

/// The images of this repository.
const THIS_REPOSITORY: [&str; 4] = ["base", "greeter", "greetings", "bundle"];

/// `mzbuild --root ROOT --image-registry REGISTRY args...` with
/// `CARGO_HOME`, without the user's git configuration.
fn mz_in(root: &Path, registry: &str, cargo_home: &Path, args: &[&str]) -> Output {
    let mut cmd = xtask_command(["mzbuild", "--root", root.to_str().unwrap(), "--image-registry", registry]);
    cmd.args(args).env("CARGO_HOME", cargo_home);
    support::git_home(&mut cmd, support::empty_home());
    run(&mut cmd)
}

/// Acceptance: two clones of this repository at different paths, the
/// second with another `CARGO_HOME` (whose `registry/` is a symlink to the
/// first's, so nothing is fetched again while the path cargo passes to
/// rustc differs), BuildKit's cache pruned between them, each `ensure`
/// into its own registry path: the same digest for every image, `greeter`
/// (a cargo-build binary) included. `verify` then says `reproduced`; after
/// different content is planted under one tag, it exits 1 and names the
/// differing file.
#[test]
fn two_clones_at_different_paths_publish_identical_digests_and_verify_says_so() {
    let this = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap();
    let scratch = support::target_tmpdir().join(unique());
    let a = scratch.join("a");
    let b = scratch.join("somewhere/much/deeper/b");
    for clone in [&a, &b] {
        std::fs::create_dir_all(clone.parent().unwrap()).unwrap();
        let out = run(Command::new("git").arg("clone").arg("-q").arg(&this).arg(clone));
        assert_eq!(out.code, Some(0), "git clone\n{out}");
    }
    let home_a = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let home_b = scratch.join("cargo-home-b");
    std::fs::create_dir_all(&home_b).unwrap();
    std::os::unix::fs::symlink(home_a.join("registry"), home_b.join("registry")).unwrap();
    let id = unique();
    let (reg_a, reg_b) = (format!("{PLAIN}/{id}-a"), format!("{PLAIN}/{id}-b"));
    let _images = RemoveImages::new([format!("{id}-a"), format!("{id}-b")]);

    let out = mz_in(&a, &reg_a, &home_a, &["ensure"]);
    out.ok();
    // A cold cache for the second build, so that nothing of the first is
    // reused: this one test prunes BuildKit's whole cache (no filter
    // limits it to the images of one test on the docker driver's builder,
    // and a private builder would be another driver than CI's).
    let pruned = docker(&["buildx", "prune", "-af"]);
    assert_eq!(pruned.code, Some(0), "{pruned}");
    let out = mz_in(&b, &reg_b, &home_b, &["ensure"]);
    out.ok();

    let mut tags = std::collections::BTreeMap::new();
    for image in THIS_REPOSITORY {
        let spec = mz_in(&a, &reg_a, &home_a, &["spec", image]).line();
        let tag = spec.rsplit(':').next().unwrap().to_string();
        let (da, db) = (manifest_digest(&reg_a, image, &tag), manifest_digest(&reg_b, image, &tag));
        assert!(da.is_some(), "{image}:{tag} is not in {reg_a}");
        if da != db {
            let show = |reg: &str| {
                let (host, path) = reg.split_once('/').unwrap();
                let url = format!("http://{host}/v2/{path}/{image}/manifests/{tag}");
                support::registry::curl(&["-H", support::registry::ACCEPT, &url], false).stdout
            };
            panic!("{image}: two clones published two digests:\n{}\n{}", show(&reg_a), show(&reg_b));
        }
        tags.insert(image, tag);
    }
    // The binary itself: the same bytes from both checkouts.
    let bin = "misc/images/greeter/greeter";
    assert_eq!(std::fs::read(a.join(bin)).unwrap(), std::fs::read(b.join(bin)).unwrap(), "greeter differs");

    let out = mz_in(&b, &reg_a, &home_b, &["verify"]);
    for image in THIS_REPOSITORY {
        assert!(out.ok().lines().any(|l| l.starts_with(&format!("{image}: reproduced ("))), "{out}");
    }
    let json = mz_in(&b, &reg_a, &home_b, &["verify", "--json", "greeter"]);
    let rows = support::json::rows(json.ok(), "verify");
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["status"], "reproduced", "{json}");

    // Different content under `greetings`'s tag in registry a: the base
    // image and another greeting.
    let planted = scratch.join("planted");
    std::fs::create_dir_all(planted.join("templates")).unwrap();
    std::fs::write(planted.join("templates/greeting.txt"), "planted\n").unwrap();
    std::fs::write(
        planted.join("Dockerfile"),
        format!("FROM {reg_a}/base:{}\nCOPY templates/ /etc/greeter/\n", tags["base"]),
    )
    .unwrap();
    let target = format!("{reg_a}/greetings:{}", tags["greetings"]);
    let pushed = docker(&["buildx", "build", "--provenance=false", "--push", "-t", &target, planted.to_str().unwrap()]);
    assert_eq!(pushed.code, Some(0), "{pushed}");
    let out = mz_in(&b, &reg_a, &home_b, &["verify", "greetings"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stdout.contains("greetings: differs"), "{out}");
    let named = out.stdout.lines().find(|l| l.contains("etc/greeter/greeting.txt"));
    assert!(named.is_some_and(|l| l.contains("size") && l.contains("mtime")), "{out}");
    // Nothing of the rebuild stays tagged.
    assert!(!support::docker::local_images().iter().any(|r| r.starts_with("mzbuild-verify-")), "verify left tags");
    let _ = std::fs::remove_dir_all(&scratch);
}

/// A cargo-build binary that depends on a crates.io crate (`anyhow`, whose
/// panic locations name its source under `$CARGO_HOME/registry/src`) is
/// byte-identical, and so is its image, when built from two copies of a
/// repository at different paths with different `CARGO_HOME`s (the second's
/// `registry/` a symlink to the first's: nothing is fetched, the path cargo
/// passes to rustc still differs).
#[test]
fn cargo_binaries_do_not_embed_the_checkout_or_cargo_home_paths() {
    let repo = support::TempRepo::new();
    repo.write(".gitignore", "/target/\n")
        .write("Cargo.toml", "[workspace]\nresolver = \"2\"\nmembers = [\"services/*\"]\n")
        .write(
            "services/hello/Cargo.toml",
            "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nanyhow = \"1\"\n",
        )
        .write(
            "services/hello/src/main.rs",
            "fn main() -> anyhow::Result<()> {\n    let n: u8 = std::env::args().nth(1).unwrap_or_default().parse()?;\n    \
             anyhow::ensure!(n < 200, \"too big\");\n    println!(\"{n}\");\n    Ok(())\n}\n",
        );
    repo.image(
        "images/hello",
        "name: hello\npre-image:\n  - type: cargo-build\n    bin: hello\n",
        &format!("FROM scratch\nCOPY hello /usr/local/bin/hello\nLABEL unique={}\n", unique()),
    );
    repo.write("images/hello/.gitignore", "/hello\n");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.args(["generate-lockfile", "--offline"]).current_dir(repo.root());
    let out = run(&mut cargo);
    assert_eq!(out.code, Some(0), "cargo generate-lockfile --offline (anyhow must be in the registry cache)\n{out}");
    repo.commit_all();
    let other = repo.copy();
    assert_ne!(repo.root(), other.root());

    let home_a = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let home_b = other.scratch().join("cargo-home");
    std::fs::create_dir_all(&home_b).unwrap();
    std::os::unix::fs::symlink(home_a.join("registry"), home_b.join("registry")).unwrap();
    let id = unique();
    let _images = RemoveImages::new([format!("{id}-a"), format!("{id}-b")]);
    let mut ids = vec![];
    for (r, home, suffix) in [(&repo, &home_a, "a"), (&other, &home_b, "b")] {
        let registry = format!("{PLAIN}/{id}-{suffix}");
        let mut cmd = r.mzbuild_command(&["--image-registry", &registry, "build", "hello"]);
        cmd.env("CARGO_HOME", home);
        let out = run(&mut cmd);
        let spec = out.ok().trim().to_string();
        let inspect = docker(&["image", "inspect", "--format", "{{.Id}}", &spec]);
        ids.push(inspect.ok().trim().to_string());
    }
    let bin = "images/hello/hello";
    let (a, b) = (std::fs::read(repo.path(bin)).unwrap(), std::fs::read(other.path(bin)).unwrap());
    let text = String::from_utf8_lossy(&a);
    assert!(text.contains("/cargo/registry/src/"), "anyhow's sources are not named under /cargo");
    assert!(!text.contains(&home_a.display().to_string()), "the binary names {}", home_a.display());
    assert!(a == b, "the binaries differ");
    assert_eq!(ids[0], ids[1], "the images differ");
}
