//! Pre-images: the steps that run before `docker build`, and the inputs
//! and fingerprint `extra` each step contributes, kept together so that what
//! a step reads and what its image's fingerprint covers cannot drift apart.
//! [`copy_files`] copies files into the context; [`cargo_build`] builds every
//! cargo-build binary of a run with ONE `cargo build`. Nothing of an image
//! directory is deleted: what each step wrote is returned, and the build
//! context is exactly the files git sees plus those (see `build::context`).

pub mod cargo_build;
pub mod copy_files;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, Result};

use crate::config::image::{CargoBuildSpec, PreImage};
use crate::config::settings::Settings;
use crate::config::workspace::WorkspaceConfig;
use crate::discover::{Image, Repo};
use crate::{process, ui};
pub use cargo_build::BuildEnv;

/// What computing inputs can share between images: the files of each crate
/// and the files of each cargo-build root's closure (cargo-build images
/// share most of the workspace, so resolving inputs costs the unique crates
/// and closures, not the sum of every image's closure); and what the
/// default cargo-build inputs left out ([`Notes`]).
#[derive(Default)]
pub struct InputCache {
    crates: BTreeMap<String, Vec<Range<usize>>>,
    closures: BTreeMap<(String, bool), std::rc::Rc<cargo_build::ClosureInputs>>,
    /// What the images computed since the last `take` left out.
    pub notes: Notes,
}

/// What the original's cargo-build inputs (the default) left out of some
/// images, for a warning with the way to opt in. Kept per image by the
/// fingerprint memo, so that a memoised answer warns as a computed one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notes {
    /// `.cargo/config.toml` exists and `extra-cargo-inputs` is not set.
    pub config_toml_left_out: bool,
    /// Path dependencies cargo builds with that the original's rule does not
    /// follow, in images' closures: (manifest, entry, directory).
    pub unfollowed: BTreeSet<(String, String, String)>,
}

impl Notes {
    pub fn merge(&mut self, other: &Notes) {
        self.config_toml_left_out |= other.config_toml_left_out;
        self.unfollowed.extend(other.unfollowed.iter().cloned());
    }

    /// Say, once per run, what the original's cargo-build inputs (the
    /// default) leave out, and how to opt in.
    pub fn warn(&self) {
        if self.config_toml_left_out {
            ui::warn_once(
                "`.cargo/config.toml` is not an input of cargo-build images: like the original mzbuild, the default \
                 hashes `.cargo/config` only, so a change to `.cargo/config.toml` (rustflags, profiles) changes no \
                 tag. To hash it, add `extra-cargo-inputs = [\".cargo/config.toml\"]` to [workspace.metadata.mzbuild] \
                 in Cargo.toml (this changes the tag of every cargo-build image); `extra-cargo-inputs = []` keeps the \
                 original's inputs and silences this warning",
            );
        }
        if !self.unfollowed.is_empty() {
            let mut dirs: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for (manifest, entry, dir) in &self.unfollowed {
                dirs.entry(dir).or_default().push(format!("{manifest} {entry}"));
            }
            let shown: Vec<String> =
                dirs.iter().take(5).map(|(dir, via)| format!("{dir} (through {})", via.join(", "))).collect();
            let more = if dirs.len() > 5 { format!(" and {} more", dirs.len() - 5) } else { String::new() };
            ui::warn_once(format_args!(
                "cargo-build images are built from crates whose files are not their inputs: {}{more}. Like the \
                 original mzbuild, the default follows only `path = ...` entries of [dependencies], \
                 [build-dependencies] and an example's own [dev-dependencies], not `{{ workspace = true }}` ones nor \
                 [target.*] tables, so a change there changes no tag. To follow every path dependency cargo uses, set \
                 `path-dependencies = \"cargo\"` in [workspace.metadata.mzbuild] in Cargo.toml (this changes the tags \
                 of the images that reach them); `path-dependencies = \"original\"` keeps the original's inputs and \
                 silences this warning",
                shown.join("; ")
            ));
        }
    }
}

/// The inputs of pre-image #`i` of `image`, as ranges of positions in
/// `Tree::files`. Errors name the image and the pre-image.
pub fn inputs(
    repo: &Repo,
    image: &Image,
    i: usize,
    pre: &PreImage,
    cache: &mut InputCache,
) -> Result<Vec<Range<usize>>> {
    let what = || format!("image `{}` ({}/mzbuild.yml), pre-image #{}", image.name, image.dir, i + 1);
    match pre {
        PreImage::Copy(c) => copy_files::inputs(&repo.tree, c).with_context(what),
        PreImage::CargoBuild(cb) => cargo_build::inputs(repo, cb, cache).with_context(what),
    }
}

/// What the pre-image adds to its image's self hash after the input files
/// (the original's `extra()`, and what the workspace configuration changes
/// in what it builds).
pub fn extra(pre: &PreImage, settings: &Settings, workspace: &WorkspaceConfig) -> String {
    match pre {
        PreImage::Copy(_) => String::new(),
        PreImage::CargoBuild(_) => cargo_build::extra(settings, &workspace.image_rustflags),
    }
}

/// What the pre-images of a run did.
#[derive(Debug, Default)]
pub struct Ran {
    /// The images whose pre-images failed, with the reason.
    pub failed: BTreeMap<String, String>,
    /// The files each image's pre-images wrote (absolute paths).
    pub written: BTreeMap<String, Vec<PathBuf>>,
}

/// Run the pre-images of `images` (the ones about to be built). Images
/// whose pre-images failed fail (and their dependants are skipped), the
/// others still build.
pub fn run_all(repo: &Repo, images: &[&Image], settings: &Settings, benv: &BuildEnv<'_>) -> Ran {
    let mut failed = BTreeMap::new();
    // The context is what the listing names: it must be the work tree's now.
    let dirs: Vec<&str> = images.iter().map(|i| i.dir.as_str()).collect();
    if let Err(e) = repo.tree.verify_listing(&dirs) {
        let why = format!("{e:#}");
        return Ran { failed: images.iter().map(|i| (i.name.clone(), why.clone())).collect(), ..Ran::default() };
    }
    let mut outputs: Vec<(String, PathBuf)> = Vec::new();
    for image in images {
        let copied = {
            let mut written = Vec::new();
            let mut copy_all = || -> Result<()> {
                for pre in &image.config.pre_images {
                    if let PreImage::Copy(c) = pre {
                        written.extend(copy_files::run(repo, image, c)?);
                    }
                }
                Ok(())
            };
            copy_all().map(|()| written)
        };
        match copied {
            Ok(written) => outputs.extend(written.into_iter().map(|p| (image.name.clone(), p))),
            Err(e) => {
                failed.insert(image.name.clone(), format!("{e:#}"));
            }
        }
    }
    let cargo: Vec<(&Image, &CargoBuildSpec)> = images
        .iter()
        .filter(|i| !failed.contains_key(&i.name))
        .flat_map(|i| {
            i.config.pre_images.iter().filter_map(move |p| match p {
                PreImage::CargoBuild(cb) => Some((*i, cb)),
                _ => None,
            })
        })
        .collect();
    if !cargo.is_empty() {
        match cargo_build::build(repo, &cargo, settings, benv) {
            Ok(written) => outputs.extend(written),
            Err(e) => {
                let msg = format!("{e:#}");
                for (image, _) in &cargo {
                    failed.insert(image.name.clone(), msg.clone());
                }
            }
        }
    }
    warn_unignored_outputs(repo, &outputs);
    let mut written: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for (image, path) in outputs {
        written.entry(image).or_default().push(path);
    }
    Ran { failed, written }
}

/// Pre-image outputs that git does not ignore become inputs of their image
/// once built, so the image's fingerprint changes after every build (and
/// the published tag no longer names what is in the tree): say so, once per
/// image, with the fix.
fn warn_unignored_outputs(repo: &Repo, outputs: &[(String, PathBuf)]) {
    use std::io::Write;
    if outputs.is_empty() {
        return;
    }
    let rel: Vec<String> = outputs
        .iter()
        .filter_map(|(_, p)| p.strip_prefix(repo.root()).ok().and_then(|r| r.to_str()).map(str::to_string))
        .collect();
    let child = process::command("git")
        .args(["check-ignore", "-z", "--stdin"])
        .current_dir(repo.root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return };
    if let Some(mut stdin) = child.stdin.take() {
        let input: Vec<u8> = rel.iter().flat_map(|r| r.bytes().chain([0])).collect();
        let _ = stdin.write_all(&input);
    }
    let Ok(out) = child.wait_with_output() else { return };
    if out.status.code() == Some(128) {
        return;
    }
    let ignored: BTreeSet<&[u8]> = out.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()).collect();
    let mut per_image: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for ((image, _), r) in outputs.iter().zip(&rel) {
        if !ignored.contains(r.as_bytes()) {
            per_image.entry(image).or_default().push(r);
        }
    }
    for (image, paths) in per_image {
        let dir = &repo.images[image].dir;
        let first = paths[0];
        let top = first.strip_prefix(&format!("{dir}/")).and_then(|r| r.split('/').next()).unwrap_or(first);
        ui::warn(format_args!(
            "image `{image}`: pre-image output {first}{} is not git-ignored, so it becomes an input \
             and the image's fingerprint changes after every build; add `/{top}` to {dir}/.gitignore",
            if paths.len() > 1 { format!(" (and {} more)", paths.len() - 1) } else { String::new() }
        ));
    }
}
