//! Publishing: where images go ([`targets`]), asking registries over their
//! HTTP API ([`client`]), logging docker in for pushes ([`login`]), and the
//! commands `ensure` (build and push exactly what is missing; the CI entry
//! point) and `check` (report what is missing), with `ensure`'s summary
//! ([`report`]).

pub mod check;
pub mod client;
pub mod ensure;
pub mod login;
pub mod report;
pub mod targets;

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::discover::Image;
use crate::fingerprint::Fingerprinted;
use crate::util::par_io;
use crate::Ctx;
use client::{credentials, Client};

/// Which registries (by index into `Naming::registries`) lack each image.
pub type Missing = BTreeMap<String, Vec<usize>>;

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

/// Ask every registry about every publishable image, in parallel.
pub fn published_status(
    ctx: &Ctx,
    clients: &[Client],
    images: &[&Image],
    fps: &BTreeMap<String, Fingerprinted>,
) -> Result<Missing> {
    let mut tasks: Vec<(&str, usize, String, String)> = Vec::new();
    for i in images.iter().filter(|i| i.config.publish) {
        let tag = fps[&i.name].fingerprint.tag();
        for (r, c) in clients.iter().enumerate() {
            tasks.push((&i.name, r, c.registry.repository(&ctx.naming.prefix, &i.name), tag.clone()));
        }
    }
    let results = par_io(&tasks, REQUESTS_IN_FLIGHT, |(name, r, repo, tag)| {
        clients[*r].manifest_exists(repo, tag).map(|exists| (*name, *r, exists))
    });
    let mut missing: Missing = BTreeMap::new();
    for result in results {
        let (name, reg, exists) = result?;
        if !exists {
            missing.entry(name.to_string()).or_default().push(reg);
        }
    }
    Ok(missing)
}
