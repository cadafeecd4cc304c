//! mzbuild: content-addressed container image builds for monorepos, a Rust
//! implementation of Materialize's mzbuild (the engine behind `cargo xtask
//! mzbuild`).
//!
//! The pipeline, one module each, in order:
//!
//! 1. [`discover`]: the files git sees, the images (`mzbuild.yml` +
//!    `Dockerfile`), their `MZFROM` dependency graph;
//! 2. [`config`]: `mzbuild.yml`, the root `Cargo.toml`'s
//!    `[workspace.metadata.mzbuild]` and crate graph, the build settings;
//! 3. [`preimage`]: the steps before `docker build` (`copy`, `cargo-build`),
//!    with the inputs and fingerprint words each contributes;
//! 4. [`fingerprint`]: every image's [`Fingerprint`], bit for bit as the
//!    original computes it;
//! 5. [`plan`]: what to do for each image, from fingerprints, registry
//!    status and local images (pure);
//! 6. [`build`]: the worker pool, `docker buildx`, the local commands;
//! 7. [`publish`]: registries, their HTTP API, copies between them, logins,
//!    `ensure`, `check` and `repair`.
//!
//! Beside them: [`introspect`] (read-only commands), [`process`] (children
//! and what a signal must undo), [`env`] (the injected environment) and
//! [`ui`] (the only module that prints). A command's entry point takes a
//! [`Ctx`] and returns a [`Status`]; the binary maps it to an exit code.

pub mod build;
pub mod cachefile;
pub mod changes;
pub mod config;
pub mod discover;
pub mod env;
pub mod fingerprint;
pub mod hook;
pub mod introspect;
pub mod lint;
pub mod plan;
pub mod preimage;
pub mod process;
pub mod publish;
pub mod report;
pub mod ui;
mod util;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

pub use build::docker::Docker;
pub use build::PoolOptions;
pub use config::settings::{Arch, Profile, Settings, SettingsArgs};
pub use config::{ConfigError, ConfigErrors};
pub use discover::{Image, Repo};
pub use env::{Env, MapEnv, ProcessEnv};
pub use fingerprint::{Fingerprint, Fingerprinted};
pub use publish::targets::{Naming, Registry};

/// How a command ended, when it did not fail with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    /// The command reported a failure itself (e.g. `check` found missing
    /// images, `ensure` could not build some).
    Failure,
    /// Pass on a child's exit status (`run`).
    Code(u8),
}

impl Status {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Status::Success => 0,
            Status::Failure => 1,
            Status::Code(c) => c,
        }
    }
}

/// What a command is run against, as given on the command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Repository root (else `$MZ_ROOT`, else `default_root`).
    pub root: Option<PathBuf>,
    pub profile: Option<Profile>,
    pub arch: Option<String>,
    pub coverage: bool,
    pub sanitizer: Option<String>,
    pub image_registry: Option<String>,
    pub image_prefix: Option<String>,
    /// Configuration warnings are errors.
    pub strict: bool,
    /// Read the repository as it is at this git revision (from the object
    /// store: nothing is checked out) instead of the work tree.
    pub rev: Option<String>,
    /// Neither read nor write mzbuild's caches (the listing, the blob
    /// cache, the fingerprint memos): list by walking, hash by reading.
    pub no_cache: bool,
}

impl Options {
    /// The repository root: `--root`, else `$MZ_ROOT`, else `default_root`.
    pub fn root_dir(&self, default_root: PathBuf, env: &dyn Env) -> PathBuf {
        let root = self.root.clone().or_else(|| env.path("MZ_ROOT")).unwrap_or(default_root);
        std::fs::canonicalize(&root).unwrap_or(root)
    }

    /// `--root ROOT`, for a suggested command, when one typed without it
    /// would not find `root` (it is neither `$MZ_ROOT` nor `default_root`).
    pub fn root_arg(&self, root: &Path, default_root: PathBuf, env: &dyn Env) -> Option<String> {
        let implied = Options { root: None, ..self.clone() }.root_dir(default_root, env);
        (implied != root).then(|| format!("--root {}", util::shell_word(&root.display().to_string())))
    }
}

/// Everything a command needs: the repository, settings, naming, the
/// environment and how to run docker.
pub struct Ctx {
    pub repo: Repo,
    pub settings: Settings,
    pub naming: Naming,
    pub env: Box<dyn Env>,
    pub docker: Docker,
    /// `--root ROOT` when a command run without it would not find this
    /// repository (it is not the default root, nor `$MZ_ROOT`): for hints
    /// that suggest a command.
    pub root_arg: Option<String>,
}

impl Ctx {
    /// Discover the repository and resolve settings and naming. Shows the
    /// configuration warnings.
    pub fn load(options: &Options, default_root: PathBuf, env: Box<dyn Env>) -> Result<Ctx> {
        let settings = Settings::resolve(
            &SettingsArgs {
                profile: options.profile,
                arch: options.arch.clone(),
                coverage: options.coverage,
                sanitizer: options.sanitizer.clone(),
            },
            env.as_ref(),
        )?;
        let root = options.root_dir(default_root.clone(), env.as_ref());
        let repo = match &options.rev {
            Some(rev) => Repo::load_rev(&root, rev, options.strict, !options.no_cache)?,
            None => Repo::load_with(&root, options.strict, !options.no_cache)?,
        };
        for w in &repo.warnings {
            ui::warn(w);
        }
        let naming = Naming::resolve(
            repo.workspace.registries.as_deref(),
            options.image_registry.as_deref(),
            options.image_prefix.as_deref(),
            env.as_ref(),
        )?;
        // Only this repository's own `ci/stack.sh` may be suggested.
        let docker = Docker::new(env.as_ref()).with_stack_script(root.join("ci/stack.sh").is_file());
        let root_arg = options.root_arg(&root, default_root, env.as_ref());
        Ok(Ctx { repo, settings, naming, env, docker, root_arg })
    }

    /// `` `cargo xtask mzbuild [--root ROOT] args` ``: a command to suggest,
    /// that works on this repository as it is typed.
    pub fn hint(&self, args: &str) -> String {
        match &self.root_arg {
            Some(root) => format!("`cargo xtask mzbuild {root} {args}`"),
            None => format!("`cargo xtask mzbuild {args}`"),
        }
    }
}

/// The one profile of `--release`, `--optimized` and `--dev` that was given,
/// if any.
pub fn profile_flag(release: bool, optimized: bool, dev: bool) -> Result<Option<Profile>> {
    let chosen: Vec<Profile> = [(release, Profile::Release), (optimized, Profile::Optimized), (dev, Profile::Dev)]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, p)| p)
        .collect();
    if chosen.len() > 1 {
        bail!("--release, --optimized and --dev exclude each other: give one");
    }
    Ok(chosen.first().copied())
}
