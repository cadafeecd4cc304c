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

use crate::discover::git::{self, Oid};
use crate::discover::index::Stat;
use crate::discover::tree::{Content, Tree};

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

/// What hashing a tree's files found, besides the hashes: for `explain`
/// and the benchmark.
#[derive(Debug, Default, Clone, Copy)]
pub struct HashStats {
    /// Content hashes taken from the blob cache.
    pub cached: usize,
    /// Files read from disk.
    pub read: usize,
    /// Blobs read from the object store.
    pub blobs: usize,
}

/// Hash the files at `positions` of `tree` (work tree or revision); the
/// hashes in the order of `positions`. An error comes with the index (into
/// `positions`) of the file it is about.
pub fn hash_tree(
    tree: &Tree,
    positions: &[usize],
) -> std::result::Result<(Vec<FileHash>, HashStats), (usize, anyhow::Error)> {
    let blobs = tree.git.blobs();
    if tree.rev.is_some() {
        return hash_rev(tree, positions);
    }
    let root = tree.root.as_path();
    let index = tree.index.as_deref();
    let results: Vec<(FileHash, bool)> = positions
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
                let oid =
                    index.filter(|_| meta.file_type().is_file()).and_then(|ix| ix.clean_oid(rel, &Stat::of(&meta)));
                if let Some(digest) = oid.and_then(|o| blobs.get(&o)) {
                    return Ok((FileHash { mode: file_mode(&meta), digest }, true));
                }
                let h = hash_with_meta(root, rel, &meta, buf).map_err(|e| (i, e))?;
                if let Some(oid) = oid {
                    blobs.insert(oid, h.digest);
                }
                Ok((h, false))
            },
        )
        .collect::<std::result::Result<_, _>>()?;
    let cached = results.iter().filter(|r| r.1).count();
    let stats = HashStats { cached, read: results.len() - cached, blobs: 0 };
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
    let mut buf = vec![0u8; 256 * 1024];
    for (i, &at) in positions.iter().enumerate() {
        let mode = match tree.rev_mode(at).expect("a revision tree") {
            git::GIT_MODE_SYMLINK => MODE_SYMLINK,
            git::GIT_MODE_EXECUTABLE => MODE_EXECUTABLE,
            _ => MODE_REGULAR,
        };
        let content = tree.content(at).map_err(|e| (i, e.context(format!("at {label}"))))?;
        let digest = match content {
            Content::Blob(oid) => match blobs.get(&oid) {
                Some(d) => {
                    stats.cached += 1;
                    d
                }
                None => {
                    wanted.push((i, oid));
                    [0; 20]
                }
            },
            Content::Disk(p) => {
                stats.read += 1;
                hash_reader(&tree.root.join(&p), &tree.files[at], &mut buf).map_err(|e| (i, e))?
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
