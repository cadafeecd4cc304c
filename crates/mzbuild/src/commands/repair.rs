//! `repair`: make every registry hold the same content under each
//! publishable image's tag, by copying through the registry API; never
//! builds. A drifted tag (one tag, different digests; e.g. two agents built
//! the same fingerprint without a shared cache) is re-pointed at the
//! reference registry's content: the spec registry's when it has the tag,
//! else the first registry's that has it. Gaps are filled the same way.

use std::time::Duration;

use anyhow::Result;

use super::ensure::{copy_row, row, run_copies, with_digests};
use crate::ctx::{Ctx, Status};
use crate::fingerprint::fingerprint_all;
use crate::plan::{self, Action, Facts, Goal, Step};
use crate::publish::report::{self, Row};
use crate::publish::{clients, published_status, verify_credentials, Access};
use crate::report::{Report, RunResult};
use crate::ui;

pub fn repair(ctx: &Ctx, targets: &[String], json: bool, timeout: Option<Duration>) -> Result<Status> {
    let report = json.then(|| Report::new(ctx, "repair"));
    let resolved = ctx.repo.resolve(targets)?;
    let images: Vec<_> = resolved.iter().copied().filter(|i| i.config.publish).collect();
    if images.is_empty() {
        ui::progress("no publishable image to repair");
        if let Some(r) = &report {
            r.emit::<Row>(&[], RunResult::Success);
        }
        return Ok(Status::Success);
    }
    // Fingerprints need every dependency, published or not.
    let fps = fingerprint_all(&ctx.repo, &resolved, &ctx.settings)?;
    let clients = clients(ctx, Access::Write, timeout)?;
    verify_credentials(ctx, &clients, &images[0].name, "nothing was changed")?;
    let published = published_status(ctx, &clients, &images, &fps)?;
    let steps = plan::plan(
        &images,
        &fps,
        &ctx.naming,
        &Goal::Repair,
        &Facts { published: published.clone(), ..Facts::default() },
    );
    let to_copy: Vec<&Step> = steps.iter().filter(|s| matches!(s.action, Action::Copy { .. })).collect();
    // Under a trust policy, only signed content is copied.
    if let Some(policy) = &ctx.trust {
        let untrusted = crate::trust::check_copy_sources(ctx, &clients, policy, &to_copy, &published)?;
        if !untrusted.is_empty() {
            crate::trust::report(ctx, &untrusted, "nothing was changed");
            if let Some(r) = &report {
                r.emit::<Row>(&[], RunResult::Failure);
            }
            return Ok(Status::Failure);
        }
    }
    ui::progress(format_args!(
        "{}; {} to repair",
        ui::count(images.len(), "publishable image", "publishable images"),
        to_copy.len()
    ));
    let copies = run_copies(ctx, &clients, &to_copy);
    let rows: Vec<Row> = steps
        .iter()
        .map(|s| match (&s.action, copies.get(&s.image.name)) {
            (Action::Copy { .. }, Some(copied)) => with_digests(
                ctx,
                {
                    let held = &published[&s.image.name];
                    let drifted = plan::drifted(held);
                    if drifted.is_empty() {
                        copy_row(ctx, s, "copied", copied)
                    } else {
                        // What the re-pointed registries held before, to undo
                        // or investigate the repair.
                        let replaced = drifted
                            .iter()
                            .filter_map(|r| Some((ctx.naming.registries[*r].url.clone(), held[*r].clone()?)))
                            .collect();
                        Row { replaced: Some(replaced), ..copy_row(ctx, s, "repaired", copied) }
                    }
                },
                published.get(&s.image.name),
                Some(copied),
            ),
            _ => with_digests(ctx, row(ctx, s, None), published.get(&s.image.name), None),
        })
        .collect();
    crate::publish::ci::write_rows(ctx, &clients, "repair", rows.iter().all(|r| r.error.is_none()), &rows);
    if !report::print(&rows, report.as_ref(), false)? {
        return Ok(Status::Failure);
    }
    Ok(Status::Success)
}
