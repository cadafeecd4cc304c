//! Pre-image steps, run before `docker build`: clean the contexts of
//! git-ignored leftovers, `copy` files in, and build every cargo-build
//! binary of the run with ONE `cargo build --target <arch>-unknown-linux-gnu`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use crate::config::{CargoBuildSpec, PreImage};
use crate::fingerprint::copy_matches;
use crate::repo::{Image, Repo};
use crate::settings::{Profile, Settings};

/// Run the pre-images of `images` (the ones about to be built). Progress to
/// stderr; cargo's output to `log_dir/cargo-build.log`. Returns the images
/// whose pre-images failed, with the reason: those fail (and their
/// dependants are skipped), the others still build.
pub fn run_all(
    repo: &Repo,
    images: &[&Image],
    settings: &Settings,
    log_dir: &Path,
) -> Result<BTreeMap<String, String>> {
    let mut failed = BTreeMap::new();
    let mut outputs: Vec<(String, PathBuf)> = Vec::new();
    for image in images {
        match clean_context(repo, image).and_then(|()| run_copies(repo, image)) {
            Ok(written) => outputs.extend(written.into_iter().map(|p| (image.name.clone(), p))),
            Err(e) => {
                failed.insert(image.name.clone(), format!("{e:#}"));
            }
        }
    }
    let cargo: Vec<(&Image, &CargoBuildSpec)> = images
        .iter()
        .filter(|i| !failed.contains_key(&i.name))
        .flat_map(|i| {
            i.config.pre_images.iter().filter_map(move |p| match p {
                PreImage::CargoBuild(cb) => Some((*i, cb)),
                _ => None,
            })
        })
        .collect();
    if !cargo.is_empty() {
        match cargo_build(repo, &cargo, settings, log_dir) {
            Ok(written) => outputs.extend(written),
            Err(e) => {
                let msg = format!("{e:#}");
                for (image, _) in &cargo {
                    failed.insert(image.name.clone(), msg.clone());
                }
            }
        }
    }
    warn_unignored_outputs(repo, &outputs);
    Ok(failed)
}

/// Pre-image outputs that git does not ignore become inputs of their image
/// once built, so the image's fingerprint changes after every build (and
/// the published tag no longer names what is in the tree): say so, once per
/// image, with the fix.
fn warn_unignored_outputs(repo: &Repo, outputs: &[(String, PathBuf)]) {
    use std::io::Write;
    if outputs.is_empty() {
        return;
    }
    let rel: Vec<String> = outputs
        .iter()
        .filter_map(|(_, p)| p.strip_prefix(repo.root()).ok().and_then(|r| r.to_str()).map(str::to_string))
        .collect();
    let child = Command::new("git")
        .args(["check-ignore", "-z", "--stdin"])
        .current_dir(repo.root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return };
    if let Some(mut stdin) = child.stdin.take() {
        let input: Vec<u8> = rel.iter().flat_map(|r| r.bytes().chain([0])).collect();
        let _ = stdin.write_all(&input);
    }
    let Ok(out) = child.wait_with_output() else { return };
    if out.status.code() == Some(128) {
        return;
    }
    let ignored: BTreeSet<&[u8]> = out.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()).collect();
    let mut per_image: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for ((image, _), r) in outputs.iter().zip(&rel) {
        if !ignored.contains(r.as_bytes()) {
            per_image.entry(image).or_default().push(r);
        }
    }
    for (image, paths) in per_image {
        let dir = &repo.images[image].dir;
        let first = paths[0];
        let top = first.strip_prefix(&format!("{dir}/")).and_then(|r| r.split('/').next()).unwrap_or(first);
        eprintln!(
            "warning: image `{image}`: pre-image output {first}{} is not git-ignored, so it becomes an input \
             and the image's fingerprint changes after every build; add `/{top}` to {dir}/.gitignore",
            if paths.len() > 1 { format!(" (and {} more)", paths.len() - 1) } else { String::new() }
        );
    }
}

fn run_copies(repo: &Repo, image: &Image) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for pre in &image.config.pre_images {
        if let PreImage::Copy(c) = pre {
            let dest = repo.root().join(&image.dir).join(&c.destination);
            for f in copy_matches(repo, &c.source, &c.matching)? {
                let rel = &f[c.source.len() + 1..];
                let to = dest.join(rel);
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
                }
                std::fs::copy(repo.root().join(f), &to)
                    .with_context(|| format!("image `{}`: copying {f} to {}", image.name, to.display()))?;
                written.push(to);
            }
        }
    }
    Ok(written)
}

/// Remove every file of the image's context that git does not see (ignored
/// build outputs, stale copies): they must never reach an image. Files of
/// nested images are left to those images.
pub fn clean_context(repo: &Repo, image: &Image) -> Result<()> {
    let visible: BTreeSet<&str> = repo.tree.under(&image.dir).iter().map(String::as_str).collect();
    let nested: BTreeSet<&str> = repo.nested_dirs(image).collect();
    fn visit(root: &Path, rel: &str, visible: &BTreeSet<&str>, nested: &BTreeSet<&str>) -> Result<bool> {
        // Returns whether the directory still holds anything.
        let mut keeps = false;
        let dir = root.join(rel);
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                keeps = true;
                continue;
            };
            let child = format!("{rel}/{name}");
            let ft = entry.file_type()?;
            if ft.is_dir() {
                // Repositories and nested images are not ours to clean.
                let foreign = name == ".git" || nested.contains(child.as_str()) || entry.path().join(".git").exists();
                if foreign || visit(root, &child, visible, nested)? {
                    keeps = true;
                } else {
                    std::fs::remove_dir(entry.path()).with_context(|| format!("removing {child}"))?;
                }
            } else if visible.contains(child.as_str()) {
                keeps = true;
            } else {
                std::fs::remove_file(entry.path()).with_context(|| format!("removing git-ignored {child}"))?;
            }
        }
        Ok(keeps)
    }
    visit(repo.root(), &image.dir, &visible, &nested)?;
    Ok(())
}

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

/// Returns the files it wrote into contexts, by image.
fn cargo_build(
    repo: &Repo,
    batch: &[(&Image, &CargoBuildSpec)],
    settings: &Settings,
    log_dir: &Path,
) -> Result<Vec<(String, PathBuf)>> {
    let mut written = Vec::new();
    if settings.sanitizer != "none" {
        bail!(
            "cargo-build with --sanitizer {} needs a nightly toolchain (-Zsanitizer), which this project does not \
             use: build without a sanitizer (fingerprints and specs with sanitizers work)",
            settings.sanitizer
        );
    }
    let ws = repo.workspace()?;
    // Validate every bin/example up front, naming the image.
    for (image, spec) in batch {
        for b in &spec.bins {
            ws.crate_for_bin(b).with_context(|| format!("image `{}`", image.name))?;
        }
        for e in &spec.examples {
            ws.crate_for_example(e).with_context(|| format!("image `{}`", image.name))?;
        }
    }
    let specs: Vec<&CargoBuildSpec> = batch.iter().map(|(_, s)| *s).collect();
    let args = cargo_args(&specs, settings, ws.has_optimized_profile);
    let target = settings.arch.rust_target();
    let mut rustflags: Vec<String> = match ws.mzbuild_metadata.as_ref().and_then(|m| m.get("image-rustflags")) {
        None => vec![],
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_string)).collect::<Option<Vec<_>>>())
            .ok_or_else(|| {
                anyhow!("Cargo.toml: [workspace.metadata.mzbuild] image-rustflags must be a list of strings")
            })?,
    };
    if settings.coverage {
        rustflags.push("-Cinstrument-coverage".into());
    }
    let log = log_dir.join("cargo-build.log");
    let logf = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    eprintln!("mzbuild: cargo {} (log: {})", args.join(" "), log.display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(&args).current_dir(repo.root()).stdout(Stdio::piped()).stderr(logf).stdin(Stdio::null());
    // The image binaries' flags come from Cargo.toml only, which every
    // cargo-build fingerprint covers: flags from the environment would give
    // a different binary under the same content-addressed tag (and RUSTFLAGS
    // would silently replace the static linking of `FROM scratch` images).
    let env_key = format!("CARGO_TARGET_{}_RUSTFLAGS", target.to_uppercase().replace('-', "_"));
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", env_key.as_str(), "CARGO_BUILD_RUSTFLAGS"] {
        if std::env::var_os(var).is_some() {
            eprintln!(
                "warning: ${var} is ignored for image binaries: set their flags in Cargo.toml \
                 [workspace.metadata.mzbuild] image-rustflags, which the fingerprint covers"
            );
            cmd.env_remove(var);
        }
    }
    if !rustflags.is_empty() {
        cmd.env(&env_key, rustflags.join(" "));
    }
    // Its own process group, registered for the interrupt handler: a
    // SIGTERM sent to xtask alone (a cancelled CI job) must stop cargo too.
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().context("starting cargo build")?;
    let pgid = child.id();
    crate::cleanup::add_group(pgid);
    let mut out_dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut artifacts: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        match msg["reason"].as_str() {
            Some("build-script-executed") => {
                if let (Some(id), Some(dir)) = (msg["package_id"].as_str(), msg["out_dir"].as_str()) {
                    out_dirs.insert(package_name(id), PathBuf::from(dir));
                }
            }
            Some("compiler-artifact") => {
                let kind = msg["target"]["kind"][0].as_str().unwrap_or("");
                if let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str()) {
                    artifacts.insert((kind.to_string(), name.to_string()), PathBuf::from(exe));
                }
            }
            _ => {}
        }
    }
    let status = child.wait();
    crate::cleanup::remove_group(pgid);
    let status = status?;
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
    for (image, spec) in batch {
        let ctx = repo.root().join(&image.dir);
        let items = spec
            .bins
            .iter()
            .map(|b| ("bin", b, ctx.join(b)))
            .chain(spec.examples.iter().map(|e| ("example", e, ctx.join("examples").join(e))));
        for (kind, name, dest) in items {
            let src = artifacts.get(&(kind.to_string(), name.clone())).cloned().unwrap_or_else(|| {
                let dir = repo
                    .root()
                    .join("target")
                    .join(&target)
                    .join(profile_dir(settings.profile, ws.has_optimized_profile));
                if kind == "bin" {
                    dir.join(name)
                } else {
                    dir.join("examples").join(name)
                }
            });
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            written.push((image.name.clone(), dest.clone()));
            std::fs::copy(&src, &dest).with_context(|| {
                format!("image `{}`: copying {kind} `{name}` from {} to {}", image.name, src.display(), dest.display())
            })?;
            if spec.strip {
                let out = Command::new("strip").arg("--strip-debug").arg(&dest).output();
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
        for (pkg, files) in &spec.extract {
            let out_dir = out_dirs.get(pkg).ok_or_else(|| {
                anyhow!("image `{}`: `extract` names package `{pkg}`, but no build script of that package ran in this build", image.name)
            })?;
            for (src, dst) in files {
                let to = ctx.join(dst);
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                written.push((image.name.clone(), to.clone()));
                std::fs::copy(out_dir.join(src), &to).with_context(|| {
                    format!("image `{}`: extracting {src} of `{pkg}` from {}", image.name, out_dir.display())
                })?;
            }
        }
    }
    Ok(written)
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
    use crate::settings::Arch;
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
    fn package_names() {
        assert_eq!(package_name("path+file:///r/src/foo#0.1.0"), "foo");
        assert_eq!(package_name("path+file:///r/src/dir#foo@0.1.0"), "foo");
        assert_eq!(package_name("registry+https://github.com/rust-lang/crates.io-index#serde@1.0.0"), "serde");
        assert_eq!(package_name("foo 0.1.0 (path+file:///r/src/foo)"), "foo");
    }
}
