//! The watchdog: a process forked at start-up that kills the registered
//! groups and removes the registered directories when mzbuild exits,
//! whatever the cause (SIGKILL included; see the module docs of
//! [`super`]).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::OnceLock;

use super::registry::kill_group;

/// The write end of the pipe to the watchdog, once it runs.
static WATCHDOG: OnceLock<File> = OnceLock::new();

/// Tell the watchdog about a registration: `kind` is `G` (a process group;
/// `what` its id) or `D` (a directory), `on` whether it starts or ends.
/// Called with the registry locked, so messages keep the registry's order.
/// A watchdog that is gone is not an error.
pub(super) fn tell_watchdog(kind: u8, on: bool, what: &[u8]) {
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
