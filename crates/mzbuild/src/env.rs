//! The environment, read through one injectable trait: the engine never
//! calls `std::env::var` itself (clippy.toml bans it everywhere but here),
//! so tests run with a fixed environment and never touch the process's.

use std::path::PathBuf;

/// Environment lookups.
pub trait Env: Sync {
    fn var(&self, key: &str) -> Option<String>;

    /// `var`, with the empty string treated as unset.
    fn non_empty(&self, key: &str) -> Option<String> {
        self.var(key).filter(|v| !v.is_empty())
    }

    /// Whether `key` is set at all (even to something that is not UTF-8).
    fn is_set(&self, key: &str) -> bool {
        self.var(key).is_some()
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        self.non_empty(key).map(PathBuf::from)
    }
}

/// The process's environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

#[allow(clippy::disallowed_methods)] // the one home of environment reads
impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }

    fn is_set(&self, key: &str) -> bool {
        std::env::var_os(key).is_some()
    }
}

/// A fixed environment, for tests.
pub struct MapEnv<'a>(pub &'a [(&'a str, &'a str)]);

impl Env for MapEnv<'_> {
    fn var(&self, key: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string())
    }
}

/// "Truthy" as the original defines it: set and not one of ``, `0`, `no`,
/// `false` (case-insensitive).
pub fn truthy(value: Option<&str>) -> bool {
    match value {
        None => false,
        Some(v) => !matches!(v.to_ascii_lowercase().as_str(), "" | "0" | "no" | "false"),
    }
}
