//! Keys as `cosign generate-key-pair` writes them: the public key a PEM
//! `PUBLIC KEY` (an ECDSA P-256 SubjectPublicKeyInfo), the private key an
//! `ENCRYPTED SIGSTORE PRIVATE KEY`: base64 of a JSON envelope whose
//! ciphertext is the PKCS#8 key sealed with NaCl's secretbox
//! (XSalsa20-Poly1305) under a key that scrypt derives from the password.
//! An unencrypted PKCS#8 `PRIVATE KEY` (e.g. from `openssl genpkey`) is
//! accepted too. Signatures are ECDSA P-256 over SHA-256, DER-encoded, as
//! cosign makes and checks them.

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use ring::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};

/// The DER prefix of every P-256 SubjectPublicKeyInfo with an uncompressed
/// point: SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A public key that signatures are checked with.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The uncompressed point (65 bytes).
    point: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

impl PublicKey {
    /// A `-----BEGIN PUBLIC KEY-----` PEM, as `cosign generate-key-pair`
    /// writes `cosign.pub`.
    pub fn from_pem(text: &str) -> Result<PublicKey> {
        let der = pem_block(text, &["PUBLIC KEY"])?.1;
        PublicKey::from_spki(&der)
    }

    fn from_spki(der: &[u8]) -> Result<PublicKey> {
        match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            Some(point) if point.len() == 65 && point[0] == 4 => Ok(PublicKey { point: point.to_vec() }),
            _ => bail!("not an ECDSA P-256 public key (cosign's default kind, the only one mzbuild checks)"),
        }
    }

    /// The key as a SubjectPublicKeyInfo (DER).
    pub fn spki(&self) -> Vec<u8> {
        [&P256_SPKI_PREFIX[..], &self.point].concat()
    }

    /// The key as PEM.
    pub fn to_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki())
    }

    /// A short name for messages and caches: the first 16 hex digits of
    /// the SHA-256 of the key's DER.
    pub fn id(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.spki());
        d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `sig` (DER) is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.point).verify(message, sig).is_ok()
    }
}

/// A private key, held in memory only. Never printed: Debug shows the
/// public key's id.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(<redacted>, public {})", self.public.id())
    }
}

impl SigningKey {
    /// A private key from its PEM text: cosign's encrypted one (which needs
    /// `password`), or an unencrypted PKCS#8 `PRIVATE KEY`.
    pub fn from_pem(text: &str, password: Option<&str>) -> Result<SigningKey> {
        let (label, der) =
            pem_block(text, &["ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY", "PRIVATE KEY"])?;
        let pkcs8 = if label == "PRIVATE KEY" {
            der
        } else {
            let password = password.ok_or_else(|| anyhow!("the key is encrypted, and no password was given"))?;
            decrypt(&der, password)?
        };
        SigningKey::from_pkcs8(&pkcs8)
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey> {
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng)
            .map_err(|e| anyhow!("not an ECDSA P-256 private key in PKCS#8 form ({e})"))?;
        let public = PublicKey { point: pair.public_key().as_ref().to_vec() };
        Ok(SigningKey { pair, public })
    }

    /// A new private key, as an unencrypted PKCS#8 PEM (for benchmarks and
    /// tests; real keys come from `cosign generate-key-pair`).
    pub fn generate_pem() -> Result<String> {
        let rng = ring::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| anyhow!("generating a key failed"))?;
        Ok(pem("PRIVATE KEY", doc.as_ref()))
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The signature (DER) of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let rng = ring::rand::SystemRandom::new();
        let sig = self.pair.sign(&rng, message).map_err(|_| anyhow!("signing failed"))?;
        Ok(sig.as_ref().to_vec())
    }
}

/// The JSON envelope of an encrypted key.
#[derive(serde::Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(serde::Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    salt: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
struct KdfParams {
    n: u64,
    #[serde(rename = "r")]
    r: u32,
    #[serde(rename = "p")]
    p: u32,
}

#[derive(serde::Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

/// Open cosign's encrypted key envelope (`der`: the PEM block's bytes).
fn decrypt(envelope: &[u8], password: &str) -> Result<Vec<u8>> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    let b64 = base64::engine::general_purpose::STANDARD;
    let env: Envelope = serde_json::from_slice(envelope).context("the encrypted key's envelope is not valid")?;
    if env.kdf.name != "scrypt" || env.cipher.name != "nacl/secretbox" {
        bail!(
            "the key is encrypted with {} and {}: mzbuild reads scrypt and nacl/secretbox (cosign's)",
            env.kdf.name,
            env.cipher.name
        );
    }
    let p = &env.kdf.params;
    if !p.n.is_power_of_two() || p.n < 2 || p.n > (1 << 22) {
        bail!("the key's scrypt parameter N = {} is not a power of two up to 2^22", p.n);
    }
    let params = scrypt::Params::new(p.n.trailing_zeros() as u8, p.r, p.p, 32)
        .map_err(|e| anyhow!("the key's scrypt parameters are not usable: {e}"))?;
    let salt = b64.decode(&env.kdf.salt).context("the key's salt is not base64")?;
    let nonce = b64.decode(&env.cipher.nonce).context("the key's nonce is not base64")?;
    let ciphertext = b64.decode(&env.ciphertext).context("the key's ciphertext is not base64")?;
    if nonce.len() != 24 {
        bail!("the key's nonce is {} bytes, not 24", nonce.len());
    }
    let mut key = [0u8; 32];
    scrypt::scrypt(password.as_bytes(), &salt, &params, &mut key).map_err(|e| anyhow!("scrypt: {e}"))?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    cipher
        .decrypt(crypto_secretbox::Nonce::from_slice(&nonce), ciphertext.as_slice())
        .map_err(|_| anyhow!("the password does not open the key (wrong password, or a damaged key)"))
}

/// `der` as a PEM block labelled `label`.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> =
        b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// The first PEM block with one of `labels`: its label and bytes.
fn pem_block(text: &str, labels: &[&str]) -> Result<(String, Vec<u8>)> {
    for label in labels {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let Some(start) = text.find(&begin) else { continue };
        let rest = &text[start + begin.len()..];
        let Some(stop) = rest.find(&end) else { bail!("the PEM block `{label}` has no END line") };
        let body: String = rest[..stop].split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| anyhow!("the PEM block `{label}` is not valid base64: {e}"))?;
        return Ok((label.to_string(), der));
    }
    bail!("no PEM block of the kind {} found", labels.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(" or "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by `COSIGN_PASSWORD=pw cosign generate-key-pair` (cosign 2.5).
    const COSIGN_KEY: &str = include_str!("testdata/cosign.key");
    const COSIGN_PUB: &str = include_str!("testdata/cosign.pub");
    /// A signature that `cosign sign` made with that key, and its payload.
    const COSIGN_PAYLOAD: &str = include_str!("testdata/payload.json");
    const COSIGN_SIG: &str =
        "MEUCIQDcb6SBDMjUgA2risMlqcvBDDA1U3IBeYIYMLalkJLZAwIgUq6YJz/oTwB9nCkBhw/FVW+7sh7eicp9Pf68E46y+RE=";

    #[test]
    fn cosign_keys_open_sign_and_verify() {
        let public = PublicKey::from_pem(COSIGN_PUB).unwrap();
        let sig = base64::engine::general_purpose::STANDARD.decode(COSIGN_SIG).unwrap();
        assert!(public.verifies(COSIGN_PAYLOAD.trim_end().as_bytes(), &sig), "cosign's own signature");
        assert!(!public.verifies(format!("{} ", COSIGN_PAYLOAD.trim_end()).as_bytes(), &sig));
        let key = SigningKey::from_pem(COSIGN_KEY, Some("pw")).unwrap();
        assert_eq!(key.public(), &public);
        let mine = key.sign(b"hello").unwrap();
        assert!(public.verifies(b"hello", &mine) && !public.verifies(b"hellO", &mine));
        assert_eq!(PublicKey::from_pem(&public.to_pem()).unwrap(), public);
        assert!(!format!("{key:?}").contains("BEGIN"));
        let e = SigningKey::from_pem(COSIGN_KEY, Some("wrong")).unwrap_err();
        assert!(e.to_string().contains("password does not open the key"), "{e}");
        let e = SigningKey::from_pem(COSIGN_KEY, None).unwrap_err();
        assert!(e.to_string().contains("no password"), "{e}");
        // An unencrypted PKCS#8 key needs no password.
        let fresh = SigningKey::from_pem(&SigningKey::generate_pem().unwrap(), None).unwrap();
        assert!(fresh.public().verifies(b"x", &fresh.sign(b"x").unwrap()));
        assert!(!public.verifies(b"x", &fresh.sign(b"x").unwrap()));
        let e = PublicKey::from_pem(COSIGN_KEY).unwrap_err();
        assert!(e.to_string().contains("no PEM block"), "{e}");
    }
}
