//! Child processes, and what must not outlive an interrupted run.
//!
//! Builds (docker buildx, cargo) run as a [`GroupChild`]: in a process group
//! of their own, so that a timeout or an interrupt kills the whole build and
//! not just its first process; registered while they run, so that SIGINT,
//! SIGTERM or SIGHUP kill them; and killed and reaped when dropped, so an
//! early return can never leave one behind. Private directories (the
//! DOCKER_CONFIG holding registry logins) are [`PrivateDir`]s: removed on
//! drop and on those signals. On a signal the handler does both, then exits
//! with 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM).
//!
//! This module is the one home of `std::process::Command::new` (clippy.toml
//! bans it elsewhere): [`command`] makes every command the engine runs.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Registry {
    groups: BTreeSet<i32>,
    dirs: BTreeSet<PathBuf>,
    /// Set once a signal arrived: groups registered later are killed at once.
    interrupted: bool,
}

/// One lock for all of it, so a build that starts while the handler runs is
/// killed by `register` instead of escaping.
static REGISTRY: Mutex<Registry> =
    Mutex::new(Registry { groups: BTreeSet::new(), dirs: BTreeSet::new(), interrupted: false });

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

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
            for dir in dirs {
                let _ = std::fs::remove_dir_all(dir);
            }
            crate::ui::progress("interrupted; stopped running builds and removed temporary docker logins");
            std::process::exit(128 + signal);
        }
    });
}

/// A command for `program`. Every child the engine starts is made here.
#[allow(clippy::disallowed_methods)] // the one home of Command::new
pub fn command(program: impl AsRef<OsStr>) -> Command {
    Command::new(program)
}

/// SIGKILL to every process of group `pgid`.
pub fn kill_group(pgid: i32) {
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

/// A child in its own process group, killed (with its group) and reaped
/// when dropped unless it was waited for.
pub struct GroupChild {
    child: Child,
    pgid: i32,
    reaped: bool,
}

impl GroupChild {
    /// Spawn `cmd` as the leader of a new process group, and register the
    /// group for the signal handler.
    pub fn spawn(cmd: &mut Command) -> io::Result<GroupChild> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                // If mzbuild dies without running any handler (kill -9),
                // the kernel kills the group leader; the leader's own
                // children are its business (see `kill_group` on timeouts).
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pgid = child.id() as i32;
        {
            let mut r = registry();
            if r.interrupted {
                kill_group(pgid);
            } else {
                r.groups.insert(pgid);
            }
        }
        Ok(GroupChild { child, pgid, reaped: false })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Wait for the group leader to exit.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait()?;
        self.reaped();
        Ok(status)
    }

    /// Wait at most `timeout`; past it, kill the whole group, reap the
    /// leader and return `None`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.reaped();
                return Ok(Some(status));
            }
            if start.elapsed() > timeout {
                self.kill();
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kill the whole group and reap the leader.
    pub fn kill(&mut self) {
        kill_group(self.pgid);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped();
    }

    fn reaped(&mut self) {
        self.reaped = true;
        registry().groups.remove(&self.pgid);
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
        }
    }
}

/// A private temporary directory (mode 0700): removed on drop, and by the
/// signal handler.
pub struct PrivateDir {
    dir: tempfile::TempDir,
}

impl PrivateDir {
    pub fn new(prefix: &str) -> io::Result<PrivateDir> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        registry().dirs.insert(dir.path().to_path_buf());
        Ok(PrivateDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        registry().dirs.remove(self.dir.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // A zombie still has a /proc entry; its state is `Z`.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
            .unwrap_or(false)
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
        assert!(child.wait_timeout(Duration::from_millis(100)).unwrap().is_none());
        let mut cmd = command("true");
        let mut child = GroupChild::spawn(&mut cmd).unwrap();
        assert!(child.wait_timeout(Duration::from_secs(60)).unwrap().unwrap().success());
    }
}
