//! Integration tests: fingerprints at a git revision (`--rev`), read from
//! the object store, must equal checking the revision out and
//! fingerprinting it; the blob cache and git's index must never change a
//! fingerprint (racy edits included); `diff` and `explain`.

#![allow(clippy::disallowed_methods)]

mod common;

use common::{tests_dir, TempRepo};

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
    common::run(&mut cmd).ok().to_string()
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

/// Replace the blob cache with exactly `entries` (blob id -> content
/// SHA-1), in its on-disk format.
fn write_cache(repo: &TempRepo, entries: &[([u8; 20], [u8; 20])]) {
    use sha1::{Digest, Sha1};
    let mut entries = entries.to_vec();
    entries.sort();
    let mut out = b"mzbuild blob-sha1 v1\n".to_vec();
    for (oid, digest) in entries {
        out.extend(oid);
        out.extend(digest);
    }
    let sum = Sha1::digest(&out);
    out.extend(sum);
    repo.write(".git/mzbuild/blob-sha1", out);
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

fn set_mtime(repo: &TempRepo, rel: &str, t: std::time::SystemTime) {
    std::fs::File::options().write(true).open(repo.path(rel)).unwrap().set_modified(t).unwrap();
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
    set_mtime(&repo, "test/data/a.td", now - Duration::from_secs(100));
    repo.git(["update-index", "-q", "--refresh"]);
    write_cache(&repo, &[(a, [0x11; 20])]);
    assert_ne!(list(&repo, None, None), truth, "a clean entry takes its content hash from the cache");

    // The same file, stat data unchanged, but not older than the index:
    // racily clean, so it is read again.
    set_mtime(&repo, "test/data/a.td", now + Duration::from_secs(100));
    repo.git(["update-index", "-q", "--refresh"]);
    write_cache(&repo, &[(a, [0x11; 20])]);
    assert_eq!(list(&repo, None, None), truth, "a racily clean entry is re-hashed");

    // A racy edit: same size, mtime put back, in the second the index was
    // written.
    std::fs::remove_file(repo.path(".git/mzbuild/blob-sha1")).unwrap();
    set_mtime(&repo, "test/data/a.td", now);
    repo.git(["update-index", "-q", "--refresh"]);
    assert_eq!(list(&repo, None, None), truth);
    let before = std::fs::metadata(repo.path("test/data/a.td")).unwrap().modified().unwrap();
    repo.write("test/data/a.td", "z\n");
    set_mtime(&repo, "test/data/a.td", before);
    let edited = list(&repo, None, None);
    assert_ne!(edited, truth, "the racy edit is seen");
    std::fs::remove_file(repo.path(".git/mzbuild/blob-sha1")).unwrap();
    assert_eq!(list(&repo, None, None), edited, "without a cache: the same");

    // Corrupt: ignored with a warning, rebuilt; fingerprints unchanged.
    repo.write(".git/mzbuild/blob-sha1", "garbage");
    let out = repo.mzbuild(&["--arch", "x86_64", "list", "--json"]);
    assert_eq!(out.ok(), edited);
    assert!(out.stderr.contains("ignoring the blob cache") && out.stderr.contains("it is rebuilt"), "{out}");
    let out = repo.mzbuild(&["--arch", "x86_64", "list", "--json"]);
    assert_eq!(out.ok(), edited);
    assert!(!out.stderr.contains("ignoring the blob cache"), "rewritten: {out}");

    // Index version 4 (path compression) reads the same.
    repo.git(["update-index", "--index-version", "4"]);
    assert_eq!(list(&repo, None, None), edited);
    // And at a revision, the cache serves blob ids from the commit.
    assert_eq!(list(&repo, None, Some("HEAD")), list(&repo, None, Some("HEAD")));
}
