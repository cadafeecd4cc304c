//! Discovery: the images of a repository (every git-visible `mzbuild.yml`
//! with its Dockerfile), their `MZFROM` dependencies, and resolving a set of
//! target images into a dependency-ordered plan.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Result};
use once_cell::sync::OnceCell;

use crate::cargo_ws::Workspace;
use crate::config::{self, ImageConfig};
use crate::dockerfile;
use crate::tree::Tree;

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

pub struct Repo {
    pub tree: Tree,
    pub images: BTreeMap<String, Image>,
    pub warnings: Vec<String>,
    workspace: OnceCell<Workspace>,
}

impl Repo {
    /// Discover and validate every image. All configuration errors of the
    /// repository are reported together.
    pub fn load(root: &Path, strict: bool) -> Result<Repo> {
        let tree = Tree::list(root)?;
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut by_name: BTreeMap<String, Image> = BTreeMap::new();
        for yml in tree.files.iter().filter(|f| f.ends_with("/mzbuild.yml")) {
            let dir = &yml[..yml.len() - "/mzbuild.yml".len()];
            let bytes = match std::fs::read(root.join(yml)) {
                Ok(b) => b,
                Err(e) => {
                    errors.push(format!("{yml}: cannot read: {e}"));
                    continue;
                }
            };
            let parsed = config::parse(yml, &bytes);
            errors.extend(parsed.errors);
            warnings.extend(parsed.warnings);
            let Some(config) = parsed.config else { continue };
            let dockerfile_path = format!("{dir}/Dockerfile");
            let dockerfile = if tree.contains(&dockerfile_path) {
                match std::fs::read(root.join(&dockerfile_path)) {
                    Ok(d) => d,
                    Err(e) => {
                        errors.push(format!("{dockerfile_path}: cannot read: {e}"));
                        continue;
                    }
                }
            } else {
                errors.push(format!(
                    "{yml}: image `{}` has no Dockerfile: add {dockerfile_path} (and make sure git does not ignore it)",
                    config.name
                ));
                continue;
            };
            if let Some(other) = by_name.get(&config.name) {
                errors.push(format!(
                    "image name `{}` is defined twice, in {}/mzbuild.yml and {yml}: image names must be unique, rename one",
                    config.name, other.dir
                ));
                continue;
            }
            let mut deps = Vec::new();
            for d in dockerfile::dependencies(&dockerfile) {
                deps.push((d.line, d.name));
            }
            let image = Image {
                name: config.name.clone(),
                dir: dir.to_string(),
                depends_on: deps.iter().map(|(_, n)| n.clone()).collect::<BTreeSet<_>>().into_iter().collect(),
                config,
                dockerfile,
            };
            // Unknown MZFROM targets are checked once every name is known.
            by_name.insert(image.name.clone(), image);
        }
        for image in by_name.values() {
            for d in dockerfile::dependencies(&image.dockerfile) {
                if !by_name.contains_key(&d.name) {
                    errors.push(format!(
                        "{}/Dockerfile:{}: `MZFROM {}` names an image that does not exist (images: {}); fix the name or add the image",
                        image.dir,
                        d.line,
                        d.name,
                        by_name.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        if errors.is_empty() {
            if let Some(cycle) = find_cycle(&by_name) {
                errors.push(format!("image dependency cycle: {} (through MZFROM lines); break it", cycle.join(" -> ")));
            }
        }
        if strict && !warnings.is_empty() {
            errors.extend(warnings.iter().map(|w| format!("{w} (an error with --strict)")));
            warnings.clear();
        }
        if !errors.is_empty() {
            let n = errors.len();
            bail!(
                "{} in the mzbuild configuration:\n  {}",
                if n == 1 { "1 error".to_string() } else { format!("{n} errors") },
                errors.join("\n  ")
            );
        }
        Ok(Repo { tree, images: by_name, warnings, workspace: OnceCell::new() })
    }

    pub fn root(&self) -> &Path {
        &self.tree.root
    }

    /// The cargo workspace, read on first use (only cargo-build images need
    /// it).
    pub fn workspace(&self) -> Result<&Workspace> {
        self.workspace.get_or_try_init(|| Workspace::load(&self.tree))
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
        let mut want = BTreeSet::new();
        let mut stack: Vec<&str> = Vec::new();
        if targets.is_empty() {
            stack.extend(self.images.keys().map(String::as_str));
        }
        for t in targets {
            stack.push(self.image(t)?.name.as_str());
        }
        while let Some(n) = stack.pop() {
            if want.insert(n) {
                stack.extend(self.images[n].depends_on.iter().map(String::as_str));
            }
        }
        Ok(topo_order(&self.images, &want).into_iter().map(|n| &self.images[n]).collect())
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

/// Kahn's algorithm over the `want` subset (closed under dependencies), ready
/// images taken in name order.
fn topo_order<'a>(images: &'a BTreeMap<String, Image>, want: &BTreeSet<&'a str>) -> Vec<&'a str> {
    let mut missing: BTreeMap<&str, usize> = want.iter().map(|n| (*n, images[*n].depends_on.len())).collect();
    let mut ready: BTreeSet<&str> = missing.iter().filter(|(_, c)| **c == 0).map(|(n, _)| *n).collect();
    let mut order = Vec::with_capacity(want.len());
    while let Some(n) = ready.pop_first() {
        order.push(n);
        for other in want {
            if images[*other].depends_on.iter().any(|d| d == n) {
                let c = missing.get_mut(other).unwrap();
                *c -= 1;
                if *c == 0 {
                    ready.insert(other);
                }
            }
        }
    }
    order
}

fn find_cycle(images: &BTreeMap<String, Image>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        n: &'a str,
        images: &'a BTreeMap<String, Image>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|s| *s == n).unwrap();
                let mut cycle: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n, Mark::Visiting);
        stack.push(n);
        for d in &images[n].depends_on {
            if images.contains_key(d) {
                if let Some(c) = visit(d, images, marks, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        marks.insert(n, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in images.keys() {
        if let Some(c) = visit(n, images, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}
