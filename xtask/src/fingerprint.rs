//! Fingerprints, bit for bit as the original computes them.
//!
//! An image's fingerprint is SHA-1 over (for each input file, sorted by
//! path bytes) its git-style mode, its path and the SHA-1 of its contents;
//! then each pre-image's `extra()`; then the settings string; and finally,
//! in a second hash, its direct dependencies' names and fingerprints.
//!
//! Inputs are computed for all requested images first, and every distinct
//! file is read and hashed once, in parallel, however many images share it
//! (cargo-build images share most of the workspace). `cargo xtask` runs
//! unoptimised code, so the bookkeeping avoids per-path work: an image's
//! inputs are a bitmap over the sorted tree (crate directories are ranges),
//! and its self hash is fed whole runs of precomputed per-file records.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use sha1::{Digest, Sha1};

use crate::config::PreImage;
use crate::repo::{Image, Repo};
use crate::settings::Settings;

pub type Fingerprint = [u8; 20];

const MODE_REGULAR: u16 = 0o100644;
const MODE_EXECUTABLE: u16 = 0o100755;
const MODE_SYMLINK: u16 = 0o120000;

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
    let set = input_set(repo, image, &mut CrateFiles::new())?;
    let mut out = Vec::new();
    for run in set.runs() {
        out.extend_from_slice(&repo.tree.files[run]);
    }
    Ok(out)
}

/// The input files of a crate, as ranges of positions in `Tree::files`, by
/// crate directory: images share most crates, so each is looked up once.
type CrateFiles = BTreeMap<String, Vec<Range<usize>>>;

/// Every file of the crate in `dir` but `<crate>/mzcompose` and
/// `<crate>/mzcompose.py` (files, or directories with everything below
/// them), as ranges of positions in `tree.files`.
fn crate_ranges(tree: &crate::tree::Tree, dir: &str) -> Vec<Range<usize>> {
    let mut excluded: Vec<Range<usize>> = Vec::new();
    for e in [format!("{dir}/mzcompose"), format!("{dir}/mzcompose.py")] {
        if let Some(at) = tree.position(&e) {
            excluded.push(at..at + 1);
        }
        excluded.push(tree.range(&e));
    }
    // All inside the crate's range, and disjoint.
    excluded.retain(|r| !r.is_empty());
    excluded.sort_by_key(|r| r.start);
    let all = tree.range(dir);
    let mut out = Vec::new();
    let mut at = all.start;
    for r in excluded {
        out.push(at..r.start);
        at = r.end;
    }
    out.push(at..all.end);
    out
}

/// Input files of one image, as positions in `repo.tree.files`.
fn input_set(repo: &Repo, image: &Image, crate_files: &mut CrateFiles) -> Result<FileSet> {
    let tree = &repo.tree;
    let mut set = FileSet::new(tree.files.len());
    // The context, less the files of nested images.
    set.insert_range(tree.range(&image.dir));
    for dir in repo.nested_dirs(image) {
        set.remove_range(tree.range(dir));
    }
    let what = |i: usize| format!("image `{}` ({}/mzbuild.yml), pre-image #{}", image.name, image.dir, i + 1);
    for (i, pre) in image.config.pre_images.iter().enumerate() {
        match pre {
            PreImage::Copy(c) => {
                let matched = copy_match_positions(repo, &c.source, &c.matching).with_context(|| what(i))?;
                if matched.is_empty() {
                    bail!(
                        "{}: copy source `{}` (matching `{}`) has no files git can see; fix `source`/`matching` or add the files",
                        what(i),
                        c.source,
                        c.matching
                    );
                }
                for m in matched {
                    set.insert(m);
                }
            }
            PreImage::CargoBuild(cb) => {
                for required in ["Cargo.toml", "Cargo.lock"] {
                    let Some(at) = tree.position(required) else {
                        bail!(
                            "{}: cargo-build needs {required} at the repository root ({}), and git does not see one; \
                             create it (`cargo generate-lockfile` for Cargo.lock) and commit it",
                            what(i),
                            repo.root().display()
                        );
                    };
                    set.insert(at);
                }
                // `.cargo/config` is what the original hashes; its modern
                // name `.cargo/config.toml` matters just as much.
                for optional in [".cargo/config", ".cargo/config.toml"] {
                    if let Some(at) = tree.position(optional) {
                        set.insert(at);
                    }
                }
                set.insert_range(tree.range("ci/builder"));
                let ws = repo.workspace().with_context(|| format!("{}: reading the cargo workspace", what(i)))?;
                let mut crates = BTreeSet::new();
                for bin in &cb.bins {
                    let k = ws.crate_for_bin(bin).with_context(|| what(i))?;
                    crates.extend(ws.closure(k, false));
                }
                for ex in &cb.examples {
                    let k = ws.crate_for_example(ex).with_context(|| what(i))?;
                    crates.extend(ws.closure(k, true));
                }
                for dir in crates {
                    for r in crate_files.entry(dir).or_insert_with_key(|dir| crate_ranges(tree, dir)) {
                        set.insert_range(r.clone());
                    }
                }
            }
        }
    }
    Ok(set)
}

/// Files under `source` that the git pathspec `matching` (relative to
/// `source`) selects. As in git, `*` also matches `/`, and a pattern without
/// wildcards matches a path or a directory prefix.
pub fn copy_matches<'a>(repo: &'a Repo, source: &str, matching: &str) -> Result<Vec<&'a str>> {
    Ok(copy_match_positions(repo, source, matching)?.into_iter().map(|i| repo.tree.files[i].as_str()).collect())
}

/// `copy_matches`, as positions in `repo.tree.files`.
fn copy_match_positions(repo: &Repo, source: &str, matching: &str) -> Result<Vec<usize>> {
    let range = repo.tree.range(source);
    let files = repo.tree.files[range.clone()].iter().zip(range);
    fn rel<'a>(f: &'a str, source: &str) -> &'a str {
        &f[source.len() + 1..]
    }
    if !matching.contains(['*', '?', '[']) {
        let m = matching.trim_end_matches('/');
        return Ok(files
            .filter(|(f, _)| {
                let r = rel(f, source);
                r == m || (r.starts_with(m) && r.as_bytes().get(m.len()) == Some(&b'/'))
            })
            .map(|(_, i)| i)
            .collect());
    }
    let glob = globset::GlobBuilder::new(matching)
        .literal_separator(false)
        .build()
        .map_err(|e| anyhow!("`matching` `{matching}` is not a valid pattern: {e}"))?
        .compile_matcher();
    Ok(files.filter(|(f, _)| glob.is_match(rel(f, source))).map(|(_, i)| i).collect())
}

/// A set of tree files, by position in `Tree::files`: a bitmap, so that
/// building an image's inputs, and the union of all images' inputs, costs
/// next to nothing, and iterating yields paths in sorted order.
struct FileSet {
    words: Vec<u64>,
}

impl FileSet {
    fn new(len: usize) -> FileSet {
        FileSet { words: vec![0; len.div_ceil(64)] }
    }

    fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    fn insert_range(&mut self, r: Range<usize>) {
        let mut i = r.start;
        while i < r.end {
            if i.is_multiple_of(64) && r.end - i >= 64 {
                self.words[i / 64] = !0;
                i += 64;
            } else {
                self.insert(i);
                i += 1;
            }
        }
    }

    fn remove_range(&mut self, r: Range<usize>) {
        for i in r {
            self.words[i / 64] &= !(1 << (i % 64));
        }
    }

    fn contains(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    fn union_with(&mut self, other: &FileSet) {
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w |= *o;
        }
    }

    /// The members as runs of consecutive positions, ascending.
    fn runs(&self) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        // The start of the run that reaches the current word, if any.
        let mut open: Option<usize> = None;
        for (n, &word) in self.words.iter().enumerate() {
            let base = n * 64;
            let mut bit = 0;
            while bit < 64 {
                let rest = word >> bit;
                match open {
                    Some(start) => {
                        let ones = rest.trailing_ones() as usize;
                        if bit + ones == 64 {
                            break;
                        }
                        bit += ones;
                        out.push(start..base + bit);
                        open = None;
                    }
                    None => {
                        if rest == 0 {
                            break;
                        }
                        bit += rest.trailing_zeros() as usize;
                        open = Some(base + bit);
                    }
                }
            }
        }
        if let Some(start) = open {
            out.push(start..self.words.len() * 64);
        }
        out
    }

    /// The members, ascending.
    fn iter(&self) -> Bits<'_> {
        Bits { words: &self.words, next_word: 0, current: 0 }
    }
}

struct Bits<'a> {
    words: &'a [u64],
    next_word: usize,
    /// The bits of word `next_word - 1` not yet returned.
    current: u64,
}

impl Iterator for Bits<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.current == 0 {
            if self.next_word == self.words.len() {
                return None;
            }
            self.current = self.words[self.next_word];
            self.next_word += 1;
        }
        let bit = self.current.trailing_zeros() as usize;
        self.current &= self.current - 1;
        Some((self.next_word - 1) * 64 + bit)
    }
}

/// A hashed input file: its git-style mode and the SHA-1 of its contents.
#[derive(Clone, Copy, Debug)]
pub struct FileHash {
    pub mode: u16,
    pub digest: Fingerprint,
}

/// Hash every path once, on all cores.
pub fn hash_files(root: &std::path::Path, paths: &[&str]) -> Result<HashMap<String, FileHash>> {
    let hashes = hash_paths(root, paths).map_err(|(_, e)| e)?;
    Ok(paths.iter().map(|p| p.to_string()).zip(hashes).collect())
}

/// Hash every path once, on all cores; the hashes in the order of `paths`.
/// An error comes with the index of the path it is about.
fn hash_paths(root: &std::path::Path, paths: &[&str]) -> std::result::Result<Vec<FileHash>, (usize, anyhow::Error)> {
    const CHUNK: usize = 32;
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(paths.len().div_ceil(CHUNK).max(1));
    type Part = std::result::Result<Vec<(usize, FileHash)>, (usize, anyhow::Error)>;
    let results: Vec<Part> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Part {
                    let mut out = Vec::new();
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                        if start >= paths.len() {
                            return Ok(out);
                        }
                        for (i, p) in paths.iter().enumerate().skip(start).take(CHUNK) {
                            out.push((i, hash_file(root, p, &mut buf).map_err(|e| (i, e))?));
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("hashing thread panicked")).collect()
    });
    let mut hashes = vec![FileHash { mode: 0, digest: [0; 20] }; paths.len()];
    for r in results {
        for (i, h) in r? {
            hashes[i] = h;
        }
    }
    Ok(hashes)
}

fn hash_file(root: &std::path::Path, rel: &str, buf: &mut [u8]) -> Result<FileHash> {
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

/// An image's fingerprint and the inputs it was computed from.
#[derive(Clone, Debug)]
pub struct Fingerprinted {
    pub fingerprint: Fingerprint,
    pub inputs: Vec<String>,
}

/// Fingerprint `images` (which must be closed under dependencies and in
/// dependency order, as `Repo::resolve` returns them).
pub fn fingerprint_all(repo: &Repo, images: &[&Image], settings: &Settings) -> Result<BTreeMap<String, Fingerprinted>> {
    let tree = &repo.tree;
    let mut crate_files = CrateFiles::new();
    let sets: Vec<FileSet> = images.iter().map(|i| input_set(repo, i, &mut crate_files)).collect::<Result<_>>()?;
    let mut union = FileSet::new(tree.files.len());
    for set in &sets {
        union.union_with(set);
    }
    let unique: Vec<usize> = union.iter().collect();
    let paths: Vec<&str> = unique.iter().map(|i| tree.files[*i].as_str()).collect();
    let hashes = hash_paths(repo.root(), &paths).map_err(|(i, e)| {
        let users: Vec<String> = images
            .iter()
            .zip(&sets)
            .filter(|(_, set)| set.contains(unique[i]))
            .map(|(image, _)| format!("`{}`", image.name))
            .collect();
        let label = if users.len() == 1 { "image" } else { "images" };
        e.context(format!("{label} {}", users.join(", ")))
    })?;
    // What each input file adds to an image's self hash (mode, path,
    // content digest, 0), for every unique file in path order: an image's
    // consecutive inputs are then one slice, hashed with one call.
    let mut records = Vec::with_capacity(paths.iter().map(|p| p.len() + 23).sum());
    let mut starts = Vec::with_capacity(paths.len() + 1);
    let mut slot = vec![0u32; tree.files.len()];
    for ((path, hash), at) in paths.iter().zip(&hashes).zip(&unique) {
        slot[*at] = starts.len() as u32;
        starts.push(records.len());
        records.extend_from_slice(&hash.mode.to_be_bytes());
        records.extend_from_slice(path.as_bytes());
        records.extend_from_slice(&hash.digest);
        records.push(0);
    }
    starts.push(records.len());
    let settings_string = settings.fingerprint_string();
    let cargo_extra = settings.cargo_extra();
    // Self hashes (and input lists) do not depend on each other: all cores.
    let selves = par_map(images.len(), |k| {
        let runs = sets[k].runs();
        let mut ins = Vec::with_capacity(runs.iter().map(ExactSizeIterator::len).sum());
        let mut self_hash = Sha1::new();
        // A run of consecutive tree files is a run of consecutive unique
        // files, whose records are one slice; runs that meet are joined.
        // [first, end) is the run of unique files not yet hashed.
        let (mut first, mut end) = (0, 0);
        for run in runs {
            ins.extend_from_slice(&tree.files[run.clone()]);
            let (a, b) = (slot[run.start] as usize, slot[run.end - 1] as usize + 1);
            if a != end {
                self_hash.update(&records[starts[first]..starts[end]]);
                first = a;
            }
            end = b;
        }
        self_hash.update(&records[starts[first]..starts[end]]);
        for pre in &images[k].config.pre_images {
            if let PreImage::CargoBuild(_) = pre {
                self_hash.update(cargo_extra.as_bytes());
            }
            self_hash.update([0u8]);
        }
        self_hash.update(settings_string.as_bytes());
        (self_hash.finalize(), ins)
    });
    let mut out: BTreeMap<String, Fingerprinted> = BTreeMap::new();
    for (image, (self_digest, ins)) in images.iter().zip(selves) {
        let mut full = Sha1::new();
        full.update(self_digest);
        for dep in &image.depends_on {
            let dep_fp = out
                .get(dep)
                .ok_or_else(|| anyhow!("internal error: `{dep}` not fingerprinted before `{}`", image.name))?;
            full.update(dep.as_bytes());
            full.update(dep_fp.fingerprint);
            full.update([0u8]);
        }
        out.insert(image.name.clone(), Fingerprinted { fingerprint: full.finalize().into(), inputs: ins });
    }
    Ok(out)
}

/// `f(0)`, ..., `f(n - 1)` computed on all cores, in that order.
fn par_map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(n).max(1);
    let next = AtomicUsize::new(0);
    let parts: Vec<Vec<(usize, T)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= n {
                            return out;
                        }
                        out.push((k, f(k)));
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("fingerprinting thread panicked")).collect()
    });
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for (k, t) in parts.into_iter().flatten() {
        slots[k] = Some(t);
    }
    slots.into_iter().map(|t| t.expect("every index computed")).collect()
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
    fn file_set_runs_and_iter_agree_with_a_naive_set() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        for len in [0, 1, 63, 64, 65, 127, 128, 129, 300, 1000] {
            for _ in 0..50 {
                let mut set = FileSet::new(len);
                let mut naive = vec![false; len];
                for _ in 0..next(8) {
                    if len == 0 {
                        break;
                    }
                    let a = next(len + 1);
                    let b = a + next(len + 1 - a);
                    if next(4) == 0 {
                        set.remove_range(a..b);
                        naive[a..b].fill(false);
                    } else {
                        set.insert_range(a..b);
                        naive[a..b].fill(true);
                    }
                    let i = next(len);
                    set.insert(i);
                    naive[i] = true;
                }
                let want: Vec<usize> = (0..len).filter(|i| naive[*i]).collect();
                assert_eq!(set.iter().collect::<Vec<_>>(), want);
                let from_runs: Vec<usize> = set.runs().into_iter().flatten().collect();
                assert_eq!(from_runs, want);
                // Runs are maximal: none touches the next.
                let runs = set.runs();
                assert!(runs.windows(2).all(|w| w[0].end < w[1].start));
                assert!(runs.iter().all(|r| !r.is_empty()));
                let mut union = FileSet::new(len);
                union.union_with(&set);
                assert_eq!(union.iter().collect::<Vec<_>>(), want);
            }
        }
    }
}
