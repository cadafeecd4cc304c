//! What a command runs against: the [`Options`] given on the command line,
//! the [`Ctx`] they load (the repository, settings, naming, environment and
//! docker), and the [`Status`] a command ends with.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::config::settings::{Profile, Settings, SettingsArgs};
use crate::discover::Repo;
use crate::docker::Docker;
use crate::env::Env;
use crate::plan::naming::Naming;
use crate::sigstore::Policy;
use crate::{ui, util};

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
    /// `--trust-key`: public keys to trust for this run, beside the
    /// configured ones (and making a policy where none is configured).
    pub trust_keys: Vec<PathBuf>,
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
    /// The trust policy (`[workspace.metadata.mzbuild] trust`, and
    /// `--trust-key`): with one, a published tag counts only when a trusted
    /// key signed the digest it names.
    pub trust: Option<Policy>,
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
        if let Some(s) = &repo.workspace.signing {
            // The key is read by this process only; no child inherits it.
            let vars: Vec<&str> = std::iter::once(s.key_env.as_str()).chain(s.password_env.as_deref()).collect();
            crate::process::hide_from_children(&vars);
        }
        let trust = trust_policy(&root, repo.workspace.trust.as_ref(), &options.trust_keys)?;
        Ok(Ctx { repo, settings, naming, env, docker, root_arg, trust })
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

/// The keys of `[workspace.metadata.mzbuild] trust` (relative to `root`)
/// and of `--trust-key`, read; `None` when there are none.
fn trust_policy(
    root: &Path,
    configured: Option<&crate::config::workspace::Trust>,
    extra: &[PathBuf],
) -> Result<Option<Policy>> {
    let mut paths: Vec<(String, PathBuf)> =
        configured.map(|t| t.keys.iter().map(|k| (k.clone(), root.join(k))).collect()).unwrap_or_default();
    paths.extend(extra.iter().map(|p| (p.display().to_string(), p.clone())));
    if paths.is_empty() {
        return Ok(None);
    }
    let mut keys = vec![];
    for (name, path) in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!(
                "trusted key {name}: cannot read {}: {e} (Cargo.toml [workspace.metadata.mzbuild] trust, or \
                 --trust-key)",
                path.display()
            )
        })?;
        let key = crate::sigstore::PublicKey::from_pem(&text).map_err(|e| {
            anyhow::anyhow!("trusted key {name}: {e:#}; give the `cosign.pub` of `cosign generate-key-pair`")
        })?;
        keys.push((name, key));
    }
    Ok(Some(Policy { keys }))
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
