//! The `cargo-build` pre-image: its inputs (the workspace files cargo reads
//! to build the binaries: root manifests, `ci/builder`, and the crates in
//! the closure of each binary's crate), its `extra` fingerprint word, and
//! the step: ONE `cargo build --target <arch>-unknown-linux-gnu` for every
//! cargo-build pre-image of the run, then each image copies (and strips)
//! its binaries and extracted build-script outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::InputCache;
use crate::config::crates::{Crate, CrateGraph};
use crate::config::image::CargoBuildSpec;
use crate::config::settings::{Profile, Settings};
use crate::discover::{Image, Repo};
use crate::env::Env;
use crate::git::tree::Tree;
use crate::process::{self, GroupChild};
use crate::ui;

/// The inputs, as ranges of positions in `Tree::files`: by default the
/// original's (root `Cargo.toml` and `Cargo.lock`, `.cargo/config`, every
/// file of `ci/builder`, the crates of the closure by the original's rule),
/// so that tags are the original's; `[workspace.metadata.mzbuild]
/// extra-cargo-inputs` and `path-dependencies = "cargo"` add what cargo also
/// reads. What the default leaves out is noted in `cache`, for one warning.
pub fn inputs(repo: &Repo, spec: &CargoBuildSpec, cache: &mut InputCache) -> Result<Vec<Range<usize>>> {
    let tree = &repo.tree;
    let ws = &repo.workspace;
    let mut out = Vec::new();
    for required in ["Cargo.toml", "Cargo.lock"] {
        let Some(at) = tree.position(required) else {
            bail!(
                "cargo-build needs {required} at the repository root ({}), and git does not see one; \
                 create it (`cargo generate-lockfile` for Cargo.lock) and commit it",
                repo.root().display()
            );
        };
        out.push(at..at + 1);
    }
    // The original hashes `.cargo/config` (if git sees it), not its modern
    // name `.cargo/config.toml`: that one only through extra-cargo-inputs.
    if let Some(at) = tree.position(".cargo/config") {
        out.push(at..at + 1);
    }
    match &ws.extra_cargo_inputs {
        Some(extra) => {
            for e in extra {
                let at = tree.position(e).map(|at| at..at + 1).unwrap_or_else(|| tree.range(e));
                if at.is_empty() {
                    bail!(
                        "Cargo.toml: [workspace.metadata.mzbuild] extra-cargo-inputs: `{e}` is neither a file nor a \
                         directory git sees; fix the entry or remove it"
                    );
                }
                out.push(at);
            }
        }
        None => cache.notes.config_toml_left_out |= tree.contains(".cargo/config.toml"),
    }
    out.push(tree.range("ci/builder"));
    let graph = repo.crates().context("reading the cargo workspace")?;
    let roots = spec
        .bins
        .iter()
        .map(|b| graph.crate_for_bin(b).map(|c| (c, false)))
        .chain(spec.examples.iter().map(|e| graph.crate_for_example(e).map(|c| (c, true))));
    for root in roots {
        let (krate, dev) = root?;
        let key = (krate.dir.clone(), dev);
        let closure = match cache.closures.get(&key) {
            Some(c) => c.clone(),
            None => {
                let c = std::rc::Rc::new(closure_inputs(repo, graph, krate, dev, &mut cache.crates));
                cache.closures.insert(key, c.clone());
                c
            }
        };
        cache.notes.unfollowed.extend(closure.unfollowed.iter().cloned());
        out.extend(closure.ranges.iter().cloned());
    }
    Ok(out)
}

/// The files of a cargo-build root's closure, resolved once per root
/// however many images build from it.
pub(super) struct ClosureInputs {
    /// Ascending, disjoint and not touching.
    ranges: Vec<Range<usize>>,
    /// What the default rule does not follow (see [`super::Notes`]).
    unfollowed: Vec<(String, String, String)>,
}

/// The inputs of `krate`'s closure (`dev` as for
/// [`CrateGraph::closure`]), its crates' files
/// shared through `crates`.
fn closure_inputs(
    repo: &Repo,
    graph: &CrateGraph,
    krate: &Crate,
    dev: bool,
    crates: &mut BTreeMap<String, Vec<Range<usize>>>,
) -> ClosureInputs {
    let ws = &repo.workspace;
    let closure = graph.closure(krate, dev, ws.path_dependencies.unwrap_or_default());
    let unfollowed = if ws.path_dependencies.is_none() { graph.unfollowed(krate, dev, &closure) } else { Vec::new() };
    let mut all: Vec<Range<usize>> = Vec::new();
    for dir in closure {
        all.extend(crates.entry(dir).or_insert_with_key(|dir| crate_ranges(&repo.tree, dir)).iter().cloned());
    }
    all.retain(|r| !r.is_empty());
    all.sort_unstable_by_key(|r| r.start);
    let mut ranges: Vec<Range<usize>> = Vec::with_capacity(all.len());
    for r in all {
        match ranges.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => ranges.push(r),
        }
    }
    ClosureInputs { ranges, unfollowed }
}

/// Every file of the crate in `dir` but `<crate>/mzcompose` and
/// `<crate>/mzcompose.py` (files, or directories with everything below
/// them), as ranges of positions in `tree.files`.
fn crate_ranges(tree: &Tree, dir: &str) -> Vec<Range<usize>> {
    let mut excluded: Vec<Range<usize>> = Vec::new();
    for e in [format!("{dir}/mzcompose"), format!("{dir}/mzcompose.py")] {
        if let Some(at) = tree.position(&e) {
            excluded.push(at..at + 1);
        }
        excluded.push(tree.range(&e));
    }
    // All inside the crate's range, and disjoint.
    excluded.retain(|r| !r.is_empty());
    excluded.sort_by_key(|r| r.start);
    let all = tree.range(dir);
    let mut out = Vec::new();
    let mut at = all.start;
    for r in excluded {
        out.push(at..r.start);
        at = r.end;
    }
    out.push(at..all.end);
    out
}

/// The original's `CargoBuild.extra()`: the active flag words, split into
/// characters, sorted and joined with `,`. A quirk, reproduced because it
/// is part of every cargo-build image's fingerprint. Then, when
/// `[workspace.metadata.mzbuild] image-rustflags` is set (the table itself
/// is not hashed), ` image-rustflags=` and the flags as a JSON list.
pub fn extra(settings: &Settings, image_rustflags: &[String]) -> String {
    let mut words = String::new();
    match settings.profile {
        Profile::Release => words.push_str("release"),
        Profile::Optimized => words.push_str("optimized"),
        Profile::Dev => {}
    }
    if settings.coverage {
        words.push_str("coverage");
    }
    if settings.sanitizer != "none" {
        words.push_str(&settings.sanitizer);
    }
    let mut chars: Vec<char> = words.chars().collect();
    chars.sort_unstable();
    let mut out = chars.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
    if !image_rustflags.is_empty() {
        out.push_str(RUSTFLAGS_WORD);
        out.push_str(&serde_json::to_string(image_rustflags).expect("strings serialise"));
    }
    out
}

/// What separates `image-rustflags` from the original's word in [`extra`].
pub const RUSTFLAGS_WORD: &str = " image-rustflags=";

/// Cargo's output directory name for a profile.
pub fn profile_dir(profile: Profile, has_optimized: bool) -> &'static str {
    match profile {
        Profile::Release => "release",
        Profile::Optimized if has_optimized => "optimized",
        Profile::Optimized => "release",
        Profile::Dev => "debug",
    }
}

/// The `cargo build` arguments for the batch (pure; snapshot-tested).
pub fn cargo_args(specs: &[&CargoBuildSpec], settings: &Settings, has_optimized: bool) -> Vec<String> {
    let mut args = vec!["build".to_string(), "--locked".into(), "--target".into(), settings.arch.rust_target()];
    match settings.profile {
        Profile::Release => args.push("--release".into()),
        Profile::Optimized if has_optimized => args.extend(["--profile".into(), "optimized".into()]),
        Profile::Optimized => args.push("--release".into()),
        Profile::Dev => {}
    }
    let bins: BTreeSet<&str> = specs.iter().flat_map(|s| s.bins.iter().map(String::as_str)).collect();
    let examples: BTreeSet<&str> = specs.iter().flat_map(|s| s.examples.iter().map(String::as_str)).collect();
    let features: BTreeSet<&str> = specs.iter().flat_map(|s| s.features.iter().map(String::as_str)).collect();
    for b in bins {
        args.extend(["--bin".into(), b.into()]);
    }
    for e in examples {
        args.extend(["--example".into(), e.into()]);
    }
    if !features.is_empty() {
        args.extend(["--features".into(), features.into_iter().collect::<Vec<_>>().join(",")]);
    }
    args.push("--message-format=json-render-diagnostics".into());
    args
}

/// The messages of `cargo build --message-format=json` that matter here.
#[derive(Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
enum Message {
    BuildScriptExecuted {
        package_id: String,
        out_dir: PathBuf,
    },
    CompilerArtifact {
        target: Target,
        #[serde(default)]
        executable: Option<PathBuf>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Target {
    kind: Vec<String>,
    name: String,
}

/// What the batch build runs with, beyond the repository and settings.
pub struct BuildEnv<'a> {
    pub env: &'a dyn Env,
    /// Variables (registry tokens) that must not reach cargo or build scripts.
    pub hidden: &'a [String],
    pub log_dir: &'a Path,
}

/// Build every binary of `batch` with one cargo invocation and put each
/// into its image's context; the files written, by image.
pub fn build(
    repo: &Repo,
    batch: &[(&Image, &CargoBuildSpec)],
    settings: &Settings,
    benv: &BuildEnv<'_>,
) -> Result<Vec<(String, PathBuf)>> {
    let mut written = Vec::new();
    if settings.sanitizer != "none" {
        bail!(
            "cargo-build with --sanitizer {} needs a nightly toolchain (-Zsanitizer), which this project does not \
             use: build without a sanitizer (fingerprints and specs with sanitizers work)",
            settings.sanitizer
        );
    }
    let graph = repo.crates()?;
    // Validate every bin/example up front, naming the image.
    for (image, spec) in batch {
        for b in &spec.bins {
            graph.crate_for_bin(b).with_context(|| format!("image `{}`", image.name))?;
        }
        for e in &spec.examples {
            graph.crate_for_example(e).with_context(|| format!("image `{}`", image.name))?;
        }
    }
    let specs: Vec<&CargoBuildSpec> = batch.iter().map(|(_, s)| *s).collect();
    let log = benv.log_dir.join("cargo-build.log");
    let mut cmd = cargo_command(repo, &specs, settings, benv, &log)?;
    let started = std::time::Instant::now();
    let root = repo.root();
    ui::live::cargo_started(&log, crate::cachefile::history::History::load(root).cargo_units);
    let (status, built) = run_cargo(&mut cmd)?;
    ui::live::cargo_finished();
    if !status.success() {
        bail!(
            "cargo build for images {} failed ({status}); last lines of {}:\n{}",
            batch
                .iter()
                .map(|(i, _)| format!("`{}`", i.name))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", "),
            log.display(),
            crate::docker::tail(&log, 25)
        );
    }
    let took = started.elapsed().as_secs_f64();
    ui::progress(format_args!("cargo build: done in {took:.1}s"));
    crate::cachefile::history::History::update(root, |h| {
        h.cargo_seconds = Some(took);
        h.cargo_units = Some(built.units);
    });
    for (image, spec) in batch {
        copy_executables(repo, image, spec, settings, &built, &mut written)?;
        extract_outputs(repo, image, spec, &built, &mut written)?;
    }
    Ok(written)
}

/// The one `cargo build` of a batch, its stderr to `log`, its flags from
/// Cargo.toml only.
fn cargo_command(
    repo: &Repo,
    specs: &[&CargoBuildSpec],
    settings: &Settings,
    benv: &BuildEnv<'_>,
    log: &Path,
) -> Result<std::process::Command> {
    let args = cargo_args(specs, settings, repo.workspace.has_optimized_profile);
    let target = settings.arch.rust_target();
    let mut rustflags = repo.workspace.image_rustflags.clone();
    if settings.coverage {
        rustflags.push("-Cinstrument-coverage".into());
    }
    let logf = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    ui::progress(format_args!("cargo {} (log: {})", args.join(" "), log.display()));
    let mut cmd = process::command(benv.env.non_empty("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(&args).current_dir(repo.root()).stdout(Stdio::piped()).stderr(logf).stdin(Stdio::null());
    // The image binaries' flags come from Cargo.toml only, which every
    // cargo-build fingerprint covers: flags from the environment would give
    // a different binary under the same content-addressed tag (and RUSTFLAGS
    // would silently replace the static linking of `FROM scratch` images).
    let env_key = format!("CARGO_TARGET_{}_RUSTFLAGS", target.to_uppercase().replace('-', "_"));
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", env_key.as_str(), "CARGO_BUILD_RUSTFLAGS"] {
        if benv.env.is_set(var) {
            ui::warn(format_args!(
                "${var} is ignored for image binaries: set their flags in Cargo.toml \
                 [workspace.metadata.mzbuild] image-rustflags, which the fingerprint covers"
            ));
            cmd.env_remove(var);
        }
    }
    for var in benv.hidden {
        cmd.env_remove(var);
    }
    let cargo_home = benv.env.path("CARGO_HOME").or_else(|| benv.env.path("HOME").map(|h| h.join(".cargo")));
    let remap = remap_flags(repo.root(), cargo_home.as_deref());
    match path_flags(&rustflags, &remap, config_has_target_rustflags(repo.root(), &target)) {
        PathFlags::Env(flags) => {
            cmd.env(&env_key, flags);
        }
        PathFlags::Config(key, flags) => {
            cmd.arg("--config").arg(format!("{}={flags}", key.replace("TARGET", &target)));
            if !rustflags.is_empty() {
                cmd.env(&env_key, rustflags.join(" "));
            }
        }
    }
    Ok(cmd)
}

/// `--remap-path-prefix` flags that take the checkout's path and the cargo
/// home's (registry and git sources) out of the binaries (panic locations,
/// debug info, `file!()`), so that two checkouts at different paths, with
/// different `CARGO_HOME`s, build byte-identical binaries. The cargo home
/// comes last: rustc applies the last matching prefix, and it may lie
/// inside the checkout.
pub fn remap_flags(root: &Path, cargo_home: Option<&Path>) -> Vec<String> {
    let mut flags = vec![format!("--remap-path-prefix={}=/workspace", root.display())];
    if let Some(home) = cargo_home {
        flags.push(format!("--remap-path-prefix={}=/cargo", home.display()));
    }
    flags
}

/// How the remapping flags reach rustc without changing which of the
/// user's flags apply.
#[derive(Debug, PartialEq, Eq)]
pub enum PathFlags {
    /// `CARGO_TARGET_<T>_RUSTFLAGS`: with `image-rustflags`, which set it
    /// already (space-separated).
    Env(String),
    /// `--config KEY=[...]`: cargo joins a `--config` array to the same
    /// key's arrays from config files, so a `.cargo/config.toml`'s
    /// `build.rustflags` (or, where it sets them, `target.<triple>.rustflags`)
    /// still apply; setting the target key when only `build.rustflags`
    /// exists would silently drop those.
    Config(String, String),
}

/// Where the remapping flags go (see [`PathFlags`]); `target_in_config` is
/// whether the root's cargo config sets rustflags for the target.
pub fn path_flags(image_rustflags: &[String], remap: &[String], target_in_config: bool) -> PathFlags {
    if !image_rustflags.is_empty() {
        return PathFlags::Env(image_rustflags.iter().chain(remap).cloned().collect::<Vec<_>>().join(" "));
    }
    let key = if target_in_config { "target.TARGET.rustflags" } else { "build.rustflags" };
    PathFlags::Config(key.into(), serde_json::to_string(remap).expect("strings serialise"))
}

/// Whether `.cargo/config.toml` (or `.cargo/config`) at the root sets
/// `rustflags` in a `[target.*]` table (for `target` or a `cfg(...)`):
/// cargo then ignores `build.rustflags`.
fn config_has_target_rustflags(root: &Path, target: &str) -> bool {
    ["config.toml", "config"].iter().any(|name| {
        let Ok(text) = std::fs::read_to_string(root.join(".cargo").join(name)) else { return false };
        let Ok(doc) = text.parse::<toml::Table>() else { return false };
        doc.get("target").and_then(|t| t.as_table()).is_some_and(|targets| {
            targets
                .iter()
                .any(|(key, table)| (key == target || key.starts_with("cfg(")) && table.get("rustflags").is_some())
        })
    })
}

/// What cargo reported building: each package's build-script `OUT_DIR`,
/// and each executable by (target kind, name).
#[derive(Default)]
struct Built {
    out_dirs: BTreeMap<String, PathBuf>,
    artifacts: BTreeMap<(String, String), PathBuf>,
    /// Units cargo built (`compiler-artifact` messages), for the estimate.
    units: usize,
}

/// Run cargo, reading its JSON messages as they come.
fn run_cargo(cmd: &mut std::process::Command) -> Result<(std::process::ExitStatus, Built)> {
    // Its own process group, registered for the interrupt handler: a
    // SIGTERM sent to xtask alone (a cancelled CI job) must stop cargo too.
    let mut child = GroupChild::spawn(cmd).context("starting cargo build")?;
    let mut built = Built::default();
    // Cargo's messages are read on a thread of their own, so that this one
    // keeps the status line moving while a long crate compiles.
    let stdout = child.take_stdout().expect("piped");
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let end = line.is_err();
            if tx.send(line).is_err() || end {
                break;
            }
        }
    });
    loop {
        let line = match rx.recv_timeout(ui::live::TICK) {
            Ok(line) => line,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                ui::live::tick();
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        // A read error drops `child`, which kills and reaps cargo.
        let line = line.context("reading cargo's output")?;
        match serde_json::from_str::<Message>(&line) {
            Ok(Message::BuildScriptExecuted { package_id, out_dir }) => {
                built.out_dirs.insert(package_name(&package_id), out_dir);
            }
            Ok(Message::CompilerArtifact { target, executable }) => {
                built.units += 1;
                ui::live::cargo_unit();
                if let Some(exe) = executable {
                    let kind = target.kind.into_iter().next().unwrap_or_default();
                    built.artifacts.insert((kind, target.name), exe);
                }
            }
            _ => {}
        }
    }
    Ok((child.wait()?, built))
}

/// Copy (and strip) the image's binaries and examples into its context.
fn copy_executables(
    repo: &Repo,
    image: &Image,
    spec: &CargoBuildSpec,
    settings: &Settings,
    built: &Built,
    written: &mut Vec<(String, PathBuf)>,
) -> Result<()> {
    let ctx = repo.root().join(&image.dir);
    let items = spec
        .bins
        .iter()
        .map(|b| ("bin", b, ctx.join(b)))
        .chain(spec.examples.iter().map(|e| ("example", e, ctx.join("examples").join(e))));
    for (kind, name, dest) in items {
        let src = built.artifacts.get(&(kind.to_string(), name.clone())).cloned().unwrap_or_else(|| {
            let profile = profile_dir(settings.profile, repo.workspace.has_optimized_profile);
            let dir = repo.root().join("target").join(settings.arch.rust_target()).join(profile);
            if kind == "bin" {
                dir.join(name)
            } else {
                dir.join("examples").join(name)
            }
        });
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        written.push((image.name.clone(), dest.clone()));
        std::fs::copy(&src, &dest).with_context(|| {
            format!("image `{}`: copying {kind} `{name}` from {} to {}", image.name, src.display(), dest.display())
        })?;
        if spec.strip {
            let out = process::command("strip").arg("--strip-debug").arg(&dest).output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => bail!(
                    "image `{}`: strip --strip-debug {} failed: {}",
                    image.name,
                    dest.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => bail!("image `{}`: cannot run `strip` ({e}): install binutils", image.name),
            }
        }
    }
    Ok(())
}

/// Copy the build-script outputs the image's `extract` names into its
/// context.
fn extract_outputs(
    repo: &Repo,
    image: &Image,
    spec: &CargoBuildSpec,
    built: &Built,
    written: &mut Vec<(String, PathBuf)>,
) -> Result<()> {
    let ctx = repo.root().join(&image.dir);
    for (pkg, files) in &spec.extract {
        let out_dir = built.out_dirs.get(pkg).ok_or_else(|| {
            anyhow!(
                "image `{}`: `extract` names package `{pkg}`, but no build script of that package ran in this build",
                image.name
            )
        })?;
        for (src, dst) in files {
            let to = ctx.join(dst);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            written.push((image.name.clone(), to.clone()));
            std::fs::copy(out_dir.join(src), &to).with_context(|| {
                format!("image `{}`: extracting {src} of `{pkg}` from {}", image.name, out_dir.display())
            })?;
        }
    }
    Ok(())
}

/// The package name in a cargo package id: `path+file:///x/foo#0.1.0`,
/// `path+file:///x/dir#foo@0.1.0`, or the older `foo 0.1.0 (path+file://..)`.
fn package_name(id: &str) -> String {
    if let Some((url, frag)) = id.split_once('#') {
        return match frag.split_once('@') {
            Some((name, _)) => name.to_string(),
            None => url.rsplit('/').next().unwrap_or(url).to_string(),
        };
    }
    id.split(' ').next().unwrap_or(id).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::Arch;
    use expect_test::expect;

    #[test]
    fn one_cargo_build_for_the_batch() {
        let a = CargoBuildSpec {
            bins: vec!["b".into(), "a".into()],
            features: vec!["f".into()],
            strip: true,
            ..Default::default()
        };
        let b = CargoBuildSpec {
            bins: vec!["a".into()],
            examples: vec!["ex".into()],
            features: vec!["g".into(), "f".into()],
            strip: false,
            ..Default::default()
        };
        let s = Settings { profile: Profile::Optimized, arch: Arch::X86_64, coverage: false, sanitizer: "none".into() };
        expect![[r#"build --locked --target x86_64-unknown-linux-gnu --profile optimized --bin a --bin b --example ex --features f,g --message-format=json-render-diagnostics"#]]
        .assert_eq(&cargo_args(&[&a, &b], &s, true).join(" "));
        expect![[r#"build --locked --target x86_64-unknown-linux-gnu --release --bin a --bin b --example ex --features f,g --message-format=json-render-diagnostics"#]]
        .assert_eq(&cargo_args(&[&a, &b], &s, false).join(" "));
        let s = Settings { profile: Profile::Dev, arch: Arch::Aarch64, ..s };
        expect![[
            r#"build --locked --target aarch64-unknown-linux-gnu --bin a --message-format=json-render-diagnostics"#
        ]]
        .assert_eq(
            &cargo_args(&[&CargoBuildSpec { bins: vec!["a".into()], ..Default::default() }], &s, true).join(" "),
        );
    }

    #[test]
    fn paths_are_remapped_without_dropping_config_rustflags() {
        let remap = remap_flags(Path::new("/home/a/repo"), Some(Path::new("/home/a/.cargo")));
        assert_eq!(remap, ["--remap-path-prefix=/home/a/repo=/workspace", "--remap-path-prefix=/home/a/.cargo=/cargo"]);
        // With image-rustflags (which set the target's variable already).
        assert_eq!(
            path_flags(&["-C".into(), "target-feature=+crt-static".into()], &remap, false),
            PathFlags::Env(
                "-C target-feature=+crt-static --remap-path-prefix=/home/a/repo=/workspace \
                 --remap-path-prefix=/home/a/.cargo=/cargo"
                    .into()
            )
        );
        let json = r#"["--remap-path-prefix=/home/a/repo=/workspace","--remap-path-prefix=/home/a/.cargo=/cargo"]"#;
        assert_eq!(path_flags(&[], &remap, false), PathFlags::Config("build.rustflags".into(), json.into()));
        assert_eq!(path_flags(&[], &remap, true), PathFlags::Config("target.TARGET.rustflags".into(), json.into()));
    }

    #[test]
    fn package_names() {
        assert_eq!(package_name("path+file:///r/src/foo#0.1.0"), "foo");
        assert_eq!(package_name("path+file:///r/src/dir#foo@0.1.0"), "foo");
        assert_eq!(package_name("registry+https://github.com/rust-lang/crates.io-index#serde@1.0.0"), "serde");
        assert_eq!(package_name("foo 0.1.0 (path+file:///r/src/foo)"), "foo");
    }

    #[test]
    fn extra_matches_the_original_quirk() {
        let mut s =
            Settings { profile: Profile::Release, arch: Arch::X86_64, coverage: false, sanitizer: "none".into() };
        assert_eq!(extra(&s, &[]), "a,e,e,e,l,r,s");
        s.profile = Profile::Optimized;
        assert_eq!(extra(&s, &[]), "d,e,i,i,m,o,p,t,z");
        s.profile = Profile::Dev;
        assert_eq!(extra(&s, &[]), "");
        s.coverage = true;
        assert_eq!(extra(&s, &[]), "a,c,e,e,g,o,r,v");
        assert_eq!(extra(&s, &["-C".into(), "x y".into()]), r#"a,c,e,e,g,o,r,v image-rustflags=["-C","x y"]"#);
    }
}
