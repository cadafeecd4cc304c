//! The blob cache: git blob id -> SHA-1 of the blob's raw contents (what a
//! fingerprint hashes; git's blob id hashes a header too). Blob ids are
//! content addresses, so an entry is true forever and for every work tree of
//! the repository; it lives beside the object store, in
//! `<git common dir>/mzbuild/blob-sha1`.
//!
//! The file is the sorted records (blob id, content SHA-1) behind a magic
//! line and before a SHA-1 of everything else: looked up in place by binary
//! search, so loading costs one read. A file that does not check out
//! (truncated, corrupt, another version) is ignored and rewritten; without
//! a git directory to write to, the cache lives only in memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use anyhow::{Context, Result};
use sha1::{Digest, Sha1};

use crate::discover::git::Oid;

const MAGIC: &[u8] = b"mzbuild blob-sha1 v1\n";
const RECORD: usize = 40;

#[derive(Default)]
pub struct BlobCache {
    path: Option<PathBuf>,
    /// The records of the file, sorted by blob id.
    stored: Vec<u8>,
    added: RwLock<BTreeMap<Oid, [u8; 20]>>,
    /// Why the file on disk was not used, if it was not.
    pub ignored: Option<String>,
}

impl BlobCache {
    /// The cache of the repository whose common git directory is
    /// `common_dir`.
    pub fn load(common_dir: &Path) -> BlobCache {
        let path = common_dir.join("mzbuild").join("blob-sha1");
        let mut cache = BlobCache { path: Some(path.clone()), ..BlobCache::default() };
        match std::fs::read(&path) {
            Ok(bytes) => match check(&bytes) {
                Ok(()) => {
                    cache.stored = bytes;
                    cache.stored.truncate(cache.stored.len() - 20);
                    cache.stored.drain(..MAGIC.len());
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
        let n = self.stored.len() / RECORD;
        let key = |i: usize| &self.stored[i * RECORD..i * RECORD + 20];
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match key(mid).cmp(oid.as_slice()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    return Some(self.stored[mid * RECORD + 20..(mid + 1) * RECORD].try_into().unwrap())
                }
            }
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

    /// Write the new entries (merged with the stored ones) atomically; a
    /// no-op when nothing was added and the file on disk was fine.
    pub fn save(&self) -> Result<()> {
        let added = self.added.read().unwrap();
        let Some(path) = &self.path else { return Ok(()) };
        if added.is_empty() && self.ignored.is_none() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(MAGIC.len() + self.stored.len() + added.len() * RECORD + 20);
        out.extend_from_slice(MAGIC);
        let mut new = added.iter().peekable();
        for record in self.stored.chunks_exact(RECORD) {
            while let Some((oid, digest)) = new.next_if(|(oid, _)| oid.as_slice() < &record[..20]) {
                out.extend_from_slice(oid);
                out.extend_from_slice(digest);
            }
            new.next_if(|(oid, _)| oid.as_slice() == &record[..20]);
            out.extend_from_slice(record);
        }
        for (oid, digest) in new {
            out.extend_from_slice(oid);
            out.extend_from_slice(digest);
        }
        let sum = Sha1::digest(&out);
        out.extend_from_slice(&sum);
        let dir = path.parent().expect("cache path has a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing in {}", dir.display()))?;
        std::io::Write::write_all(&mut tmp, &out)?;
        tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
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
        let path = dir.path().join("mzbuild/blob-sha1");
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
}
