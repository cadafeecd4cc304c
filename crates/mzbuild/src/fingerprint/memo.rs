//! Fingerprint memos: what a fingerprint computation produced, kept so that
//! the next one can skip the work it proves unchanged.
//!
//! At a revision, fingerprints are a pure function of the commit's tree
//! object, the settings and mzbuild's input rules (a symlink out of the
//! repository is an error there, see `Tree::content`): a memo in
//! `<git common dir>/mzbuild/revisions/<tree id>-<settings key>-<stamp>`
//! answers any later question about the same tree without listing or
//! reading it.
//!
//! In the work tree, a memo in `<git dir>/mzbuild/fingerprints/<settings
//! key>` holds, besides the answer, what it depended on: the listing (its
//! id: the listing cache makes an unchanged listing cheap to establish),
//! every configuration file read (`mzbuild.yml`, Dockerfiles, manifests,
//! with stat data taken before the read) and each input file's stat data
//! (taken before it was hashed). An answer is reused only when all of them
//! are unchanged, by git's rules (stat data too recent to tell a change
//! apart is not trusted; symlinks are read again, since their target can
//! change under the same link). When something changed, the memo still
//! gives the hash of every input whose stat data is unchanged, so only
//! changed files are read.
//!
//! Both kinds are keyed by the settings string (a SHA-1 prefix in the file
//! name, the whole string inside) and stamped with the binary's source hash
//! ([`cachefile::SOURCE`]): a rule change, or a corrupt file, cannot serve
//! an answer. At most [`KEEP_SETTINGS`] work-tree memos and [`KEEP_REVS`]
//! revision memos are kept (the least recently written go first).

use std::collections::BTreeMap;
use std::path::PathBuf;

use once_cell::sync::OnceCell;
use rayon::prelude::*;
use sha1::{Digest, Sha1};

use super::hash::{self, FileHash, HashStats};
use super::{Computed, Computed1, Fingerprint};
use crate::cachefile::stat::{self, Stat};
use crate::cachefile::{self, Dec, Enc, Short};
use crate::discover::{Image, Repo};
use crate::git::tree::Tree;
use crate::git::GitRepo;
use crate::preimage::Notes;

const MAGIC: &[u8] = b"mzbuild fingerprint memo v1\n";
/// Work-tree memos kept per work tree (one per settings string).
pub const KEEP_SETTINGS: usize = 8;
/// Revision memos kept per repository.
pub const KEEP_REVS: usize = 16;

/// The hashed inputs as stored: fixed-size records, looked at in place
/// (position u32, symlink u8, stat data, mode u16, content SHA-1, path
/// length u32), and their paths, one after the other.
struct Files {
    recs: Vec<u8>,
    blob: String,
    paths: OnceCell<Option<Vec<(usize, usize)>>>,
}

const REC: usize = 4 + 1 + stat::STAT_LEN + 2 + 20 + 4;

impl Files {
    fn len(&self) -> usize {
        self.recs.len() / REC
    }

    fn rec(&self, k: usize) -> &[u8] {
        &self.recs[k * REC..(k + 1) * REC]
    }

    fn pos(&self, k: usize) -> u32 {
        let r = self.rec(k);
        u32::from_le_bytes([r[0], r[1], r[2], r[3]])
    }

    fn link(&self, k: usize) -> bool {
        self.rec(k)[4] == 1
    }

    fn stat_bytes(&self, k: usize) -> &[u8] {
        &self.rec(k)[5..5 + stat::STAT_LEN]
    }

    fn stat(&self, k: usize) -> Stat {
        stat::stat_from(self.stat_bytes(k).try_into().unwrap())
    }

    fn hash(&self, k: usize) -> FileHash {
        let r = &self.rec(k)[5 + stat::STAT_LEN..];
        FileHash { mode: u16::from_le_bytes([r[0], r[1]]), digest: r[2..22].try_into().unwrap() }
    }

    /// Where each path is in `blob` (`None`: the section is corrupt).
    fn offsets(&self) -> Option<&Vec<(usize, usize)>> {
        self.paths
            .get_or_init(|| {
                let mut out = Vec::with_capacity(self.len());
                let mut start = 0;
                for k in 0..self.len() {
                    let r = &self.rec(k)[REC - 4..];
                    let end = start + u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize;
                    if !self.blob.is_char_boundary(end) || end > self.blob.len() {
                        return None;
                    }
                    out.push((start, end));
                    start = end;
                }
                (start == self.blob.len()).then_some(out)
            })
            .as_ref()
    }

    fn path(&self, k: usize) -> Option<&str> {
        let (a, b) = self.offsets()?[k];
        Some(&self.blob[a..b])
    }

    /// The record of tree position `pos`.
    fn find(&self, pos: u32) -> Option<usize> {
        let (recs, _) = self.recs.as_chunks::<REC>();
        recs.binary_search_by_key(&pos, |r| u32::from_le_bytes([r[0], r[1], r[2], r[3]])).ok()
    }

    fn find_path(&self, path: &str) -> Option<usize> {
        let offsets = self.offsets()?;
        offsets.binary_search_by(|&(a, b)| self.blob[a..b].cmp(path)).ok()
    }
}

pub struct Memo {
    path: PathBuf,
    /// Work tree: when the run that wrote it started (stat data is trusted
    /// relative to it).
    at: u32,
    /// Work tree: the listing id; revision: the tree object id.
    key: Vec<u8>,
    settings: String,
    /// Every image of the tree, so that "all images" can be answered.
    all_images: Vec<String>,
    /// Work tree: the files configuration was read from.
    reads: Vec<(String, Option<Stat>)>,
    /// Sorted by position (and so by path).
    files: Files,
    images: BTreeMap<String, Computed1>,
    /// Work tree: whether every read is unchanged (checked once).
    reads_ok: OnceCell<bool>,
}

fn settings_key(settings: &str) -> String {
    crate::git::hex(&Sha1::digest(settings.as_bytes()))[..16].to_string()
}

fn rev_dir(git: &GitRepo) -> PathBuf {
    cachefile::dir(&git.common_dir).join("revisions")
}

fn worktree_dir(git: &GitRepo) -> PathBuf {
    cachefile::dir(&git.git_dir).join("fingerprints")
}

/// The memo file for `tree` (work tree or revision) and `settings`.
fn path_for(tree: &Tree, settings: &str) -> PathBuf {
    match &tree.rev {
        Some(rev) => rev_path(&tree.git, &rev.tree, settings),
        None => worktree_dir(&tree.git).join(settings_key(settings)),
    }
}

/// (The binary's stamp is in the name too: work trees of one repository
/// share these, and may run different builds of mzbuild.)
fn rev_path(git: &GitRepo, tree_id: &str, settings: &str) -> PathBuf {
    rev_dir(git).join(format!("{tree_id}-{}-{}", settings_key(settings), &cachefile::SOURCE[..8]))
}

fn key_of(tree: &Tree) -> Vec<u8> {
    match &tree.rev {
        Some(rev) => rev.tree.as_bytes().to_vec(),
        None => tree.listing_id.to_vec(),
    }
}

impl Memo {
    /// The memo for `repo`'s tree and `settings`, if there is a usable one.
    pub fn load(repo: &Repo, settings: &str) -> Option<Memo> {
        let memo = Memo::read(path_for(&repo.tree, settings))?;
        (memo.settings == settings).then_some(memo)
    }

    /// The memo of the revision whose tree object is `tree_id`, without
    /// listing the revision.
    pub fn load_rev(git: &GitRepo, tree_id: &str, settings: &str) -> Option<Memo> {
        if !git.caching {
            return None;
        }
        let memo = Memo::read(rev_path(git, tree_id, settings))?;
        (memo.settings == settings && memo.key == tree_id.as_bytes()).then_some(memo)
    }

    fn read(path: PathBuf) -> Option<Memo> {
        let bytes = cachefile::read(&path, MAGIC)?;
        match decode(&bytes, path.clone()) {
            Ok(m) => Some(m),
            Err(_) => {
                cachefile::corrupt(&path);
                None
            }
        }
    }

    /// The fingerprints of `images` (closed under dependencies) if this
    /// memo proves that nothing they depend on changed.
    pub fn answer(&self, repo: &Repo, images: &[&Image]) -> Option<Computed> {
        let tree = &repo.tree;
        if self.key != key_of(tree) {
            return None;
        }
        for image in images {
            let c = self.images.get(&image.name)?;
            let deps_same = c.depends_on.len() == image.depends_on.len()
                && c.depends_on
                    .iter()
                    .zip(&image.depends_on)
                    .all(|((name, fp), d)| name == d && self.images.get(name).is_some_and(|dc| dc.fingerprint == *fp));
            if !deps_same || c.extras.len() != image.config.pre_images.len() {
                return None;
            }
        }
        if tree.rev.is_none() && !self.reads_ok(tree) {
            return None;
        }
        let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        self.answer_for(&names, Some(tree))
    }

    /// The fingerprints of `targets` and their dependencies (every image
    /// when empty), if this revision memo has them all.
    pub fn answer_closure(&self, targets: &[String]) -> Option<Computed> {
        if targets.is_empty() {
            let names: Vec<&str> = self.all_images.iter().map(String::as_str).collect();
            return self.answer_for(&names, None);
        }
        let mut names: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
        let mut todo: Vec<&str> = targets.iter().map(String::as_str).collect();
        while let Some(n) = todo.pop() {
            if names.insert(n) {
                todo.extend(self.images.get(n)?.depends_on.iter().map(|(d, _)| d.as_str()));
            }
        }
        let names: Vec<&str> = names.into_iter().collect();
        self.answer_for(&names, None)
    }

    /// The names of every image of the memo's tree.
    pub fn all_images(&self) -> &[String] {
        &self.all_images
    }

    fn answer_for(&self, names: &[&str], tree: Option<&Tree>) -> Option<Computed> {
        // The positions the images need, as runs, merged.
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for name in names {
            runs.extend_from_slice(&self.images.get(*name)?.runs);
        }
        runs.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(runs.len());
        for (a, b) in runs {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        let files = &self.files;
        let mut wanted: Vec<usize> = Vec::new();
        for (a, b) in merged {
            let start = files.find(a)?;
            let end = start + (b - a) as usize;
            // Every position of the run must be there, in order.
            if end > files.len() || files.pos(end - 1) != b - 1 {
                return None;
            }
            wanted.extend(start..end);
        }
        let work_tree = tree.filter(|t| t.rev.is_none());
        if let Some(tree) = work_tree {
            if !wanted.par_iter().all(|&k| self.unchanged(tree, k)) {
                return None;
            }
        }
        // Paths: the tree's (the listing is the memo's), else the memo's.
        let paths: Vec<String> = match work_tree {
            Some(tree) => wanted.iter().map(|&k| tree.files[files.pos(k) as usize].clone()).collect(),
            None => wanted.iter().map(|&k| files.path(k).map(str::to_string)).collect::<Option<_>>()?,
        };
        let images = names.iter().map(|n| (n.to_string(), self.images[*n].clone())).collect();
        let stats = HashStats { memo: wanted.len(), memo_hit: true, ..HashStats::default() };
        Some(Computed {
            settings: self.settings.clone(),
            images,
            positions: wanted.iter().map(|&k| files.pos(k)).collect(),
            paths,
            hashes: wanted.iter().map(|&k| files.hash(k)).collect(),
            stats,
        })
    }

    /// Whether work-tree input #`k` of the memo is as the memo saw it.
    fn unchanged(&self, tree: &Tree, k: usize) -> bool {
        let Some(rel) = tree.files.get(self.files.pos(k) as usize) else { return false };
        if self.files.link(k) {
            let mut buf = vec![0u8; 64 * 1024];
            return hash::hash_file(&tree.root, rel, &mut buf).is_ok_and(|h| h == self.files.hash(k));
        }
        cachefile::lstat(&tree.root.join(rel))
            .is_some_and(|now| cachefile::unchanged(self.files.stat_bytes(k), &now, self.at))
    }

    /// Whether every configuration file the memo's answers were computed
    /// from is unchanged.
    fn reads_ok(&self, tree: &Tree) -> bool {
        *self.reads_ok.get_or_init(|| {
            self.reads.par_iter().all(|(rel, stat)| {
                let now = cachefile::stat(&tree.root.join(rel));
                now == *stat && stat.as_ref().is_none_or(|s| cachefile::trusted(s, self.at))
            })
        })
    }

    /// The hash of work-tree file #`at` of `tree`, if the memo saw it with
    /// stat data `now` (and can trust that).
    pub fn known(&self, tree: &Tree, at: usize, now: &Stat) -> Option<FileHash> {
        if tree.rev.is_some() {
            return None;
        }
        let files = &self.files;
        let k = if self.key == tree.listing_id { files.find(at as u32)? } else { files.find_path(&tree.files[at])? };
        (!files.link(k) && cachefile::unchanged(files.stat_bytes(k), now, self.at)).then(|| files.hash(k))
    }

    /// Write the memo of `computed` (with the stat data each input was
    /// hashed with, `None` for symlinks), keeping what is still valid of
    /// the `previous` memo for the same tree and settings.
    pub fn store(repo: &Repo, computed: &Computed, stats: &[Option<Stat>], previous: Option<Memo>) {
        let tree = &repo.tree;
        let key = key_of(tree);
        let work_tree = tree.rev.is_none();
        let mut images = computed.images.clone();
        let mut reads: BTreeMap<String, Option<Stat>> = BTreeMap::new();
        // Answers of other images stay good while what they depend on is
        // unchanged: at a revision, always; in the work tree, while the
        // listing and the configuration are (inputs are checked when used).
        let prev = previous.filter(|p| p.key == key && (!work_tree || p.reads_ok(tree)));
        if let Some(prev) = &prev {
            for (name, c) in &prev.images {
                images.entry(name.clone()).or_insert_with(|| c.clone());
            }
            reads.extend(prev.reads.iter().cloned());
        }
        if work_tree {
            reads.extend(tree.reads());
        }
        // The files: this run's, and the previous memo's others (stat data
        // only if it was trusted when recorded: it stays trusted), merged by
        // position.
        let mut recs =
            Vec::with_capacity((computed.positions.len() + prev.as_ref().map_or(0, |p| p.files.len())) * REC);
        let mut blob = String::with_capacity(computed.paths.iter().map(String::len).sum());
        let mut push = |pos: u32, link: bool, stat: &[u8], hash: &FileHash, path: &str| {
            recs.extend_from_slice(&pos.to_le_bytes());
            recs.push(u8::from(link));
            recs.extend_from_slice(stat);
            recs.extend_from_slice(&hash.mode.to_le_bytes());
            recs.extend_from_slice(&hash.digest);
            recs.extend_from_slice(&(path.len() as u32).to_le_bytes());
            blob.push_str(path);
        };
        let old = prev.as_ref().map(|p| &p.files);
        let (mut i, mut j) = (0, 0);
        let n_old = old.map_or(0, Files::len);
        let new_stat = |k: usize| stats.get(k).copied().flatten();
        while i < computed.positions.len() || j < n_old {
            let new_pos = computed.positions.get(i).copied();
            let old_pos = old.filter(|_| j < n_old).map(|o| o.pos(j));
            match (new_pos, old_pos) {
                (Some(np), op) if op.is_none_or(|op| np <= op) => {
                    let stat = new_stat(i);
                    let bytes = stat::stat_bytes(&stat.unwrap_or_default());
                    push(np, work_tree && stat.is_none(), &bytes, &computed.hashes[i], &computed.paths[i]);
                    if op == Some(np) {
                        j += 1;
                    }
                    i += 1;
                }
                (_, Some(op)) => {
                    let o = old.expect("an old file");
                    let keep = !work_tree || o.link(j) || cachefile::trusted(&o.stat(j), prev.as_ref().unwrap().at);
                    if let (true, Some(path)) = (keep, o.path(j)) {
                        push(op, o.link(j), o.stat_bytes(j), &o.hash(j), path);
                    }
                    j += 1;
                }
                _ => unreachable!("the loop runs while a side has files"),
            }
        }
        let memo = Memo {
            path: path_for(tree, &computed.settings),
            at: if work_tree { tree.started } else { 0 },
            key,
            settings: computed.settings.clone(),
            // Broken images too: "every image" is not answered without them.
            all_images: repo
                .images
                .keys()
                .chain(repo.broken.values().filter_map(|b| b.name.as_ref()))
                .cloned()
                .collect(),
            reads: reads.into_iter().collect(),
            files: Files { recs, blob, paths: OnceCell::new() },
            images,
            reads_ok: OnceCell::new(),
        };
        cachefile::save(&memo.path, &encode(&memo));
        if let Some(dir) = memo.path.parent() {
            cachefile::prune(dir, if work_tree { KEEP_SETTINGS } else { KEEP_REVS }, &memo.path);
        }
    }
}

fn encode(m: &Memo) -> Vec<u8> {
    let mut e = Enc::new(MAGIC);
    e.u32(m.at);
    e.bytes(&m.key);
    e.str(&m.settings);
    e.len(m.all_images.len());
    for n in &m.all_images {
        e.str(n);
    }
    e.len(m.reads.len());
    for (p, s) in &m.reads {
        e.str(p);
        e.opt_stat(s);
    }
    e.len(m.files.len());
    e.raw(&m.files.recs);
    e.str(&m.files.blob);
    e.len(m.images.len());
    for (name, c) in &m.images {
        e.str(name);
        e.raw(&c.fingerprint.0);
        e.len(c.extras.len());
        for x in &c.extras {
            e.str(x);
        }
        e.len(c.depends_on.len());
        for (d, fp) in &c.depends_on {
            e.str(d);
            e.raw(&fp.0);
        }
        e.len(c.runs.len());
        for (a, b) in &c.runs {
            e.u32(*a);
            e.u32(*b);
        }
        e.u8(u8::from(c.notes.config_toml_left_out));
        e.len(c.notes.unfollowed.len());
        for (a, b, d) in &c.notes.unfollowed {
            e.str(a);
            e.str(b);
            e.str(d);
        }
    }
    e.finish()
}

fn decode(bytes: &[u8], path: PathBuf) -> Short<Memo> {
    let mut d = Dec::open(bytes, MAGIC)?;
    let at = d.u32()?;
    let key = d.bytes()?.to_vec();
    let settings = d.string()?;
    let n = d.count()?;
    let mut all_images = Vec::with_capacity(n);
    for _ in 0..n {
        all_images.push(d.string()?);
    }
    let n = d.count()?;
    let mut reads = Vec::with_capacity(n);
    for _ in 0..n {
        reads.push((d.string()?, d.opt_stat()?));
    }
    let n = d.count()?;
    let recs = d.raw(n.checked_mul(REC).ok_or(cachefile::Unusable::Corrupt)?)?.to_vec();
    let blob = d.string()?;
    let files = Files { recs, blob, paths: OnceCell::new() };
    if (1..n).any(|k| files.pos(k - 1) >= files.pos(k)) {
        return Err(cachefile::Unusable::Corrupt);
    }
    let n = d.count()?;
    let mut images = BTreeMap::new();
    for _ in 0..n {
        let name = d.string()?;
        let fingerprint = Fingerprint(d.digest()?);
        let k = d.count()?;
        let mut extras = Vec::with_capacity(k);
        for _ in 0..k {
            extras.push(d.string()?);
        }
        let k = d.count()?;
        let mut depends_on = Vec::with_capacity(k);
        for _ in 0..k {
            depends_on.push((d.string()?, Fingerprint(d.digest()?)));
        }
        let k = d.count()?;
        let mut runs = Vec::with_capacity(k);
        for _ in 0..k {
            let (a, b) = (d.u32()?, d.u32()?);
            if a >= b {
                return Err(cachefile::Unusable::Corrupt);
            }
            runs.push((a, b));
        }
        let mut notes = Notes { config_toml_left_out: d.u8()? == 1, ..Notes::default() };
        for _ in 0..d.count()? {
            notes.unfollowed.insert((d.string()?, d.string()?, d.string()?));
        }
        images.insert(name, Computed1 { fingerprint, extras, depends_on, runs, notes });
    }
    if !d.done() {
        return Err(cachefile::Unusable::Corrupt);
    }
    Ok(Memo { path, at, key, settings, all_images, reads, files, images, reads_ok: OnceCell::new() })
}
