//! `check`: the read-only counterpart of `ensure`. Exit 0 iff every
//! publishable image is in every registry, with the same digest everywhere;
//! the missing tags, and the drifted ones (one tag, different content), on
//! stdout.

use std::time::Duration;

use anyhow::Result;

use super::{clients, missing, published_status, Access};
use crate::fingerprint::fingerprint_all;
use crate::plan;
use crate::{ui, Ctx, Status};

pub fn check(ctx: &Ctx, targets: &[String], timeout: Option<Duration>) -> Result<Status> {
    let images = ctx.repo.resolve(targets)?;
    let fps = fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
    let clients = clients(ctx, Access::Read, timeout)?;
    let published = published_status(ctx, &clients, &images, &fps)?;
    let missing = missing(&published, clients.len());
    let drifted: Vec<(&String, Vec<usize>)> =
        published.iter().map(|(n, h)| (n, plan::drifted(h))).filter(|(_, d)| !d.is_empty()).collect();
    let n_pub = images.iter().filter(|i| i.config.publish).count();
    if missing.is_empty() && drifted.is_empty() {
        ui::progress(format_args!("all {n_pub} publishable image(s) are in every registry, with the same digest"));
        return Ok(Status::Success);
    }
    let reference = |r: usize, name: &str| {
        ctx.naming.registries[r].reference(&ctx.naming.prefix, name, &fps[name].fingerprint.tag())
    };
    let mut out = String::new();
    for (name, regs) in &missing {
        for r in regs {
            out.push_str(&reference(*r, name));
            out.push('\n');
        }
    }
    for (name, regs) in &drifted {
        let held = &published[*name];
        let source = plan::source(held).expect("a drifted tag is somewhere");
        for r in regs {
            out.push_str(&format!(
                "{} {} (drift: {} has {})\n",
                reference(*r, name),
                held[*r].as_deref().unwrap_or(""),
                ctx.naming.registries[source].url,
                held[source].as_deref().unwrap_or("")
            ));
        }
    }
    ui::result(&out);
    if !missing.is_empty() {
        ui::error(format_args!(
            "{} of {n_pub} publishable image(s) are missing from at least one registry (listed on stdout); \
             run `cargo xtask mzbuild ensure` to publish them",
            missing.len()
        ));
    }
    if !drifted.is_empty() {
        let names: Vec<&str> = drifted.iter().map(|(n, _)| n.as_str()).collect();
        ui::error(format_args!(
            "{} of {n_pub} publishable image(s) have drifted: the same tag names different content in different \
             registries (listed on stdout); run `cargo xtask mzbuild repair {}` to point every registry at the \
             first one's content",
            drifted.len(),
            names.join(" ")
        ));
    }
    Ok(Status::Failure)
}
