//! Fingerprints, bit for bit as the original computes them.
//!
//! An image's fingerprint is SHA-1 over (for each input file, sorted by
//! path bytes) its git-style mode, its path and the SHA-1 of its contents;
//! then each pre-image's `extra()`; then the settings string; and finally,
//! in a second hash, its direct dependencies' names and fingerprints.
//!
//! Inputs are computed for all requested images first, and every distinct
//! file is read and hashed once, in parallel, however many images share it
//! (cargo-build images share most of the workspace).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
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
    let mut set: BTreeSet<&str> = BTreeSet::new();
    // The context, less the files of nested images.
    let nested: Vec<String> = repo
        .images
        .values()
        .filter(|o| o.dir.len() > image.dir.len() && o.dir.starts_with(&format!("{}/", image.dir)))
        .map(|o| format!("{}/", o.dir))
        .collect();
    for f in repo.tree.under(&image.dir) {
        if !nested.iter().any(|n| f.starts_with(n.as_str())) {
            set.insert(f);
        }
    }
    let what = |i: usize| format!("image `{}` ({}/mzbuild.yml), pre-image #{}", image.name, image.dir, i + 1);
    for (i, pre) in image.config.pre_images.iter().enumerate() {
        match pre {
            PreImage::Copy(c) => {
                let matched = copy_matches(repo, &c.source, &c.matching).with_context(|| what(i))?;
                if matched.is_empty() {
                    bail!(
                        "{}: copy source `{}` (matching `{}`) has no files git can see; fix `source`/`matching` or add the files",
                        what(i),
                        c.source,
                        c.matching
                    );
                }
                set.extend(matched);
            }
            PreImage::CargoBuild(cb) => {
                for required in ["Cargo.toml", "Cargo.lock"] {
                    if !repo.tree.contains(required) {
                        bail!(
                            "{}: cargo-build needs {required} at the repository root ({}), and git does not see one; \
                             create it (`cargo generate-lockfile` for Cargo.lock) and commit it",
                            what(i),
                            repo.root().display()
                        );
                    }
                    set.insert(required);
                }
                // `.cargo/config` is what the original hashes; its modern
                // name `.cargo/config.toml` matters just as much.
                for optional in [".cargo/config", ".cargo/config.toml"] {
                    if repo.tree.contains(optional) {
                        set.insert(optional);
                    }
                }
                set.extend(repo.tree.under("ci/builder").iter().map(String::as_str));
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
                for dir in &crates {
                    let excluded = [format!("{dir}/mzcompose"), format!("{dir}/mzcompose.py")];
                    for f in repo.tree.under(dir) {
                        let skip = excluded.iter().any(|e| f == e || (f.starts_with(e.as_str()) && f.as_bytes()[e.len()] == b'/'));
                        if !skip {
                            set.insert(f);
                        }
                    }
                }
            }
        }
    }
    Ok(set.into_iter().map(str::to_string).collect())
}

/// Files under `source` that the git pathspec `matching` (relative to
/// `source`) selects. As in git, `*` also matches `/`, and a pattern without
/// wildcards matches a path or a directory prefix.
pub fn copy_matches<'a>(repo: &'a Repo, source: &str, matching: &str) -> Result<Vec<&'a str>> {
    let files = repo.tree.under(source);
    let rel = |f: &'a String| &f[source.len() + 1..];
    if !matching.contains(['*', '?', '[']) {
        let m = matching.trim_end_matches('/');
        return Ok(files
            .iter()
            .filter(|f| {
                let r = rel(f);
                r == m || (r.starts_with(m) && r.as_bytes().get(m.len()) == Some(&b'/'))
            })
            .map(String::as_str)
            .collect());
    }
    let glob = globset::GlobBuilder::new(matching)
        .literal_separator(false)
        .build()
        .map_err(|e| anyhow!("`matching` `{matching}` is not a valid pattern: {e}"))?
        .compile_matcher();
    Ok(files.iter().filter(|f| glob.is_match(rel(f))).map(String::as_str).collect())
}

/// A hashed input file: its git-style mode and the SHA-1 of its contents.
#[derive(Clone, Copy, Debug)]
pub struct FileHash {
    pub mode: u16,
    pub digest: Fingerprint,
}

/// Hash every path once, on all cores.
pub fn hash_files(root: &std::path::Path, paths: &[&str]) -> Result<HashMap<String, FileHash>> {
    const CHUNK: usize = 32;
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(paths.len().div_ceil(CHUNK).max(1));
    let results: Vec<Result<Vec<(usize, FileHash)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<Vec<(usize, FileHash)>> {
                    let mut out = Vec::new();
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                        if start >= paths.len() {
                            return Ok(out);
                        }
                        for (i, p) in paths.iter().enumerate().skip(start).take(CHUNK) {
                            out.push((i, hash_file(root, p, &mut buf)?));
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("hashing thread panicked")).collect()
    });
    let mut map = HashMap::with_capacity(paths.len());
    for r in results {
        for (i, h) in r? {
            map.insert(paths[i].to_string(), h);
        }
    }
    Ok(map)
}

fn hash_file(root: &std::path::Path, rel: &str, buf: &mut [u8]) -> Result<FileHash> {
    let path = root.join(rel);
    let meta = std::fs::symlink_metadata(&path).with_context(|| format!("input file {rel} is missing"))?;
    let mode = if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_default();
        match std::fs::metadata(&path) {
            Err(_) => bail!("input {rel} is a dangling symlink (to `{target}`): point it at an existing file or remove it"),
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
    let all_inputs: Vec<(&Image, Vec<String>)> =
        images.iter().map(|i| Ok((*i, inputs(repo, i)?))).collect::<Result<_>>()?;
    let mut unique: Vec<&str> = all_inputs.iter().flat_map(|(_, ins)| ins.iter().map(String::as_str)).collect();
    unique.sort_unstable();
    unique.dedup();
    let hashes = hash_files(repo.root(), &unique)?;
    let settings_string = settings.fingerprint_string();
    let cargo_extra = settings.cargo_extra();
    let mut out: BTreeMap<String, Fingerprinted> = BTreeMap::new();
    for (image, ins) in all_inputs {
        let mut self_hash = Sha1::new();
        for path in &ins {
            let h = &hashes[path.as_str()];
            self_hash.update(h.mode.to_be_bytes());
            self_hash.update(path.as_bytes());
            self_hash.update(h.digest);
            self_hash.update([0u8]);
        }
        for pre in &image.config.pre_images {
            if let PreImage::CargoBuild(_) = pre {
                self_hash.update(cargo_extra.as_bytes());
            }
            self_hash.update([0u8]);
        }
        self_hash.update(settings_string.as_bytes());
        let mut full = Sha1::new();
        full.update(self_hash.finalize());
        for dep in &image.depends_on {
            let dep_fp = out.get(dep).ok_or_else(|| anyhow!("internal error: `{dep}` not fingerprinted before `{}`", image.name))?;
            full.update(dep.as_bytes());
            full.update(dep_fp.fingerprint);
            full.update([0u8]);
        }
        out.insert(image.name.clone(), Fingerprinted { fingerprint: full.finalize().into(), inputs: ins });
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
}
