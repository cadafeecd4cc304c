//! `lint`: every problem of the repository's mzbuild setup at once, in the
//! work tree or at a revision: every configuration strictly (unknown keys
//! are errors), cycles, unknown `MZFROM`, Dockerfiles without `FROM` or
//! `MZFROM`, pre-image inputs that cannot be computed, pre-image outputs
//! that git does not ignore (they would become inputs after the first
//! build), and, in the work tree, untracked files that git does not ignore
//! inside an image's context (they silently become inputs).
//!
//! Findings are [`ConfigError`]s. Ignore rules are read from the tree
//! itself (each `.gitignore` on the way to a path, plus
//! `.git/info/exclude`), so the check is the same for a revision.

use std::collections::BTreeSet;

use anyhow::Result;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::config::image::PreImage;
use crate::config::ConfigError;
use crate::discover::tree::Tree;
use crate::discover::Repo;
use crate::fingerprint;

/// Every finding, sorted by file. Configuration warnings are findings too
/// (lint is strict); `strict` only marks them as what `--strict` makes them
/// elsewhere, errors.
pub fn lint(tree: Tree, strict: bool) -> Result<Vec<ConfigError>> {
    let (repo, mut findings) = Repo::load_lenient(tree, strict)?;
    let ignores = Ignores::new(&repo.tree);
    for image in repo.images.values() {
        let yml = format!("{}/mzbuild.yml", image.dir);
        let dockerfile = format!("{}/Dockerfile", image.dir);
        let has_from = image.dockerfile.split(|b| *b == b'\n').any(|line| {
            let word: Vec<u8> = line
                .iter()
                .skip_while(|b| b.is_ascii_whitespace())
                .take_while(|b| !b.is_ascii_whitespace())
                .copied()
                .collect();
            word.eq_ignore_ascii_case(b"FROM") || word == b"MZFROM"
        });
        if !has_from {
            findings.push(ConfigError::in_file(
                &dockerfile,
                format!(
                    "image `{}`: the Dockerfile has no FROM or MZFROM line: start it with a base image",
                    image.name
                ),
            ));
        }
        if let Err(e) = fingerprint::inputs(&repo, image) {
            findings.push(ConfigError::in_file(&yml, format!("{e:#}")));
        }
        for (i, pre) in image.config.pre_images.iter().enumerate() {
            let outputs: Vec<String> = match pre {
                PreImage::Copy(c) => vec![c.destination.clone()],
                PreImage::CargoBuild(cb) => cb
                    .bins
                    .iter()
                    .chain(&cb.examples)
                    .cloned()
                    .chain(cb.extract.values().flatten().map(|(_, dst)| dst.clone()))
                    .collect(),
            };
            for out in outputs {
                let path = format!("{}/{}", image.dir, out.trim_end_matches('/'));
                let is_dir = matches!(pre, PreImage::Copy(_));
                if !ignores.is_ignored(&path, is_dir) {
                    let top = out.split('/').next().unwrap_or(&out);
                    findings.push(ConfigError::in_file(
                        &yml,
                        format!(
                            "pre-image #{} writes {path}, which git does not ignore: once built it becomes an input and \
                             the fingerprint changes after every build; add `/{top}` to {}/.gitignore",
                            i + 1,
                            image.dir
                        ),
                    ));
                }
            }
        }
    }
    // Untracked, not ignored files inside image contexts (work tree only).
    if let (None, Some(index)) = (&repo.tree.rev, repo.tree.index()) {
        let tracked: BTreeSet<&str> = index.entries.iter().map(|e| e.path.as_str()).collect();
        for image in repo.images.values() {
            for f in repo.tree.under(&image.dir) {
                if !tracked.contains(f.as_str()) {
                    findings.push(ConfigError::in_file(
                        f,
                        format!(
                            "untracked and not git-ignored inside image `{}`'s context, so it is an input of the image: \
                             commit it (`git add`), delete it, or git-ignore it",
                            image.name
                        ),
                    ));
                }
            }
        }
    }
    findings.sort_by(|a, b| a.path().cmp(&b.path()).then_with(|| a.to_string().cmp(&b.to_string())));
    findings.dedup();
    Ok(findings)
}

/// Git's ignore rules as the tree holds them.
struct Ignores {
    exclude: Option<Gitignore>,
    /// (directory, its `.gitignore`), for every `.gitignore` of the tree.
    files: Vec<(String, Gitignore)>,
}

impl Ignores {
    fn new(tree: &Tree) -> Ignores {
        let exclude =
            std::fs::read_to_string(tree.git.common_dir.join("info").join("exclude")).ok().map(|text| build("", &text));
        let files = tree
            .files
            .iter()
            .filter(|f| *f == ".gitignore" || f.ends_with("/.gitignore"))
            .filter_map(|f| {
                let dir = f.strip_suffix(".gitignore").unwrap_or("").trim_end_matches('/').to_string();
                let text = String::from_utf8(tree.read(f).ok()?).ok()?;
                Some((dir.clone(), build(&dir, &text)))
            })
            .collect();
        Ignores { exclude, files }
    }

    /// Whether git ignores `path` (or a directory above it): deeper
    /// `.gitignore` files take precedence, `.git/info/exclude` comes last.
    fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        let mut verdict = None;
        let full = std::path::Path::new(path);
        for (dir, gi) in &self.files {
            let inside = dir.is_empty() || path.starts_with(&format!("{dir}/"));
            if !inside {
                continue;
            }
            let m = gi.matched_path_or_any_parents(full, is_dir);
            if m.is_ignore() {
                verdict = Some(true);
            } else if m.is_whitelist() {
                verdict = Some(false);
            }
        }
        if verdict.is_none() {
            if let Some(gi) = &self.exclude {
                verdict = Some(gi.matched_path_or_any_parents(full, is_dir).is_ignore());
            }
        }
        verdict.unwrap_or(false)
    }
}

/// The rules of one ignore file in `dir` (repository-relative: paths are
/// matched relative to the repository root).
fn build(dir: &str, text: &str) -> Gitignore {
    let mut b = GitignoreBuilder::new(dir);
    for line in text.lines() {
        let _ = b.add_line(None, line);
    }
    b.build().unwrap_or_else(|_| Gitignore::empty())
}
