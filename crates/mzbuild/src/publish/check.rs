//! `check`: the read-only counterpart of `ensure`. Exit 0 iff every
//! publishable image is in every registry; the missing tags on stdout.

use anyhow::Result;

use super::{clients, published_status};
use crate::fingerprint::fingerprint_all;
use crate::{ui, Ctx, Status};

pub fn check(ctx: &Ctx, targets: &[String]) -> Result<Status> {
    let images = ctx.repo.resolve(targets)?;
    let fps = fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
    let clients = clients(ctx, false)?;
    let missing = published_status(ctx, &clients, &images, &fps)?;
    let n_pub = images.iter().filter(|i| i.config.publish).count();
    if missing.is_empty() {
        ui::progress(format_args!("all {n_pub} publishable image(s) are in every registry"));
        return Ok(Status::Success);
    }
    let mut out = String::new();
    for (name, regs) in &missing {
        for r in regs {
            out.push_str(&ctx.naming.registries[*r].reference(&ctx.naming.prefix, name, &fps[name].fingerprint.tag()));
            out.push('\n');
        }
    }
    ui::result(&out);
    ui::error(format_args!(
        "{} of {n_pub} publishable image(s) are missing from at least one registry (listed on stdout); \
         run `cargo xtask mzbuild ensure` to publish them",
        missing.len()
    ));
    Ok(Status::Failure)
}
