//! mzbuild's own cache files (the work tree's listing, fingerprint memos):
//! where they live, and one binary format for all of them.
//!
//! A cache file is a magic line, the [`SOURCE`] stamp of the binary that
//! wrote it, the payload, and a SHA-1 of everything before it. A file that
//! does not check out (another binary, truncated, corrupt) is treated as
//! absent and rewritten; a cache never decides an answer on its own, it
//! only lets a run skip work whose inputs it proves unchanged.
//!
//! Proof by `stat` follows git's racy-git rule: data recorded about a file
//! or directory whose mtime is not at least two seconds older than the run
//! that recorded it is not trusted (file-system clocks are coarse, so a
//! change right after it was read can keep its timestamp).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha1::{Digest, Sha1};

use crate::git::index::Stat;

/// What the caches' contents depend on besides the repository: this
/// binary's mzbuild sources and the crates they use (see `build.rs`). A new
/// binary starts with empty caches, so a change to an input rule can never
/// be answered from a cache written under the old rule.
pub const SOURCE: &str = env!("MZBUILD_SOURCE_HASH");

/// The per-work-tree cache directory: `<git dir>/mzbuild`.
pub fn dir(git_dir: &Path) -> PathBuf {
    git_dir.join("mzbuild")
}

/// Seconds since the epoch, as the caches record time (32 bits, as git's
/// index does).
pub fn now_secs() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32)
}

/// Whether stat data recorded at `recorded_at` (a run's start, [`now_secs`])
/// can be trusted to tell changes apart: its mtime is at least two seconds
/// older.
pub fn trusted(stat: &Stat, recorded_at: u32) -> bool {
    mtime_trusted(stat.mtime.0, recorded_at)
}

/// [`trusted`], given the mtime's seconds.
pub fn mtime_trusted(mtime: u32, recorded_at: u32) -> bool {
    u64::from(mtime) + 2 <= u64::from(recorded_at)
}

/// Whether a file whose stat data is now `now` is, for a cache that
/// recorded `recorded` (stored by [`stat_bytes`]) in a run that started at
/// `at`, certainly unchanged: the same stat data, and old enough then to
/// tell a change apart (git's racy-git rule).
pub fn unchanged(recorded: &[u8], now: &Stat, at: u32) -> bool {
    stat_bytes(now) == recorded && mtime_trusted(stored_mtime(recorded), at)
}

/// The stat data of `path` (symlinks not followed), if it exists.
pub fn lstat(path: &Path) -> Option<Stat> {
    std::fs::symlink_metadata(path).ok().map(|m| Stat::of(&m))
}

/// The stat data of what `path` leads to (symlinks followed), if anything.
pub fn stat(path: &Path) -> Option<Stat> {
    std::fs::metadata(path).ok().map(|m| Stat::of(&m))
}

/// Whether two stat records describe the same unchanged file: every field
/// (times, inode, device, owner, size, mode).
pub fn same(a: &Option<Stat>, b: &Option<Stat>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The size of [`stat_bytes`].
pub const STAT_LEN: usize = 40;

/// Stat data as the caches store it (10 little-endian u32), so that stored
/// stat data can be compared without decoding it.
pub fn stat_bytes(s: &Stat) -> [u8; STAT_LEN] {
    // (Written out: this runs for every input file, in unoptimised builds
    // too.)
    let [a, b, c, d] = s.ctime.0.to_le_bytes();
    let [e, f, g, h] = s.ctime.1.to_le_bytes();
    let [i, j, k, l] = s.mtime.0.to_le_bytes();
    let [m, n, o, p] = s.mtime.1.to_le_bytes();
    let [q, r, t, u] = s.dev.to_le_bytes();
    let [v, w, x, y] = s.ino.to_le_bytes();
    let [z, aa, ab, ac] = s.mode.to_le_bytes();
    let [ad, ae, af, ag] = s.uid.to_le_bytes();
    let [ah, ai, aj, ak] = s.gid.to_le_bytes();
    let [al, am, an, ao] = s.size.to_le_bytes();
    [
        a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, t, u, v, w, x, y, z, aa, ab, ac, ad, ae, af, ag, ah, ai,
        aj, ak, al, am, an, ao,
    ]
}

/// The mtime seconds of stat data stored by [`stat_bytes`].
pub fn stored_mtime(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[8], b[9], b[10], b[11]])
}

/// The inverse of [`stat_bytes`].
pub fn stat_from(b: &[u8; STAT_LEN]) -> Stat {
    let w = |i: usize| u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
    Stat {
        ctime: (w(0), w(1)),
        mtime: (w(2), w(3)),
        dev: w(4),
        ino: w(5),
        mode: w(6),
        uid: w(7),
        gid: w(8),
        size: w(9),
    }
}

/// Builds a cache file.
pub struct Enc(Vec<u8>);

impl Enc {
    pub fn new(magic: &[u8]) -> Enc {
        let mut e = Enc(Vec::with_capacity(1 << 16));
        e.0.extend_from_slice(magic);
        e.str(SOURCE);
        e
    }

    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("cache sections are under 4 GiB"));
    }

    pub fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.raw(b);
    }

    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub fn stat(&mut self, s: &Stat) {
        self.raw(&stat_bytes(s));
    }

    /// Strings as one section: their count, then each ended by a NUL (read
    /// back with one UTF-8 check and one split).
    pub fn strings<'s>(&mut self, list: impl ExactSizeIterator<Item = &'s str>) {
        self.len(list.len());
        let mut blob = Vec::new();
        for s in list {
            debug_assert!(!s.contains('\0'));
            blob.extend_from_slice(s.as_bytes());
            blob.push(0);
        }
        self.bytes(&blob);
    }

    pub fn opt_stat(&mut self, s: &Option<Stat>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.stat(s);
            }
        }
    }

    /// The file's bytes: everything, then the SHA-1 of everything.
    pub fn finish(mut self) -> Vec<u8> {
        let sum = Sha1::digest(&self.0);
        self.0.extend_from_slice(&sum);
        self.0
    }
}

/// Why a cache file was not used.
#[derive(Debug, PartialEq, Eq)]
pub enum Unusable {
    /// Written by another binary (or another format): expected, silent.
    Stale,
    /// Does not check out: worth a warning.
    Corrupt,
}

/// Reads a cache file back.
pub struct Dec<'a> {
    buf: &'a [u8],
    at: usize,
}

/// A short read inside a checked file: it was written by a buggy or other
/// binary with our stamp; treated like corruption.
pub type Short<T> = std::result::Result<T, Unusable>;

impl<'a> Dec<'a> {
    /// Check the magic line, the stamp and the checksum.
    pub fn open(bytes: &'a [u8], magic: &[u8]) -> Short<Dec<'a>> {
        if !bytes.starts_with(magic) {
            return Err(Unusable::Stale);
        }
        let mut d = Dec { buf: bytes, at: magic.len() };
        if d.str().ok() != Some(SOURCE) {
            return Err(Unusable::Stale);
        }
        if bytes.len() < d.at + 20 {
            return Err(Unusable::Corrupt);
        }
        let (body, sum) = bytes.split_at(bytes.len() - 20);
        if Sha1::digest(body).as_slice() != sum {
            return Err(Unusable::Corrupt);
        }
        d.buf = body;
        Ok(d)
    }

    pub fn done(&self) -> bool {
        self.at == self.buf.len()
    }

    pub fn raw(&mut self, n: usize) -> Short<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or(Unusable::Corrupt)?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    pub fn u8(&mut self) -> Short<u8> {
        Ok(self.raw(1)?[0])
    }

    pub fn u16(&mut self) -> Short<u16> {
        Ok(u16::from_le_bytes(self.raw(2)?.try_into().unwrap()))
    }

    pub fn u32(&mut self) -> Short<u32> {
        Ok(u32::from_le_bytes(self.raw(4)?.try_into().unwrap()))
    }

    /// A length or count (written by [`Enc::len`]).
    pub fn count(&mut self) -> Short<usize> {
        Ok(self.u32()? as usize)
    }

    pub fn bytes(&mut self) -> Short<&'a [u8]> {
        let n = self.count()?;
        self.raw(n)
    }

    pub fn str(&mut self) -> Short<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Unusable::Corrupt)
    }

    pub fn string(&mut self) -> Short<String> {
        self.str().map(str::to_string)
    }

    pub fn digest(&mut self) -> Short<[u8; 20]> {
        Ok(self.raw(20)?.try_into().unwrap())
    }

    pub fn stat(&mut self) -> Short<Stat> {
        Ok(stat_from(self.raw(STAT_LEN)?.try_into().unwrap()))
    }

    /// A section written by [`Enc::strings`].
    pub fn strings(&mut self) -> Short<Vec<String>> {
        let n = self.count()?;
        let blob = self.str()?;
        if n == 0 {
            return if blob.is_empty() { Ok(Vec::new()) } else { Err(Unusable::Corrupt) };
        }
        let out: Vec<String> =
            blob.strip_suffix('\0').ok_or(Unusable::Corrupt)?.split('\0').map(String::from).collect();
        if out.len() != n {
            return Err(Unusable::Corrupt);
        }
        Ok(out)
    }

    pub fn opt_stat(&mut self) -> Short<Option<Stat>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.stat()?)),
            _ => Err(Unusable::Corrupt),
        }
    }
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
    fn round_trip_and_damage() {
        let stat = Stat { ctime: (1, 2), mtime: (3, 4), dev: 5, ino: 6, mode: 0o100644, uid: 7, gid: 8, size: 9 };
        assert_eq!(stat_from(&stat_bytes(&stat)), stat);
        assert_eq!(stored_mtime(&stat_bytes(&stat)), 3);
        let mut e = Enc::new(b"test v1\n");
        e.u8(7);
        e.u16(300);
        e.str("héllo");
        e.stat(&stat);
        e.opt_stat(&None);
        e.opt_stat(&Some(stat));
        e.strings(["a", "", "b c"].into_iter());
        e.strings(std::iter::empty());
        let bytes = e.finish();
        let mut d = Dec::open(&bytes, b"test v1\n").unwrap();
        assert_eq!(d.u8(), Ok(7));
        assert_eq!(d.u16(), Ok(300));
        assert_eq!(d.str(), Ok("héllo"));
        assert_eq!(d.stat(), Ok(stat));
        assert_eq!(d.opt_stat(), Ok(None));
        assert_eq!(d.opt_stat(), Ok(Some(stat)));
        assert_eq!(d.strings(), Ok(vec!["a".to_string(), String::new(), "b c".to_string()]));
        assert_eq!(d.strings(), Ok(vec![]));
        assert!(d.done());
        assert_eq!(d.u8(), Err(Unusable::Corrupt), "reading past the end");
        assert!(matches!(Dec::open(&bytes, b"test v2\n"), Err(Unusable::Stale)));
        for at in [9, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(Dec::open(&bad, b"test v1\n").is_err(), "flipped byte {at}");
        }
        assert!(Dec::open(&bytes[..bytes.len() - 1], b"test v1\n").is_err());
    }

    #[test]
    fn unchanged_needs_equal_and_old_stat_data() {
        let old = Stat { ctime: (50, 1), mtime: (50, 2), ino: 7, size: 3, mode: 0o100644, ..Stat::default() };
        let recorded = stat_bytes(&old);
        assert!(unchanged(&recorded, &old, 100));
        // Recorded in the second it was written (or the next): a change
        // right after could keep every field.
        assert!(!unchanged(&recorded, &old, 51));
        assert!(unchanged(&recorded, &old, 52));
        for now in [
            Stat { ctime: (60, 0), ..old },
            Stat { mtime: (50, 3), ..old },
            Stat { ino: 8, ..old },
            Stat { size: 4, ..old },
            Stat { mode: 0o100755, ..old },
        ] {
            assert!(!unchanged(&recorded, &now, 100), "{now:?}");
        }
    }

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

    #[test]
    fn trust_needs_two_seconds() {
        let s = |sec| Stat { mtime: (sec, 999_999_999), ..Stat::default() };
        assert!(trusted(&s(100), 102));
        assert!(!trusted(&s(101), 102));
        assert!(!trusted(&s(105), 102));
    }
}
