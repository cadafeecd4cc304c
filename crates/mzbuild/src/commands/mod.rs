//! The commands' top levels, on top of the pipeline: each takes a
//! [`Ctx`](crate::ctx::Ctx) (or a root) and returns a
//! [`Status`](crate::ctx::Status) or the text for stdout. The engines they
//! drive live in the stages below.
//!
//! - [`build`]: `build`, `acquire`, `run`;
//! - [`introspect`]: `list`, `fingerprint`, `spec`, `describe`, `graph`;
//! - [`diff`]: `diff` and `explain`;
//! - [`lint`]: `lint`; [`hook`]: the pre-push hook;
//! - [`verify`]: rebuild published images and compare.
//! - [`ensure`], [`check`], [`repair`], [`tag`]: publishing; [`sign`]: `sign` and
//!   `attestation`; [`cache`]: the shared layer cache of `ensure`'s builds;
//!   [`gc`]: deleting what no kept revision needs.

pub mod build;
pub mod cache;
pub mod check;
pub mod diff;
pub mod ensure;
pub mod gc;
pub mod hook;
pub mod introspect;
pub mod lint;
pub mod repair;
pub mod sign;
pub mod tag;
pub mod verify;
