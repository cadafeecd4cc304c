//! `.dockerignore`, as BuildKit reads it for a local directory context
//! (moby's `dockerignore.ReadAll` and `patternmatcher`): BuildKit does not
//! apply it to a tar context (measured with buildx 0.13: a file it names is
//! copied), so mzbuild applies it while writing the tar.
//!
//! Rules: one pattern a line; `#` starts a comment line; surrounding
//! whitespace is trimmed; `!` makes an exception; a leading `/` is dropped and
//! the pattern is cleaned (`a/./b` is `a/b`); `*` is any run of characters
//! but `/`, `?` one such character, `**` any number of directories, `[...]`
//! a class, `\` escapes. A pattern that names a directory excludes
//! everything below it; the last matching pattern wins.

use anyhow::{Context, Result};
use regex::Regex;

struct Pattern {
    regex: Regex,
    /// How many path components the pattern has (a parent of the file with
    /// as many components may match it).
    dirs: usize,
    exception: bool,
}

/// The patterns of one `.dockerignore`.
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

impl DockerIgnore {
    /// Parse the text of a `.dockerignore` (`origin` names it for errors).
    pub fn parse(text: &str, origin: &str) -> Result<DockerIgnore> {
        let mut patterns = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let mut p = line.trim();
            if p.is_empty() {
                continue;
            }
            let exception = p.starts_with('!');
            if exception {
                p = p[1..].trim();
                if p.is_empty() {
                    continue;
                }
            }
            let stripped = if p.len() > 1 { p.strip_prefix('/').unwrap_or(p) } else { p };
            let cleaned = clean(stripped);
            let regex = Regex::new(&to_regex(&cleaned)).with_context(|| {
                format!("{origin}:{}: `{line}` is not a valid pattern; fix or remove the line", n + 1)
            })?;
            patterns.push(Pattern { regex, dirs: cleaned.split('/').count(), exception });
        }
        Ok(DockerIgnore { patterns })
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out.
    pub fn excludes(&self, path: &str) -> bool {
        let parent: Vec<&str> = match path.rsplit_once('/') {
            Some((p, _)) => p.split('/').collect(),
            None => vec![],
        };
        let mut matched = false;
        for p in &self.patterns {
            if p.exception && !matched {
                continue;
            }
            let mut hit = p.regex.is_match(path);
            if !hit && !parent.is_empty() && p.dirs <= parent.len() {
                hit = p.regex.is_match(&parent[..p.dirs].join("/"));
            }
            if hit {
                matched = !p.exception;
            }
        }
        matched
    }
}

/// Go's `filepath.Clean` for a relative, `/`-separated path.
fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let absolute = p.starts_with('/');
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !absolute {
                    out.push("..");
                }
            }
            _ => out.push(part),
        }
    }
    let joined = out.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// moby's pattern-to-regex translation.
fn to_regex(pattern: &str) -> String {
    let mut re = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    re.push_str(".*");
                } else {
                    re.push_str("(.*/)?");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '\\' => match chars.get(i) {
                Some(next) => {
                    re.push_str(&regex::escape(&next.to_string()));
                    i += 1;
                }
                None => re.push_str("\\\\"),
            },
            '[' | ']' | '^' | '-' => re.push(c),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    re
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ig(text: &str) -> DockerIgnore {
        DockerIgnore::parse(text, ".dockerignore").unwrap()
    }

    #[test]
    fn dockerignore_patterns_as_buildkit_reads_them() {
        let d = ig("# comment\n.env\n/dev.local\n*.log\nsub\n!sub/keep\n**/*.tmp\n.venv/\n");
        assert!(d.excludes(".env"));
        assert!(!d.excludes("a/.env"), "a pattern without ** matches from the root only");
        assert!(d.excludes("dev.local"));
        assert!(d.excludes("x.log"));
        assert!(!d.excludes("d/x.log"));
        assert!(d.excludes("sub/f"), "a directory excludes what is below it");
        assert!(!d.excludes("sub/keep"), "an exception wins when it comes last");
        assert!(d.excludes("a/b/c.tmp"));
        assert!(d.excludes("c.tmp"));
        assert!(d.excludes(".venv/bin/python"));
        assert!(!d.excludes("Dockerfile"));
        assert!(!d.excludes("# comment"));
        // The last matching pattern wins.
        let d = ig("!a\na\n");
        assert!(d.excludes("a"));
        let d = ig("*\n!etc\n");
        assert!(!d.excludes("etc/passwd"));
        assert!(d.excludes("Dockerfile"));
        let d = ig("a/**\n");
        assert!(d.excludes("a/b/c"));
        assert!(!d.excludes("ab"));
        let d = ig("./x/../y/?.txt\n[ab].c\n");
        assert!(d.excludes("y/1.txt"));
        assert!(!d.excludes("y/12.txt"));
        assert!(d.excludes("a.c") && !d.excludes("c.c"));
    }

    #[test]
    fn a_bad_pattern_names_its_line() {
        let e = DockerIgnore::parse("ok\n[z-a]\n", "images/app/.dockerignore").err().unwrap();
        assert!(format!("{e:#}").contains("images/app/.dockerignore:2: `[z-a]`"), "{e:#}");
    }
}
