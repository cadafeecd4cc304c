//! The integration tests: one test binary (as cargo's own `tests/testsuite`),
//! one module per area. They run the real `xtask` binary on temporary git
//! repositories, with real git, Docker and registries; the helpers they share
//! are the `support` crate (`tests/support`): look there before writing one
//! here. Run one area with `cargo test -p xtask --test testsuite -- publish::`.

// Tests drive real processes and read their own environment directly;
// the repository ban (clippy.toml) is for the engine.
#![allow(clippy::disallowed_methods)]

mod bad_input;
mod build;
mod builders;
mod cache;
mod cli;
mod discovery;
mod fingerprint;
mod gc;
mod materialize_like;
mod publish;
mod readme;
mod release;
mod reproducible;
mod resilience;
mod revision;
mod token_auth;
mod token_publish;
mod trust;

/// `support` finds the binary under test and cargo's scratch directory from
/// the test executable's own path (it is a library: cargo gives these paths
/// only to the integration tests of the `xtask` package): they must be the
/// ones cargo gave this binary.
#[test]
fn support_runs_this_packages_xtask() {
    assert_eq!(support::xtask_bin(), std::path::Path::new(env!("CARGO_BIN_EXE_xtask")));
    assert_eq!(support::target_tmpdir(), std::path::Path::new(env!("CARGO_TARGET_TMPDIR")));
}
