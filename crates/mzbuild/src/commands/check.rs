//! `check`: the read-only counterpart of `ensure`. Exit 0 iff every
//! publishable image is in every registry, with the same digest everywhere;
//! the missing tags, and the drifted ones (one tag, different content), on
//! stdout.

use std::time::Duration;

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::ensure::digests;
use crate::ctx::{Ctx, Status};
use crate::fingerprint::fingerprint_all;
use crate::plan;
use crate::publish::{clients, missing, published_status, Access};
use crate::report::{Report, RunResult};
use crate::ui;

/// One publishable image's row of `check --json`.
#[derive(Serialize)]
struct CheckRow {
    name: String,
    fingerprint: String,
    spec: String,
    /// published | missing | drifted
    status: &'static str,
    /// The digest each registry holds under the tag, by registry url.
    digests: BTreeMap<String, String>,
    /// The registries that lack the tag.
    missing: Vec<String>,
    /// The registries whose content under the tag differs from the first
    /// registry's that has it.
    drifted: Vec<String>,
    /// With a trust policy: the registries whose tag no trusted key signed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    untrusted: Vec<String>,
}

pub fn check(ctx: &Ctx, targets: &[String], timeout: Option<Duration>, json: bool) -> Result<Status> {
    let report = json.then(|| Report::new(ctx, "check"));
    let images = ctx.repo.resolve(targets)?;
    let fps = fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
    let clients = clients(ctx, Access::Read, timeout)?;
    let published = published_status(ctx, &clients, &images, &fps)?;
    // Under a trust policy, tags no trusted key signed are reported too.
    let untrusted = match &ctx.trust {
        Some(policy) => crate::trust::check_published(ctx, &clients, policy, &images, &fps, &published)?,
        None => vec![],
    };
    if !untrusted.is_empty() {
        crate::trust::report(ctx, &untrusted, "check changes nothing");
    }
    let missing = missing(&published, clients.len());
    let drifted: Vec<(&String, Vec<usize>)> =
        published.iter().map(|(n, h)| (n, plan::drifted(h))).filter(|(_, d)| !d.is_empty()).collect();
    let n_pub = images.iter().filter(|i| i.config.publish).count();
    crate::publish::ci::write_check(ctx, &published);
    if let Some(report) = &report {
        let url = |r: &usize| ctx.naming.registries[*r].url.clone();
        let rows: Vec<CheckRow> = published
            .iter()
            .map(|(name, held)| {
                let lacking = plan::lacking(held, clients.len());
                let drift = plan::drifted(held);
                let fp = fps[name.as_str()].fingerprint;
                let distrusted: Vec<String> =
                    untrusted.iter().filter(|u| &u.image == name).map(|u| u.registry.clone()).collect();
                CheckRow {
                    name: name.clone(),
                    fingerprint: fp.to_string(),
                    spec: ctx.naming.spec(name, &fp),
                    status: if !distrusted.is_empty() {
                        "untrusted"
                    } else if !lacking.is_empty() {
                        "missing"
                    } else if !drift.is_empty() {
                        "drifted"
                    } else {
                        "published"
                    },
                    digests: digests(ctx, held),
                    missing: lacking.iter().map(url).collect(),
                    drifted: drift.iter().map(url).collect(),
                    untrusted: distrusted,
                }
            })
            .collect();
        let ok = missing.is_empty() && drifted.is_empty() && untrusted.is_empty();
        report.emit(&rows, if ok { RunResult::Success } else { RunResult::Failure });
    }
    if missing.is_empty() && drifted.is_empty() {
        if !untrusted.is_empty() {
            return Ok(Status::Failure);
        }
        let all = match n_pub {
            0 => "there is no publishable image: nothing to check".to_string(),
            1 => "the 1 publishable image is in every registry, with the same digest".to_string(),
            n => format!("all {n} publishable images are in every registry, with the same digest"),
        };
        ui::progress(all);
        return Ok(Status::Success);
    }
    // "1 of 4 publishable images is", "2 of 4 ... are".
    let of = |n: usize, one: &str, many: &str| {
        format!(
            "{n} of {} {}",
            ui::count(n_pub, "publishable image", "publishable images"),
            if n == 1 { one } else { many }
        )
    };
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
    if report.is_none() {
        ui::result(&out);
    }
    if !missing.is_empty() {
        ui::error(format_args!(
            "{} missing from at least one registry (listed on stdout); run {} to publish {}",
            of(missing.len(), "is", "are"),
            ctx.hint("ensure"),
            if missing.len() == 1 { "it" } else { "them" }
        ));
    }
    if !drifted.is_empty() {
        let names: Vec<&str> = drifted.iter().map(|(n, _)| n.as_str()).collect();
        ui::error(format_args!(
            "{} drifted: the same tag names different content in different registries (listed on stdout); run {} \
             to point every registry at the first one's content",
            of(drifted.len(), "has", "have"),
            ctx.hint(&format!("repair {}", names.join(" ")))
        ));
    }
    Ok(Status::Failure)
}
