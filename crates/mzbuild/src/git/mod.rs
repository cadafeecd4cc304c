//! Git plumbing that fingerprints need without a checkout: where the git
//! directories are, resolving a revision, listing a commit's tree
//! (`git ls-tree`), reading objects (one long-lived `git cat-file --batch`),
//! and resolving a commit's symlinks inside the commit, as the file system
//! of a checkout would.

pub mod blob_cache;
pub mod index;
pub mod listing;
pub mod oid;
pub mod tree;

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};

use crate::process;
use blob_cache::BlobCache;
pub use oid::{hex, parse_hex, Oid};

pub const GIT_MODE_REGULAR: u32 = 0o100644;
pub const GIT_MODE_EXECUTABLE: u32 = 0o100755;
pub const GIT_MODE_SYMLINK: u32 = 0o120000;
pub const GIT_MODE_GITLINK: u32 = 0o160000;

/// The repository behind a work tree: its git directories and a reader for
/// its object store, shared by every tree (work tree or revision) of it.
pub struct GitRepo {
    pub root: PathBuf,
    /// `.git` (or, in a linked work tree, `.git/worktrees/NAME`): the index,
    /// per-work-tree caches.
    pub git_dir: PathBuf,
    /// The directory with the object store (the same as `git_dir` except in
    /// linked work trees): the blob cache.
    pub common_dir: PathBuf,
    objects: Mutex<Option<CatFile>>,
    blobs: once_cell::sync::OnceCell<BlobCache>,
    /// Whether mzbuild's caches (here: the blob cache on disk) are used.
    pub caching: bool,
}

impl std::fmt::Debug for GitRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRepo").field("git_dir", &self.git_dir).finish()
    }
}

impl GitRepo {
    /// The git directories of the work tree at `root` (which has a `.git`
    /// directory, or a `.git` file pointing at one).
    pub fn open(root: &Path) -> GitRepo {
        GitRepo::open_with(root, true)
    }

    /// [`GitRepo::open`]; without `caching`, the blob cache lives only in
    /// memory.
    pub fn open_with(root: &Path, caching: bool) -> GitRepo {
        let dot_git = root.join(".git");
        let git_dir = match std::fs::read_to_string(&dot_git) {
            Ok(text) => match text.trim_end().strip_prefix("gitdir: ") {
                Some(p) => root.join(p),
                None => dot_git.clone(),
            },
            Err(_) => dot_git.clone(),
        };
        let common_dir = match std::fs::read_to_string(git_dir.join("commondir")) {
            Ok(text) => git_dir.join(text.trim_end()),
            Err(_) => git_dir.clone(),
        };
        GitRepo {
            root: root.to_path_buf(),
            git_dir,
            common_dir,
            objects: Mutex::new(None),
            blobs: once_cell::sync::OnceCell::new(),
            caching,
        }
    }

    /// The blob cache (blob id -> content SHA-1), loaded on first use.
    pub fn blobs(&self) -> &BlobCache {
        self.blobs.get_or_init(|| {
            if !self.caching {
                return BlobCache::in_memory();
            }
            let cache = BlobCache::load(&self.common_dir);
            if let Some(why) = &cache.ignored {
                crate::ui::warn(format_args!("ignoring the blob cache {why}; it is rebuilt"));
            }
            cache
        })
    }

    /// `git args` in the work tree; stdout, or an error with git's message.
    pub fn run(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = process::command("git")
            .args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running `git {}` (is git installed?)", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "`git {}` failed in {}: {}",
                args.join(" "),
                self.root.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// The commit `rev` names (any revision git understands).
    pub fn resolve_commit(&self, rev: &str) -> Result<String> {
        let spec = format!("{rev}^{{commit}}");
        let out = process::command("git")
            .args(["rev-parse", "--verify", "--quiet", "--end-of-options", &spec])
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .context("running `git rev-parse` (is git installed?)")?;
        if !out.status.success() {
            bail!(
                "`{rev}` is not a commit of the repository at {}: give a branch, tag or commit \
                 (`git log --oneline` lists them)",
                self.root.display()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The commit `rev` names and its tree object (one `git rev-parse`).
    pub fn resolve_commit_and_tree(&self, rev: &str) -> Result<(String, String)> {
        let commit = format!("{rev}^{{commit}}");
        let tree = format!("{rev}^{{commit}}^{{tree}}");
        let out = process::command("git")
            .args(["rev-parse", "--end-of-options", &commit, &tree])
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .context("running `git rev-parse` (is git installed?)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        // (Without --verify, which takes one revision, git echoes the
        // `--end-of-options` marker.)
        let ids: Vec<&str> = text.lines().filter(|l| *l != "--end-of-options").collect();
        match ids[..] {
            [c, t] if out.status.success() && parse_hex(c).is_some() && parse_hex(t).is_some() => {
                Ok((c.to_string(), t.to_string()))
            }
            _ => bail!(
                "`{rev}` is not a commit of the repository at {}: give a branch, tag or commit \
                 (`git log --oneline` lists them)",
                self.root.display()
            ),
        }
    }

    /// Every file of `commit`'s tree: (path, mode, blob id), submodules
    /// left out (as the work tree's listing leaves them out), sorted by
    /// path bytes.
    pub fn ls_tree(&self, commit: &str) -> Result<Vec<(String, u32, Oid)>> {
        let out = self.run(&["ls-tree", "-r", "-z", "--full-tree", commit])?;
        let mut entries = parse_ls_tree(&out)?;
        if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(entries)
    }

    /// The contents of blob `oid`.
    pub fn read_blob(&self, oid: &Oid) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_blobs(std::slice::from_ref(oid), |_, bytes| {
            out = bytes.to_vec();
            Ok(())
        })?;
        Ok(out)
    }

    /// Read every blob of `oids` through the one `git cat-file --batch`
    /// process, handing each to `f` (index into `oids`, contents) in order.
    /// Requests are written from another thread, so that long lists cannot
    /// deadlock on full pipes.
    pub fn read_blobs(&self, oids: &[Oid], mut f: impl FnMut(usize, &[u8]) -> Result<()>) -> Result<()> {
        if oids.is_empty() {
            return Ok(());
        }
        let mut guard = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(CatFile::start(&self.root)?);
        }
        let cat = guard.as_mut().expect("just started");
        let result = std::thread::scope(|s| {
            let stdin = &mut cat.stdin;
            let writer = s.spawn(move || -> std::io::Result<()> {
                for oid in oids {
                    writeln!(stdin, "{}", hex(oid))?;
                }
                stdin.flush()
            });
            let mut buf = Vec::new();
            let mut header = String::new();
            let mut read = || -> Result<()> {
                for (i, oid) in oids.iter().enumerate() {
                    header.clear();
                    cat.stdout.read_line(&mut header).context("reading from `git cat-file --batch`")?;
                    let mut parts = header.split_whitespace();
                    let (_, kind, size) = (parts.next(), parts.next(), parts.next());
                    if kind != Some("blob") {
                        bail!("git object {} is not a blob ({})", hex(oid), header.trim());
                    }
                    let size: usize = size
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| anyhow!("bad `git cat-file` header {header:?}"))?;
                    buf.resize(size + 1, 0);
                    cat.stdout.read_exact(&mut buf).context("reading from `git cat-file --batch`")?;
                    f(i, &buf[..size])?;
                }
                Ok(())
            };
            let r = read();
            let w = writer.join().expect("cat-file writer panicked");
            r.and_then(|()| w.context("writing to `git cat-file --batch`"))
        });
        if result.is_err() {
            // The stream is out of step: start afresh next time.
            *guard = None;
        }
        result
    }
}

struct CatFile {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl CatFile {
    fn start(root: &Path) -> Result<CatFile> {
        let mut child = process::command("git")
            .args(["cat-file", "--batch"])
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `git cat-file --batch` (is git installed?)")?;
        let stdin = BufWriter::new(child.stdin.take().expect("piped"));
        let stdout = BufReader::with_capacity(256 * 1024, child.stdout.take().expect("piped"));
        Ok(CatFile { child, stdin, stdout })
    }
}

impl Drop for CatFile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `git ls-tree -r -z` output: `<mode> SP <type> SP <oid> TAB <path> NUL`.
pub fn parse_ls_tree(out: &[u8]) -> Result<Vec<(String, u32, Oid)>> {
    // (Tens of thousands of records, in unoptimised builds too: one UTF-8
    // check and splits that search with `memchr`; byte-wise loops only
    // where a record is short.)
    let Ok(text) = std::str::from_utf8(out) else { return parse_ls_tree_bytes(out) };
    let mut entries = Vec::with_capacity(out.len() / 64);
    for record in text.split_terminator('\0') {
        let bad = || anyhow!("unexpected `git ls-tree` line {record:?}");
        let (meta, path) = record.split_once('\t').ok_or_else(bad)?;
        let (mode, rest) = meta.split_once(' ').ok_or_else(bad)?;
        let (kind, oid) = rest.split_once(' ').ok_or_else(bad)?;
        if kind != "blob" {
            continue;
        }
        let mode = u32::from_str_radix(mode, 8).map_err(|_| bad())?;
        let oid = parse_hex(oid).ok_or_else(bad)?;
        entries.push((path.to_string(), mode, oid));
    }
    Ok(entries)
}

/// [`parse_ls_tree`] for output that is not UTF-8: finds the first bad path.
fn parse_ls_tree_bytes(out: &[u8]) -> Result<Vec<(String, u32, Oid)>> {
    let mut entries = Vec::new();
    for record in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let bad = || anyhow!("unexpected `git ls-tree` line {:?}", String::from_utf8_lossy(record));
        let tab = record.iter().position(|b| *b == b'\t').ok_or_else(bad)?;
        let meta = std::str::from_utf8(&record[..tab]).map_err(|_| bad())?;
        let mut parts = meta.split(' ');
        let (Some(mode), Some(kind), Some(oid)) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
        if kind != "blob" {
            continue;
        }
        let mode = u32::from_str_radix(mode, 8).map_err(|_| bad())?;
        let oid = parse_hex(oid).ok_or_else(bad)?;
        let path = String::from_utf8(record[tab + 1..].to_vec()).map_err(|_| {
            anyhow!(
                "path {:?} is not valid UTF-8: mzbuild fingerprints need UTF-8 paths, rename it",
                String::from_utf8_lossy(&record[tab + 1..])
            )
        })?;
        entries.push((path, mode, oid));
    }
    Ok(entries)
}

/// Where a symlink of a commit leads.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// A file of the commit (its path).
    File(String),
    /// A directory of the commit.
    Dir(String),
    /// Nothing in the commit.
    Dangling(String),
    /// A path outside the repository (absolute, or relative to the root).
    Outside(PathBuf),
}

/// What a commit's tree holds at a path, for [`resolve_symlink`].
pub enum Node {
    File,
    Symlink(String),
    Dir,
    Missing,
}

/// Resolve the symlink at `link` (target `target`) inside a commit, as the
/// file system of a checkout would: relative to the link's directory,
/// following symlinks met on the way (also in directory components), at
/// most 40 of them. `lookup` says what the commit holds at a path.
pub fn resolve_symlink(link: &str, target: &str, lookup: &dyn Fn(&str) -> Node) -> Resolved {
    let dir = link.rsplit_once('/').map_or("", |(d, _)| d);
    if target.starts_with('/') {
        return Resolved::Outside(PathBuf::from(target));
    }
    // The components still to walk, in order; `done` is the resolved prefix.
    let mut todo: Vec<String> = target.split('/').rev().map(str::to_string).collect();
    let mut done: Vec<String> = dir.split('/').filter(|c| !c.is_empty()).map(str::to_string).collect();
    let mut hops = 0;
    while let Some(comp) = todo.pop() {
        match comp.as_str() {
            "" | "." => continue,
            ".." => {
                if done.pop().is_none() {
                    // Above the root: the rest is the file system's.
                    let mut rest: Vec<String> = vec!["..".to_string()];
                    rest.extend(todo.iter().rev().cloned());
                    return Resolved::Outside(PathBuf::from(rest.join("/")));
                }
                continue;
            }
            _ => {}
        }
        done.push(comp);
        let path = done.join("/");
        match lookup(&path) {
            Node::Dir => {}
            Node::File if todo.iter().all(|c| c.is_empty() || c == ".") => return Resolved::File(path),
            Node::File => return Resolved::Dangling(path),
            Node::Missing => return Resolved::Dangling(path),
            Node::Symlink(t) => {
                hops += 1;
                if hops > 40 {
                    return Resolved::Dangling(path);
                }
                done.pop();
                if t.starts_with('/') {
                    let mut rest = vec![t];
                    rest.extend(todo.iter().rev().cloned());
                    return Resolved::Outside(PathBuf::from(rest.join("/")));
                }
                todo.extend(t.split('/').rev().map(str::to_string));
            }
        }
    }
    let path = done.join("/");
    if path.is_empty() {
        Resolved::Dir(path)
    } else {
        match lookup(&path) {
            Node::File => Resolved::File(path),
            Node::Dir => Resolved::Dir(path),
            _ => Resolved::Dangling(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_tree_records() {
        let oid = "0123456789abcdef0123456789abcdef01234567";
        let out = format!(
            "100644 blob {oid}\ta b.txt\0100755 blob {oid}\tbin/run\0160000 commit {oid}\tsub\0120000 blob {oid}\tl\0"
        );
        let e = parse_ls_tree(out.as_bytes()).unwrap();
        let paths: Vec<(&str, u32)> = e.iter().map(|(p, m, _)| (p.as_str(), *m)).collect();
        assert_eq!(paths, [("a b.txt", 0o100644), ("bin/run", 0o100755), ("l", 0o120000)]);
        assert_eq!(hex(&e[0].2), oid);
        assert!(parse_ls_tree(b"100644 blob zz\tx\0").is_err());
        // Output that is not UTF-8 names the path.
        let mut bytes = format!("100644 blob {oid}\tbad-").into_bytes();
        bytes.extend_from_slice(b"\xff-name\0");
        let e = parse_ls_tree(&bytes).unwrap_err();
        assert!(e.to_string().contains("not valid UTF-8"), "{e}");
    }

    #[test]
    fn symlinks_resolve_inside_the_commit() {
        let lookup = |p: &str| match p {
            "a" | "a/b" | "d" => Node::Dir,
            "a/b/f" | "top" => Node::File,
            "a/l" => Node::Symlink("b".into()),
            "a/b/loop" => Node::Symlink("loop".into()),
            "d/up" => Node::Symlink("../a/b/f".into()),
            _ => Node::Missing,
        };
        let r = |link: &str, target: &str| resolve_symlink(link, target, &lookup);
        assert_eq!(r("x/link", "../a/b/f"), Resolved::File("a/b/f".into()));
        assert_eq!(r("link", "a/l/f"), Resolved::File("a/b/f".into()));
        assert_eq!(r("link", "d/up"), Resolved::File("a/b/f".into()));
        assert_eq!(r("a/link", "./b/./f"), Resolved::File("a/b/f".into()));
        assert_eq!(r("link", "a/l"), Resolved::Dir("a/b".into()));
        assert_eq!(r("link", "a/b/nope"), Resolved::Dangling("a/b/nope".into()));
        assert_eq!(r("link", "top/x"), Resolved::Dangling("top".into()));
        assert_eq!(r("a/b/link", "loop"), Resolved::Dangling("a/b/loop".into()));
        assert_eq!(r("link", "/etc/hosts"), Resolved::Outside("/etc/hosts".into()));
        assert_eq!(r("a/link", "../../x/y"), Resolved::Outside("../x/y".into()));
    }
}
