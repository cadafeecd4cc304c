//! Integration tests: fingerprints at a git revision (`--rev`), read from
//! the object store, must equal checking the revision out and
//! fingerprinting it; the blob cache, git's index and the fingerprint memos
//! must never change a fingerprint (racy edits included); `diff`,
//! `explain`, `lint` and the pre-push hook.

use std::collections::BTreeMap;

use mzbuild::fingerprint::{self, Computed, Fingerprint};
use mzbuild::{Arch, Ctx, Options, ProcessEnv, Profile, Repo, Settings};
use support::{tests_dir, TempRepo};

fn fixture() -> TempRepo {
    TempRepo::from_script(&tests_dir().join("fixtures/public-fixture.sh"))
}

/// `list --json` (every image's fingerprint), on x86_64, of the work tree
/// or of `rev`.
#[track_caller]
fn list(repo: &TempRepo, root: Option<&std::path::Path>, rev: Option<&str>) -> String {
    let mut args = vec!["--arch", "x86_64", "list", "--json"];
    if let Some(rev) = rev {
        args.extend(["--rev", rev]);
    }
    let mut cmd = repo.mzbuild_command(&args);
    if let Some(root) = root {
        // `--root` given twice: the last one wins.
        cmd.arg("--root").arg(root);
    }
    support::run(&mut cmd).ok().to_string()
}

/// Each commit of a history that exercises every input rule: fingerprints
/// read at the revision equal those of a checkout of it, while the work
/// tree holds other changes.
#[test]
fn revision_equals_checkout_over_a_history() {
    let repo = fixture();
    // The fixture leaves an untracked input behind; the commits below
    // carry it along.
    repo.commit_all();
    let mut commits = vec![repo.git(["rev-parse", "HEAD"]).trim().to_string()];
    let mut step = |f: &dyn Fn(&TempRepo)| {
        f(&repo);
        repo.commit_all();
        commits.push(repo.git(["rev-parse", "HEAD"]).trim().to_string());
    };
    // Symlinks: a chain, one through a symlinked directory, one in a copy
    // source.
    step(&|r| {
        r.symlink("link.sh", "misc/images/app/link2.sh")
            .symlink("data", "test/alias")
            .symlink("../../../test/alias/sub/b.td", "misc/images/app/deep.td")
            .symlink("../a.td", "test/data/sub/up.td");
    });
    // Exec bits: on a copied file, off a context file.
    step(&|r| {
        r.chmod("test/data/a.td", 0o755).chmod("misc/images/app/run.sh", 0o644);
    });
    // A nested image: its files leave the outer image.
    step(&|r| {
        r.write("misc/images/app/inner/mzbuild.yml", "name: inner\n")
            .write("misc/images/app/inner/Dockerfile", "MZFROM base\n")
            .write("misc/images/app/inner/x.txt", "x\n");
    });
    // The cargo-build closure, a second copy pre-image with `matching`, a
    // removed file.
    step(&|r| {
        r.append("src/bar/src/lib.rs", "pub fn y() {}\n")
            .write(
                "misc/images/base/mzbuild.yml",
                "name: base\npre-image:\n  - type: copy\n    source: test\n    destination: t\n    matching: '*.td'\n",
            )
            .write("misc/images/base/.gitignore", "/t\n")
            .remove("test/data/sub/b.td")
            .remove("misc/images/app/deep.td");
    });
    // The work tree moves on: none of this may show at a revision.
    repo.write("misc/images/base/Dockerfile", "FROM debian\n").write("src/bar/src/new.rs", "\n");

    for (n, commit) in commits.iter().enumerate() {
        let checkout = repo.scratch().join(format!("checkout-{n}"));
        repo.git(["worktree", "add", "-q", "--detach", checkout.to_str().unwrap(), commit]);
        let at_checkout = list(&repo, Some(&checkout), None);
        let at_rev = list(&repo, None, Some(commit));
        assert_eq!(at_rev, at_checkout, "commit #{n} {commit}");
        // From the linked work tree too (its git directory is elsewhere).
        assert_eq!(list(&repo, Some(&checkout), Some(commit)), at_checkout, "commit #{n} from the worktree");
    }
    // The revisions differ from each other and from the work tree.
    let all: std::collections::BTreeSet<String> = commits.iter().map(|c| list(&repo, None, Some(c))).collect();
    assert_eq!(all.len(), commits.len());
    assert!(!all.contains(&list(&repo, None, None)));
}

#[test]
fn revision_errors_name_the_problem() {
    let repo = fixture();
    let err = repo.mzbuild(&["fingerprint", "app", "--rev", "no-such-branch"]).error().to_string();
    assert!(err.contains("`no-such-branch` is not a commit"), "{err}");
    repo.symlink("nowhere", "misc/images/app/dangling").commit_all();
    let err = repo.mzbuild(&["--arch", "x86_64", "fingerprint", "app", "--rev", "HEAD"]).error().to_string();
    assert!(err.contains("misc/images/app/dangling is a dangling symlink (to `nowhere`)"), "{err}");
    assert!(err.contains("at `HEAD`"), "{err}");
    // The work tree says the same.
    let err = repo.mzbuild(&["--arch", "x86_64", "fingerprint", "app"]).error().to_string();
    assert!(err.contains("misc/images/app/dangling is a dangling symlink (to `nowhere`)"), "{err}");
}

/// A symlink that leads out of the repository: in the work tree its target
/// is read, as the original reads it; at a revision the target is not part
/// of the commit, so it is an error (never this machine's disk), which
/// names the link, for `--rev` and `diff`; and it is never memoised (a
/// good revision is), so asking again fails the same way.
#[test]
fn a_symlink_out_of_the_repository_is_an_error_at_a_revision() {
    let repo = fixture();
    repo.commit_all();
    // The revision memos of this repository, by tree id.
    let memoised = |tree: &str| {
        std::fs::read_dir(repo.path(".git/mzbuild/revisions"))
            .into_iter()
            .flatten()
            .any(|e| e.unwrap().file_name().to_string_lossy().starts_with(tree))
    };
    let tree = |rev: &str| repo.git(["rev-parse", &format!("{rev}^{{tree}}")]).trim().to_string();
    // A revision that fingerprints is memoised...
    repo.mzbuild(&["--arch", "x86_64", "fingerprint", "app", "--rev", "HEAD"]).ok();
    assert!(memoised(&tree("HEAD")), "a good revision is memoised");
    let outside = repo.scratch().join("outside.txt");
    std::fs::write(&outside, "outside\n").unwrap();
    repo.symlink(outside.to_str().unwrap(), "misc/images/app/out.link").commit_all();
    let before = repo.mzbuild(&["--arch", "x86_64", "fingerprint", "app"]).ok().to_string();
    std::fs::write(&outside, "changed\n").unwrap();
    let after = repo.mzbuild(&["--arch", "x86_64", "fingerprint", "app"]).ok().to_string();
    assert_ne!(before, after, "the work tree reads the target");
    for args in [&["fingerprint", "app", "--rev", "HEAD"][..], &["diff", "HEAD"][..], &["diff", "HEAD"][..]] {
        let mut full = vec!["--arch", "x86_64"];
        full.extend_from_slice(args);
        let err = repo.mzbuild(&full).error().to_string();
        assert!(
            err.contains("input misc/images/app/out.link is a symlink out of the repository")
                && err.contains("in `HEAD`")
                && err.contains(outside.to_str().unwrap()),
            "{args:?}: {err}"
        );
        // ...one that fails is not, so the next run (the second `diff`)
        // cannot be answered by a memo: it fails the same way.
        assert!(!memoised(&tree("HEAD")), "{args:?}: a failing revision was memoised");
    }
    // A relative one that climbs out says the same.
    repo.remove("misc/images/app/out.link").symlink("../../../../outside.txt", "misc/images/app/up.link").commit_all();
    let err = repo.mzbuild(&["--arch", "x86_64", "fingerprint", "app", "--rev", "HEAD"]).error().to_string();
    assert!(err.contains("input misc/images/app/up.link is a symlink out of the repository"), "{err}");
}

/// Records are bounded: the newest manifests are kept with the records
/// that use them, and every record left can be read.
#[test]
fn records_are_bounded() {
    use fingerprint::snapshot::{self, KEEP_MANIFESTS};
    let repo = TempRepo::new();
    repo.write("img/mzbuild.yml", "name: img\n").write("img/Dockerfile", "FROM scratch\n").commit_all();
    let mut last = None;
    for i in 0..KEEP_MANIFESTS + 2 {
        repo.write("img/f", format!("{i}\n"));
        let r = Repo::load_with(repo.root(), false, false).unwrap();
        let images = r.resolve(&[]).unwrap();
        let computed = fingerprint::compute(&r, &images, &settings(Arch::X86_64)).unwrap();
        assert_eq!(snapshot::record(repo.root(), &computed).unwrap(), 1);
        last = Some(computed.images["img"].fingerprint);
    }
    let dir = snapshot::record_dir(repo.root());
    assert_eq!(std::fs::read_dir(dir.join("manifests")).unwrap().count(), KEEP_MANIFESTS);
    let records: Vec<Fingerprint> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().unwrap().strip_suffix(".json").map(str::to_string))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(records.len(), KEEP_MANIFESTS);
    assert!(records.contains(&last.unwrap()), "the newest record stays");
    for fp in records {
        assert!(snapshot::load(repo.root(), &fp).unwrap().is_some(), "{fp}");
    }
}

/// Records name their inputs in a manifest whose entries end with NUL: a
/// path with a newline (or anything else git allows) comes back as it was.
#[test]
fn records_keep_any_path() {
    let repo = TempRepo::new();
    repo.write("img/mzbuild.yml", "name: img\n")
        .write("img/Dockerfile", "FROM scratch\n")
        .write("img/new\nline.txt", "n\n")
        .write("img/tab\tand space .txt", "t\n")
        .commit_all();
    let r = Repo::load(repo.root(), false).unwrap();
    let images = r.resolve(&[]).unwrap();
    let computed = fingerprint::compute(&r, &images, &settings(Arch::X86_64)).unwrap();
    assert_eq!(fingerprint::snapshot::record(repo.root(), &computed).unwrap(), 1);
    let fp = computed.images["img"].fingerprint;
    let snap = fingerprint::snapshot::load(repo.root(), &fp).unwrap().expect("recorded");
    assert_eq!(snap, computed.snapshot("img"));
    let paths: Vec<&str> = snap.inputs.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["img/Dockerfile", "img/mzbuild.yml", "img/new\nline.txt", "img/tab\tand space .txt"]);
}

/// Replace the blob cache with exactly `entries` (blob id -> content
/// SHA-1), in its on-disk format, as used today.
fn write_cache(repo: &TempRepo, entries: &[([u8; 20], [u8; 20])]) {
    use sha1::{Digest, Sha1};
    let mut entries = entries.to_vec();
    entries.sort();
    let today = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400) as u32;
    let mut out = b"mzbuild blob-sha1 v2\n".to_vec();
    for (oid, digest) in entries {
        out.extend(oid);
        out.extend(digest);
        out.extend(today.to_le_bytes());
    }
    let sum = Sha1::digest(&out);
    out.extend(sum);
    repo.write(".git/mzbuild/blob-sha1.v2", out);
}

fn blob_id(repo: &TempRepo, spec: &str) -> [u8; 20] {
    let hex = repo.git(["rev-parse", spec]);
    let hex = hex.trim();
    let mut out = [0u8; 20];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// The blob cache is used for files git's index records as clean, and
/// never for racily clean ones (git's rule); a racy edit (same size, same
/// mtime) is seen; a corrupt cache is ignored and rewritten.
#[test]
fn blob_cache_and_racy_entries() {
    use std::time::{Duration, SystemTime};
    let repo = fixture();
    repo.commit_all();
    let truth = list(&repo, None, None);
    assert_eq!(list(&repo, None, None), truth, "again");

    // A clean entry, older than the index: its hash comes from the cache,
    // which a poisoned entry proves.
    let now = SystemTime::now();
    let a = blob_id(&repo, "HEAD:test/data/a.td");
    repo.set_mtime("test/data/a.td", now - Duration::from_secs(100));
    repo.git(["update-index", "-q", "--refresh"]);
    write_cache(&repo, &[(a, [0x11; 20])]);
    assert_ne!(list(&repo, None, None), truth, "a clean entry takes its content hash from the cache");

    // The same file, stat data unchanged, but not older than the index:
    // racily clean, so it is read again.
    repo.set_mtime("test/data/a.td", now + Duration::from_secs(100));
    repo.git(["update-index", "-q", "--refresh"]);
    write_cache(&repo, &[(a, [0x11; 20])]);
    assert_eq!(list(&repo, None, None), truth, "a racily clean entry is re-hashed");

    // A racy edit: same size, mtime put back, in the second the index was
    // written.
    std::fs::remove_file(repo.path(".git/mzbuild/blob-sha1.v2")).unwrap();
    repo.set_mtime("test/data/a.td", now);
    repo.git(["update-index", "-q", "--refresh"]);
    assert_eq!(list(&repo, None, None), truth);
    let before = std::fs::metadata(repo.path("test/data/a.td")).unwrap().modified().unwrap();
    repo.write("test/data/a.td", "z\n");
    repo.set_mtime("test/data/a.td", before);
    let edited = list(&repo, None, None);
    assert_ne!(edited, truth, "the racy edit is seen");
    let _ = std::fs::remove_file(repo.path(".git/mzbuild/blob-sha1.v2"));
    assert_eq!(list(&repo, None, None), edited, "without a cache: the same");

    // Corrupt: ignored with a warning, rebuilt; fingerprints unchanged.
    repo.write(".git/mzbuild/blob-sha1.v2", "garbage");
    let out = repo.mzbuild(&["--arch", "x86_64", "list", "--json"]);
    assert_eq!(out.ok(), edited);
    assert!(out.stderr.contains("ignoring the blob cache") && out.stderr.contains("it is rebuilt"), "{out}");
    let out = repo.mzbuild(&["--arch", "x86_64", "list", "--json"]);
    assert_eq!(out.ok(), edited);
    assert!(!out.stderr.contains("ignoring the blob cache"), "rewritten: {out}");

    // Index version 4 (path compression) reads the same.
    repo.git(["update-index", "--index-version", "4"]);
    assert_eq!(list(&repo, None, None), edited);
    // And at a revision, the cache serves blob ids from the commit (not the
    // edited work tree's): the same as without any cache, cold and warm.
    let no_cache =
        support::run(&mut repo.mzbuild_command(&["--arch", "x86_64", "--no-cache", "list", "--json", "--rev", "HEAD"]))
            .ok()
            .to_string();
    assert_ne!(no_cache, edited, "HEAD has not the racy edit");
    assert_eq!(list(&repo, None, Some("HEAD")), no_cache, "cold");
    assert_eq!(list(&repo, None, Some("HEAD")), no_cache, "warm");
}

/// A fixture with a local upstream branch and its registries on the
/// plain local registry (so `diff` asks a registry that answers).
fn fixture_with_upstream() -> (TempRepo, String) {
    let repo = fixture();
    let (registry, _images) = support::registry::scratch();
    repo.append("Cargo.toml", format!("\n[workspace.metadata.mzbuild]\nregistries = [{{ url = \"{registry}\" }}]\n"));
    repo.commit_all();
    repo.git(["branch", "upstream"]);
    repo.git(["branch", "--set-upstream-to=upstream"]);
    (repo, registry)
}

#[test]
fn diff_and_explain_against_a_revision() {
    let (repo, _registry) = fixture_with_upstream();
    let out = repo.mzbuild(&["--arch", "x86_64", "diff"]);
    let short = repo.git(["rev-parse", "--short", "HEAD"]).trim().to_string();
    let expected = format!("no image differs between {short} (merge-base with `upstream`) and the work tree");
    assert!(out.ok().starts_with(&expected), "{out}");
    // A committed change to base's context, an uncommitted one to app's.
    repo.append("misc/images/base/Dockerfile", "ENV X=1\n").commit_all();
    repo.write("misc/images/app/new.txt", "new\n").chmod("misc/images/app/run.sh", 0o644);
    let out = repo.mzbuild(&["--arch", "x86_64", "diff", "--json"]);
    let json = out.ok();
    let v = support::json::rows(json, "diff");
    let names: Vec<&str> = v.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["app", "base"], "{json}");
    let app = &v[0];
    assert_eq!(app["status"], "changed");
    assert_eq!(app["published"], false, "asked the registry: {json}");
    assert_eq!(app["change"]["added"][0], "misc/images/app/new.txt");
    assert_eq!(app["change"]["mode_changed"][0], "misc/images/app/run.sh");
    assert_eq!(app["change"]["dependencies"][0]["name"], "base");
    assert_eq!(v[1]["change"]["changed"][0], "misc/images/base/Dockerfile");
    // The same against an explicit revision, as text.
    let text = repo.mzbuild(&["--arch", "x86_64", "diff", "upstream"]).ok().to_string();
    assert!(text.starts_with("2 of 2 images differ between `upstream` and the work tree:"), "{text}");
    assert!(text.contains("  1 file added: misc/images/app/new.txt\n"), "{text}");
    assert!(text.contains("not published: CI builds it"), "{text}");
    // Only the committed change, from the commit's point of view.
    let head_only = repo.mzbuild(&["--arch", "x86_64", "diff", "HEAD"]).ok().to_string();
    assert!(head_only.starts_with("1 of 2 images differ between `HEAD` and the work tree:\napp "), "{head_only}");

    let out = repo.mzbuild(&["--arch", "x86_64", "explain", "app"]);
    let text = out.ok();
    assert!(text.contains("  added         misc/images/app/new.txt\n"), "{text}");
    assert!(text.contains("  mode changed  misc/images/app/run.sh\n"), "{text}");
    assert!(text.contains("\nbase: "), "recurses into the changed dependency: {text}");
    assert!(text.contains("  changed       misc/images/base/Dockerfile\n"), "{text}");
    let out = repo.mzbuild(&["--arch", "x86_64", "explain", "app", "--json"]);
    let rows = support::json::rows(out.ok(), "explain");
    let lines: Vec<&str> = rows[0]["lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert!(lines.contains(&"  added         misc/images/app/new.txt"), "{out}");
    let err = repo.mzbuild(&["explain", "app", "--against", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]).error().to_string();
    assert!(err.contains("was never recorded"), "{err}");
}

/// `explain` names what a user changed: the keys of `mzbuild.yml`, not only
/// the file; `image-rustflags`, not the pre-image's hashed words; and not
/// the root `Cargo.toml`, whose [workspace.metadata.mzbuild] table is no input.
#[test]
fn explain_names_the_keys_that_changed() {
    let (repo, _registry) = fixture_with_upstream();
    let yml = std::fs::read_to_string(repo.path("misc/images/app/mzbuild.yml")).unwrap();
    assert!(yml.contains("VERSION: '1.0'"), "{yml}");
    repo.write("misc/images/app/mzbuild.yml", yml.replace("'1.0'", "'1.1'"))
        .append("Cargo.toml", "image-rustflags = [\"-Copt-level=1\"]\n");
    let text = repo.mzbuild(&["--arch", "x86_64", "explain", "app"]).ok().to_string();
    let body: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(
        body,
        [
            "  changed       misc/images/app/mzbuild.yml",
            "                  build-args.VERSION: \"1.0\" -> \"1.1\"",
            "  pre-image     image-rustflags (Cargo.toml [workspace.metadata.mzbuild]): (none) -> [\"-Copt-level=1\"]",
        ],
        "{text}"
    );
}

/// `build` records what it fingerprinted; `explain --against FINGERPRINT`
/// compares with that record later.
#[test]
fn explain_against_a_recorded_fingerprint() {
    let repo = TempRepo::new();
    let (registry, _images) = support::registry::scratch();
    repo.write("Cargo.toml", support::registry::cargo_toml(&[format!("{{ url = \"{registry}\" }}")]))
        .write("img/mzbuild.yml", "name: img\npublish: false\n")
        .write("img/Dockerfile", "FROM scratch\nCOPY f /f\n")
        .write("img/f", "one\n")
        .commit_all();
    let out = repo.mzbuild(&["--arch", "x86_64", "build", "img"]);
    let spec = out.ok().trim().to_string();
    let old = spec.rsplit("mzbuild-").next().unwrap().to_string();
    assert!(repo.path(&format!("target/mzbuild/fingerprints/{old}.json")).exists());
    repo.write("img/f", "two\n").write("img/g", "g\n");
    let text = repo.mzbuild(&["--arch", "x86_64", "explain", "img", "--against", &old]).ok().to_string();
    assert!(text.contains(&format!("vs recorded fingerprint {old}")), "{text}");
    assert!(text.contains("  changed       img/f\n") && text.contains("  added         img/g\n"), "{text}");
    // Settings, field by field.
    let text = repo.mzbuild(&["--arch", "x86_64", "--dev", "explain", "img", "--against", &old]).ok().to_string();
    assert!(text.contains("  setting       profile: optimized -> dev\n"), "{text}");
    assert!(!text.contains("Profile.") && !text.contains("coverage"), "{text}");
}

/// `.git/info/exclude` is shared by every work tree of a repository (git
/// reads it from the common git directory): lint in a linked work tree
/// honours it as the main one does.
#[test]
fn lint_reads_info_exclude_from_the_common_git_dir() {
    let repo = fixture();
    repo.write(
        "misc/images/c/mzbuild.yml",
        "name: c\npre-image:\n  - type: copy\n    source: test\n    destination: out\n",
    )
    .write("misc/images/c/Dockerfile", "FROM scratch\n")
    .write(".git/info/exclude", "/misc/images/c/out\n");
    repo.commit_all();
    assert_eq!(repo.mzbuild(&["lint"]).code, Some(0), "main work tree");
    let linked = repo.scratch().join("linked");
    repo.git(["worktree", "add", "-q", "--detach", linked.to_str().unwrap(), "HEAD"]);
    let mut cmd = repo.mzbuild_command(&["lint"]);
    // `--root` given twice: the last one wins.
    cmd.arg("--root").arg(&linked);
    let out = support::run(&mut cmd);
    assert_eq!(out.code, Some(0), "linked work tree\n{out}");
}

#[test]
fn lint_reports_everything_at_once() {
    let repo = fixture();
    repo.commit_all();
    let out = repo.mzbuild(&["lint"]);
    assert_eq!(out.code, Some(0), "{out}");
    repo.write(
        "misc/images/c/mzbuild.yml",
        "name: c\npubish: x\nowner: x\npre-image:\n  - type: copy\n    source: test\n    destination: out\n",
    )
    .write("misc/images/c/Dockerfile", "RUN true\n")
    .write("misc/images/d/mzbuild.yml", "name: d\n")
    .write("misc/images/d/Dockerfile", "MZFROM nope\n")
    .append("misc/images/base/Dockerfile", "MZFROM app\n");
    let out = repo.mzbuild(&["lint"]);
    let stderr = out.error();
    assert!(stderr.contains("lint: 5 problems in the work tree"), "{out}");
    expect_test::expect![[r#"
        image dependency cycle: app -> base -> app (through MZFROM lines); break it
        misc/images/c/Dockerfile: image `c`: the Dockerfile has no FROM or MZFROM line: start it with a base image
        misc/images/c/mzbuild.yml: pre-image #1 writes misc/images/c/out, which git does not ignore: once built it becomes an input and the fingerprint changes after every build; add `/out` to misc/images/c/.gitignore
        misc/images/c/mzbuild.yml: unknown key `pubish`: did you mean `publish`? (fix the spelling: it would be ignored)
        misc/images/d/Dockerfile:1: `MZFROM nope` names an image that does not exist (images: app, base, c, d); fix the name or add the image
    "#]]
    .assert_eq(&out.stdout);
    // Notes, not problems: the unknown key, and the files not committed yet.
    assert!(stderr.contains("note: misc/images/c/mzbuild.yml: unknown key `owner`"), "{out}");
    assert!(stderr.contains("note: 4 file(s) not committed yet"), "{out}");
    assert_eq!(out.stdout.matches("(an error with --strict)").count(), 0);
    // With --strict, the unknown key is a problem too, and says why.
    let strict = repo.mzbuild(&["--strict", "lint"]);
    assert!(strict.error().contains("lint: 6 problems in the work tree"), "{strict}");
    assert!(strict.stdout.contains("unknown key `owner` (ignored; known keys: name, publish, description, mainline, pre-image, build-args) (an error with --strict)"), "{strict}");
    assert_eq!(strict.stdout.matches("(an error with --strict)").count(), 1, "{strict}");
    // At a revision: the commit's files only.
    repo.commit_all();
    assert_eq!(repo.mzbuild(&["lint", "--rev", "HEAD~"]).code, Some(0));
    let out = repo.mzbuild(&["lint", "--rev", "HEAD"]);
    assert!(out.error().contains("lint: 5 problems in `HEAD`"), "{out}");
}

/// Files not yet committed are normal in a work tree: lint names them once,
/// in a note, and does not count them as problems.
#[test]
fn untracked_files_are_a_note() {
    let repo = fixture();
    // The fixture leaves misc/images/app/untracked.txt; two more.
    repo.write("misc/images/app/new.txt", "new\n").write("misc/images/base/new.txt", "new\n");
    let out = repo.mzbuild(&["lint"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "", "{out}");
    // One note for the untracked files (the fixture's `FROM ubuntu:noble`
    // gets a note of its own: a tag is not reproducible).
    let notes: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("note: ")).collect();
    assert_eq!(notes.iter().filter(|l| l.contains("not committed yet")).count(), 1, "{out}");
    assert_eq!(notes.len(), 2, "{out}");
    for f in ["misc/images/app/untracked.txt", "misc/images/app/new.txt", "misc/images/base/new.txt"] {
        assert_eq!(out.stderr.matches(f).count(), 1, "{f}\n{out}");
    }
}

/// A bare repository `remote.git` in the scratch directory, as the remote
/// `origin` of `repo`.
fn add_origin(repo: &TempRepo) {
    let remote = repo.scratch().join("remote.git");
    support::git(repo.scratch(), ["init", "-q", "--bare", remote.to_str().unwrap()]);
    repo.git(["remote", "add", "origin", remote.to_str().unwrap()]);
}

/// The 40-hex-digit words of `text` (full commit ids).
fn full_shas(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() == 40 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

#[test]
fn pre_push_hook_checks_the_pushed_commit() {
    let (repo, _registry) = fixture_with_upstream();
    add_origin(&repo);
    // A foreign hook is kept unless --force.
    let hook = repo.path(".git/hooks/pre-push");
    repo.write(".git/hooks/pre-push", "#!/bin/sh\nexit 0\n");
    let err = repo.mzbuild(&["hook", "install"]).error().to_string();
    assert!(err.contains("is not mzbuild's: keep it, or pass --force"), "{err}");
    repo.mzbuild(&["hook", "install", "--force"]).ok();
    repo.mzbuild(&["hook", "install"]).ok();
    let script = std::fs::read_to_string(&hook).unwrap();
    assert!(script.contains("mzbuild pre-push hook"), "{script}");
    // It runs the checkout's own xtask, and names no path of this machine
    // (it may be committed, in a `core.hooksPath` folder).
    assert!(script.contains("exec cargo xtask mzbuild"), "{script}");
    let exe = env!("CARGO_BIN_EXE_xtask");
    assert!(!script.contains(repo.root_str()) && !script.contains(exe) && !script.contains("target/"), "{script}");

    let out = support::push(&repo, &["-q", "origin", "HEAD:refs/heads/main"]);
    assert_eq!(out.code, Some(0), "{out}");
    // This temporary repository has no xtask of its own: `hook install`
    // recorded, in the clone's git config, the workspace whose xtask it is.
    let tool = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap();
    let recorded = support::git(repo.root(), ["config", "--get", "mzbuild.workspace"]);
    assert_eq!(recorded.trim(), tool.to_str().unwrap());
    let log = std::fs::read_to_string(repo.scratch().join("cargo.log")).unwrap();
    assert_eq!(
        log,
        format!(
            "{}: xtask mzbuild --root {} hook pre-push origin {}\n",
            tool.display(),
            repo.root_str(),
            repo.scratch().join("remote.git").display()
        ),
        "the hook runs `cargo xtask` of the recorded workspace, for the pushed repository"
    );
    // A pushed change, with a dirty work tree that must stay as it is.
    repo.append("misc/images/base/Dockerfile", "ENV X=1\n").commit_all();
    repo.write("misc/images/app/dirty.txt", "dirty\n");
    let out = support::push(&repo, &["origin", "HEAD:refs/heads/main"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("2 of 2 images differ between the remote"), "{out}");
    assert!(out.stderr.contains("1 file changed: misc/images/base/Dockerfile"), "{out}");
    assert!(!out.stderr.contains("dirty.txt"), "the work tree is not what is pushed: {out}");
    assert!(out.stderr.contains("CI will rebuild 2: app, base"), "{out}");
    assert!(repo.path("misc/images/app/dirty.txt").exists());
    assert_eq!(repo.git(["stash", "list"]), "");
    // A commit that does not lint is not pushed.
    assert_eq!(full_shas(&out.stderr), Vec::<&str>::new(), "short commit ids, as git shows them: {out}");
    repo.append("misc/images/base/Dockerfile", "MZFROM nope\n").commit_all();
    let out = support::push(&repo, &["origin", "HEAD:refs/heads/main"]);
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("`MZFROM nope` names an image that does not exist"), "{out}");
    assert!(out.stderr.contains("the push is stopped"), "{out}");
    repo.mzbuild(&["hook", "uninstall"]).ok();
    assert!(!hook.exists());
    let key = std::process::Command::new("git")
        .current_dir(repo.root())
        .args(["config", "--get", "mzbuild.workspace"])
        .output()
        .unwrap();
    assert_eq!(key.status.code(), Some(1), "uninstall left the recorded workspace in the git config");
    repo.write(".git/hooks/pre-push", "#!/bin/sh\n");
    assert!(repo.mzbuild(&["hook", "uninstall"]).error().contains("is not mzbuild's pre-push hook"));
}

/// A branch without an upstream (before its first push: how a pull request
/// starts) is compared with where it left the remote's default branch, by
/// `diff` and by the hook on its first push; each says which base it used.
#[test]
fn a_new_branch_is_compared_with_the_remote_default_branch() {
    let repo = fixture();
    let (registry, _images) = support::registry::scratch();
    repo.append("Cargo.toml", format!("\n[workspace.metadata.mzbuild]\nregistries = [{{ url = \"{registry}\" }}]\n"));
    repo.commit_all();
    add_origin(&repo);
    repo.git(["push", "-q", "origin", "HEAD:refs/heads/main"]);
    let fork = repo.git(["rev-parse", "HEAD"]).trim().to_string();
    let short = repo.git(["rev-parse", "--short", &fork]).trim().to_string();
    repo.git(["checkout", "-q", "-b", "feature"]);
    repo.append("misc/images/base/Dockerfile", "ENV X=1\n").commit_all();

    let out = repo.mzbuild(&["--arch", "x86_64", "diff"]);
    let base = format!("{short} (merge-base with `origin/main`)");
    assert!(out.stderr.contains(&format!("the branch has no upstream: comparing with {base}")), "{out}");
    assert!(out.ok().starts_with(&format!("2 of 2 images differ between {base} and the work tree:\n")), "{out}");
    assert_eq!(full_shas(&out.stdout), Vec::<&str>::new(), "{out}");
    // The remote's HEAD, when git knows it, names its default branch.
    repo.git(["remote", "set-head", "origin", "main"]);
    let out = repo.mzbuild(&["--arch", "x86_64", "diff", "--json"]);
    assert!(out.stderr.contains(&format!("comparing with {base}")), "{out}");
    assert_eq!(support::json::rows(out.ok(), "diff").len(), 2, "{out}");

    repo.mzbuild(&["hook", "install"]).ok();
    let out = support::push(&repo, &["origin", "feature"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains(&format!("pre-push: a new branch: comparing with {base}")), "{out}");
    assert!(out.stderr.contains(&format!("2 of 2 images differ between {base} and the pushed ")), "{out}");
    assert!(out.stderr.contains("CI will rebuild 2: app, base"), "{out}");
}

/// A suggested command works as typed: it names `--root` when the
/// repository is not the one a command without it would find (the
/// default root, or `$MZ_ROOT`).
#[test]
fn hints_name_the_root_when_it_is_needed() {
    let repo = fixture();
    repo.write("misc/images/base/Dockerfile", "MZFROM nope\n").commit_all();
    let out = repo.mzbuild(&["lint"]);
    let hint = format!("run `cargo xtask mzbuild --root {} lint` again", repo.root_str());
    assert!(out.error().contains(&hint), "{out}");
    let mut cmd = support::xtask_command(["mzbuild", "lint"]);
    cmd.env("MZ_ROOT", repo.root());
    support::git_home(&mut cmd, support::empty_home());
    let out = support::run(&mut cmd);
    assert!(out.error().contains("run `cargo xtask mzbuild lint` again"), "{out}");
}

/// Offline (a registry host that does not resolve): `diff` and the hook
/// answer without retrying the lookup, and say the question was not
/// checked rather than "not published".
#[test]
fn offline_diff_and_hook_say_not_checked_without_retrying() {
    let repo = fixture();
    repo.append("Cargo.toml", "\n[workspace.metadata.mzbuild]\nregistries = [{ url = \"nonexistent.invalid/mz\" }]\n");
    repo.commit_all();
    repo.append("misc/images/base/Dockerfile", "ENV X=1\n");
    let out = repo.mzbuild(&["--arch", "x86_64", "diff", "HEAD"]);
    let text = out.ok();
    assert!(text.contains("app ") && text.contains("  offline: not checked\n"), "{out}");
    assert!(!text.contains("not published"), "{out}");
    assert!(out.stderr.contains("warning: offline: not checked whether the new tags are published"), "{out}");
    assert!(out.stderr.contains("1 attempt: a failed name lookup is not retried"), "{out}");
    assert!(!out.stderr.contains("attempts"), "{out}");
    let v = support::json::rows(repo.mzbuild(&["--arch", "x86_64", "diff", "HEAD", "--json"]).ok(), "diff");
    assert_eq!(v[0]["published"], serde_json::Value::Null);

    add_origin(&repo);
    repo.git(["push", "-q", "origin", "HEAD:refs/heads/main"]);
    repo.commit_all();
    repo.mzbuild(&["hook", "install"]).ok();
    let out = support::push(&repo, &["origin", "HEAD:refs/heads/main"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("  offline: not checked\n"), "{out}");
    assert!(out.stderr.contains("CI will rebuild at most 2: app, base (offline: not checked"), "{out}");
}

fn settings(arch: Arch) -> Settings {
    Settings { profile: Profile::Optimized, arch, coverage: false, sanitizer: "none".into() }
}

/// Every image's fingerprints, in this process, with mzbuild's caches;
/// checked against a computation without them.
#[track_caller]
fn cached_and_checked(repo: &TempRepo, arch: Arch) -> (Computed, BTreeMap<String, Fingerprint>) {
    let compute = |caching: bool| {
        let r = Repo::load_with(repo.root(), false, caching).unwrap();
        let images = r.resolve(&[]).unwrap();
        fingerprint::compute(&r, &images, &settings(arch)).unwrap()
    };
    let cached = compute(true);
    let fps: BTreeMap<String, Fingerprint> = cached.fps().into_iter().map(|(n, f)| (n, f.fingerprint)).collect();
    let fresh: BTreeMap<String, Fingerprint> =
        compute(false).fps().into_iter().map(|(n, f)| (n, f.fingerprint)).collect();
    assert_eq!(fps, fresh, "with caches ({:?}) and without", cached.stats);
    (cached, fps)
}

/// The work tree's fingerprint memo answers only when it proves that
/// nothing changed: an edit that keeps size and mtime, a configuration
/// edit, a racy edit (same size, same second as recorded), a symlink whose
/// target changes, other settings; and it still saves reading what did not
/// change.
#[test]
fn fingerprint_memo_answers_only_what_it_proves() {
    let repo = fixture();
    // A symlinked input whose target is not an input itself.
    repo.write("notes/n.txt", "note\n").symlink("../../../notes/n.txt", "misc/images/app/n.link");
    repo.commit_all();
    repo.backdate_all();
    let x86 = Arch::X86_64;
    let (first, truth) = cached_and_checked(&repo, x86);
    assert!(!first.stats.memo_hit);
    let (c, fps) = cached_and_checked(&repo, x86);
    assert!(c.stats.memo_hit, "nothing changed: the memo answers ({:?})", c.stats);
    assert_eq!(fps, truth);

    // An input edited: same size, mtime put back (ctime moves on).
    let before = repo.mtime("test/data/a.td");
    repo.write("test/data/a.td", "z\n").set_mtime("test/data/a.td", before);
    let (c, edited) = cached_and_checked(&repo, x86);
    assert!(!c.stats.memo_hit);
    assert_ne!(edited, truth);
    assert!(c.stats.memo > 0 && c.stats.read < c.paths.len(), "only what changed is read: {:?}", c.stats);

    // The configuration: a copy pre-image's `matching` (the inputs change).
    repo.backdate_all();
    cached_and_checked(&repo, x86);
    let before = repo.mtime("misc/images/app/mzbuild.yml");
    let yml = std::fs::read_to_string(repo.path("misc/images/app/mzbuild.yml")).unwrap();
    repo.write(
        "misc/images/app/mzbuild.yml",
        yml.replace("destination: data\n", "destination: data\n    matching: 'a*'\n"),
    );
    repo.set_mtime("misc/images/app/mzbuild.yml", before);
    let (c, fps) = cached_and_checked(&repo, x86);
    assert!(!c.stats.memo_hit);
    assert_ne!(fps, edited);

    // A racy edit: a file written in the second the memo recorded it,
    // changed again with the same size and mtime. (Its ctime moves too;
    // the unit tests of `mzbuild::cachefile` cover an edit in the same
    // clock tick, which keeps every field.)
    repo.write("test/data/a.td", "c\n");
    let (c, _) = cached_and_checked(&repo, x86);
    assert!(!c.stats.memo_hit);
    let recorded = repo.mtime("test/data/a.td");
    repo.write("test/data/a.td", "d\n").set_mtime("test/data/a.td", recorded);
    let (c, racy) = cached_and_checked(&repo, x86);
    assert!(!c.stats.memo_hit, "the racy edit is seen");

    // A symlink's target changes, the link does not.
    repo.backdate_all();
    cached_and_checked(&repo, x86);
    assert!(cached_and_checked(&repo, x86).0.stats.memo_hit);
    let before = repo.mtime("notes/n.txt");
    repo.write("notes/n.txt", "NOTE\n").set_mtime("notes/n.txt", before);
    let (c, fps) = cached_and_checked(&repo, x86);
    assert!(!c.stats.memo_hit);
    assert_ne!(fps["app"], racy["app"]);

    // Other settings have their own memo.
    repo.backdate_all();
    let (_, x86_fps) = cached_and_checked(&repo, x86);
    let (c, arm) = cached_and_checked(&repo, Arch::Aarch64);
    assert!(!c.stats.memo_hit);
    assert_ne!(arm, x86_fps);
    assert!(cached_and_checked(&repo, Arch::Aarch64).0.stats.memo_hit);
    assert!(cached_and_checked(&repo, x86).0.stats.memo_hit);

    // A new file elsewhere changes the listing: no answer, but the inputs'
    // hashes still come from the memo.
    repo.write("notes/more.txt", "m\n");
    let (c, _) = cached_and_checked(&repo, x86);
    assert!(!c.stats.memo_hit);
    assert!(c.stats.memo > 0, "{:?}", c.stats);

    // A corrupt memo is not used (and is rewritten).
    repo.backdate_all();
    cached_and_checked(&repo, x86);
    for e in std::fs::read_dir(repo.path(".git/mzbuild/fingerprints")).unwrap() {
        let path = e.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 30] ^= 1;
        std::fs::write(&path, bytes).unwrap();
    }
    assert!(!cached_and_checked(&repo, x86).0.stats.memo_hit);
    assert!(cached_and_checked(&repo, x86).0.stats.memo_hit);
}

/// A revision's fingerprints are memoised by its tree: asked again, they
/// come from the memo; a corrupt memo is recomputed; `diff` says the same
/// with cold caches, warm caches and none.
#[test]
fn revision_memo_and_diff_from_caches() {
    let repo = fixture();
    repo.commit_all();
    let load = |no_cache: bool| {
        let options = Options {
            root: Some(repo.root().to_path_buf()),
            arch: Some("x86_64".into()),
            no_cache,
            ..Default::default()
        };
        Ctx::load(&options, repo.root().to_path_buf(), Box::new(ProcessEnv)).unwrap()
    };
    let at_head = |no_cache: bool| mzbuild::commands::diff::at_rev(&load(no_cache), "HEAD", &[]).unwrap().unwrap();
    let truth = at_head(true).fps().into_iter().map(|(n, f)| (n, f.fingerprint)).collect::<BTreeMap<_, _>>();
    let first = at_head(false);
    assert!(!first.stats.memo_hit);
    let again = at_head(false);
    assert!(again.stats.memo_hit, "{:?}", again.stats);
    for c in [&first, &again] {
        let fps: BTreeMap<_, _> = c.fps().into_iter().map(|(n, f)| (n, f.fingerprint)).collect();
        assert_eq!(fps, truth);
        assert_eq!(c.manifest("app"), first.manifest("app"));
    }
    // One image and its dependencies, from the same memo.
    let app = mzbuild::commands::diff::at_rev(&load(false), "HEAD", &["app".to_string()]).unwrap().unwrap();
    assert!(app.stats.memo_hit);
    assert_eq!(app.images.keys().collect::<Vec<_>>(), ["app", "base"]);
    // Not an image there.
    assert!(mzbuild::commands::diff::at_rev(&load(false), "HEAD", &["nope".to_string()]).unwrap().is_none());
    for e in std::fs::read_dir(repo.path(".git/mzbuild/revisions")).unwrap() {
        std::fs::write(e.unwrap().path(), "garbage").unwrap();
    }
    let recomputed = at_head(false);
    assert!(!recomputed.stats.memo_hit);
    let fps: BTreeMap<_, _> = recomputed.fps().into_iter().map(|(n, f)| (n, f.fingerprint)).collect();
    assert_eq!(fps, truth, "recomputed after a corrupt memo");

    // `diff`: a committed change and an uncommitted one.
    repo.append("misc/images/base/Dockerfile", "ENV X=1\n").commit_all();
    repo.write("misc/images/app/new.txt", "new\n").write("test/data/a.td", "A\n");
    repo.backdate_all();
    let diff = |flags: &[&str]| {
        let mut args = vec!["--arch", "x86_64"];
        args.extend_from_slice(flags);
        args.extend(["diff", "HEAD~", "--json"]);
        // The rows: the run's time differs from run to run.
        serde_json::to_string_pretty(&support::json::rows(repo.mzbuild(&args).ok(), "diff")).unwrap()
    };
    let none = diff(&["--no-cache"]);
    let _ = std::fs::remove_dir_all(repo.path(".git/mzbuild"));
    assert_eq!(diff(&[]), none, "cold");
    assert_eq!(diff(&[]), none, "warm");
    assert!(none.contains("\"misc/images/app/new.txt\"") && none.contains("\"test/data/a.td\""), "{none}");
    assert!(repo.path(".git/mzbuild/revisions").is_dir(), "the revision was memoised");
}
