//! Integration tests: parity with the original mzbuild on a repository laid
//! out like Materialize's (`tests/fixtures/materialize-like.sh`), whose
//! fingerprints were computed by running the original's code
//! (`materialize-like.expected`, see its header).
//!
//! - every row of the `.expected` file, for every setting;
//! - what the original does at each point where a Rust reading of SPEC.md
//!   could differ: `copy` with `source: .`, `./x`, `x/`; a `matching` that
//!   selects nothing; `.cargo/config.toml`; `{ workspace = true }` and
//!   `[target.*]` path dependencies; an example's dev-dependencies; images
//!   under `misc/python`; and the opt-in to cargo's complete input set;
//! - the copy steps themselves, in real builds.

use std::collections::{BTreeMap, BTreeSet};

use support::docker::{image_files, RemoveImages};
use support::{settings_flags, tests_dir, vectors, Output, TempRepo, Vector};

fn fixture() -> TempRepo {
    TempRepo::from_script(&tests_dir().join("fixtures/materialize-like.sh"))
}

/// The `.expected` rows: settings -> image -> (fingerprint, spec).
fn expected() -> BTreeMap<String, BTreeMap<String, (String, String)>> {
    let mut rows: BTreeMap<String, BTreeMap<String, (String, String)>> = BTreeMap::new();
    for Vector { settings, image, fingerprint, spec } in vectors("materialize-like.expected") {
        let old = rows.entry(settings.clone()).or_default().insert(image.clone(), (fingerprint, spec));
        assert!(old.is_none(), "duplicate row {settings} {image}");
    }
    rows
}

/// `list --json` with `settings`' flags: image -> (fingerprint, spec).
#[track_caller]
fn list_json(repo: &TempRepo, settings: &[&str]) -> (BTreeMap<String, (String, String)>, Output) {
    let mut args = settings.to_vec();
    args.extend(["list", "--json"]);
    let out = repo.mzbuild(&args);
    let json = support::json::list(out.ok());
    let images = json
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let s = |k: &str| i[k].as_str().unwrap().to_string();
            (s("name"), (s("fingerprint"), s("spec")))
        })
        .collect();
    (images, out)
}

#[test]
fn every_row_matches_the_original() {
    let repo = fixture();
    let expected = expected();
    let mut rows = 0;
    let mut matching = 0;
    let mut mismatches = vec![];
    for (settings, want) in &expected {
        let (got, _) = list_json(&repo, settings_flags(settings));
        // The same images: none missing, none extra (misc/python is skipped).
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{settings}");
        for (image, want) in want {
            rows += 1;
            if &got[image] == want {
                matching += 1;
            } else {
                mismatches.push(format!("{settings} {image}: got {:?}, the original {want:?}", got[image]));
            }
        }
    }
    assert_eq!(mismatches, Vec::<String>::new(), "{matching} of {rows} rows match");
    // Six settings for thirteen images: a truncated file must not pass quietly.
    assert_eq!(rows, 78);
    // `fingerprint` and `spec` agree with `list --json`.
    let (fp, spec) = &expected["release"]["td-pg-cdc"];
    for (command, want) in [("fingerprint", fp), ("spec", spec)] {
        let out = repo.mzbuild(&["--release", "--arch", "x86_64", command, "td-pg-cdc"]);
        assert_eq!(out.ok(), format!("{want}\n"), "{out}");
    }
}

#[test]
fn inputs_and_warnings_are_the_originals() {
    let repo = fixture();
    // Images under misc/python are not images (the original prunes that
    // directory); the root's files are not an image either.
    let out = repo.mzbuild(&["list"]);
    let listed: Vec<&str> = out.ok().lines().collect();
    assert!(!listed.contains(&"py-tools"), "{out}");
    assert_eq!(listed.len(), 13, "{out}");

    // Each warning once per run, however many images it concerns.
    let (_, out) = list_json(&repo, &["--arch", "x86_64"]);
    let warnings: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 3, "{out}");
    let empty_copy = "warning: misc/images/td-empty/mzbuild.yml: image `td-empty`, pre-image #1 (copy): \
                      `matching: *.nothing` selects none of the 3 file(s) git sees under `test/y`, so the copy is empty";
    assert!(warnings[0].starts_with(empty_copy), "{out}");
    assert!(warnings[1].starts_with("warning: `.cargo/config.toml` is not an input of cargo-build images"), "{out}");
    assert!(warnings[1].contains("`extra-cargo-inputs = [\".cargo/config.toml\"]`"), "{out}");
    assert!(warnings[1].contains("changes the tag of every cargo-build image"), "{out}");
    for via in [
        "src/alloc (through src/environmentd/Cargo.toml [target.'cfg(unix)'.dependencies] mz-alloc = { path = \"../alloc\" })",
        "src/repr-test-util (through src/persist-client/Cargo.toml [dev-dependencies] mz-repr-test-util = { workspace = true })",
        "src/sql-parser (through src/sql/Cargo.toml [dependencies] mz-sql-parser = { workspace = true })",
    ] {
        assert!(warnings[2].contains(via), "no `{via}`\n{out}");
    }
    assert!(
        warnings[2].contains("`path-dependencies = \"cargo\"`") && warnings[2].contains("changes the tags"),
        "{out}"
    );
    // --strict: the empty copy is an error (of that image: the others work).
    let strict = repo.mzbuild(&["--strict", "list"]);
    assert!(!strict.ok().contains("td-empty") && strict.stderr.contains("image `td-empty` is broken"), "{strict}");
    let err = repo.mzbuild(&["--strict", "fingerprint", "td-empty"]);
    let stderr = err.error();
    assert!(stderr.contains(&empty_copy["warning: ".len()..]) && stderr.contains("(an error with --strict)"), "{err}");

    // copy: `source: .` with a pattern that crosses `/`; `./test/x`;
    // `test/y/` with `*.sql`; an empty match. Inputs are root-relative.
    let own = |dir: &str, files: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        v.extend([format!("{dir}/.gitignore"), format!("{dir}/Dockerfile"), format!("{dir}/mzbuild.yml")]);
        v.sort();
        v
    };
    assert_eq!(
        repo.inputs("td-pg-cdc"),
        own("misc/images/td-pg-cdc", &["test/pg-cdc/pg-cdc.td", "test/pg-cdc/sub/alter.td"])
    );
    assert_eq!(
        repo.inputs("td-x"),
        own("misc/images/td-x", &["test/x/README.md", "test/x/data.json", "test/x/sub/nested.txt"])
    );
    assert_eq!(repo.inputs("td-y"), own("misc/images/td-y", &["test/y/a.sql", "test/y/sub/c.sql"]));
    assert_eq!(repo.inputs("td-empty"), ["misc/images/td-empty/Dockerfile", "misc/images/td-empty/mzbuild.yml"]);

    // cargo-build: `.cargo/config.toml`, `{ workspace = true }` and
    // `[target.*]` dependencies are not inputs; an example follows its own
    // crate's path dev-dependencies (testkit), not those of crates it
    // reaches (proptest-util, repr-test-util), nor `{ workspace = true }` ones.
    let crates_of = |image: &str| -> BTreeSet<String> {
        let all = repo.inputs(image);
        assert!(!all.iter().any(|f| f.starts_with(".cargo/")), "{image}: {all:?}");
        for f in ["Cargo.toml", "Cargo.lock", "ci/builder/Dockerfile", "ci/builder/stable.stamp"] {
            assert!(all.iter().any(|i| i == f), "{image} lacks {f}: {all:?}");
        }
        crates_of_all(&all)
    };
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        crates_of("environmentd"),
        set(&["build-tools", "environmentd", "ore", "pgwire", "proto", "repr", "sql"])
    );
    assert_eq!(crates_of("persistcli"), set(&["build-tools", "ore", "persist-client", "proto", "repr", "testkit"]));
    assert_eq!(crates_of("testdrive"), set(&["ore", "sql-parser", "testdrive"]));
    let env = repo.inputs("environmentd");
    assert!(!env.iter().any(|f| f.contains("mzcompose")), "{env:?}");
    assert!(env.iter().any(|f| f == "src/repr/src/new_module.rs"), "untracked crate file missing: {env:?}");

    // Changing what the original does not hash changes no tag.
    let before = list_json(&repo, &["--arch", "x86_64"]).0;
    repo.append(".cargo/config.toml", "# more\n").append("src/sql-parser/src/lib.rs", "// more\n");
    assert_eq!(list_json(&repo, &["--arch", "x86_64"]).0["environmentd"], before["environmentd"]);

    // The opt-in: cargo's complete input set, no warnings, other tags (only
    // for cargo-build images and their dependants).
    repo.append(
        "Cargo.toml",
        "\n[workspace.metadata.mzbuild]\nextra-cargo-inputs = [\".cargo/config.toml\"]\npath-dependencies = \"cargo\"\n",
    );
    let (after, out) = list_json(&repo, &["--arch", "x86_64"]);
    let warnings: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(warnings[0].contains("td-empty"), "{out}");
    let env = repo.inputs("environmentd");
    assert!(env.iter().any(|f| f == ".cargo/config.toml"), "{env:?}");
    assert_eq!(
        crates_of_all(&env),
        set(&["alloc", "build-tools", "environmentd", "ore", "pgwire", "proto", "repr", "sql", "sql-parser"])
    );
    assert_eq!(
        crates_of_all(&repo.inputs("persistcli")),
        set(&["build-tools", "ore", "persist-client", "proto", "repr", "repr-test-util", "testkit"])
    );
    for (image, (fp, _)) in &after {
        let cargo = ["environmentd", "clusterd", "materialized", "persistcli", "testdrive", "td-pg-cdc"];
        // Cargo.toml is an input of every cargo-build image (and reaches
        // td-pg-cdc through testdrive); the other images keep their tags.
        assert_eq!(fp != &before[image].0, cargo.contains(&image.as_str()), "{image}");
    }
}

/// The crates (directories under `src/`) that `inputs` touch.
fn crates_of_all(inputs: &[String]) -> BTreeSet<String> {
    inputs.iter().filter_map(|f| f.strip_prefix("src/")?.split_once('/').map(|(c, _)| c.to_string())).collect()
}

/// The copy steps in real builds: `source: .`, `./test/x` and `test/y/`
/// put the matching files, relative to the source, into the context; an
/// empty match copies nothing and the image still builds. (The fixture's
/// base image is `FROM ubuntu:noble`, which cannot be pulled here: it
/// becomes `FROM scratch`, and td-pg-cdc loses its cargo-built dependency.)
#[test]
fn copies_run_in_real_builds() {
    let repo = fixture();
    repo.write("misc/images/ubuntu-base/Dockerfile", "FROM scratch\n")
        .write("misc/images/td-pg-cdc/Dockerfile", "MZFROM ubuntu-base\nCOPY tests /tests\n");
    let id = support::registry::unique();
    let _cleanup = RemoveImages::new([id.clone()]);
    let registry = format!("127.0.0.1:5000/{id}");
    let out = repo.mzbuild(&[
        "--arch",
        "x86_64",
        "--image-registry",
        &registry,
        "build",
        "td-pg-cdc",
        "td-x",
        "td-y",
        "td-empty",
    ]);
    let specs: Vec<&str> = out.ok().lines().collect();
    assert_eq!(specs.len(), 4, "{out}");
    assert!(out.stderr.contains("selects none of the 3 file(s)"), "{out}");
    // What the copies put into each image (besides the engine's own files).
    let files = |spec: &str| -> Vec<String> {
        let mut files: Vec<String> = image_files(spec)
            .into_iter()
            .filter(|f| f.contains('.') && !f.starts_with(".dockerenv") && !f.starts_with("etc/"))
            .collect();
        files.sort();
        files
    };
    assert_eq!(files(specs[0]), ["tests/test/pg-cdc/pg-cdc.td", "tests/test/pg-cdc/sub/alter.td"]);
    assert_eq!(files(specs[1]), ["x/README.md", "x/data.json", "x/sub/nested.txt"]);
    assert_eq!(files(specs[2]), ["y/a.sql", "y/sub/c.sql"]);
    assert_eq!(files(specs[3]), Vec::<String>::new());
    assert!(!repo.path("misc/images/td-empty/none").exists(), "the empty copy created its destination");
}

/// Materialize's own `src/balancerd/ci/mzbuild.yml` carries
/// `split_debuginfo: true`, a key the original ignores: a warning, a note in
/// `lint` and the pre-push hook (which must not stop the push), a problem
/// only under `--strict`. So is an unknown key at the top level.
#[test]
fn an_unknown_key_of_materialize_stops_no_push() {
    let repo = fixture();
    // What else the fixture has for lint to find, out of the way.
    std::fs::remove_dir_all(repo.path("misc/images/td-empty")).unwrap();
    repo.write("src/persist-client/ci/.gitignore", "/persistcli\n");
    let cargo = std::fs::read_to_string(repo.path("Cargo.toml")).unwrap();
    repo.write("Cargo.toml", cargo.replace("  \"src/alloc\",\n", "  \"src/alloc\",\n  \"src/balancerd\",\n"))
        .write("src/balancerd/Cargo.toml", "[package]\nname = \"mz-balancerd\"\nversion = \"0.1.0\"\n\n[[bin]]\nname = \"balancerd\"\npath = \"src/main.rs\"\n")
        .write("src/balancerd/src/main.rs", "fn main() {}\n")
        .write(
            "src/balancerd/ci/mzbuild.yml",
            "name: balancerd\npre-image:\n  - type: cargo-build\n    bin: [ balancerd ]\n    split_debuginfo: true\n",
        )
        .write("src/balancerd/ci/Dockerfile", "MZFROM prod-base\nCOPY balancerd /usr/local/bin/\n")
        .write("src/balancerd/ci/.gitignore", "/balancerd\n")
        .commit_all();
    let out = repo.mzbuild(&["lint"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stderr
            .contains("note: src/balancerd/ci/mzbuild.yml: pre-image #1 (cargo-build): unknown key `split_debuginfo`"),
        "{out}"
    );
    let strict = repo.mzbuild(&["--strict", "lint"]);
    assert_eq!(strict.code, Some(1), "{strict}");
    assert!(strict.stdout.contains("unknown key `split_debuginfo`"), "{strict}");
    let out = repo.mzbuild(&["--arch", "x86_64", "fingerprint", "balancerd"]);
    out.fingerprint();
    assert!(
        out.stderr.contains(
            "warning: src/balancerd/ci/mzbuild.yml: pre-image #1 (cargo-build): unknown key `split_debuginfo`"
        ),
        "{out}"
    );

    // The installed hook lets the push through.
    let remote = repo.scratch().join("remote.git");
    support::git(repo.scratch(), ["init", "-q", "--bare", remote.to_str().unwrap()]);
    repo.git(["remote", "add", "origin", remote.to_str().unwrap()]);
    repo.mzbuild(&["hook", "install"]).ok();
    // The hook runs `cargo xtask` of the recorded workspace (this one):
    // `support::push` stands the binary under test in for it.
    let push = || support::push(&repo, &["origin", "HEAD:refs/heads/main"]);
    let out = push();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("note: ") && out.stderr.contains("split_debuginfo"), "{out}");
    // An unknown key at the top level too.
    repo.append("src/balancerd/ci/mzbuild.yml", "owner: materialize\n").commit_all();
    let out = push();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("unknown key `owner`"), "{out}");
}
