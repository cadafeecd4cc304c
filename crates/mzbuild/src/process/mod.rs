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

/// A command for `program`. Every child the engine starts is made here.
#[allow(clippy::disallowed_methods)] // the one home of Command::new
pub fn command(program: impl AsRef<OsStr>) -> Command {
    Command::new(program)
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
