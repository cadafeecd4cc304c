//! SIGINT, SIGTERM and SIGHUP: kill the registered groups, remove the
//! registered directories, and exit with 128 + the signal number.

use std::os::unix::ffi::OsStrExt;

use super::registry::{kill_group, registry};

/// Install the SIGINT/SIGTERM/SIGHUP handler (once, at start-up).
pub fn install_signal_handlers() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else { return };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let (groups, dirs) = {
                let mut r = registry();
                r.interrupted = true;
                (std::mem::take(&mut r.groups), std::mem::take(&mut r.dirs))
            };
            for pgid in groups {
                kill_group(pgid);
            }
            for dir in &dirs {
                let _ = std::fs::remove_dir_all(dir);
            }
            let logins = dirs.iter().any(|d| d.file_name().is_some_and(|n| n.as_bytes().starts_with(LOGINS)));
            crate::ui::progress(if logins {
                "interrupted; stopped running builds and removed temporary docker logins"
            } else {
                "interrupted; stopped running builds"
            });
            // A `--json` run's document, with what finished.
            crate::ui::interrupt::print_interrupted();
            std::process::exit(128 + signal);
        }
    });
}

/// The prefix of the private directories that hold docker logins.
const LOGINS: &[u8] = b"mzbuild-docker-config-";

/// Whether a signal has arrived: what fails from then on was stopped by
/// the handler, and is interrupted rather than failed.
pub fn interrupted() -> bool {
    registry().interrupted
}

/// Call before the process exits on its own: once a signal has arrived,
/// the handler is stopping the builds (which makes them fail) and will exit
/// with 128 + the signal number; the run's own failure must not win that
/// race with exit status 1. Never returns in that case.
pub fn defer_to_signal_handler() {
    if registry().interrupted {
        loop {
            std::thread::park();
        }
    }
}
