//! `lint`: every problem of the repository's mzbuild setup at once, in the
//! work tree or at a revision: every configuration error of every image
//! (broken or not, each pre-image checked even when another is wrong),
//! empty copies, cycles, unknown `MZFROM`, Dockerfiles without `FROM` or
//! `MZFROM`, pre-image inputs that cannot be computed, pre-image outputs
//! that git does not ignore (they would become inputs after the first
//! build).
//!
//! Notes, which are not problems (they stop no push): unknown keys that are
//! no near miss of a known one (the original ignores them, and real
//! configurations carry some; problems under `--strict`), and, in the work
//! tree, files not yet committed that git does not ignore inside an image's
//! context (they are inputs: normal while working, once, in one note).
//!
//! Notes too: what keeps images from being reproducible (`ADD <url>`, `FROM`
//! a mutable tag, and `RUN` on a builder that cannot clamp file times).
//!
//! Problems are [`ConfigError`]s. Ignore rules are read from the tree
//! itself (each `.gitignore` on the way to a path, plus
//! `.git/info/exclude`), so the check is the same for a revision.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::config::image::PreImage;
use crate::config::ConfigError;
use crate::discover::Repo;
use crate::docker::BuilderFeatures;
use crate::git::tree::Tree;
use crate::preimage::{self, InputCache};

/// What lint found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Sorted by file, each once.
    pub problems: Vec<ConfigError>,
    pub notes: Vec<String>,
}

/// Every finding. Configuration warnings are problems too (lint is
/// strict), but for unknown keys, which are notes unless `strict`.
pub fn lint(tree: Tree, strict: bool) -> Result<Findings> {
    lint_for(tree, strict, None)
}

/// [`lint`], with notes on what cannot be reproducible; `builder` is what
/// the current builder can do, when known (see [`reproducibility_notes`]).
pub fn lint_for(tree: Tree, strict: bool, builder: Option<BuilderFeatures>) -> Result<Findings> {
    let (repo, mut findings) = Repo::load_lenient(tree, strict)?;
    let mut notes = Vec::new();
    for w in &repo.warnings {
        match w {
            ConfigError::UnknownKey { .. } => notes.push(w.to_string()),
            _ => findings.push(w.clone()),
        }
    }
    // Each broken image's own problems; those of its dependants are not
    // theirs.
    for b in repo.broken.values() {
        findings.extend(b.errors.iter().filter(|e| !matches!(e, ConfigError::BrokenDependency { .. })).cloned());
    }
    let ignores = Ignores::new(&repo.tree);
    let images: Vec<_> = repo.images.values().chain(repo.broken.values().filter_map(|b| b.image.as_ref())).collect();
    let mut cache = InputCache::default();
    for image in images.iter().copied() {
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
        for (i, pre) in image.config.pre_images.iter().enumerate() {
            if let Err(e) = preimage::inputs(&repo, image, i, pre, &mut cache) {
                findings.push(ConfigError::in_file(&yml, format!("{e:#}")));
            }
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
    cache.notes.warn();
    let mut sorted: Vec<(&str, &[u8])> = images.iter().map(|i| (i.name.as_str(), i.dockerfile.as_slice())).collect();
    sorted.sort();
    notes.extend(reproducibility_notes(&sorted, builder));
    // Untracked, not ignored files inside image contexts (work tree only),
    // each in its innermost image.
    if let (None, Some(index)) = (&repo.tree.rev, repo.tree.index()) {
        let tracked: BTreeSet<&str> = index.entries.iter().map(|e| e.path.as_str()).collect();
        let mut untracked: BTreeMap<&str, &str> = BTreeMap::new();
        let mut by_depth = images.clone();
        by_depth.sort_by_key(|i| i.dir.len());
        for image in by_depth {
            for f in repo.tree.under(&image.dir) {
                if !tracked.contains(f.as_str()) {
                    untracked.insert(f, &image.name);
                }
            }
        }
        if !untracked.is_empty() {
            let files: String = untracked.iter().map(|(f, image)| format!("\n  {f} (image `{image}`)")).collect();
            notes.push(format!(
                "{} file(s) not committed yet (untracked, not git-ignored) are inputs of their images: commit them \
                 (`git add`) before pushing, or delete or git-ignore them:{files}",
                untracked.len()
            ));
        }
    }
    findings.sort_by(|a, b| a.path().cmp(&b.path()).then_with(|| a.to_string().cmp(&b.to_string())));
    findings.dedup();
    Ok(Findings { problems: findings, notes })
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

/// Notes on what keeps images from being bit-reproducible, from their
/// Dockerfiles (`images`: name and Dockerfile), one note per cause listing
/// the images: `ADD <url>` (the content can change under the URL), `FROM`
/// of a mutable tag rather than a digest, `MZFROM` or a stage, and, when
/// `builder` is known to neither honour `rewrite-timestamp` nor be the
/// `docker` driver (whose images mzbuild normalises), `RUN` steps (their
/// files carry the time of the build).
pub fn reproducibility_notes(images: &[(&str, &[u8])], builder: Option<BuilderFeatures>) -> Vec<String> {
    let mut run: Vec<&str> = vec![];
    let mut add_url: Vec<&str> = vec![];
    let mut tags: Vec<String> = vec![];
    for (name, dockerfile) in images {
        let text = String::from_utf8_lossy(dockerfile);
        // Continuation lines joined; comments dropped.
        let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
        let mut stages: BTreeSet<String> = BTreeSet::new();
        let (mut has_run, mut has_add_url) = (false, false);
        for line in joined.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let mut words = line.split_whitespace();
            let instruction = words.next().unwrap_or_default().to_ascii_uppercase();
            let args: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
            match instruction.as_str() {
                "RUN" => has_run = true,
                "ADD" => {
                    has_add_url |= args
                        .iter()
                        .any(|a| a.starts_with("http://") || a.starts_with("https://") || a.starts_with("git@"))
                }
                "FROM" => {
                    let Some(base) = args.first() else { continue };
                    if let (Some(kw), Some(alias)) = (args.get(1), args.get(2)) {
                        if kw.eq_ignore_ascii_case("as") {
                            stages.insert(alias.to_ascii_lowercase());
                        }
                    }
                    let pinned =
                        base.contains("@sha256:") || *base == "scratch" || stages.contains(&base.to_ascii_lowercase());
                    if !pinned {
                        tags.push(format!("{name} (FROM {base})"));
                    }
                }
                "MZFROM" => {
                    if let (Some(kw), Some(alias)) = (args.get(1), args.get(2)) {
                        if kw.eq_ignore_ascii_case("as") {
                            stages.insert(alias.to_ascii_lowercase());
                        }
                    }
                }
                _ => {}
            }
        }
        if has_run {
            run.push(name);
        }
        if has_add_url {
            add_url.push(name);
        }
    }
    let mut notes = vec![];
    if builder.is_some_and(|b| !b.rewrite_timestamp && !b.docker_driver) && !run.is_empty() {
        notes.push(format!(
            "not reproducible on the current builder: the files that RUN steps write carry the time of the build, and \
             this builder neither honours rewrite-timestamp (BuildKit 0.13 or later does) nor builds into the local \
             engine, where mzbuild clamps the times itself (the docker driver; see docs/reproducible.md): {}",
            run.join(", ")
        ));
    }
    if !add_url.is_empty() {
        notes.push(format!(
            "not reproducible: ADD of a URL reads whatever the URL serves at build time, which no fingerprint covers \
             (download it in a pre-image or pin it by checksum with ADD --checksum): {}",
            add_url.join(", ")
        ));
    }
    if !tags.is_empty() {
        notes.push(format!(
            "not reproducible: FROM a tag, which can move, rather than a digest (image@sha256:...) or MZFROM: {}",
            tags.join(", ")
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_on_what_cannot_be_reproducible() {
        let images: Vec<(&str, &[u8])> = vec![
            ("copy", b"MZFROM base AS b\nFROM b\nCOPY x /x\n"),
            ("pinned", b"FROM debian@sha256:0123 AS build\nFROM build\nRUN make\n"),
            ("tagged", b"FROM debian:bookworm\nADD --chmod=644 \\\n  https://example.com/x.tgz /x.tgz\n"),
        ];
        let docker = Some(BuilderFeatures { rewrite_timestamp: false, docker_driver: false });
        let notes = reproducibility_notes(&images, docker);
        assert_eq!(notes.len(), 3, "{notes:#?}");
        assert!(notes[0].contains("RUN steps") && notes[0].ends_with(": pinned"), "{}", notes[0]);
        assert!(
            notes[1].starts_with("not reproducible: ADD of a URL") && notes[1].ends_with(": tagged"),
            "{}",
            notes[1]
        );
        assert!(notes[2].ends_with(": tagged (FROM debian:bookworm)"), "{}", notes[2]);
        // A builder that honours rewrite-timestamp, the docker driver (mzbuild
        // normalises its images), or an unknown one: no RUN note.
        assert_eq!(
            reproducibility_notes(&images, Some(BuilderFeatures { rewrite_timestamp: false, docker_driver: true }))
                .len(),
            2
        );
        assert_eq!(
            reproducibility_notes(&images, Some(BuilderFeatures { rewrite_timestamp: true, docker_driver: false }))
                .len(),
            2
        );
        assert_eq!(reproducibility_notes(&images, None).len(), 2);
        assert!(reproducibility_notes(&images[..1], docker).is_empty());
    }
}
