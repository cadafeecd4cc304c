//! mzbuild's own cache files (the work tree's listing, fingerprint memos):
//! where they live, how they are read and written ([`codec`], one binary
//! format for all of them) and when stat data proves a file unchanged
//! ([`mod@stat`]).
//!
//! A cache file is a magic line, the [`SOURCE`] stamp of the binary that
//! wrote it, the payload, and a SHA-1 of everything before it. A file that
//! does not check out (another binary, truncated, corrupt) is treated as
//! absent and rewritten; a cache never decides an answer on its own, it
//! only lets a run skip work whose inputs it proves unchanged.

pub mod codec;
pub mod history;
pub mod stat;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
pub use codec::{Dec, Enc, Short, Unusable, SOURCE};
pub use stat::{lstat, stat, trusted, unchanged, Stat};

/// The per-work-tree cache directory: `<git dir>/mzbuild`.
pub fn dir(git_dir: &Path) -> PathBuf {
    git_dir.join("mzbuild")
}

/// Seconds since the epoch, as the caches record time (32 bits, as git's
/// index does).
pub fn now_secs() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32)
}

/// Read and check the cache file at `path`: `None` when it is absent or
/// unusable (a corrupt one is reported as a warning: it is rebuilt).
pub fn read(path: &Path, magic: &[u8]) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    match Dec::open(&bytes, magic) {
        Ok(_) => Some(bytes),
        Err(Unusable::Stale) => None,
        Err(Unusable::Corrupt) => {
            corrupt(path);
            None
        }
    }
}

/// Say that the cache file at `path` was ignored.
pub fn corrupt(path: &Path) {
    crate::ui::warn(format_args!("ignoring the corrupt cache {}; it is rebuilt", path.display()));
}

/// Write `bytes` to `path` atomically (a reader sees the old file or the
/// new one), creating the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("a cache file has a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes).with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Save a cache file; a failure is a warning (caches never fail a command).
pub fn save(path: &Path, bytes: &[u8]) {
    if let Err(e) = write_atomic(path, bytes) {
        crate::ui::warn_once(format_args!(
            "could not write the cache {} (results are not affected): {e:#}",
            path.display()
        ));
    }
}

/// Keep at most `keep` files in `dir`: `newest` (just written) and the
/// most recently modified others, so that per-revision and per-settings
/// caches stay bounded.
pub fn prune(dir: &Path, keep: usize, newest: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()) && e.path() != newest)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() < keep {
        return;
    }
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, path) in files.into_iter().skip(keep.saturating_sub(1)) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest_and_the_one_just_written() {
        let dir = tempfile::tempdir().unwrap();
        let at = |n: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + n);
        for (name, t) in [("a", 5), ("b", 4), ("c", 3), ("d", 2), ("new", 1)] {
            let path = dir.path().join(name);
            std::fs::write(&path, name).unwrap();
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(at(t)).unwrap();
        }
        prune(dir.path(), 3, &dir.path().join("new"));
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["a", "b", "new"]);
        prune(dir.path(), 3, &dir.path().join("new"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3, "at the bound, nothing goes");
    }
}
