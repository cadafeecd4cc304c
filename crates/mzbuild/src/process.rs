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
//! directories. (PR_SET_PDEATHSIG on a build's first process is not enough:
//! it does not reach that process's children, such as the docker CLI's
//! buildx plugin, or the docker CLI under a wrapper script.) Each private
//! directory's name holds its owner's pid, and it records the owner's start
//! time: a run sweeps the directories of runs that are gone (a watchdog
//! killed too, a crash of the machine).
//!
//! This module is the one home of `std::process::Command::new` (clippy.toml
//! bans it elsewhere): [`command`] makes every command the engine runs.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus};
use std::sync::{Mutex, OnceLock};
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

/// The write end of the pipe to the watchdog, once it runs.
static WATCHDOG: OnceLock<File> = OnceLock::new();

/// Tell the watchdog about a registration: `kind` is `G` (a process group;
/// `what` its id) or `D` (a directory), `on` whether it starts or ends.
/// Called with the registry locked, so messages keep the registry's order.
/// A watchdog that is gone is not an error.
fn tell_watchdog(kind: u8, on: bool, what: &[u8]) {
    if let Some(mut pipe) = WATCHDOG.get() {
        // One write of less than PIPE_BUF bytes: atomic.
        let mut msg = Vec::with_capacity(what.len() + 3);
        msg.extend_from_slice(&[kind, if on { b'+' } else { b'-' }]);
        msg.extend_from_slice(what);
        msg.push(0);
        let _ = pipe.write_all(&msg);
    }
}

/// Start the watchdog (see the module docs). Call it once, at start-up,
/// while the process has a single thread: it forks. If it cannot start, the
/// run goes on without it.
pub fn start_watchdog() {
    if WATCHDOG.get().is_some() {
        return;
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`. O_CLOEXEC keeps the
    // write end out of every child, so that only mzbuild holds it open.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return;
    }
    let [read_end, write_end] = fds;
    // SAFETY: the caller guarantees a single thread, so the child may run
    // ordinary code (no lock can be held by a thread that does not exist
    // in it).
    match unsafe { libc::fork() } {
        -1 => {
            // SAFETY: both descriptors are ours and open.
            unsafe {
                libc::close(read_end);
                libc::close(write_end);
            }
        }
        0 => {
            // SAFETY: the write end is ours; closing it is what lets EOF come.
            unsafe { libc::close(write_end) };
            // SAFETY: the read end is ours, and owned by the File from here.
            watchdog(unsafe { File::from_raw_fd(read_end) })
        }
        _ => {
            // SAFETY: as above.
            unsafe { libc::close(read_end) };
            // SAFETY: the write end is ours, and owned by the File from here.
            let _ = WATCHDOG.set(unsafe { File::from_raw_fd(write_end) });
        }
    }
}

/// The watchdog process: follow the registrations until the pipe closes,
/// then kill what is still registered and exit.
fn watchdog(pipe: File) -> ! {
    // SAFETY: plain system calls on this process. Its own process group, so
    // that a signal to mzbuild's group (Ctrl-C in a terminal, a CI runner
    // killing the job's group) does not stop the cleanup; no terminal
    // output, no terminal signals.
    unsafe {
        libc::setpgid(0, 0);
        for signal in [libc::SIGINT, libc::SIGHUP, libc::SIGTERM, libc::SIGPIPE, libc::SIGQUIT] {
            libc::signal(signal, libc::SIG_IGN);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
    }
    // Nor any other descriptor it inherited (a caller's pipe must see EOF
    // when mzbuild exits, not when its watchdog does): all but the pipe.
    let keep = std::os::unix::io::AsRawFd::as_raw_fd(&pipe);
    let inherited: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    for fd in inherited.into_iter().filter(|fd| *fd > 2 && *fd != keep) {
        // SAFETY: closing descriptors this process does not use (the one
        // read_dir used is already closed, and closing it again is harmless).
        unsafe { libc::close(fd) };
    }
    let mut groups: BTreeSet<i32> = BTreeSet::new();
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for record in io::BufReader::new(pipe).split(0) {
        let Ok(record) = record else { break };
        let (Some(&kind), Some(&sign)) = (record.first(), record.get(1)) else { continue };
        let what = &record[2..];
        match kind {
            b'G' => {
                let Some(pgid) = std::str::from_utf8(what).ok().and_then(|p| p.parse().ok()) else { continue };
                if sign == b'+' {
                    groups.insert(pgid);
                } else {
                    groups.remove(&pgid);
                }
            }
            b'D' => {
                let dir = PathBuf::from(OsStr::from_bytes(what));
                if sign == b'+' {
                    dirs.insert(dir);
                } else {
                    dirs.remove(&dir);
                }
            }
            _ => {}
        }
    }
    for pgid in groups {
        kill_group(pgid);
    }
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
    // SAFETY: _exit ends this process without running mzbuild's exit
    // handlers (which are the parent's business).
    unsafe { libc::_exit(0) }
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
            for dir in &dirs {
                let _ = std::fs::remove_dir_all(dir);
            }
            let logins = dirs.iter().any(|d| d.file_name().is_some_and(|n| n.as_bytes().starts_with(LOGINS)));
            crate::ui::progress(if logins {
                "interrupted; stopped running builds and removed temporary docker logins"
            } else {
                "interrupted; stopped running builds"
            });
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

/// A private temporary directory (mode 0700) in `$TMPDIR`, named
/// `<prefix><owner pid>-<random>` and holding [`OWNER_FILE`]: removed on
/// drop, by the signal handler and by the watchdog; and, should all of them
/// miss it, by the next run's [`sweep`].
pub struct PrivateDir {
    path: PathBuf,
}

/// The file in a [`PrivateDir`] that records its owner: `<pid> <start time>`
/// (the start time from `/proc/<pid>/stat`, so that a reused pid is not
/// taken for the owner).
pub const OWNER_FILE: &str = ".mzbuild-owner";

/// The prefixes of every kind of private directory, for [`sweep`].
pub const PRIVATE_PREFIXES: &[&str] = &["mzbuild-docker-config-", "mzbuild-run-"];

impl PrivateDir {
    /// A new private directory; first sweeps those of dead runs.
    pub fn new(prefix: &str) -> io::Result<PrivateDir> {
        debug_assert!(PRIVATE_PREFIXES.contains(&prefix), "add `{prefix}` to PRIVATE_PREFIXES");
        let tmp = std::env::temp_dir();
        sweep(&tmp);
        let pid = std::process::id();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}{pid}-"))
            .tempdir_in(&tmp)
            .map_err(|e| io::Error::new(e.kind(), format!("creating a directory in {}: {e}", tmp.display())))?;
        let owner = format!("{pid} {}\n", start_time(pid).unwrap_or_default());
        let owner_file = dir.path().join(OWNER_FILE);
        std::fs::write(&owner_file, owner)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", owner_file.display())))?;
        let path = dir.keep();
        let mut r = registry();
        tell_watchdog(b'D', true, path.as_os_str().as_bytes());
        r.dirs.insert(path.clone());
        Ok(PrivateDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        let mut r = registry();
        r.dirs.remove(&self.path);
        tell_watchdog(b'D', false, self.path.as_os_str().as_bytes());
    }
}

/// Remove the private directories in `tmp` whose owner is no longer
/// running (a run killed with its watchdog, a crash). A directory whose
/// owner is alive, or whose owner cannot be told, is left alone.
pub fn sweep(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = PRIVATE_PREFIXES.iter().find_map(|p| name.strip_prefix(p)) else { continue };
        let Some(pid) = rest.split_once('-').and_then(|(pid, _)| pid.parse::<u32>().ok()) else { continue };
        let recorded = std::fs::read_to_string(entry.path().join(OWNER_FILE)).ok();
        let owner_alive = match (start_time(pid), recorded) {
            // The pid is gone: so is the owner.
            (None, _) => false,
            // Alive, and the owner file is not written yet (or unreadable):
            // it may be a run that is just starting.
            (Some(_), None) => true,
            (Some(now), Some(recorded)) => recorded.split_whitespace().nth(1).is_none_or(|t| t == now),
        };
        if !owner_alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`, in
/// clock ticks since boot), if it is running.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state); a zombie is not running.
    (fields.first() != Some(&"Z")).then(|| fields.get(19).map(|s| s.to_string())).flatten()
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
    fn sweep_removes_the_private_directories_of_dead_owners_only() {
        let tmp = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let my_start = start_time(me).unwrap();
        // A pid that is gone: a child that was reaped.
        let mut done = command("true").spawn().unwrap();
        done.wait().unwrap();
        let dead = done.id();
        let make = |name: &str, owner: Option<String>| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("config.json"), "{}").unwrap();
            if let Some(o) = owner {
                std::fs::write(dir.join(OWNER_FILE), o).unwrap();
            }
        };
        make(&format!("mzbuild-docker-config-{dead}-a"), Some(format!("{dead} 1\n")));
        make(&format!("mzbuild-run-{dead}-b"), None);
        // Alive, with this process's start time: ours.
        make(&format!("mzbuild-run-{me}-c"), Some(format!("{me} {my_start}\n")));
        // Alive, being created (no owner file yet): left alone.
        make(&format!("mzbuild-docker-config-{me}-d"), None);
        // The pid was reused by another process: the owner is gone.
        make(&format!("mzbuild-run-{me}-e"), Some(format!("{me} 1\n")));
        // Not ours.
        make(&format!("other-{dead}-f"), None);
        sweep(tmp.path());
        let mut left: Vec<String> =
            std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(
            left,
            [format!("mzbuild-docker-config-{me}-d"), format!("mzbuild-run-{me}-c"), format!("other-{dead}-f")]
        );
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
