//! Everything mzbuild shows a person: progress and warnings on stderr,
//! results on stdout, tables. The one module that prints (clippy.toml bans
//! `println!`/`eprintln!` elsewhere in the library), and only ever called
//! from the main thread: workers report through channels.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::io::Write;
use std::sync::Mutex;

/// A progress line: `mzbuild: <msg>`.
pub fn progress(msg: impl Display) {
    line(format_args!("mzbuild: {msg}"));
}

/// A warning line: `warning: <msg>`.
pub fn warn(msg: impl Display) {
    line(format_args!("warning: {msg}"));
}

/// A note line, something to know that is no problem: `note: <msg>`.
pub fn note(msg: impl Display) {
    line(format_args!("note: {msg}"));
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
    line(format_args!("error: {msg}"));
}

/// A line of stderr as is (continuation lines of a report).
pub fn line(msg: impl Display) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{msg}");
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
