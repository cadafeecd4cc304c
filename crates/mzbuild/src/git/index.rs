//! Git's index (`.git/index`, versions 2 to 4), read directly: the tracked
//! paths, and for each the blob id and the stat data git recorded when it
//! last saw the file clean. A file whose `lstat` still matches its entry,
//! and that is not "racily clean", has that blob's contents (git's own rule,
//! the one `git status` relies on), so its content hash can come from the
//! blob cache without reading it.
//!
//! Racily clean: a file modified in the same second the index was written
//! can keep its size and timestamp; git then distrusts every entry whose
//! mtime is not older than the index file (`is_racy_timestamp`), and so do
//! we. Sparse indexes (directory entries) are not read: callers fall back
//! to `git ls-files` and hashing.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use sha1::{Digest, Sha1};

use super::oid::Oid;
/// The stat data of an entry (defined with the rules that trust it).
pub use crate::cachefile::Stat;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub stat: Stat,
    pub oid: Oid,
    /// 0 for a merged entry; 1 to 3 during a conflict.
    pub stage: u8,
}

/// The parsed index, entries sorted by path (as git keeps them).
#[derive(Debug, Default)]
pub struct Index {
    pub entries: Vec<Entry>,
    /// The index file's own mtime: entries not older are racily clean.
    pub timestamp: (u32, u32),
    /// The index file's stat data, taken before it was read (git replaces
    /// the file on every write, so equal stat data means the same index).
    pub file: Stat,
}

impl Index {
    /// Read `<git_dir>/index`; `None` when there is none (a new repository)
    /// or it cannot be used (a format this reader does not know, a bad
    /// checksum): callers then ask git and hash.
    pub fn load(git_dir: &Path) -> Option<Index> {
        let path = git_dir.join("index");
        let meta = std::fs::metadata(&path).ok()?;
        let bytes = std::fs::read(&path).ok()?;
        let mut index = parse(&bytes).ok()?;
        let stat = Stat::of(&meta);
        index.timestamp = stat.mtime;
        index.file = stat;
        Some(index)
    }

    /// The merged entry of `path`.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        let i = self.entries.partition_point(|e| e.path.as_str() < path);
        self.entries.get(i).filter(|e| e.path == path && e.stage == 0)
    }

    /// Git's racy-git rule, at git's default (whole-second) precision: an
    /// entry modified in the second the index was written, or later, may
    /// have changed without changing its stat data.
    pub fn is_racy(&self, stat: &Stat) -> bool {
        self.timestamp.0 == 0 || stat.mtime.0 >= self.timestamp.0
    }

    /// The blob id of `path`, if the file on disk (with stat `now`) is
    /// certainly the one the index recorded.
    pub fn clean_oid(&self, path: &str, now: &Stat) -> Option<Oid> {
        self.clean(self.get(path)?, now)
    }

    /// The blob id of entry `e`, if the file on disk (with stat `now`) is
    /// certainly the one the index recorded.
    pub fn clean(&self, e: &Entry, now: &Stat) -> Option<Oid> {
        (e.stat.matches(now) && !self.is_racy(&e.stat)).then_some(e.oid)
    }

    /// The merged entry of each of `paths` (sorted), by one merge with the
    /// (sorted) entries rather than a search per path.
    pub fn lookup_sorted<'a>(&self, paths: impl Iterator<Item = &'a str>) -> Vec<Option<&Entry>> {
        let mut i = 0;
        paths
            .map(|p| {
                while i < self.entries.len() && self.entries[i].path.as_str() < p {
                    i += 1;
                }
                // Conflicted paths have several entries (stages 1-3): none
                // is merged.
                let e = self.entries.get(i).filter(|e| e.path == p);
                e.filter(|e| e.stage == 0)
            })
            .collect()
    }
}

/// Parse an index file (versions 2, 3 and 4; the trailing checksum is
/// verified unless git wrote it as zeros, `index.skipHash`).
pub fn parse(bytes: &[u8]) -> Result<Index> {
    if bytes.len() < 32 || &bytes[..4] != b"DIRC" {
        bail!("not a git index");
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 20);
    if trailer != [0u8; 20] && Sha1::digest(body).as_slice() != trailer {
        bail!("git index checksum mismatch");
    }
    let be32 = |at: usize| -> Result<u32> {
        body.get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
            .ok_or_else(|| anyhow!("truncated index"))
    };
    let version = be32(4)?;
    if !(2..=4).contains(&version) {
        bail!("git index version {version} is not supported");
    }
    let count = be32(8)? as usize;
    let mut entries = Vec::with_capacity(count);
    let mut at = 12;
    // v4: the previous path's bytes (a shared prefix may end inside a
    // character).
    let mut previous: Vec<u8> = Vec::new();
    let truncated = || anyhow!("truncated index");
    for _ in 0..count {
        let start = at;
        // Fixed-size fields, read from one slice (this runs for every
        // tracked file, in unoptimised builds too).
        let head = body.get(at..at + 62).ok_or_else(truncated)?;
        let w = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let stat = Stat {
            ctime: (w(0), w(4)),
            mtime: (w(8), w(12)),
            dev: w(16),
            ino: w(20),
            mode: w(24),
            uid: w(28),
            gid: w(32),
            size: w(36),
        };
        let oid: Oid = head[40..60].try_into().unwrap();
        let flags = u16::from_be_bytes([head[60], head[61]]);
        at += 62;
        if flags & 0x4000 != 0 {
            if version < 3 {
                bail!("extended flag in a version 2 index");
            }
            at += 2;
        }
        if stat.mode & 0o170000 == 0o040000 {
            bail!("sparse index (directory entries) is not supported");
        }
        // The path's length is in the flags unless it is 0xfff or more.
        let name_len = usize::from(flags & 0xfff);
        let nul_from = |from: usize| -> Result<usize> {
            let rest = body.get(from..).ok_or_else(truncated)?;
            Ok(from + rest.iter().position(|b| *b == 0).ok_or_else(truncated)?)
        };
        let path: String = if version == 4 {
            let (strip, n) = varint(body.get(at..).unwrap_or_default())?;
            at += n;
            let keep = previous.len().checked_sub(strip as usize).ok_or_else(|| anyhow!("bad path compression"))?;
            let end = match name_len.checked_sub(keep) {
                Some(suffix) if name_len < 0xfff && body.get(at + suffix) == Some(&0) => at + suffix,
                _ => nul_from(at)?,
            };
            previous.truncate(keep);
            previous.extend_from_slice(&body[at..end]);
            at = end + 1;
            String::from_utf8(previous.clone()).map_err(|_| anyhow!("non-UTF-8 path in the index"))?
        } else {
            let end =
                if name_len < 0xfff && body.get(at + name_len) == Some(&0) { at + name_len } else { nul_from(at)? };
            let p = std::str::from_utf8(&body[at..end]).map_err(|_| anyhow!("non-UTF-8 path in the index"))?;
            // Entries are padded with 1 to 8 NULs to a multiple of 8 bytes.
            at = start + ((end - start + 8) & !7);
            p.to_string()
        };
        entries.push(Entry { path, stat, oid, stage: ((flags >> 12) & 3) as u8 });
    }
    Ok(Index { entries, timestamp: (0, 0), file: Stat::default() })
}

/// Git's offset varint (index v4 path compression).
fn varint(bytes: &[u8]) -> Result<(u64, usize)> {
    let mut i = 0;
    let mut c = *bytes.first().ok_or_else(|| anyhow!("truncated index"))?;
    let mut val = u64::from(c & 127);
    while c & 128 != 0 {
        i += 1;
        c = *bytes.get(i).ok_or_else(|| anyhow!("truncated index"))?;
        val = ((val + 1) << 7) + u64::from(c & 127);
    }
    Ok((val, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 2 or 4 index with the given (path, size) entries, as git
    /// writes it.
    fn index(version: u32, files: &[(&str, u32)]) -> Vec<u8> {
        let mut out = b"DIRC".to_vec();
        out.extend(version.to_be_bytes());
        out.extend((files.len() as u32).to_be_bytes());
        let mut previous = "";
        for (path, size) in files {
            let start = out.len();
            for v in [1u32, 2, 3, 4, 5, 6, 0o100644, 1000, 1000, *size] {
                out.extend(v.to_be_bytes());
            }
            out.extend([0xab; 20]);
            out.extend((path.len() as u16).to_be_bytes());
            if version == 4 {
                let common = previous.bytes().zip(path.bytes()).take_while(|(a, b)| a == b).count();
                let strip = previous.len() - common;
                assert!(strip < 128);
                out.push(strip as u8);
                out.extend(&path.as_bytes()[common..]);
                out.push(0);
            } else {
                out.extend(path.as_bytes());
                let len = out.len() - start;
                out.extend(std::iter::repeat_n(0, 8 - len % 8));
            }
            previous = path;
        }
        let sum = Sha1::digest(&out);
        out.extend(sum);
        out
    }

    #[test]
    fn versions_2_and_4() {
        let files = [("a/b.txt", 3), ("a/bc", 10), ("z", 0), ("zz/longer/path.rs", 7)];
        for version in [2, 4] {
            let idx = parse(&index(version, &files)).unwrap();
            let got: Vec<(&str, u32)> = idx.entries.iter().map(|e| (e.path.as_str(), e.stat.size)).collect();
            assert_eq!(got, files, "version {version}");
            assert_eq!(idx.entries[1].stat.mtime, (3, 4));
            assert_eq!(idx.get("a/bc").unwrap().oid, [0xab; 20]);
            assert!(idx.get("a/b").is_none());
        }
        let mut bad = index(2, &files);
        bad[20] ^= 1;
        assert!(parse(&bad).is_err(), "a bad checksum is refused");
        assert!(parse(b"DIRX").is_err());
    }

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x05]).unwrap(), (5, 1));
        // 128 is 0x80 0x00 in git's offset encoding.
        assert_eq!(varint(&[0x80, 0x00]).unwrap(), (128, 2));
        assert!(varint(&[0x80]).is_err());
    }

    #[test]
    fn racy_entries_are_not_trusted() {
        let entry = Stat { mtime: (100, 5), size: 3, mode: 0o100644, ..Stat::default() };
        let mut idx = Index {
            entries: vec![Entry { path: "f".into(), stat: entry, oid: [1; 20], stage: 0 }],
            timestamp: (101, 0),
            file: Stat::default(),
        };
        assert_eq!(idx.clean_oid("f", &entry), Some([1; 20]));
        assert_eq!(idx.clean_oid("f", &Stat { size: 4, ..entry }), None);
        assert_eq!(idx.clean_oid("f", &Stat { mode: 0o100755, ..entry }), None);
        // Written in the same second as the file: racily clean.
        idx.timestamp = (100, 900);
        assert_eq!(idx.clean_oid("f", &entry), None);
    }
}
