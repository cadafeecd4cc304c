//! Publishing: where images go ([`targets`]), asking registries over their
//! HTTP API ([`client`]), what manifests say ([`manifest`]), copying images
//! between registries ([`copy`]), logging docker in for pushes ([`login`]),
//! and the commands `ensure` (copy or build and push exactly what is
//! missing; the CI entry point), `check` (report what is missing or has
//! drifted) and `repair` (re-point drifted tags), with their summary
//! ([`report`]).

pub mod check;
pub mod client;
pub mod copy;
pub mod ensure;
pub mod login;
pub mod manifest;
pub mod repair;
pub mod report;
pub mod targets;

use std::collections::BTreeMap;

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
/// (`require_credentials`: an unset token is an error). All problems are
/// reported together.
pub fn clients(ctx: &Ctx, require_credentials: bool) -> Result<Vec<Client>> {
    let mut errors = vec![];
    let mut out = vec![];
    for reg in &ctx.naming.registries {
        match credentials(reg, ctx.env.as_ref(), require_credentials) {
            Ok(c) => out.push(Client::new(reg, c)),
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
    let mut tasks: Vec<(&str, usize, String, &str)> = Vec::new();
    for (name, tag) in tags {
        for (r, c) in clients.iter().enumerate() {
            tasks.push((name, r, c.registry.repository(&ctx.naming.prefix, name), tag));
        }
    }
    let results = par_io(&tasks, REQUESTS_IN_FLIGHT, |(name, r, repo, tag)| {
        clients[*r].manifest_digest(repo, tag).map(|digest| (*name, *r, digest))
    });
    let mut held: BTreeMap<String, Held> = BTreeMap::new();
    for result in results {
        let (name, reg, digest) = result?;
        held.entry(name.to_string()).or_insert_with(|| vec![None; clients.len()])[reg] = digest;
    }
    Ok(held)
}

/// The registries (by index) that lack each image, for the images that
/// some registry lacks.
pub fn missing(held: &BTreeMap<String, Held>, registries: usize) -> BTreeMap<String, Vec<usize>> {
    held.iter()
        .map(|(name, h)| (name.clone(), crate::plan::lacking(h, registries)))
        .filter(|(_, lack)| !lack.is_empty())
        .collect()
}
