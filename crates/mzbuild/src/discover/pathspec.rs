//! What a `copy` pre-image selects: the git-visible files under its
//! `source` that the git pathspec `matching` picks. Discovery warns about a
//! copy that selects nothing; the pre-image ([`crate::preimage::copy_files`])
//! copies what it selects.

use anyhow::{anyhow, Result};

use crate::config::image::CopySpec;
use crate::git::tree::Tree;

/// `source` as a person wrote it: the root is `.`.
pub fn shown(source: &str) -> &str {
    if source.is_empty() {
        "."
    } else {
        source
    }
}

/// `f`, a file under `source`, relative to `source`.
pub fn relative<'a>(f: &'a str, source: &str) -> &'a str {
    if source.is_empty() {
        f
    } else {
        &f[source.len() + 1..]
    }
}

/// Positions in `tree.files` of the files under `source` that the git
/// pathspec `matching` (relative to `source`) selects. As in git, `*` also
/// matches `/`, and a pattern without wildcards matches a path or a
/// directory prefix.
pub fn matches(tree: &Tree, spec: &CopySpec) -> Result<Vec<usize>> {
    let (source, matching) = (spec.source.as_str(), spec.matching.as_str());
    let range = tree.range(source);
    let files = tree.files[range.clone()].iter().zip(range);
    if !matching.contains(['*', '?', '[']) {
        let m = matching.trim_end_matches('/');
        return Ok(files
            .filter(|(f, _)| {
                let r = relative(f, source);
                r == m || (r.starts_with(m) && r.as_bytes().get(m.len()) == Some(&b'/'))
            })
            .map(|(_, i)| i)
            .collect());
    }
    let glob = globset::GlobBuilder::new(matching)
        .literal_separator(false)
        .build()
        .map_err(|e| anyhow!("`matching` `{matching}` is not a valid pattern: {e}"))?
        .compile_matcher();
    Ok(files.filter(|(f, _)| glob.is_match(relative(f, source))).map(|(_, i)| i).collect())
}
