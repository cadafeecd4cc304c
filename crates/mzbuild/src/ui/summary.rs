//! CI summaries of a run: a Markdown table (image, status, time, digest,
//! where) with each failure's message and log tail in a collapsed
//! `<details>` block, appended to `$GITHUB_STEP_SUMMARY` when it is set
//! (GitHub Actions' job summary), and given to `buildkite-agent annotate`
//! when `$BUILDKITE` is set and the agent is on PATH. This is the model and
//! its Markdown (pure); `publish::ci` fills and writes it for `ensure`,
//! `check`, `repair` and `tag`.

/// One image's line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub image: String,
    pub status: String,
    pub seconds: Option<f64>,
    pub digest: Option<String>,
    /// Where it is, went, or is missing.
    pub place: String,
    /// What went wrong, with the log's last lines.
    pub failure: Option<String>,
}

/// A run's summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// `ensure`, `check`, ...
    pub command: String,
    pub ok: bool,
    /// One sentence on the whole run.
    pub headline: String,
    pub rows: Vec<Row>,
}

/// A table cell: one line, without the `|` that would end it.
fn cell(s: &str) -> String {
    s.lines().collect::<Vec<_>>().join(" ").replace('|', "\\|")
}

impl Summary {
    pub fn markdown(&self) -> String {
        let mut md =
            format!("### {} mzbuild {}: {}\n\n", if self.ok { "✅" } else { "❌" }, self.command, cell(&self.headline));
        if !self.rows.is_empty() {
            md.push_str("| image | status | time | digest | where |\n|---|---|---:|---|---|\n");
            for r in &self.rows {
                let time = r.seconds.filter(|s| *s > 0.0).map_or("-".to_string(), super::seconds);
                let digest = r.digest.as_deref().map_or("-".to_string(), |d| format!("`{}`", cell(d)));
                md.push_str(&format!(
                    "| {} | {} | {time} | {digest} | {} |\n",
                    cell(&r.image),
                    cell(&r.status),
                    cell(&r.place)
                ));
            }
        }
        for r in self.rows.iter().filter(|r| r.failure.is_some()) {
            let text = r.failure.as_deref().unwrap_or("");
            // A fence longer than any backtick run in the text.
            let mut fence = "```".to_string();
            while text.contains(&fence) {
                fence.push('`');
            }
            md.push_str(&format!(
                "\n<details><summary>{}: {}</summary>\n\n{fence}\n{}\n{fence}\n\n</details>\n",
                html(&r.image),
                html(&r.status),
                text.trim_end()
            ));
        }
        md.push('\n');
        md
    }
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_table_and_collapsed_failures() {
        let s = Summary {
            command: "ensure".into(),
            ok: false,
            headline: "1 of 2 images did not complete".into(),
            rows: vec![
                Row {
                    image: "base".into(),
                    status: "pushed".into(),
                    seconds: Some(1.25),
                    digest: Some("sha256:abc".into()),
                    place: "127.0.0.1:5000/a, 127.0.0.1:5001/b".into(),
                    failure: None,
                },
                Row {
                    image: "app".into(),
                    status: "failed".into(),
                    seconds: None,
                    digest: None,
                    place: "".into(),
                    failure: Some("FAILED: exit 1 | x; last lines:\n```\n#5 ERROR <boom>\n".into()),
                },
            ],
        };
        expect_test::expect![[r#"
            ### ❌ mzbuild ensure: 1 of 2 images did not complete

            | image | status | time | digest | where |
            |---|---|---:|---|---|
            | base | pushed | 1.2s | `sha256:abc` | 127.0.0.1:5000/a, 127.0.0.1:5001/b |
            | app | failed | - | - |  |

            <details><summary>app: failed</summary>

            ````
            FAILED: exit 1 | x; last lines:
            ```
            #5 ERROR <boom>
            ````

            </details>

        "#]]
        .assert_eq(&s.markdown());
    }
}
