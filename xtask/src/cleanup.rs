//! What must not outlive an interrupted run: builds running in their own
//! process groups (so a timeout can kill a whole build) and the private
//! DOCKER_CONFIG holding registry logins. On Ctrl-C or SIGTERM the handler
//! kills those process groups and removes those directories, then exits 130.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

/// Running process groups, and whether we were interrupted: one lock, so a
/// build that starts while the handler runs is killed by `add_group`.
static PGIDS: Mutex<(BTreeSet<u32>, bool)> = Mutex::new((BTreeSet::new(), false));
static DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

pub fn install() {
    let _ = ctrlc::set_handler(|| {
        let groups = match PGIDS.lock() {
            Ok(mut p) => {
                p.1 = true;
                p.0.clone()
            }
            Err(_) => BTreeSet::new(),
        };
        for pgid in groups {
            kill_group(pgid);
        }
        for dir in DIRS.lock().map(|d| d.clone()).unwrap_or_default() {
            let _ = std::fs::remove_dir_all(dir);
        }
        eprintln!("mzbuild: interrupted; stopped running builds and removed temporary docker logins");
        std::process::exit(130);
    });
}

pub fn kill_group(pgid: u32) {
    let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
}

/// Register a child's process group (call right after spawning it). After
/// an interrupt, the group is killed at once instead.
pub fn add_group(pgid: u32) {
    let mut p = PGIDS.lock().unwrap();
    if p.1 {
        kill_group(pgid);
    } else {
        p.0.insert(pgid);
    }
}

pub fn remove_group(pgid: u32) {
    PGIDS.lock().unwrap().0.remove(&pgid);
}

pub fn add_dir(dir: PathBuf) {
    DIRS.lock().unwrap().insert(dir);
}

pub fn remove_dir(dir: &PathBuf) {
    DIRS.lock().unwrap().remove(dir);
}
