//! Integration tests: bad input gives clear errors.
//!
//! Each case builds a small repository, runs the real binary and checks that
//! it fails cleanly (exit status 1, no panic) with a message that names the
//! culprit (file, line, key, image) and says what to do.

use support::{xtask, Output, TempRepo};

/// A repository with `files` (path, contents), committed.
fn repo(files: &[(&str, &str)]) -> TempRepo {
    let repo = TempRepo::new();
    for (path, contents) in files {
        repo.write(path, contents);
    }
    repo.commit_all();
    repo
}

/// A cargo workspace with one crate `c` (binary `c`, example `ex`) and an
/// image `img` whose mzbuild.yml is `yml`.
fn cargo_repo(yml: &str) -> TempRepo {
    repo(&[
        ("Cargo.toml", "[workspace]\nmembers = [\"c\"]\n"),
        ("Cargo.lock", "# lock\n"),
        ("c/Cargo.toml", "[package]\nname = \"c\"\nversion = \"0.1.0\"\n"),
        ("c/src/main.rs", "fn main() {}\n"),
        ("c/examples/ex.rs", "fn main() {}\n"),
        ("img/mzbuild.yml", yml),
        ("img/Dockerfile", "FROM scratch\n"),
    ])
}

/// Assert a clean failure whose stderr contains every one of `needles`.
#[track_caller]
fn fails_with(out: &Output, needles: &[&str]) {
    let stderr = out.error();
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}\n{out}");
    }
    assert_eq!(out.stdout, "", "nothing goes to stdout on failure\n{out}");
}

fn list(repo: &TempRepo) -> Output {
    repo.mzbuild(&["list"])
}

/// A command about every image (`ensure` with none named): it fails on any
/// broken image, naming the problems. (The local registry is never reached:
/// the configuration stops it first.)
fn ensure_all(repo: &TempRepo) -> Output {
    repo.mzbuild(&["--image-registry", "127.0.0.1:5000/mzbuild-bad-input", "ensure"])
}

fn fingerprint(repo: &TempRepo, image: &str) -> Output {
    repo.mzbuild(&["--arch", "x86_64", "fingerprint", image])
}

#[test]
fn malformed_yaml() {
    let r = repo(&[("img/mzbuild.yml", "name: img\nkey: value: other\n"), ("img/Dockerfile", "FROM scratch\n")]);
    fails_with(&ensure_all(&r), &["img/mzbuild.yml:2:", "malformed YAML", "mapping values are not allowed"]);
    let r = repo(&[("img/mzbuild.yml", "name: img\n\tpublish: false\n"), ("img/Dockerfile", "FROM scratch\n")]);
    fails_with(&ensure_all(&r), &["img/mzbuild.yml:2:1: malformed YAML", "tab"]);
}

#[test]
fn yaml_that_is_not_a_mapping() {
    let r = repo(&[("img/mzbuild.yml", "- name: img\n"), ("img/Dockerfile", "FROM scratch\n")]);
    fails_with(&ensure_all(&r), &["img/mzbuild.yml: must be a YAML mapping", "found a list", "`name: my-image`"]);
    let r = repo(&[("img/mzbuild.yml", ""), ("img/Dockerfile", "FROM scratch\n")]);
    fails_with(&ensure_all(&r), &["img/mzbuild.yml: must be a YAML mapping", "nothing", "`name: my-image`"]);
}

#[test]
fn non_utf8_config() {
    let r = TempRepo::new();
    r.write("img/mzbuild.yml", b"name: img\ndescription: caf\xe9\n").write("img/Dockerfile", "FROM scratch\n");
    fails_with(&ensure_all(&r), &["img/mzbuild.yml: not valid UTF-8", "offset 26", "save it as UTF-8"]);
}

#[test]
fn missing_name() {
    let r = repo(&[("img/mzbuild.yml", "publish: false\n"), ("img/Dockerfile", "FROM scratch\n")]);
    fails_with(&ensure_all(&r), &["img/mzbuild.yml: missing `name`", "add e.g. `name: my-image`"]);
}

#[test]
fn invalid_name() {
    let r = repo(&[("img/mzbuild.yml", "name: my_image\n"), ("img/Dockerfile", "FROM scratch\n")]);
    fails_with(&ensure_all(&r), &["img/mzbuild.yml: invalid `name` `my_image`", "letters, digits and `-`"]);
    let r = repo(&[("img/mzbuild.yml", "name: 42\n"), ("img/Dockerfile", "FROM scratch\n")]);
    fails_with(&ensure_all(&r), &["img/mzbuild.yml: `name` must be a string", "a number (42)"]);
}

#[test]
fn duplicate_names() {
    let r = repo(&[
        ("one/mzbuild.yml", "name: same\n"),
        ("one/Dockerfile", "FROM scratch\n"),
        ("two/mzbuild.yml", "name: same\n"),
        ("two/Dockerfile", "FROM scratch\n"),
    ]);
    fails_with(&ensure_all(&r), &["`same` is defined twice", "one/mzbuild.yml", "two/mzbuild.yml", "rename one"]);
}

#[test]
fn unknown_pre_image_type() {
    let r = repo(&[
        ("img/mzbuild.yml", "name: img\npre-image:\n  - type: tarball\n"),
        ("img/Dockerfile", "FROM scratch\n"),
    ]);
    fails_with(
        &ensure_all(&r),
        &["img/mzbuild.yml: pre-image #1: unknown pre-image type `tarball`", "use `copy` or `cargo-build`"],
    );
}

#[test]
fn copy_without_destination() {
    let r = repo(&[
        ("img/mzbuild.yml", "name: img\npre-image:\n  - type: copy\n    source: data\n"),
        ("img/Dockerfile", "FROM scratch\n"),
        ("data/a", "a\n"),
    ]);
    fails_with(&ensure_all(&r), &["img/mzbuild.yml: pre-image #1: missing `destination`", "relative to the image"]);
}

#[test]
fn copy_source_without_files() {
    let r = repo(&[
        ("img/mzbuild.yml", "name: img\npre-image:\n  - type: copy\n    source: nothing-here\n    destination: d\n"),
        ("img/Dockerfile", "FROM scratch\n"),
    ]);
    fails_with(&fingerprint(&r, "img"), &["image `img`", "pre-image #1", "`nothing-here`", "no files git can see"]);
    let r = repo(&[
        ("img/mzbuild.yml", "name: img\npre-image:\n  - type: copy\n    source: ../outside\n    destination: d\n"),
        ("img/Dockerfile", "FROM scratch\n"),
    ]);
    fails_with(&ensure_all(&r), &["img/mzbuild.yml: pre-image #1: `source` `../outside`", "inside the repository"]);
}

#[test]
fn cargo_build_without_bin_or_example() {
    let r = cargo_repo("name: img\npre-image:\n  - type: cargo-build\n    strip: false\n");
    fails_with(&ensure_all(&r), &["img/mzbuild.yml: pre-image #1 (cargo-build): give at least one `bin` or `example`"]);
}

#[test]
fn mzfrom_unknown_image() {
    let r = repo(&[
        ("img/mzbuild.yml", "name: img\n"),
        ("img/Dockerfile", "FROM scratch AS first\nMZFROM nope AS second\n"),
        ("other/mzbuild.yml", "name: other\n"),
        ("other/Dockerfile", "FROM scratch\n"),
    ]);
    fails_with(&ensure_all(&r), &["img/Dockerfile:2:", "`MZFROM nope`", "does not exist", "images: img, other"]);
}

#[test]
fn dependency_cycle() {
    let r = repo(&[
        ("a/mzbuild.yml", "name: a\n"),
        ("a/Dockerfile", "MZFROM b\n"),
        ("b/mzbuild.yml", "name: b\n"),
        ("b/Dockerfile", "MZFROM a\n"),
        ("c/mzbuild.yml", "name: c\n"),
        ("c/Dockerfile", "MZFROM a\n"),
        ("d/mzbuild.yml", "name: d\n"),
        ("d/Dockerfile", "FROM scratch\n"),
    ]);
    fails_with(&ensure_all(&r), &["dependency cycle: a -> b -> a", "break it"]);
    // The images of the cycle, and those that depend on them, are left out;
    // the others still work.
    let out = list(&r);
    assert_eq!(out.ok(), "d\n");
    assert!(out.stderr.contains("warning: ") && out.stderr.contains("dependency cycle: a -> b -> a"), "{out}");
    fingerprint(&r, "d").ok();
    fails_with(&fingerprint(&r, "a"), &["dependency cycle: a -> b -> a"]);
    fails_with(&fingerprint(&r, "c"), &["`c` depends on `a`, which is broken", "dependency cycle: a -> b -> a"]);
    // A self-reference is a cycle too.
    let r = repo(&[("a/mzbuild.yml", "name: a\n"), ("a/Dockerfile", "MZFROM a\n")]);
    fails_with(&ensure_all(&r), &["dependency cycle: a -> a"]);
}

/// One image whose `mzbuild.yml` does not parse leaves the others usable;
/// an image that depends on it fails with the real cause, not with "does
/// not exist"; commands about every image name the broken ones, once.
#[test]
fn a_broken_image_blocks_only_itself_and_its_dependants() {
    let r = repo(&[
        ("images/app/mzbuild.yml", "name: app\npublish: [true\n"),
        ("images/app/Dockerfile", "FROM scratch\n"),
        ("images/slow/mzbuild.yml", "name: slow\n"),
        ("images/slow/Dockerfile", "MZFROM app\n"),
        ("images/ok/mzbuild.yml", "name: ok\n"),
        ("images/ok/Dockerfile", "FROM scratch\n"),
        // Nested in `ok`: its files are still not `ok`'s.
        ("images/ok/inner/mzbuild.yml", "name: inner\n\tpublish: false\n"),
        ("images/ok/inner/Dockerfile", "FROM scratch\n"),
    ]);
    let out = list(&r);
    assert_eq!(out.ok(), "ok\n");
    for needle in ["`app`", "`inner`", "`slow`", "images/app/mzbuild.yml:", "malformed YAML"] {
        assert!(out.stderr.contains(needle), "{needle}\n{out}");
    }
    assert!(!out.stderr.contains("does not exist"), "{out}");
    let fp = fingerprint(&r, "ok").line();
    r.mzbuild(&["--arch", "x86_64", "describe", "ok"]).ok();
    fails_with(&fingerprint(&r, "app"), &["images/app/mzbuild.yml:", "malformed YAML"]);
    let out = fingerprint(&r, "slow");
    fails_with(&out, &["`slow` depends on `app`, which is broken: images/app/mzbuild.yml:", "malformed YAML"]);
    assert!(!out.stderr.contains("does not exist"), "{out}");
    // Every image is needed: the broken ones are named, with the cause once.
    let out = ensure_all(&r);
    fails_with(&out, &["`app`", "`slow`", "`inner`", "malformed YAML"]);
    assert_eq!(out.stderr.matches("images/app/mzbuild.yml:").count(), 1, "{out}");
    // So does a release tag of every image.
    let out = r.mzbuild(&["--image-registry", "127.0.0.1:5000/mzbuild-bad-input", "tag", "v1", "--dry-run"]);
    fails_with(&out, &["this command needs every image", "`app`", "malformed YAML"]);
    fails_with(
        &r.mzbuild(&["--image-registry", "127.0.0.1:5000/mzbuild-bad-input", "tag", "v1", "--dry-run", "slow"]),
        &["`slow` depends on `app`, which is broken"],
    );
    // lint lists the real problems, no derived ones.
    let out = r.mzbuild(&["lint"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stdout.contains("images/app/mzbuild.yml:") && out.stdout.contains("images/ok/inner/mzbuild.yml:"));
    // As a document: the same problems, each with its file.
    let json = r.mzbuild(&["lint", "--json"]);
    assert_eq!((json.code, support::json::result(&json.stdout, "lint")), (Some(1), "failure".into()), "{json}");
    let files: Vec<String> = support::json::rows(&json.stdout, "lint")
        .iter()
        .map(|p| p["file"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        files.contains(&"images/app/mzbuild.yml".into()) && files.contains(&"images/ok/inner/mzbuild.yml".into()),
        "{json}"
    );
    assert!(!out.stdout.contains("does not exist") && !out.stdout.contains("depends on"), "{out}");
    // Fixed, nothing changes for `ok`.
    r.write("images/app/mzbuild.yml", "name: app\n").write("images/ok/inner/mzbuild.yml", "name: inner\n");
    assert_eq!(fingerprint(&r, "ok").line(), fp);
    assert_eq!(list(&r).ok(), "app\ninner\nok\nslow\n");
}

/// Names that are almost right get a suggestion.
#[test]
fn near_misses_suggest_the_name() {
    let r = repo(&[
        ("app/mzbuild.yml", "name: app\n"),
        ("app/Dockerfile", "FROM scratch\n"),
        ("web/mzbuild.yml", "name: web\n"),
        ("web/Dockerfile", "MZFROM ap\n"),
    ]);
    fails_with(&fingerprint(&r, "web"), &["web/Dockerfile:1: `MZFROM ap`", "did you mean `app`?"]);
    fails_with(&fingerprint(&r, "appp"), &["unknown image `appp`", "did you mean `app`?"]);
}

#[test]
fn missing_dockerfile() {
    let r = repo(&[("img/mzbuild.yml", "name: img\n")]);
    fails_with(&ensure_all(&r), &["img/mzbuild.yml: image `img` has no Dockerfile", "add img/Dockerfile"]);
    // One that git ignores does not count.
    let r = repo(&[("img/mzbuild.yml", "name: img\n"), ("img/.gitignore", "Dockerfile\n")]);
    r.write("img/Dockerfile", "FROM scratch\n");
    fails_with(&ensure_all(&r), &["image `img` has no Dockerfile", "add img/Dockerfile", "git does not ignore it"]);
}

#[test]
fn unknown_cargo_bin() {
    let r = cargo_repo("name: img\npre-image:\n  - type: cargo-build\n    bin: nosuch\n");
    fails_with(
        &fingerprint(&r, "img"),
        &["image `img` (img/mzbuild.yml), pre-image #1", "a binary named `nosuch`", "binaries: c)", "fix the name"],
    );
    let r = cargo_repo("name: img\npre-image:\n  - type: cargo-build\n    example: nosuch\n");
    fails_with(&fingerprint(&r, "img"), &["an example named `nosuch`", "examples: ex)"]);
}

#[test]
fn missing_cargo_lock() {
    let r = cargo_repo("name: img\npre-image:\n  - type: cargo-build\n    bin: c\n");
    r.remove("Cargo.lock");
    fails_with(&fingerprint(&r, "img"), &["image `img`", "needs Cargo.lock", "cargo generate-lockfile"]);
    // The configuration alone is fine: only commands that need the inputs fail.
    assert_eq!(list(&r).ok(), "img\n");
}

#[test]
fn broken_cargo_manifest() {
    let r = cargo_repo("name: img\npre-image:\n  - type: cargo-build\n    bin: c\n");
    r.append("c/Cargo.toml", "[dependencies]\nbroken = \n");
    fails_with(&fingerprint(&r, "img"), &["image `img`", "c/Cargo.toml: invalid TOML", "line 5"]);
    let r = cargo_repo("name: img\npre-image:\n  - type: cargo-build\n    bin: c\n");
    r.append("c/Cargo.toml", "[dependencies]\ngone = { path = \"../gone\" }\n");
    fails_with(&fingerprint(&r, "img"), &["c/Cargo.toml", "`gone` points at `gone`", "no Cargo.toml"]);
}

#[test]
fn dangling_symlink_input() {
    let r = repo(&[("img/mzbuild.yml", "name: img\n"), ("img/Dockerfile", "FROM scratch\n")]);
    r.symlink("nowhere", "img/dangling");
    fails_with(&fingerprint(&r, "img"), &["image `img`: input img/dangling is a dangling symlink", "`nowhere`"]);
}

#[test]
fn symlink_to_directory_input() {
    let r = repo(&[("img/mzbuild.yml", "name: img\n"), ("img/Dockerfile", "FROM scratch\n"), ("img/dir/a", "a\n")]);
    r.symlink("dir", "img/dir-link");
    fails_with(
        &fingerprint(&r, "img"),
        &["image `img`: input img/dir-link is a symlink to a directory", "`dir`", "a symlink per file"],
    );
}

#[test]
fn root_that_is_not_a_git_work_tree() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mzbuild.yml"), "name: x\n").unwrap();
    let root = dir.path().to_str().unwrap();
    fails_with(&xtask(["mzbuild", "--root", root, "list"]), &[root, "not the top of a git work tree", "git init"]);
    // Through MZ_ROOT just the same.
    let mut cmd = support::xtask_command(["mzbuild", "list"]);
    cmd.env("MZ_ROOT", root);
    fails_with(&support::run(&mut cmd), &[root, "not the top of a git work tree"]);
    // A subdirectory of a repository is not its top.
    let r = repo(&[("sub/a", "a\n")]);
    let sub = r.path("sub");
    fails_with(&xtask(["mzbuild", "--root", sub.to_str().unwrap(), "list"]), &["not the top of a git work tree"]);
    // And a root that does not exist.
    let gone = dir.path().join("gone");
    fails_with(&xtask(["mzbuild", "--root", gone.to_str().unwrap(), "list"]), &["gone", "is not a directory"]);
}

#[test]
fn unknown_image_on_the_command_line() {
    let r = repo(&[
        ("a/mzbuild.yml", "name: a\n"),
        ("a/Dockerfile", "FROM scratch\n"),
        ("b/mzbuild.yml", "name: b\n"),
        ("b/Dockerfile", "FROM scratch\n"),
    ]);
    for command in ["fingerprint", "spec", "describe"] {
        fails_with(&r.mzbuild(&[command, "nosuch"]), &["unknown image `nosuch`", "mzbuild list", "(a, b)"]);
    }
    // Several names: every unknown one at once, and nothing printed for the known ones.
    for command in ["fingerprint", "spec"] {
        fails_with(&r.mzbuild(&[command, "a", "nosuch", "bb"]), &["unknown image `nosuch`", "unknown image `bb`"]);
    }
}

#[test]
fn bad_settings() {
    let r = repo(&[("a/mzbuild.yml", "name: a\n"), ("a/Dockerfile", "FROM scratch\n")]);
    fails_with(&r.mzbuild(&["--sanitizer", "bogus", "fingerprint", "a"]), &["unknown sanitizer `bogus`", "address"]);
    fails_with(
        &r.mzbuild(&["--arch", "mips", "fingerprint", "a"]),
        &["unknown architecture `mips`", "x86_64 or aarch64"],
    );
    fails_with(&r.mzbuild(&["--release", "--dev", "fingerprint", "a"]), &["--release", "--dev", "give one"]);
    let mut cmd = r.mzbuild_command(&["--arch", "x86_64", "fingerprint", "a"]);
    cmd.env("CI_SANITIZER", "bogus");
    fails_with(&support::run(&mut cmd), &["unknown sanitizer `bogus`"]);
}

#[test]
fn all_errors_in_one_run() {
    let r = repo(&[
        ("a/mzbuild.yml", "publish: false\n"),
        ("a/Dockerfile", "FROM scratch\n"),
        ("b/mzbuild.yml", "name: b_b\n"),
        ("b/Dockerfile", "FROM scratch\n"),
        ("c/mzbuild.yml", "name: c\npre-image:\n  - type: copy\n    source: x\n  - type: cargo-build\n"),
        ("c/Dockerfile", "FROM scratch\n"),
        ("d/mzbuild.yml", "name: d\n"),
        ("d/Dockerfile", "MZFROM nope\n"),
        ("e/mzbuild.yml", "name: e\n"),
    ]);
    let out = ensure_all(&r);
    fails_with(
        &out,
        &[
            "6 errors in the mzbuild configuration",
            "a/mzbuild.yml: missing `name`",
            "b/mzbuild.yml: invalid `name` `b_b`",
            "c/mzbuild.yml: pre-image #1: missing `destination`",
            "c/mzbuild.yml: pre-image #2 (cargo-build): give at least one `bin` or `example`",
            "d/Dockerfile:1: `MZFROM nope`",
            "e/mzbuild.yml: image `e` has no Dockerfile",
        ],
    );
}

#[test]
fn unknown_key_warns() {
    let r = repo(&[
        ("img/mzbuild.yml", "name: img\nowner: me\npre-image:\n  - type: copy\n    source: data\n    destination: d\n    comment: '*.td'\n"),
        ("img/Dockerfile", "FROM scratch\n"),
        ("data/a.td", "a\n"),
    ]);
    let out = list(&r);
    assert_eq!(out.ok(), "img\n");
    assert!(out.stderr.contains("warning: img/mzbuild.yml: unknown key `owner`"), "{out}");
    assert!(out.stderr.contains("warning: img/mzbuild.yml: pre-image #1 (copy): unknown key `comment`"), "{out}");
    assert_eq!(out.stderr.lines().filter(|l| l.starts_with("warning: ")).count(), 2, "{out}");

    let out = r.mzbuild(&["--strict", "fingerprint", "img"]);
    fails_with(&out, &["img/mzbuild.yml: unknown key `owner`", "unknown key `comment`", "--strict"]);
    // --strict after the subcommand too.
    fails_with(&r.mzbuild(&["fingerprint", "img", "--strict"]), &["unknown key `owner`"]);
}

/// A key within a typo of a known one is an error: `pubish: false` would
/// publish an image meant to stay private.
#[test]
fn a_misspelt_key_is_an_error() {
    let r = repo(&[
        ("img/mzbuild.yml", "name: img\npubish: false\npre-image:\n  - type: copy\n    source: data\n    destination: d\n    matchng: '*.td'\n"),
        ("img/Dockerfile", "FROM scratch\n"),
        ("data/a.td", "a\n"),
        ("other/mzbuild.yml", "name: other\n"),
        ("other/Dockerfile", "FROM scratch\n"),
    ]);
    fails_with(
        &fingerprint(&r, "img"),
        &[
            "img/mzbuild.yml: unknown key `pubish`: did you mean `publish`?",
            "img/mzbuild.yml: pre-image #1 (copy): unknown key `matchng`: did you mean `matching`?",
        ],
    );
    fails_with(&ensure_all(&r), &["did you mean `publish`?"]);
    assert_eq!(list(&r).ok(), "other\n");
}

/// A file with several problems: lint names every one of them, whatever
/// comes first.
#[test]
fn lint_reports_every_problem_of_a_file() {
    let r = cargo_repo(
        "name: img\npre-image:\n  - type: copy\n    source: nothing-here\n    destination: d\n  - type: cargo-build\n    bin: nosuchbin\n",
    );
    r.write("img/.gitignore", "/d\n/nosuchbin\n").commit_all();
    let out = r.mzbuild(&["lint"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stdout.contains("`nothing-here`") && out.stdout.contains("`nosuchbin`"), "{out}");
    // A pre-image that does not parse does not hide the next one either.
    r.write(
        "img/mzbuild.yml",
        "name: img\npre-image:\n  - type: copy\n    source: ../outside\n    destination: d\n  - type: cargo-build\n    bin: nosuchbin\n",
    )
    .commit_all();
    let out = r.mzbuild(&["lint"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stdout.contains("`source` `../outside`") && out.stdout.contains("`nosuchbin`"), "{out}");
}

#[test]
fn non_utf8_path() {
    use std::os::unix::ffi::OsStrExt;
    let r = repo(&[("img/mzbuild.yml", "name: img\n"), ("img/Dockerfile", "FROM scratch\n")]);
    std::fs::write(r.path("img").join(std::ffi::OsStr::from_bytes(b"bad\xffname")), "x\n").unwrap();
    fails_with(&ensure_all(&r), &["bad", "not valid UTF-8", "rename it"]);
}

/// Results that cannot be written (stdout on a full disk: `/dev/full`) fail
/// the run, saying so, rather than leaving a truncated file behind an exit
/// status of 0. A reader that stops early (`| head`) is not an error.
#[test]
fn results_on_a_full_disk_fail_the_run() {
    let r = repo(&[("img/mzbuild.yml", "name: img\n"), ("img/Dockerfile", "FROM scratch\n")]);
    for args in [&["list"][..], &["list", "--json"], &["--arch", "x86_64", "describe", "img"]] {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let out = support::run(r.mzbuild_command(args).stdout(full));
        fails_with(&out, &["writing the results to stdout failed: No space left on device"]);
    }
    // A pipe whose reader is gone before anything is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = support::run(r.mzbuild_command(&["list", "--json"]).stdout(writer));
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stderr, "", "{out}");
}
