//! The provenance of a pushed image: an in-toto Statement v1 whose
//! predicate is SLSA provenance v1. `resolvedDependencies` lists every
//! input file of the image's fingerprint with the SHA-1 of its contents
//! (the list `describe` shows and the recorded manifests hold), the images
//! it was built from (`MZFROM`) by digest, and its other base images (by
//! digest when the Dockerfile pins one); the build definition names the
//! fingerprint, the settings and the git revision; the builder is mzbuild.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::discover::Image;
use crate::fingerprint::Computed;

pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
pub const BUILD_TYPE: &str = "https://github.com/MaterializeInc/materialize/mzbuild/image/v1";
pub const BUILDER_ID: &str = "https://github.com/MaterializeInc/materialize/mzbuild#cargo-xtask-mzbuild";

/// What a statement is about, beside the fingerprint's record.
pub struct Subject<'a> {
    pub image: &'a Image,
    /// `host/repository` the image is published in.
    pub name: &'a str,
    pub digest: &'a str,
    pub spec: &'a str,
    pub fingerprint: &'a str,
    /// The git commit of the work tree, if known.
    pub revision: Option<&'a str>,
    /// The digest of each `MZFROM` dependency, in the same registry.
    pub dependencies: &'a BTreeMap<String, (String, Option<String>)>,
}

/// The statement, as bytes to sign.
pub fn statement(computed: &Computed, settings: &str, s: &Subject<'_>) -> Vec<u8> {
    let mut deps: Vec<Value> = computed
        .manifest(&s.image.name)
        .into_iter()
        .map(|(path, h)| {
            json!({
                "uri": format!("git+file:{path}"),
                "name": path,
                "digest": { "sha1": crate::git::hex(&h.digest) },
                "annotations": { "mode": format!("{:o}", h.mode) },
            })
        })
        .collect();
    for (name, (spec, digest)) in s.dependencies {
        let mut d = json!({ "uri": format!("docker://{spec}"), "name": name });
        if let Some(digest) = digest.as_deref().and_then(|d| d.strip_prefix("sha256:")) {
            d["digest"] = json!({ "sha256": digest });
        }
        deps.push(d);
    }
    for base in base_images(&s.image.dockerfile) {
        let mut d = json!({ "uri": format!("docker://{base}") });
        if let Some((_, digest)) = base.split_once("@sha256:") {
            d["digest"] = json!({ "sha256": digest });
        }
        deps.push(d);
    }
    let v = json!({
        "_type": STATEMENT_V1,
        "subject": [{ "name": s.name, "digest": { "sha256": s.digest.strip_prefix("sha256:").unwrap_or(s.digest) } }],
        "predicateType": crate::sigstore::SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "image": s.image.name,
                    "path": s.image.dir,
                    "fingerprint": s.fingerprint,
                    "spec": s.spec,
                    "settings": settings,
                    "revision": s.revision,
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": { "id": BUILDER_ID, "version": { "mzbuild": env!("CARGO_PKG_VERSION") } },
                "metadata": {},
            },
        },
    });
    serde_json::to_vec(&v).expect("JSON values serialise")
}

/// The images a Dockerfile builds from, other than `scratch`, its own
/// stages and `MZFROM` lines (which are dependencies).
pub fn base_images(dockerfile: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(dockerfile);
    let mut stages: Vec<String> = vec![];
    let mut out = vec![];
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first().is_none_or(|w| !w.eq_ignore_ascii_case("FROM")) {
            continue;
        }
        let args: Vec<&str> = words[1..].iter().copied().filter(|w| !w.starts_with("--")).collect();
        let Some(image) = args.first() else { continue };
        let earlier_stage = stages.contains(&image.to_lowercase());
        if let (Some(kw), Some(name)) = (args.get(1), args.get(2)) {
            if kw.eq_ignore_ascii_case("AS") {
                stages.push(name.to_lowercase());
            }
        }
        if *image != "scratch" && !earlier_stage && !out.iter().any(|o| o == image) {
            out.push(image.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_images_skip_scratch_stages_and_mzfrom() {
        let df = b"MZFROM base AS b\nFROM debian:12@sha256:abc AS build\nRUN x\nFROM build\nFROM --platform=x alpine\nFROM scratch\n";
        assert_eq!(base_images(df), ["debian:12@sha256:abc", "alpine"]);
    }
}
