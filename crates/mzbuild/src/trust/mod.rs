//! Trust in what registries hold: signatures and attestations written next
//! to published images (cosign's formats, see [`crate::sigstore`]), and the
//! check that makes a skip a verified one.
//!
//! Without a trust policy, a tag `mzbuild-<fp>` in a registry is believed:
//! whoever can push there can plant content under a current or future tag.
//! With one (`[workspace.metadata.mzbuild] trust`, `--trust-key`), a
//! published tag counts only when the registry also holds, under
//! `sha256-<hex>.sig` in the same repository, a signature by a trusted key
//! of the very digest the tag names ([`verify`]). Anything else is
//! [`Untrusted`], with the reason: the commands then neither skip, pull,
//! copy nor index it, and fail naming the tag, the registry and what to do.
//!
//! Verdicts are cached per work tree (`<git dir>/mzbuild/trusted`): a
//! signature by a trusted key over a digest stays valid, so a digest that
//! was verified in a repository of a registry under the same set of keys is
//! not fetched again. The tag-to-digest question is asked of the registry
//! on every run, so a re-pointed tag is always checked anew.
//!
//! Signing ([`Signer`]): every image `ensure` pushes or copies, and every
//! index `tag` writes, gets a signature in each registry, appended to the
//! signatures already there; pushed images also get a signed SLSA
//! provenance attestation ([`provenance`]). Copies carry both along
//! ([`copy_signatures`]).

pub mod provenance;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::ctx::Ctx;
use crate::env::Env;
use crate::publish::client::Client;
use crate::sigstore::{self, Layer, Policy, SigningKey};
use crate::util::par_io;

/// How many signature checks run at once.
const IN_FLIGHT: usize = 16;

/// Why a published tag is not trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The registry holds no signature of the digest.
    NoSignature,
    /// A signature is there but malformed, or about other content.
    BadSignature(String),
    /// Well-formed signatures of the digest, none by a trusted key (or
    /// altered after signing: the two cannot be told apart).
    UnknownKey,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NoSignature => f.write_str("no signature"),
            Reason::BadSignature(why) => write!(f, "bad signature: {why}"),
            Reason::UnknownKey => f.write_str("unknown key (signed by no trusted key, or the signature was altered)"),
        }
    }
}

/// A published tag that the trust policy does not accept.
#[derive(Clone, Debug)]
pub struct Untrusted {
    pub image: String,
    /// The registry's url (as configured).
    pub registry: String,
    /// `host/repository:tag`.
    pub reference: String,
    pub digest: String,
    pub reason: Reason,
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: untrusted: {} ({}) in registry {}: {}",
            self.image, self.reference, self.digest, self.registry, self.reason
        )
    }
}

/// Check the digest that `repository` of `client`'s registry holds under a
/// tag: the id of the trusted key that signed it, or why none did. An
/// error only when the registry could not be asked.
pub fn verify(client: &Client, repository: &str, digest: &str, policy: &Policy) -> Result<Result<String, Reason>> {
    let Some(m) = client.get_manifest(repository, &sigstore::signature_tag(digest))? else {
        return Ok(Err(Reason::NoSignature));
    };
    let layers = match descriptors(&m.bytes) {
        Ok(l) => l,
        Err(e) => return Ok(Err(Reason::BadSignature(format!("{}: {e:#}", sigstore::signature_tag(digest))))),
    };
    let mut bad = None;
    let mut well_formed = false;
    // The payload a signature made in this repository has (mzbuild's and
    // cosign's are byte for byte the same): when a layer is that, it need
    // not be fetched.
    let expected = sigstore::simple_signing(&format!("{}/{repository}", client.registry.host()), digest);
    let expected_digest = sigstore::sha256(&expected);
    for d in layers.iter().filter(|d| d["mediaType"].as_str() == Some(sigstore::SIMPLE_SIGNING)) {
        let layer_digest = d["digest"].as_str().unwrap_or("");
        let payload = if layer_digest == expected_digest {
            expected.clone()
        } else {
            client.get_blob(repository, layer_digest)?
        };
        match check_layer(d, &payload, digest) {
            Err(why) => bad = Some(why),
            Ok(sig) => {
                if let Some(k) = policy.signer(&payload, &sig) {
                    return Ok(Ok(k.id()));
                }
                well_formed = true;
            }
        }
    }
    Ok(Err(match (well_formed, bad) {
        (true, _) => Reason::UnknownKey,
        (false, Some(why)) => Reason::BadSignature(why),
        (false, None) => Reason::BadSignature("the signature manifest holds no cosign signature".into()),
    }))
}

/// A signature layer's signature, when the layer is well-formed and signs
/// `digest`.
fn check_layer(descriptor: &Value, payload: &[u8], digest: &str) -> std::result::Result<Vec<u8>, String> {
    if descriptor["digest"].as_str() != Some(sigstore::sha256(payload).as_str()) {
        return Err("its payload does not hash to its digest".into());
    }
    let signed = sigstore::signed_digest(payload).map_err(|e| format!("{e:#}"))?;
    if signed != digest {
        return Err(format!("it signs {signed}, not the tag's {digest}"));
    }
    let sig = match descriptor["annotations"][sigstore::SIGNATURE_ANNOTATION].as_str() {
        Some(s) if !s.is_empty() => sigstore::unb64(s).map_err(|_| "its signature annotation is not base64")?,
        _ => return Err("it carries no signature annotation".into()),
    };
    // An ECDSA signature is a DER SEQUENCE of two INTEGERs.
    if sig.len() < 8 || sig[0] != 0x30 || usize::from(sig[1]) != sig.len() - 2 {
        return Err("its signature is not a DER-encoded ECDSA signature".into());
    }
    Ok(sig)
}

/// The layer descriptors of a `.sig` or `.att` manifest.
fn descriptors(manifest: &[u8]) -> Result<Vec<Value>> {
    let v: Value = serde_json::from_slice(manifest).context("the manifest is not JSON")?;
    match v["layers"].as_array() {
        Some(l) => Ok(l.clone()),
        None => bail!("the manifest has no layers"),
    }
}

/// The verdicts already established, per work tree: `(policy, host/repository,
/// digest)` that a trusted key signed.
pub struct Verified {
    path: Option<PathBuf>,
    known: Mutex<BTreeSet<(String, String, String)>>,
    loaded: usize,
}

const MAGIC: &[u8] = b"mzbuild trusted digests v1\n";

impl Verified {
    /// The cache of this work tree (an empty one with `--no-cache`).
    pub fn load(ctx: &Ctx) -> Verified {
        if !ctx.repo.tree.caching {
            return Verified { path: None, known: Mutex::default(), loaded: 0 };
        }
        let path = crate::cachefile::dir(&ctx.repo.tree.git.git_dir).join("trusted");
        let mut known = BTreeSet::new();
        if let Some(bytes) = crate::cachefile::read(&path, MAGIC) {
            let entries = crate::cachefile::Dec::open(&bytes, MAGIC).and_then(|mut d| d.strings());
            if let Ok(list) = entries {
                for triple in list.chunks_exact(3) {
                    known.insert((triple[0].clone(), triple[1].clone(), triple[2].clone()));
                }
            }
        }
        let loaded = known.len();
        Verified { path: Some(path), known: Mutex::new(known), loaded }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(String, String, String)>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn contains(&self, key: &(String, String, String)) -> bool {
        self.lock().contains(key)
    }

    fn insert(&self, key: (String, String, String)) {
        self.lock().insert(key);
    }

    /// Write the cache back, when it learnt something.
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        let known = self.lock();
        if known.len() == self.loaded {
            return;
        }
        let mut enc = crate::cachefile::Enc::new(MAGIC);
        let flat: Vec<&str> = known.iter().flat_map(|(a, b, c)| [a.as_str(), b.as_str(), c.as_str()]).collect();
        enc.strings(flat.into_iter());
        // A cache that cannot be written costs the next run some requests.
        let _ = crate::cachefile::write_atomic(path, &enc.finish());
    }
}

/// Check every `(image, tag, digests held per registry)` against `policy`,
/// in parallel: the published tags it does not accept.
pub fn check(
    ctx: &Ctx,
    clients: &[Client],
    policy: &Policy,
    held: &[(&str, String, &crate::plan::Held)],
) -> Result<Vec<Untrusted>> {
    let verified = Verified::load(ctx);
    let policy_id = policy.id();
    let mut tasks = vec![];
    for (name, tag, h) in held {
        for (r, digest) in h.iter().enumerate() {
            if let (Some(d), Some(c)) = (digest, clients.get(r)) {
                tasks.push((*name, tag.as_str(), r, c.registry.repository(&ctx.naming.prefix, name), d.as_str()));
            }
        }
    }
    let results = par_io(&tasks, IN_FLIGHT, |(name, tag, r, repository, digest)| -> Result<Option<Untrusted>> {
        let client = &clients[*r];
        let key = (policy_id.clone(), format!("{}/{repository}", client.registry.host()), digest.to_string());
        if verified.contains(&key) {
            return Ok(None);
        }
        match verify(client, repository, digest, policy)? {
            Ok(_) => {
                verified.insert(key);
                Ok(None)
            }
            Err(reason) => Ok(Some(Untrusted {
                image: name.to_string(),
                registry: client.registry.url.clone(),
                reference: format!("{}/{repository}:{tag}", client.registry.host()),
                digest: digest.to_string(),
                reason,
            })),
        }
    });
    verified.save();
    let mut out = vec![];
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// Report `untrusted` as errors, with what to do about them.
pub fn report(ctx: &Ctx, untrusted: &[Untrusted], nothing_done: &str) {
    for u in untrusted {
        crate::ui::error(format_args!("{u}"));
    }
    let names: BTreeSet<&str> = untrusted.iter().map(|u| u.image.as_str()).collect();
    crate::ui::error(format_args!(
        "{} untrusted under the trust policy ({nothing_done}): inspect what each tag holds; if it is what it \
         should be, sign it with {} (a signing key in the environment), else delete the tag from that registry \
         and run again",
        if untrusted.len() == 1 {
            "1 published tag is".to_string()
        } else {
            format!("{} published tags are", untrusted.len())
        },
        ctx.hint(&format!("sign {}", names.into_iter().collect::<Vec<_>>().join(" ")))
    ));
}

/// The signing key of `[workspace.metadata.mzbuild] signing`, read from
/// the environment (the key and its password never leave this process).
pub struct Signer {
    pub key: SigningKey,
    /// `$VAR`, for messages.
    pub source: String,
}

impl Signer {
    /// The configured signing key; `None` when none is configured. An
    /// error when one is configured and its variable is unset, or the key
    /// does not open.
    pub fn load(ctx: &Ctx) -> Result<Option<Signer>> {
        let Some(s) = &ctx.repo.workspace.signing else { return Ok(None) };
        Signer::from_env(ctx.env.as_ref(), &s.key_env, s.password_env.as_deref()).map(Some)
    }

    /// The key in `$key_env`, opened with the password in `$password_env`.
    pub fn from_env(env: &dyn Env, key_env: &str, password_env: Option<&str>) -> Result<Signer> {
        let pem = env.non_empty(key_env).ok_or_else(|| {
            anyhow!(
                "signing: the environment variable {key_env} (the cosign private key, PEM) is not set: export it \
                 (a CI secret), or remove `signing` from Cargo.toml [workspace.metadata.mzbuild]"
            )
        })?;
        let password = match password_env {
            Some(var) => Some(env.var(var).ok_or_else(|| {
                anyhow!("signing: the environment variable {var} (the password of the key in ${key_env}) is not set: export it")
            })?),
            None => None,
        };
        let key = SigningKey::from_pem(&pem, password.as_deref())
            .map_err(|e| anyhow!("signing: the key in ${key_env}: {e:#}"))?;
        Ok(Signer { key, source: format!("${key_env}") })
    }

    /// Sign `digest` in `repository` (appended to the signatures there;
    /// nothing is written when this key signed it already). Whether a
    /// signature was added.
    pub fn sign(&self, client: &Client, repository: &str, digest: &str) -> Result<bool> {
        let identity = format!("{}/{repository}", client.registry.host());
        let payload = sigstore::simple_signing(&identity, digest);
        let tag = sigstore::signature_tag(digest);
        let existing = existing_layers(client, repository, &tag)?;
        let ours = sigstore::sha256(&payload);
        for d in &existing {
            if d["digest"].as_str() == Some(ours.as_str()) {
                if let Ok(sig) = check_layer(d, &payload, digest) {
                    if self.key.public().verifies(&payload, &sig) {
                        return Ok(false);
                    }
                }
            }
        }
        let sig = self.key.sign(&payload)?;
        append(client, repository, &tag, existing, &[Layer::signature(payload, &sig)])
            .with_context(|| format!("signing {identity}@{digest} in registry {}", client.registry.url))?;
        Ok(true)
    }

    /// Attach `statement` (an in-toto statement about `digest` with a SLSA
    /// provenance predicate) as a signed attestation, unless this key
    /// attested `digest` already.
    pub fn attest(&self, client: &Client, repository: &str, digest: &str, statement: &[u8]) -> Result<bool> {
        let tag = sigstore::attestation_tag(digest);
        let existing = existing_layers(client, repository, &tag)?;
        let policy = Policy { keys: vec![(self.source.clone(), self.key.public().clone())] };
        for d in existing.iter().filter(|d| d["mediaType"].as_str() == Some(sigstore::DSSE)) {
            let blob = client.get_blob(repository, d["digest"].as_str().unwrap_or(""))?;
            let env: Option<sigstore::Envelope> = serde_json::from_slice(&blob).ok();
            if env.is_some_and(|e| e.verified(&policy).is_ok()) {
                return Ok(false);
            }
        }
        let envelope = sigstore::Envelope::sign(statement, &self.key)?;
        let layer = Layer::attestation(&envelope, sigstore::SLSA_PROVENANCE_V1);
        append(client, repository, &tag, existing, &[layer]).with_context(|| {
            format!(
                "attaching the provenance of {}/{repository}@{digest} in registry {}",
                client.registry.host(),
                client.registry.url
            )
        })?;
        Ok(true)
    }
}

/// The layer descriptors under `tag`, or none.
fn existing_layers(client: &Client, repository: &str, tag: &str) -> Result<Vec<Value>> {
    match client.get_manifest(repository, tag)? {
        Some(m) => descriptors(&m.bytes).with_context(|| format!("{repository}:{tag}")),
        None => Ok(vec![]),
    }
}

/// Write `tag` as a manifest of `existing` layers (already in the
/// repository) and `new` ones (uploaded first), with its config.
fn append(client: &Client, repository: &str, tag: &str, existing: Vec<Value>, new: &[Layer]) -> Result<()> {
    let mut all = existing;
    for layer in new {
        let digest = layer.digest();
        if !client.blob_exists(repository, &digest)? {
            client.upload_blob(repository, &digest, &layer.bytes)?;
        }
        all.push(layer.descriptor());
    }
    put_manifest(client, repository, tag, &all)
}

fn put_manifest(client: &Client, repository: &str, tag: &str, layers: &[Value]) -> Result<()> {
    let digests: Vec<String> = layers.iter().map(|d| d["digest"].as_str().unwrap_or("").to_string()).collect();
    let config = sigstore::config_blob(&digests);
    let config_digest = sigstore::sha256(&config);
    if !client.blob_exists(repository, &config_digest)? {
        client.upload_blob(repository, &config_digest, &config)?;
    }
    client.put_manifest(repository, tag, sigstore::OCI_MANIFEST, &sigstore::manifest(&config, layers))?;
    Ok(())
}

/// Copy the signatures and attestations of `digest` from one repository to
/// another (of the same or another registry), merged with any the target
/// has: a copied image can be verified in its new registry alone. How many
/// layers were added.
pub fn copy_signatures(from: (&Client, &str), to: (&Client, &str), digest: &str) -> Result<usize> {
    let mut added = 0;
    for tag in [sigstore::signature_tag(digest), sigstore::attestation_tag(digest)] {
        let source = existing_layers(from.0, from.1, &tag)?;
        if source.is_empty() {
            continue;
        }
        let mut target = existing_layers(to.0, to.1, &tag)?;
        let have: BTreeSet<String> = target.iter().map(|d| d.to_string()).collect();
        let new: Vec<Value> = source.into_iter().filter(|d| !have.contains(&d.to_string())).collect();
        if new.is_empty() {
            continue;
        }
        for d in &new {
            let digest = d["digest"].as_str().unwrap_or("");
            if !to.0.blob_exists(to.1, digest)? {
                let bytes = from.0.get_blob(from.1, digest)?;
                if sigstore::sha256(&bytes) != digest {
                    bail!("{}:{tag}: a layer does not hash to its digest {digest}", from.1);
                }
                to.0.upload_blob(to.1, digest, &bytes)?;
            }
        }
        added += new.len();
        target.extend(new);
        put_manifest(to.0, to.1, &tag, &target)
            .with_context(|| format!("copying {tag} to registry {}", to.0.registry.url))?;
    }
    Ok(added)
}

/// The verified provenance statement of `digest` in `repository`: the
/// payload of the first attestation a key of `policy` signed.
pub fn verified_statement(client: &Client, repository: &str, digest: &str, policy: &Policy) -> Result<Value> {
    let tag = sigstore::attestation_tag(digest);
    let layers = existing_layers(client, repository, &tag)?;
    if layers.is_empty() {
        bail!("{}/{repository}@{digest} has no attestation (no {tag} tag)", client.registry.host());
    }
    for d in layers.iter().filter(|d| d["mediaType"].as_str() == Some(sigstore::DSSE)) {
        let blob = client.get_blob(repository, d["digest"].as_str().unwrap_or(""))?;
        let Ok(env) = serde_json::from_slice::<sigstore::Envelope>(&blob) else { continue };
        let Ok(payload) = env.verified(policy) else { continue };
        let statement: Value = serde_json::from_slice(&payload).context("the attested statement is not JSON")?;
        let subject_ok = statement["subject"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["digest"]["sha256"].as_str() == digest.strip_prefix("sha256:")));
        if subject_ok {
            return Ok(statement);
        }
    }
    bail!("{}/{repository}@{digest}: no attestation of it is signed by a trusted key", client.registry.host())
}

/// [`check`] for the current tags of `images` (what `published` says each
/// registry holds).
pub fn check_published(
    ctx: &Ctx,
    clients: &[Client],
    policy: &Policy,
    images: &[&crate::discover::Image],
    fps: &std::collections::BTreeMap<String, crate::fingerprint::Fingerprinted>,
    published: &std::collections::BTreeMap<String, crate::plan::Held>,
) -> Result<Vec<Untrusted>> {
    let held: Vec<(&str, String, &crate::plan::Held)> = images
        .iter()
        .filter_map(|i| Some((i.name.as_str(), fps[&i.name].fingerprint.tag(), published.get(&i.name)?)))
        .collect();
    check(ctx, clients, policy, &held)
}

/// What to sign after a run published it: an image, the registries (by
/// index) it went to, and whether it was built here (and gets the
/// provenance attestation) rather than copied.
pub struct Published<'a> {
    pub image: &'a crate::discover::Image,
    pub registries: Vec<usize>,
    pub built: bool,
}

/// Sign every image in `published` in the registries it went to (and
/// attest the provenance of those built here): per image, the first
/// error. The digests are asked of the registries, which hold the truth.
pub fn sign_all(
    ctx: &Ctx,
    clients: &[Client],
    signer: &Signer,
    fps: &std::collections::BTreeMap<String, crate::fingerprint::Fingerprinted>,
    published: &[Published<'_>],
) -> std::collections::BTreeMap<String, String> {
    let mut errors = std::collections::BTreeMap::new();
    if published.is_empty() {
        return errors;
    }
    let result = (|| -> Result<()> {
        // The images signed and their dependencies: the digests the
        // provenance names.
        let names: Vec<String> = published.iter().map(|p| p.image.name.clone()).collect();
        let closure = ctx.repo.resolve(&names)?;
        let tags: Vec<(&str, String)> = closure
            .iter()
            .filter(|i| i.config.publish)
            .map(|i| (i.name.as_str(), fps[&i.name].fingerprint.tag()))
            .collect();
        let held = crate::publish::held_by(ctx, clients, &tags)?;
        let computed = if published.iter().any(|p| p.built) {
            Some(crate::fingerprint::compute(&ctx.repo, &closure, &ctx.settings)?)
        } else {
            None
        };
        let revision = crate::git::GitRepo::open(ctx.repo.root()).resolve_commit("HEAD").ok();
        let settings = ctx.settings.fingerprint_string();
        // Each image this run built: its log says which digest each base
        // image resolved to (read once, whatever the registries).
        let bases: std::collections::BTreeMap<&str, std::collections::BTreeMap<String, String>> = published
            .iter()
            .filter(|p| p.built)
            .map(|p| {
                let log = crate::docker::log_dir(ctx.repo.root())
                    .ok()
                    .and_then(|d| std::fs::read_to_string(d.join(format!("{}.log", p.image.name))).ok())
                    .unwrap_or_default();
                (p.image.name.as_str(), provenance::resolved_bases(&log, &provenance::base_images(&p.image.dockerfile)))
            })
            .collect();
        let tasks: Vec<(&Published<'_>, usize)> =
            published.iter().flat_map(|p| p.registries.iter().map(move |r| (p, *r))).collect();
        let results = par_io(&tasks, IN_FLIGHT, |(p, r)| -> Result<()> {
            let name = &p.image.name;
            let client = &clients[*r];
            let repository = client.registry.repository(&ctx.naming.prefix, name);
            let digest = held.get(name).and_then(|h| h.get(*r).cloned().flatten()).ok_or_else(|| {
                anyhow!("{}/{repository}: the tag is not there to sign (deleted meanwhile?)", client.registry.host())
            })?;
            signer.sign(client, &repository, &digest)?;
            if let (true, Some(computed)) = (p.built, &computed) {
                let fp = fps[name].fingerprint;
                let dependencies = p
                    .image
                    .depends_on
                    .iter()
                    .map(|d| {
                        let spec =
                            ctx.naming.registries[*r].reference(&ctx.naming.prefix, d, &fps[d].fingerprint.tag());
                        (d.clone(), (spec, held.get(d).and_then(|h| h.get(*r).cloned().flatten())))
                    })
                    .collect();
                let subject_name = format!("{}/{repository}", client.registry.host());
                let spec = ctx.naming.spec(name, &fp);
                let fingerprint = fp.to_string();
                let subject = provenance::Subject {
                    image: p.image,
                    name: &subject_name,
                    digest: &digest,
                    spec: &spec,
                    fingerprint: &fingerprint,
                    revision: revision.as_deref(),
                    dependencies: &dependencies,
                    bases: &bases[name.as_str()],
                };
                let statement = provenance::statement(computed, &settings, &subject);
                signer.attest(client, &repository, &digest, &statement)?;
            }
            Ok(())
        });
        for ((p, _), r) in tasks.iter().zip(results) {
            if let Err(e) = r {
                errors.entry(p.image.name.clone()).or_insert_with(|| format!("signing failed: {e:#}"));
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        for p in published {
            errors.entry(p.image.name.clone()).or_insert_with(|| format!("signing failed: {e:#}"));
        }
    }
    errors
}

/// [`check`] for what copies would read: each copy step's tag in its
/// source registry (the registries it overwrites are not read).
pub fn check_copy_sources(
    ctx: &Ctx,
    clients: &[Client],
    policy: &Policy,
    steps: &[&crate::plan::Step<'_>],
    published: &std::collections::BTreeMap<String, crate::plan::Held>,
) -> Result<Vec<Untrusted>> {
    let mut sources: Vec<(&str, String, crate::plan::Held)> = vec![];
    for s in steps {
        let crate::plan::Action::Copy { from, .. } = &s.action else { continue };
        let Some(h) = published.get(&s.image.name) else { continue };
        let mut only = vec![None; h.len()];
        only[*from] = h[*from].clone();
        sources.push((s.image.name.as_str(), s.fingerprint.tag(), only));
    }
    let held: Vec<(&str, String, &crate::plan::Held)> = sources.iter().map(|(n, t, h)| (*n, t.clone(), h)).collect();
    check(ctx, clients, policy, &held)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    /// A signature layer's descriptor over `payload`, with `sig` (base64)
    /// as its annotation.
    fn descriptor(payload: &[u8], sig: Option<&str>) -> Value {
        let mut d = serde_json::json!({ "mediaType": sigstore::SIMPLE_SIGNING, "digest": sigstore::sha256(payload) });
        if let Some(s) = sig {
            d["annotations"] = serde_json::json!({ (sigstore::SIGNATURE_ANNOTATION): s });
        }
        d
    }

    #[test]
    fn malformed_or_misplaced_signatures_are_bad_ones() {
        let key = SigningKey::from_pem(&SigningKey::generate_pem().unwrap(), None).unwrap();
        let payload = sigstore::simple_signing("r/x", A);
        let sig = sigstore::b64(&key.sign(&payload).unwrap());
        let ok = check_layer(&descriptor(&payload, Some(&sig)), &payload, A).unwrap();
        assert!(key.public().verifies(&payload, &ok));
        // A signature moved from another image's tag.
        let e = check_layer(&descriptor(&payload, Some(&sig)), &payload, B).unwrap_err();
        assert_eq!(e, format!("it signs {A}, not the tag's {B}"));
        // A payload swapped under its descriptor.
        let other = sigstore::simple_signing("r/y", A);
        assert_eq!(
            check_layer(&descriptor(&payload, Some(&sig)), &other, A).unwrap_err(),
            "its payload does not hash to its digest"
        );
        assert_eq!(
            check_layer(&descriptor(&payload, None), &payload, A).unwrap_err(),
            "it carries no signature annotation"
        );
        let e = check_layer(&descriptor(&payload, Some(&sigstore::b64(b"not DER at all"))), &payload, A).unwrap_err();
        assert!(e.contains("not a DER-encoded ECDSA signature"), "{e}");
        let e = check_layer(&descriptor(b"{}", Some(&sig)), b"{}", A).unwrap_err();
        assert!(e.contains("not a cosign container image signature"), "{e}");
    }

    #[test]
    fn reasons_read_as_the_issue_names_them() {
        assert_eq!(Reason::NoSignature.to_string(), "no signature");
        assert_eq!(Reason::BadSignature("x".into()).to_string(), "bad signature: x");
        assert!(Reason::UnknownKey.to_string().starts_with("unknown key"));
    }
}
