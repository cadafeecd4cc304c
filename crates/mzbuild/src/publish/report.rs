//! The summary of `ensure` and `repair`: one row per image (what happened,
//! how long it took, where it went), as a table on stderr or JSON on
//! stdout, and the list of failures.

use anyhow::Result;
use serde::Serialize;

use crate::report::{Report, RunResult};
use crate::ui;

/// One image's line of the summary (also its `--json` object).
#[derive(Serialize, Debug, Clone)]
pub struct Row {
    pub name: String,
    pub fingerprint: String,
    pub spec: String,
    pub publish: bool,
    /// published | drifted | pushed | copied | repaired | built | present |
    /// unpublished | failed | skipped | timed-out
    pub status: &'static str,
    /// Where it was pushed or copied to; for `drifted`, the registries
    /// whose content under the tag differs from `from`'s.
    pub registries: Vec<String>,
    /// Where it was copied from; for `drifted`, the reference registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Bytes a copy sent (streamed blobs and manifests; mounted blobs and
    /// blobs already there cost nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_copied: Option<u64>,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `repaired`: the digest each re-pointed registry held under the
    /// tag before, by registry url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<std::collections::BTreeMap<String, String>>,
    /// The digest each registry holds under the tag at the end, by registry
    /// url (as far as the run knows: empty for local images).
    pub digests: std::collections::BTreeMap<String, String>,
}

impl Row {
    /// This row with a finished build's outcome (`done` becomes `pushed`
    /// when `pushed`, else `built`).
    pub fn with_build(self, b: &crate::report::Built, pushed: bool) -> Row {
        let status = match b.status {
            "done" if pushed => "pushed",
            "done" => "built",
            s => s,
        };
        Row { status, seconds: b.seconds, error: b.error.clone(), ..self }
    }
}

/// Print the summary (the `--json` document when `json`; `drift_fails`:
/// a drifted image fails the run); then, if any image failed, the
/// failures, and return false.
pub fn print(rows: &[Row], json: Option<&Report>, drift_fails: bool) -> Result<bool> {
    if let Some(report) = json {
        let failed =
            rows.iter().any(|r| r.error.is_some()) || (drift_fails && rows.iter().any(|r| r.status == "drifted"));
        report.emit(rows, if failed { RunResult::Failure } else { RunResult::Success });
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let detail = match (r.status, &r.error) {
                    (_, Some(e)) => e.lines().next().unwrap_or("").to_string(),
                    ("pushed", None) => format!("to {}", r.registries.join(", ")),
                    ("copied" | "repaired", None) => format!(
                        "{} from {} to {}",
                        crate::ui::show_bytes(r.bytes_copied.unwrap_or(0)),
                        r.from.as_deref().unwrap_or("?"),
                        r.registries.join(", ")
                    ),
                    ("unpublished", None) => "in no registry: `ensure` builds it".into(),
                    ("published", None) => "already in every registry".into(),
                    ("drifted", None) => format!(
                        "in every registry, but the tag names other content in {} than in {}: `repair` re-points it",
                        r.registries.join(", "),
                        r.from.as_deref().unwrap_or("?")
                    ),
                    ("present", None) => "not published (publish: false); already built locally".into(),
                    ("built", None) => "built locally (publish: false)".into(),
                    _ => String::new(),
                };
                let time = if r.seconds > 0.0 { ui::seconds(r.seconds) } else { "-".into() };
                vec![r.name.clone(), r.status.to_string(), time, detail]
            })
            .collect();
        ui::table(&["image", "result", "time", "detail"], &table, &[false, false, true, false]);
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| r.error.is_some()).collect();
    if failed.is_empty() {
        return Ok(true);
    }
    ui::error(format_args!("{} of {} did not complete:", failed.len(), ui::count(rows.len(), "image", "images")));
    for r in failed {
        ui::line(format_args!("  {}: {}", r.name, r.error.as_deref().unwrap_or("")));
    }
    Ok(false)
}
