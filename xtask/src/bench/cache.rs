//! `cargo xtask bench cache`: the cold-agent rebuild of an image whose slow
//! `RUN` step sits below an edited file, with and without the shared layer
//! cache (`[workspace.metadata.mzbuild] cache`).
//!
//! A small repository of its own (in `target/bench/cache-<run>`) holds one
//! image, `slow`: busybox, `RUN sleep <--run-secs>` (the apt installs and
//! toolchain downloads of a real image), then `in.txt`. It publishes to a
//! fresh path of `127.0.0.1:5000`. Each measurement edits `in.txt`,
//! commits, makes the engine a cold agent for this image and times
//! `ensure`, importing from the commit before it: with `cache = { to =
//! "beside" }` (on buildx's `docker` driver the inline cache pushed beside
//! the image as `mzbuild-<fp>-cache`, whose push the time includes), with
//! `to = "inline"` (the metadata in the image itself), and without (`from =
//! "none", to = "none"`; on this driver the default exports nothing, so it
//! is this). Commits between them export what the next one
//! imports (see docs/cache.md); the inline row's from a build that ran the
//! RUN step itself, its best case (an inline export after an import does
//! not carry the imported layers).
//!
//! The cold agent: by default the engine forgets this image alone (its
//! local images, and the build-cache records of its steps, which all name
//! the run's unique marker) so that other users of a shared engine keep
//! their cache; `--prune-all` runs `docker buildx prune -af` instead, as on
//! a machine of its own.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mzbuild::Status;

use super::generate::git;
use crate::flags::BenchCache;

const HOST: &str = "127.0.0.1:5000";

pub fn run(args: BenchCache) -> Result<Status> {
    let marker =
        format!("bench-cache-{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis());
    let dir = args.dir.join(&marker);
    let url = format!("{HOST}/{marker}");
    let result = measure(&args, &dir, &marker, &url);
    // Whatever happened: the repository and the images go.
    remove_local_images(&url);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(args: &BenchCache, dir: &Path, marker: &str, url: &str) -> Result<Status> {
    let image = dir.join("images/slow");
    std::fs::create_dir_all(&image)?;
    git(dir, &["init", "-q", "-b", "main"])?;
    std::fs::write(dir.join(".gitignore"), "/target/\n")?;
    std::fs::copy("/bin/busybox", image.join("busybox")).context("copying /bin/busybox (`bash ci/stack.sh up`)")?;
    std::fs::write(image.join("mzbuild.yml"), "name: slow\n")?;
    // Every step names the marker: the cold agent forgets exactly them.
    std::fs::write(
        image.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox-{marker}\nRUN [\"/bin/busybox-{marker}\", \"sleep\", \"{}\"]\n\
             COPY in.txt /in.txt\n",
            args.run_secs
        ),
    )?;
    let cargo_toml = |cache: &str| {
        format!(
            "[workspace]\nmembers = []\n\n[workspace.metadata.mzbuild]\nregistries = [{{ url = \"{url}\" }}]\n\
             cache = {cache}\n"
        )
    };
    let commit = |n: usize, cache: &str| -> Result<()> {
        std::fs::write(dir.join("Cargo.toml"), cargo_toml(cache))?;
        std::fs::write(image.join("in.txt"), format!("{n}\n"))?;
        git(dir, &["add", "-A"])?;
        git(dir, &["-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q", "-m", "edit"])
    };
    const BESIDE: &str = r#"{ to = "beside" }"#;
    const INLINE: &str = r#"{ to = "inline" }"#;
    // An inline export from a build that imported its layers does not
    // carry them (every other commit of an inline chain runs the RUN step
    // again): the inline row imports from a commit that ran it.
    const INLINE_FRESH: &str = r#"{ from = "none", to = "inline" }"#;
    const NONE: &str = r#"{ from = "none", to = "none" }"#;
    commit(0, BESIDE)?;
    let seed = ensure(dir)?;
    eprintln!("bench: first commit published in {:.1} s", seed.as_secs_f64());
    let mut n = 0;
    let mut measure = |cache: &str| -> Result<Duration> {
        n += 1;
        commit(n, cache)?;
        cold(args.prune_all, marker, url)?;
        ensure(dir)
    };
    let (mut beside, mut inline, mut without) = (vec![], vec![], vec![]);
    for _ in 0..args.runs {
        // Each imports from the commit before it, which exported the
        // cache its row reads: beside <- beside (or the seed), inline <- a
        // commit that ran the RUN step and exported inline.
        beside.push(measure(BESIDE)?);
        measure(INLINE_FRESH)?;
        inline.push(measure(INLINE)?);
        without.push(measure(NONE)?);
        measure(BESIDE)?;
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (b, i, wo) = (median(&mut beside), median(&mut inline), median(&mut without));
    println!(
        "bench cache: cold-agent rebuild of an image with a {} s RUN below an edited file ({}; {} run(s), medians)",
        args.run_secs,
        if args.prune_all { "after docker buildx prune -af" } else { "its build cache and images forgotten" },
        args.runs
    );
    println!("  {:<58} {:>8} {:>10}", "", "time s", "/ without");
    let row = |what: &str, t: Duration| {
        println!("  {what:<58} {:>8.2} {:>10.2}", t.as_secs_f64(), t.as_secs_f64() / wo.as_secs_f64());
    };
    row("to = \"beside\" (imports; pushes its cache beside the image)", b);
    row("to = \"inline\" (imports; metadata in the image; best case)", i);
    row("without (from = \"none\", to = \"none\")", wo);
    println!("  (each time is a whole `ensure`: fingerprints, registry checks, the build and the pushes; goal <= 0.2)");
    Ok(Status::Success)
}

/// `mzbuild ensure` in `dir`, timed.
fn ensure(dir: &Path) -> Result<Duration> {
    let exe = std::env::current_exe().context("finding this program")?;
    let mut cmd = mzbuild::process::command(&exe);
    cmd.args(["mzbuild", "--root"]).arg(dir).args(["--arch", "x86_64", "ensure"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let t = Instant::now();
    let status = cmd.status().context("running mzbuild ensure")?;
    let took = t.elapsed();
    if !status.success() {
        bail!("mzbuild ensure failed in {} (is the stack up? `bash ci/stack.sh up`)", dir.display());
    }
    Ok(took)
}

/// Make the engine a fresh agent for the image: its local images go, and
/// its build-cache records (see the module docs).
fn cold(prune_all: bool, marker: &str, url: &str) -> Result<()> {
    remove_local_images(url);
    if prune_all {
        let ok = docker(&["buildx", "prune", "-af"])?;
        if !ok.status.success() {
            bail!("docker buildx prune -af failed");
        }
        return Ok(());
    }
    for _ in 0..5 {
        let du = docker(&["buildx", "du", "--verbose"])?;
        let doomed = mzbuild::docker::build_cache_records_to_prune(&String::from_utf8_lossy(&du.stdout), marker);
        if doomed.is_empty() {
            return Ok(());
        }
        for id in &doomed {
            docker(&["buildx", "prune", "-f", "--filter", &format!("id={id}")])?;
        }
    }
    bail!("the build cache still holds records of {marker} after 5 rounds of pruning")
}

fn docker(args: &[&str]) -> Result<std::process::Output> {
    mzbuild::process::command("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))
}

/// Remove the local engine's tags under `url`.
fn remove_local_images(url: &str) {
    let Ok(out) = docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]) else { return };
    let mine: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|r| r.starts_with(&format!("{url}/")))
        .map(str::to_string)
        .collect();
    if !mine.is_empty() {
        let mut args = vec!["rmi"];
        args.extend(mine.iter().map(String::as_str));
        let _ = docker(&args);
    }
}
