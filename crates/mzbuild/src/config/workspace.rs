//! The root `Cargo.toml`, read once: its `[workspace.metadata.mzbuild]`
//! table (publish targets, image rustflags, which cargo files count as
//! inputs) and the facts about the cargo workspace that builds need. The crate graph ([`super::crates`]) is built
//! from the same parsed manifest, on first use.
//!
//! The root `Cargo.toml` is an input of every cargo-build image, as in the
//! original, but its `[workspace.metadata.mzbuild]` table is not: where
//! images are published (registries, credentials, builders) must change no
//! tag. Fingerprints hash the file less that table ([`fingerprinted_bytes`]);
//! the table's keys that change what is built change fingerprints their own
//! way: `image-rustflags` as a word of each cargo-build pre-image,
//! `extra-cargo-inputs` and `path-dependencies` through the input files they
//! add. A file without the table (Materialize's) is hashed as it is.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use sha1::{Digest, Sha1};
use toml::Value;

use super::cache::CacheConfig;
use super::crates::PathDependencies;
use super::settings::Arch;
use super::ConfigError;
use crate::git::tree::Tree;

/// One publish target, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Registry {
    /// `host[:port]/path`, e.g. `ghcr.io/materializeinc/materialize`.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    /// Name of the environment variable that holds the user name.
    #[serde(default)]
    pub username_env: Option<String>,
    /// Name of the environment variable that holds the token or password.
    #[serde(default)]
    pub password_env: Option<String>,
}

impl Registry {
    /// A registry without credentials.
    pub fn anonymous(url: &str) -> Registry {
        Registry { url: url.to_string(), username: None, username_env: None, password_env: None }
    }

    /// The registry host (with port), as `docker login` wants it.
    pub fn host(&self) -> &str {
        self.url.split('/').next().unwrap_or(&self.url)
    }

    /// Repository path inside the registry for image `name`.
    pub fn repository(&self, prefix: &str, name: &str) -> String {
        match self.url.split_once('/') {
            Some((_, path)) => format!("{path}/{prefix}{name}"),
            // Docker Hub's official images live under `library/`.
            None if self.host() == "docker.io" => format!("library/{prefix}{name}"),
            None => format!("{prefix}{name}"),
        }
    }

    /// `<url>/<prefix><name>:<tag>`.
    pub fn reference(&self, prefix: &str, name: &str, tag: &str) -> String {
        format!("{}/{prefix}{name}:{tag}", self.url)
    }
}

/// The keys of `[workspace.metadata.mzbuild]`. The table is not hashed
/// (see the module doc): a new key that changes what is built must reach
/// the fingerprints of the images it affects itself, as `image-rustflags`
/// does through [`crate::preimage::cargo_build::extra`].
const METADATA_KEYS: &[&str] = &[
    "registries",
    "image-rustflags",
    "extra-cargo-inputs",
    "path-dependencies",
    "builders",
    "signing",
    "trust",
    "cache",
];

/// `[workspace.metadata.mzbuild] signing`: where the signing key comes
/// from. Only ever the environment: the names of the variables that hold
/// the key (PEM) and its password.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Signing {
    pub key_env: String,
    #[serde(default)]
    pub password_env: Option<String>,
}

/// `[workspace.metadata.mzbuild] trust`: the public keys whose signatures
/// make a published tag trusted (paths relative to the repository root).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Trust {
    pub keys: Vec<String>,
}

/// What the root `Cargo.toml` says, parsed once.
#[derive(Debug, Default, Clone)]
pub struct WorkspaceConfig {
    /// The root manifest, if the repository has one.
    pub manifest: Option<Value>,
    /// The content hash that fingerprints use for the root `Cargo.toml` in
    /// place of the file's own: SHA-1 of [`fingerprinted_bytes`], when the
    /// file has a `[workspace.metadata.mzbuild]` table.
    pub manifest_digest: Option<[u8; 20]>,
    /// `[workspace.metadata.mzbuild] registries`, if given.
    pub registries: Option<Vec<Registry>>,
    /// `[workspace.metadata.mzbuild] image-rustflags`.
    pub image_rustflags: Vec<String>,
    /// `[workspace.metadata.mzbuild] extra-cargo-inputs`: more files or
    /// directories (root-relative, normalised) that every cargo-build image
    /// hashes, beside the original's `Cargo.toml`, `Cargo.lock`,
    /// `.cargo/config` and `ci/builder`; `None` when the key is absent.
    pub extra_cargo_inputs: Option<Vec<String>>,
    /// `[workspace.metadata.mzbuild] path-dependencies`; `None` when absent
    /// (the original's rule applies, with a warning where cargo differs).
    pub path_dependencies: Option<PathDependencies>,
    /// `[workspace.metadata.mzbuild] builders`: the buildx builder for the
    /// builds of each architecture (e.g. `{ aarch64 = "arm-nodes" }`).
    pub builders: BTreeMap<Arch, String>,
    /// `[workspace.metadata.mzbuild] signing`.
    pub signing: Option<Signing>,
    /// `[workspace.metadata.mzbuild] trust`.
    pub trust: Option<Trust>,
    /// `[workspace.metadata.mzbuild] cache`: the shared layer cache.
    pub cache: CacheConfig,
    /// Whether `[profile.optimized]` is defined.
    pub has_optimized_profile: bool,
    /// Unknown keys of `[workspace.metadata.mzbuild]`.
    pub warnings: Vec<ConfigError>,
}

impl WorkspaceConfig {
    /// Read the tree's root `Cargo.toml`; a repository without one has no
    /// metadata.
    pub fn load(tree: &Tree) -> Result<WorkspaceConfig> {
        if tree.rev.is_some() && !tree.contains("Cargo.toml") {
            return Ok(WorkspaceConfig::default());
        }
        let Ok(bytes) = tree.read("Cargo.toml") else { return Ok(WorkspaceConfig::default()) };
        let text = String::from_utf8(bytes).map_err(|_| anyhow!("Cargo.toml: not valid UTF-8"))?;
        WorkspaceConfig::load_text(&text)
    }

    /// [`WorkspaceConfig::load`], from the root manifest's text.
    pub fn load_text(text: &str) -> Result<WorkspaceConfig> {
        let manifest: Value = toml::from_str(text).map_err(|e| anyhow!("Cargo.toml: invalid TOML: {e}"))?;
        let mut config = WorkspaceConfig::from_manifest(manifest)?;
        if config.manifest.as_ref().and_then(metadata_table).is_some() {
            let bytes = fingerprinted_bytes(text);
            config.manifest_digest = Some(Sha1::digest(bytes.as_bytes()).into());
        }
        Ok(config)
    }

    pub fn from_manifest(manifest: Value) -> Result<WorkspaceConfig> {
        let mut config = WorkspaceConfig {
            has_optimized_profile: manifest.get("profile").and_then(|p| p.get("optimized")).is_some(),
            ..WorkspaceConfig::default()
        };
        if let Some(metadata) = metadata_table(&manifest).cloned() {
            let Value::Table(table) = metadata else {
                bail!("Cargo.toml: [workspace.metadata.mzbuild] must be a table");
            };
            config.parse_metadata(table)?;
        }
        config.manifest = Some(manifest);
        Ok(config)
    }

    fn parse_metadata(&mut self, mut table: toml::Table) -> Result<()> {
        if let Some(v) = table.remove("registries") {
            let regs: Vec<Registry> = v.try_into().context(
                "Cargo.toml: [workspace.metadata.mzbuild] registries must be a list of \
                 { url = \"host[:port]/path\", username = \"..\" | username-env = \"VAR\", password-env = \"VAR\" }",
            )?;
            if regs.is_empty() {
                bail!(
                    "Cargo.toml: [workspace.metadata.mzbuild] registries is empty: list at least one, or remove it for the defaults"
                );
            }
            for r in &regs {
                validate_url(&r.url).context("Cargo.toml: [workspace.metadata.mzbuild] registries")?;
                if r.username.is_some() && r.username_env.is_some() {
                    bail!("Cargo.toml: registry `{}` has both `username` and `username-env`: keep one", r.url);
                }
            }
            self.registries = Some(regs);
        }
        if let Some(v) = table.remove("image-rustflags") {
            self.image_rustflags = v.try_into().map_err(|_| {
                anyhow!("Cargo.toml: [workspace.metadata.mzbuild] image-rustflags must be a list of strings")
            })?;
        }
        if let Some(v) = table.remove("extra-cargo-inputs") {
            const WHAT: &str = "Cargo.toml: [workspace.metadata.mzbuild] extra-cargo-inputs";
            let entries: Vec<String> = v.try_into().map_err(|_| {
                anyhow!("{WHAT} must be a list of paths relative to the repository root, e.g. [\".cargo/config.toml\"]")
            })?;
            let mut normalised = Vec::with_capacity(entries.len());
            for e in entries {
                if e.starts_with('/') {
                    bail!("{WHAT}: `{e}` must be relative to the repository root");
                }
                let n = super::crates::normalize("", &e).with_context(|| WHAT.to_string())?;
                if n.is_empty() {
                    bail!("{WHAT}: `{e}` names the whole repository; list files or directories");
                }
                normalised.push(n);
            }
            self.extra_cargo_inputs = Some(normalised);
        }
        if let Some(v) = table.remove("path-dependencies") {
            self.path_dependencies = Some(match v.as_str() {
                Some("original") => PathDependencies::Original,
                Some("cargo") => PathDependencies::Cargo,
                _ => bail!(
                    "Cargo.toml: [workspace.metadata.mzbuild] path-dependencies must be \"original\" (the original \
                     mzbuild's rule, the default) or \"cargo\" (every path dependency cargo builds with), found {v}"
                ),
            });
        }
        if let Some(v) = table.remove("builders") {
            const WHAT: &str = "Cargo.toml: [workspace.metadata.mzbuild] builders";
            let map: BTreeMap<String, String> = v.try_into().map_err(|_| {
                anyhow!("{WHAT} must map architectures to buildx builder names, e.g. {{ aarch64 = \"arm-nodes\" }}")
            })?;
            for (arch, builder) in map {
                let arch = Arch::parse(&arch).with_context(|| format!("{WHAT}: key `{arch}`"))?;
                if builder.is_empty() {
                    bail!("{WHAT}: the builder for {} is empty: name one, or remove the entry", arch.gcc());
                }
                self.builders.insert(arch, builder);
            }
        }
        if let Some(v) = table.remove("signing") {
            let signing: Signing = v.try_into().map_err(|e| {
                anyhow!(
                    "Cargo.toml: [workspace.metadata.mzbuild] signing must be {{ key-env = \"VAR\", password-env = \"VAR\" }} \
                     (the names of the environment variables that hold the cosign private key and its password): {e}"
                )
            })?;
            for var in std::iter::once(&signing.key_env).chain(&signing.password_env) {
                if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    bail!(
                        "Cargo.toml: [workspace.metadata.mzbuild] signing: `{var}` is not the name of an environment \
                         variable (the key itself never goes in Cargo.toml)"
                    );
                }
            }
            self.signing = Some(signing);
        }
        if let Some(v) = table.remove("trust") {
            const WHAT: &str = "Cargo.toml: [workspace.metadata.mzbuild] trust";
            let trust: Trust = v.try_into().map_err(|e| {
                anyhow!("{WHAT} must be {{ keys = [\"ci/mzbuild.pub\"] }} (public keys, relative to the repository root): {e}")
            })?;
            if trust.keys.is_empty() {
                bail!("{WHAT}: `keys` is empty: list the public keys to trust, or remove `trust`");
            }
            for k in &trust.keys {
                if k.starts_with('/') || k.split('/').any(|c| c == "..") {
                    bail!("{WHAT}: `{k}` must be a path inside the repository, relative to its root");
                }
            }
            self.trust = Some(trust);
        }
        if let Some(v) = table.remove("cache") {
            self.cache = CacheConfig::parse(v)?;
        }
        let unknown: BTreeMap<String, Value> = table.into_iter().collect();
        for key in unknown.keys() {
            self.warnings.push(ConfigError::UnknownKey {
                path: "Cargo.toml".into(),
                at: Some("[workspace.metadata.mzbuild]".into()),
                key: key.clone(),
                known: METADATA_KEYS,
            });
        }
        Ok(())
    }
}

fn metadata_table(manifest: &Value) -> Option<&Value> {
    manifest.get("workspace")?.get("metadata")?.get("mzbuild")
}

/// The bytes of the root `Cargo.toml` (`text`, which has a
/// `[workspace.metadata.mzbuild]` table) that fingerprints cover: the file
/// less that table, every other byte as it is. The table goes with the
/// blank lines and comments before its header, so that adding a table to a
/// file, at its end or between two others, gives back that file's bytes
/// (and its tags); placed after a comment, the comment goes with it. A
/// `[workspace.metadata]` left empty goes too.
///
/// A document that the TOML editor would not print back byte for byte (not
/// expected of a valid one) is hashed whole: a fingerprint must not depend
/// on how a library prints a document.
pub fn fingerprinted_bytes(text: &str) -> String {
    use toml_edit::{DocumentMut, Item};
    // The editor prints CRLF line ends as LF: a file with CRLF ends only
    // is edited with LF ends, and given them back.
    let crlf = text.contains("\r\n") && text.matches('\n').count() == text.matches("\r\n").count();
    let lf = if crlf { text.replace("\r\n", "\n") } else { text.to_string() };
    let Ok(mut doc) = lf.parse::<DocumentMut>() else { return text.to_string() };
    if doc.to_string() != lf {
        return text.to_string();
    }
    let removed = (|| {
        let workspace = doc.get_mut("workspace")?.as_table_like_mut()?;
        let metadata = workspace.get_mut("metadata")?.as_table_like_mut()?;
        metadata.remove("mzbuild")?;
        if metadata.is_empty() {
            let explicit = matches!(workspace.get("metadata"), Some(Item::Table(t)) if !t.is_implicit());
            if !explicit {
                workspace.remove("metadata");
            }
        }
        Some(())
    })();
    match removed {
        Some(()) if crlf => doc.to_string().replace('\n', "\r\n"),
        Some(()) => doc.to_string(),
        None => text.to_string(),
    }
}

/// `host[:port]/path`: no scheme, no trailing slash, no empty component.
pub fn validate_url(url: &str) -> Result<()> {
    let ok = !url.is_empty()
        && !url.contains("://")
        && !url.ends_with('/')
        && url.split('/').all(|c| !c.is_empty())
        && url.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    if !ok {
        bail!(
            "`{url}` is not a registry of the form host[:port]/path (no scheme, no trailing slash), e.g. 127.0.0.1:5000/team"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Result<WorkspaceConfig> {
        WorkspaceConfig::from_manifest(toml::from_str(toml).unwrap())
    }

    #[test]
    fn metadata_is_typed_and_checked() {
        let c = config(
            "[workspace.metadata.mzbuild]\nregistries = [{ url = \"127.0.0.1:5000/x\" }]\nimage-rustflags = [\"-C\", \"x\"]\n[profile.optimized]\n",
        )
        .unwrap();
        assert_eq!(c.registries.unwrap()[0].url, "127.0.0.1:5000/x");
        assert_eq!(c.image_rustflags, ["-C", "x"]);
        assert!(c.has_optimized_profile && c.warnings.is_empty());
        let e = config("[workspace.metadata.mzbuild]\nimage-rustflags = \"-C x\"\n").unwrap_err();
        assert!(e.to_string().contains("image-rustflags must be a list of strings"), "{e}");
        let c = config("[workspace.metadata.mzbuild]\nregistry = []\n").unwrap();
        assert_eq!(
            c.warnings[0].to_string(),
            "Cargo.toml: [workspace.metadata.mzbuild]: unknown key `registry` (ignored; known keys: registries, \
             image-rustflags, extra-cargo-inputs, path-dependencies, builders, signing, trust, cache)"
        );
    }

    /// Adding the table to a file, at its end or between two tables, in
    /// any form, gives back the file's bytes, whatever the table holds.
    #[test]
    fn the_table_is_not_fingerprinted() {
        let base = "[workspace]\nmembers = [\"a\"]\n\n# profiles\n[profile.release]\nlto = true\n";
        let table = "[workspace.metadata.mzbuild]\n# where to\nregistries = [{ url = \"x.io/y\" }]\nbuilders = { aarch64 = \"arm\" }\n";
        let with = [
            format!("{base}\n{table}"),
            base.replace("\n\n# profiles", &format!("\n\n{table}\n# profiles")),
            base.replace(
                "members = [\"a\"]\n",
                "members = [\"a\"]\nmetadata.mzbuild.registries = [{ url = \"x.io/y\" }]\n",
            ),
            base.replace("members = [\"a\"]\n", "members = [\"a\"]\nmetadata = { mzbuild = { builders = {} } }\n"),
        ];
        for text in &with {
            assert_eq!(fingerprinted_bytes(text), base, "{text}");
        }
        let crlf = base.replace('\n', "\r\n");
        assert_eq!(
            fingerprinted_bytes(&format!("{crlf}\r\n[workspace.metadata.mzbuild]\r\nbuilders = {{}}\r\n")),
            crlf
        );
        // Other metadata stays.
        let other = "[workspace.metadata.other]\nx = 1\n";
        assert_eq!(fingerprinted_bytes(&format!("{base}\n{other}\n{table}")), format!("{base}\n{other}"));
        // Without the table, the file's own hash; with it, the same file's.
        assert_eq!(WorkspaceConfig::load_text(base).unwrap().manifest_digest, None);
        let digest = |t: &str| WorkspaceConfig::load_text(t).unwrap().manifest_digest;
        assert_eq!(digest(&with[0]), Some(Sha1::digest(base.as_bytes()).into()));
        assert_eq!(digest(&with[0]), digest(&with[1]));
    }

    #[test]
    fn cargo_input_switches() {
        let c = config("[workspace]\n").unwrap();
        assert_eq!((c.extra_cargo_inputs, c.path_dependencies), (None, None));
        let c = config(
            "[workspace.metadata.mzbuild]\nextra-cargo-inputs = [\"./.cargo/config.toml\", \"ci/x/\"]\npath-dependencies = \"cargo\"\n",
        )
        .unwrap();
        assert_eq!(c.extra_cargo_inputs.unwrap(), [".cargo/config.toml", "ci/x"]);
        assert_eq!(c.path_dependencies, Some(PathDependencies::Cargo));
        let c = config("[workspace.metadata.mzbuild]\nextra-cargo-inputs = []\npath-dependencies = \"original\"\n")
            .unwrap();
        assert_eq!(c.extra_cargo_inputs.unwrap(), Vec::<String>::new());
        assert_eq!(c.path_dependencies, Some(PathDependencies::Original));
        for (bad, says) in [
            ("path-dependencies = \"all\"", "must be \"original\""),
            ("path-dependencies = true", "must be \"original\""),
            ("extra-cargo-inputs = \".cargo/config.toml\"", "must be a list of paths"),
            ("extra-cargo-inputs = [\"../x\"]", "leaves the repository"),
            ("extra-cargo-inputs = [\"/etc/x\"]", "relative to the repository root"),
            ("extra-cargo-inputs = [\".\"]", "whole repository"),
        ] {
            let e = config(&format!("[workspace.metadata.mzbuild]\n{bad}\n")).unwrap_err();
            assert!(format!("{e:#}").contains(says), "{bad}: {e:#}");
        }
    }

    #[test]
    fn signing_and_trust_name_variables_and_key_files() {
        let c = config(
            "[workspace.metadata.mzbuild]\nsigning = { key-env = \"K\", password-env = \"P\" }\ntrust = { keys = [\"ci/a.pub\"] }\n",
        )
        .unwrap();
        assert_eq!(c.signing, Some(Signing { key_env: "K".into(), password_env: Some("P".into()) }));
        assert_eq!(c.trust, Some(Trust { keys: vec!["ci/a.pub".into()] }));
        for (bad, says) in [
            ("signing = { key = \"-----BEGIN\" }", "unknown field `key`"),
            ("signing = { key-env = \"-----BEGIN X\" }", "is not the name of an environment variable"),
            ("signing = \"K\"", "signing must be { key-env"),
            ("trust = { keys = [] }", "`keys` is empty"),
            ("trust = { keys = [\"/etc/k.pub\"] }", "inside the repository"),
            ("trust = { key = [\"k.pub\"] }", "unknown field `key`"),
        ] {
            let e = config(&format!("[workspace.metadata.mzbuild]\n{bad}\n")).unwrap_err();
            assert!(format!("{e:#}").contains(says), "{bad}: {e:#}");
        }
    }

    #[test]
    fn builders_map_architectures_to_builder_names() {
        let c =
            config("[workspace.metadata.mzbuild]\nbuilders = { aarch64 = \"arm-nodes\", amd64 = \"x\" }\n").unwrap();
        assert_eq!(c.builders, [(Arch::X86_64, "x".to_string()), (Arch::Aarch64, "arm-nodes".to_string())].into());
        let e = config("[workspace.metadata.mzbuild]\nbuilders = { mips = \"m\" }\n").unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "Cargo.toml: [workspace.metadata.mzbuild] builders: key `mips`: unknown architecture `mips`: use x86_64 or aarch64"
        );
        let e = config("[workspace.metadata.mzbuild]\nbuilders = \"arm-nodes\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("must map architectures to buildx builder names"), "{e:#}");
    }

    #[test]
    fn the_cache_key_changes_no_fingerprint() {
        let without = "[workspace]\nmembers = []\n\n[workspace.metadata.mzbuild]\nimage-rustflags = []\n";
        let with = format!("{without}cache = {{ from = \"none\", to = \"inline\" }}\n");
        let a = WorkspaceConfig::load_text(without).unwrap();
        let b = WorkspaceConfig::load_text(&with).unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(b.cache.to, super::super::cache::CacheTo::Inline);
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    }
}
