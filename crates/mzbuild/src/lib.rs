//! mzbuild: content-addressed container image builds for monorepos, a Rust
//! implementation of Materialize's mzbuild (the engine behind `cargo xtask
//! mzbuild`).
//!
//! The modules stand on floors, and each imports only its own floor and
//! those below (`tests/layering.rs` enforces it, and that no files import
//! each other in a circle). From the ground up:
//!
//! - leaves: [`ui`] (the only module that prints), [`mod@env`] (the
//!   injected environment), small helpers;
//! - [`process`] (children in process groups, signals, the kill -9
//!   watchdog, private directories), [`cachefile`] (where caches live,
//!   their format, when stat data proves a file unchanged) and
//!   [`sigstore`] (cosign's signature formats and keys, natively);
//! - [`git`]: what git sees: the object store, the index, the work tree's
//!   listing and its cache, [`git::tree::Tree`], the blob-id cache;
//! - [`config`]: `mzbuild.yml`, the root `Cargo.toml`'s
//!   `[workspace.metadata.mzbuild]` and crate graph, the build settings;
//! - [`docker`]: the docker CLI;
//! - the pipeline, in order: [`discover`] (the images and their `MZFROM`
//!   graph: a [`Repo`]), [`preimage`] (the steps before `docker build`, with
//!   the inputs and fingerprint words each contributes), [`fingerprint`]
//!   (every image's [`Fingerprint`], bit for bit as the original computes
//!   it; a revision's, and how two differ), [`plan`] (what to do for each
//!   image, pure; with the [`Naming`] of images);
//! - [`ctx`]: what a command runs against ([`Ctx`]: the repository,
//!   settings, naming, environment and docker);
//! - [`build`] (the worker pool, `docker buildx`) and [`publish`]
//!   (registries, their HTTP API, copies between them, logins), with
//!   [`trust`] (signing what is published, provenance, and which published
//!   tags a trust policy accepts);
//! - [`commands`]: every command's top level. A command takes a [`Ctx`]
//!   and returns a [`Status`]; the binary maps it to an exit code.

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
pub mod report;
pub mod sigstore;
pub mod trust;
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
