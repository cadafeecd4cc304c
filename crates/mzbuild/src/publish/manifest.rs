//! The JSON of image manifests and indexes, as far as copying and release
//! tagging need it: which blobs a manifest references, which manifests an
//! index lists (with their platforms), content digests, and the bytes of a
//! new OCI image index. Pure: no I/O.
//!
//! Copies never re-serialise a manifest: they move the registry's bytes as
//! they are (a manifest's digest is the SHA-256 of its exact bytes), and only
//! read them here to find what they reference.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The annotation buildx puts on the attestation manifests of an index.
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// A reference to content: a blob, or a manifest listed in an index.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    /// Where a non-distributable ("foreign") layer lives instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The platform of an image, as an index lists it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `os/architecture[/variant]`.
    pub fn show(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// What a manifest is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// An image: its config and layers, the blobs to copy.
    Image { config: Descriptor, layers: Vec<Descriptor> },
    /// An index (multi-platform): the manifests it lists.
    Index { manifests: Vec<Descriptor> },
}

impl Content {
    /// The blobs an image references that a copy must move: its config and
    /// every distributable layer (foreign layers, which carry `urls`, stay
    /// where they are). Empty for an index.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        match self {
            Content::Image { config, layers } => {
                std::iter::once(config).chain(layers.iter().filter(|l| l.urls.is_empty())).collect()
            }
            Content::Index { .. } => vec![],
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// The media type of a manifest: the registry's `Content-Type`, else the
/// `mediaType` the JSON declares.
pub fn media_type(content_type: Option<&str>, bytes: &[u8]) -> String {
    let header =
        content_type.map(|c| c.split(';').next().unwrap_or(c).trim()).filter(|c| c.starts_with("application/vnd."));
    match header {
        Some(h) => h.to_string(),
        None => serde_json::from_slice::<Raw>(bytes).ok().and_then(|r| r.media_type).unwrap_or_default(),
    }
}

/// Parse a manifest or index of `media_type`.
pub fn parse(media_type: &str, bytes: &[u8]) -> Result<Content> {
    let raw: Raw = serde_json::from_slice(bytes).context("the manifest is not valid JSON")?;
    if raw.schema_version == Some(1) || media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
        bail!("it is a Docker schema 1 manifest, which cannot be copied byte for byte: push it again with a current docker");
    }
    let is_index = matches!(media_type, DOCKER_LIST | OCI_INDEX) || (media_type.is_empty() && raw.manifests.is_some());
    if is_index {
        return Ok(Content::Index { manifests: raw.manifests.context("the index lists no `manifests`")? });
    }
    match (raw.config, raw.layers) {
        (Some(config), layers) => Ok(Content::Image { config, layers: layers.unwrap_or_default() }),
        (None, _) => bail!("the manifest ({media_type}) has no `config`"),
    }
}

/// The platforms' manifests of an index, without the attestation manifests
/// buildx adds beside them.
pub fn platform_manifests(manifests: &[Descriptor]) -> Vec<&Descriptor> {
    manifests.iter().filter(|m| !m.annotations.contains_key(REFERENCE_TYPE)).collect()
}

/// `sha256:<hex>` of `bytes`: the digest of a manifest or blob.
pub fn digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in d.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The platform an image config declares (`os`, `architecture`,
/// `variant`).
pub fn config_platform(config: &[u8]) -> Result<Platform> {
    #[derive(Deserialize)]
    struct Config {
        architecture: Option<String>,
        os: Option<String>,
        variant: Option<String>,
    }
    let c: Config = serde_json::from_slice(config).context("the image config is not valid JSON")?;
    match (c.architecture, c.os) {
        (Some(architecture), Some(os)) => Ok(Platform { architecture, os, variant: c.variant }),
        _ => bail!("the image config names no `os` and `architecture`"),
    }
}

/// The bytes of an OCI image index listing `manifests` in this order. The
/// same descriptors always give the same bytes (keys sorted, no
/// whitespace), so the index's digest is a function of its content.
pub fn oci_index(manifests: &[Descriptor]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Index<'a> {
        schema_version: u32,
        media_type: &'a str,
        manifests: &'a [Descriptor],
    }
    let index = Index { schema_version: 2, media_type: OCI_INDEX, manifests };
    // Through a Value: its maps sort their keys.
    let value = serde_json::to_value(&index).expect("an index serialises");
    serde_json::to_vec(&value).expect("a JSON value serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = r#"{
       "schemaVersion": 2,
       "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
       "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 434, "digest": "sha256:c0"},
       "layers": [
          {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 103, "digest": "sha256:l1"},
          {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "size": 9, "digest": "sha256:f",
           "urls": ["https://example.com/f"]}
       ]
    }"#;

    #[test]
    fn images_name_their_blobs_and_foreign_layers_stay() {
        let c = parse(DOCKER_MANIFEST, IMAGE.as_bytes()).unwrap();
        let blobs: Vec<&str> = c.blobs().iter().map(|d| d.digest.as_str()).collect();
        assert_eq!(blobs, ["sha256:c0", "sha256:l1"]);
        assert_eq!(media_type(None, IMAGE.as_bytes()), DOCKER_MANIFEST);
        assert_eq!(media_type(Some("application/vnd.oci.image.index.v1+json; charset=utf-8"), b""), OCI_INDEX);
        // A generic Content-Type says nothing: the JSON decides.
        assert_eq!(media_type(Some("application/json"), IMAGE.as_bytes()), DOCKER_MANIFEST);
    }

    #[test]
    fn indexes_list_platforms_without_attestations() {
        let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1,
             "platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:att","size":2,
             "platform":{"architecture":"unknown","os":"unknown"},
             "annotations":{"vnd.docker.reference.type":"attestation-manifest","vnd.docker.reference.digest":"sha256:a"}}]}"#;
        let Content::Index { manifests } = parse(OCI_INDEX, index.as_bytes()).unwrap() else { panic!("not an index") };
        assert_eq!(manifests.len(), 2);
        let platforms: Vec<String> =
            platform_manifests(&manifests).iter().map(|m| m.platform.as_ref().unwrap().show()).collect();
        assert_eq!(platforms, ["linux/arm64/v8"]);
        assert!(parse(OCI_INDEX, index.as_bytes()).unwrap().blobs().is_empty());
    }

    #[test]
    fn bad_manifests_are_errors() {
        let e = parse("application/vnd.docker.distribution.manifest.v1+prettyjws", br#"{"schemaVersion":1}"#);
        assert!(format!("{:#}", e.unwrap_err()).contains("schema 1"));
        let e = parse(OCI_MANIFEST, b"<html>").unwrap_err();
        assert!(format!("{e:#}").contains("not valid JSON"), "{e:#}");
        let e = parse(OCI_MANIFEST, br#"{"schemaVersion":2}"#).unwrap_err();
        assert!(format!("{e:#}").contains("no `config`"), "{e:#}");
        let e = config_platform(br#"{"os":"linux"}"#).unwrap_err();
        assert!(format!("{e:#}").contains("no `os` and `architecture`"), "{e:#}");
    }

    #[test]
    fn an_index_is_canonical_json_with_a_stable_digest() {
        let d = |digest: &str, arch: &str| Descriptor {
            media_type: DOCKER_MANIFEST.into(),
            digest: digest.into(),
            size: 523,
            urls: vec![],
            platform: Some(Platform { architecture: arch.into(), os: "linux".into(), variant: None }),
            annotations: BTreeMap::new(),
        };
        let bytes = oci_index(&[d("sha256:x", "amd64"), d("sha256:y", "arm64")]);
        expect_test::expect![[r#"{"manifests":[{"digest":"sha256:x","mediaType":"application/vnd.docker.distribution.manifest.v2+json","platform":{"architecture":"amd64","os":"linux"},"size":523},{"digest":"sha256:y","mediaType":"application/vnd.docker.distribution.manifest.v2+json","platform":{"architecture":"arm64","os":"linux"},"size":523}],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}"#]]
        .assert_eq(std::str::from_utf8(&bytes).unwrap());
        assert_eq!(digest(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let Content::Index { manifests } = parse(OCI_INDEX, &bytes).unwrap() else { panic!("not an index") };
        assert_eq!(oci_index(&manifests), bytes, "parsing and writing again changes the bytes");
        assert_eq!(
            config_platform(br#"{"architecture":"arm64","os":"linux","variant":"v8"}"#).unwrap().show(),
            "linux/arm64/v8"
        );
    }
}
