//! The root `Cargo.toml`, read once: its `[workspace.metadata.mzbuild]`
//! table (publish targets, image rustflags, which cargo files count as
//! inputs) and the facts about the cargo workspace that builds need. The crate graph ([`super::crates`]) is built
//! from the same parsed manifest, on first use.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use toml::Value;

use super::settings::Arch;
use super::ConfigError;
use crate::discover::tree::Tree;

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

const METADATA_KEYS: &[&str] =
    &["registries", "image-rustflags", "extra-cargo-inputs", "path-dependencies", "builders"];

/// Which path dependencies make a crate's files inputs of the cargo-build
/// images built from it (`[workspace.metadata.mzbuild] path-dependencies`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathDependencies {
    /// The original mzbuild's: entries with a `path` key in `[dependencies]`
    /// and `[build-dependencies]` (and an example's own crate's
    /// `[dev-dependencies]`). Gives the original's tags.
    #[default]
    Original,
    /// Every path dependency cargo builds with: also `{ workspace = true }`
    /// entries whose `[workspace.dependencies]` entry is a path, and the
    /// `[target.'cfg(..)'.*]` tables. Safer; changes tags.
    Cargo,
}

/// What the root `Cargo.toml` says, parsed once.
#[derive(Debug, Default, Clone)]
pub struct WorkspaceConfig {
    /// The root manifest, if the repository has one.
    pub manifest: Option<Value>,
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
        let manifest: Value = toml::from_str(&text).map_err(|e| anyhow!("Cargo.toml: invalid TOML: {e}"))?;
        WorkspaceConfig::from_manifest(manifest)
    }

    pub fn from_manifest(manifest: Value) -> Result<WorkspaceConfig> {
        let mut config = WorkspaceConfig {
            has_optimized_profile: manifest.get("profile").and_then(|p| p.get("optimized")).is_some(),
            ..WorkspaceConfig::default()
        };
        let metadata =
            manifest.get("workspace").and_then(|w| w.get("metadata")).and_then(|m| m.get("mzbuild")).cloned();
        if let Some(metadata) = metadata {
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
             image-rustflags, extra-cargo-inputs, path-dependencies, builders)"
        );
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
}
