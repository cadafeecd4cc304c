//! `ensure --dry-run`: the plan of `ensure`, from the same registry checks,
//! and nothing done. Registries are asked with read credentials (the
//! configured token when set, else the user's docker login, else none, as
//! `check` does): no `docker login`, no lock, no pre-image, no build, no
//! copy, no push, no fingerprint record.

use std::collections::BTreeSet;

use anyhow::Result;

use super::client::credentials;
use super::{clients, published_status, Access};
use crate::build::PoolOptions;
use crate::ctx::{Ctx, Status};
use crate::plan::{self, dry_run, Facts, Goal};
use crate::ui;

pub fn ensure(ctx: &Ctx, targets: &[String], opts: &PoolOptions) -> Result<Status> {
    let images = ctx.repo.resolve(targets)?;
    let fps = crate::fingerprint::fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
    let clients = clients(ctx, Access::Read, Some(opts.timeout))?;
    // The real run writes with the configured tokens only: say now which
    // are missing.
    if images.iter().any(|i| i.config.publish) {
        for reg in &ctx.naming.registries {
            if let Err(e) = credentials(reg, ctx.env.as_ref(), true) {
                ui::warn(format_args!("{e:#} (a real run needs it; this dry run reads without it)"));
            }
        }
    }
    let published = published_status(ctx, &clients, &images, &fps)?;
    // The real run would stop at an untrusted tag: so does its plan.
    if let Some(policy) = &ctx.trust {
        let untrusted = crate::trust::check_published(ctx, &clients, policy, &images, &fps, &published)?;
        if !untrusted.is_empty() {
            crate::trust::report(ctx, &untrusted, "ensure would stop here; dry run: nothing was changed");
            return Ok(Status::Failure);
        }
    }
    let local: BTreeSet<String> = if images.iter().any(|i| !i.config.publish) {
        ctx.docker.check_engine()?;
        ctx.docker.local_images()?
    } else {
        BTreeSet::new()
    };
    let facts = Facts { published, local };
    let steps = plan::plan(&images, &fps, &ctx.naming, &Goal::Ensure, &facts);
    ui::result(&dry_run::render(&steps, &ctx.naming, &facts, &ctx.settings, ctx.repo.workspace.has_optimized_profile));
    ui::progress(format_args!("dry run of ensure: {}; nothing was built, copied or pushed", dry_run::summary(&steps)));
    Ok(Status::Success)
}
