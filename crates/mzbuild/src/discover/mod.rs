//! Discovery: what the repository holds. [`tree`] lists the files git sees;
//! every git-visible `mzbuild.yml` with its Dockerfile is an [`Image`]
//! (except the root's own and, as in the original, those under
//! `misc/python/`, where Materialize keeps the Python mzbuild's package)
//! ([`dockerfile`] finds its `MZFROM` dependencies); [`graph`] orders them and
//! resolves target sets. [`Repo`] is the result, with the workspace
//! configuration read once beside it.

pub mod dockerfile;
pub mod git;
pub mod graph;
pub mod index;
pub mod listing;
pub mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use once_cell::sync::OnceCell;

use crate::config::crates::CrateGraph;
use crate::config::image::{self, ImageConfig, PreImage};
use crate::config::workspace::WorkspaceConfig;
use crate::config::{ConfigError, ConfigErrors};
use crate::preimage::copy;
use tree::Tree;

#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    /// Repository-relative directory: the build context.
    pub dir: String,
    pub config: ImageConfig,
    pub dockerfile: Vec<u8>,
    /// Direct dependencies (`MZFROM`), sorted, unique.
    pub depends_on: Vec<String>,
}

/// A discovered repository: its files, its images and its workspace
/// configuration.
pub struct Repo {
    pub tree: Tree,
    pub images: BTreeMap<String, Image>,
    pub workspace: WorkspaceConfig,
    /// Configuration warnings (unknown keys), to show once.
    pub warnings: Vec<ConfigError>,
    crates: OnceCell<CrateGraph>,
}

impl Repo {
    /// Discover and validate every image. All configuration errors of the
    /// repository are reported together, as one [`ConfigErrors`].
    pub fn load(root: &Path, strict: bool) -> Result<Repo> {
        Repo::load_with(root, strict, true)
    }

    /// [`Repo::load`]; `caching: false` neither reads nor writes mzbuild's
    /// caches.
    pub fn load_with(root: &Path, strict: bool, caching: bool) -> Result<Repo> {
        let tree = Tree::list_with(root, caching)?;
        let workspace = WorkspaceConfig::load(&tree)?;
        Repo::from_tree(tree, workspace, strict)
    }

    /// The repository as it is at commit `rev` (of the work tree at `root`),
    /// read from git's object store: nothing is checked out, the work tree
    /// is not looked at.
    pub fn load_rev(root: &Path, rev: &str, strict: bool, caching: bool) -> Result<Repo> {
        Repo::from_tree_at(Tree::list_rev_with(root, rev, caching)?, strict)
    }

    /// The repository at commit `rev`, sharing this one's object reader and
    /// caches.
    pub fn at_rev(&self, rev: &str, strict: bool) -> Result<Repo> {
        Repo::from_tree_at(self.tree.at_rev(rev)?, strict)
    }

    /// The repository at a revision's tree (see [`Tree::of_commit`]).
    pub fn from_tree_at(tree: Tree, strict: bool) -> Result<Repo> {
        let label = tree.label();
        prefetch_config(&tree);
        let workspace = WorkspaceConfig::load(&tree).with_context(|| format!("at {label}"))?;
        Repo::from_tree(tree, workspace, strict).with_context(|| format!("the mzbuild configuration at {label}"))
    }

    pub fn from_tree(tree: Tree, workspace: WorkspaceConfig, strict: bool) -> Result<Repo> {
        let (images, mut errors, mut warnings) = discover_images(&tree);
        warnings.extend(workspace.warnings.iter().cloned());
        if strict && !warnings.is_empty() {
            errors.extend(warnings.drain(..).map(|w| ConfigError::Strict(Box::new(w))));
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors).into());
        }
        Ok(Repo { tree, images, workspace, warnings, crates: OnceCell::new() })
    }

    /// For `lint`: every image that could be read, with every problem of
    /// the configuration (warnings too, marked as errors under `strict`;
    /// cycles among the images that exist even when other things are
    /// wrong).
    pub fn load_lenient(tree: Tree, strict: bool) -> Result<(Repo, Vec<ConfigError>)> {
        prefetch_config(&tree);
        let workspace = WorkspaceConfig::load(&tree)?;
        let (images, mut errors, warnings) = discover_images(&tree);
        let warnings = warnings.into_iter().chain(workspace.warnings.iter().cloned());
        if strict {
            errors.extend(warnings.map(|w| ConfigError::Strict(Box::new(w))));
        } else {
            errors.extend(warnings);
        }
        if !errors.iter().any(|e| matches!(e, ConfigError::Cycle(_))) {
            let mut known = images.clone();
            for image in known.values_mut() {
                image.depends_on.retain(|d| images.contains_key(d));
            }
            if let Some(cycle) = graph::find_cycle(&known) {
                errors.push(ConfigError::Cycle(cycle));
            }
        }
        let repo = Repo { tree, images, workspace, warnings: vec![], crates: OnceCell::new() };
        Ok((repo, errors))
    }

    pub fn root(&self) -> &Path {
        &self.tree.root
    }

    /// The cargo workspace's crates, read on first use (only cargo-build
    /// images need them).
    pub fn crates(&self) -> Result<&CrateGraph> {
        self.crates.get_or_try_init(|| {
            let manifest = self.workspace.manifest.as_ref().context("reading Cargo.toml")?;
            CrateGraph::load(&self.tree, manifest)
        })
    }

    pub fn image(&self, name: &str) -> Result<&Image> {
        self.images.get(name).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown image `{name}`; `cargo xtask mzbuild list` shows the images ({})",
                self.images.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The targets plus all their transitive dependencies, dependencies
    /// first, ties broken by name. An empty target list means every image.
    pub fn resolve(&self, targets: &[String]) -> Result<Vec<&Image>> {
        for t in targets {
            self.image(t)?;
        }
        Ok(graph::resolve(&self.images, targets).into_iter().map(|n| &self.images[n]).collect())
    }

    /// Directories of the images nested inside `image`'s directory: their
    /// files belong to them, not to `image`.
    pub fn nested_dirs<'a>(&'a self, image: &Image) -> impl Iterator<Item = &'a str> {
        let prefix = format!("{}/", image.dir);
        self.images.values().filter(move |o| o.dir.starts_with(&prefix)).map(|o| o.dir.as_str())
    }

    /// Images that (directly) depend on `name`.
    pub fn dependants(&self, name: &str) -> Vec<&str> {
        self.images.values().filter(|i| i.depends_on.iter().any(|d| d == name)).map(|i| i.name.as_str()).collect()
    }
}

/// At a revision, read what discovery and the crate graph read in one
/// batch from the object store, instead of one request per file (a no-op
/// for the work tree).
fn prefetch_config(tree: &Tree) {
    tree.prefetch(|p| {
        let name = p.rsplit('/').next().unwrap_or(p);
        matches!(name, "mzbuild.yml" | "Dockerfile" | "Cargo.toml")
    });
}

/// The directory whose images the original's discovery skips (it prunes
/// `<root>/misc/python` from its walk).
const SKIPPED: &str = "misc/python/";

/// Every image of the tree, with all the configuration errors and warnings.
fn discover_images(tree: &Tree) -> (BTreeMap<String, Image>, Vec<ConfigError>, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut by_name: BTreeMap<String, Image> = BTreeMap::new();
    for yml in tree.files.iter().filter(|f| f.ends_with("/mzbuild.yml") && !f.starts_with(SKIPPED)) {
        let dir = &yml[..yml.len() - "/mzbuild.yml".len()];
        let bytes = match tree.read(yml) {
            Ok(b) => b,
            Err(e) => {
                errors.push(ConfigError::Unreadable { path: yml.clone(), error: format!("{:#}", e.root_cause()) });
                continue;
            }
        };
        let parsed = image::parse(yml, &bytes);
        errors.extend(parsed.errors);
        warnings.extend(parsed.warnings);
        let Some(config) = parsed.config else { continue };
        let dockerfile_path = format!("{dir}/Dockerfile");
        if !tree.contains(&dockerfile_path) {
            errors.push(ConfigError::MissingDockerfile {
                yml: yml.clone(),
                image: config.name.clone(),
                dockerfile: dockerfile_path,
            });
            continue;
        }
        let dockerfile = match tree.read(&dockerfile_path) {
            Ok(d) => d,
            Err(e) => {
                errors.push(ConfigError::Unreadable { path: dockerfile_path, error: format!("{:#}", e.root_cause()) });
                continue;
            }
        };
        if let Some(other) = by_name.get(&config.name) {
            errors.push(ConfigError::DuplicateName {
                name: config.name.clone(),
                first: format!("{}/mzbuild.yml", other.dir),
                second: yml.clone(),
            });
            continue;
        }
        for (i, pre) in config.pre_images.iter().enumerate() {
            let PreImage::Copy(copy) = pre else { continue };
            let files = tree.range(&copy.source).len();
            // A source without files, or a bad pattern, is an error when the
            // image's inputs are computed.
            if files > 0 && copy::matches(tree, copy).is_ok_and(|m| m.is_empty()) {
                warnings.push(ConfigError::EmptyCopy {
                    yml: yml.clone(),
                    image: config.name.clone(),
                    index: i + 1,
                    source: copy::shown(&copy.source).to_string(),
                    matching: copy.matching.clone(),
                    files,
                });
            }
        }
        let depends_on: BTreeSet<String> = dockerfile::dependencies(&dockerfile).into_iter().map(|d| d.name).collect();
        let image = Image {
            name: config.name.clone(),
            dir: dir.to_string(),
            depends_on: depends_on.into_iter().collect(),
            config,
            dockerfile,
        };
        by_name.insert(image.name.clone(), image);
    }
    // Unknown MZFROM targets are checked once every name is known.
    for image in by_name.values() {
        for d in dockerfile::dependencies(&image.dockerfile) {
            if !by_name.contains_key(&d.name) {
                errors.push(ConfigError::UnknownMzfrom {
                    dockerfile: format!("{}/Dockerfile", image.dir),
                    line: d.line,
                    name: d.name,
                    known: by_name.keys().cloned().collect(),
                });
            }
        }
    }
    if errors.is_empty() {
        if let Some(cycle) = graph::find_cycle(&by_name) {
            errors.push(ConfigError::Cycle(cycle));
        }
    }
    (by_name, errors, warnings)
}
