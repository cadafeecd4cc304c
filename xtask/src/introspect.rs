//! The read-only commands: `list`, `fingerprint`, `spec`, `describe`,
//! `graph`. Results go to stdout, nothing else does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::cli::Command;
use crate::fingerprint::{base32, fingerprint_all, Fingerprinted};
use crate::repo::Image;
use crate::Ctx;

pub fn run(ctx: &Ctx, command: &Command) -> Result<ExitCode> {
    let out = match command {
        Command::List { json } => list(ctx, *json)?,
        Command::Fingerprint { image } => {
            let fps = fingerprints(ctx, std::slice::from_ref(image))?;
            format!("{}\n", base32(&fps[image].fingerprint))
        }
        Command::Spec { image } => {
            let fps = fingerprints(ctx, std::slice::from_ref(image))?;
            format!("{}\n", ctx.naming.spec(image, &base32(&fps[image].fingerprint)))
        }
        Command::Describe { image, transitive } => describe(ctx, image, *transitive)?,
        Command::Graph => graph(ctx),
        other => anyhow::bail!("internal error: {other:?} is not an introspection command"),
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Fingerprints of `targets` and their dependencies (all images when empty).
pub fn fingerprints(ctx: &Ctx, targets: &[String]) -> Result<BTreeMap<String, Fingerprinted>> {
    let images = ctx.repo.resolve(targets)?;
    fingerprint_all(&ctx.repo, &images, &ctx.settings)
}

#[derive(Serialize)]
struct ListEntry<'a> {
    name: &'a str,
    path: &'a str,
    fingerprint: String,
    spec: String,
    publish: bool,
    depends_on: &'a [String],
}

pub fn list(ctx: &Ctx, json: bool) -> Result<String> {
    if !json {
        return Ok(ctx.repo.images.keys().map(|n| format!("{n}\n")).collect());
    }
    let fps = fingerprints(ctx, &[])?;
    let entries: Vec<ListEntry> = ctx
        .repo
        .images
        .values()
        .map(|i| {
            let fp = base32(&fps[&i.name].fingerprint);
            ListEntry {
                name: &i.name,
                path: &i.dir,
                spec: ctx.naming.spec(&i.name, &fp),
                fingerprint: fp,
                publish: i.config.publish,
                depends_on: &i.depends_on,
            }
        })
        .collect();
    Ok(serde_json::to_string_pretty(&entries)? + "\n")
}

pub fn describe(ctx: &Ctx, name: &str, transitive: bool) -> Result<String> {
    let image = ctx.repo.image(name)?;
    let fps = fingerprints(ctx, &[name.to_string()])?;
    let fp = base32(&fps[name].fingerprint);
    let mut out = String::new();
    writeln!(out, "name: {name}")?;
    writeln!(out, "path: {}", image.dir)?;
    if let Some(d) = &image.config.description {
        writeln!(out, "description: {d}")?;
    }
    writeln!(out, "publish: {}", image.config.publish)?;
    writeln!(out, "fingerprint: {fp}")?;
    writeln!(out, "spec: {}", ctx.naming.spec(name, &fp))?;
    let (deps, inputs): (Vec<&Image>, BTreeSet<&str>) = if transitive {
        let all = ctx.repo.resolve(&[name.to_string()])?;
        let deps = all.into_iter().filter(|i| i.name != name).collect();
        let inputs = fps.values().flat_map(|f| f.inputs.iter().map(String::as_str)).collect();
        (deps, inputs)
    } else {
        let deps = image.depends_on.iter().map(|d| &ctx.repo.images[d]).collect();
        (deps, fps[name].inputs.iter().map(String::as_str).collect())
    };
    let label = if transitive { "dependencies (transitive)" } else { "dependencies" };
    writeln!(out, "{label}:{}", if deps.is_empty() { " none" } else { "" })?;
    for d in deps {
        writeln!(out, "  {} {}", d.name, base32(&fps[&d.name].fingerprint))?;
    }
    let label = if transitive { "inputs (transitive)" } else { "inputs" };
    writeln!(out, "{label} ({}):", inputs.len())?;
    for i in inputs {
        writeln!(out, "  {i}")?;
    }
    Ok(out)
}

pub fn graph(ctx: &Ctx) -> String {
    let mut out = String::from("digraph mzbuild {\n    rankdir=BT;\n    node [shape=box];\n");
    for image in ctx.repo.images.values() {
        let style = if image.config.publish { "" } else { " [style=dashed]" };
        out.push_str(&format!("    \"{}\"{style};\n", image.name));
    }
    for image in ctx.repo.images.values() {
        for d in &image.depends_on {
            out.push_str(&format!("    \"{}\" -> \"{d}\";\n", image.name));
        }
    }
    out.push_str("}\n");
    out
}
