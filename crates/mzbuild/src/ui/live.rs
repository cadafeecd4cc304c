//! The live status line (cargo-style): one line at the bottom of the
//! terminal saying what a run is doing now (images done / running /
//! queued, each running image's elapsed time and latest build step, the
//! cargo pre-image's `Compiling N/M crates`, the bytes copies sent, and an
//! estimate from earlier runs' durations), while finished lines scroll
//! above it ([`above`], which every [`super::line`] goes through).
//!
//! Only the main thread draws: the loops that wait for workers (the
//! scheduler, the cargo pre-image, the copies) call [`tick`] a few times a
//! second; it reads what buildx wrote to the running images' logs since the
//! last tick (for the latest `#7 [3/5] RUN ...` step, and with `-v` to
//! stream the logs). Workers only bump counters ([`add_copied`]).
//!
//! Everything here is a no-op unless [`start`] was called with the live
//! line or `-v` on ([`super::config`]): plain output stays as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the loops that wait call [`tick`].
pub const TICK: Duration = Duration::from_millis(250);

/// The status line, while one is drawn; [`above`] prints above it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);
static STATE: Mutex<Option<State>> = Mutex::new(None);
/// Bytes the copies of the run sent so far (bumped by the copying workers).
static COPIED: AtomicU64 = AtomicU64::new(0);

/// Print with `print` (a few lines of stderr) above the status line.
pub fn above(print: impl FnOnce()) {
    let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(bar) => bar.suspend(print),
        None => print(),
    }
}

#[derive(Default)]
struct State {
    started: Option<Instant>,
    /// Images of the build, by name, not started yet.
    pending: BTreeSet<String>,
    running: BTreeMap<String, Running>,
    done: usize,
    total: usize,
    workers: usize,
    /// Seconds earlier runs took, by image (and `cargo` for the pre-image).
    estimates: BTreeMap<String, f64>,
    cargo: Option<Cargo>,
    copying: Option<(usize, Instant)>,
}

struct Running {
    since: Instant,
    log: Tail,
    step: String,
}

struct Cargo {
    since: Instant,
    units: usize,
    expected: Option<usize>,
    log: Tail,
}

/// A log file read incrementally: each read returns the complete lines
/// written since the last one.
struct Tail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl Tail {
    fn new(path: &Path) -> Tail {
        Tail { path: path.to_path_buf(), offset: 0, partial: String::new() }
    }

    fn read(&mut self) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(&self.path) else { return vec![] };
        // A log started anew (a retry's, or another run's) is read anew.
        if f.metadata().is_ok_and(|m| m.len() < self.offset) {
            self.offset = 0;
            self.partial.clear();
        }
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return vec![];
        }
        let mut bytes = Vec::new();
        let Ok(n) = f.read_to_end(&mut bytes) else { return vec![] };
        self.offset += n as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let Some(end) = self.partial.rfind('\n') else { return vec![] };
        let rest = self.partial.split_off(end + 1);
        let lines = std::mem::replace(&mut self.partial, rest).lines().map(str::to_string).collect();
        lines
    }
}

/// A step header of buildx's plain progress: `#7 [3/5] RUN ...`.
fn is_step(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('#') else { return false };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && rest[digits..].starts_with(" [")
}

/// What a run shows while it goes; dropping it clears the line.
pub struct Live {
    on: bool,
}

/// Start showing progress (when the live line or `-v` is on), with
/// `estimates` (seconds by image, see [`crate::build::history`]).
pub fn start(estimates: BTreeMap<String, f64>) -> Live {
    let config = super::config();
    if !config.live && !config.verbose {
        return Live { on: false };
    }
    COPIED.store(0, Ordering::Relaxed);
    *STATE.lock().unwrap_or_else(|e| e.into_inner()) =
        Some(State { started: Some(Instant::now()), estimates, ..State::default() });
    if config.live {
        // Drawn on stderr whether or not it is a terminal (`--progress
        // tty`); at most 10 times a second.
        let target = ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::stderr()), 10);
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(ProgressStyle::with_template("{wide_msg}").expect("a valid template"));
        *BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }
    Live { on: true }
}

impl Drop for Live {
    fn drop(&mut self) {
        if !self.on {
            return;
        }
        tick();
        if let Some(bar) = BAR.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
        *STATE.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

fn with_state(f: impl FnOnce(&mut State)) {
    if let Some(state) = STATE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        f(state);
    }
}

/// The images about to be built, `workers` at a time.
pub fn images(names: &[&str], workers: usize) {
    with_state(|s| {
        s.pending = names.iter().map(|n| n.to_string()).collect();
        s.total = names.len();
        s.workers = workers.max(1);
    });
    tick();
}

/// Image `name` started building, logging to `log`.
pub fn image_started(name: &str, log: &Path) {
    with_state(|s| {
        s.pending.remove(name);
        s.running.insert(name.to_string(), Running { since: Instant::now(), log: Tail::new(log), step: String::new() });
    });
    tick();
}

/// Image `name` finished (however it ended): the rest of its log is shown
/// with `-v`.
pub fn image_finished(name: &str) {
    tick();
    with_state(|s| {
        s.pending.remove(name);
        s.running.remove(name);
        s.done += 1;
    });
    tick();
}

/// The cargo pre-image started, logging to `log`; `expected`: how many
/// units the last one built.
pub fn cargo_started(log: &Path, expected: Option<usize>) {
    with_state(|s| s.cargo = Some(Cargo { since: Instant::now(), units: 0, expected, log: Tail::new(log) }));
    tick();
}

/// Cargo finished one more unit (a `compiler-artifact` message).
pub fn cargo_unit() {
    with_state(|s| {
        if let Some(c) = s.cargo.as_mut() {
            c.units += 1;
        }
    });
    tick();
}

pub fn cargo_finished() {
    tick();
    with_state(|s| s.cargo = None);
}

/// `images` images are being copied between registries.
pub fn copies_started(images: usize) {
    COPIED.store(0, Ordering::Relaxed);
    with_state(|s| s.copying = Some((images, Instant::now())));
    tick();
}

pub fn copies_finished() {
    with_state(|s| s.copying = None);
}

/// A copy sent `bytes` more (any thread).
pub fn add_copied(bytes: u64) {
    COPIED.fetch_add(bytes, Ordering::Relaxed);
}

/// Read what the logs say now, print new log lines (`-v`), redraw.
pub fn tick() {
    let verbose = super::config().verbose;
    let mut lines = Vec::new();
    let mut message = None;
    {
        let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = guard.as_mut() else { return };
        for (name, r) in s.running.iter_mut() {
            for l in r.log.read() {
                if is_step(&l) {
                    r.step = l.clone();
                }
                if verbose {
                    lines.push(format!("{name} | {l}"));
                }
            }
        }
        if let Some(c) = s.cargo.as_mut() {
            for l in c.log.read() {
                if verbose {
                    lines.push(format!("cargo | {l}"));
                }
            }
        }
        if BAR.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            message = Some(render(s, COPIED.load(Ordering::Relaxed), Instant::now()));
        }
    }
    for l in lines {
        super::line(l);
    }
    if let (Some(m), Some(bar)) = (message, BAR.lock().unwrap_or_else(|e| e.into_inner()).as_ref()) {
        bar.set_message(m);
    }
}

/// Whole seconds, `1m05s` from a minute on.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// The status line.
fn render(s: &State, copied: u64, now: Instant) -> String {
    let mut parts = Vec::new();
    let mut left: Option<f64> = None;
    if let Some(c) = &s.cargo {
        let of = match c.expected {
            Some(m) if m >= c.units => format!("{}/{m}", c.units),
            _ => c.units.to_string(),
        };
        let took = now - c.since;
        parts.push(format!("cargo build: Compiling {of} crates, {}", clock(took)));
        if let Some(e) = s.estimates.get("cargo") {
            left = Some((e - took.as_secs_f64()).max(0.0));
        }
    }
    if let Some((n, since)) = s.copying {
        parts.push(format!(
            "copying {}: {} sent, {}",
            super::count(n, "image", "images"),
            super::show_bytes(copied),
            clock(now - since)
        ));
    }
    if s.total > 0 {
        parts.push(format!("{}/{} done, {} running, {} queued", s.done, s.total, s.running.len(), s.pending.len()));
        for (name, r) in &s.running {
            let mut p = format!("{name} {}", clock(now - r.since));
            if !r.step.is_empty() {
                p.push(' ');
                p.push_str(&r.step);
            }
            parts.push(p);
        }
        // The images still to go that earlier runs timed, spread over the
        // workers.
        let running = s
            .running
            .iter()
            .filter_map(|(n, r)| s.estimates.get(n).map(|e| (e - (now - r.since).as_secs_f64()).max(0.0)));
        let pending = s.pending.iter().filter_map(|n| s.estimates.get(n).copied());
        let known: Vec<f64> = running.chain(pending).collect();
        if !known.is_empty() {
            let images = known.iter().sum::<f64>() / (s.workers.min(known.len()).max(1) as f64);
            left = Some(left.unwrap_or(0.0) + images);
        }
    }
    if let Some(l) = left {
        parts.push(format!("about {} left", clock(Duration::from_secs_f64(l.ceil()))));
    }
    if parts.is_empty() {
        parts.push(format!("working, {}", clock(now - s.started.unwrap_or(now))));
    }
    format!("{} {}", super::paint(anstyle::Style::new().bold(), "mzbuild:"), parts.join(" · "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_headers_of_buildx_plain_progress() {
        assert!(is_step("#7 [3/5] RUN make"));
        assert!(is_step("#12 [internal] load build definition from Dockerfile"));
        for no in ["#7 DONE 0.1s", "#7 0.253 hello", "# [1/2]", "#x [1/2]", "FROM scratch"] {
            assert!(!is_step(no), "{no}");
        }
    }

    #[test]
    fn the_status_line_says_what_runs_and_what_is_left() {
        let now = Instant::now();
        let mut s = State {
            started: Some(now),
            pending: ["c".to_string()].into(),
            total: 3,
            done: 1,
            workers: 2,
            estimates: [("b".to_string(), 30.0), ("c".to_string(), 10.0)].into(),
            ..State::default()
        };
        s.running.insert(
            "b".into(),
            Running {
                since: now - Duration::from_secs(12),
                log: Tail::new(Path::new("/nonexistent")),
                step: "#7 [2/3] RUN make".into(),
            },
        );
        // b: 18s of 30 left, c: 10s; over 2 workers: 14s.
        assert_eq!(
            render(&s, 0, now),
            "mzbuild: 1/3 done, 1 running, 1 queued · b 12s #7 [2/3] RUN make · about 14s left"
        );
        s.estimates.clear();
        s.cargo = Some(Cargo {
            since: now - Duration::from_secs(75),
            units: 12,
            expected: Some(40),
            log: Tail::new(Path::new("/nonexistent")),
        });
        s.copying = Some((2, now));
        assert_eq!(
            render(&s, 1_500_000, now),
            "mzbuild: cargo build: Compiling 12/40 crates, 1m15s · copying 2 images: 1.5 MB sent, 0s · 1/3 done, 1 \
             running, 1 queued · b 12s #7 [2/3] RUN make"
        );
    }

    #[test]
    fn logs_are_read_line_by_line_as_they_grow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut t = Tail::new(&path);
        assert!(t.read().is_empty(), "no log yet");
        std::fs::write(&path, "one\ntw").unwrap();
        assert_eq!(t.read(), ["one"]);
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        assert_eq!(t.read(), ["two", "three"]);
        assert!(t.read().is_empty());
    }
}
