//! `cargo xtask`: this repository's automation. A thin binary: it parses the
//! flags ([`flags`]), makes the context, dispatches to the `mzbuild` engine
//! or the benchmarks, and turns the result into the exit code (here, in one
//! place: 0 success, 1 failure or error, a child's status for `run`, 128 + N
//! after signal N).

mod bench;
mod completions;
mod flags;
mod mzbuild_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = flags::Xtask::parse();
    // Forks: first, while this process has one thread.
    mzbuild::process::start_watchdog();
    mzbuild::process::install_signal_handlers();
    let result = match cli {
        flags::Xtask::Mzbuild(m) => m.run(),
        flags::Xtask::Bench(b) => b.run(),
    };
    // An interrupted run exits from the signal handler, with 128 + N.
    mzbuild::process::defer_to_signal_handler();
    // Results that did not reach stdout (a full disk) fail the run.
    let result = result.and_then(|status| mzbuild::ui::finish().map(|()| status));
    match result {
        Ok(status) => ExitCode::from(status.code()),
        Err(e) => {
            mzbuild::ui::error(format_args!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}
