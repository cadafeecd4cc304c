//! A dependency-aware worker pool for image builds.
//!
//! The main thread owns all state and does all printing (through the
//! `report` callback); N worker threads receive ready jobs on one
//! `crossbeam-channel` and send results back on another. A job is handed out
//! only when all its dependencies succeeded; jobs with the most dependants go
//! first, so long chains start early. When a job fails, every job that
//! depends on it, directly or not, is marked skipped at once, naming the
//! failed dependency (nobody waits for a build that will never come), while
//! independent jobs go on.
//!
//! Running builds bound themselves (each attempt is killed after `timeout`
//! by its runner); waiting jobs only guard against a stall: they give up
//! when nothing has moved for `timeout` plus a grace (`patience`), where a
//! job finishing and a job reporting progress (a [`Progress`] call: a build
//! starting another attempt, or backing off before one) both count. So a
//! long but moving chain, or a build retried up to 3 times, never makes its
//! dependants give up; they learn their dependency's real outcome.
//! The drain loop never returns early: every failure is recorded, and the
//! caller reports them all at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};

#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    /// Names of jobs (of this pool) that must succeed first. Dependencies
    /// outside the pool are assumed to be available already.
    pub deps: Vec<String>,
}

#[derive(Debug)]
pub enum Outcome<T> {
    Done {
        value: T,
        took: Duration,
    },
    Failed {
        error: String,
        took: Duration,
    },
    /// Not run because a dependency failed, was skipped or timed out.
    Skipped {
        because: String,
    },
    /// Gave up waiting for dependencies.
    TimedOut {
        waiting_for: Vec<String>,
    },
}

impl<T> Outcome<T> {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Done { .. })
    }
}

/// Progress, delivered on the main thread.
pub enum Event<'a, T> {
    Started(&'a str),
    Finished(&'a str, &'a Outcome<T>),
    /// Nothing happened for [`TICK`]: time to redraw a status line.
    Tick,
}

/// How often [`Event::Tick`] comes while jobs run.
pub const TICK: Duration = crate::ui::live::TICK;

/// What a running job calls to say it is still moving (e.g. before each
/// retry of its build), so that its dependants keep waiting.
pub struct Progress<'a>(&'a (dyn Fn() + Sync));

impl Progress<'_> {
    pub fn report(&self) {
        (self.0)()
    }
}

enum Message<T> {
    Alive,
    Done(String, Result<T, String>, Duration),
}

/// How long waiting jobs wait with nothing moving: `timeout` and a grace
/// for the build that is killed at `timeout` to be reaped and reported.
pub fn patience(timeout: Duration) -> Duration {
    timeout + (timeout / 2).min(Duration::from_secs(60))
}

pub fn run<T: Send>(
    jobs: &[JobSpec],
    workers: usize,
    timeout: Duration,
    work: &(dyn Fn(&str, &Progress<'_>) -> Result<T, String> + Sync),
    report: impl FnMut(Event<'_, T>),
) -> BTreeMap<String, Outcome<T>> {
    let mut queue = Queue::new(jobs, workers.max(1), timeout, report);
    let (job_tx, job_rx) = unbounded::<String>();
    let (res_tx, res_rx) = unbounded::<Message<T>>();
    std::thread::scope(|s| {
        for _ in 0..queue.workers {
            let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
            s.spawn(move || work_on(&job_rx, &res_tx, work));
        }
        drop(res_tx);
        loop {
            queue.spawn_work_if_possible(&job_tx);
            if queue.running == 0 {
                // Nothing runs: either all is done, or nothing can ever run
                // (only possible with a cycle, which discovery rejects).
                queue.give_up_waiting(false);
                break;
            }
            queue.wait_and_handle(&res_rx);
        }
        drop(job_tx);
    });
    queue.outcomes
}

/// A worker: runs the jobs it is handed until the pool closes.
fn work_on<T: Send>(
    jobs: &Receiver<String>,
    results: &Sender<Message<T>>,
    work: &(dyn Fn(&str, &Progress<'_>) -> Result<T, String> + Sync),
) {
    for name in jobs {
        let t = Instant::now();
        let alive = || {
            let _ = results.send(Message::Alive);
        };
        let r = work(&name, &Progress(&alive));
        if results.send(Message::Done(name, r, t.elapsed())).is_err() {
            return;
        }
    }
}

/// The pool's state, owned by the main thread: what waits on what, what
/// runs, what is finished, and when anything last moved.
struct Queue<'a, T, R> {
    names: BTreeSet<&'a str>,
    dependants: BTreeMap<&'a str, Vec<&'a str>>,
    /// Priority: how many jobs (transitively) wait on each one.
    weight: BTreeMap<&'a str, usize>,
    /// Jobs not yet handed out, with the dependencies they still wait for.
    waiting: BTreeMap<&'a str, BTreeSet<&'a str>>,
    outcomes: BTreeMap<String, Outcome<T>>,
    running: usize,
    workers: usize,
    timeout: Duration,
    last_progress: Instant,
    report: R,
}

impl<'a, T, R: FnMut(Event<'_, T>)> Queue<'a, T, R> {
    fn new(jobs: &'a [JobSpec], workers: usize, timeout: Duration, report: R) -> Self {
        let names: BTreeSet<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        let deps: BTreeMap<&str, BTreeSet<&str>> = jobs
            .iter()
            .map(|j| (j.name.as_str(), j.deps.iter().map(String::as_str).filter(|d| names.contains(d)).collect()))
            .collect();
        let mut dependants: BTreeMap<&str, Vec<&str>> = names.iter().map(|n| (*n, vec![])).collect();
        for (n, ds) in &deps {
            for d in ds {
                dependants.get_mut(d).unwrap().push(n);
            }
        }
        let weight = names.iter().map(|n| (*n, transitive(&dependants, n).len())).collect();
        Queue {
            names,
            dependants,
            weight,
            waiting: deps,
            outcomes: BTreeMap::new(),
            running: 0,
            workers,
            timeout,
            last_progress: Instant::now(),
            report,
        }
    }

    /// Hands out every ready job while there are free workers, the one
    /// with most dependants first.
    fn spawn_work_if_possible(&mut self, jobs: &Sender<String>) {
        while self.running < self.workers {
            let next = self
                .waiting
                .iter()
                .filter(|(_, ds)| ds.is_empty())
                .map(|(n, _)| *n)
                .max_by_key(|n| (self.weight[n], std::cmp::Reverse(*n)));
            let Some(n) = next else { break };
            self.waiting.remove(n);
            self.running += 1;
            (self.report)(Event::Started(n));
            jobs.send(n.to_string()).expect("workers outlive the loop");
        }
    }

    /// Waits for the next message from the workers, at most a [`TICK`]
    /// (then reports a tick) and at most until waiting jobs run out of
    /// patience (then they give up).
    fn wait_and_handle(&mut self, results: &Receiver<Message<T>>) {
        // Nothing waiting: the running jobs bound themselves.
        let deadline = (!self.waiting.is_empty()).then(|| self.last_progress + patience(self.timeout));
        let wait = deadline.map_or(TICK, |d| d.saturating_duration_since(Instant::now()).min(TICK));
        match results.recv_timeout(wait) {
            Ok(message) => self.handle_event(message),
            Err(RecvTimeoutError::Timeout) if deadline.is_none_or(|d| Instant::now() < d) => (self.report)(Event::Tick),
            // Everything still waiting gives up; running builds have their
            // own timeout.
            Err(RecvTimeoutError::Timeout) => self.give_up_waiting(true),
            Err(RecvTimeoutError::Disconnected) => unreachable!("workers hold the sender while jobs run"),
        }
    }

    fn handle_event(&mut self, message: Message<T>) {
        self.last_progress = Instant::now();
        let Message::Done(name, result, took) = message else { return };
        self.running -= 1;
        let n: &'a str = self.names.get(name.as_str()).unwrap();
        let o = match result {
            Ok(value) => Outcome::Done { value, took },
            Err(error) => Outcome::Failed { error, took },
        };
        let ok = o.is_success();
        self.finish(n, o);
        if ok {
            for d in &self.dependants[n] {
                if let Some(ds) = self.waiting.get_mut(d) {
                    ds.remove(n);
                }
            }
        } else {
            self.skip_dependants(n, &format!("dependency `{n}` failed"));
        }
    }

    /// Every waiting job times out, in name order, and (`skip`) the jobs
    /// that depend on each are skipped at once.
    fn give_up_waiting(&mut self, skip: bool) {
        let expired: Vec<&str> = self.waiting.keys().copied().collect();
        for n in expired {
            let Some(ds) = self.waiting.remove(n) else { continue };
            self.finish(n, Outcome::TimedOut { waiting_for: ds.iter().map(|d| d.to_string()).collect() });
            if skip {
                self.skip_dependants(n, &format!("dependency `{n}` timed out"));
            }
        }
    }

    fn skip_dependants(&mut self, n: &'a str, because: &str) {
        for d in transitive(&self.dependants, n) {
            if self.waiting.remove(d).is_some() {
                self.finish(d, Outcome::Skipped { because: because.to_string() });
            }
        }
    }

    fn finish(&mut self, n: &str, o: Outcome<T>) {
        (self.report)(Event::Finished(n, &o));
        self.outcomes.insert(n.to_string(), o);
    }
}

fn transitive<'a>(dependants: &BTreeMap<&'a str, Vec<&'a str>>, n: &'a str) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![n];
    while let Some(x) = stack.pop() {
        for d in &dependants[x] {
            if seen.insert(*d) {
                stack.push(d);
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn job(name: &str, deps: &[&str]) -> JobSpec {
        JobSpec { name: name.into(), deps: deps.iter().map(|d| d.to_string()).collect() }
    }

    /// base <- {left, right} <- top, and `other` on its own.
    fn diamond_and_other() -> Vec<JobSpec> {
        vec![
            job("base", &[]),
            job("left", &["base"]),
            job("right", &["base"]),
            job("top", &["left", "right"]),
            job("other", &[]),
        ]
    }

    /// Every event, in the order the main thread reports them.
    fn events<T: std::fmt::Debug>(ev: Event<'_, T>) -> Option<String> {
        match ev {
            Event::Started(n) => Some(format!("start {n}")),
            Event::Finished(n, Outcome::Done { .. }) => Some(format!("done {n}")),
            Event::Finished(n, Outcome::Failed { error, .. }) => Some(format!("failed {n}: {error}")),
            Event::Finished(n, Outcome::Skipped { because }) => Some(format!("skipped {n}: {because}")),
            Event::Finished(n, Outcome::TimedOut { waiting_for }) => Some(format!("timed out {n}: {waiting_for:?}")),
            Event::Tick => None,
        }
    }

    #[test]
    fn events_come_in_order_failures_skip_at_once() {
        let jobs = diamond_and_other();
        let mut seen = vec![];
        run(
            &jobs,
            1,
            Duration::from_secs(60),
            &|n, _| if n == "right" { Err("boom".to_string()) } else { Ok(()) },
            |ev| seen.extend(events(ev)),
        );
        assert_eq!(
            seen,
            [
                "start base",
                "done base",
                "start left",
                "done left",
                "start right",
                "failed right: boom",
                "skipped top: dependency `right` failed",
                "start other",
                "done other",
            ]
        );
    }

    #[test]
    fn dependencies_first_and_failures_isolated() {
        // base <- {left, right} <- top; right fails; other <- nothing.
        let jobs = diamond_and_other();
        let order = Mutex::new(vec![]);
        let out = run(
            &jobs,
            2,
            Duration::from_secs(60),
            &|n, _| {
                order.lock().unwrap().push(n.to_string());
                if n == "right" {
                    Err("boom".into())
                } else {
                    Ok(())
                }
            },
            |_| {},
        );
        let order = order.into_inner().unwrap();
        assert!(order.iter().position(|n| n == "base") < order.iter().position(|n| n == "left"));
        assert!(!order.contains(&"top".to_string()), "top must not run: {order:?}");
        assert!(out["base"].is_success() && out["left"].is_success() && out["other"].is_success());
        assert!(matches!(&out["right"], Outcome::Failed { error, .. } if error == "boom"));
        assert!(matches!(&out["top"], Outcome::Skipped { because } if because.contains("`right` failed")));
    }

    /// How long a test job waits for a signal that should come before it
    /// gives up (and fails its test): far beyond any real wait.
    const NEVER: Duration = Duration::from_secs(20);

    #[test]
    fn waiting_gives_up_after_the_timeout() {
        // `slow` holds until its dependants have been given up on, so the
        // give-up cannot race its finishing however slow the machine.
        let timeout = Duration::from_millis(100);
        let jobs = vec![job("slow", &[]), job("after", &["slow"]), job("last", &["after"])];
        let (release, released) = unbounded::<()>();
        let start = Instant::now();
        let mut gave_up_after = None;
        let mut seen = vec![];
        let out = run(
            &jobs,
            2,
            timeout,
            &|n, _| match n {
                "slow" => released.recv_timeout(NEVER).map_err(|_| "never released".to_string()),
                _ => Ok(()),
            },
            |ev| {
                if let Event::Finished("last", _) = ev {
                    gave_up_after = Some(start.elapsed());
                    release.send(()).unwrap();
                }
                seen.extend(events(ev));
            },
        );
        assert!(out["slow"].is_success(), "{out:?}");
        assert_eq!(
            seen,
            ["start slow", "timed out after: [\"slow\"]", "skipped last: dependency `after` timed out", "done slow",]
        );
        let gave_up_after = gave_up_after.unwrap();
        assert!(gave_up_after >= patience(timeout), "gave up after {gave_up_after:?}, before the patience");
    }

    // The tests below need time to pass (a chain or a retried build longer
    // than the patience) without anything looking stalled. They use the
    // scheduler's own ticks as the clock: a tick comes only after a full
    // TICK with nothing moving, so N ticks bound the time from below, and
    // a job moves on only when the main thread has signalled it. The one
    // assumption left is that a woken thread runs within patience - TICK
    // (1.25 s).

    #[test]
    fn a_moving_chain_does_not_time_out() {
        // Each step holds until the next tick after it started (at least a
        // TICK); eight steps take at least 2 s against 1.5 s of patience.
        let timeout = Duration::from_secs(1);
        let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
        assert!(TICK * names.len() as u32 > patience(timeout), "the chain must outlast the patience");
        let jobs: Vec<JobSpec> =
            names.iter().zip(0..).map(|(n, k)| job(n, if k == 0 { &[] } else { &names[k - 1..k] })).collect();
        let (next, ticked) = unbounded::<()>();
        let mut running = false;
        let out =
            run(&jobs, 2, timeout, &|_, _| ticked.recv_timeout(NEVER).map_err(|_| "no tick came".to_string()), |ev| {
                match ev {
                    Event::Started(_) => running = true,
                    Event::Tick if running => {
                        running = false;
                        next.send(()).unwrap();
                    }
                    _ => {}
                }
            });
        assert!(out.values().all(Outcome::is_success), "{out:?}");
    }

    /// A job that reports progress at each tick, as a build retried again
    /// and again would, until twice the patience has passed since its start.
    struct KeepsReportingProgress {
        tell: crossbeam_channel::Sender<bool>,
        told: crossbeam_channel::Receiver<bool>,
        start: Instant,
        timeout: Duration,
    }

    impl KeepsReportingProgress {
        fn new(timeout: Duration) -> Self {
            let (tell, told) = unbounded();
            KeepsReportingProgress { tell, told, start: Instant::now(), timeout }
        }

        fn job(&self, progress: &Progress<'_>) -> Result<(), String> {
            loop {
                progress.report();
                match self.told.recv_timeout(NEVER) {
                    Ok(true) => continue,
                    Ok(false) => return Ok(()),
                    Err(_) => return Err("no tick came".to_string()),
                }
            }
        }

        /// The report callback: at each tick, go on or stop.
        fn on(&self, ev: Event<'_, ()>) {
            if let Event::Tick = ev {
                let _ = self.tell.send(self.start.elapsed() < patience(self.timeout) * 2);
            }
        }
    }

    #[test]
    fn a_retrying_dependency_keeps_its_dependants_waiting() {
        // `dep` moves for twice the patience, reporting progress at each
        // tick; its dependant waits for it instead of giving up.
        let timeout = Duration::from_secs(1);
        let dep = KeepsReportingProgress::new(timeout);
        let jobs = vec![job("dep", &[]), job("after", &["dep"])];
        let out =
            run(&jobs, 2, timeout, &|n, progress| if n == "dep" { dep.job(progress) } else { Ok(()) }, |ev| dep.on(ev));
        assert!(out["dep"].is_success() && out["after"].is_success(), "{out:?}");
    }

    #[test]
    fn a_dependency_that_fails_late_is_reported_as_failed_not_as_a_timeout() {
        let timeout = Duration::from_secs(1);
        let dep = KeepsReportingProgress::new(timeout);
        let jobs = vec![job("dep", &[]), job("mid", &["dep"]), job("top", &["mid"])];
        let out = run(
            &jobs,
            2,
            timeout,
            &|n, progress| match n {
                "dep" => dep.job(progress).and(Err("push failed".to_string())),
                _ => Ok(()),
            },
            |ev| dep.on(ev),
        );
        assert!(matches!(&out["dep"], Outcome::Failed { error, .. } if error == "push failed"), "{out:?}");
        for n in ["mid", "top"] {
            assert!(
                matches!(&out[n], Outcome::Skipped { because } if because == "dependency `dep` failed"),
                "{n}: {out:?}"
            );
        }
    }

    #[test]
    fn ticks_come_while_a_job_runs() {
        // With a job waiting (its patience counting down) and without.
        for jobs in [vec![job("slow", &[])], vec![job("slow", &[]), job("after", &["slow"])]] {
            let (third, ticked) = unbounded::<()>();
            let mut ticks = 0;
            let out = run(
                &jobs,
                1,
                Duration::from_secs(60),
                &|n, _| match n {
                    "slow" => ticked.recv_timeout(NEVER).map_err(|_| "no third tick came".to_string()),
                    _ => Ok(()),
                },
                |ev| {
                    if let Event::Tick = ev {
                        ticks += 1;
                        if ticks == 3 {
                            third.send(()).unwrap();
                        }
                    }
                },
            );
            assert!(out.values().all(Outcome::is_success), "{ticks} ticks: {out:?}");
        }
    }

    #[test]
    fn most_dependants_start_first() {
        let jobs = vec![job("a", &[]), job("z", &[]), job("z1", &["z"]), job("z2", &["z1"])];
        let order = Mutex::new(vec![]);
        run(
            &jobs,
            1,
            Duration::from_secs(60),
            &|n, _| {
                order.lock().unwrap().push(n.to_string());
                Ok(())
            },
            |_| {},
        );
        // z has two jobs behind it, z1 one; then a and z2 tie (none) and go by name.
        assert_eq!(order.into_inner().unwrap(), ["z", "z1", "a", "z2"]);
    }
}
