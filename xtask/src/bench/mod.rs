//! `cargo xtask bench ...`: benchmarks of mzbuild itself, on a generated
//! Materialize-shaped monorepo ([`generate`]): [`fingerprint`] times
//! fingerprinting against a floor, [`ensure`] a no-op `ensure` against the
//! fingerprint time, [`registry_copy`] filling a registry by copying against
//! rebuilding, [`context`] the tar-stream build context against the
//! directory one, [`cache`] a cold agent's rebuild with and without the
//! shared layer cache.

mod cache;
mod context;
mod ensure;
mod fingerprint;
mod generate;
mod registry_copy;

use std::time::Duration;

use anyhow::Result;
use mzbuild::Status;

use crate::flags::Bench;

impl Bench {
    pub fn run(self) -> Result<Status> {
        match self {
            Bench::Fingerprint(args) => fingerprint::run(args),
            Bench::Ensure(args) => ensure::run(args),
            Bench::Copy(args) => registry_copy::run(args),
            Bench::Context(args) => context::run(args),
            Bench::Cache(args) => cache::run(args),
        }
    }
}

/// The 1-minute load average, where the system reports one.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next().map(str::to_string)
}

/// Best and median.
fn stats(v: &[Duration]) -> (Duration, Duration) {
    let mut s = v.to_vec();
    s.sort();
    (s[0], s[s.len() / 2])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// This process's user + system CPU time so far.
fn own_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we hand it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
