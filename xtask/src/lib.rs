//! `cargo xtask`: this repository's automation, chiefly `mzbuild`, a Rust
//! implementation of Materialize's content-addressed image build system.
//!
//! The pipeline, one module each: `tree` (what git sees) -> `repo`
//! (discovery, `config` for `mzbuild.yml`, `dockerfile` for `MZFROM`, plans)
//! -> `fingerprint` -> `preimage` -> `build` (on the `pool`, through
//! `docker`) -> `publish` (with `registry` and `registry_api`). `introspect`
//! holds the read-only commands; `cleanup` what an interrupt must undo.

pub mod bench;
pub mod bench_ensure;
pub mod build;
pub mod cargo_ws;
pub mod cleanup;
pub mod cli;
pub mod config;
pub mod docker;
pub mod dockerfile;
pub mod fingerprint;
pub mod introspect;
pub mod pool;
pub mod preimage;
pub mod publish;
pub mod registry;
pub mod registry_api;
pub mod repo;
pub mod settings;
pub mod tree;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Parser;

use crate::cli::{Command, GlobalArgs, Mzbuild, Xtask};
use crate::registry::Naming;
use crate::repo::Repo;
use crate::settings::{Env, ProcessEnv, Profile, Settings, SettingsArgs};

/// Entry point of the `xtask` binary.
pub fn main() -> ExitCode {
    let cli = Xtask::parse();
    cleanup::install();
    let result = match cli {
        Xtask::Mzbuild(m) => run_mzbuild(m),
        Xtask::Bench(b) => bench::run(b),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_mzbuild(m: Mzbuild) -> Result<ExitCode> {
    let ctx = Ctx::load(&m.global)?;
    match m.command {
        Command::Build { images, force, pool } => build::build(&ctx, &images, force, &pool.options()),
        Command::Acquire { images, pool } => {
            let fps = build::acquire(&ctx, &images, &pool.options())?;
            for i in &images {
                println!("{}", ctx.naming.spec(i, &fingerprint::base32(&fps[i].fingerprint)));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ensure { images, json, pool } => publish::ensure(&ctx, &images, &pool.options(), json),
        Command::Check { images } => publish::check(&ctx, &images),
        Command::Run { image, args, pool } => build::run(&ctx, &image, &args, &pool.options()),
        introspection => introspect::run(&ctx, &introspection),
    }
}

/// Everything a command needs: the repository, settings and naming.
pub struct Ctx {
    pub repo: Repo,
    pub settings: Settings,
    pub naming: Naming,
}

impl Ctx {
    pub fn load(global: &GlobalArgs) -> Result<Ctx> {
        Ctx::load_with_env(global, &ProcessEnv)
    }

    pub fn load_with_env(global: &GlobalArgs, env: &dyn Env) -> Result<Ctx> {
        let profiles: Vec<(bool, Profile)> = vec![
            (global.release, Profile::Release),
            (global.optimized, Profile::Optimized),
            (global.dev, Profile::Dev),
        ];
        let chosen: Vec<Profile> = profiles.iter().filter(|(on, _)| *on).map(|(_, p)| *p).collect();
        if chosen.len() > 1 {
            bail!("--release, --optimized and --dev exclude each other: give one");
        }
        let settings = Settings::resolve(
            &SettingsArgs {
                profile: chosen.first().copied(),
                arch: global.arch.clone(),
                coverage: global.coverage,
                sanitizer: global.sanitizer.clone(),
            },
            env,
        )?;
        let root = root_dir(global.root.clone(), env);
        let repo = Repo::load(&root, global.strict)?;
        for w in &repo.warnings {
            eprintln!("warning: {w}");
        }
        let metadata = read_root_metadata(&repo)?;
        let naming =
            Naming::resolve(metadata.as_ref(), global.image_registry.as_deref(), global.image_prefix.as_deref(), env)?;
        Ok(Ctx { repo, settings, naming })
    }
}

/// `--root`, else `$MZ_ROOT`, else the workspace that holds this xtask.
pub fn root_dir(flag: Option<PathBuf>, env: &dyn Env) -> PathBuf {
    let root = flag
        .or_else(|| env.var("MZ_ROOT").filter(|s| !s.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// `[workspace.metadata.mzbuild]` of the root `Cargo.toml`, if there is one.
fn read_root_metadata(repo: &Repo) -> Result<Option<toml::Value>> {
    let path = repo.root().join("Cargo.toml");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let value: toml::Value =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: invalid TOML: {e}", path.display()))?;
    Ok(value.get("workspace").and_then(|w| w.get("metadata")).and_then(|m| m.get("mzbuild")).cloned())
}
