//! The one binary format of mzbuild's cache files: a magic line, the
//! [`SOURCE`] stamp of the binary that wrote it, the payload, and a SHA-1 of
//! everything before it.

use sha1::{Digest, Sha1};

use super::stat::{stat_bytes, stat_from, Stat, STAT_LEN};

/// What the caches' contents depend on besides the repository: this
/// binary's mzbuild sources and the crates they use (see `build.rs`). A new
/// binary starts with empty caches, so a change to an input rule can never
/// be answered from a cache written under the old rule.
pub const SOURCE: &str = env!("MZBUILD_SOURCE_HASH");

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let stat = Stat { ctime: (1, 2), mtime: (3, 4), dev: 5, ino: 6, mode: 0o100644, uid: 7, gid: 8, size: 9 };
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
}
