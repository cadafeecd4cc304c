//! The engine of `diff` and `explain`: a revision's fingerprints (its
//! memo's answer, or computed from git's object store), and how two
//! computations differ, image by image.
//!
//! A revision's fingerprints are memoised by its tree object
//! ([`super::memo`]): asked again, nothing of it is listed or read. Images
//! are compared through their input lists by position, so that only the
//! files that differ cost a string.

use std::sync::Arc;

use anyhow::{Context, Result};

use super::memo::Memo;
use super::snapshot::{self, Change};
use super::Computed;
use crate::config::settings::Settings;
use crate::discover::Repo;
use crate::git::tree::Tree;
use crate::git::GitRepo;

/// A revision, looked up: its memoised answer, or its repository loaded
/// (listing, configuration, crate graph) to be fingerprinted.
pub enum RevSide {
    Answered(Option<Computed>),
    Loaded(Box<Repo>),
}

/// The part of `at_rev` (`diff`'s, which also takes the work tree) that needs no content hashes (and so can run
/// while the work tree is fingerprinted).
pub fn look_up_rev(git: Arc<GitRepo>, rev: &str, settings: &str, targets: &[String]) -> Result<RevSide> {
    let (commit, tree_id) = git.resolve_commit_and_tree(rev)?;
    if let Some(memo) = Memo::load_rev(&git, &tree_id, settings) {
        if targets.iter().any(|t| !memo.all_images().contains(t)) {
            return Ok(RevSide::Answered(None));
        }
        if let Some(c) = memo.answer_closure(targets) {
            c.warn();
            return Ok(RevSide::Answered(Some(c)));
        }
    }
    let tree = Tree::of_commit(git, rev, commit, tree_id)?;
    let repo = Repo::from_tree_at(tree, false)?;
    if targets.iter().any(|t| !repo.images.contains_key(t)) {
        return Ok(RevSide::Answered(None));
    }
    // Read ahead; an error is reported where the graph is needed.
    let _ = repo.crates();
    Ok(RevSide::Loaded(Box::new(repo)))
}

/// The rest of `at_rev`: fingerprint a loaded revision.
pub fn finish_rev(side: RevSide, rev: &str, settings: &Settings, targets: &[String]) -> Result<Option<Computed>> {
    let repo = match side {
        RevSide::Answered(c) => return Ok(c),
        RevSide::Loaded(repo) => repo,
    };
    let images = repo.resolve(targets)?;
    let computed = super::compute(&repo, &images, settings).with_context(|| format!("fingerprinting `{rev}`"))?;
    Ok(Some(computed))
}

/// How the file lists of two computations correspond, to compare images
/// by integers: `map` (each of `old`'s files to the index of the same path
/// in `new`, `u32::MAX` if none), where it maps runs of files to runs, and
/// the pairs of files whose contents or mode differ.
pub struct Pairing {
    map: Vec<u32>,
    /// `block[i]`: the end of the run from `i` that `map` sends to
    /// consecutive indices (`map[k + 1] == map[k] + 1`).
    block: Vec<usize>,
    /// (old index, new index), ascending.
    differs: Vec<(usize, usize)>,
}

pub fn pairing(old: &Computed, new: &Computed) -> Pairing {
    let map = path_map(old, new);
    let mut block = vec![0; map.len()];
    for i in (0..map.len()).rev() {
        let next = map[i] != u32::MAX && map.get(i + 1) == Some(&(map[i] + 1));
        block[i] = if next { block[i + 1] } else { i + 1 };
    }
    let differs = (0..map.len())
        .filter(|&i| map[i] != u32::MAX && old.hashes[i] != new.hashes[map[i] as usize])
        .map(|i| (i, map[i] as usize))
        .collect();
    Pairing { map, block, differs }
}

/// An image's inputs as ranges of indices, adjacent ones joined.
fn joined_runs(c: &Computed, name: &str) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for r in c.index_runs(name) {
        match out.last_mut() {
            Some(last) if last.1 == r.start => last.1 = r.end,
            _ => out.push((r.start, r.end)),
        }
    }
    out
}

/// A position in an image's joined runs.
struct Cursor<'a> {
    runs: &'a [(usize, usize)],
    run: usize,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(runs: &'a [(usize, usize)]) -> Cursor<'a> {
        Cursor { runs, run: 0, at: runs.first().map_or(0, |r| r.0) }
    }

    fn get(&self) -> Option<usize> {
        (self.run < self.runs.len()).then_some(self.at)
    }

    /// How many indices are left in the current run.
    fn left(&self) -> usize {
        self.runs[self.run].1 - self.at
    }

    fn advance(&mut self, n: usize) {
        self.at += n;
        if self.at >= self.runs[self.run].1 {
            self.run += 1;
            if let Some(r) = self.runs.get(self.run) {
                self.at = r.0;
            }
        }
    }
}

/// How image `name` differs between `old` and `new` (both have it; pure).
/// The two input lists are merged by index, a run of paths that both sides
/// share at a time, so the cost is in the differences, not in the inputs.
pub fn compare_computed(old: &Computed, new: &Computed, name: &str, pairing: &Pairing) -> Change {
    let (o, n) = (&old.images[name], &new.images[name]);
    let mut c = Change::default();
    let (old_runs, new_runs) = (joined_runs(old, name), joined_runs(new, name));
    let (mut i, mut j) = (Cursor::new(&old_runs), Cursor::new(&new_runs));
    loop {
        match (i.get(), j.get()) {
            (Some(a), Some(b)) => {
                let m = pairing.map[a];
                if m as usize == b {
                    // The same paths for `k` files on both sides: only the
                    // pairs whose contents differ are looked at.
                    let k = i.left().min(j.left()).min(pairing.block[a] - a);
                    let first = pairing.differs.partition_point(|d| d.0 < a);
                    for &(x, y) in pairing.differs[first..].iter().take_while(|d| d.0 < a + k) {
                        if old.hashes[x].digest != new.hashes[y].digest {
                            c.changed.push(new.paths[y].clone());
                        } else {
                            c.mode_changed.push(new.paths[y].clone());
                        }
                    }
                    i.advance(k);
                    j.advance(k);
                } else if m == u32::MAX || (m as usize) < b {
                    c.removed.push(old.paths[a].clone());
                    i.advance(1);
                } else {
                    c.added.push(new.paths[b].clone());
                    j.advance(1);
                }
            }
            (Some(a), None) => {
                c.removed.push(old.paths[a].clone());
                i.advance(1);
            }
            (None, Some(b)) => {
                c.added.push(new.paths[b].clone());
                j.advance(1);
            }
            (None, None) => break,
        }
    }
    snapshot::compare_words(
        &mut c,
        (&old.settings, &new.settings),
        (&o.extras, &n.extras),
        (o.depends_on.iter().map(|(d, f)| (d, f)), n.depends_on.iter().map(|(d, f)| (d, f))),
    );
    c
}

/// For each of `old`'s files, the index of the same path in `new`
/// (`u32::MAX` if none): both lists are sorted, one merge.
pub fn path_map(old: &Computed, new: &Computed) -> Vec<u32> {
    let mut map = vec![u32::MAX; old.paths.len()];
    let mut j = 0;
    for (i, p) in old.paths.iter().enumerate() {
        while j < new.paths.len() && new.paths[j] < *p {
            j += 1;
        }
        if j < new.paths.len() && new.paths[j] == *p {
            map[i] = j as u32;
        }
    }
    map
}
