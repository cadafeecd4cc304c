//! Stat data, as git's index and mzbuild's caches keep it, and the rules
//! that decide when recorded stat data proves a file unchanged.
//!
//! Proof by `stat` follows git's racy-git rule: data recorded about a file
//! or directory whose mtime is not at least two seconds older than the run
//! that recorded it is not trusted (file-system clocks are coarse, so a
//! change right after it was read can keep its timestamp).

use std::path::Path;

/// The stat data git keeps per entry (each field truncated to 32 bits, as
/// git stores it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stat {
    pub ctime: (u32, u32),
    pub mtime: (u32, u32),
    pub dev: u32,
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u32,
}

impl Stat {
    pub fn of(meta: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            ctime: (meta.ctime() as u32, meta.ctime_nsec() as u32),
            mtime: (meta.mtime() as u32, meta.mtime_nsec() as u32),
            dev: meta.dev() as u32,
            ino: meta.ino() as u32,
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size() as u32,
        }
    }

    /// Whether a file with stat `now` is, by its stat data, the one this
    /// entry recorded: same times, inode, owner, size, file type and exec
    /// bit.
    pub fn matches(&self, now: &Stat) -> bool {
        let kind = |m: u32| m & 0o170000;
        let exec = |m: u32| m & 0o100;
        self.mtime == now.mtime
            && self.ctime == now.ctime
            && self.ino == now.ino
            && self.dev == now.dev
            && self.uid == now.uid
            && self.gid == now.gid
            && self.size == now.size
            && kind(self.mode) == kind(now.mode)
            && exec(self.mode) == exec(now.mode)
    }
}

/// Whether stat data recorded at `recorded_at` (a run's start, [`super::now_secs`])
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

/// The size of [`stat_bytes`].
pub const STAT_LEN: usize = 40;

/// Stat data as the caches store it (10 little-endian u32), so that stored
/// stat data can be compared without decoding it.
pub fn stat_bytes(s: &Stat) -> [u8; STAT_LEN] {
    let words = [s.ctime.0, s.ctime.1, s.mtime.0, s.mtime.1, s.dev, s.ino, s.mode, s.uid, s.gid, s.size];
    let mut out = [0; STAT_LEN];
    // An indexed loop: this runs for every input file, in unoptimised
    // builds too, where a chunks/zip iterator costs several times more.
    let mut i = 0;
    while i < words.len() {
        let [a, b, c, d] = words[i].to_le_bytes();
        out[4 * i] = a;
        out[4 * i + 1] = b;
        out[4 * i + 2] = c;
        out[4 * i + 3] = d;
        i += 1;
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_bytes_round_trip() {
        let stat = Stat { ctime: (1, 2), mtime: (3, 4), dev: 5, ino: 6, mode: 0o100644, uid: 7, gid: 8, size: 9 };
        assert_eq!(stat_from(&stat_bytes(&stat)), stat);
        assert_eq!(stored_mtime(&stat_bytes(&stat)), 3);
        assert_eq!(&stat_bytes(&stat)[..8], &[1, 0, 0, 0, 2, 0, 0, 0], "ctime first, little-endian");
        assert_eq!(&stat_bytes(&stat)[36..], &9u32.to_le_bytes(), "size last");
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
    fn trust_needs_two_seconds() {
        let s = |sec| Stat { mtime: (sec, 999_999_999), ..Stat::default() };
        assert!(trusted(&s(100), 102));
        assert!(!trusted(&s(101), 102));
        assert!(!trusted(&s(105), 102));
    }
}
