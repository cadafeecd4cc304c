//! Child processes, and what must not outlive a run, however it ends.
//!
//! Builds (docker buildx, cargo) run as a [`GroupChild`]: in a process group
//! of their own, so that a timeout or an interrupt kills the whole build and
//! not just its first process; registered while they run, so that SIGINT,
//! SIGTERM or SIGHUP kill them; and killed and reaped when dropped, so an
//! early return can never leave one behind. Private directories (the
//! DOCKER_CONFIG holding registry logins, buildx's state) are
//! [`PrivateDir`]s: removed on drop and on those signals. On a signal the
//! handler does both, then exits with 128 + the signal number (130 for
//! Ctrl-C, 143 for SIGTERM).
//!
//! SIGKILL runs no handler, so a [`start_watchdog`] process does the same
//! from outside: forked at start-up, in its own process group, it is told
//! (over a pipe only mzbuild holds) of every group and directory as they are
//! registered and unregistered, and when the pipe closes (mzbuild has exited,
//! whatever the cause) it kills the groups still registered and removes the
//! directories. Each private directory holds [`OWNER_FILE`], which its owner
//! keeps locked (`flock`) while it runs; the OS releases the lock when the
//! owner dies, however it dies, so a run sweeps the directories whose lock
//! it can take (a watchdog killed too, a crash of the machine), and a pid
//! reused by another process changes nothing.
//!
//! Both mechanisms are POSIX (a pipe's end of file, `flock`, `killpg`) and
//! are the same on Linux and macOS; the tests exercise them here. Linux adds
//! one refinement under `cfg`: `PR_SET_PDEATHSIG` on a build's first
//! process, a second line of defence that is not enough alone (it does not
//! reach that process's children, such as the docker CLI's buildx plugin).
//!
//! This module is the one home of `std::process::Command::new` (clippy.toml
//! bans it elsewhere): [`command`] makes every command the engine runs.

mod group_child;
mod private_dir;
mod registry;
mod signals;
mod watchdog;

use std::ffi::OsStr;
use std::process::Command;

pub use group_child::GroupChild;
pub use private_dir::{sweep, PrivateDir, OWNER_FILE, PRIVATE_PREFIXES};
pub use registry::kill_group;
pub use signals::{defer_to_signal_handler, install_signal_handlers, interrupted};
pub use watchdog::start_watchdog;
// What the tests below used when this was one file.
#[cfg(test)]
use {
    registry::registry,
    std::io,
    std::time::{Duration, Instant},
};

/// Environment variables that no child may see (the signing key and its
/// password): removed from the environment of every command [`command`]
/// makes.
static HIDDEN: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Keep the variables `vars` out of every child's environment from now on.
pub fn hide_from_children(vars: &[&str]) {
    let mut hidden = HIDDEN.write().unwrap_or_else(|e| e.into_inner());
    for v in vars {
        if !hidden.iter().any(|h| h == v) {
            hidden.push(v.to_string());
        }
    }
}

/// A command for `program`. Every child the engine starts is made here,
/// without the variables [`hide_from_children`] names.
#[allow(clippy::disallowed_methods)] // the one home of Command::new
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for var in HIDDEN.read().unwrap_or_else(|e| e.into_inner()).iter() {
        cmd.env_remove(var);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `pid` names a process (kill with signal 0 sends nothing).
    /// The processes asked about are not this process's children, so
    /// they do not linger as zombies of it.
    fn alive(pid: u32) -> bool {
        // SAFETY: signal 0 checks existence and permission only.
        unsafe { libc::kill(pid as i32, 0) == 0 }
    }

    #[test]
    fn dropping_a_group_child_kills_its_whole_group() {
        // sh starts a grandchild in the same group and prints its pid.
        let mut cmd = command("sh");
        cmd.args(["-c", "sleep 300 & echo $!; wait"]).stdout(std::process::Stdio::piped());
        let mut child = GroupChild::spawn(&mut cmd).unwrap();
        let leader = child.id();
        let mut line = String::new();
        io::BufRead::read_line(&mut io::BufReader::new(child.take_stdout().unwrap()), &mut line).unwrap();
        let grandchild: u32 = line.trim().parse().unwrap();
        assert!(alive(grandchild));
        assert!(registry().groups.contains(&(leader as i32)));
        drop(child);
        assert!(!registry().groups.contains(&(leader as i32)), "still registered after drop");
        // The grandchild is reparented and reaped by init: wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(grandchild) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(grandchild), "the grandchild survived the drop");
    }

    #[test]
    fn hidden_variables_reach_no_child() {
        let var = "MZBUILD_TEST_HIDDEN_FROM_CHILDREN";
        hide_from_children(&[var]);
        let out = command("env").env(var, "x").output().unwrap();
        // An explicit `env` after `command` still wins (the caller asked);
        // what `command` removes is what the child would inherit.
        assert!(String::from_utf8_lossy(&out.stdout).contains(var));
        let cmd = command("env");
        assert!(cmd.get_envs().any(|(k, v)| k == var && v.is_none()), "{cmd:?}");
    }

    #[test]
    fn wait_timeout_kills_past_the_deadline() {
        let mut cmd = command("sleep");
        cmd.arg("300");
        let mut child = GroupChild::spawn(&mut cmd).unwrap();
        let pid = child.id();
        assert!(child.wait_timeout(Duration::from_millis(100)).unwrap().is_none());
        // Killed and reaped by wait_timeout itself, not later by the drop:
        // the pid no longer names a process (kill 0 checks existence).
        assert!(!alive(pid), "the child outlived wait_timeout's deadline");
        drop(child);
        let mut cmd = command("true");
        let mut child = GroupChild::spawn(&mut cmd).unwrap();
        assert!(child.wait_timeout(Duration::from_secs(60)).unwrap().unwrap().success());
    }
}
