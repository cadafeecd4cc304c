//! Where images go: the publish targets (`[workspace.metadata.mzbuild]
//! registries`, or the original's defaults) and the spec of an image.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::settings::{truthy, Env};

/// One publish target.
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

    pub fn tag(&self, prefix: &str, name: &str, fingerprint: &str) -> String {
        format!("{}/{prefix}{name}:mzbuild-{fingerprint}", self.url)
    }
}

/// Where specs point and where images are published.
#[derive(Debug, Clone)]
pub struct Naming {
    /// The registry specs point at (FROM rewriting, pulls, `spec`).
    pub spec_registry: String,
    pub prefix: String,
    /// Every publish target, spec registry first.
    pub registries: Vec<Registry>,
}

impl Naming {
    pub fn spec(&self, name: &str, fingerprint: &str) -> String {
        format!("{}/{}{name}:mzbuild-{fingerprint}", self.spec_registry, self.prefix)
    }

    /// Read the publish targets from the root `Cargo.toml`'s
    /// `[workspace.metadata.mzbuild] registries`, or use the original's
    /// defaults; `--image-registry` then replaces the spec registry.
    pub fn resolve(
        metadata: Option<&toml::Value>,
        image_registry: Option<&str>,
        image_prefix: Option<&str>,
        env: &dyn Env,
    ) -> Result<Naming> {
        let configured = match metadata.and_then(|m| m.get("registries")) {
            None => None,
            Some(v) => {
                let regs: Vec<Registry> = v.clone().try_into().context(
                    "Cargo.toml: [workspace.metadata.mzbuild] registries must be a list of \
                     { url = \"host[:port]/path\", username = \"..\" | username-env = \"VAR\", password-env = \"VAR\" }",
                )?;
                if regs.is_empty() {
                    bail!("Cargo.toml: [workspace.metadata.mzbuild] registries is empty: list at least one, or remove it for the defaults");
                }
                for r in &regs {
                    validate_url(&r.url).context("Cargo.toml: [workspace.metadata.mzbuild] registries")?;
                    if r.username.is_some() && r.username_env.is_some() {
                        bail!("Cargo.toml: registry `{}` has both `username` and `username-env`: keep one", r.url);
                    }
                }
                Some(regs)
            }
        };
        let (mut spec_registry, registries) = match configured {
            Some(regs) => (regs[0].url.clone(), regs),
            None => {
                let ghcr = Registry {
                    url: "ghcr.io/materializeinc/materialize".into(),
                    username: Some("materialize-bot".into()),
                    username_env: None,
                    password_env: Some("GITHUB_GHCR_TOKEN".into()),
                };
                let hub = Registry {
                    url: "docker.io/materialize".into(),
                    username: None,
                    username_env: Some("DOCKERHUB_USERNAME".into()),
                    password_env: Some("DOCKERHUB_ACCESS_TOKEN".into()),
                };
                let mz_ghcr = env.var("MZ_GHCR");
                if mz_ghcr.is_some() && !truthy(mz_ghcr.as_deref()) {
                    ("materialize".to_string(), vec![hub, ghcr])
                } else {
                    (ghcr.url.clone(), vec![ghcr, hub])
                }
            }
        };
        let mut registries = registries;
        if let Some(r) = image_registry {
            validate_url(r).context("--image-registry")?;
            spec_registry = r.to_string();
            // Specs must point at a registry that `ensure` publishes to: a
            // configured one moves to the front (keeping its credentials);
            // any other becomes the only target, without a login.
            match registries.iter().position(|x| x.url == r) {
                Some(i) => {
                    let chosen = registries.remove(i);
                    registries.insert(0, chosen);
                }
                None => {
                    registries =
                        vec![Registry { url: r.to_string(), username: None, username_env: None, password_env: None }]
                }
            }
        }
        let prefix = image_prefix.unwrap_or("").to_string();
        if !prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_./".contains(&b)) {
            bail!("--image-prefix `{prefix}`: use lower-case letters, digits, `-`, `_`, `.` and `/` only");
        }
        Ok(Naming { spec_registry, prefix, registries })
    }
}

fn validate_url(url: &str) -> Result<()> {
    let ok = !url.is_empty()
        && !url.contains("://")
        && !url.ends_with('/')
        && url.split('/').all(|c| !c.is_empty())
        && url.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    if !ok {
        bail!("`{url}` is not a registry of the form host[:port]/path (no scheme, no trailing slash), e.g. 127.0.0.1:5000/team");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::MapEnv;

    #[test]
    fn defaults_follow_mz_ghcr() {
        let n = Naming::resolve(None, None, None, &MapEnv(&[])).unwrap();
        assert_eq!(n.spec("app", "FP"), "ghcr.io/materializeinc/materialize/app:mzbuild-FP");
        assert_eq!(n.registries.len(), 2);
        let n = Naming::resolve(None, None, None, &MapEnv(&[("MZ_GHCR", "0")])).unwrap();
        assert_eq!(n.spec("app", "FP"), "materialize/app:mzbuild-FP");
        let n = Naming::resolve(None, Some("127.0.0.1:5000/team"), Some("mz-"), &MapEnv(&[])).unwrap();
        assert_eq!(n.spec("app", "FP"), "127.0.0.1:5000/team/mz-app:mzbuild-FP");
    }

    #[test]
    fn configured_registries_give_clean_tags() {
        let meta: toml::Value = toml::from_str(
            r#"registries = [
                 { url = "127.0.0.1:5000/team", username = "u", password-env = "TOKEN" },
                 { url = "myreg.io/x" },
               ]"#,
        )
        .unwrap();
        let n = Naming::resolve(Some(&meta), None, None, &MapEnv(&[])).unwrap();
        assert_eq!(n.spec("img", "FP"), "127.0.0.1:5000/team/img:mzbuild-FP");
        // --image-registry picks a configured registry (keeping its login) or replaces them all.
        let picked = Naming::resolve(Some(&meta), Some("myreg.io/x"), None, &MapEnv(&[])).unwrap();
        assert_eq!(
            picked.registries.iter().map(|r| r.url.as_str()).collect::<Vec<_>>(),
            ["myreg.io/x", "127.0.0.1:5000/team"]
        );
        let other = Naming::resolve(Some(&meta), Some("127.0.0.1:5002/o"), None, &MapEnv(&[])).unwrap();
        assert_eq!(other.registries.len(), 1);
        assert_eq!(other.spec("img", "FP"), "127.0.0.1:5002/o/img:mzbuild-FP");
        assert_eq!(n.registries[1].tag("", "img", "FP"), "myreg.io/x/img:mzbuild-FP");
        assert_eq!(n.registries[0].host(), "127.0.0.1:5000");
        assert_eq!(n.registries[0].repository("", "img"), "team/img");
        let bad: toml::Value = toml::from_str(r#"registries = [{ url = "https://x.io/" }]"#).unwrap();
        let e = Naming::resolve(Some(&bad), None, None, &MapEnv(&[])).unwrap_err();
        assert!(format!("{e:#}").contains("not a registry of the form host[:port]/path"), "{e:#}");
        let typo: toml::Value = toml::from_str(r#"registries = [{ url = "x.io/a", pasword-env = "T" }]"#).unwrap();
        let e = Naming::resolve(Some(&typo), None, None, &MapEnv(&[])).unwrap_err();
        assert!(format!("{e:#}").contains("pasword-env"), "{e:#}");
    }
}
