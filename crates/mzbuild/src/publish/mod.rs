//! Publishing: where images go ([`targets`]), asking registries over their
//! HTTP API ([`client`]), what manifests say ([`manifest`]), copying images
//! between registries ([`copy`]), logging docker in for pushes ([`login`]),
//! and the commands `ensure` (copy or build and push exactly what is
//! missing; the CI entry point), `check` (report what is missing or has
//! drifted), `repair` (re-point drifted tags) and `tag` (multi-arch release
//! tags), with their summary ([`report`]).

pub mod check;
pub mod client;
pub mod copy;
pub mod ensure;
pub mod login;
pub mod manifest;
pub mod repair;
pub mod report;
pub mod tag;
pub mod targets;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::discover::Image;
use crate::fingerprint::Fingerprinted;
use crate::plan::Held;
use crate::util::par_io;
use crate::Ctx;
use client::{credentials, Client};

/// How many registry requests run at once.
const REQUESTS_IN_FLIGHT: usize = 16;

/// A client per publish target, with credentials from the environment
/// (`require_credentials`: an unset token is an error), its requests bounded
/// by `timeout` when given (`--timeout`). All problems are reported together.
pub fn clients(ctx: &Ctx, require_credentials: bool, timeout: Option<Duration>) -> Result<Vec<Client>> {
    let mut errors = vec![];
    let mut out = vec![];
    for reg in &ctx.naming.registries {
        match credentials(reg, ctx.env.as_ref(), require_credentials) {
            Ok(c) => {
                let client = Client::new(reg, c);
                out.push(match timeout {
                    Some(t) => client.with_timeout(t),
                    None => client,
                });
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
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
