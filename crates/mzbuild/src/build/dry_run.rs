//! `build --dry-run`: the plan of `build`, from what the local engine has,
//! and nothing done (no lock, no pre-image, no build).

use std::collections::BTreeSet;

use anyhow::Result;

use crate::ctx::{Ctx, Status};
use crate::plan::{self, dry_run, Facts, Goal};
use crate::ui;

pub fn build(ctx: &Ctx, targets: &[String], force: bool) -> Result<Status> {
    ctx.docker.check_engine()?;
    let images = ctx.repo.resolve(targets)?;
    let fps = crate::fingerprint::fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
    let facts = Facts { local: ctx.docker.local_images()?, ..Facts::default() };
    let force: BTreeSet<String> = if force { targets.iter().cloned().collect() } else { BTreeSet::new() };
    let steps = plan::plan(&images, &fps, &ctx.naming, &Goal::Build { force }, &facts);
    ui::result(&dry_run::render(&steps, &ctx.naming, &facts, &ctx.settings, ctx.repo.workspace.has_optimized_profile));
    ui::progress(format_args!("dry run of build: {}; nothing was built", dry_run::summary(&steps)));
    Ok(Status::Success)
}
