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
//! Beside them: [`commands`] (every command's top level), [`process`] (children
//! and what a signal must undo), [`env`] (the injected environment) and
//! [`ui`] (the only module that prints). A command's entry point takes a
//! [`Ctx`] and returns a [`Status`]; the binary maps it to an exit code.

pub mod build;
pub mod cachefile;
pub mod commands;
pub mod config;
pub mod ctx;
pub mod discover;
pub mod docker;
pub mod env;
pub mod fingerprint;
pub mod git;
pub mod plan;
pub mod preimage;
pub mod process;
pub mod publish;
pub mod ui;
mod util;

pub use build::PoolOptions;
pub use config::settings::{Arch, Profile, Settings, SettingsArgs};
pub use config::{ConfigError, ConfigErrors};
pub use ctx::{profile_flag, Ctx, Options, Status};
pub use discover::{Image, Repo};
pub use docker::Docker;
pub use env::{Env, MapEnv, ProcessEnv};
pub use fingerprint::{Fingerprint, Fingerprinted};
pub use plan::naming::{Naming, Registry};
