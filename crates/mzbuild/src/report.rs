//! The run report of `--json`: one versioned document per run,
//! `{"schema": 1, "command", "run": {revision, arch, profile, seconds,
//! result}, "rows": [...]}` (the schema, with every command's rows, is
//! `docs/mzbuild.schema.json`), printed on stdout once, at the end or, for a
//! run stopped by a signal, by the signal handler with what had finished
//! and `"result": "interrupted"`.
//!
//! A long command registers how to render its document so far
//! ([`on_interrupt`]), from the builds that finished meanwhile (recorded by
//! the build engine, [`crate::build::finished`]); `ui::interrupt` holds the
//! registration, so that the signal handler prints exactly one document,
//! whichever of the end or a signal comes first.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::build::scheduler::Outcome;
use crate::config::settings::Settings;
use crate::ctx::Ctx;
use crate::ui;

/// The version of the document's shape: bumped on any change that can
/// break a reader (a field removed, renamed or retyped); new fields keep it.
pub const SCHEMA: u32 = 1;

/// How a run ended.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    Success,
    Failure,
    Interrupted,
}

/// The run's part of the document.
#[derive(Serialize, Clone, Debug)]
pub struct Run {
    /// The commit the images were read from: `--rev`'s, else HEAD's (the
    /// work tree may differ from it); null when there is none.
    pub revision: Option<String>,
    /// Whether the files were the work tree's (`work-tree`) or the
    /// revision's (`revision`).
    pub source: &'static str,
    pub arch: &'static str,
    pub profile: String,
    /// Wall time of the run so far, in seconds.
    pub seconds: f64,
    pub result: RunResult,
}

#[derive(Serialize)]
struct Document<'a, R: Serialize> {
    schema: u32,
    command: &'a str,
    run: Run,
    rows: &'a [R],
}

/// A run's report: what is known from the start; rows come at the end.
#[derive(Clone, Debug)]
pub struct Report {
    command: &'static str,
    started: Instant,
    revision: Option<String>,
    source: &'static str,
    arch: &'static str,
    profile: String,
}

impl Report {
    /// The report of `command` on `ctx`'s repository and settings.
    pub fn new(ctx: &Ctx, command: &'static str) -> Report {
        let tree = &ctx.repo.tree;
        let (revision, source) = match &tree.rev {
            Some(r) => (Some(r.commit.clone()), "revision"),
            None => (tree.git.resolve_commit("HEAD").ok(), "work-tree"),
        };
        Report { revision, source, ..Report::bare(command, &ctx.settings) }
    }

    /// A report without a loaded repository (`lint`).
    pub fn bare(command: &'static str, settings: &Settings) -> Report {
        Report {
            command,
            started: Instant::now(),
            revision: None,
            source: "work-tree",
            arch: settings.arch.gcc(),
            profile: settings.profile.upper().to_lowercase(),
        }
    }

    /// With the revision and source of a tree read without a [`Ctx`].
    pub fn with_revision(self, revision: Option<String>, source: &'static str) -> Report {
        Report { revision, source, ..self }
    }

    /// The whole document, as printed.
    pub fn render<R: Serialize>(&self, rows: &[R], result: RunResult) -> String {
        let run = Run {
            revision: self.revision.clone(),
            source: self.source,
            arch: self.arch,
            profile: self.profile.clone(),
            seconds: (self.started.elapsed().as_secs_f64() * 1e3).round() / 1e3,
            result: if crate::process::interrupted() { RunResult::Interrupted } else { result },
        };
        let doc = Document { schema: SCHEMA, command: self.command, run, rows };
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")) + "\n"
    }

    /// Print the document: the run's one result on stdout.
    pub fn emit<R: Serialize>(&self, rows: &[R], result: RunResult) {
        emit(&self.render(rows, result));
    }
}

pub use crate::build::Built;

/// On a signal, print `render(the builds finished so far)` (a document
/// whose result is `interrupted`). Replaces an earlier registration.
pub fn on_interrupt(render: impl Fn(&BTreeMap<String, Built>) -> String + Send + 'static) {
    ui::interrupt::on_interrupt(move || render(&crate::build::finished()));
}

/// Print the run's document (and forget the registration: the signal
/// handler prints nothing after it).
pub fn emit(text: &str) {
    ui::interrupt::emit(text);
}

/// A problem of `lint --json`.
#[derive(Serialize, Debug)]
pub struct Problem {
    /// The file it is in, when it is about one file.
    pub file: Option<String>,
    pub message: String,
}

/// A line of `explain --json`: the image asked about, and the explanation's
/// lines as the text report prints them.
#[derive(Serialize, Debug)]
pub struct Explanation {
    pub name: String,
    pub fingerprint: String,
    /// The revision or recorded fingerprint compared with.
    pub against: String,
    pub lines: Vec<String>,
}

/// An image's row of `build --json` and `acquire --json`.
#[derive(Serialize, Debug, Clone)]
pub struct LocalRow {
    pub name: String,
    pub fingerprint: String,
    pub spec: String,
    /// present | pulled | built | failed | skipped | timed-out | interrupted
    pub status: &'static str,
    pub seconds: f64,
    pub error: Option<String>,
}

impl LocalRow {
    pub fn new(name: &str, fingerprint: String, spec: String, status: &'static str) -> LocalRow {
        LocalRow { name: name.to_string(), fingerprint, spec, status, seconds: 0.0, error: None }
    }

    /// This row with a finished build's outcome.
    pub fn with_build(&self, b: &Built) -> LocalRow {
        let status = if b.status == "done" { "built" } else { b.status };
        LocalRow { status, seconds: b.seconds, error: b.error.clone(), ..self.clone() }
    }
}

/// `build`'s and `acquire`'s document on a signal: `rows`, each image
/// being built `interrupted` unless its build finished.
pub fn on_interrupt_local(report: &Report, rows: Vec<LocalRow>) {
    let report = report.clone();
    on_interrupt(move |built| {
        let rows: Vec<LocalRow> = rows
            .iter()
            .map(|r| match built.get(&r.name) {
                Some(b) => r.with_build(b),
                None => r.clone(),
            })
            .collect();
        report.render(&rows, RunResult::Interrupted)
    });
}

/// `rows` with the outcomes of the builds, and the document's result.
pub fn local_rows(rows: &[LocalRow], outcomes: &BTreeMap<String, Outcome<usize>>) -> (Vec<LocalRow>, RunResult) {
    let rows: Vec<LocalRow> = rows
        .iter()
        .map(|r| match outcomes.get(&r.name) {
            Some(o) => r.with_build(&Built::of(o)),
            // Built meanwhile by the run this one waited for.
            None if r.status == "interrupted" => LocalRow { status: "present", ..r.clone() },
            None => r.clone(),
        })
        .collect();
    let ok = rows.iter().all(|r| r.error.is_none());
    (rows, if ok { RunResult::Success } else { RunResult::Failure })
}

/// A registry's line of `tag --json`.
#[derive(Serialize, Debug)]
pub struct TagRow {
    pub name: String,
    pub registry: String,
    /// `registry/prefix+name:TAG`.
    pub reference: String,
    /// The index's digest.
    pub digest: String,
    /// create | move | unchanged (a dry run); created | moved | unchanged | failed
    pub status: &'static str,
    /// What the tag named before a move.
    pub previous: Option<String>,
}
