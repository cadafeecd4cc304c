//! The set of files git "sees": in the working tree, tracked files that
//! still exist plus untracked files that are not ignored; at a revision, the
//! files of the commit's tree. Both are a [`Tree`], and [`Tree::read`] reads
//! a file of either, so that discovery, configuration and input rules are
//! written once for both.
//!
//! The work tree's listing comes from [`super::listing`] (a walk, git's
//! index, and a cache of both). A revision's tree comes from `git ls-tree`;
//! its contents from the object store, its symlinks resolved inside the
//! commit ([`crate::git`]); a symlink that leads out of the repository is an
//! error there (its target is not part of the commit).
//!
//! Work-tree reads ([`Tree::read`]) are logged with the file's stat data,
//! taken before the read, so that the fingerprint memo can tell later that
//! the configuration it was computed from is unchanged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use once_cell::sync::OnceCell;

use super::index::Index;
use super::listing::{self, How};
use crate::cachefile::Stat;
use crate::git::{self, GitRepo, Node, Oid, Resolved};

/// Every git-visible file, repository-relative, `/`-separated, sorted by
/// UTF-8 bytes. Directories are never listed; symlinks are listed as files
/// (as git does).
#[derive(Debug)]
pub struct Tree {
    pub root: PathBuf,
    pub files: Vec<String>,
    /// The repository's git directories and object reader, shared by every
    /// tree of one repository.
    pub git: Arc<GitRepo>,
    /// The work tree's git index, read when first needed.
    index: OnceCell<Option<Arc<Index>>>,
    /// `Some` for the tree of a commit (not the work tree).
    pub rev: Option<Arc<RevTree>>,
    /// Whether mzbuild's caches are used (and written) for this tree.
    pub caching: bool,
    /// Work tree: SHA-1 of the file list (equal ids, equal listings).
    pub listing_id: [u8; 20],
    /// Work tree: how the listing was made.
    pub how: How,
    /// When this tree was made (seconds): stat data recorded later is
    /// trusted by the caches only if older than this by two seconds.
    pub started: u32,
    /// Work tree: every file read, with its stat data (followed) taken
    /// before the read; `None` when there was nothing to read.
    reads: Mutex<Vec<(String, Option<Stat>)>>,
}

/// What a commit's tree adds: the revision as given, the commit, its tree
/// object, and for each of `Tree::files` its git mode and blob id.
#[derive(Debug)]
pub struct RevTree {
    pub rev: String,
    pub commit: String,
    pub tree: String,
    pub entries: Vec<(u32, Oid)>,
    /// Contents read ahead in one batch (configuration files), by position.
    prefetched: Mutex<HashMap<usize, Vec<u8>>>,
}

impl Tree {
    /// The work tree at `root`, using and refreshing mzbuild's caches.
    pub fn list(root: &Path) -> Result<Tree> {
        Tree::list_with(root, true)
    }

    /// The work tree at `root`; `caching: false` neither reads nor writes
    /// mzbuild's caches (a listing by walking, content hashes by reading).
    pub fn list_with(root: &Path, caching: bool) -> Result<Tree> {
        check_work_tree(root)?;
        let started = crate::cachefile::now_secs();
        let git = Arc::new(GitRepo::open_with(root, caching));
        let listed = listing::list(root, &git, caching)?;
        let index = OnceCell::new();
        if let Some(ix) = listed.index {
            let _ = index.set(Some(ix));
        }
        Ok(Tree {
            root: root.to_path_buf(),
            files: listed.files,
            git,
            index,
            rev: None,
            caching,
            listing_id: listed.id,
            how: listed.how,
            started,
            reads: Mutex::new(Vec::new()),
        })
    }

    /// Before acting on the listing below `dirs` (cleaning image contexts
    /// deletes what git does not see): when it came from the listing cache,
    /// list again by walking and require the same files there. A difference
    /// means the work tree changed during the run, or a stale cache: an
    /// error either way, before anything is deleted.
    pub fn verify_listing(&self, dirs: &[&str]) -> Result<()> {
        if self.rev.is_some() || self.how == How::Walked {
            return Ok(());
        }
        let fresh = listing::list(&self.root, &self.git, false)?;
        let fresh = Tree { files: fresh.files, ..Tree::empty_like(self) };
        for dir in dirs {
            let (now, then) = (fresh.under(dir), self.under(dir));
            if now == then {
                continue;
            }
            let added: Vec<&String> = now.iter().filter(|f| !then.contains(f)).take(3).collect();
            let gone: Vec<&String> = then.iter().filter(|f| !now.contains(f)).take(3).collect();
            let cache = listing::cache_path(&self.git);
            let _ = std::fs::remove_file(&cache);
            bail!(
                "the files git sees in {dir} changed while mzbuild ran (new: {added:?}, gone: {gone:?}), or the \
                 listing cache in {} was stale (it is removed): run the command again",
                cache.parent().unwrap_or(&cache).display()
            );
        }
        Ok(())
    }

    /// A tree with no files, of the same repository (for its methods).
    fn empty_like(other: &Tree) -> Tree {
        Tree {
            root: other.root.clone(),
            files: Vec::new(),
            git: other.git.clone(),
            index: OnceCell::new(),
            rev: None,
            caching: false,
            listing_id: [0; 20],
            how: How::Walked,
            started: other.started,
            reads: Mutex::new(Vec::new()),
        }
    }

    /// The work tree's git index (read on first use; `None` at a revision,
    /// or when git has no index this reader understands).
    pub fn index(&self) -> Option<&Index> {
        if self.rev.is_some() {
            return None;
        }
        self.index.get_or_init(|| Index::load(&self.git.git_dir).map(Arc::new)).as_deref()
    }

    /// The work-tree files read so far, with their stat data.
    pub fn reads(&self) -> Vec<(String, Option<Stat>)> {
        self.reads.lock().unwrap().clone()
    }

    /// The tree of the commit `rev` names, in the repository of `self`,
    /// read from the object store (nothing is checked out).
    pub fn at_rev(&self, rev: &str) -> Result<Tree> {
        Tree::at_rev_of(self.git.clone(), rev)
    }

    /// The tree of commit `rev` of the work tree at `root`, without
    /// listing the work tree.
    pub fn list_rev(root: &Path, rev: &str) -> Result<Tree> {
        Tree::list_rev_with(root, rev, true)
    }

    /// [`Tree::list_rev`]; `caching: false` neither reads nor writes
    /// mzbuild's caches.
    pub fn list_rev_with(root: &Path, rev: &str, caching: bool) -> Result<Tree> {
        check_work_tree(root)?;
        Tree::at_rev_of(Arc::new(GitRepo::open_with(root, caching)), rev)
    }

    fn at_rev_of(git: Arc<GitRepo>, rev: &str) -> Result<Tree> {
        let (commit, tree) = git.resolve_commit_and_tree(rev)?;
        Tree::of_commit(git, rev, commit, tree)
    }

    /// The tree of `commit` (whose tree object is `tree`), as revision
    /// `rev`.
    pub fn of_commit(git: Arc<GitRepo>, rev: &str, commit: String, tree: String) -> Result<Tree> {
        let listed = git.ls_tree(&commit).with_context(|| format!("listing the files of `{rev}`"))?;
        let mut files = Vec::with_capacity(listed.len());
        let mut entries = Vec::with_capacity(listed.len());
        for (path, mode, oid) in listed {
            files.push(path);
            entries.push((mode, oid));
        }
        let rev =
            Arc::new(RevTree { rev: rev.to_string(), commit, tree, entries, prefetched: Mutex::new(HashMap::new()) });
        Ok(Tree {
            root: git.root.clone(),
            files,
            caching: git.caching,
            git,
            index: OnceCell::new(),
            rev: Some(rev),
            listing_id: [0; 20],
            how: How::Walked,
            started: crate::cachefile::now_secs(),
            reads: Mutex::new(Vec::new()),
        })
    }

    /// Read the contents of the files `wanted` says to of a revision's tree
    /// ahead, in one batch (what discovery and the crate graph read one by
    /// one). Symlinks and unreadable blobs are left to [`Tree::read`].
    pub fn prefetch(&self, wanted: impl Fn(&str) -> bool) {
        let Some(rev) = &self.rev else { return };
        let at: Vec<usize> = (0..self.files.len())
            .filter(|&i| rev.entries[i].0 != git::GIT_MODE_SYMLINK && wanted(&self.files[i]))
            .collect();
        let oids: Vec<Oid> = at.iter().map(|&i| rev.entries[i].1).collect();
        let mut got = HashMap::with_capacity(at.len());
        let read = self.git.read_blobs(&oids, |k, bytes| {
            got.insert(at[k], bytes.to_vec());
            Ok(())
        });
        if read.is_ok() {
            rev.prefetched.lock().unwrap().extend(got);
        }
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
        let Some(rev) = &self.rev else {
            let path = self.root.join(rel);
            if self.caching {
                let stat = crate::cachefile::stat(&path);
                self.reads.lock().unwrap().push((rel.to_string(), stat));
            }
            return std::fs::read(&path).with_context(|| format!("reading {rel}"));
        };
        let at = self.position(rel).ok_or_else(|| anyhow!("{rel} does not exist in {}", self.label()))?;
        if let Some(bytes) = rev.prefetched.lock().unwrap().get(&at) {
            return Ok(bytes.clone());
        }
        let oid = self.content(at)?;
        self.git.read_blob(&oid).with_context(|| format!("reading {rel} of {}", self.label()))
    }

    /// The git mode of file #`at` of a revision's tree.
    pub fn rev_mode(&self, at: usize) -> Option<u32> {
        self.rev.as_ref().map(|r| r.entries[at].0)
    }

    /// The blob with the contents of file #`at` of a revision's tree: its
    /// own, or for a symlink, its target's (resolved inside the commit as a
    /// checkout's file system would). Dangling symlinks and symlinks to
    /// directories are errors, as in the work tree; so are symlinks that
    /// lead out of the repository: what they point at is not part of the
    /// commit, and reading it from this machine's disk would make the
    /// revision's fingerprint depend on the machine.
    pub fn content(&self, at: usize) -> Result<Oid> {
        let rev = self.rev.as_ref().expect("content() is for revision trees");
        let (mode, oid) = rev.entries[at];
        if mode != git::GIT_MODE_SYMLINK {
            return Ok(oid);
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
            Resolved::File(p) => Ok(rev.entries[self.position(&p).expect("resolved to a file")].1),
            Resolved::Outside(_) => Err(anyhow!(
                "input {link} is a symlink out of the repository (to `{target}`) in {}: its target is not part \
                 of the commit, so mzbuild cannot fingerprint the revision without reading this machine's disk; \
                 fingerprint a checkout of it instead, or replace the symlink with the file",
                self.label()
            )),
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
