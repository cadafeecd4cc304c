//! Reading and hashing input files: each file's git-style mode and the SHA-1
//! of its contents (symlinks followed), on all cores.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use sha1::{Digest, Sha1};

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

/// The mode and content hash of one file, `rel` below `root`.
pub fn hash_file(root: &Path, rel: &str, buf: &mut [u8]) -> Result<FileHash> {
    let path = root.join(rel);
    let meta = std::fs::symlink_metadata(&path).with_context(|| format!("input file {rel} is missing"))?;
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
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o100 != 0 {
            MODE_EXECUTABLE
        } else {
            MODE_REGULAR
        }
    };
    let mut file = std::fs::File::open(&path).with_context(|| format!("opening input file {rel}"))?;
    let mut hasher = Sha1::new();
    loop {
        let n = file.read(buf).with_context(|| format!("reading input file {rel}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(FileHash { mode, digest: hasher.finalize().into() })
}
