//! The CI summaries of `ensure`, `check`, `repair` and `tag` (see
//! [`crate::ui::summary`]): their rows in the summary's terms, with each
//! image's digest. Nothing is asked or written unless a CI system wants a
//! summary (`$GITHUB_STEP_SUMMARY` or `$BUILDKITE` set).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;

use super::client::Client;
use super::held_by;
use super::report::Row;
use crate::ctx::Ctx;
use crate::env::Env;
use crate::ui::summary::{self, Summary};

/// Whether a CI system wants a summary of this run.
pub fn wanted(ctx: &Ctx) -> bool {
    ctx.env.non_empty("GITHUB_STEP_SUMMARY").is_some() || ctx.env.non_empty("BUILDKITE").is_some()
}

/// Write the summary of `command`.
pub fn write(ctx: &Ctx, command: &str, ok: bool, headline: String, rows: Vec<summary::Row>) {
    publish(ctx.env.as_ref(), &Summary { command: command.into(), ok, headline, rows });
}

/// The digest each image's tag names now (the first registry's that has
/// it), asked after the run; none when the registries cannot say.
fn digests(ctx: &Ctx, clients: &[Client], rows: &[Row]) -> BTreeMap<String, String> {
    let tags: Vec<(&str, String)> = rows
        .iter()
        .filter(|r| r.publish)
        .map(|r| (r.name.as_str(), r.spec.rsplit_once(':').map_or(String::new(), |(_, t)| t.to_string())))
        .collect();
    match held_by(ctx, clients, &tags) {
        Ok(held) => held.into_iter().filter_map(|(n, h)| Some((n, h.into_iter().flatten().next()?))).collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// The summary of `ensure` or `repair` from their report rows.
pub fn write_rows(ctx: &Ctx, clients: &[Client], command: &str, ok: bool, rows: &[Row]) {
    if !wanted(ctx) {
        return;
    }
    let digests = digests(ctx, clients, rows);
    let all = || ctx.naming.registries.iter().map(|r| r.url.as_str()).collect::<Vec<_>>().join(", ");
    let out: Vec<summary::Row> = rows
        .iter()
        .map(|r| {
            let place = match r.status {
                "copied" | "repaired" => {
                    format!("from {} to {}", r.from.as_deref().unwrap_or("?"), r.registries.join(", "))
                }
                "published" => all(),
                "drifted" => {
                    format!("other content in {} than in {}", r.registries.join(", "), r.from.as_deref().unwrap_or("?"))
                }
                "present" | "built" => "local engine".into(),
                "unpublished" => "no registry".into(),
                _ => r.registries.join(", "),
            };
            summary::Row {
                image: r.name.clone(),
                status: r.status.to_string(),
                seconds: Some(r.seconds),
                digest: digests.get(&r.name).cloned(),
                place,
                failure: r.error.clone(),
            }
        })
        .collect();
    let failed = rows.iter().filter(|r| r.error.is_some()).count();
    let headline = if failed == 0 {
        format!("{} ok", crate::ui::count(rows.len(), "image", "images"))
    } else {
        format!("{failed} of {} did not complete", crate::ui::count(rows.len(), "image", "images"))
    };
    let headline = if ok || failed > 0 { headline } else { format!("{headline}, but some drifted") };
    write(ctx, command, ok, headline, out);
}

/// The summary of `check`: each publishable image, in every registry
/// (`published`), missing from some, or drifted.
pub fn write_check(ctx: &Ctx, published: &BTreeMap<String, crate::plan::Held>) {
    if !wanted(ctx) {
        return;
    }
    let url = |r: usize| ctx.naming.registries[r].url.clone();
    let mut bad = 0;
    let rows: Vec<summary::Row> = published
        .iter()
        .map(|(name, held)| {
            let missing = crate::plan::lacking(held, ctx.naming.registries.len());
            let drifted = crate::plan::drifted(held);
            let (status, place) = if !missing.is_empty() {
                ("missing", format!("missing from {}", missing.into_iter().map(url).collect::<Vec<_>>().join(", ")))
            } else if !drifted.is_empty() {
                let from = crate::plan::source(held).map(url).unwrap_or_default();
                let to = drifted.into_iter().map(url).collect::<Vec<_>>().join(", ");
                ("drifted", format!("other content in {to} than in {from}"))
            } else {
                ("published", (0..held.len()).map(url).collect::<Vec<_>>().join(", "))
            };
            bad += usize::from(status != "published");
            let digest = crate::plan::source(held).and_then(|r| held[r].clone());
            summary::Row { image: name.clone(), status: status.into(), digest, place, ..Default::default() }
        })
        .collect();
    let n = crate::ui::count(rows.len(), "publishable image", "publishable images");
    let headline = if bad == 0 {
        format!("{n}, all in every registry with one digest")
    } else {
        format!("{bad} of {n} missing or drifted")
    };
    write(ctx, "check", bad == 0, headline, rows);
}
/// Write `summary` where the CI system shows it; problems are warnings
/// (the run's result stands).
fn publish(env: &dyn Env, summary: &Summary) {
    let github = env.path("GITHUB_STEP_SUMMARY");
    let buildkite = env.non_empty("BUILDKITE").is_some();
    if github.is_none() && !buildkite {
        return;
    }
    let md = summary.markdown();
    if let Some(path) = github {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(md.as_bytes()));
        if let Err(e) = written {
            crate::ui::warn(format_args!(
                "cannot append the summary to $GITHUB_STEP_SUMMARY ({}): {e}",
                path.display()
            ));
        }
    }
    if buildkite {
        annotate(&md, summary.ok);
    }
}

/// `buildkite-agent annotate --style success|error --context mzbuild`,
/// the Markdown on stdin; nothing when the agent is not on PATH.
fn annotate(md: &str, ok: bool) {
    let style = if ok { "success" } else { "error" };
    let child = crate::process::command("buildkite-agent")
        .args(["annotate", "--style", style, "--context", "mzbuild"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => return crate::ui::warn(format_args!("cannot run buildkite-agent annotate: {e}")),
    };
    if let Some(mut sin) = child.stdin.take() {
        let _ = sin.write_all(md.as_bytes());
    }
    match child.wait_with_output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => crate::ui::warn(format_args!(
            "buildkite-agent annotate failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => crate::ui::warn(format_args!("buildkite-agent annotate: {e}")),
    }
}
