//! `verify`: rebuild images from the work tree in the local engine (under
//! private tags, removed afterwards; nothing is pushed) and compare each
//! with what the spec registry publishes under its tag. The local image's
//! ID is the digest of its config, which names its layers (diff IDs): equal
//! to the published manifest's config digest means the same image. On a
//! difference, the config fields and, for each differing layer, the files
//! (path, size, mode, mtime, owner, link, content hash) that differ are
//! shown, read from `docker save` and the registry's layer blobs.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::build::{build_images, builder, PoolOptions, RepoLock};
use crate::ctx::{Ctx, Status};
use crate::discover::Image;
use crate::fingerprint::fingerprint_all;
use crate::plan::naming::Naming;
use crate::plan::{self, Facts, Goal, Step};
use crate::publish::client::Client;
use crate::publish::manifest::{self, Content, Descriptor};
use crate::publish::{clients, Access};
use crate::report::{Report, RunResult};
use crate::ui;

/// One file of a layer, as a tar entry says it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    pub size: u64,
    /// Permission bits, octal (`755`).
    pub mode: String,
    pub mtime: u64,
    pub uid: u64,
    pub gid: u64,
    /// `file`, `dir`, `symlink`, `hardlink`, `other`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// SHA-256 of the contents (files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A file that differs between the local and the published layer.
#[derive(Debug, Serialize)]
pub struct FileDiff {
    /// The layer's position, from 1 (the base image's first).
    pub layer: usize,
    pub path: String,
    pub local: Option<FileInfo>,
    pub published: Option<FileInfo>,
}

/// One image's row of `verify --json`.
#[derive(Debug, Serialize)]
pub struct VerifyRow {
    pub name: String,
    pub fingerprint: String,
    pub spec: String,
    /// reproduced | differs | unpublished | failed
    pub status: &'static str,
    /// The local rebuild's config digest (image ID).
    pub local: Option<String>,
    /// The published manifest's config digest.
    pub published: Option<String>,
    /// The config fields that differ (`created`, `config.Labels`, ...).
    pub config: Vec<String>,
    /// The layers (from 1) whose diff IDs differ.
    pub layers: Vec<usize>,
    pub files: Vec<FileDiff>,
    pub error: Option<String>,
}

/// What the spec registry publishes for one image.
struct Published {
    repository: String,
    config_digest: String,
    config: Value,
    layers: Vec<Descriptor>,
}

pub fn verify(
    ctx: &mut Ctx,
    targets: &[String],
    opts: &PoolOptions,
    timeout: Option<Duration>,
    json: bool,
) -> Result<Status> {
    let report = json.then(|| Report::new(ctx, "verify"));
    ctx.docker.check_engine()?;
    ctx.docker.check_buildx()?;
    let builder = builder(ctx, &ctx.docker, opts)?;
    let images = ctx.repo.resolve(targets)?;
    let fps = fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
    let wanted: BTreeSet<&str> = targets.iter().map(String::as_str).collect();
    let checked: Vec<String> = images
        .iter()
        .filter(|i| i.config.publish && (wanted.is_empty() || wanted.contains(i.name.as_str())))
        .map(|i| i.name.clone())
        .collect();
    if checked.is_empty() {
        bail!(
            "there is no publishable image among {}: nothing to verify",
            if targets.is_empty() { "the images".to_string() } else { targets.join(", ") }
        );
    }
    let clients = clients(ctx, Access::Read, timeout)?;
    let spec_client = &clients[0];
    let mut rows: BTreeMap<String, VerifyRow> = BTreeMap::new();
    let mut published: BTreeMap<String, Published> = BTreeMap::new();
    for name in &checked {
        let fp = fps[name.as_str()].fingerprint;
        let mut row = VerifyRow {
            name: name.clone(),
            fingerprint: fp.to_string(),
            spec: ctx.naming.spec(name, &fp),
            status: "failed",
            local: None,
            published: None,
            config: vec![],
            layers: vec![],
            files: vec![],
            error: None,
        };
        match fetch_published(ctx, spec_client, name, &fp.tag()) {
            Ok(Some(p)) => {
                row.published = Some(p.config_digest.clone());
                published.insert(name.clone(), p);
            }
            Ok(None) => row.status = "unpublished",
            Err(e) => row.error = Some(format!("{e:#}")),
        }
        rows.insert(name.clone(), row);
    }

    // The rebuild, under a private registry name that only this run uses:
    // MZFROM points at the private tags of the dependencies built here.
    let private = Naming {
        spec_registry: format!("mzbuild-verify-{}-{}", std::process::id(), now_nanos()),
        prefix: ctx.naming.prefix.clone(),
        registries: ctx.naming.registries.clone(),
    };
    let saved = std::mem::replace(&mut ctx.naming, private);
    let built = rebuild(ctx, &images, &fps, opts, builder.as_ref());
    let private = std::mem::replace(&mut ctx.naming, saved);
    let _cleanup =
        RemoveTags { ctx, tags: images.iter().map(|i| private.spec(&i.name, &fps[&i.name].fingerprint)).collect() };
    let outcomes = built?;

    for name in &checked {
        let row = rows.get_mut(name).expect("a row per checked image");
        let local_tag = private.spec(name, &fps[name.as_str()].fingerprint);
        if let Some(o) = outcomes.get(name).filter(|o| !o.is_success()) {
            row.status = "failed";
            row.error = Some(crate::build::describe_outcome(o));
            continue;
        }
        let Some(p) = published.get(name) else { continue };
        match compare(ctx, spec_client, &local_tag, p, row) {
            Ok(()) => {}
            Err(e) => {
                row.status = "failed";
                row.error = Some(format!("{e:#}"));
            }
        }
    }

    let rows: Vec<VerifyRow> = rows.into_values().collect();
    let ok = rows.iter().all(|r| r.status == "reproduced");
    match &report {
        Some(r) => r.emit(&rows, if ok { RunResult::Success } else { RunResult::Failure }),
        None => ui::result(&render(&rows)),
    }
    if ok {
        ui::progress(format_args!("{}: reproduced", ui::count(rows.len(), "image", "images")));
        Ok(Status::Success)
    } else {
        let bad: Vec<String> =
            rows.iter().filter(|r| r.status != "reproduced").map(|r| format!("{} ({})", r.name, r.status)).collect();
        ui::error(format_args!("not reproduced: {}", bad.join(", ")));
        Ok(Status::Failure)
    }
}

/// Build every image of `images` into the local engine under the current
/// (private) naming.
fn rebuild(
    ctx: &Ctx,
    images: &[&Image],
    fps: &BTreeMap<String, crate::fingerprint::Fingerprinted>,
    opts: &PoolOptions,
    builder: Option<&crate::docker::Builder>,
) -> Result<BTreeMap<String, crate::build::scheduler::Outcome<usize>>> {
    let force = images.iter().map(|i| i.name.clone()).collect();
    let steps = plan::plan(images, fps, &ctx.naming, &Goal::Build { force }, &Facts::default());
    let to_build: Vec<&Step> = steps.iter().filter(|s| s.action.builds()).collect();
    let lock = RepoLock::acquire(ctx.repo.root())?;
    build_images(ctx, fps, &to_build, &ctx.docker, opts, builder, &lock)
}

/// Removes the private tags when the run ends.
struct RemoveTags<'a> {
    ctx: &'a Ctx,
    tags: Vec<String>,
}

impl Drop for RemoveTags<'_> {
    fn drop(&mut self) {
        let Ok(local) = self.ctx.docker.local_images() else { return };
        let mine: Vec<&str> = self.tags.iter().filter(|t| local.contains(*t)).map(String::as_str).collect();
        if mine.is_empty() {
            return;
        }
        let mut args = vec!["rmi"];
        args.extend(mine);
        let _ = self.ctx.docker.command(&args).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() % (1 << 40)).unwrap_or(0)
}

/// The published manifest of `name:tag` on the spec registry (for this
/// run's platform when it is an index), with its config; `None` when the
/// tag is not there.
fn fetch_published(ctx: &Ctx, client: &Client, name: &str, tag: &str) -> Result<Option<Published>> {
    let registry = &ctx.naming.registries[0];
    let repository = registry.repository(&ctx.naming.prefix, name);
    let Some(m) = client.get_manifest(&repository, tag)? else { return Ok(None) };
    let mut content = manifest::parse(&m.media_type, &m.bytes)
        .with_context(|| format!("{}: reading the manifest", registry.reference(&ctx.naming.prefix, name, tag)))?;
    if let Content::Index { manifests } = &content {
        let arch = ctx.settings.arch.go();
        let d = manifest::platform_manifests(manifests)
            .into_iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == arch))
            .ok_or_else(|| anyhow!("{repository}:{tag} is an index without a linux/{arch} image"))?
            .clone();
        let m = client.get_manifest(&repository, &d.digest)?.ok_or_else(|| {
            anyhow!("{repository}@{}: the index names a manifest the registry does not have", d.digest)
        })?;
        content = manifest::parse(&m.media_type, &m.bytes)?;
    }
    let Content::Image { config, layers } = content else { bail!("{repository}:{tag}: an index inside an index") };
    let bytes = client.get_blob(&repository, &config.digest)?;
    let config_json: Value = serde_json::from_slice(&bytes).context("the published config is not JSON")?;
    Ok(Some(Published { repository, config_digest: config.digest, config: config_json, layers }))
}

/// Compare the local image `tag` with `p`, filling `row`.
fn compare(ctx: &Ctx, client: &Client, tag: &str, p: &Published, row: &mut VerifyRow) -> Result<()> {
    let out = ctx.docker.command(&["image", "inspect", "--format", "{{.Id}}", tag]).output()?;
    if !out.status.success() {
        bail!("the rebuilt image {tag} is not in the local engine");
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    row.local = Some(id.clone());
    if id == p.config_digest {
        row.status = "reproduced";
        return Ok(());
    }
    row.status = "differs";
    let dir = tempfile::Builder::new().prefix("mzbuild-verify-").tempdir()?;
    let (config, layer_files) = save(ctx, tag, dir.path())?;
    row.config = config_differences(&config, &p.config);
    let ids = |c: &Value| -> Vec<String> {
        c["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let (local_ids, published_ids) = (ids(&config), ids(&p.config));
    for i in 0..local_ids.len().max(published_ids.len()) {
        if local_ids.get(i) == published_ids.get(i) {
            continue;
        }
        row.layers.push(i + 1);
        let local = match layer_files.get(i) {
            Some(f) => entries(std::fs::File::open(f)?)?,
            None => BTreeMap::new(),
        };
        let published = match p.layers.get(i) {
            Some(d) => {
                let blob = client.read_blob(&p.repository, &d.digest)?;
                if d.media_type.ends_with("gzip") {
                    entries(flate2::read::GzDecoder::new(blob.body))?
                } else if d.media_type.ends_with(".tar")
                    || d.media_type.ends_with("tar.v1")
                    || d.media_type.ends_with("diff.tar")
                {
                    entries(blob.body)?
                } else {
                    bail!("layer {} of the published image is {}, which verify cannot read", i + 1, d.media_type)
                }
            }
            None => BTreeMap::new(),
        };
        let paths: BTreeSet<&String> = local.keys().chain(published.keys()).collect();
        for path in paths {
            let (l, r) = (local.get(path), published.get(path));
            if l != r {
                row.files.push(FileDiff { layer: i + 1, path: path.clone(), local: l.cloned(), published: r.cloned() });
            }
        }
    }
    Ok(())
}

/// `docker save TAG` into `dir`: the config and the layer tars, in order.
fn save(ctx: &Ctx, tag: &str, dir: &Path) -> Result<(Value, Vec<std::path::PathBuf>)> {
    let mut child = ctx
        .docker
        .command(&["save", tag])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running docker save")?;
    let stdout = child.stdout.take().expect("piped");
    tar::Archive::new(stdout).unpack(dir).context("unpacking docker save's output")?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("docker save {tag} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)?;
    let first = &manifest[0];
    let config_path = first["Config"].as_str().ok_or_else(|| anyhow!("docker save: no Config in manifest.json"))?;
    let config: Value = serde_json::from_slice(&std::fs::read(dir.join(config_path))?)?;
    let layers = first["Layers"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l.as_str()).map(|l| dir.join(l)).collect())
        .unwrap_or_default();
    Ok((config, layers))
}

/// The entries of a layer tar, by path.
fn entries(reader: impl Read) -> Result<BTreeMap<String, FileInfo>> {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(reader);
    for e in ar.entries().context("reading a layer")? {
        let mut e = e.context("reading a layer entry")?;
        let h = e.header().clone();
        let path = e.path()?.display().to_string().trim_end_matches('/').to_string();
        let kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => "file",
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => "hardlink",
            _ => "other",
        };
        let sha256 = if kind == "file" {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = e.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                ctx.update(&buf[..n]);
            }
            Some(ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect())
        } else {
            None
        };
        let info = FileInfo {
            size: h.size().unwrap_or(0),
            mode: format!("{:o}", h.mode().unwrap_or(0) & 0o7777),
            mtime: h.mtime().unwrap_or(0),
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            kind,
            link: e.link_name().ok().flatten().map(|l| l.display().to_string()),
            sha256,
        };
        out.insert(path, info);
    }
    Ok(out)
}

/// The config fields that differ: top-level ones, and those of `config`
/// one level down.
fn config_differences(local: &Value, published: &Value) -> Vec<String> {
    let mut out = vec![];
    let keys =
        |v: &Value| -> BTreeSet<String> { v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default() };
    for k in keys(local).union(&keys(published)) {
        if local.get(k) == published.get(k) {
            continue;
        }
        if k == "config" {
            for sub in keys(&local[k]).union(&keys(&published[k])) {
                if local[k].get(sub) != published[k].get(sub) {
                    out.push(format!("config.{sub}"));
                }
            }
        } else {
            out.push(k.clone());
        }
    }
    out
}

fn show(f: &Option<FileInfo>) -> String {
    match f {
        None => "absent".into(),
        Some(f) => {
            let mut s =
                format!("{} size {} mode {} mtime {} owner {}:{}", f.kind, f.size, f.mode, f.mtime, f.uid, f.gid);
            if let Some(l) = &f.link {
                s.push_str(&format!(" -> {l}"));
            }
            if let Some(h) = &f.sha256 {
                s.push_str(&format!(" sha256 {}", &h[..12]));
            }
            s
        }
    }
}

/// The human form: one line per image, the differences indented below.
pub fn render(rows: &[VerifyRow]) -> String {
    let mut out = String::new();
    for r in rows {
        match r.status {
            "reproduced" => out.push_str(&format!("{}: reproduced ({})\n", r.name, r.local.as_deref().unwrap_or(""))),
            "unpublished" => {
                out.push_str(&format!("{}: unpublished ({} is not in the spec registry)\n", r.name, r.spec))
            }
            "failed" => out.push_str(&format!("{}: failed: {}\n", r.name, r.error.as_deref().unwrap_or(""))),
            _ => {
                out.push_str(&format!(
                    "{}: differs: rebuilt {} but {} is {}\n",
                    r.name,
                    r.local.as_deref().unwrap_or("?"),
                    r.spec,
                    r.published.as_deref().unwrap_or("?")
                ));
                if !r.config.is_empty() {
                    out.push_str(&format!("  config: {}\n", r.config.join(", ")));
                }
                for l in &r.layers {
                    out.push_str(&format!("  layer {l} differs\n"));
                }
                for f in &r.files {
                    out.push_str(&format!(
                        "    layer {} {}: local {}; published {}\n",
                        f.layer,
                        f.path,
                        show(&f.local),
                        show(&f.published)
                    ));
                }
            }
        }
    }
    out
}
