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

use crossbeam_channel::{unbounded, RecvTimeoutError};

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
}

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
    mut report: impl FnMut(Event<'_, T>),
) -> BTreeMap<String, Outcome<T>> {
    let workers = workers.max(1);
    let mut state = State::new(jobs);
    let (job_tx, job_rx) = unbounded::<String>();
    let (res_tx, res_rx) = unbounded::<Message<T>>();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let job_rx = job_rx.clone();
            let res_tx = res_tx.clone();
            s.spawn(move || work_loop(job_rx, res_tx, work));
        }
        drop(res_tx);

        loop {
            state.spawn_work_if_possible(workers, &job_tx, &mut report);
            if state.running == 0 && state.waiting.is_empty() {
                break;
            }
            if state.running == 0 {
                // Nothing can run: only possible with a cycle, which discovery rejects.
                state.give_up_waiting(&mut report);
                break;
            }
            // Nothing waiting: the running jobs bound themselves.
            let received = if state.waiting.is_empty() {
                res_rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                res_rx.recv_timeout((state.last_progress + patience(timeout)).saturating_duration_since(Instant::now()))
            };
            state.handle_event(received, &mut report);
        }
        drop(job_tx);
    });
    state.outcomes
}

/// A worker: run each job it receives, say when it is done.
fn work_loop<T: Send>(
    job_rx: crossbeam_channel::Receiver<String>,
    res_tx: crossbeam_channel::Sender<Message<T>>,
    work: &(dyn Fn(&str, &Progress<'_>) -> Result<T, String> + Sync),
) {
    for name in job_rx {
        let t = Instant::now();
        let alive = || {
            let _ = res_tx.send(Message::Alive);
        };
        let r = work(&name, &Progress(&alive));
        if res_tx.send(Message::Done(name, r, t.elapsed())).is_err() {
            return;
        }
    }
}

/// What the main thread knows about the jobs.
struct State<'a, T> {
    names: BTreeSet<&'a str>,
    dependants: BTreeMap<&'a str, Vec<&'a str>>,
    /// Priority: how many jobs (transitively) wait on each one.
    weight: BTreeMap<&'a str, usize>,
    /// The jobs not handed out yet, with the dependencies they still wait for.
    waiting: BTreeMap<&'a str, BTreeSet<&'a str>>,
    outcomes: BTreeMap<String, Outcome<T>>,
    running: usize,
    last_progress: Instant,
}

impl<'a, T> State<'a, T> {
    fn new(jobs: &'a [JobSpec]) -> State<'a, T> {
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
        State {
            names,
            dependants,
            weight,
            waiting: deps,
            outcomes: BTreeMap::new(),
            running: 0,
            last_progress: Instant::now(),
        }
    }

    /// Hand out every ready job while there are free workers.
    fn spawn_work_if_possible(
        &mut self,
        workers: usize,
        job_tx: &crossbeam_channel::Sender<String>,
        report: &mut impl FnMut(Event<'_, T>),
    ) {
        while self.running < workers {
            let next = self
                .waiting
                .iter()
                .filter(|(_, ds)| ds.is_empty())
                .map(|(n, _)| *n)
                .max_by_key(|n| (self.weight[n], std::cmp::Reverse(*n)));
            let Some(n) = next else { break };
            self.waiting.remove(n);
            self.running += 1;
            report(Event::Started(n));
            job_tx.send(n.to_string()).expect("workers outlive the loop");
        }
    }

    fn handle_event(&mut self, received: Result<Message<T>, RecvTimeoutError>, report: &mut impl FnMut(Event<'_, T>)) {
        match received {
            Ok(Message::Alive) => self.last_progress = Instant::now(),
            Ok(Message::Done(name, result, took)) => self.finish(&name, result, took, report),
            Err(RecvTimeoutError::Timeout) => self.expire(report),
            Err(RecvTimeoutError::Disconnected) => unreachable!("workers hold the sender while jobs run"),
        }
    }

    /// A job finished: release its dependants, or skip them if it failed.
    fn finish(&mut self, name: &str, result: Result<T, String>, took: Duration, report: &mut impl FnMut(Event<'_, T>)) {
        self.running -= 1;
        self.last_progress = Instant::now();
        let n: &'a str = self.names.get(name).unwrap();
        let o = match result {
            Ok(value) => Outcome::Done { value, took },
            Err(error) => Outcome::Failed { error, took },
        };
        let ok = o.is_success();
        report(Event::Finished(n, &o));
        self.outcomes.insert(n.to_string(), o);
        if ok {
            for d in &self.dependants[n] {
                if let Some(ds) = self.waiting.get_mut(d) {
                    ds.remove(n);
                }
            }
        } else {
            self.skip_dependants(n, &format!("dependency `{n}` failed"), report);
        }
    }

    /// Nothing moved for too long: everything still waiting gives up;
    /// running builds have their own timeout.
    fn expire(&mut self, report: &mut impl FnMut(Event<'_, T>)) {
        let expired: Vec<&str> = self.waiting.keys().copied().collect();
        for n in expired {
            let Some(ds) = self.waiting.remove(n) else { continue };
            let o = Outcome::TimedOut { waiting_for: ds.iter().map(|d| d.to_string()).collect() };
            report(Event::Finished(n, &o));
            self.outcomes.insert(n.to_string(), o);
            self.skip_dependants(n, &format!("dependency `{n}` timed out"), report);
        }
    }

    /// Every waiting job gives up at once (nothing can run).
    fn give_up_waiting(&mut self, report: &mut impl FnMut(Event<'_, T>)) {
        for (n, ds) in std::mem::take(&mut self.waiting) {
            let o = Outcome::TimedOut { waiting_for: ds.iter().map(|d| d.to_string()).collect() };
            report(Event::Finished(n, &o));
            self.outcomes.insert(n.to_string(), o);
        }
    }

    fn skip_dependants(&mut self, n: &'a str, because: &str, report: &mut impl FnMut(Event<'_, T>)) {
        for d in transitive(&self.dependants, n) {
            if self.waiting.remove(d).is_some() {
                let o = Outcome::Skipped { because: because.to_string() };
                report(Event::Finished(d, &o));
                self.outcomes.insert(d.to_string(), o);
            }
        }
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

    #[test]
    fn dependencies_first_and_failures_isolated() {
        // base <- {left, right} <- top; right fails; other <- nothing.
        let jobs = vec![
            job("base", &[]),
            job("left", &["base"]),
            job("right", &["base"]),
            job("top", &["left", "right"]),
            job("other", &[]),
        ];
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

    #[test]
    fn waiting_gives_up_after_the_timeout() {
        let jobs = vec![job("slow", &[]), job("after", &["slow"])];
        let out = run(
            &jobs,
            2,
            Duration::from_millis(100),
            &|n, _| {
                if n == "slow" {
                    std::thread::sleep(Duration::from_millis(600));
                }
                Ok(())
            },
            |_| {},
        );
        assert!(out["slow"].is_success());
        assert!(matches!(&out["after"], Outcome::TimedOut { waiting_for } if waiting_for == &["slow".to_string()]));
    }

    #[test]
    fn a_moving_chain_does_not_time_out() {
        // Each step takes a quarter of the timeout (a wide margin for a
        // loaded machine); the chain takes 1.5 times the timeout.
        let jobs = vec![
            job("a", &[]),
            job("b", &["a"]),
            job("c", &["b"]),
            job("d", &["c"]),
            job("e", &["d"]),
            job("f", &["e"]),
        ];
        let out = run(
            &jobs,
            2,
            Duration::from_millis(400),
            &|_, _| {
                std::thread::sleep(Duration::from_millis(100));
                Ok(())
            },
            |_| {},
        );
        assert!(out.values().all(Outcome::is_success), "{out:?}");
    }

    #[test]
    fn a_retrying_dependency_keeps_its_dependants_waiting() {
        // `dep` runs three "attempts" of 0.6 x the timeout each, reporting
        // progress before each retry: 1.8 x the timeout in all, and its
        // dependant waits for it instead of giving up.
        let timeout = Duration::from_millis(500);
        let jobs = vec![job("dep", &[]), job("after", &["dep"])];
        let out = run(
            &jobs,
            2,
            timeout,
            &|n, progress| {
                if n == "dep" {
                    for attempt in 0..3 {
                        if attempt > 0 {
                            progress.report();
                        }
                        std::thread::sleep(timeout * 6 / 10);
                    }
                }
                Ok(())
            },
            |_| {},
        );
        assert!(out["dep"].is_success() && out["after"].is_success(), "{out:?}");
    }

    #[test]
    fn a_dependency_that_fails_late_is_reported_as_failed_not_as_a_timeout() {
        let timeout = Duration::from_millis(300);
        let jobs = vec![job("dep", &[]), job("mid", &["dep"]), job("top", &["mid"])];
        let out = run(
            &jobs,
            2,
            timeout,
            &|n, progress| {
                if n == "dep" {
                    for _ in 0..3 {
                        progress.report();
                        std::thread::sleep(timeout * 8 / 10);
                    }
                    return Err("push failed".into());
                }
                Ok(())
            },
            |_| {},
        );
        assert!(matches!(&out["dep"], Outcome::Failed { error, .. } if error == "push failed"), "{out:?}");
        for n in ["mid", "top"] {
            assert!(
                matches!(&out[n], Outcome::Skipped { because } if because == "dependency `dep` failed"
                    || because == "dependency `mid` failed"),
                "{n}: {out:?}"
            );
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
