//! A process to watch while it runs: its stderr read line by line (to wait
//! for what it says it is doing, rather than sleep), its stdout collected;
//! interrupted and reaped if the test ends first.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{wait_until, Output};

/// A running child whose stderr is read line by line. Dropping it before
/// `finish` sends SIGINT (then SIGKILL) and reaps it: a test that fails
/// half-way leaves no build running.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    stdout: Arc<Mutex<String>>,
    /// When it was spawned.
    pub started: Instant,
}

impl Running {
    /// Spawn `cmd` with stdin closed and stdout and stderr captured.
    pub fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut readers = vec![];
        let (err_pipe, all) = (child.stderr.take().unwrap(), stderr.clone());
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines() {
                let Ok(line) = line else { break };
                all.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        }));
        let (mut out_pipe, all) = (child.stdout.take().unwrap(), stdout.clone());
        readers.push(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out_pipe.read_to_string(&mut s);
            all.lock().unwrap().push_str(&s);
        }));
        Running { child, lines, stderr, readers, stdout, started: Instant::now() }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait for a stderr line containing `needle`; the line, or None if
    /// stderr ended or `timeout` passed first.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Whether the child has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Wait (at most `timeout`, then kill it and fail) for the process to
    /// end; its output and when it ended.
    #[track_caller]
    pub fn finish(mut self, timeout: Duration) -> (Output, Instant) {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        let ended = Instant::now();
        if status.is_none() {
            interrupt_and_kill(&mut self.child);
        }
        for r in std::mem::take(&mut self.readers) {
            let _ = r.join();
        }
        let out = Output {
            code: status.and_then(|s| s.code()),
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
        };
        assert!(status.is_some(), "still running after {timeout:?} (killed)\n{out}");
        (out, ended)
    }
}

/// SIGINT (so that it stops its builds), then SIGKILL if it is still there.
fn interrupt_and_kill(child: &mut Child) {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    if !wait_until(Duration::from_secs(10), || matches!(child.try_wait(), Ok(Some(_)))) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            interrupt_and_kill(&mut self.child);
        }
    }
}
