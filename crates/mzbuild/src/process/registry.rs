//! What must be undone if the run ends early: the process groups and
//! private directories registered while they live, shared by the signal
//! handler, [`super::GroupChild`] and [`super::PrivateDir`].

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

pub(super) struct Registry {
    pub groups: BTreeSet<i32>,
    pub dirs: BTreeSet<PathBuf>,
    /// Set once a signal arrived: groups registered later are killed at once.
    pub interrupted: bool,
}

/// One lock for all of it, so a build that starts while the handler runs is
/// killed by `register` instead of escaping.
static REGISTRY: Mutex<Registry> =
    Mutex::new(Registry { groups: BTreeSet::new(), dirs: BTreeSet::new(), interrupted: false });

pub(super) fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// SIGKILL to every process of group `pgid`.
pub fn kill_group(pgid: i32) {
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}
