//! The set of files git "sees" in the working tree: tracked files that still
//! exist, plus untracked files that are not ignored.
//!
//! Untracked files come from a walk with the `ignore` crate, configured to
//! behave like git rather than like ripgrep: hidden files are kept, `.ignore`
//! files are not read, `.git` and nested repositories are skipped, symlinks
//! are not followed. The one thing no walker setting reproduces is "tracked
//! wins over ignored", so tracked paths are taken from git's index
//! (`git ls-files --cached`) and merged in.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use ignore::{WalkBuilder, WalkState};
use rayon::slice::ParallelSliceMut;

/// Every git-visible file, repository-relative, `/`-separated, sorted by
/// UTF-8 bytes. Directories are never listed; symlinks are listed as files
/// (as git does).
#[derive(Debug, Clone)]
pub struct Tree {
    pub root: PathBuf,
    pub files: Vec<String>,
}

impl Tree {
    pub fn list(root: &Path) -> Result<Tree> {
        check_work_tree(root)?;
        let (tracked, walked) = std::thread::scope(|s| {
            let tracked = s.spawn(|| tracked_files(root));
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
        Ok(Tree { root: root.to_path_buf(), files })
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
