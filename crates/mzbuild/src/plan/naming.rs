//! Where images go: the publish targets (`[workspace.metadata.mzbuild]
//! registries`, or the original's defaults, or `--image-registry`) and the
//! spec of an image.

use anyhow::{bail, Context, Result};

use crate::config::workspace::validate_url;
pub use crate::config::workspace::Registry;
use crate::env::{truthy, Env};
use crate::fingerprint::Fingerprint;

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
    /// `<spec registry>/<prefix><name>:mzbuild-<fingerprint>`.
    pub fn spec(&self, name: &str, fingerprint: &Fingerprint) -> String {
        format!("{}/{}{name}:{}", self.spec_registry, self.prefix, fingerprint.tag())
    }

    /// The environment variables that hold registry tokens: never passed
    /// to build steps.
    pub fn secret_vars(&self) -> Vec<String> {
        self.registries.iter().filter_map(|r| r.password_env.clone()).collect()
    }

    /// The publish targets configured in the root `Cargo.toml`'s
    /// `[workspace.metadata.mzbuild] registries`, or the original's defaults;
    /// `--image-registry` then replaces the spec registry.
    pub fn resolve(
        configured: Option<&[Registry]>,
        image_registry: Option<&str>,
        image_prefix: Option<&str>,
        env: &dyn Env,
    ) -> Result<Naming> {
        let configured = configured.map(<[Registry]>::to_vec);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::workspace::WorkspaceConfig;
    use crate::env::MapEnv;

    const FP: Fingerprint = Fingerprint([0; 20]);
    const TAG: &str = "mzbuild-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn configured(toml: &str) -> Result<Vec<Registry>> {
        let manifest = toml::from_str(&format!("[workspace.metadata.mzbuild]\n{toml}")).unwrap();
        Ok(WorkspaceConfig::from_manifest(manifest)?.registries.unwrap())
    }

    #[test]
    fn defaults_follow_mz_ghcr() {
        let n = Naming::resolve(None, None, None, &MapEnv(&[])).unwrap();
        assert_eq!(n.spec("app", &FP), format!("ghcr.io/materializeinc/materialize/app:{TAG}"));
        assert_eq!(n.registries.len(), 2);
        let n = Naming::resolve(None, None, None, &MapEnv(&[("MZ_GHCR", "0")])).unwrap();
        assert_eq!(n.spec("app", &FP), format!("materialize/app:{TAG}"));
        let n = Naming::resolve(None, Some("127.0.0.1:5000/team"), Some("mz-"), &MapEnv(&[])).unwrap();
        assert_eq!(n.spec("app", &FP), format!("127.0.0.1:5000/team/mz-app:{TAG}"));
        assert_eq!(n.secret_vars(), Vec::<String>::new());
    }

    #[test]
    fn configured_registries_give_clean_tags() {
        let regs = configured(
            r#"registries = [
                 { url = "127.0.0.1:5000/team", username = "u", password-env = "TOKEN" },
                 { url = "myreg.io/x" },
               ]"#,
        )
        .unwrap();
        let n = Naming::resolve(Some(&regs), None, None, &MapEnv(&[])).unwrap();
        assert_eq!(n.spec("img", &FP), format!("127.0.0.1:5000/team/img:{TAG}"));
        assert_eq!(n.secret_vars(), ["TOKEN"]);
        // --image-registry picks a configured registry (keeping its login) or replaces them all.
        let picked = Naming::resolve(Some(&regs), Some("myreg.io/x"), None, &MapEnv(&[])).unwrap();
        assert_eq!(
            picked.registries.iter().map(|r| r.url.as_str()).collect::<Vec<_>>(),
            ["myreg.io/x", "127.0.0.1:5000/team"]
        );
        let other = Naming::resolve(Some(&regs), Some("127.0.0.1:5002/o"), None, &MapEnv(&[])).unwrap();
        assert_eq!(other.registries.len(), 1);
        assert_eq!(other.spec("img", &FP), format!("127.0.0.1:5002/o/img:{TAG}"));
        assert_eq!(n.registries[1].reference("", "img", TAG), format!("myreg.io/x/img:{TAG}"));
        assert_eq!(n.registries[0].host(), "127.0.0.1:5000");
        assert_eq!(n.registries[0].repository("", "img"), "team/img");
        let e = configured(r#"registries = [{ url = "https://x.io/" }]"#).unwrap_err();
        assert!(format!("{e:#}").contains("not a registry of the form host[:port]/path"), "{e:#}");
        let e = configured(r#"registries = [{ url = "x.io/a", pasword-env = "T" }]"#).unwrap_err();
        assert!(format!("{e:#}").contains("pasword-env"), "{e:#}");
    }
}
