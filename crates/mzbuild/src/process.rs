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

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsRawFd, OwnedFd};
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
    // std's pipe sets close-on-exec on both ends (pipe2 where the OS has
    // it, pipe + FD_CLOEXEC on macOS): the write end stays out of every
    // child, so that only mzbuild holds it open.
    let Ok((read_end, write_end)) = io::pipe() else { return };
    // SAFETY: the caller guarantees a single thread, so the child may run
    // ordinary code (no lock can be held by a thread that does not exist
    // in it).
    match unsafe { libc::fork() } {
        -1 => {}
        0 => {
            // Closing the write end is what lets EOF come.
            drop(write_end);
            watchdog(File::from(OwnedFd::from(read_end)))
        }
        _ => {
            drop(read_end);
            let _ = WATCHDOG.set(File::from(OwnedFd::from(write_end)));
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
    // when mzbuild exits, not when its watchdog does; a private directory's
    // owner lock must go when mzbuild dies): all but the pipe.
    close_inherited(pipe.as_raw_fd());
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

/// Close every descriptor above 2 but `keep`. `/dev/fd` lists them on
/// Linux and macOS alike; where it cannot be read, every number up to the
/// descriptor limit is closed instead.
fn close_inherited(keep: i32) {
    let open: Vec<i32> = match std::fs::read_dir("/dev/fd") {
        Ok(dir) => dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect(),
        Err(_) => {
            // SAFETY: sysconf has no memory-safety preconditions.
            let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
            (3..max.clamp(256, 65_536) as i32).collect()
        }
    };
    for fd in open.into_iter().filter(|fd| *fd > 2 && *fd != keep) {
        // SAFETY: closing descriptors this process does not use (the one
        // read_dir used is already closed, and closing it again is harmless).
        unsafe { libc::close(fd) };
    }
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
            // A `--json` run's document, with what finished.
            crate::report::print_interrupted();
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

/// A private temporary directory (mode 0700) in `$TMPDIR`, named
/// `<prefix><owner pid>-<random>` and holding [`OWNER_FILE`], which it keeps
/// locked: removed on drop, by the signal handler and by the watchdog; and,
/// should all of them miss it, by the next run's [`sweep`].
pub struct PrivateDir {
    path: PathBuf,
    /// The owner's lock, held as long as the directory is in use. The
    /// descriptor is close-on-exec (std opens files so), so no child keeps
    /// the lock alive past mzbuild.
    _owner: File,
}

/// The file in a [`PrivateDir`] that its owner holds an exclusive `flock`
/// on, and that records the owner's pid (for people reading it).
pub const OWNER_FILE: &str = ".mzbuild-owner";

/// The prefixes of every kind of private directory, for [`sweep`].
pub const PRIVATE_PREFIXES: &[&str] = &["mzbuild-docker-config-", "mzbuild-run-"];

/// How long a private directory may be without its owner file before a
/// sweep takes it for the leftover of a run that died while creating it
/// (the file is written right after the directory, within microseconds).
const UNOWNED_GRACE: Duration = Duration::from_secs(600);

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
        // Locked under another name first, then renamed: a sweep that sees
        // the owner file always finds it locked.
        let owner_file = dir.path().join(OWNER_FILE);
        let unlocked = dir.path().join(format!("{OWNER_FILE}.new"));
        let owner = File::create_new(&unlocked)
            .and_then(|mut f| {
                lock(&f, false)?;
                writeln!(f, "{pid}")?;
                std::fs::rename(&unlocked, &owner_file)?;
                Ok(f)
            })
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", owner_file.display())))?;
        let path = dir.keep();
        let mut r = registry();
        tell_watchdog(b'D', true, path.as_os_str().as_bytes());
        r.dirs.insert(path.clone());
        Ok(PrivateDir { path, _owner: owner })
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

/// An exclusive `flock` on `file`; with `try_only`, fail with `WouldBlock`
/// instead of waiting when another open file holds it. `flock` locks belong
/// to the open file, not the process, so a second open of the same file in
/// this process conflicts like any other (as on Linux, so on macOS).
fn lock(file: &File, try_only: bool) -> io::Result<()> {
    let op = if try_only { libc::LOCK_EX | libc::LOCK_NB } else { libc::LOCK_EX };
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the owner of the private directory `dir` is gone: its owner
/// file exists and nobody holds its lock, or it never got one and is old.
/// When in doubt (an unreadable file, a lock error), the owner is alive.
fn owner_gone(dir: &Path) -> bool {
    match File::open(dir.join(OWNER_FILE)) {
        Ok(file) => match lock(&file, true) {
            // Taken: no process holds it. Dropping `file` releases it.
            Ok(()) => true,
            Err(_) => false,
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::symlink_metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > UNOWNED_GRACE),
        Err(_) => false,
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
        if !PRIVATE_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let path = entry.path();
        // Only real directories: never follow a link someone put there.
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if owner_gone(&path) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
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
    fn sweep_removes_the_private_directories_of_dead_owners_only() {
        let tmp = tempfile::tempdir().unwrap();
        let me = std::process::id();
        // A pid that is gone: a child that was reaped.
        let mut done = command("true").spawn().unwrap();
        done.wait().unwrap();
        let dead = done.id();
        let make = |name: &str, owner: bool| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("config.json"), "{}").unwrap();
            if owner {
                std::fs::write(dir.join(OWNER_FILE), "1\n").unwrap();
            }
            dir
        };
        // Dead owners: nobody holds the lock.
        make(&format!("mzbuild-docker-config-{dead}-a"), true);
        // The name's pid is alive (this process: a pid reused by another
        // process), but nobody holds the lock: the owner is gone.
        make(&format!("mzbuild-run-{me}-b"), true);
        // Alive: another process holds the lock (flock(1) from util-linux
        // stands in for a running mzbuild), ...
        let held = make(&format!("mzbuild-run-{dead}-c"), true);
        let mut cmd = command("flock");
        cmd.arg(held.join(OWNER_FILE))
            .args(["sh", "-c", "echo locked; exec sleep 300"])
            .stdout(std::process::Stdio::piped());
        let mut holder = GroupChild::spawn(&mut cmd).unwrap();
        let mut line = String::new();
        io::BufReader::new(holder.take_stdout().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line, "locked\n");
        // ... or another open file of this very process does.
        let mine = make(&format!("mzbuild-docker-config-{dead}-d"), true);
        let mine_lock = File::open(mine.join(OWNER_FILE)).unwrap();
        lock(&mine_lock, true).unwrap();
        // Being created (no owner file yet): left alone, ...
        make(&format!("mzbuild-docker-config-{me}-e"), false);
        // ... unless it has been so for longer than any creation takes.
        let old = make(&format!("mzbuild-run-{dead}-f"), false);
        File::open(&old).unwrap().set_modified(std::time::SystemTime::now() - 2 * UNOWNED_GRACE).unwrap();
        // Not ours; and a link is never followed.
        make(&format!("other-{dead}-g"), true);
        std::os::unix::fs::symlink(tmp.path().join(format!("other-{dead}-g")), tmp.path().join("mzbuild-run-1-h"))
            .unwrap();
        sweep(tmp.path());
        let mut left: Vec<String> =
            std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        // flock and the sleep that inherited its descriptor, as a group.
        holder.kill();
        let mut kept = [
            format!("mzbuild-docker-config-{dead}-d"),
            format!("mzbuild-docker-config-{me}-e"),
            "mzbuild-run-1-h".to_string(),
            format!("mzbuild-run-{dead}-c"),
            format!("other-{dead}-g"),
        ];
        kept.sort();
        assert_eq!(left, kept);
        // Once its holder is gone, the lock is free and the directory swept.
        sweep(tmp.path());
        assert!(!held.exists(), "the directory of a holder that died was kept");
        assert!(mine.exists());
    }

    #[test]
    fn a_private_directory_is_locked_while_it_lives_and_gone_after() {
        let dir = PrivateDir::new("mzbuild-run-").unwrap();
        let path = dir.path().to_path_buf();
        assert!(!owner_gone(&path), "a live private directory looks abandoned");
        sweep(path.parent().unwrap());
        assert!(path.join(OWNER_FILE).exists(), "a sweep removed a live private directory");
        assert!(!path.join(format!("{OWNER_FILE}.new")).exists());
        drop(dir);
        assert!(!path.exists());
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
