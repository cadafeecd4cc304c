//! Everything mzbuild shows a person: progress and warnings on stderr,
//! results on stdout, tables. The one module that prints (clippy.toml bans
//! `println!`/`eprintln!` elsewhere in the library), and only ever called
//! from the main thread: workers report through channels.
//!
//! How it shows them is set once, by [`configure`]: plain lines (what CI
//! logs get), or with a live status line at the bottom of a terminal
//! ([`live`]), with or without colours, with or without the build logs.
//! [`summary`] writes the CI summaries (GitHub step summary, Buildkite
//! annotation).

pub mod interrupt;
pub mod live;
pub mod summary;

use std::collections::BTreeSet;
use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};

use anstyle::{AnsiColor, Style};

use crate::env::Env;

/// `--progress`: when the live status line is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// On when stderr is a terminal (and `TERM` is not `dumb`).
    #[default]
    Auto,
    /// Plain lines only.
    Plain,
    /// Always, even when stderr is not a terminal.
    Tty,
}

/// `--color`: whether stderr gets colours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorChoice {
    /// Per `NO_COLOR` and `CLICOLOR_FORCE`, else when stderr is a terminal.
    #[default]
    Auto,
    Always,
    Never,
}

/// How output looks, decided once per process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Draw the live status line.
    pub live: bool,
    pub color: bool,
    /// Stream the build logs (`-v`).
    pub verbose: bool,
}

impl Config {
    /// The output for the flags, the environment and whether stderr is a
    /// terminal (`NO_COLOR` and `CLICOLOR_FORCE` as on no-color.org and
    /// bixense.com/clicolors: set and non-empty, `CLICOLOR_FORCE` not `0`).
    pub fn decide(progress: ProgressMode, color: ColorChoice, verbose: bool, env: &dyn Env, tty: bool) -> Config {
        let live = match progress {
            ProgressMode::Auto => tty && env.var("TERM").as_deref() != Some("dumb"),
            ProgressMode::Plain => false,
            ProgressMode::Tty => true,
        };
        let color = match color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto if env.non_empty("NO_COLOR").is_some() => false,
            ColorChoice::Auto if env.non_empty("CLICOLOR_FORCE").is_some_and(|v| v != "0") => true,
            ColorChoice::Auto => tty,
        };
        Config { live, color, verbose }
    }
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Set how output looks (the first call wins; without one, plain lines
/// without colours).
pub fn configure(progress: ProgressMode, color: ColorChoice, verbose: bool, env: &dyn Env) {
    let _ = CONFIG.set(Config::decide(progress, color, verbose, env, std::io::stderr().is_terminal()));
}

/// How output looks.
pub fn config() -> Config {
    CONFIG.get().copied().unwrap_or_default()
}

/// `text` in `style` when colours are on.
pub fn paint(style: Style, text: impl Display) -> String {
    if config().color {
        format!("{style}{text}{style:#}")
    } else {
        text.to_string()
    }
}

fn bold(c: AnsiColor) -> Style {
    Style::new().bold().fg_color(Some(c.into()))
}

/// A progress line: `mzbuild: <msg>`.
pub fn progress(msg: impl Display) {
    line(format_args!("{} {msg}", paint(bold(AnsiColor::Green), "mzbuild:")));
}

/// A warning line: `warning: <msg>`.
pub fn warn(msg: impl Display) {
    line(format_args!("{} {msg}", paint(bold(AnsiColor::Yellow), "warning:")));
}

/// A note line, something to know that is no problem: `note: <msg>`.
pub fn note(msg: impl Display) {
    line(format_args!("{} {msg}", paint(bold(AnsiColor::Cyan), "note:")));
}

/// A warning shown at most once per process (for conditions that every
/// image would otherwise repeat).
pub fn warn_once(msg: impl Display) {
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let msg = msg.to_string();
    if SEEN.lock().unwrap_or_else(|e| e.into_inner()).insert(msg.clone()) {
        warn(msg);
    }
}

/// An error line that is part of a report (the run goes on to exit 1):
/// `error: <msg>`.
pub fn error(msg: impl Display) {
    line(format_args!("{} {msg}", paint(bold(AnsiColor::Red), "error:")));
}

/// A line of stderr as is (continuation lines of a report); above the
/// live status line when there is one.
pub fn line(msg: impl Display) {
    live::above(|| {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{msg}");
    });
}

/// Results: stdout, exactly `text`. A failed write (a full disk) is kept
/// for [`finish`], which makes it the run's error; a reader that stopped
/// reading (`| head`) is not one.
pub fn result(text: &str) {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            STDOUT_ERROR.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
        }
        _ => {}
    }
}

static STDOUT_ERROR: Mutex<Option<std::io::Error>> = Mutex::new(None);

/// Call once, at the end: the first error writing results to stdout, if
/// any (the results are incomplete, so the run must not look successful).
pub fn finish() -> anyhow::Result<()> {
    let flushed = std::io::stdout().lock().flush().or_else(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => Ok(()),
        _ => Err(e),
    });
    match STDOUT_ERROR.lock().unwrap_or_else(|e| e.into_inner()).take().map_or(flushed, Err) {
        Ok(()) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("writing the results to stdout failed: {e}; they are incomplete")),
    }
}

/// `n` things, in the singular or the plural: `1 image`, `4 images`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `1.5 MB`-style sizes for progress lines (MB = 10^6 bytes).
pub fn show_bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} GB", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} kB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}

/// A duration for people: `12ms` below a tenth of a second (where `0.0s`
/// would say nothing), else `1.5s`.
pub fn seconds(s: f64) -> String {
    if s < 0.1 {
        format!("{}ms", (s * 1e3).round() as u64)
    } else {
        format!("{s:.1}s")
    }
}

/// A plain-text table on stderr: columns padded to their widest cell; the
/// last column is not padded. `right` marks right-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>], right: &[bool]) {
    for l in table_lines(header, rows, right) {
        line(l);
    }
}

fn table_lines(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> Vec<String> {
    let n = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let fmt = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = widths[i].saturating_sub(c.chars().count());
            if i + 1 == n {
                s.push_str(c);
            } else if right.get(i).copied().unwrap_or(false) {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            }
        }
        s
    };
    let mut out = vec![fmt(header.to_vec())];
    out.extend(rows.iter().map(|r| fmt(r.iter().map(String::as_str).collect())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations() {
        assert_eq!((count(1, "image", "images"), count(4, "image", "images")), ("1 image".into(), "4 images".into()));
        assert_eq!(count(0, "image", "images"), "0 images");
        assert_eq!([seconds(0.0), seconds(0.0123), seconds(0.1), seconds(12.34)], ["0ms", "12ms", "0.1s", "12.3s"]);
    }

    #[test]
    fn colours_and_the_status_line_follow_flags_env_and_terminal() {
        use crate::env::MapEnv;
        let (auto, plain, tty) = (ProgressMode::Auto, ProgressMode::Plain, ProgressMode::Tty);
        let decide = |p, c, env: &[(&str, &str)], is_tty| {
            let d = Config::decide(p, c, false, &MapEnv(env), is_tty);
            (d.live, d.color)
        };
        // Not a terminal (CI logs): plain lines, no colours.
        assert_eq!(decide(auto, ColorChoice::Auto, &[], false), (false, false));
        assert_eq!(decide(auto, ColorChoice::Auto, &[], true), (true, true));
        assert_eq!(decide(auto, ColorChoice::Auto, &[("TERM", "dumb")], true), (false, true));
        assert_eq!(decide(plain, ColorChoice::Auto, &[], true), (false, true));
        assert_eq!(decide(tty, ColorChoice::Auto, &[], false), (true, false));
        assert_eq!(decide(auto, ColorChoice::Auto, &[("NO_COLOR", "1")], true), (true, false));
        assert_eq!(decide(auto, ColorChoice::Auto, &[("NO_COLOR", "")], true), (true, true));
        assert_eq!(decide(auto, ColorChoice::Auto, &[("CLICOLOR_FORCE", "1")], false), (false, true));
        assert_eq!(decide(auto, ColorChoice::Auto, &[("CLICOLOR_FORCE", "0")], false), (false, false));
        // NO_COLOR wins over CLICOLOR_FORCE; the flag over both.
        assert!(!decide(auto, ColorChoice::Auto, &[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")], false).1);
        assert!(decide(auto, ColorChoice::Always, &[("NO_COLOR", "1")], false).1);
        assert!(!decide(auto, ColorChoice::Never, &[("CLICOLOR_FORCE", "1")], true).1);
    }

    #[test]
    fn tables_pad_all_but_the_last_column() {
        let rows = vec![
            vec!["base".to_string(), "pushed".to_string(), "1.5s".to_string(), "to a, b".to_string()],
            vec!["greeter-x".to_string(), "published".to_string(), "-".to_string(), "".to_string()],
        ];
        let lines = table_lines(&["image", "result", "time", "detail"], &rows, &[false, false, true, false]);
        assert_eq!(
            lines,
            [
                "image      result     time  detail",
                "base       pushed     1.5s  to a, b",
                "greeter-x  published     -  ",
            ]
        );
    }
}
