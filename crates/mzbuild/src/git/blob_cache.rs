//! The blob cache: git blob id -> SHA-1 of the blob's raw contents (what a
//! fingerprint hashes; git's blob id hashes a header too). Blob ids are
//! content addresses, so an entry is true forever and for every work tree of
//! the repository; it lives beside the object store, in
//! `<git common dir>/mzbuild/blob-sha1.v2`.
//!
//! The file is the sorted records (blob id, content SHA-1, the day it was
//! last used) behind a magic line and before a SHA-1 of everything else:
//! looked up in place by binary search, so loading costs one read. A file
//! that does not check out (truncated, corrupt) is ignored and rewritten;
//! without a git directory to write to, the cache lives only in memory.
//!
//! Bounded: an entry not used for [`MAX_AGE_DAYS`] days is dropped when the
//! file is next written, and the file never holds more than [`MAX_ENTRIES`]
//! entries (the least recently used go first). Using an entry refreshes its
//! day at most once a day, so a run that only reads writes nothing. (Earlier
//! versions wrote an unbounded `blob-sha1` beside it, which binaries of this
//! version neither read nor remove.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use anyhow::Result;
use sha1::{Digest, Sha1};

use super::oid::Oid;

const MAGIC: &[u8] = b"mzbuild blob-sha1 v2\n";
/// Blob id, content SHA-1, day of last use (u32, days since 1970).
const RECORD: usize = 44;
/// Entries unused for longer are dropped.
pub const MAX_AGE_DAYS: u32 = 30;
/// The most entries the file holds (~44 MiB).
pub const MAX_ENTRIES: usize = 1 << 20;
pub const FILE_NAME: &str = "blob-sha1.v2";

#[derive(Default)]
pub struct BlobCache {
    path: Option<PathBuf>,
    /// The records of the file, sorted by blob id.
    stored: Vec<u8>,
    /// One bit per stored record: used by this run.
    used: Vec<AtomicU64>,
    added: RwLock<BTreeMap<Oid, [u8; 20]>>,
    /// Why the file on disk was not used, if it was not.
    pub ignored: Option<String>,
}

/// Today, as the cache counts days.
fn today() -> u32 {
    crate::cachefile::now_secs() / 86_400
}

impl BlobCache {
    /// The cache of the repository whose common git directory is
    /// `common_dir`.
    pub fn load(common_dir: &Path) -> BlobCache {
        let path = crate::cachefile::dir(common_dir).join(FILE_NAME);
        let mut cache = BlobCache { path: Some(path.clone()), ..BlobCache::default() };
        match std::fs::read(&path) {
            Ok(bytes) => match check(&bytes) {
                Ok(()) => {
                    cache.stored = bytes;
                    cache.stored.truncate(cache.stored.len() - 20);
                    cache.stored.drain(..MAGIC.len());
                    let words = (cache.stored.len() / RECORD).div_ceil(64);
                    cache.used = (0..words).map(|_| AtomicU64::new(0)).collect();
                }
                Err(why) => cache.ignored = Some(format!("{}: {why}", path.display())),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => cache.ignored = Some(format!("{}: {e}", path.display())),
        }
        cache
    }

    /// A cache that is never written.
    pub fn in_memory() -> BlobCache {
        BlobCache::default()
    }

    pub fn len(&self) -> usize {
        self.stored.len() / RECORD + self.added.read().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, oid: &Oid) -> Option<[u8; 20]> {
        let (records, _) = self.stored.as_chunks::<RECORD>();
        if let Ok(i) = records.binary_search_by(|r| r[..20].cmp(oid.as_slice())) {
            self.used[i / 64].fetch_or(1 << (i % 64), Ordering::Relaxed);
            return Some(records[i][20..40].try_into().unwrap());
        }
        self.added.read().unwrap().get(oid).copied()
    }

    pub fn insert(&self, oid: Oid, digest: [u8; 20]) {
        self.added.write().unwrap().insert(oid, digest);
    }

    /// Insert many entries under one lock.
    pub fn insert_many(&self, entries: impl Iterator<Item = (Oid, [u8; 20])>) {
        self.added.write().unwrap().extend(entries);
    }

    /// Write the new entries (merged with the stored ones, days refreshed,
    /// old ones dropped) atomically; a no-op when that would change nothing
    /// worth a write.
    pub fn save(&self) -> Result<()> {
        self.save_on(today(), MAX_ENTRIES)
    }

    fn save_on(&self, today: u32, max_entries: usize) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let Some(out) = self.merged(today, max_entries) else { return Ok(()) };
        crate::cachefile::write_atomic(path, &out)
    }

    /// The file to write, or `None` if the one on disk will do.
    fn merged(&self, today: u32, max_entries: usize) -> Option<Vec<u8>> {
        let added = self.added.read().unwrap();
        let n = self.stored.len() / RECORD;
        let used = |i: usize| self.used[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) != 0;
        let day = |i: usize| {
            let r = &self.stored[i * RECORD + 40..(i + 1) * RECORD];
            u32::from_le_bytes([r[0], r[1], r[2], r[3]])
        };
        // Each stored record's day after this run; `None`: dropped.
        let days: Vec<Option<u32>> = (0..n)
            .map(|i| match (used(i), day(i)) {
                (true, _) => Some(today),
                (false, d) if d.saturating_add(MAX_AGE_DAYS) >= today => Some(d),
                _ => None,
            })
            .collect();
        let dropped = days.iter().any(Option::is_none);
        // A used entry's day is written back once it is a day old.
        let stale = (0..n).any(|i| used(i) && day(i) < today);
        if added.is_empty() && !dropped && !stale && self.ignored.is_none() && n <= max_entries {
            return None;
        }
        // (blob id, digest, day), sorted by blob id.
        let mut records: Vec<([u8; 20], [u8; 20], u32)> = Vec::with_capacity(n + added.len());
        let mut new = added.iter().peekable();
        for (i, d) in days.iter().enumerate() {
            let key: [u8; 20] = self.stored[i * RECORD..i * RECORD + 20].try_into().unwrap();
            while let Some((oid, digest)) = new.next_if(|(oid, _)| **oid < key) {
                records.push((*oid, *digest, today));
            }
            new.next_if(|(oid, _)| **oid == key);
            if let Some(d) = d {
                records.push((key, self.stored[i * RECORD + 20..i * RECORD + 40].try_into().unwrap(), *d));
            }
        }
        records.extend(new.map(|(oid, digest)| (*oid, *digest, today)));
        if records.len() > max_entries {
            // The least recently used go first (ties: by blob id).
            let mut by_day: Vec<u32> = records.iter().map(|r| r.2).collect();
            by_day.sort_unstable_by(|a, b| b.cmp(a));
            let cutoff = by_day[max_entries - 1];
            let mut at_cutoff = max_entries - by_day.iter().take(max_entries).filter(|d| **d > cutoff).count();
            records.retain(|r| {
                r.2 > cutoff
                    || (r.2 == cutoff && at_cutoff > 0 && {
                        at_cutoff -= 1;
                        true
                    })
            });
        }
        let mut out = Vec::with_capacity(MAGIC.len() + records.len() * RECORD + 20);
        out.extend_from_slice(MAGIC);
        for (oid, digest, day) in &records {
            out.extend_from_slice(oid);
            out.extend_from_slice(digest);
            out.extend_from_slice(&day.to_le_bytes());
        }
        let sum = Sha1::digest(&out);
        out.extend_from_slice(&sum);
        Some(out)
    }
}

/// Whether `bytes` is a whole, uncorrupted cache file.
fn check(bytes: &[u8]) -> std::result::Result<(), &'static str> {
    if !bytes.starts_with(MAGIC) || bytes.len() < MAGIC.len() + 20 {
        return Err("not a blob cache of this version");
    }
    let (body, sum) = bytes.split_at(bytes.len() - 20);
    if !(body.len() - MAGIC.len()).is_multiple_of(RECORD) || Sha1::digest(body).as_slice() != sum {
        return Err("corrupt (checksum mismatch)");
    }
    let records = &body[MAGIC.len()..];
    if !records.chunks_exact(RECORD).map(|r| &r[..20]).is_sorted_by(|a, b| a < b) {
        return Err("corrupt (records out of order)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_merge_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let c = BlobCache::load(dir.path());
        assert!(c.is_empty() && c.ignored.is_none());
        c.insert([5; 20], [50; 20]);
        c.insert([1; 20], [10; 20]);
        c.save().unwrap();
        let c = BlobCache::load(dir.path());
        assert_eq!(
            (c.len(), c.get(&[5; 20]), c.get(&[1; 20]), c.get(&[2; 20])),
            (2, Some([50; 20]), Some([10; 20]), None)
        );
        c.insert([3; 20], [30; 20]);
        c.insert([9; 20], [90; 20]);
        c.insert([1; 20], [10; 20]);
        c.save().unwrap();
        let c = BlobCache::load(dir.path());
        assert_eq!(c.len(), 4);
        for k in [1u8, 3, 5, 9] {
            assert_eq!(c.get(&[k; 20]), Some([k * 10; 20]));
        }
        // One flipped byte: the file is ignored, and rewritten on save.
        let path = dir.path().join("mzbuild").join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[MAGIC.len() + 3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let c = BlobCache::load(dir.path());
        assert!(c.is_empty() && c.ignored.as_deref().unwrap().contains("corrupt"), "{:?}", c.ignored);
        c.insert([7; 20], [70; 20]);
        c.save().unwrap();
        let c = BlobCache::load(dir.path());
        assert_eq!((c.len(), c.get(&[7; 20])), (1, Some([70; 20])));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(BlobCache::load(dir.path()).ignored.is_some());
    }

    /// The days each entry of the cache file in `dir` was last used.
    fn days(dir: &Path) -> BTreeMap<u8, u32> {
        let c = BlobCache::load(dir);
        (0..c.stored.len() / RECORD)
            .map(|i| {
                let r = &c.stored[i * RECORD..(i + 1) * RECORD];
                (r[0], u32::from_le_bytes(r[40..44].try_into().unwrap()))
            })
            .collect()
    }

    #[test]
    fn unused_entries_age_out_and_the_size_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let c = BlobCache::load(dir.path());
        for k in 1..=4u8 {
            c.insert([k; 20], [k; 20]);
        }
        c.save_on(1000, MAX_ENTRIES).unwrap();
        assert_eq!(days(dir.path()), BTreeMap::from([(1, 1000), (2, 1000), (3, 1000), (4, 1000)]));
        // Used again the same day: nothing to write.
        let c = BlobCache::load(dir.path());
        assert!(c.get(&[1; 20]).is_some());
        assert!(c.merged(1000, MAX_ENTRIES).is_none(), "a run that only reads writes nothing");
        // Days later: #1 is used, its day is written back; nothing expires.
        let c = BlobCache::load(dir.path());
        c.get(&[1; 20]);
        c.save_on(1010, MAX_ENTRIES).unwrap();
        assert_eq!(days(dir.path()), BTreeMap::from([(1, 1010), (2, 1000), (3, 1000), (4, 1000)]));
        // More than MAX_AGE_DAYS after their last use, #2..#4 go; #3 was
        // used now, so it stays.
        let c = BlobCache::load(dir.path());
        c.get(&[3; 20]);
        c.save_on(1000 + MAX_AGE_DAYS + 1, MAX_ENTRIES).unwrap();
        assert_eq!(days(dir.path()), BTreeMap::from([(1, 1010), (3, 1031)]));
        // Over the cap: the least recently used go first.
        let c = BlobCache::load(dir.path());
        c.insert([5; 20], [5; 20]);
        c.insert([6; 20], [6; 20]);
        c.save_on(1032, 3).unwrap();
        assert_eq!(days(dir.path()), BTreeMap::from([(3, 1031), (5, 1032), (6, 1032)]));
        let c = BlobCache::load(dir.path());
        assert_eq!((c.get(&[1; 20]), c.get(&[5; 20])), (None, Some([5; 20])));
    }
}
