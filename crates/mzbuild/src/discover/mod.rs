//! Discovery: what the repository holds. [`crate::git::tree`] lists the files git sees;
//! every git-visible `mzbuild.yml` with its Dockerfile is an [`Image`]
//! (except the root's own and, as in the original, those under
//! `misc/python/`, where Materialize keeps the Python mzbuild's package)
//! ([`dockerfile`] finds its `MZFROM` dependencies); [`graph`] orders them and
//! resolves target sets. [`Repo`] is the result, with the workspace
//! configuration read once beside it.

pub mod dockerfile;
pub mod graph;
pub mod pathspec;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use once_cell::sync::OnceCell;

use crate::config::crates::CrateGraph;
use crate::config::image::{self, ImageConfig, PreImage};
use crate::config::workspace::WorkspaceConfig;
use crate::config::{ConfigError, ConfigErrors};
use crate::git::tree::Tree;

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

/// An image that cannot be used: its own configuration is wrong, or it
/// depends on one that is. Commands about other images still work.
#[derive(Debug, Clone)]
pub struct Broken {
    /// Its name, when the file gives one.
    pub name: Option<String>,
    pub dir: String,
    /// Its own problems, or the one [`ConfigError::BrokenDependency`].
    pub errors: Vec<ConfigError>,
    /// What could be read of it (for `lint`'s checks of inputs and outputs).
    pub image: Option<Image>,
}

impl Broken {
    /// `` `name` ``, or its `mzbuild.yml` when it has no name.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("`{n}`"),
            None => format!("{}/mzbuild.yml", self.dir),
        }
    }

    /// Broken only because a dependency is.
    pub fn by_dependency(&self) -> bool {
        self.errors.iter().all(|e| matches!(e, ConfigError::BrokenDependency { .. }))
    }

    fn cause(&self) -> String {
        dedup(&self.errors).iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    }
}

/// A discovered repository: its files, its images and its workspace
/// configuration.
pub struct Repo {
    pub tree: Tree,
    /// The sound images: their configuration and all their dependencies'
    /// are valid.
    pub images: BTreeMap<String, Image>,
    /// The broken ones, by directory.
    pub broken: BTreeMap<String, Broken>,
    pub workspace: WorkspaceConfig,
    /// Configuration warnings (unknown keys), to show once.
    pub warnings: Vec<ConfigError>,
    crates: OnceCell<CrateGraph>,
}

impl Repo {
    /// Discover and validate every image. A broken image (see [`Broken`])
    /// does not fail the load: commands about it, or about every image,
    /// fail; the workspace configuration must be sound.
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
        let (repo, errors) = Repo::discover(tree, workspace, strict);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors).into());
        }
        Ok(repo)
    }

    /// For `lint`: the repository, whatever is wrong with it, and the
    /// problems of the workspace configuration (`Cargo.toml`'s, only under
    /// `strict`), which [`Repo::from_tree`] fails on.
    pub fn load_lenient(tree: Tree, strict: bool) -> Result<(Repo, Vec<ConfigError>)> {
        prefetch_config(&tree);
        let workspace = WorkspaceConfig::load(&tree)?;
        Ok(Repo::discover(tree, workspace, strict))
    }

    fn discover(tree: Tree, workspace: WorkspaceConfig, strict: bool) -> (Repo, Vec<ConfigError>) {
        let (images, broken, mut warnings) = discover_images(&tree, strict);
        let mut errors = Vec::new();
        if strict {
            errors.extend(workspace.warnings.iter().cloned().map(|w| ConfigError::Strict(Box::new(w))));
        } else {
            warnings.extend(workspace.warnings.iter().cloned());
        }
        (Repo { tree, images, broken, workspace, warnings, crates: OnceCell::new() }, errors)
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

    /// The sound image `name`; else an error that says what is wrong with
    /// it, or which image was meant.
    pub fn image(&self, name: &str) -> Result<&Image> {
        if let Some(image) = self.images.get(name) {
            return Ok(image);
        }
        if let Some(b) = self.broken.values().find(|b| b.name.as_deref() == Some(name)) {
            return Err(ConfigErrors(dedup(&b.errors)).into());
        }
        let names = self.images.keys().chain(self.broken.values().filter_map(|b| b.name.as_ref()));
        let meant = crate::config::near_miss(name, names.map(String::as_str))
            .map(|m| format!("did you mean `{m}`? "))
            .unwrap_or_default();
        let sound = self.images.keys().cloned().collect::<Vec<_>>().join(", ");
        anyhow::bail!(
            "unknown image `{name}`; {meant}`cargo xtask mzbuild list` shows the images ({})",
            if sound.is_empty() { "none that is not broken" } else { &sound }
        )
    }

    /// The targets plus all their transitive dependencies, dependencies
    /// first, ties broken by name. An empty target list means every image,
    /// and fails when any is broken; named targets must be sound (the
    /// broken images are then named in a warning).
    pub fn resolve(&self, targets: &[String]) -> Result<Vec<&Image>> {
        if targets.is_empty() && !self.broken.is_empty() {
            return Err(self.broken_error());
        }
        for t in targets {
            self.image(t)?;
        }
        self.warn_broken();
        Ok(graph::resolve(&self.images, targets).into_iter().map(|n| &self.images[n]).collect())
    }

    /// A warning for each broken image (once per run): commands about the
    /// others work, but should not hide that they are left out.
    pub fn warn_broken(&self) {
        for b in self.broken.values() {
            match &b.errors[..] {
                [ConfigError::BrokenDependency { dependency, .. }] => crate::ui::warn_once(format_args!(
                    "image {} is broken and left out: it depends on `{dependency}`, which is broken",
                    b.label()
                )),
                _ => crate::ui::warn_once(format_args!("image {} is broken and left out: {}", b.label(), b.cause())),
            }
        }
    }

    /// Why a command that needs every image cannot run: the broken images,
    /// with their own problems (each once).
    fn broken_error(&self) -> anyhow::Error {
        let names: Vec<String> = self.broken.values().map(Broken::label).collect();
        let own: Vec<ConfigError> = dedup(
            &self.broken.values().filter(|b| !b.by_dependency()).flat_map(|b| b.errors.clone()).collect::<Vec<_>>(),
        );
        anyhow::Error::new(ConfigErrors(own)).context(format!(
            "this command needs every image, and {} {} broken: {}; fix {} (`cargo xtask mzbuild lint` lists every problem), \
             or name the images to work on",
            names.len(),
            if names.len() == 1 { "is" } else { "are" },
            names.join(", "),
            if names.len() == 1 { "it" } else { "them" },
        ))
    }

    /// Directories of the images nested inside `image`'s directory: their
    /// files belong to them, not to `image` (broken ones too: a broken
    /// image must not change the fingerprint of the one around it).
    pub fn nested_dirs<'a>(&'a self, image: &Image) -> impl Iterator<Item = &'a str> {
        let prefix = format!("{}/", image.dir);
        let dirs = self.images.values().map(|o| o.dir.as_str()).chain(self.broken.keys().map(String::as_str));
        dirs.filter(move |d| d.starts_with(&prefix))
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

/// `errors` without repeats, in order (two images can share one problem:
/// a cycle, a duplicate name).
fn dedup(errors: &[ConfigError]) -> Vec<ConfigError> {
    let mut out: Vec<ConfigError> = Vec::with_capacity(errors.len());
    for e in errors {
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    out
}

/// Every image of the tree, sound or broken, with the configuration
/// warnings (errors under `strict`: they break their image).
fn discover_images(tree: &Tree, strict: bool) -> (BTreeMap<String, Image>, BTreeMap<String, Broken>, Vec<ConfigError>) {
    let mut warnings = Vec::new();
    let mut broken: BTreeMap<String, Broken> = BTreeMap::new();
    let mut by_name: BTreeMap<String, Image> = BTreeMap::new();
    fn break_image(
        broken: &mut BTreeMap<String, Broken>,
        dir: &str,
        name: Option<String>,
        errors: Vec<ConfigError>,
        image: Option<Image>,
    ) {
        broken.insert(dir.to_string(), Broken { name, dir: dir.to_string(), errors, image });
    }
    for yml in tree.files.iter().filter(|f| f.ends_with("/mzbuild.yml") && !f.starts_with(SKIPPED)) {
        let dir = &yml[..yml.len() - "/mzbuild.yml".len()];
        let bytes = match tree.read(yml) {
            Ok(b) => b,
            Err(e) => {
                let error = ConfigError::Unreadable { path: yml.clone(), error: format!("{:#}", e.root_cause()) };
                break_image(&mut broken, dir, None, vec![error], None);
                continue;
            }
        };
        let parsed = image::parse(yml, &bytes);
        let mut errors = parsed.errors;
        let mut own_warnings = parsed.warnings;
        let dockerfile_path = format!("{dir}/Dockerfile");
        let dockerfile = if !tree.contains(&dockerfile_path) {
            if let Some(name) = &parsed.name {
                errors.push(ConfigError::MissingDockerfile {
                    yml: yml.clone(),
                    image: name.clone(),
                    dockerfile: dockerfile_path,
                });
            }
            None
        } else {
            match tree.read(&dockerfile_path) {
                Ok(d) => Some(d),
                Err(e) => {
                    errors.push(ConfigError::Unreadable {
                        path: dockerfile_path,
                        error: format!("{:#}", e.root_cause()),
                    });
                    None
                }
            }
        };
        let Some(config) = parsed.config.or(parsed.partial) else {
            warnings.extend(own_warnings);
            break_image(&mut broken, dir, parsed.name, errors, None);
            continue;
        };
        for (i, pre) in config.pre_images.iter().enumerate() {
            let PreImage::Copy(copy) = pre else { continue };
            let files = tree.range(&copy.source).len();
            // A source without files, or a bad pattern, is an error when the
            // image's inputs are computed.
            if files > 0 && pathspec::matches(tree, copy).is_ok_and(|m| m.is_empty()) {
                own_warnings.push(ConfigError::EmptyCopy {
                    yml: yml.clone(),
                    image: config.name.clone(),
                    index: i + 1,
                    source: pathspec::shown(&copy.source).to_string(),
                    matching: copy.matching.clone(),
                    files,
                });
            }
        }
        if strict {
            errors.extend(own_warnings.drain(..).map(|w| ConfigError::Strict(Box::new(w))));
        }
        warnings.extend(own_warnings);
        let image = dockerfile.map(|dockerfile| {
            let depends_on: BTreeSet<String> =
                dockerfile::dependencies(&dockerfile).into_iter().map(|d| d.name).collect();
            Image {
                name: config.name.clone(),
                dir: dir.to_string(),
                depends_on: depends_on.into_iter().collect(),
                config,
                dockerfile,
            }
        });
        match image {
            Some(image) if errors.is_empty() => {
                if let Some(other) = by_name.get(&image.name) {
                    // Neither is the image of that name.
                    let error = ConfigError::DuplicateName {
                        name: image.name.clone(),
                        first: format!("{}/mzbuild.yml", other.dir),
                        second: yml.clone(),
                    };
                    let other = by_name.remove(&image.name).expect("just seen");
                    break_image(
                        &mut broken,
                        &other.dir.clone(),
                        Some(other.name.clone()),
                        vec![error.clone()],
                        Some(other),
                    );
                    break_image(&mut broken, dir, Some(image.name.clone()), vec![error], Some(image));
                } else if let Some(first) =
                    broken.values_mut().find(|b| b.name.as_ref() == Some(&image.name) && b.image.is_some())
                {
                    let error = ConfigError::DuplicateName {
                        name: image.name.clone(),
                        first: format!("{}/mzbuild.yml", first.dir),
                        second: yml.clone(),
                    };
                    if !first.errors.contains(&error) {
                        first.errors.push(error.clone());
                    }
                    break_image(&mut broken, dir, Some(image.name.clone()), vec![error], Some(image));
                } else {
                    by_name.insert(image.name.clone(), image);
                }
            }
            image => break_image(&mut broken, dir, parsed.name, errors, image),
        }
    }
    // Unknown MZFROM targets are checked once every name is known: an image
    // that is there but broken is not unknown. (Broken images' own are for
    // lint.)
    let all_names: BTreeSet<String> =
        by_name.keys().cloned().chain(broken.values().filter_map(|b| b.name.clone())).collect();
    let unknown_mzfrom = |image: &Image| -> Vec<ConfigError> {
        dockerfile::dependencies(&image.dockerfile)
            .into_iter()
            .filter(|d| !all_names.contains(&d.name))
            .map(|d| ConfigError::UnknownMzfrom {
                dockerfile: format!("{}/Dockerfile", image.dir),
                line: d.line,
                meant: crate::config::near_miss(&d.name, all_names.iter().map(String::as_str)).map(str::to_string),
                name: d.name,
                known: all_names.iter().cloned().collect(),
            })
            .collect()
    };
    let unknown: Vec<(String, Vec<ConfigError>)> = by_name
        .values()
        .map(|i| (i.name.clone(), unknown_mzfrom(i)))
        .filter(|(_, errors)| !errors.is_empty())
        .collect();
    for b in broken.values_mut() {
        if let Some(image) = &b.image {
            b.errors.extend(unknown_mzfrom(image));
        }
    }
    for (name, errors) in unknown {
        let image = by_name.remove(&name).expect("a sound image");
        break_image(&mut broken, &image.dir.clone(), Some(name), errors, Some(image));
    }
    // Each cycle breaks the images in it.
    while let Some(cycle) = graph::find_cycle(&by_name) {
        let error = ConfigError::Cycle(cycle.clone());
        for name in &cycle {
            if let Some(image) = by_name.remove(name) {
                break_image(&mut broken, &image.dir.clone(), Some(name.clone()), vec![error.clone()], Some(image));
            }
        }
    }
    // Then the images that depend on a broken one, dependencies first.
    loop {
        let newly: Vec<(String, String)> = by_name
            .values()
            .filter_map(|i| {
                let d = i.depends_on.iter().find(|d| !by_name.contains_key(*d))?;
                Some((i.name.clone(), d.clone()))
            })
            .collect();
        if newly.is_empty() {
            break;
        }
        for (name, dependency) in newly {
            let cause = broken
                .values()
                .find(|b| b.name.as_ref() == Some(&dependency))
                .map(Broken::cause)
                .unwrap_or_else(|| format!("`{dependency}` is broken"));
            let image = by_name.remove(&name).expect("a sound image");
            let error = ConfigError::BrokenDependency { image: name.clone(), dependency, cause };
            break_image(&mut broken, &image.dir.clone(), Some(name), vec![error], Some(image));
        }
    }
    (by_name, broken, warnings)
}
