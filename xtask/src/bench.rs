//! `cargo xtask bench ...`: benchmarks of mzbuild itself.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::Bench;

pub fn run(b: Bench) -> Result<ExitCode> {
    match b {
        Bench::Fingerprint(_) => anyhow::bail!("not yet"),
    }
}
