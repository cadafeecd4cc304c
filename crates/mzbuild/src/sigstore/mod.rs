//! Sigstore's formats, as `cosign` writes and reads them, and the crypto
//! behind them, natively: no `cosign` binary is needed to sign or to check
//! a signature, the private key never leaves this process (no child, file
//! or argument sees it), and checking a signature costs a few microseconds
//! rather than a process.
//!
//! - [`keys`]: cosign's key pairs (`cosign generate-key-pair`), ECDSA P-256.
//! - Signatures: under the tag `sha256-<hex>.sig` of the signed image's
//!   repository, an OCI manifest with one layer per signature; each layer a
//!   "simple signing" payload naming the digest ([`simple_signing`]), with
//!   the base64 DER signature of its bytes in the annotation
//!   [`SIGNATURE_ANNOTATION`].
//! - Attestations: under `sha256-<hex>.att`, layers that are DSSE envelopes
//!   ([`Envelope`]) of in-toto statements, signed over DSSE's
//!   pre-authentication encoding ([`pae`]).
//!
//! A [`Policy`] is the set of keys a repository trusts.

pub mod keys;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use keys::{PublicKey, SigningKey};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";

/// The keys whose signatures a repository trusts, each with where it came
/// from (a path), for messages.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub keys: Vec<(String, PublicKey)>,
}

impl Policy {
    /// The trusted key that made `sig` over `message`, if any.
    pub fn signer(&self, message: &[u8], sig: &[u8]) -> Option<&PublicKey> {
        self.keys.iter().map(|(_, k)| k).find(|k| k.verifies(message, sig))
    }

    /// The ids of the keys, sorted: what a cached verdict is valid for.
    pub fn id(&self) -> String {
        let mut ids: Vec<String> = self.keys.iter().map(|(_, k)| k.id()).collect();
        ids.sort();
        ids.join(",")
    }
}

/// The tag that holds the signatures of `digest` (`sha256:<hex>`).
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// The tag that holds the attestations of `digest`.
pub fn attestation_tag(digest: &str) -> String {
    format!("{}.att", digest.replacen(':', "-", 1))
}

/// The simple-signing payload that a signature of `digest`, published in
/// `repository` (`host/path`, no tag), signs; byte for byte as cosign
/// writes it.
pub fn simple_signing(repository: &str, digest: &str) -> Vec<u8> {
    let v = json!({
        "critical": {
            "identity": { "docker-reference": repository },
            "image": { "docker-manifest-digest": digest },
            "type": "cosign container image signature",
        },
        "optional": null,
    });
    serde_json::to_vec(&v).expect("JSON values serialise")
}

/// The digest a simple-signing payload names, if it is one.
pub fn signed_digest(payload: &[u8]) -> Result<String> {
    let v: Value = serde_json::from_slice(payload).context("the payload is not JSON")?;
    if v["critical"]["type"].as_str() != Some("cosign container image signature") {
        bail!("the payload is not a cosign container image signature");
    }
    v["critical"]["image"]["docker-manifest-digest"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the payload names no digest"))
}

/// DSSE's pre-authentication encoding: what an envelope's signatures sign.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload_type: String,
    /// Base64.
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    #[serde(default)]
    pub keyid: String,
    /// Base64 DER.
    pub sig: String,
}

impl Envelope {
    /// `statement` (an in-toto statement), signed by `key`.
    pub fn sign(statement: &[u8], key: &SigningKey) -> Result<Envelope> {
        let sig = key.sign(&pae(IN_TOTO, statement))?;
        Ok(Envelope {
            payload_type: IN_TOTO.into(),
            payload: b64(statement),
            signatures: vec![EnvelopeSignature { keyid: String::new(), sig: b64(&sig) }],
        })
    }

    /// The statement, when a key of `policy` signed it.
    pub fn verified(&self, policy: &Policy) -> Result<Vec<u8>> {
        let payload = unb64(&self.payload).context("the envelope's payload is not base64")?;
        let signed = pae(&self.payload_type, &payload);
        for s in &self.signatures {
            let Ok(sig) = unb64(&s.sig) else { continue };
            if policy.signer(&signed, &sig).is_some() {
                return Ok(payload);
            }
        }
        bail!("no signature of the envelope is by a trusted key")
    }
}

/// One layer of a `.sig` or `.att` manifest: its descriptor and its bytes.
#[derive(Clone, Debug)]
pub struct Layer {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub annotations: serde_json::Map<String, Value>,
}

impl Layer {
    pub fn digest(&self) -> String {
        sha256(&self.bytes)
    }

    /// The descriptor of this layer in a manifest.
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "size": self.bytes.len(),
            "digest": self.digest(),
            "annotations": self.annotations,
        })
    }

    /// A signature layer: `payload` and its signature.
    pub fn signature(payload: Vec<u8>, sig: &[u8]) -> Layer {
        let mut annotations = serde_json::Map::new();
        annotations.insert(SIGNATURE_ANNOTATION.into(), Value::String(b64(sig)));
        Layer { media_type: SIMPLE_SIGNING.into(), bytes: payload, annotations }
    }

    /// An attestation layer: a signed envelope of a statement of
    /// `predicate_type`.
    pub fn attestation(envelope: &Envelope, predicate_type: &str) -> Layer {
        let mut annotations = serde_json::Map::new();
        annotations.insert(SIGNATURE_ANNOTATION.into(), Value::String(String::new()));
        annotations.insert("predicateType".into(), Value::String(predicate_type.into()));
        let bytes = serde_json::to_vec(envelope).expect("envelopes serialise");
        Layer { media_type: DSSE.into(), bytes, annotations }
    }
}

/// The config blob of a `.sig`/`.att` manifest with these layers, as cosign
/// writes it (an empty image whose layers are the signatures).
pub fn config_blob(layer_digests: &[String]) -> Vec<u8> {
    // Written out, to keep cosign's key order.
    let diff_ids = serde_json::to_string(layer_digests).expect("strings serialise");
    format!(
        "{{\"architecture\":\"\",\"created\":\"0001-01-01T00:00:00Z\",\"history\":[{{\"created\":\"0001-01-01T00:00:00Z\"}}],\
         \"os\":\"\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":{diff_ids}}},\"config\":{{}}}}"
    )
    .into_bytes()
}

/// The manifest of a `.sig`/`.att` tag: `config` (its bytes) and the
/// descriptors of its layers.
pub fn manifest(config: &[u8], layers: &[Value]) -> Vec<u8> {
    let v = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "size": config.len(), "digest": sha256(config) },
        "layers": layers,
    });
    serde_json::to_vec(&v).expect("JSON values serialise")
}

pub fn sha256(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    format!("sha256:{}", d.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(s: &str) -> Result<Vec<u8>> {
    Ok(base64::engine::general_purpose::STANDARD.decode(s.trim())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_cosigns() {
        // The payload `cosign sign` wrote for this image, byte for byte.
        let digest = "sha256:b7858c47f267813c75a5ed3e1a9a18f0d030f896df2437e33a09f7943c22c562";
        let payload = simple_signing("127.0.0.1:5000/trustscratch/x", digest);
        assert_eq!(String::from_utf8(payload.clone()).unwrap(), include_str!("testdata/payload.json"));
        assert_eq!(signed_digest(&payload).unwrap(), digest);
        assert_eq!(signature_tag(digest), format!("sha256-{}.sig", &digest[7..]));
        assert_eq!(pae("t", b"ab"), b"DSSEv1 1 t 2 ab");
        // cosign's config for a one-layer signature manifest (233 bytes).
        let layer = "sha256:cfaedfca334ce528a9517c80a5b700f891d54bc5f0367af420fb9bcf107cae3c";
        assert_eq!(
            sha256(&config_blob(&[layer.into()])),
            "sha256:996749489eae1e47a7235c524ce8d7390b896d8db3fd3193ad64cf0e95966201"
        );
    }

    #[test]
    fn envelopes_verify_only_with_a_trusted_key() {
        let key = SigningKey::from_pem(include_str!("testdata/cosign.key"), Some("pw")).unwrap();
        let policy = Policy { keys: vec![("k".into(), key.public().clone())] };
        let env = Envelope::sign(b"{\"a\":1}", &key).unwrap();
        assert_eq!(env.verified(&policy).unwrap(), b"{\"a\":1}");
        let mut tampered = env.clone();
        tampered.payload = b64(b"{\"a\":2}");
        assert!(tampered.verified(&policy).is_err());
        assert!(env.verified(&Policy::default()).is_err());
    }
}
