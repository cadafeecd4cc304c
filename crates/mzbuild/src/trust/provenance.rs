//! The provenance of a pushed image: an in-toto Statement v1 whose
//! predicate is SLSA provenance v1. `resolvedDependencies` lists every
//! input file of the image's fingerprint with the SHA-1 of its contents
//! (the list `describe` shows and the recorded manifests hold), the images
//! it was built from (`MZFROM`) by digest, and its other base images by
//! digest (pinned in the Dockerfile, else as the build resolved them: see
//! [`resolved_bases`]); the build definition names the
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
    /// The digest each other base image resolved to in the build (see
    /// [`resolved_bases`]), by the reference the Dockerfile writes.
    pub bases: &'a BTreeMap<String, String>,
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
        let pinned = base.split_once("@sha256:").map(|(_, d)| d);
        let resolved = s.bases.get(&base).and_then(|d| d.strip_prefix("sha256:"));
        if let Some(digest) = pinned.or(resolved) {
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

/// The digests the build resolved `bases` (as the Dockerfile writes them)
/// to, from its BuildKit plain-progress `log`, whose `FROM` steps name the
/// image with the digest used (`#4 [1/2] FROM 127.0.0.1:5000/x:1@sha256:…`;
/// Docker Hub's short names as `docker.io/library/…`). A base the log does
/// not name with a digest is left out (listed by name only).
pub fn resolved_bases(log: &str, bases: &[String]) -> BTreeMap<String, String> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for line in log.lines() {
        // A step's own line, `#N [stage i/n] FROM ref`; never a RUN step's
        // output (`#N 0.123 text`), which could print anything.
        let Some(step) = line.strip_prefix('#').map(|l| l.trim_start_matches(|c: char| c.is_ascii_digit())) else {
            continue;
        };
        let Some(rest) = step.strip_prefix(" [").and_then(|s| s.split_once("] FROM ")).map(|(_, r)| r) else {
            continue;
        };
        let Some(reference) = rest.split_whitespace().next() else { continue };
        if let Some((name, hex)) = reference.split_once("@sha256:") {
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                seen.insert(name.to_string(), format!("sha256:{hex}"));
            }
        }
    }
    let mut out = BTreeMap::new();
    for base in bases.iter().filter(|b| !b.contains('@')) {
        let last = base.rsplit('/').next().unwrap_or(base);
        let tagged = if last.contains(':') { base.clone() } else { format!("{base}:latest") };
        let candidates = [tagged.clone(), format!("docker.io/library/{tagged}"), format!("docker.io/{tagged}")];
        if let Some(d) = candidates.iter().find_map(|c| seen.get(c)) {
            out.insert(base.clone(), d.clone());
        }
    }
    out
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
    fn resolved_bases_read_the_digests_buildkit_logged() {
        let hex = "a4e3cdc1375f71fc58b8336b79387c6eeec8fba72bb46f4d488954029157e709";
        // Lines as buildx 0.13 prints them (plain progress).
        let log = format!(
            "#1 [internal] load build definition from Dockerfile\n\
             #4 [1/2] FROM 127.0.0.1:5000/bench/alloc:mzbuild-X@sha256:{hex}\n\
             #4 resolve 127.0.0.1:5000/bench/alloc:mzbuild-X@sha256:{hex} done\n\
             #5 [build 1/3] FROM docker.io/library/alpine:latest@sha256:{hex}\n\
             #6 [2/2] FROM docker.io/library/debian:12\n\
             RUN echo ' FROM evil:1@sha256:{hex}'\n\
             #7 0.512 [x] FROM evil:1@sha256:{hex}\n"
        );
        let bases: Vec<String> =
            ["127.0.0.1:5000/bench/alloc:mzbuild-X", "alpine", "debian:12", "evil:1", "pinned@sha256:00"]
                .map(String::from)
                .to_vec();
        let got = resolved_bases(&log, &bases);
        let want: BTreeMap<String, String> = [
            ("127.0.0.1:5000/bench/alloc:mzbuild-X".to_string(), format!("sha256:{hex}")),
            ("alpine".to_string(), format!("sha256:{hex}")),
        ]
        .into();
        assert_eq!(got, want);
    }

    #[test]
    fn base_images_skip_scratch_stages_and_mzfrom() {
        let df = b"MZFROM base AS b\nFROM debian:12@sha256:abc AS build\nRUN x\nFROM build\nFROM --platform=x alpine\nFROM scratch\n";
        assert_eq!(base_images(df), ["debian:12@sha256:abc", "alpine"]);
    }
}
