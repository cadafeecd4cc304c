//! The read-only commands: `list`, `fingerprint`, `spec`, `describe`,
//! `graph`. Each returns the text for stdout.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use crate::ctx::Ctx;
use crate::discover::Image;
use crate::fingerprint::{fingerprint_all, Fingerprinted};

/// `fingerprint IMAGE...`: the fingerprints alone, one per line, in the
/// order given.
pub fn fingerprint(ctx: &Ctx, images: &[String]) -> Result<String> {
    let fps = named_fingerprints(ctx, images)?;
    Ok(images.iter().map(|i| format!("{}\n", fps[i].fingerprint)).collect())
}

/// `spec IMAGE...`: the specs alone, one per line, in the order given.
pub fn spec(ctx: &Ctx, images: &[String]) -> Result<String> {
    let fps = named_fingerprints(ctx, images)?;
    Ok(images.iter().map(|i| format!("{}\n", ctx.naming.spec(i, &fps[i].fingerprint))).collect())
}

/// Fingerprints of the named images (at least one) and their dependencies;
/// every name that is not a sound image is reported at once.
fn named_fingerprints(ctx: &Ctx, images: &[String]) -> Result<BTreeMap<String, Fingerprinted>> {
    let errors: Vec<String> = images.iter().filter_map(|i| ctx.repo.image(i).err()).map(|e| format!("{e:#}")).collect();
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("\n"));
    }
    fingerprints(ctx, images)
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

/// `list`: the sound images (a warning names the broken ones).
pub fn list(ctx: &Ctx, json: bool) -> Result<String> {
    ctx.repo.warn_broken();
    if !json {
        return Ok(ctx.repo.images.keys().map(|n| format!("{n}\n")).collect());
    }
    let names: Vec<String> = ctx.repo.images.keys().cloned().collect();
    let fps = if names.is_empty() { BTreeMap::new() } else { fingerprints(ctx, &names)? };
    let entries: Vec<ListEntry> = ctx
        .repo
        .images
        .values()
        .map(|i| {
            let fp = &fps[&i.name].fingerprint;
            ListEntry {
                name: &i.name,
                path: &i.dir,
                spec: ctx.naming.spec(&i.name, fp),
                fingerprint: fp.to_string(),
                publish: i.config.publish,
                depends_on: &i.depends_on,
            }
        })
        .collect();
    Ok(serde_json::to_string_pretty(&entries)? + "\n")
}

/// What `describe` shows of an image (a row of `describe --json`).
#[derive(Serialize)]
pub struct Description {
    pub name: String,
    pub path: String,
    pub description: Option<String>,
    pub publish: bool,
    pub fingerprint: String,
    pub spec: String,
    /// Whether `dependencies` and `inputs` are transitive.
    pub transitive: bool,
    pub dependencies: Vec<Dependency>,
    pub inputs: Vec<String>,
}

#[derive(Serialize)]
pub struct Dependency {
    pub name: String,
    pub fingerprint: String,
}

pub fn describe_image(ctx: &Ctx, name: &str, transitive: bool) -> Result<Description> {
    let image = ctx.repo.image(name)?;
    let images = ctx.repo.resolve(&[name.to_string()])?;
    let computed = crate::fingerprint::compute(&ctx.repo, &images, &ctx.settings)?;
    let fps = computed.fps();
    let fp = fps[name].fingerprint;
    let (deps, inputs): (Vec<&Image>, BTreeSet<&str>) = if transitive {
        let all = ctx.repo.resolve(&[name.to_string()])?;
        let deps = all.into_iter().filter(|i| i.name != name).collect();
        let inputs = computed.images.keys().flat_map(|n| computed.inputs(n)).collect();
        (deps, inputs)
    } else {
        let deps = image.depends_on.iter().map(|d| &ctx.repo.images[d]).collect();
        (deps, computed.inputs(name).into_iter().collect())
    };
    Ok(Description {
        name: name.to_string(),
        path: image.dir.clone(),
        description: image.config.description.clone(),
        publish: image.config.publish,
        fingerprint: fp.to_string(),
        spec: ctx.naming.spec(name, &fp),
        transitive,
        dependencies: deps
            .into_iter()
            .map(|d| Dependency { name: d.name.clone(), fingerprint: fps[&d.name].fingerprint.to_string() })
            .collect(),
        inputs: inputs.into_iter().map(str::to_string).collect(),
    })
}

pub fn describe(ctx: &Ctx, name: &str, transitive: bool) -> Result<String> {
    let d = describe_image(ctx, name, transitive)?;
    let mut out = String::new();
    writeln!(out, "name: {name}")?;
    writeln!(out, "path: {}", d.path)?;
    if let Some(text) = &d.description {
        writeln!(out, "description: {text}")?;
    }
    writeln!(out, "publish: {}", d.publish)?;
    writeln!(out, "fingerprint: {}", d.fingerprint)?;
    writeln!(out, "spec: {}", d.spec)?;
    let label = if transitive { "dependencies (transitive)" } else { "dependencies" };
    writeln!(out, "{label}:{}", if d.dependencies.is_empty() { " none" } else { "" })?;
    for dep in &d.dependencies {
        writeln!(out, "  {} {}", dep.name, dep.fingerprint)?;
    }
    let label = if transitive { "inputs (transitive)" } else { "inputs" };
    writeln!(out, "{label} ({}):", d.inputs.len())?;
    for i in &d.inputs {
        writeln!(out, "  {i}")?;
    }
    Ok(out)
}

pub fn graph(ctx: &Ctx) -> String {
    ctx.repo.warn_broken();
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
