//! The work tree's listing (the files git sees), and its cache.
//!
//! Untracked files come from a walk with the `ignore` crate, configured to
//! behave like git rather than like ripgrep: hidden files are kept, `.ignore`
//! files are not read, `.git` and nested repositories are skipped, symlinks
//! are not followed. The one thing no walker setting reproduces is "tracked
//! wins over ignored", so tracked paths are taken from git's index (read
//! directly, else `git ls-files --cached`) and merged in.
//!
//! The cache is git's untracked-cache idea: a directory's entries can only
//! change with its mtime/ctime/inode, so a directory whose stat data and
//! `.gitignore` are unchanged (and whose ancestors' `.gitignore` files and
//! the global rules are unchanged) lists what it listed last time. Each run
//! stats every directory the walk entered (and each `.gitignore`), walks
//! only the directories that changed (the walker prunes unchanged subtrees,
//! which come from the cache), and takes the tracked files from the cache
//! while the index file is unchanged. Stat data is taken before a directory
//! is read, and stat data too recent to tell changes apart is not trusted
//! (see [`cachefile`]). The cache lives in `<git dir>/mzbuild/listing`; it
//! holds what the walk produced, so a listing from it is exactly the one a
//! fresh walk gives.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use ignore::{WalkBuilder, WalkState};
use rayon::prelude::*;
use sha1::{Digest, Sha1};

use super::index::Index;
use super::GitRepo;
use crate::cachefile::Stat;
use crate::cachefile::{self, Dec, Enc, Short};

const MAGIC: &[u8] = b"mzbuild listing v1\n";

/// A listing of the work tree.
pub struct Listed {
    /// Git-visible files, sorted by bytes.
    pub files: Vec<String>,
    /// The index, when this run read it (it is read only when the cache
    /// could not say what is tracked).
    pub index: Option<Arc<Index>>,
    /// SHA-1 of the file list: equal ids, equal listings.
    pub id: [u8; 20],
    /// How the listing was made, for the benchmark and tests.
    pub how: How,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Walked everything (no cache, or it could not be used).
    Walked,
    /// Walked the directories that changed; the rest came from the cache.
    Partly { walked: usize, reused: usize },
    /// Entirely from the cache (every directory unchanged).
    Cached,
}

/// One directory the walk entered (or found to be a nested repository).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Dir {
    /// Repository-relative, `""` for the root.
    path: String,
    /// `lstat` of the directory, taken before it was read.
    stat: Stat,
    /// Its `.gitignore` (followed), if it has one.
    ignore: Option<Stat>,
    /// A nested repository: neither it nor its files are listed.
    nested: bool,
}

/// What the walk depends on beyond the directories.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Global {
    /// `core.excludesFile` as the walker resolves it, and its stat.
    excludes: String,
    excludes_stat: Option<Stat>,
    /// `<git common dir>/info/exclude`.
    info_exclude: Option<Stat>,
}

impl Global {
    fn now(git: &GitRepo) -> Global {
        let excludes = ignore::gitignore::gitconfig_excludes_path();
        Global {
            excludes: excludes.as_ref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
            excludes_stat: excludes.as_deref().and_then(cachefile::stat),
            info_exclude: cachefile::stat(&git.common_dir.join("info").join("exclude")),
        }
    }

    fn trusted(&self, at: u32) -> bool {
        [&self.excludes_stat, &self.info_exclude].into_iter().flatten().all(|s| cachefile::trusted(s, at))
    }
}

struct Cached {
    /// When the run that wrote it started.
    at: u32,
    global: Global,
    /// The index file the tracked list came from.
    index: Stat,
    /// Sorted by path.
    dirs: Vec<Dir>,
    /// What the walk listed, sorted.
    walked: Vec<String>,
    /// Tracked files the walk did not list (ignored, deleted, submodules),
    /// sorted: checked on disk every run.
    unwalked: Vec<String>,
    /// Which of them were listed (existed as a file or symlink).
    present: Vec<bool>,
    /// The listing's id, for the same `present`.
    id: [u8; 20],
}

/// The listing cache's file.
pub fn cache_path(git: &GitRepo) -> std::path::PathBuf {
    cachefile::dir(&git.git_dir).join("listing")
}

fn load(git: &GitRepo) -> Option<Cached> {
    let path = cache_path(git);
    let bytes = cachefile::read(&path, MAGIC)?;
    match decode(&bytes) {
        Ok(c) => Some(c),
        Err(_) => {
            cachefile::corrupt(&path);
            None
        }
    }
}

fn decode(bytes: &[u8]) -> Short<Cached> {
    let mut d = Dec::open(bytes, MAGIC)?;
    let at = d.u32()?;
    let global = Global { excludes: d.string()?, excludes_stat: d.opt_stat()?, info_exclude: d.opt_stat()? };
    let index = d.stat()?;
    let paths = d.strings()?;
    let mut dirs = Vec::with_capacity(paths.len());
    for path in paths {
        let stat = d.stat()?;
        let ignore = d.opt_stat()?;
        dirs.push(Dir { path, stat, ignore, nested: d.u8()? == 1 });
    }
    let walked = d.strings()?;
    let unwalked = d.strings()?;
    let present = d.raw(unwalked.len())?.iter().map(|b| *b == 1).collect();
    let id = d.digest()?;
    if !d.done() {
        return Err(cachefile::Unusable::Corrupt);
    }
    Ok(Cached { at, global, index, dirs, walked, unwalked, present, id })
}

fn encode(c: &Cached) -> Vec<u8> {
    let mut e = Enc::new(MAGIC);
    e.u32(c.at);
    e.str(&c.global.excludes);
    e.opt_stat(&c.global.excludes_stat);
    e.opt_stat(&c.global.info_exclude);
    e.stat(&c.index);
    e.strings(c.dirs.iter().map(|d| d.path.as_str()));
    for d in &c.dirs {
        e.stat(&d.stat);
        e.opt_stat(&d.ignore);
        e.u8(u8::from(d.nested));
    }
    e.strings(c.walked.iter().map(String::as_str));
    e.strings(c.unwalked.iter().map(String::as_str));
    for p in &c.present {
        e.u8(u8::from(*p));
    }
    e.raw(&c.id);
    e.finish()
}

/// List the work tree at `root` (which [`super::tree`] checked is the top
/// of one). With `caching`, use and refresh the listing cache.
pub fn list(root: &Path, git: &GitRepo, caching: bool) -> Result<Listed> {
    let at = cachefile::now_secs();
    if !caching {
        let (walk, index) = walk_and_index(root, git, None)?;
        let mut walked = walk.files;
        walked.par_sort_unstable();
        walked.dedup();
        let unwalked = unwalked(&walked, &tracked(git, index.as_deref())?);
        let present: Vec<bool> = unwalked.iter().map(|p| is_file_or_link(root, p)).collect();
        let files = with_unwalked(walked, &unwalked, &present);
        // (The id keys caches, which are not used.)
        return Ok(Listed { id: [0; 20], files, index, how: How::Walked });
    }
    let global = Global::now(git);
    let index_stat = cachefile::stat(&git.git_dir.join("index"));
    let cached = load(git).filter(|c| c.global == global && c.global.trusted(c.at));
    let Some(cached) = cached else {
        let (walk, index) = walk_and_index(root, git, Some(Arc::new(HashSet::new())))?;
        let dirs = walk.complete.then_some(walk.dirs);
        return finish(root, git, at, global, index, walk.files, dirs, How::Walked);
    };
    let valid = validate(root, &cached);
    let index_same = index_stat.as_ref().is_some_and(|s| *s == cached.index && cachefile::trusted(s, cached.at));
    if valid.all && index_same {
        // Nothing changed that can change the listing; tracked files the
        // walk does not see may have been deleted or re-created.
        let present: Vec<bool> = cached.unwalked.iter().map(|p| is_file_or_link(root, p)).collect();
        let files = with_unwalked(cached.walked, &cached.unwalked, &present);
        let id = if present == cached.present { cached.id } else { listing_id(&files) };
        return Ok(Listed { id, files, index: None, how: How::Cached });
    }
    if valid.all {
        // Only the index changed: the walk is the cached one.
        let index = Index::load(&git.git_dir).map(Arc::new);
        return finish(root, git, at, global, index, cached.walked, Some(cached.dirs), How::Cached);
    }
    // Walk what changed; unchanged subtrees come from the cache.
    let (walk, index) = walk_and_index(root, git, Some(Arc::new(valid.prunable)))?;
    let mut files = walk.files;
    let mut dirs = walk.dirs;
    let reused = walk.reused.len();
    for r in &walk.reused {
        let prefix = format!("{r}/");
        files.extend_from_slice(prefixed(&cached.walked, &prefix));
        let at = cached.dirs.binary_search_by(|d| d.path.as_str().cmp(r)).expect("a reused directory is cached");
        dirs.push(cached.dirs[at].clone());
        let start = cached.dirs.partition_point(|d| d.path.as_str() < prefix.as_str());
        let len = cached.dirs[start..].partition_point(|d| d.path.starts_with(&prefix));
        dirs.extend_from_slice(&cached.dirs[start..start + len]);
    }
    let how = How::Partly { walked: dirs.len() - reused, reused };
    finish(root, git, at, global, index, files, walk.complete.then_some(dirs), how)
}

/// [`walk`], reading git's index meanwhile.
fn walk_and_index(
    root: &Path,
    git: &GitRepo,
    prunable: Option<Arc<HashSet<String>>>,
) -> Result<(Walk, Option<Arc<Index>>)> {
    std::thread::scope(|s| {
        let index = s.spawn(|| Index::load(&git.git_dir).map(Arc::new));
        let walk = walk(root, prunable);
        Ok((walk?, index.join().expect("reading the index panicked")))
    })
}

/// The sorted entries of `list` that start with `prefix`.
fn prefixed<'a>(list: &'a [String], prefix: &str) -> &'a [String] {
    let start = list.partition_point(|p| p.as_str() < prefix);
    let len = list[start..].partition_point(|p| p.starts_with(prefix));
    &list[start..start + len]
}

#[allow(clippy::too_many_arguments)]
fn finish(
    root: &Path,
    git: &GitRepo,
    at: u32,
    global: Global,
    index: Option<Arc<Index>>,
    mut walked: Vec<String>,
    dirs: Option<Vec<Dir>>,
    how: How,
) -> Result<Listed> {
    walked.par_sort_unstable();
    walked.dedup();
    let unwalked = unwalked(&walked, &tracked(git, index.as_deref())?);
    let present: Vec<bool> = unwalked.iter().map(|p| is_file_or_link(root, p)).collect();
    // Only an index read directly (whose stat data then names it) can
    // vouch for the tracked list later.
    if let (Some(ix), Some(mut dirs)) = (&index, dirs) {
        dirs.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        // The listing is the walk (moved, not copied) unless tracked files
        // the walk did not see are there.
        let with_extra = present.iter().any(|p| *p).then(|| with_unwalked(walked.clone(), &unwalked, &present));
        let id = listing_id(with_extra.as_deref().unwrap_or(&walked));
        let cached = Cached { at, global, index: ix.file, dirs, walked, unwalked, present, id };
        cachefile::save(&cache_path(git), &encode(&cached));
        let files = with_extra.unwrap_or(cached.walked);
        return Ok(Listed { id, files, index, how });
    }
    let files = with_unwalked(walked, &unwalked, &present);
    Ok(Listed { id: listing_id(&files), files, index, how })
}

/// The tracked paths, sorted.
fn tracked(git: &GitRepo, index: Option<&Index>) -> Result<Vec<String>> {
    let mut tracked: Vec<String> = match index {
        Some(index) => index.entries.iter().map(|e| e.path.clone()).collect(),
        None => tracked_files(git)?,
    };
    // `git ls-files` lists the index, which git keeps in byte order.
    if !tracked.is_sorted() {
        tracked.sort_unstable();
    }
    tracked.dedup();
    Ok(tracked)
}

/// The tracked files the walk did not list (ignored, deleted from disk,
/// submodules). Both lists are sorted: one merge-like pass.
fn unwalked(walked: &[String], tracked: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut w = 0;
    for path in tracked {
        while w < walked.len() && walked[w] < *path {
            w += 1;
        }
        if w < walked.len() && walked[w] == *path {
            continue;
        }
        out.push(path.clone());
    }
    out
}

/// The walk's files plus the tracked files it did not list that exist as a
/// file or symlink (`present`; tracked files deleted from disk are not
/// seen; tracked directories, gitlinks of submodules, are not files).
fn with_unwalked(walked: Vec<String>, unwalked: &[String], present: &[bool]) -> Vec<String> {
    let extra: Vec<String> = unwalked.iter().zip(present).filter(|(_, p)| **p).map(|(u, _)| u.clone()).collect();
    if extra.is_empty() {
        return walked;
    }
    let mut files = merge_sorted(walked, extra);
    files.dedup();
    files
}

fn is_file_or_link(root: &Path, rel: &str) -> bool {
    std::fs::symlink_metadata(root.join(rel)).is_ok_and(|m| m.file_type().is_file() || m.file_type().is_symlink())
}

fn listing_id(files: &[String]) -> [u8; 20] {
    let mut h = Sha1::new();
    for f in files {
        h.update(f.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// Which cached directories still list what they listed.
struct Validity {
    /// Every directory (and every `.gitignore`) is unchanged.
    all: bool,
    /// The directories whose whole subtree is unchanged, under unchanged
    /// ignore rules: the walk need not enter them.
    prunable: HashSet<String>,
}

fn validate(root: &Path, cached: &Cached) -> Validity {
    let dirs = &cached.dirs;
    // Per directory: (its own entries unchanged, its ignore rules changed).
    let checks: Vec<(bool, bool)> = dirs
        .par_iter()
        .map(|d| {
            let full = root.join(&d.path);
            let now = cachefile::lstat(&full);
            let same = now.as_ref() == Some(&d.stat) && cachefile::trusted(&d.stat, cached.at);
            let ignore_changed = match &d.ignore {
                Some(s) => {
                    let now = cachefile::stat(&full.join(".gitignore"));
                    now.as_ref() != Some(s) || !cachefile::trusted(s, cached.at)
                }
                // Creating a `.gitignore` changes the directory's mtime.
                None => !same && full.join(".gitignore").exists(),
            };
            (same && !ignore_changed, ignore_changed)
        })
        .collect();
    let mut ok: Vec<bool> = checks.iter().map(|c| c.0).collect();
    // New ignore rules in a directory: nothing below it is known.
    for (i, d) in dirs.iter().enumerate() {
        if checks[i].1 {
            let prefix = if d.path.is_empty() { String::new() } else { format!("{}/", d.path) };
            let start = dirs.partition_point(|x| x.path.as_str() < prefix.as_str());
            for (j, x) in dirs.iter().enumerate().skip(start) {
                if !x.path.starts_with(&prefix) {
                    break;
                }
                ok[j] = false;
            }
        }
    }
    let all = ok.iter().all(|o| *o);
    if all {
        return Validity { all, prunable: HashSet::new() };
    }
    // A subtree is unchanged when every directory in it is.
    let position: HashMap<&str, usize> = dirs.iter().enumerate().map(|(i, d)| (d.path.as_str(), i)).collect();
    let mut subtree_ok = ok.clone();
    for (i, d) in dirs.iter().enumerate() {
        if ok[i] {
            continue;
        }
        let mut path = d.path.as_str();
        while !path.is_empty() {
            path = path.rsplit_once('/').map_or("", |(parent, _)| parent);
            match position.get(path) {
                Some(&p) if subtree_ok[p] => subtree_ok[p] = false,
                _ => break,
            }
        }
    }
    let prunable = dirs
        .iter()
        .zip(&subtree_ok)
        .filter(|(d, ok)| **ok && !d.path.is_empty())
        .map(|(d, _)| d.path.clone())
        .collect();
    Validity { all, prunable }
}

struct Walk {
    files: Vec<String>,
    dirs: Vec<Dir>,
    /// Cached directories the walk did not enter (their subtrees are
    /// unchanged).
    reused: Vec<String>,
    /// Every directory entered is in `dirs`: the walk can be cached.
    complete: bool,
}

/// Walk the work tree. With `prunable` (for the cache), record each
/// directory's stat data and skip the directories it names.
fn walk(root: &Path, prunable: Option<Arc<HashSet<String>>>) -> Result<Walk> {
    // The root's stat data, before it is read.
    let root_stat = cachefile::lstat(root).context("reading the repository root")?;
    let dirs = Dirs {
        root: root.to_path_buf(),
        prunable,
        dirs: Arc::new(Mutex::new(vec![Dir {
            path: String::new(),
            stat: root_stat,
            ignore: cachefile::stat(&root.join(".gitignore")),
            nested: false,
        }])),
        reused: Arc::new(Mutex::new(Vec::new())),
        incomplete: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let entered = dirs.clone();
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
        // Called when an entry is found, before a directory is read: the
        // moment to take its stat data.
        .filter_entry(move |entry| entered.enter(entry))
        .build_parallel();
    let files = walk_files(root, walker)?;
    fn take<T>(m: Arc<Mutex<Vec<T>>>) -> Vec<T> {
        std::mem::take(&mut *m.lock().unwrap())
    }
    Ok(Walk {
        files,
        dirs: take(dirs.dirs),
        reused: take(dirs.reused),
        complete: !dirs.incomplete.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// What the walk records of the directories it meets, shared by its
/// threads.
#[derive(Clone)]
struct Dirs {
    root: std::path::PathBuf,
    /// Cached directories whose subtrees are unchanged: not entered.
    prunable: Option<Arc<HashSet<String>>>,
    dirs: Arc<Mutex<Vec<Dir>>>,
    reused: Arc<Mutex<Vec<String>>>,
    /// A directory the cache could not describe (no stat data, a name that
    /// is not UTF-8): this walk is not cached.
    incomplete: Arc<std::sync::atomic::AtomicBool>,
}

impl Dirs {
    /// Whether the walk enters (or lists) `entry`, recording directories.
    fn enter(&self, entry: &ignore::DirEntry) -> bool {
        if entry.file_name() == ".git" {
            return false;
        }
        let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
        if !is_dir || entry.depth() == 0 {
            return true;
        }
        let Some(prunable) = &self.prunable else {
            // A nested repository is its own world: git shows neither
            // it nor its files.
            return !entry.path().join(".git").exists();
        };
        let Some(rel) = entry.path().strip_prefix(&self.root).ok().and_then(|p| p.to_str()) else {
            self.incomplete.store(true, std::sync::atomic::Ordering::Relaxed);
            return true;
        };
        if prunable.contains(rel) {
            self.reused.lock().unwrap().push(rel.to_string());
            return false;
        }
        let Some(stat) = cachefile::lstat(entry.path()) else {
            self.incomplete.store(true, std::sync::atomic::Ordering::Relaxed);
            return true;
        };
        let nested = entry.path().join(".git").exists();
        let ignore = if nested { None } else { cachefile::stat(&entry.path().join(".gitignore")) };
        self.dirs.lock().unwrap().push(Dir { path: rel.to_string(), stat, ignore, nested });
        !nested
    }
}

/// Run the walk: the files (and symlinks) it lists, relative to `root`.
fn walk_files(root: &Path, walker: ignore::WalkParallel) -> Result<Vec<String>> {
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

/// Merge two sorted lists into one sorted list (duplicates kept).
pub fn merge_sorted(a: Vec<String>, b: Vec<String>) -> Vec<String> {
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

fn tracked_files(git: &GitRepo) -> Result<Vec<String>> {
    let out = git.run(&["ls-files", "-z", "--cached"]).context("listing the files git tracks")?;
    out.split(|b| *b == 0)
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
