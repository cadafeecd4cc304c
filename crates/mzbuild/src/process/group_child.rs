//! [`GroupChild`]: a child in a process group of its own, registered while
//! it runs, killed with its whole group when dropped.

use std::io;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus};
use std::time::{Duration, Instant};

use super::registry::{kill_group, registry};
use super::watchdog::tell_watchdog;

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
        // The watchdog is what kills the group when mzbuild dies; on Linux
        // the kernel also kills the group leader (its own children are the
        // watchdog's business).
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
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
                tell_watchdog(b'G', true, pgid.to_string().as_bytes());
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
        let mut r = registry();
        if r.groups.remove(&self.pgid) {
            tell_watchdog(b'G', false, self.pgid.to_string().as_bytes());
        }
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
        }
    }
}
