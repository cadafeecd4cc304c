//! Configuration, parsed once and validated with errors that name the file:
//! each image's `mzbuild.yml` ([`image`]), the root `Cargo.toml`'s
//! `[workspace.metadata.mzbuild]` and the crate graph of the cargo workspace
//! ([`workspace`], [`crates`]), and the build settings ([`settings`]).
//!
//! Problems are [`ConfigError`]s, collected over the whole repository so that
//! one run reports all of them ([`ConfigErrors`]); warnings (unknown keys)
//! are the same type, and become errors under `--strict`. A key within a
//! typo of a known one is an error ([`near_miss`]): it would be ignored.

pub mod cache;
pub mod crates;
pub mod image;
pub mod settings;
pub mod workspace;

use std::fmt;

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A file that exists but cannot be read.
    Unreadable { path: String, error: String },
    /// A YAML syntax error, where the parser gave up.
    Yaml { path: String, location: Option<(usize, usize)>, message: String },
    /// A value that is wrong, in the file `path`.
    InFile { path: String, message: String },
    /// A key nobody reads (a warning, unless `--strict`): typos silently misbuild.
    UnknownKey { path: String, at: Option<String>, key: String, known: &'static [&'static str] },
    /// An unknown key that is a near miss of a known one (`pubish`): an
    /// error, as ignoring it would do the opposite of what was meant.
    MisspeltKey { path: String, at: Option<String>, key: String, meant: &'static str },
    /// An `mzbuild.yml` without a Dockerfile beside it.
    MissingDockerfile { yml: String, image: String, dockerfile: String },
    /// Two images with one name.
    DuplicateName { name: String, first: String, second: String },
    /// `MZFROM` naming an image that does not exist.
    UnknownMzfrom { dockerfile: String, line: usize, name: String, known: Vec<String>, meant: Option<String> },
    /// A copy pre-image whose `matching` selects none of the files of its
    /// `source` (a warning, unless `--strict`): the copy is empty.
    EmptyCopy { yml: String, image: String, index: usize, source: String, matching: String, files: usize },
    /// Images that depend on each other, in order, first repeated at the end.
    Cycle(Vec<String>),
    /// An image whose configuration is sound but that depends (`MZFROM`) on
    /// a broken one: `cause` is what is wrong with that one.
    BrokenDependency { image: String, dependency: String, cause: String },
    /// A warning that `--strict` turned into an error.
    Strict(Box<ConfigError>),
}

impl ConfigError {
    pub fn in_file(path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::InFile { path: path.to_string(), message: message.into() }
    }

    /// The file the problem is in, if it is about one file.
    pub fn path(&self) -> Option<&str> {
        match self {
            ConfigError::Unreadable { path, .. }
            | ConfigError::Yaml { path, .. }
            | ConfigError::InFile { path, .. }
            | ConfigError::UnknownKey { path, .. }
            | ConfigError::MisspeltKey { path, .. } => Some(path),
            ConfigError::MissingDockerfile { yml, .. } | ConfigError::EmptyCopy { yml, .. } => Some(yml),
            ConfigError::DuplicateName { second, .. } => Some(second),
            ConfigError::UnknownMzfrom { dockerfile, .. } => Some(dockerfile),
            ConfigError::Cycle(_) | ConfigError::BrokenDependency { .. } => None,
            ConfigError::Strict(inner) => inner.path(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Unreadable { path, error } => write!(f, "{path}: cannot read: {error}"),
            ConfigError::Yaml { path, location: Some((line, column)), message } => {
                write!(f, "{path}:{line}:{column}: malformed YAML: {message}")
            }
            ConfigError::Yaml { path, location: None, message } => write!(f, "{path}: malformed YAML: {message}"),
            ConfigError::InFile { path, message } => write!(f, "{path}: {message}"),
            ConfigError::UnknownKey { path, at, key, known } => {
                let at = at.as_ref().map(|a| format!("{a}: ")).unwrap_or_default();
                write!(f, "{path}: {at}unknown key `{key}` (ignored; known keys: {})", known.join(", "))
            }
            ConfigError::MisspeltKey { path, at, key, meant } => {
                let at = at.as_ref().map(|a| format!("{a}: ")).unwrap_or_default();
                write!(f, "{path}: {at}unknown key `{key}`: did you mean `{meant}`? (fix the spelling: it would be ignored)")
            }
            ConfigError::MissingDockerfile { yml, image, dockerfile } => write!(
                f,
                "{yml}: image `{image}` has no Dockerfile: add {dockerfile} (and make sure git does not ignore it)"
            ),
            ConfigError::DuplicateName { name, first, second } => write!(
                f,
                "image name `{name}` is defined twice, in {first} and {second}: image names must be unique, rename one"
            ),
            ConfigError::UnknownMzfrom { dockerfile, line, name, known, meant: Some(meant) } => write!(
                f,
                "{dockerfile}:{line}: `MZFROM {name}` names an image that does not exist: did you mean `{meant}`? (images: {})",
                known.join(", ")
            ),
            ConfigError::UnknownMzfrom { dockerfile, line, name, known, meant: None } => write!(
                f,
                "{dockerfile}:{line}: `MZFROM {name}` names an image that does not exist (images: {}); fix the name or add the image",
                known.join(", ")
            ),
            ConfigError::EmptyCopy { yml, image, index, source, matching, files } => write!(
                f,
                "{yml}: image `{image}`, pre-image #{index} (copy): `matching: {matching}` selects none of the \
                 {files} file(s) git sees under `{source}`, so the copy is empty (as in the original mzbuild); \
                 fix `matching` or `source`, or remove the pre-image"
            ),
            ConfigError::Cycle(cycle) => {
                write!(f, "image dependency cycle: {} (through MZFROM lines); break it", cycle.join(" -> "))
            }
            ConfigError::BrokenDependency { image, dependency, cause } => {
                write!(f, "`{image}` depends on `{dependency}`, which is broken: {cause}")
            }
            ConfigError::Strict(inner) => write!(f, "{inner} (an error with --strict)"),
        }
    }
}

/// The candidate `word` is most likely a misspelling of: the nearest one by
/// edit distance (ties: the first), if it is near enough to be a typo
/// rather than another word. Near is at most 2 edits, and at most a third
/// of the candidate's length (so that a short unknown key such as `dir` is
/// not taken for `bin`).
pub fn near_miss<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d > 0 && *d <= 2 && *d <= c.chars().count() / 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The number of single-character insertions, deletions and substitutions
/// that turn `a` into `b`.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Every configuration error of a repository, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.len() {
            1 => write!(f, "1 error in the mzbuild configuration:")?,
            n => write!(f, "{n} errors in the mzbuild configuration:")?,
        }
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance() {
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("pubish", "publish"), 1);
        assert_eq!(levenshtein("pubilsh", "publish"), 2);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
    }

    #[test]
    fn near_misses() {
        let top = image::TOP_KEYS.iter().copied();
        assert_eq!(near_miss("pubish", top.clone()), Some("publish"));
        assert_eq!(near_miss("pre_image", top.clone()), Some("pre-image"));
        assert_eq!(near_miss("build_args", top.clone()), Some("build-args"));
        assert_eq!(near_miss("owner", top.clone()), None);
        let cargo = image::CARGO_KEYS.iter().copied();
        assert_eq!(near_miss("bins", cargo.clone()), Some("bin"));
        assert_eq!(near_miss("exampels", cargo.clone()), Some("example"));
        // Keys the original ignores, in Materialize's own configurations,
        // and short words two edits from a short key are not typos.
        for key in ["split_debuginfo", "dir", "env", "tag"] {
            let all = image::TOP_KEYS.iter().chain(image::CARGO_KEYS).chain(image::COPY_KEYS).copied();
            assert_eq!(near_miss(key, all), None, "{key}");
        }
        assert_eq!(near_miss("ap", ["app", "web"]), Some("app"));
        assert_eq!(near_miss("appp", ["app", "web"]), Some("app"));
    }
}
