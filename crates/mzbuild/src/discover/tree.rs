//! The set of files git "sees": in the working tree, tracked files that
//! still exist plus untracked files that are not ignored; at a revision, the
//! files of the commit's tree. Both are a [`Tree`], and [`Tree::read`] reads
//! a file of either, so that discovery, configuration and input rules are
//! written once for both.
//!
//! Untracked files come from a walk with the `ignore` crate, configured to
//! behave like git rather than like ripgrep: hidden files are kept, `.ignore`
//! files are not read, `.git` and nested repositories are skipped, symlinks
//! are not followed. The one thing no walker setting reproduces is "tracked
//! wins over ignored", so tracked paths are taken from git's index
//! (git's index, read directly, else `git ls-files --cached`) and merged in.
//!
//! A revision's tree comes from `git ls-tree`; its contents from the object
//! store, its symlinks resolved inside the commit ([`super::git`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use ignore::{WalkBuilder, WalkState};
use rayon::slice::ParallelSliceMut;

use super::git::{self, GitRepo, Node, Oid, Resolved};
use super::index::Index;

/// Every git-visible file, repository-relative, `/`-separated, sorted by
/// UTF-8 bytes. Directories are never listed; symlinks are listed as files
/// (as git does).
#[derive(Debug, Clone)]
pub struct Tree {
    pub root: PathBuf,
    pub files: Vec<String>,
    /// The repository's git directories and object reader, shared by every
    /// tree of one repository.
    pub git: Arc<GitRepo>,
    /// The work tree's git index, when it could be read.
    pub index: Option<Arc<Index>>,
    /// `Some` for the tree of a commit (not the work tree).
    pub rev: Option<Arc<RevTree>>,
}

/// What a commit's tree adds: the revision as given, the commit, and for
/// each of `Tree::files` its git mode and blob id.
#[derive(Debug)]
pub struct RevTree {
    pub rev: String,
    pub commit: String,
    pub entries: Vec<(u32, Oid)>,
}

/// Where the contents of a commit's file are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Blob(Oid),
    /// A symlink leading out of the repository: the file system's.
    Disk(PathBuf),
}

impl Tree {
    pub fn list(root: &Path) -> Result<Tree> {
        check_work_tree(root)?;
        let git = Arc::new(GitRepo::open(root));
        let index = Index::load(&git.git_dir).map(Arc::new);
        let (tracked, walked) = std::thread::scope(|s| {
            let tracked = s.spawn(|| match &index {
                Some(index) => Ok(index.entries.iter().map(|e| e.path.clone()).collect()),
                None => tracked_files(root),
            });
            let walked = walk(root);
            (tracked.join().expect("git ls-files thread panicked"), walked)
        });
        let mut tracked = tracked?;
        let mut walked = walked?;
        walked.par_sort_unstable();
        walked.dedup();
        // `git ls-files` lists the index, which git keeps in byte order.
        if !tracked.is_sorted() {
            tracked.sort_unstable();
        }
        // A tracked file the walk saw exists as a file or symlink: only the
        // others (tracked but ignored, deleted from disk, submodules) need a
        // look at the disk. Both lists are sorted: one merge-like pass.
        let mut extra = Vec::new();
        let mut w = 0;
        for path in tracked {
            while w < walked.len() && walked[w] < path {
                w += 1;
            }
            if w < walked.len() && walked[w] == path {
                continue;
            }
            // Tracked files deleted from disk are not seen; tracked
            // directories (gitlinks of submodules) are not files.
            match std::fs::symlink_metadata(root.join(&path)) {
                Ok(m) if m.file_type().is_file() || m.file_type().is_symlink() => extra.push(path),
                _ => {}
            }
        }
        let mut files = merge_sorted(walked, extra);
        files.dedup();
        Ok(Tree { root: root.to_path_buf(), files, git, index, rev: None })
    }

    /// The tree of the commit `rev` names, in the repository of `self`,
    /// read from the object store (nothing is checked out).
    pub fn at_rev(&self, rev: &str) -> Result<Tree> {
        Tree::at_rev_of(self.git.clone(), rev)
    }

    /// The tree of commit `rev` of the work tree at `root`, without
    /// listing the work tree.
    pub fn list_rev(root: &Path, rev: &str) -> Result<Tree> {
        check_work_tree(root)?;
        Tree::at_rev_of(Arc::new(GitRepo::open(root)), rev)
    }

    fn at_rev_of(git: Arc<GitRepo>, rev: &str) -> Result<Tree> {
        let commit = git.resolve_commit(rev)?;
        let listed = git.ls_tree(&commit).with_context(|| format!("listing the files of `{rev}`"))?;
        let mut files = Vec::with_capacity(listed.len());
        let mut entries = Vec::with_capacity(listed.len());
        for (path, mode, oid) in listed {
            files.push(path);
            entries.push((mode, oid));
        }
        let rev = Arc::new(RevTree { rev: rev.to_string(), commit, entries });
        Ok(Tree { root: git.root.clone(), files, git, index: None, rev: Some(rev) })
    }

    /// What the tree is, for messages: `the work tree` or `` `REV` ``.
    pub fn label(&self) -> String {
        match &self.rev {
            None => "the work tree".to_string(),
            Some(r) => format!("`{}`", r.rev),
        }
    }

    /// The contents of file `rel` (symlinks followed): from the disk for
    /// the work tree (whether git sees the file or not, as config files are
    /// read), from the object store at a revision.
    pub fn read(&self, rel: &str) -> Result<Vec<u8>> {
        if self.rev.is_none() {
            return std::fs::read(self.root.join(rel)).with_context(|| format!("reading {rel}"));
        }
        let at = self.position(rel).ok_or_else(|| anyhow!("{rel} does not exist in {}", self.label()))?;
        match self.content(at)? {
            Content::Blob(oid) => {
                self.git.read_blob(&oid).with_context(|| format!("reading {rel} of {}", self.label()))
            }
            Content::Disk(p) => {
                std::fs::read(self.root.join(&p)).with_context(|| format!("reading {rel} (-> {})", p.display()))
            }
        }
    }

    /// The git mode of file #`at` of a revision's tree.
    pub fn rev_mode(&self, at: usize) -> Option<u32> {
        self.rev.as_ref().map(|r| r.entries[at].0)
    }

    /// Where the contents of file #`at` of a revision's tree are: its blob,
    /// or for a symlink, its target's (resolved inside the commit as a
    /// checkout's file system would). Dangling symlinks and symlinks to
    /// directories are errors, as in the work tree.
    pub fn content(&self, at: usize) -> Result<Content> {
        let rev = self.rev.as_ref().expect("content() is for revision trees");
        let (mode, oid) = rev.entries[at];
        if mode != git::GIT_MODE_SYMLINK {
            return Ok(Content::Blob(oid));
        }
        let link = &self.files[at];
        let target = String::from_utf8_lossy(&self.git.read_blob(&oid)?).into_owned();
        let lookup = |p: &str| -> Node {
            match self.position(p) {
                Some(i) if rev.entries[i].0 == git::GIT_MODE_SYMLINK => match self.git.read_blob(&rev.entries[i].1) {
                    Ok(t) => Node::Symlink(String::from_utf8_lossy(&t).into_owned()),
                    Err(_) => Node::Missing,
                },
                Some(_) => Node::File,
                None if !self.range(p).is_empty() => Node::Dir,
                None => Node::Missing,
            }
        };
        match git::resolve_symlink(link, &target, &lookup) {
            Resolved::File(p) => Ok(Content::Blob(rev.entries[self.position(&p).expect("resolved to a file")].1)),
            Resolved::Outside(p) => {
                let full = self.root.join(&p);
                match std::fs::metadata(&full) {
                    Ok(m) if m.is_dir() => Err(to_dir(link, &target)),
                    Ok(_) => Ok(Content::Disk(p)),
                    Err(_) => Err(dangling(link, &target)),
                }
            }
            Resolved::Dir(_) => Err(to_dir(link, &target)),
            Resolved::Dangling(_) => Err(dangling(link, &target)),
        }
    }

    /// All files below `dir` (a repository-relative directory, no trailing
    /// slash; `""` is the whole tree), as a sorted slice.
    pub fn under(&self, dir: &str) -> &[String] {
        &self.files[self.range(dir)]
    }

    /// The positions in `files` of the files below `dir` (those `under`
    /// returns).
    pub fn range(&self, dir: &str) -> std::ops::Range<usize> {
        if dir.is_empty() {
            return 0..self.files.len();
        }
        let prefix = format!("{dir}/");
        let start = self.files.partition_point(|f| f.as_str() < prefix.as_str());
        let len = self.files[start..].partition_point(|f| f.starts_with(&prefix));
        start..start + len
    }

    /// The position of `path` in `files`.
    pub fn position(&self, path: &str) -> Option<usize> {
        self.files.binary_search_by(|f| f.as_str().cmp(path)).ok()
    }

    pub fn contains(&self, path: &str) -> bool {
        self.position(path).is_some()
    }
}

/// Merge two sorted lists into one sorted list (duplicates kept).
fn merge_sorted(a: Vec<String>, b: Vec<String>) -> Vec<String> {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
        if y < x {
            out.push(b.next().unwrap());
        } else {
            out.push(a.next().unwrap());
        }
    }
    out.extend(a);
    out.extend(b);
    out
}

fn dangling(rel: &str, target: &str) -> anyhow::Error {
    anyhow!("input {rel} is a dangling symlink (to `{target}`): point it at an existing file or remove it")
}

fn to_dir(rel: &str, target: &str) -> anyhow::Error {
    anyhow!(
        "input {rel} is a symlink to a directory (`{target}`): mzbuild hashes file contents; \
         replace it with the files or a symlink per file"
    )
}

fn check_work_tree(root: &Path) -> Result<()> {
    if !root.is_dir() {
        bail!("repository root {} is not a directory: pass --root DIR or set MZ_ROOT", root.display());
    }
    if !root.join(".git").exists() {
        bail!(
            "{} is not the top of a git work tree (no .git there): mzbuild decides which files \
             are inputs the way git does, so run it on a git repository (`git init`), or pass \
             --root with the repository's top directory",
            root.display()
        );
    }
    Ok(())
}

fn tracked_files(root: &Path) -> Result<Vec<String>> {
    let sh = xshell::Shell::new()?;
    sh.change_dir(root);
    let out = xshell::cmd!(sh, "git ls-files -z --cached")
        .quiet()
        .output()
        .with_context(|| format!("listing the files git tracks in {}", root.display()))?;
    if !out.status.success() {
        bail!("`git ls-files` failed in {}: {}", root.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    out.stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| {
            String::from_utf8(p.to_vec()).map_err(|_| {
                anyhow::anyhow!(
                    "tracked path {:?} is not valid UTF-8: mzbuild fingerprints need UTF-8 paths, rename it",
                    String::from_utf8_lossy(p)
                )
            })
        })
        .collect()
}

fn walk(root: &Path) -> Result<Vec<String>> {
    let walker = WalkBuilder::new(root)
        .hidden(false)
        .ignore(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(true)
        .parents(false)
        .require_git(true)
        // git anchors core.excludesFile patterns (`/secret`) at the top of
        // the work tree; `ignore` anchors them at this directory, which
        // defaults to the process's working directory.
        .current_dir(root)
        .follow_links(false)
        .filter_entry(|entry| {
            if entry.file_name() == ".git" {
                return false;
            }
            // A nested repository is its own world: git shows neither it nor
            // its files.
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            !(is_dir && entry.depth() > 0 && entry.path().join(".git").exists())
        })
        .build_parallel();
    let files = Mutex::new(Vec::new());
    let error = Mutex::new(None);
    walker.run(|| {
        let mut local = Batch { local: Vec::new(), shared: &files };
        let error = &error;
        Box::new(move |entry| {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    // An unreadable directory or a bad ignore file: remember
                    // it, finish the walk, and report it.
                    error.lock().unwrap().get_or_insert(e);
                    return WalkState::Continue;
                }
            };
            if entry.file_type().is_some_and(|t| t.is_file() || t.is_symlink()) {
                match entry.path().strip_prefix(root).ok().and_then(|p| p.to_str()) {
                    Some(rel) => local.push(rel.to_string()),
                    None => {
                        error.lock().unwrap().get_or_insert(ignore::Error::WithPath {
                            path: entry.path().to_path_buf(),
                            err: Box::new(ignore::Error::Io(std::io::Error::other(
                                "path is not valid UTF-8: mzbuild fingerprints need UTF-8 paths, rename it",
                            ))),
                        });
                    }
                }
            }
            WalkState::Continue
        })
    });
    if let Some(e) = error.into_inner().unwrap() {
        // Ignore-file syntax errors are partial errors in `ignore`; git would
        // also skip a bad pattern, so only I/O errors are fatal.
        if !matches!(e, ignore::Error::Partial(_)) {
            return Err(anyhow::Error::new(e).context(format!("walking {}", root.display())));
        }
    }
    Ok(files.into_inner().unwrap())
}

/// A walker thread's own list, merged into the shared one in chunks and when
/// the thread is done (on drop), so threads rarely contend on the lock.
struct Batch<'a> {
    local: Vec<String>,
    shared: &'a Mutex<Vec<String>>,
}

impl Batch<'_> {
    fn push(&mut self, path: String) {
        self.local.push(path);
        if self.local.len() >= 4096 {
            self.shared.lock().unwrap().append(&mut self.local);
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.shared.lock().unwrap().append(&mut self.local);
    }
}
