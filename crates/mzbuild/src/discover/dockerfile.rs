//! `MZFROM` lines: finding an image's dependencies in its Dockerfile, and
//! rewriting them to `FROM <spec>` before the build. Pure functions.

/// One `MZFROM` line: its 1-based line number and the image it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MzFrom {
    pub line: usize,
    pub name: String,
}

/// Where the `MZFROM <name>` prefix of a line ends, and the name, if the line
/// is one: `MZFROM` at column 0, optional whitespace, a non-whitespace word.
fn mzfrom_prefix(line: &[u8]) -> Option<(usize, &[u8])> {
    let rest = line.strip_prefix(b"MZFROM")?;
    let ws = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let word_len = rest[ws..].iter().take_while(|b| !b.is_ascii_whitespace()).count();
    if word_len == 0 {
        return None;
    }
    let name = &rest[ws..ws + word_len];
    Some((b"MZFROM".len() + ws + word_len, name))
}

pub fn dependencies(dockerfile: &[u8]) -> Vec<MzFrom> {
    dockerfile
        .split(|b| *b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| {
            mzfrom_prefix(line)
                .map(|(_, name)| MzFrom { line: i + 1, name: String::from_utf8_lossy(name).into_owned() })
        })
        .collect()
}

/// Replace each `MZFROM <name>` prefix by `FROM <spec of name>`, keeping the
/// rest of the line; every other byte passes through unchanged.
pub fn rewrite(dockerfile: &[u8], spec_of: &dyn Fn(&str) -> String) -> Vec<u8> {
    let mut out = Vec::with_capacity(dockerfile.len() + 256);
    for (i, line) in dockerfile.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        match mzfrom_prefix(line) {
            Some((end, name)) => {
                out.extend_from_slice(b"FROM ");
                out.extend_from_slice(spec_of(&String::from_utf8_lossy(name)).as_bytes());
                out.extend_from_slice(&line[end..]);
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    const DOCKERFILE: &[u8] = b"# syntax=docker/dockerfile:1\nMZFROM base AS builder\nMZFROM\tbase\nmzfrom lower case is not a directive\n  MZFROM indented is not either\nMZFROM\nFROM scratch\nCOPY --from=builder /x /x\r\nMZFROM tools  AS t # keep the rest\n";

    #[test]
    fn finds_dependencies() {
        let deps = dependencies(DOCKERFILE);
        let got: Vec<_> = deps.iter().map(|d| format!("{}:{}", d.line, d.name)).collect();
        assert_eq!(got, ["2:base", "3:base", "9:tools"]);
    }

    #[test]
    fn rewrites_mzfrom_lines_only() {
        let out = rewrite(DOCKERFILE, &|name| format!("127.0.0.1:5000/{name}:mzbuild-FP"));
        expect![[r#"
            # syntax=docker/dockerfile:1
            FROM 127.0.0.1:5000/base:mzbuild-FP AS builder
            FROM 127.0.0.1:5000/base:mzbuild-FP
            mzfrom lower case is not a directive
              MZFROM indented is not either
            MZFROM
            FROM scratch
            COPY --from=builder /x /x
            FROM 127.0.0.1:5000/tools:mzbuild-FP  AS t # keep the rest
        "#]]
        .assert_eq(&String::from_utf8(out.clone()).unwrap().replace('\r', ""));
        // Bytes outside MZFROM lines are untouched, CR included.
        assert!(out.windows(3).any(|w| w == b"/x\r"));
        assert!(out.ends_with(b"rest\n"));
    }
}
