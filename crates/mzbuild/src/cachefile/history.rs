//! How long earlier runs took, for the live status line's estimate:
//! `target/mzbuild/durations.json`, the last successful build time of each
//! image and of the cargo pre-image (and how many units it built). Only an
//! estimate: a file that is missing or unreadable is an empty history, and
//! one that cannot be written is left as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
pub struct History {
    /// Seconds, by image.
    #[serde(default)]
    pub images: BTreeMap<String, f64>,
    /// Seconds the last cargo pre-image took.
    #[serde(default)]
    pub cargo_seconds: Option<f64>,
    /// Units (`compiler-artifact` messages) it built.
    #[serde(default)]
    pub cargo_units: Option<usize>,
}

fn path(root: &Path) -> PathBuf {
    root.join("target").join("mzbuild").join("durations.json")
}

impl History {
    pub fn load(root: &Path) -> History {
        std::fs::read(path(root)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Update the file (under the repository lock: one building run at a
    /// time) with `change`.
    pub fn update(root: &Path, change: impl FnOnce(&mut History)) {
        let mut h = History::load(root);
        change(&mut h);
        let p = path(root);
        let tmp = p.with_extension("json.tmp");
        if let Ok(bytes) = serde_json::to_vec_pretty(&h) {
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(&tmp, &p);
            }
        }
    }

    /// The estimates the status line takes: seconds by image, and `cargo`.
    pub fn estimates(&self) -> BTreeMap<String, f64> {
        let mut e = self.images.clone();
        if let Some(c) = self.cargo_seconds {
            e.insert("cargo".into(), c);
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_survive_a_round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(History::load(dir.path()), History::default());
        std::fs::create_dir_all(dir.path().join("target/mzbuild")).unwrap();
        History::update(dir.path(), |h| {
            h.images.insert("a".into(), 1.5);
            h.cargo_seconds = Some(30.0);
        });
        let h = History::load(dir.path());
        assert_eq!(h.estimates(), [("a".to_string(), 1.5), ("cargo".to_string(), 30.0)].into());
        std::fs::write(path(dir.path()), "not json").unwrap();
        assert_eq!(History::load(dir.path()), History::default());
    }
}
