//! Logins for the builds that push, and for `acquire`'s pulls: a private,
//! temporary DOCKER_CONFIG with one `docker login` per registry (token on
//! stdin), removed when the run ends, also on a signal or a kill (see
//! `process`). The user's `~/.docker`
//! is never written (buildx's own state goes to the run's private directory,
//! see `docker::RunDir`).

use std::path::Path;

use anyhow::{Context, Result};

use super::client::{credentials, Credentials};
use crate::ctx::Ctx;
use crate::docker::{user_docker_config_dir, Docker};
use crate::env::Env;
use crate::plan::naming::Registry;
use crate::process::PrivateDir;
use crate::ui;

/// The private DOCKER_CONFIG; removed on drop.
pub struct DockerLogin {
    dir: PrivateDir,
}

impl DockerLogin {
    /// Log in to each registry with its credentials, into a new private
    /// config seeded from the user's.
    pub fn new(docker: &Docker, env: &dyn Env, registries: &[(&Registry, &Credentials)]) -> Result<DockerLogin> {
        let dir = PrivateDir::new("mzbuild-docker-config-").context("creating a private DOCKER_CONFIG")?;
        let user = user_docker_config_dir(env);
        if let Some(user) = &user {
            seed_config(dir.path(), user, registries)?;
            // Read where they are: the user's docker contexts (the current
            // one, e.g. Docker Desktop's `desktop-linux`, and those builders
            // of the docker driver run on), and their CLI plugins (Docker
            // Desktop puts buildx in ~/.docker/cli-plugins, which docker
            // looks for under DOCKER_CONFIG).
            for shared in ["contexts", "cli-plugins"] {
                let target = user.join(shared);
                if target.is_dir() {
                    let link = dir.path().join(shared);
                    std::os::unix::fs::symlink(&target, &link)
                        .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
                }
            }
        }
        let docker = docker.with_env(vec![("DOCKER_CONFIG".into(), dir.path().display().to_string())]);
        for (reg, creds) in registries {
            docker.login(reg.host(), &creds.username, &creds.password).with_context(|| {
                format!("docker login to {} as `{}` (token from {}) failed", reg.host(), creds.username, creds.source)
            })?;
        }
        Ok(DockerLogin { dir })
    }

    /// For `acquire`: log in to the registry specs point at (where it
    /// pulls, and where its builds pull published dependencies from) when
    /// that registry's token is set, as `ensure` does. `None` without one:
    /// docker then uses the user's own config as it is (their `docker
    /// login`). A login that fails is a warning: what cannot be pulled is
    /// built, and each image says why.
    pub fn for_pulls(ctx: &Ctx) -> Option<DockerLogin> {
        let reg = ctx.naming.registries.first()?;
        let login = credentials(reg, ctx.env.as_ref(), false).and_then(|creds| match creds {
            Some(creds) => DockerLogin::new(&ctx.docker, ctx.env.as_ref(), &[(reg, &creds)]).map(Some),
            None => Ok(None),
        });
        login.unwrap_or_else(|e| {
            ui::warn(format_args!("{e:#}; pulling without logging in"));
            None
        })
    }

    /// The environment that makes docker use these logins.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("DOCKER_CONFIG".into(), self.dir.path().display().to_string())]
    }
}

/// Start the private config from the user's `config.json`, so builds keep
/// the user's other logins (private base images, Docker Hub pulls) and
/// settings; but without a credential store, and without credential helpers
/// for the registries we log in to, so our logins land in this private file
/// only, never in the user's keychain or helper.
fn seed_config(dir: &Path, user: &Path, registries: &[(&Registry, &Credentials)]) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(user.join("config.json")) else { return Ok(()) };
    let Ok(mut config) = serde_json::from_str::<serde_json::Value>(&text) else { return Ok(()) };
    if let Some(obj) = config.as_object_mut() {
        obj.remove("credsStore");
        for key in ["credHelpers", "auths"] {
            if let Some(map) = obj.get_mut(key).and_then(|h| h.as_object_mut()) {
                for (reg, _) in registries {
                    map.remove(reg.host());
                }
            }
        }
    }
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
