//! What must not outlive an interrupted run: builds running in their own
//! process groups (so a timeout can kill a whole build) and the private
//! DOCKER_CONFIG holding registry logins. On Ctrl-C or SIGTERM the handler
//! kills those process groups and removes those directories, then exits 130.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

static PGIDS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
static DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

pub fn install() {
    let _ = ctrlc::set_handler(|| {
        for pgid in PGIDS.lock().map(|p| p.clone()).unwrap_or_default() {
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

pub fn add_group(pgid: u32) {
    PGIDS.lock().unwrap().insert(pgid);
}

pub fn remove_group(pgid: u32) {
    PGIDS.lock().unwrap().remove(&pgid);
}

pub fn add_dir(dir: PathBuf) {
    DIRS.lock().unwrap().insert(dir);
}

pub fn remove_dir(dir: &PathBuf) {
    DIRS.lock().unwrap().remove(dir);
}
