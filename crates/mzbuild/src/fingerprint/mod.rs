//! Fingerprints, bit for bit as the original computes them.
//!
//! An image's fingerprint is SHA-1 over (for each input file, sorted by
//! path bytes) its git-style mode, its path and the SHA-1 of its contents
//! (of the root `Cargo.toml`: less its `[workspace.metadata.mzbuild]`
//! table, see [`crate::config::workspace`]);
//! then each pre-image's `extra()`; then the settings string; and finally,
//! in a second hash, its direct dependencies' names and fingerprints.
//!
//! Inputs are computed for all requested images first, and every distinct
//! file is read and hashed once, in parallel, however many images share it
//! (cargo-build images share most of the workspace). `cargo xtask` runs
//! unoptimised code, so the bookkeeping avoids per-path work: an image's
//! inputs are a bitmap over the sorted tree (crate directories are ranges),
//! and its self hash is fed whole runs of precomputed per-file records.

pub mod changes;
pub mod fileset;
pub mod hash;
pub mod memo;
pub mod snapshot;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use anyhow::{anyhow, Result};
use rayon::prelude::*;
use sha1::{Digest, Sha1};

use crate::config::settings::Settings;
use crate::discover::{Image, Repo};
use crate::git::index;
use crate::preimage::{self, InputCache};
use fileset::FileSet;

/// An image's fingerprint: 20 SHA-1 bytes, shown as RFC 4648 base32 (upper
/// case, no padding, 32 characters), as in its tag `mzbuild-<fingerprint>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 20]);

impl Fingerprint {
    /// The content-addressed tag: `mzbuild-<fingerprint>`.
    pub fn tag(&self) -> String {
        format!("mzbuild-{self}")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = anyhow::Error;

    /// Parse the 32-character base32 form (a leading `mzbuild-` is allowed).
    fn from_str(s: &str) -> Result<Fingerprint> {
        let text = s.strip_prefix("mzbuild-").unwrap_or(s);
        let bad = || anyhow!("`{s}` is not a fingerprint (32 characters of A-Z and 2-7)");
        if text.len() != 32 {
            return Err(bad());
        }
        let (mut buf, mut bits, mut out) = (0u64, 0u32, Vec::with_capacity(20));
        for c in text.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'2'..=b'7' => c - b'2' + 26,
                _ => return Err(bad()),
            };
            buf = (buf << 5) | u64::from(v);
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                out.push((buf >> bits) as u8);
            }
        }
        Ok(Fingerprint(out.try_into().map_err(|_| bad())?))
    }
}

/// RFC 4648 base32, upper case, no padding (20 bytes -> 32 characters).
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buf, mut bits) = (0u64, 0u32);
    for &b in bytes {
        buf = (buf << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Input files of one image (repository-relative, sorted, unique).
pub fn inputs(repo: &Repo, image: &Image) -> Result<Vec<String>> {
    let mut cache = InputCache::default();
    let set = input_set(repo, image, &mut cache)?;
    cache.notes.warn();
    let mut out = Vec::new();
    for run in set.runs() {
        out.extend_from_slice(&repo.tree.files[run]);
    }
    Ok(out)
}

/// Input files of one image, as positions in `repo.tree.files`: its
/// context less the files of nested images, plus its pre-images' inputs.
fn input_set(repo: &Repo, image: &Image, cache: &mut InputCache) -> Result<FileSet> {
    let tree = &repo.tree;
    let mut set = FileSet::new(tree.files.len());
    set.insert_range(tree.range(&image.dir));
    for dir in repo.nested_dirs(image) {
        set.remove_range(tree.range(dir));
    }
    for (i, pre) in image.config.pre_images.iter().enumerate() {
        for r in preimage::inputs(repo, image, i, pre, cache)? {
            set.insert_range(r);
        }
    }
    Ok(set)
}

/// The input sets of `images`, each with what its default cargo-build
/// inputs left out. The images share their crates' files and their
/// cargo-build closures, so the cost grows with the unique crates and
/// closures, not with the sum of the images' inputs.
pub fn input_sets(repo: &Repo, images: &[&Image]) -> Result<Vec<(FileSet, preimage::Notes)>> {
    let mut cache = InputCache::default();
    let mut out = Vec::with_capacity(images.len());
    for image in images {
        let set = input_set(repo, image, &mut cache)?;
        out.push((set, std::mem::take(&mut cache.notes)));
    }
    Ok(out)
}

/// An image's fingerprint.
#[derive(Clone, Debug)]
pub struct Fingerprinted {
    pub fingerprint: Fingerprint,
}

/// Fingerprint `images` (which must be closed under dependencies and in
/// dependency order, as `Repo::resolve` returns them).
pub fn fingerprint_all(repo: &Repo, images: &[&Image], settings: &Settings) -> Result<BTreeMap<String, Fingerprinted>> {
    Ok(compute(repo, images, settings)?.fps())
}

/// One image of a [`Computed`]: its fingerprint and everything it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Computed1 {
    pub fingerprint: Fingerprint,
    /// Each pre-image's `extra()` word, in order.
    pub extras: Vec<String>,
    /// Direct dependencies, sorted, with the fingerprints this one was
    /// computed from.
    pub depends_on: Vec<(String, Fingerprint)>,
    /// Its inputs, as runs `[start, end)` of consecutive tree positions.
    pub runs: Vec<(u32, u32)>,
    /// What the default cargo-build inputs left out of it.
    pub notes: preimage::Notes,
}

/// Fingerprints with everything they were computed from: the file hashes
/// behind them, for `diff`, `explain`, the records and the memo.
#[derive(Clone, Debug)]
pub struct Computed {
    /// The settings string (part of every fingerprint).
    pub settings: String,
    pub images: BTreeMap<String, Computed1>,
    /// The unique input files of all the images: their tree positions
    /// (ascending), paths and hashes.
    pub positions: Vec<u32>,
    pub paths: Vec<String>,
    pub hashes: Vec<hash::FileHash>,
    pub stats: hash::HashStats,
}

impl Computed {
    pub fn fps(&self) -> BTreeMap<String, Fingerprinted> {
        self.images.iter().map(|(n, c)| (n.clone(), Fingerprinted { fingerprint: c.fingerprint })).collect()
    }

    /// The index ranges (into `positions`, `paths`, `hashes`) of `image`'s
    /// inputs, ascending.
    pub fn index_runs(&self, image: &str) -> Vec<std::ops::Range<usize>> {
        self.images[image]
            .runs
            .iter()
            .map(|&(a, b)| {
                let start = self.positions.binary_search(&a).expect("an input was hashed");
                start..start + (b - a) as usize
            })
            .collect()
    }

    /// The input paths of `image`, sorted.
    pub fn inputs(&self, image: &str) -> Vec<&str> {
        self.index_runs(image).into_iter().flat_map(|r| self.paths[r].iter().map(String::as_str)).collect()
    }

    /// The input manifest of `image`: (path, mode, content hash) per input.
    pub fn manifest(&self, image: &str) -> Vec<(String, hash::FileHash)> {
        self.index_runs(image).into_iter().flat_map(|r| r.map(|k| (self.paths[k].clone(), self.hashes[k]))).collect()
    }

    /// `image`'s snapshot, for comparisons.
    pub fn snapshot(&self, image: &str) -> snapshot::Snapshot {
        let c = &self.images[image];
        snapshot::Snapshot {
            image: image.to_string(),
            fingerprint: c.fingerprint,
            settings: self.settings.clone(),
            extras: c.extras.clone(),
            depends_on: c.depends_on.iter().cloned().collect(),
            inputs: self.manifest(image),
        }
    }

    /// Warn about what the default cargo-build inputs left out.
    pub fn warn(&self) {
        let mut notes = preimage::Notes::default();
        for c in self.images.values() {
            notes.merge(&c.notes);
        }
        notes.warn();
    }
}

/// [`fingerprint_all`], keeping what the fingerprints were computed from.
/// With the tree's `caching`, the answer comes from the fingerprint memo
/// when it proves nothing changed ([`memo`]), and is memoised otherwise.
pub fn compute(repo: &Repo, images: &[&Image], settings: &Settings) -> Result<Computed> {
    let tree = &repo.tree;
    let settings_string = settings.fingerprint_string();
    let previous = if tree.caching { memo::Memo::load(repo, &settings_string) } else { None };
    if let Some(memo) = &previous {
        if let Some(hit) = memo.answer(repo, images) {
            hit.warn();
            return Ok(hit);
        }
    }
    let (sets, notes): (Vec<FileSet>, Vec<preimage::Notes>) = input_sets(repo, images)?.into_iter().unzip();
    let mut union = FileSet::new(tree.files.len());
    for set in &sets {
        union.union_with(set);
    }
    let unique: Vec<usize> = union.iter().collect();
    let (hashed, stats) = hash_inputs(repo, images, &sets, &unique, previous.as_ref())?;
    let hashes = file_hashes(repo, &unique, &hashed);
    let records = Records::new(&tree.files, &unique, &hashes);
    // Self hashes do not depend on each other: all cores.
    let selves: Vec<_> = (0..images.len())
        .into_par_iter()
        .map(|k| {
            let runs = sets[k].runs();
            let mut self_hash = records.hash(&runs);
            let extras: Vec<String> =
                images[k].config.pre_images.iter().map(|p| preimage::extra(p, settings, &repo.workspace)).collect();
            for extra in &extras {
                self_hash.update(extra.as_bytes());
                self_hash.update([0u8]);
            }
            self_hash.update(settings_string.as_bytes());
            let runs: Vec<(u32, u32)> = runs.into_iter().map(|r| (r.start as u32, r.end as u32)).collect();
            SelfHash { digest: self_hash.finalize().into(), extras, runs }
        })
        .collect();
    let computed = Computed {
        settings: settings_string,
        images: with_dependencies(images, selves, notes)?,
        positions: unique.iter().map(|&p| p as u32).collect(),
        paths: unique.iter().map(|&p| tree.files[p].clone()).collect(),
        hashes,
        stats,
    };
    computed.warn();
    if tree.caching {
        if let Err(e) = tree.git.blobs().save() {
            crate::ui::warn(format_args!("could not save the blob cache (fingerprints are not affected): {e:#}"));
        }
        let stats: Vec<Option<index::Stat>> = hashed.iter().map(|h| h.stat).collect();
        memo::Memo::store(repo, &computed, &stats, previous);
    }
    Ok(computed)
}

/// Hash the `unique` input files (what `previous` knows of unchanged files
/// is not read again); an error names the images that use the file.
fn hash_inputs(
    repo: &Repo,
    images: &[&Image],
    sets: &[FileSet],
    unique: &[usize],
    previous: Option<&memo::Memo>,
) -> Result<(Vec<hash::Hashed>, hash::HashStats)> {
    let tree = &repo.tree;
    let known = |at: usize, stat: &index::Stat| previous.and_then(|m| m.known(tree, at, stat));
    hash::hash_tree(tree, unique, &known).map_err(|(i, e)| {
        let users: Vec<String> = images
            .iter()
            .zip(sets)
            .filter(|(_, set)| set.contains(unique[i]))
            .map(|(image, _)| format!("`{}`", image.name))
            .collect();
        let label = if users.len() == 1 { "image" } else { "images" };
        e.context(format!("{label} {}", users.join(", ")))
    })
}

/// The hash each input counts with: its content's, but the root manifest
/// counts without its [workspace.metadata.mzbuild] table (see
/// `config::workspace`).
fn file_hashes(repo: &Repo, unique: &[usize], hashed: &[hash::Hashed]) -> Vec<hash::FileHash> {
    let mut hashes: Vec<hash::FileHash> = hashed.iter().map(|h| h.hash).collect();
    if let Some(digest) = repo.workspace.manifest_digest {
        if let Some(k) = repo.tree.position("Cargo.toml").and_then(|at| unique.binary_search(&at).ok()) {
            hashes[k].digest = digest;
        }
    }
    hashes
}

/// What each input file adds to an image's self hash (mode, path, content
/// digest, 0), for every unique file in path order: an image's consecutive
/// inputs are then one slice, hashed with one call.
struct Records {
    records: Vec<u8>,
    /// Where each unique file's record starts (and, last, the end).
    starts: Vec<usize>,
    /// By tree position: the unique file's index.
    slot: Vec<u32>,
}

impl Records {
    /// `files`: the tree's.
    fn new(files: &[String], unique: &[usize], hashes: &[hash::FileHash]) -> Records {
        let mut records = Vec::with_capacity(unique.iter().map(|&at| files[at].len() + 23).sum());
        let mut starts = Vec::with_capacity(unique.len() + 1);
        let mut slot = vec![0u32; files.len()];
        for (&at, hash) in unique.iter().zip(hashes) {
            slot[at] = starts.len() as u32;
            starts.push(records.len());
            records.extend_from_slice(&hash.mode.to_be_bytes());
            records.extend_from_slice(files[at].as_bytes());
            records.extend_from_slice(&hash.digest);
            records.push(0);
        }
        starts.push(records.len());
        Records { records, starts, slot }
    }

    /// A self hash fed the records of the input files `runs`.
    fn hash(&self, runs: &[std::ops::Range<usize>]) -> Sha1 {
        let (records, starts, slot) = (&self.records, &self.starts, &self.slot);
        let mut self_hash = Sha1::new();
        // A run of consecutive tree files is a run of consecutive unique
        // files, whose records are one slice; runs that meet are joined.
        // [first, end) is the run of unique files not yet hashed.
        let (mut first, mut end) = (0, 0);
        for run in runs {
            let (a, b) = (slot[run.start] as usize, slot[run.end - 1] as usize + 1);
            if a != end {
                self_hash.update(&records[starts[first]..starts[end]]);
                first = a;
            }
            end = b;
        }
        self_hash.update(&records[starts[first]..starts[end]]);
        self_hash
    }
}

/// An image's self hash (its inputs, extras and the settings), with the
/// extras and input runs it was computed from.
struct SelfHash {
    digest: [u8; 20],
    extras: Vec<String>,
    runs: Vec<(u32, u32)>,
}

/// Each image's fingerprint from its self hash and its direct
/// dependencies' fingerprints (`images` in dependency order).
fn with_dependencies(
    images: &[&Image],
    selves: Vec<SelfHash>,
    notes: Vec<preimage::Notes>,
) -> Result<BTreeMap<String, Computed1>> {
    let mut out: BTreeMap<String, Computed1> = BTreeMap::new();
    for ((image, SelfHash { digest, extras, runs }), notes) in images.iter().zip(selves).zip(notes) {
        let mut full = Sha1::new();
        full.update(digest);
        let mut depends_on = Vec::with_capacity(image.depends_on.len());
        for dep in &image.depends_on {
            let dep_fp = out
                .get(dep)
                .ok_or_else(|| anyhow!("internal error: `{dep}` not fingerprinted before `{}`", image.name))?
                .fingerprint;
            full.update(dep.as_bytes());
            full.update(dep_fp.0);
            full.update([0u8]);
            depends_on.push((dep.clone(), dep_fp));
        }
        let fingerprint = Fingerprint(full.finalize().into());
        out.insert(image.name.clone(), Computed1 { fingerprint, extras, depends_on, runs, notes });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648() {
        // RFC 4648 section 10 test vectors (without padding).
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"fo"), "MZXQ");
        assert_eq!(base32(b"foo"), "MZXW6");
        assert_eq!(base32(b"foob"), "MZXW6YQ");
        assert_eq!(base32(b"fooba"), "MZXW6YTB");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(&[0xff; 20]).len(), 32);
    }

    #[test]
    fn fingerprints_print_and_parse() {
        let fp = Fingerprint(*b"01234567890123456789");
        let text = fp.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(fp.tag().parse::<Fingerprint>().unwrap(), fp);
        assert!("ABC".parse::<Fingerprint>().is_err());
        assert!("1".repeat(32).parse::<Fingerprint>().is_err());
    }
}
