//! `gc`'s registry side: given the fingerprints to keep, decide for one
//! repository of one registry which `mzbuild-*` tags go, and delete them
//! through the registry API.
//!
//! The decision is made from complete information or not at all: every
//! tag is listed (all pages) and every kept tag's manifest read before
//! anything is deleted; a registry that fails or times out on any of that
//! leaves the repository alone. A manifest is deleted by digest, which
//! removes every tag that names it: a digest that a kept tag also names
//! (two fingerprints with one digest, a release tag, an index's member) is
//! never deleted. Only `mzbuild-<fp>` tags (and the `mzbuild-<fp>-cache`
//! registry caches beside them) are ever candidates; any other tag is kept,
//! and so is what it names. Cosign's `sha256-<hex>.sig`/`.att`/`.sbom` tags
//! go with the digest they belong to.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};

use super::client::{Client, Deleted};
use crate::util::par_io;

/// What one tag is, for gc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagKind {
    /// `mzbuild-<fp>` or `mzbuild-<fp>-cache`, with `<fp>`.
    Fingerprint(String),
    /// `sha256-<hex>.<anything>`: cosign's signature, attestation or SBOM
    /// of `sha256:<hex>`.
    Attached(String),
    /// Anything else (release tags, `latest`, foreign tags): never deleted.
    Other,
}

/// Classify `tag`.
pub fn classify(tag: &str) -> TagKind {
    if let Some(rest) = tag.strip_prefix("mzbuild-") {
        let fp = rest.strip_suffix("-cache").unwrap_or(rest);
        if fp.len() == 32 && fp.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)) {
            return TagKind::Fingerprint(fp.to_string());
        }
    }
    if let Some(rest) = tag.strip_prefix("sha256-") {
        if let Some((hex, _)) = rest.split_once('.') {
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return TagKind::Attached(format!("sha256:{hex}"));
            }
        }
    }
    TagKind::Other
}

/// A manifest to delete, with the tags that name it.
#[derive(Clone, Debug)]
pub struct Doomed {
    pub digest: String,
    pub tags: Vec<String>,
    /// Its config's and layers' sizes, as the manifest says (an index: the
    /// members' manifests).
    pub size: Option<u64>,
    /// Cosign tags of it, with their digests: deleted after it.
    pub attached: Vec<(String, String)>,
}

/// How applying a repository's plan ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Dry run: nothing asked.
    NotAsked,
    /// Every doomed manifest is gone.
    Done,
    /// The registry does not allow deletion.
    Unsupported(String),
    /// A deletion failed; the ones before it are done.
    Failed(String),
}

/// One repository's decision.
#[derive(Clone, Debug)]
pub struct RepoGc {
    pub image: String,
    /// `<registry url>/<prefix><image>`.
    pub location: String,
    pub repository: String,
    pub tags: usize,
    /// The tags kept (any kind).
    pub kept: usize,
    pub delete: Vec<Doomed>,
    /// Tags that would go but name a digest that a kept tag names: `(tag,
    /// the kept tag)`.
    pub shared: Vec<(String, String)>,
    /// Tags that could not be read (skipped, kept).
    pub unreadable: Vec<String>,
    pub applied: Applied,
    /// How many manifests were deleted.
    pub deleted: usize,
}

/// Decide for `repository` (image `image`) of `client`'s registry: keep
/// every `mzbuild-*` tag whose fingerprint `keep` holds. `None` when the
/// registry has no such repository.
pub fn plan_repo(client: &Client, repository: &str, image: &str, keep: &BTreeSet<String>) -> Result<Option<RepoGc>> {
    let Some(tags) = client.list_tags(repository)? else { return Ok(None) };
    let (mut kept, mut candidates, mut attached) = (vec![], vec![], vec![]);
    for t in &tags {
        match classify(t) {
            TagKind::Fingerprint(fp) if !keep.contains(&fp) => candidates.push(t.clone()),
            TagKind::Attached(subject) => attached.push((t.clone(), subject)),
            _ => kept.push(t.clone()),
        }
    }
    let location = format!("{}/{repository}", client.registry.host());
    let mut plan = RepoGc {
        image: image.to_string(),
        location,
        repository: repository.to_string(),
        tags: tags.len(),
        kept: kept.len() + attached.len(),
        delete: vec![],
        shared: vec![],
        unreadable: vec![],
        applied: Applied::NotAsked,
        deleted: 0,
    };
    if candidates.is_empty() {
        return Ok(Some(plan));
    }
    // What every kept tag names, and each index's members: all of it, or
    // nothing is deleted here.
    let mut protected: BTreeMap<String, String> = BTreeMap::new();
    for (tag, read) in kept.iter().zip(par_io(&kept, 16, |t| read(client, repository, t))) {
        // A tag gone since the listing names nothing now.
        if let Some(m) = read? {
            for d in std::iter::once(m.digest).chain(m.members) {
                protected.entry(d).or_insert_with(|| tag.clone());
            }
        }
    }
    let mut doomed: BTreeMap<String, Doomed> = BTreeMap::new();
    for (tag, read) in candidates.iter().zip(par_io(&candidates, 16, |t| read(client, repository, t))) {
        match read {
            Ok(Some(m)) => match protected.get(&m.digest) {
                Some(by) => {
                    plan.kept += 1;
                    plan.shared.push((tag.clone(), by.clone()));
                }
                None => {
                    let d = doomed.entry(m.digest.clone()).or_insert_with(|| Doomed {
                        digest: m.digest.clone(),
                        tags: vec![],
                        size: m.size,
                        attached: vec![],
                    });
                    d.tags.push(tag.clone());
                }
            },
            Ok(None) => {}
            Err(e) => {
                plan.kept += 1;
                plan.unreadable.push(format!("{tag}: {e:#}"));
            }
        }
    }
    for (tag, subject) in attached {
        if let Some(d) = doomed.get_mut(&subject) {
            match client.manifest_digest(repository, &tag)? {
                Some(digest) if !protected.contains_key(&digest) => {
                    plan.kept -= 1;
                    d.attached.push((tag, digest));
                }
                _ => {}
            }
        }
    }
    plan.delete = doomed.into_values().collect();
    Ok(Some(plan))
}

/// A manifest as gc needs it.
struct Read {
    digest: String,
    /// An index's members.
    members: Vec<String>,
    size: Option<u64>,
}

fn read(client: &Client, repository: &str, tag: &str) -> Result<Option<Read>> {
    let Some(m) = client.get_manifest(repository, tag)? else { return Ok(None) };
    let digest = m.digest.clone().unwrap_or_else(|| super::manifest::digest(&m.bytes));
    let v: serde_json::Value = match serde_json::from_slice(&m.bytes) {
        Ok(v) => v,
        Err(e) => bail!("{repository}:{tag}: the manifest is not JSON: {e}"),
    };
    let sizes = |key: &str| v[key].as_array().map(|a| a.iter().filter_map(|d| d["size"].as_u64()).sum::<u64>());
    let members: Vec<String> = v["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["digest"].as_str().map(str::to_string))
        .collect();
    let size = match (sizes("layers"), v["config"]["size"].as_u64(), sizes("manifests")) {
        (Some(l), c, _) => Some(l + c.unwrap_or(0)),
        (None, _, Some(m)) => Some(m),
        _ => None,
    };
    Ok(Some(Read { digest, members, size }))
}

/// Delete what `plan` dooms; stop at the first failure, or when the
/// registry does not allow deletion.
pub fn apply_repo(client: &Client, plan: &mut RepoGc) {
    plan.applied = Applied::Done;
    for d in &plan.delete {
        let doomed = std::iter::once(&d.digest).chain(d.attached.iter().map(|(_, digest)| digest));
        for digest in doomed {
            match client.delete_manifest(&plan.repository, digest) {
                Ok(Deleted::Deleted) => plan.deleted += 1,
                Ok(Deleted::Missing) => {}
                Ok(Deleted::Unsupported(why)) => {
                    plan.applied = Applied::Unsupported(why);
                    return;
                }
                Err(e) => {
                    plan.applied = Applied::Failed(format!("{e:#}"));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_kinds() {
        let fp = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        assert_eq!(classify(&format!("mzbuild-{fp}")), TagKind::Fingerprint(fp.into()));
        assert_eq!(classify(&format!("mzbuild-{fp}-cache")), TagKind::Fingerprint(fp.into()));
        assert_eq!(classify("mzbuild-short"), TagKind::Other);
        assert_eq!(classify(&format!("mzbuild-{}", fp.to_lowercase())), TagKind::Other);
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(classify(&format!("sha256-{hex}.sig")), TagKind::Attached(format!("sha256:{hex}")));
        assert_eq!(classify(&format!("sha256-{hex}.att")), TagKind::Attached(format!("sha256:{hex}")));
        assert_eq!(classify(&format!("sha256-{hex}")), TagKind::Other);
        assert_eq!(classify("v1.2.3"), TagKind::Other);
        assert_eq!(classify("latest"), TagKind::Other);
    }
}
