//! Reading and hashing input files: each file's git-style mode and the SHA-1
//! of its contents (symlinks followed), on all cores.
//!
//! [`hash_tree`] serves both kinds of [`Tree`]. In the work tree, a file
//! that git's index records as clean (same stat data, not racily clean)
//! takes its content hash from the blob cache when it is there, and fills it
//! when it is not; other files are read. At a revision, blob ids come from
//! the commit, content hashes from the cache, and only the blobs the cache
//! lacks are read from the object store (one `git cat-file --batch`).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use sha1::{Digest, Sha1};

use crate::cachefile::Stat;
use crate::git::tree::Tree;
use crate::git::{self, Oid};

pub const MODE_REGULAR: u16 = 0o100644;
pub const MODE_EXECUTABLE: u16 = 0o100755;
pub const MODE_SYMLINK: u16 = 0o120000;

/// A hashed input file: its git-style mode and the SHA-1 of its contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHash {
    pub mode: u16,
    pub digest: [u8; 20],
}

/// Hash every path once, on all cores.
pub fn hash_files(root: &Path, paths: &[&str]) -> Result<HashMap<String, FileHash>> {
    let hashes = hash_paths(root, paths).map_err(|(_, e)| e)?;
    Ok(paths.iter().map(|p| p.to_string()).zip(hashes).collect())
}

/// Hash every path once, on all cores; the hashes in the order of `paths`.
/// An error comes with the index of the path it is about.
pub fn hash_paths(root: &Path, paths: &[&str]) -> std::result::Result<Vec<FileHash>, (usize, anyhow::Error)> {
    paths
        .par_iter()
        .enumerate()
        .map_init(|| vec![0u8; 256 * 1024], |buf, (i, p)| hash_file(root, p, buf).map_err(|e| (i, e)))
        .collect()
}

/// What hashing a tree's files found, besides the hashes: for `explain`,
/// tests and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HashStats {
    /// Content hashes taken from the blob cache.
    pub cached: usize,
    /// Content hashes taken from the fingerprint memo (same stat data).
    pub memo: usize,
    /// Files read from disk.
    pub read: usize,
    /// Blobs read from the object store.
    pub blobs: usize,
    /// The whole answer came from the fingerprint memo.
    pub memo_hit: bool,
}

/// One hashed file of a tree.
#[derive(Clone, Copy, Debug)]
pub struct Hashed {
    pub hash: FileHash,
    /// Work tree, regular files: the `lstat` data taken before the file was
    /// read (what the fingerprint memo keeps to skip it next time).
    pub stat: Option<Stat>,
}

/// What a previous run knew about a work-tree file: its hash, if the file
/// (at that tree position) still has the stat data given.
pub type Known<'a> = &'a (dyn Fn(usize, &Stat) -> Option<FileHash> + Sync);

/// Hash the files at `positions` of `tree` (work tree or revision); the
/// hashes in the order of `positions`. An error comes with the index (into
/// `positions`) of the file it is about.
pub fn hash_tree(
    tree: &Tree,
    positions: &[usize],
    known: Known<'_>,
) -> std::result::Result<(Vec<Hashed>, HashStats), (usize, anyhow::Error)> {
    if tree.rev.is_some() {
        let (hashes, stats) = hash_rev(tree, positions)?;
        return Ok((hashes.into_iter().map(|hash| Hashed { hash, stat: None }).collect(), stats));
    }
    let root = tree.root.as_path();
    let index = if tree.caching { tree.index() } else { None };
    // Each file's index entry, by one merge (positions ascend, so paths do).
    let entries = index.map(|ix| ix.lookup_sorted(positions.iter().map(|&at| tree.files[at].as_str())));
    let blobs = index.map(|_| tree.git.blobs());
    #[derive(Clone, Copy)]
    enum From {
        Memo,
        Cache,
        Read,
    }
    let results: Vec<(Hashed, From, Option<Oid>)> = positions
        .par_iter()
        .enumerate()
        .map_init(
            || vec![0u8; 256 * 1024],
            |buf, (i, &at)| {
                let rel = tree.files[at].as_str();
                let path = root.join(rel);
                let meta = std::fs::symlink_metadata(&path)
                    .with_context(|| format!("input file {rel} is missing"))
                    .map_err(|e| (i, e))?;
                let is_file = meta.file_type().is_file();
                let stat = is_file.then(|| Stat::of(&meta));
                if let Some(st) = &stat {
                    if let Some(hash) = known(at, st) {
                        return Ok((Hashed { hash, stat }, From::Memo, None));
                    }
                }
                let oid = match (index, &entries, &stat) {
                    (Some(ix), Some(entries), Some(st)) => entries[i].and_then(|e| ix.clean(e, st)),
                    _ => None,
                };
                if let Some(digest) = oid.and_then(|o| blobs?.get(&o)) {
                    return Ok((Hashed { hash: FileHash { mode: file_mode(&meta), digest }, stat }, From::Cache, None));
                }
                let h = hash_with_meta(root, rel, &meta, buf).map_err(|e| (i, e))?;
                // The blob cache keeps `oid -> digest` forever: only when
                // the file did not change while it was read (its stat data
                // is still what made the index call it clean) are the bytes
                // read the blob's.
                let oid = oid.filter(|_| crate::cachefile::lstat(&path) == stat);
                Ok((Hashed { hash: h, stat }, From::Read, oid))
            },
        )
        .collect::<std::result::Result<_, _>>()?;
    // New blob hashes, in one batch (not one lock per file).
    if let Some(blobs) = blobs {
        blobs.insert_many(results.iter().filter_map(|(h, _, oid)| Some(((*oid)?, h.hash.digest))));
    }
    let mut stats = HashStats::default();
    for (_, from, _) in &results {
        match from {
            From::Memo => stats.memo += 1,
            From::Cache => stats.cached += 1,
            From::Read => stats.read += 1,
        }
    }
    Ok((results.into_iter().map(|r| r.0).collect(), stats))
}

fn hash_rev(
    tree: &Tree,
    positions: &[usize],
) -> std::result::Result<(Vec<FileHash>, HashStats), (usize, anyhow::Error)> {
    let blobs = tree.git.blobs();
    let label = tree.label();

    let mut out = Vec::with_capacity(positions.len());
    let mut wanted: Vec<(usize, Oid)> = Vec::new();
    let mut stats = HashStats::default();
    for (i, &at) in positions.iter().enumerate() {
        let mode = match tree.rev_mode(at).expect("a revision tree") {
            git::GIT_MODE_SYMLINK => MODE_SYMLINK,
            git::GIT_MODE_EXECUTABLE => MODE_EXECUTABLE,
            _ => MODE_REGULAR,
        };
        let oid = tree.content(at).map_err(|e| (i, e.context(format!("at {label}"))))?;
        let digest = match blobs.get(&oid) {
            Some(d) => {
                stats.cached += 1;
                d
            }
            None => {
                wanted.push((i, oid));
                [0; 20]
            }
        };
        out.push(FileHash { mode, digest });
    }
    let mut oids: Vec<Oid> = wanted.iter().map(|w| w.1).collect();
    oids.sort_unstable();
    oids.dedup();
    stats.blobs = oids.len();
    let mut digests = Vec::with_capacity(oids.len());
    tree.git
        .read_blobs(&oids, |k, bytes| {
            let d: [u8; 20] = Sha1::digest(bytes).into();
            blobs.insert(oids[k], d);
            digests.push(d);
            Ok(())
        })
        .map_err(|e| (wanted.first().map_or(0, |w| w.0), e.context(format!("reading the files of {label}"))))?;
    for (i, oid) in wanted {
        let k = oids.binary_search(&oid).expect("requested");
        out[i].digest = digests[k];
    }
    Ok((out, stats))
}

fn file_mode(meta: &std::fs::Metadata) -> u16 {
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o100 != 0 {
        MODE_EXECUTABLE
    } else {
        MODE_REGULAR
    }
}

fn hash_reader(path: &Path, rel: &str, buf: &mut [u8]) -> Result<[u8; 20]> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening input file {rel}"))?;
    let mut hasher = Sha1::new();
    loop {
        let n = file.read(buf).with_context(|| format!("reading input file {rel}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// The mode and content hash of one file, `rel` below `root`.
pub fn hash_file(root: &Path, rel: &str, buf: &mut [u8]) -> Result<FileHash> {
    let path = root.join(rel);
    let meta = std::fs::symlink_metadata(&path).with_context(|| format!("input file {rel} is missing"))?;
    hash_with_meta(root, rel, &meta, buf)
}

fn hash_with_meta(root: &Path, rel: &str, meta: &std::fs::Metadata, buf: &mut [u8]) -> Result<FileHash> {
    let path = root.join(rel);
    let mode = if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_default();
        match std::fs::metadata(&path) {
            Err(_) => {
                bail!("input {rel} is a dangling symlink (to `{target}`): point it at an existing file or remove it")
            }
            Ok(m) if m.is_dir() => bail!(
                "input {rel} is a symlink to a directory (`{target}`): mzbuild hashes file contents; \
                 replace it with the files or a symlink per file"
            ),
            Ok(_) => MODE_SYMLINK,
        }
    } else {
        file_mode(meta)
    };
    Ok(FileHash { mode, digest: hash_reader(&path, rel, buf)? })
}
