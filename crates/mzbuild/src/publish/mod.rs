//! Publishing: asking registries over their
//! HTTP API ([`client`]), what manifests say ([`manifest`]), copying images
//! between registries ([`registry_copy`]), logging docker in for pushes and pulls
//! ([`login`]), the user's own docker logins for reads ([`docker_creds`]),
//! and the commands `ensure` (copy or build and push exactly what is
//! missing; the CI entry point), `check` (report what is missing or has
//! drifted), `repair` (re-point drifted tags) and `tag` (multi-arch release
//! tags), with their summary ([`report`]) and CI summaries ([`ci`]).

pub mod ci;
pub mod client;
pub mod docker_creds;
pub mod dry_run;
pub mod gc;
pub mod login;
pub mod manifest;
pub mod registry_copy;
pub mod report;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::discover::Image;
use crate::fingerprint::Fingerprinted;
use crate::plan::Held;
use crate::ui;
use crate::util::par_io;
use client::{credentials, Client, Credentials};

/// How many registry requests run at once.
const REQUESTS_IN_FLIGHT: usize = 16;

/// Which credentials a command's registry clients use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Writes (`ensure`, `repair`, `tag`): each registry's configured token
    /// (`password-env`), which must be set.
    Write,
    /// A writing command with nothing to write (`ensure` of unpublished
    /// images only): the configured tokens that are set, nothing else.
    Configured,
    /// Reads (`check`, `diff`, `tag --dry-run`): the configured token when
    /// it is set; else the user's own docker login for the registry (see
    /// [`docker_creds`]); else none (anonymous).
    Read,
}

/// A client per publish target, with credentials as `access` says, its
/// requests bounded by `timeout` when given (`--timeout`). All problems are
/// reported together; for reads, a docker login that cannot be read is a
/// warning, and the registry is asked anonymously.
pub fn clients(ctx: &Ctx, access: Access, timeout: Option<Duration>) -> Result<Vec<Client>> {
    let mut errors = vec![];
    let mut out = vec![];
    // One question per host: several targets may share a registry.
    let mut users: BTreeMap<String, Option<Credentials>> = BTreeMap::new();
    for reg in &ctx.naming.registries {
        let configured = match credentials(reg, ctx.env.as_ref(), access == Access::Write) {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("{e:#}"));
                continue;
            }
        };
        let creds = match configured {
            None if access == Access::Read => users
                .entry(reg.host().to_string())
                .or_insert_with(|| {
                    docker_creds::user_credentials(ctx.env.as_ref(), reg.host()).unwrap_or_else(|e| {
                        ui::warn(format_args!(
                            "registry {}: cannot use your docker login: {e:#}; asking it without credentials",
                            reg.url
                        ));
                        None
                    })
                })
                .clone(),
            c => c,
        };
        let client = Client::new(reg, creds);
        out.push(match timeout {
            Some(t) => client.with_timeout(t),
            None => client,
        });
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(out)
}

/// Ask every registry about every publishable image's tag, in parallel:
/// for each image, the digest each registry holds under it (see
/// [`Held`]).
pub fn published_status(
    ctx: &Ctx,
    clients: &[Client],
    images: &[&Image],
    fps: &BTreeMap<String, Fingerprinted>,
) -> Result<BTreeMap<String, Held>> {
    let tags: Vec<(&str, String)> =
        images.iter().filter(|i| i.config.publish).map(|i| (i.name.as_str(), fps[&i.name].fingerprint.tag())).collect();
    held_by(ctx, clients, &tags)
}

/// For each `(image, tag)`, the digest each registry holds under the tag.
pub fn held_by(ctx: &Ctx, clients: &[Client], tags: &[(&str, String)]) -> Result<BTreeMap<String, Held>> {
    let held = held(ctx, clients, tags)?;
    Ok(tags.iter().map(|(name, _)| name.to_string()).zip(held).collect())
}

/// For each `(image, tag)`, in order, the digest each registry holds under
/// the tag; all requests in parallel.
pub fn held(ctx: &Ctx, clients: &[Client], tags: &[(&str, String)]) -> Result<Vec<Held>> {
    let mut tasks: Vec<(usize, usize, String, &str)> = Vec::new();
    for (i, (name, tag)) in tags.iter().enumerate() {
        for (r, c) in clients.iter().enumerate() {
            tasks.push((i, r, c.registry.repository(&ctx.naming.prefix, name), tag));
        }
    }
    let results = par_io(&tasks, REQUESTS_IN_FLIGHT, |(i, r, repo, tag)| {
        clients[*r].manifest_digest(repo, tag).map(|digest| (*i, *r, digest))
    });
    let mut held: Vec<Held> = vec![vec![None; clients.len()]; tags.len()];
    for result in results {
        let (i, r, digest) = result?;
        held[i][r] = digest;
    }
    Ok(held)
}

/// Verify every registry's credentials at once (a wrong token must fail in
/// seconds, before anything changes), with a push scope on image `probe`.
pub fn verify_credentials(ctx: &Ctx, clients: &[Client], probe: &str, nothing_done: &str) -> Result<()> {
    let errors: Vec<String> = par_io(clients, clients.len(), |c| {
        c.verify_credentials(&c.registry.repository(&ctx.naming.prefix, probe)).err()
    })
    .into_iter()
    .flatten()
    .map(|e| format!("{e:#}"))
    .collect();
    if !errors.is_empty() {
        bail!("{}\n{nothing_done}", errors.join("\n"));
    }
    Ok(())
}

/// The registries (by index) that lack each image, for the images that
/// some registry lacks.
pub fn missing(held: &BTreeMap<String, Held>, registries: usize) -> BTreeMap<String, Vec<usize>> {
    held.iter()
        .map(|(name, h)| (name.clone(), crate::plan::lacking(h, registries)))
        .filter(|(_, lack)| !lack.is_empty())
        .collect()
}
