//! [`PrivateDir`]: a private temporary directory that its owner keeps
//! locked, removed on drop, on a signal, by the watchdog, or by a later
//! run's [`sweep`].

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::registry::registry;
use super::watchdog::tell_watchdog;

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
    use std::io::BufRead;

    use crate::process::{command, GroupChild};

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
        // The group was sent SIGKILL and its leader reaped; the sleep that
        // shares the lock dies a moment later (its own exit is not ours to
        // wait for): wait for the lock itself.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !owner_gone(&held) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
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
}
