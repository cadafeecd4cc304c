//! The `copy` pre-image: its inputs (the git-visible files under `source`
//! that the git pathspec `matching` selects) and the step that copies them
//! into the image's context, keeping their paths relative to `source`.

use std::ops::Range;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::config::image::CopySpec;
use crate::discover::pathspec::{matches, relative, shown};
use crate::discover::{Image, Repo};
use crate::git::tree::Tree;

/// The inputs: every matching file, as single-file ranges of positions in
/// `Tree::files`. A source without any file git sees is an error (a typo,
/// or files not yet added); a `matching` that selects none of its files
/// gives an empty copy, as in the original (discovery warns about it).
pub fn inputs(tree: &Tree, spec: &CopySpec) -> Result<Vec<Range<usize>>> {
    if tree.range(&spec.source).is_empty() {
        bail!(
            "copy source `{}` has no files git can see; fix `source` (a directory relative to the repository \
             root) or add the files",
            shown(&spec.source)
        );
    }
    Ok(matches(tree, spec)?.into_iter().map(|i| i..i + 1).collect())
}

/// Copy the matching files into `<context>/<destination>`; the files
/// written.
pub fn run(repo: &Repo, image: &Image, spec: &CopySpec) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let dest = repo.root().join(&image.dir).join(&spec.destination);
    for i in matches(&repo.tree, spec)? {
        let f = &repo.tree.files[i];
        let to = dest.join(relative(f, &spec.source));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::copy(repo.root().join(f), &to)
            .with_context(|| format!("image `{}`: copying {f} to {}", image.name, to.display()))?;
        written.push(to);
    }
    Ok(written)
}
