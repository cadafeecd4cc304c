//! Integration tests: git parity of the file listing.
//!
//! `mzbuild::git::tree::Tree::list` must list exactly what
//! `git ls-files --cached --others --exclude-standard` lists, less tracked
//! files deleted from disk and nested repositories.
//!
//! `Tree::list` reads the global excludes file through `$HOME` of this
//! process, which the tests must not change (they run in parallel threads).
//! So the library comparisons run git with this process's environment too,
//! and the test of `core.excludesFile` goes through the binary, whose
//! environment is its own.

use std::path::Path;
use std::process::Command;

use mzbuild::git::listing::How;
use mzbuild::git::tree::Tree;
use support::{describe_inputs, git_home, run, TempRepo};

/// What git lists, in this process's environment (like `Tree::list`).
fn git_visible(root: &Path) -> Vec<String> {
    git_visible_with(root, &mut Command::new("git"))
}

/// What git lists, run as `git` (which may carry its own environment).
fn git_visible_with(root: &Path, git: &mut Command) -> Vec<String> {
    let out =
        git.current_dir(root).args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"]).output().unwrap();
    assert!(out.status.success(), "git ls-files: {}", String::from_utf8_lossy(&out.stderr));
    let mut files: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8(p.to_vec()).expect("UTF-8 path"))
        // A nested repository is listed as `dir/`.
        .filter(|p| !p.ends_with('/'))
        // Tracked files deleted from disk (or replaced by a directory) are
        // still in the index.
        .filter(|p| std::fs::symlink_metadata(root.join(p)).is_ok_and(|m| !m.is_dir()))
        .collect();
    files.sort();
    files.dedup();
    files
}

fn tree(root: &Path) -> Vec<String> {
    Tree::list(root).unwrap_or_else(|e| panic!("Tree::list({}): {e:#}", root.display())).files
}

#[track_caller]
fn assert_parity(repo: &TempRepo) -> Vec<String> {
    let want = git_visible(repo.root());
    let got = tree(repo.root());
    if got != want {
        let missing: Vec<_> = want.iter().filter(|f| !got.contains(f)).collect();
        let extra: Vec<_> = got.iter().filter(|f| !want.contains(f)).collect();
        panic!("Tree::list differs from git ls-files\n  missing: {missing:?}\n  extra:   {extra:?}");
    }
    got
}

/// Every kind of path git has an opinion about.
fn tricky_repo() -> TempRepo {
    let repo = TempRepo::new();
    repo.write(
        ".gitignore",
        "*.log\n!keep.log\ntarget/\n/build\n*.tmp\ncache/\n!target/important\n# a comment\n\\#literal-hash\n",
    )
    .write("README.md", "r\n")
    .write("deleted.txt", "soon gone\n")
    .write("forced.log", "tracked although ignored\n")
    .write("target/keep.txt", "tracked inside an ignored directory\n")
    .write("sub/tracked.txt", "t\n")
    .commit_all();
    repo.git(["add", "-f", "forced.log", "target/keep.txt"]);
    repo.git(["commit", "-q", "-m", "forced"]);
    repo.remove("deleted.txt");

    // Dotfiles: nothing special.
    repo.write(".env", "A=1\n").write(".hidden/dir/file", "h\n").write(".dockerignore", "*\n");
    // ripgrep's `.ignore`: git does not read it.
    repo.write(".ignore", "*.txt\nsecret*\n.env\nsub/\n").write("secret.md", "s\n").write("plain.txt", "p\n");
    // Root rules.
    repo.write("app.log", "ignored\n")
        .write("keep.log", "negated: visible\n")
        .write("sub/deeper/keep.log", "negated everywhere\n")
        .write("x.tmp", "ignored\n")
        .write("build/out", "ignored (anchored)\n")
        .write("sub/build/out", "visible: /build is anchored at the root\n")
        .write("cache/c", "ignored directory\n")
        .write("sub/cache", "a file, and `cache/` only matches directories\n")
        .write("target/important", "ignored: its directory is excluded\n")
        .write("#literal-hash", "ignored through an escaped #\n");
    for i in 0..300 {
        repo.write(&format!("target/debug/build/f{i}.o"), "o\n");
    }
    // Nested .gitignore files, with negations of their parents' rules.
    repo.write("sub/.gitignore", "local-only\n!important.tmp\n*.sub\n")
        .write("sub/local-only", "ignored\n")
        .write("sub/deeper/local-only", "ignored: no slash, so at every depth\n")
        .write("sub/important.tmp", "re-included by a deeper rule\n")
        .write("sub/x.sub", "ignored\n")
        .write("sub/deeper/.gitignore", "!x.sub\n/only-here\n")
        .write("sub/deeper/x.sub", "re-included\n")
        .write("sub/deeper/only-here", "ignored\n")
        .write("sub/deeper/more/only-here", "visible: anchored to sub/deeper\n")
        .write("local-only", "visible: sub/.gitignore does not reach up\n");
    // .git/info/exclude.
    repo.append(".git/info/exclude", "excluded-by-info\n")
        .write("excluded-by-info", "ignored\n")
        .write("sub/excluded-by-info", "ignored\n");
    // Staged but not committed.
    repo.write("staged.txt", "s\n");
    repo.git(["add", "staged.txt"]);
    // Untracked.
    repo.write("untracked.txt", "u\n").write("sub/deeper/untracked", "u\n");
    // Symlinks: to a file, to a directory, dangling.
    repo.symlink("README.md", "link-file").symlink("sub", "link-dir").symlink("nowhere", "link-dangling");
    // Non-ASCII names and spaces.
    repo.write("données/é.txt", "e\n").write("with space/file name.txt", "w\n").write("日本/語", "j\n");
    // An empty directory.
    repo.mkdir("emptydir").mkdir("sub/empty/deeper");
    // A nested repository with a committed and an untracked file.
    repo.write("vendor/other/committed.txt", "c\n").write("vendor/other/untracked.txt", "u\n");
    support::git(&repo.path("vendor/other"), ["init", "-q", "."]);
    support::git(&repo.path("vendor/other"), ["add", "committed.txt"]);
    support::git(&repo.path("vendor/other"), ["commit", "-q", "-m", "inner"]);
    repo.write("vendor/own.txt", "beside the nested repository\n");
    repo
}

#[test]
fn parity_with_git() {
    let repo = tricky_repo();
    let files = assert_parity(&repo);
    // And git itself saw what the fixture intends: spot checks, so that a
    // fixture that went wrong cannot make the comparison trivial.
    let expected = [
        ".dockerignore",
        ".env",
        ".gitignore",
        ".hidden/dir/file",
        ".ignore",
        "README.md",
        "données/é.txt",
        "forced.log",
        "keep.log",
        "link-dangling",
        "link-dir",
        "link-file",
        "local-only",
        "plain.txt",
        "secret.md",
        "staged.txt",
        "sub/.gitignore",
        "sub/build/out",
        "sub/cache",
        "sub/deeper/.gitignore",
        "sub/deeper/keep.log",
        "sub/deeper/more/only-here",
        "sub/deeper/untracked",
        "sub/deeper/x.sub",
        "sub/important.tmp",
        "sub/tracked.txt",
        "target/keep.txt",
        "untracked.txt",
        "vendor/own.txt",
        "with space/file name.txt",
        "日本/語",
    ];
    assert_eq!(files, expected);
}

#[test]
fn sorted_by_bytes_and_deterministic() {
    let repo = tricky_repo();
    // Enough files that the parallel walker's threads interleave.
    for i in 0..5000 {
        repo.write(&format!("many/d{}/f{i}", i % 7), "m\n");
    }
    let first = assert_parity(&repo);
    assert_eq!(first.len(), 31 + 5000);
    let mut sorted = first.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    sorted.dedup();
    assert_eq!(first, sorted);
    for _ in 0..3 {
        assert_eq!(tree(repo.root()), first);
    }
}

/// [`assert_parity`], also saying how the listing was made.
#[track_caller]
fn assert_parity_how(repo: &TempRepo) -> How {
    let want = git_visible(repo.root());
    let tree = Tree::list(repo.root()).unwrap_or_else(|e| panic!("Tree::list: {e:#}"));
    let got = &tree.files;
    if *got != want {
        let missing: Vec<_> = want.iter().filter(|f| !got.contains(f)).collect();
        let extra: Vec<_> = got.iter().filter(|f| !want.contains(f)).collect();
        panic!("Tree::list ({:?}) differs from git ls-files\n  missing: {missing:?}\n  extra:   {extra:?}", tree.how);
    }
    // Without the cache: the same.
    assert_eq!(&Tree::list_with(repo.root(), false).unwrap().files, got);
    tree.how
}

/// Make the listing cache trust the tree (old stat data), fill it, and
/// check that the next listing comes from it entirely.
#[track_caller]
fn warm(repo: &TempRepo) {
    repo.backdate_all();
    assert_parity_how(repo);
    assert_eq!(assert_parity_how(repo), How::Cached, "a warm cache lists without walking");
}

/// The listing cache (git's untracked-cache idea) lists exactly what a walk
/// lists: warm, and after each kind of change a work tree can see, whether
/// or not it leaves the cache something to reuse.
#[test]
fn parity_with_a_warm_listing_cache() {
    let repo = tricky_repo();
    for i in 0..200 {
        repo.write(&format!("many/d{}/f{i}", i % 7), "m\n");
    }
    warm(&repo);
    let old = repo.mtime("README.md");
    type Change = (&'static str, Box<dyn Fn(&TempRepo)>, bool);
    let changes: Vec<Change> = vec![
        (
            "a new untracked file deep down",
            Box::new(|r| {
                r.write("sub/deeper/more/new.txt", "n\n");
            }),
            true,
        ),
        (
            "an untracked file removed",
            Box::new(|r| {
                r.remove("untracked.txt");
            }),
            true,
        ),
        (
            "a directory removed",
            Box::new(|r| {
                std::fs::remove_dir_all(r.path("many/d3")).unwrap();
            }),
            true,
        ),
        (
            "a directory renamed",
            Box::new(|r| std::fs::rename(r.path("données"), r.path("data-renamed")).unwrap()),
            true,
        ),
        (
            "a file replaced by a directory",
            Box::new(|r| {
                r.remove("sub/cache").write("sub/cache/x", "x\n");
            }),
            true,
        ),
        (
            "a new .gitignore",
            Box::new(|r| {
                r.write("many/.gitignore", "f1*\n");
            }),
            true,
        ),
        (
            "a .gitignore edited in place: same size, mtime put back",
            Box::new(move |r| {
                let before = r.mtime("sub/.gitignore");
                r.write("sub/.gitignore", "local-onlx\n!important.tmp\n*.sub\n");
                r.set_mtime("sub/.gitignore", before);
            }),
            true,
        ),
        (
            "a new file, its directory's mtime put back",
            Box::new(move |r| {
                let before = r.mtime("many/d1");
                r.write("many/d1/sneaky", "s\n");
                r.set_mtime("many/d1", before);
            }),
            true,
        ),
        (
            "a nested repository appears",
            Box::new(|r| {
                support::git(&r.path("many/d2"), ["init", "-q", "."]);
            }),
            true,
        ),
        (
            "an ignored file added with --force",
            Box::new(|r| {
                r.git(["add", "-f", "app.log"]);
            }),
            true,
        ),
        (
            "a tracked, ignored file deleted",
            Box::new(|r| {
                r.remove("forced.log");
            }),
            true,
        ),
        (
            ".git/info/exclude edited",
            Box::new(|r| {
                r.append(".git/info/exclude", "plain.txt\n");
            }),
            false,
        ),
    ];
    for (what, change, reuses) in changes {
        change(&repo);
        let how = assert_parity_how(&repo);
        if reuses {
            assert!(matches!(how, How::Partly { reused, .. } if reused > 0) || how == How::Cached, "{what}: {how:?}");
        } else {
            assert_eq!(how, How::Walked, "{what}");
        }
        warm(&repo);
    }
    assert!(repo.mtime("README.md") == old, "the fixture keeps its backdated files");
    // A corrupt cache is not used, and is rewritten.
    let cache = repo.path(".git/mzbuild/listing");
    let mut bytes = std::fs::read(&cache).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&cache, bytes).unwrap();
    assert_eq!(assert_parity_how(&repo), How::Walked);
    assert_eq!(assert_parity_how(&repo), How::Cached);
}

/// Acting on a listing from the cache (cleaning an image's context) first
/// checks it against the work tree: a change since it was made is an
/// error, not a deletion.
#[test]
fn a_cached_listing_is_verified_before_it_is_acted_on() {
    let repo = TempRepo::new();
    repo.write("img/a", "a\n").write("other/b", "b\n").commit_all();
    warm(&repo);
    let tree = Tree::list(repo.root()).unwrap();
    assert_eq!(tree.how, How::Cached);
    tree.verify_listing(&["img", "other"]).unwrap();
    repo.write("img/new", "n\n").write("elsewhere/c", "c\n");
    let e = tree.verify_listing(&["img"]).unwrap_err().to_string();
    assert!(e.contains("the files git sees in img changed while mzbuild ran") && e.contains("img/new"), "{e}");
    tree.verify_listing(&["other"]).unwrap();
    assert!(!repo.path(".git/mzbuild/listing").exists(), "the cache is dropped");
}

#[test]
fn tracked_changes_are_seen() {
    let repo = TempRepo::new();
    repo.write(".gitignore", "*.o\n").write("a.o", "a\n").write("b.c", "b\n");
    repo.git(["add", "-f", "a.o"]);
    repo.commit_all();
    assert_eq!(assert_parity(&repo), [".gitignore", "a.o", "b.c"]);
    // Replace a tracked file by a directory of the same name: the file is
    // gone, the directory's untracked files are new.
    repo.remove("b.c").write("b.c/inner", "i\n");
    assert_eq!(assert_parity(&repo), [".gitignore", "a.o", "b.c/inner"]);
    // A tracked file replaced by a symlink is still listed.
    repo.remove("a.o").symlink(".gitignore", "a.o");
    assert_eq!(assert_parity(&repo), [".gitignore", "a.o", "b.c/inner"]);
}

#[test]
fn not_a_git_work_tree() {
    let dir = tempfile::tempdir().unwrap();
    let e = Tree::list(dir.path()).unwrap_err();
    assert!(format!("{e:#}").contains("not the top of a git work tree"), "{e:#}");
    // Inside a repository, but not its top.
    let repo = TempRepo::new();
    repo.write("sub/a", "a\n");
    let e = Tree::list(&repo.path("sub")).unwrap_err();
    assert!(format!("{e:#}").contains("not the top of a git work tree"), "{e:#}");
    // Not a directory at all.
    let e = Tree::list(&repo.path("sub/a")).unwrap_err();
    assert!(format!("{e:#}").contains("is not a directory"), "{e:#}");
}

/// A repository with one image whose context holds files that the global
/// excludes rules below ignore.
fn global_excludes_repo() -> TempRepo {
    let repo = TempRepo::new();
    repo.write("img/mzbuild.yml", "name: img\n")
        .write("img/Dockerfile", "FROM scratch\n")
        .write("img/kept.txt", "k\n")
        .write("img/junk.xyz", "ignored globally\n")
        .write("img/.DS_Store", "ignored globally\n")
        .write("img/anchored.dat", "ignored globally, by a pattern anchored at the top\n")
        .write("img/img/anchored.dat", "not matched by the anchored pattern\n")
        .write("img/tracked.xyz", "tracked, so seen anyway\n");
    repo.git(["add", "-f", "img/tracked.xyz"]);
    repo
}

const GLOBAL_RULES: &str = "*.xyz\n.DS_Store\n/img/anchored.dat\n";

const ALL: &[&str] = &[
    "img/.DS_Store",
    "img/Dockerfile",
    "img/anchored.dat",
    "img/img/anchored.dat",
    "img/junk.xyz",
    "img/kept.txt",
    "img/mzbuild.yml",
    "img/tracked.xyz",
];

const FILTERED: &[&str] =
    &["img/Dockerfile", "img/img/anchored.dat", "img/kept.txt", "img/mzbuild.yml", "img/tracked.xyz"];

/// The inputs of `img` as the binary sees them with `$HOME` = `home`, run in
/// `cwd` (global excludes patterns are anchored at the top of the work tree,
/// wherever the command runs).
fn img_inputs(repo: &TempRepo, home: &Path, cwd: &Path) -> Vec<String> {
    let mut cmd = repo.mzbuild_command(&["--arch", "x86_64", "describe", "img"]);
    git_home(&mut cmd, home).current_dir(cwd);
    describe_inputs(run(&mut cmd).ok())
}

fn git_with_home(repo: &TempRepo, home: &Path) -> Vec<String> {
    let mut git = Command::new("git");
    git_home(&mut git, home);
    git_visible_with(repo.root(), &mut git)
}

#[track_caller]
fn assert_global_rules_apply(repo: &TempRepo, home: &Path) {
    assert_eq!(git_with_home(repo, home), FILTERED);
    for cwd in [repo.root(), &repo.path("img"), &repo.path("img/img"), repo.scratch(), Path::new("/")] {
        assert_eq!(img_inputs(repo, home, cwd), FILTERED, "run in {}", cwd.display());
    }
}

#[test]
fn global_excludes_file() {
    let repo = global_excludes_repo();
    // Without global rules, everything counts.
    assert_eq!(git_with_home(&repo, support::empty_home()), ALL);
    assert_eq!(img_inputs(&repo, support::empty_home(), repo.root()), ALL);

    // core.excludesFile in ~/.gitconfig, with a `~/` path.
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join(".gitconfig"), "[core]\n\texcludesFile = ~/my-global-ignore\n").unwrap();
    std::fs::write(home.path().join("my-global-ignore"), GLOBAL_RULES).unwrap();
    assert_global_rules_apply(&repo, home.path());
}

#[test]
fn default_global_excludes_file() {
    let repo = global_excludes_repo();
    // git's default location, $HOME/.config/git/ignore, without any config.
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".config/git")).unwrap();
    std::fs::write(home.path().join(".config/git/ignore"), GLOBAL_RULES).unwrap();
    assert_global_rules_apply(&repo, home.path());
}
