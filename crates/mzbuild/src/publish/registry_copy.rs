//! Copying images between registries through the registry HTTP API: no
//! docker, no rebuild, so every registry holds the very bytes (and digest)
//! the first one has.
//!
//! A copy reads the manifest (or index, and then each manifest it lists) as
//! raw bytes and puts it back unchanged, with its media type, after the
//! blobs it references. Each blob is skipped when the target repository has
//! it already (`HEAD`), mounted when the same registry holds it in another
//! repository (the source repository on the same registry, or one this run
//! has copied it into), and otherwise streamed: `GET` from the source piped
//! into one `PUT` to the target. A registry that refuses a body that large
//! (HTTP 413, or no monolithic uploads: 405, 501) gets it in `PATCH` chunks
//! instead, still streamed. Memory stays bounded whatever the layer sizes.
//! A failed blob transfer is retried from the start (a streamed body cannot
//! be replayed), 3 attempts in all. The image's cosign signatures and
//! attestations (`sha256-<hex>.sig`, `.att`) are copied after it, merged
//! with any the target has.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::client::{Client, Sent, Upload};
use super::manifest::{self, Content, Descriptor};
use crate::ctx::Ctx;
use crate::plan::{Action, Step};
use crate::util::par_io;

/// The first chunk size when a registry refuses a blob in one request;
/// halved while it refuses chunks, down to `MIN_CHUNK`.
const CHUNK: u64 = 32 << 20;
const MIN_CHUNK: u64 = 1 << 20;
const ATTEMPTS: u32 = 3;
/// How many image copies run at once.
const COPIES_IN_FLIGHT: usize = 4;

/// Where blobs are known to be, per registry host: a repository that holds
/// each digest, so a later copy into the same registry mounts it instead of
/// streaming it again (images share their base layers). Shared by the
/// copies of one run, which also wait for each other: a blob that one copy
/// is streaming into a registry is not streamed by another at the same
/// time, which waits and mounts it.
#[derive(Default)]
pub struct BlobHomes {
    homes: Mutex<HashMap<(String, String), Home>>,
    changed: Condvar,
}

enum Home {
    /// A copy is streaming it there.
    Arriving,
    /// This repository has it.
    At(String),
}

/// What to do about a blob the target repository lacks.
enum Claim<'a> {
    /// Mount it from this repository of the same registry.
    Mount(String),
    /// Stream it; `finish` when done (on drop, as failed).
    Stream(Streaming<'a>),
}

/// The right and duty to stream one blob into one registry.
struct Streaming<'a> {
    homes: &'a BlobHomes,
    key: (String, String),
    done: bool,
}

impl Streaming<'_> {
    fn finish(mut self, repository: &str) {
        self.done = true;
        self.homes.set(&self.key, Some(Home::At(repository.to_string())));
    }
}

impl Drop for Streaming<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.homes.set(&self.key, None);
        }
    }
}

impl BlobHomes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Home>> {
        self.homes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, key: &(String, String), home: Option<Home>) {
        let mut homes = self.lock();
        match home {
            Some(h) => homes.insert(key.clone(), h),
            None => homes.remove(key),
        };
        self.changed.notify_all();
    }

    /// Record that `repository` of registry `host` has blob `digest`.
    fn insert(&self, host: &str, digest: &str, repository: &str) {
        self.set(&(host.to_string(), digest.to_string()), Some(Home::At(repository.to_string())));
    }

    /// Where to mount `digest` from in registry `host`, or the duty to
    /// stream it there; waits while another copy streams it.
    fn claim(&self, host: &str, digest: &str) -> Claim<'_> {
        let key = (host.to_string(), digest.to_string());
        let mut homes = self.lock();
        loop {
            match homes.get(&key) {
                Some(Home::At(repository)) => return Claim::Mount(repository.clone()),
                Some(Home::Arriving) => homes = self.changed.wait(homes).unwrap_or_else(|e| e.into_inner()),
                None => {
                    homes.insert(key.clone(), Home::Arriving);
                    return Claim::Stream(Streaming { homes: self, key, done: false });
                }
            }
        }
    }
}

/// What one copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// The digest of the copied manifest or index (the same in both).
    pub digest: String,
    /// Bytes sent to the target: streamed blobs and manifests.
    pub bytes: u64,
    /// Blobs streamed, mounted, and found in the target already.
    pub streamed: usize,
    pub mounted: usize,
    pub present: usize,
    /// How long it took (an image's copies to several registries run at
    /// once: the longest of them).
    pub took: std::time::Duration,
}

/// One side of a copy: a registry client and a repository in it.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub client: &'a Client,
    pub repository: &'a str,
}

impl Side<'_> {
    fn reference(&self, reference: &str) -> String {
        let sep = if reference.starts_with("sha256:") { '@' } else { ':' };
        format!("{}/{}{sep}{reference}", self.client.registry.host(), self.repository)
    }
}

/// Copy `from:tag` to `to:tag` (which it creates or overwrites), with
/// everything it references.
pub fn copy_tag(from: Side<'_>, to: Side<'_>, tag: &str, homes: &BlobHomes) -> Result<Copied> {
    let m = from
        .client
        .get_manifest(from.repository, tag)?
        .ok_or_else(|| anyhow!("{} is not there (any more)", from.reference(tag)))?;
    let digest = manifest::digest(&m.bytes);
    if let Some(sent) = &m.digest {
        if *sent != digest {
            bail!("{}: the registry says its digest is {sent}, but its bytes hash to {digest}", from.reference(tag));
        }
    }
    let mut stats = Copied { digest: digest.clone(), ..Copied::default() };
    copy_references(from, to, &m.media_type, &m.bytes, homes, &mut stats)
        .with_context(|| format!("copying {} to {}", from.reference(tag), to.reference(tag)))?;
    let stored = to.client.put_manifest(to.repository, tag, &m.media_type, &m.bytes)?;
    if stored != digest {
        bail!("{} stored {} as {stored}, not as {digest}", to.client.registry.url, to.reference(tag));
    }
    stats.bytes += m.bytes.len() as u64;
    crate::ui::live::add_copied(m.bytes.len() as u64);
    // The signatures and attestations go along: the target can be
    // verified on its own.
    crate::trust::copy_signatures((from.client, from.repository), (to.client, to.repository), &digest)
        .with_context(|| format!("copying the signatures of {} to {}", from.reference(tag), to.reference(tag)))?;
    Ok(stats)
}

/// Copy what a manifest references: an image's blobs, or an index's
/// manifests (each with its own references, then itself, by digest).
fn copy_references(
    from: Side<'_>,
    to: Side<'_>,
    media_type: &str,
    bytes: &[u8],
    homes: &BlobHomes,
    stats: &mut Copied,
) -> Result<()> {
    let content = manifest::parse(media_type, bytes)?;
    if let Content::Index { manifests } = &content {
        for child in manifests {
            let m = from
                .client
                .get_manifest(from.repository, &child.digest)?
                .ok_or_else(|| anyhow!("the index lists {}, which is not there", from.reference(&child.digest)))?;
            if manifest::digest(&m.bytes) != child.digest {
                bail!("{} does not hash to its digest", from.reference(&child.digest));
            }
            copy_references(from, to, &m.media_type, &m.bytes, homes, stats)?;
            to.client.put_manifest(to.repository, &child.digest, &m.media_type, &m.bytes)?;
            stats.bytes += m.bytes.len() as u64;
            crate::ui::live::add_copied(m.bytes.len() as u64);
        }
    }
    for blob in content.blobs() {
        copy_blob(from, to, blob, homes, stats).with_context(|| format!("blob {}", blob.digest))?;
    }
    Ok(())
}

fn copy_blob(from: Side<'_>, to: Side<'_>, blob: &Descriptor, homes: &BlobHomes, stats: &mut Copied) -> Result<()> {
    let host = to.client.registry.host();
    if to.client.blob_exists(to.repository, &blob.digest)? {
        homes.insert(host, &blob.digest, to.repository);
        stats.present += 1;
        return Ok(());
    }
    let (mount_from, streaming) = if from.client.registry.host() == host {
        (Some(from.repository.to_string()), None)
    } else {
        match homes.claim(host, &blob.digest) {
            Claim::Mount(repository) => (Some(repository), None),
            Claim::Stream(s) => (None, Some(s)),
        }
    };
    let start = to.client.start_upload(to.repository, mount_from.as_deref().map(|r| (blob.digest.as_str(), r)))?;
    match start {
        Upload::Mounted => stats.mounted += 1,
        Upload::At(location) => {
            stream_blob(from, to, blob, location)?;
            stats.streamed += 1;
            stats.bytes += blob.size;
            crate::ui::live::add_copied(blob.size);
        }
    }
    match streaming {
        Some(s) => s.finish(to.repository),
        None => homes.insert(host, &blob.digest, to.repository),
    }
    Ok(())
}

/// How one streaming attempt ended.
enum Streamed {
    Done,
    /// The target refused a body of that size or kind (HTTP status).
    Refused(u16),
}

/// Stream `blob` into the upload session at `location`, in one request,
/// else in chunks; retried from the start on failure.
fn stream_blob(from: Side<'_>, to: Side<'_>, blob: &Descriptor, location: String) -> Result<()> {
    let mut session = Some(location);
    let mut chunk: Option<u64> = None;
    let mut failures = 0;
    loop {
        let at = match session.take() {
            Some(at) => at,
            None => match to.client.start_upload(to.repository, None)? {
                Upload::At(at) => at,
                Upload::Mounted => unreachable!("no mount was asked for"),
            },
        };
        match stream_once(from, to, blob, &at, chunk) {
            Ok(Streamed::Done) => return Ok(()),
            Ok(Streamed::Refused(status)) => {
                chunk = Some(match chunk {
                    None => CHUNK.min(blob.size.div_ceil(2)).max(MIN_CHUNK),
                    Some(c) if c / 2 >= MIN_CHUNK => c / 2,
                    Some(c) => {
                        bail!("registry {} refuses (HTTP {status}) even chunks of {c} bytes", to.client.registry.url)
                    }
                });
            }
            Err(e) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    return Err(e.context(format!("{failures} attempts")));
                }
                std::thread::sleep(Duration::from_secs(u64::from(failures)));
            }
        }
    }
}

/// One attempt: `GET` from the source, piped into the target as one `PUT`
/// (`chunk` None) or as `PATCH`es of `chunk` bytes and a closing `PUT`.
fn stream_once(from: Side<'_>, to: Side<'_>, blob: &Descriptor, at: &str, chunk: Option<u64>) -> Result<Streamed> {
    let mut source = from.client.read_blob(from.repository, &blob.digest)?;
    if let Some(len) = source.len {
        if len != blob.size {
            bail!("{} is {len} bytes, but its manifest says {}", from.reference(&blob.digest), blob.size);
        }
    }
    let Some(chunk) = chunk else {
        return Ok(match to.client.finish_upload(to.repository, at, &blob.digest, blob.size, &mut source.body)? {
            Sent::Accepted(_) => Streamed::Done,
            Sent::BodyRefused(s) => Streamed::Refused(s),
        });
    };
    let mut at = at.to_string();
    let mut offset = 0;
    while offset < blob.size {
        let len = chunk.min(blob.size - offset);
        let mut part = (&mut source.body).take(len);
        match to.client.upload_chunk(to.repository, &at, offset, len, &mut part)? {
            Sent::Accepted(next) => at = next,
            Sent::BodyRefused(s) => return Ok(Streamed::Refused(s)),
        }
        offset += len;
    }
    Ok(match to.client.finish_upload(to.repository, &at, &blob.digest, 0, &mut std::io::empty())? {
        Sent::Accepted(_) => Streamed::Done,
        Sent::BodyRefused(s) => Streamed::Refused(s),
    })
}

/// Run the `Copy` steps of a plan: every (image, target registry) pair, on
/// a few threads (they wait on the network). For each image, what its
/// copies did together, or the first failure.
pub fn copy_steps(
    ctx: &Ctx,
    clients: &[Client],
    steps: &[&Step<'_>],
) -> BTreeMap<String, std::result::Result<Copied, String>> {
    let homes = BlobHomes::default();
    let mut tasks: Vec<(&Step<'_>, usize, usize)> = Vec::new();
    for step in steps {
        if let Action::Copy { from, to } = &step.action {
            tasks.extend(to.iter().map(|t| (*step, *from, *t)));
        }
    }
    let results = par_io(&tasks, COPIES_IN_FLIGHT, |(step, from, to)| {
        let tag = step.fingerprint.tag();
        let (from_repository, to_repository) = (
            clients[*from].registry.repository(&ctx.naming.prefix, &step.image.name),
            clients[*to].registry.repository(&ctx.naming.prefix, &step.image.name),
        );
        let from = Side { client: &clients[*from], repository: &from_repository };
        let to = Side { client: &clients[*to], repository: &to_repository };
        let start = std::time::Instant::now();
        copy_tag(from, to, &tag, &homes).map(|c| Copied { took: start.elapsed(), ..c }).map_err(|e| format!("{e:#}"))
    });
    let mut out: BTreeMap<String, std::result::Result<Copied, String>> = BTreeMap::new();
    for ((step, _, _), result) in tasks.iter().zip(results) {
        let entry = out.entry(step.image.name.clone()).or_insert_with(|| Ok(Copied::default()));
        match (entry, result) {
            (Err(_), _) => {}
            (entry @ Ok(_), Err(e)) => *entry = Err(e),
            (Ok(total), Ok(c)) => {
                total.digest = c.digest;
                total.bytes += c.bytes;
                total.streamed += c.streamed;
                total.mounted += c.mounted;
                total.present += c.present;
                total.took = total.took.max(c.took);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a second copy of the same blob into the same registry is told,
    /// while the first streams it and after the first `ends` it.
    fn second_claim(ends: impl FnOnce(Streaming<'_>) + Send) -> String {
        let homes = BlobHomes::default();
        let Claim::Stream(first) = homes.claim("reg", "sha256:a") else { panic!("the first copy must stream") };
        std::thread::scope(|s| {
            let second = s.spawn(|| match homes.claim("reg", "sha256:a") {
                Claim::Mount(repository) => format!("mount from {repository}"),
                Claim::Stream(_) => "stream".to_string(),
            });
            // The second copy waits while the first streams (no timing
            // assumption: whenever it asks, the answer comes after `ends`).
            ends(first);
            second.join().unwrap()
        })
    }

    #[test]
    fn a_blob_is_streamed_once_per_registry_and_mounted_by_the_others() {
        assert_eq!(second_claim(|s| s.finish("team/base")), "mount from team/base");
        // A failed stream hands the duty on.
        assert_eq!(second_claim(|s| drop(s)), "stream");
        let homes = BlobHomes::default();
        homes.insert("reg", "sha256:b", "team/x");
        assert!(matches!(homes.claim("reg", "sha256:b"), Claim::Mount(r) if r == "team/x"));
        assert!(matches!(homes.claim("other", "sha256:b"), Claim::Stream(_)));
    }
}
