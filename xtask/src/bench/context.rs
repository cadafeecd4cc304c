//! `cargo xtask bench context`: what sending a build context costs as the
//! normalised tar stream mzbuild now writes (`build::context`) against the
//! image directory that buildx read before (`-f - DIR`), for a context made
//! of one large incompressible file (a cargo binary's stand-in) and a few
//! small ones.
//!
//! Measured: (1) preparing the tar alone (written to a sink: mzbuild's own
//! time and its peak memory); (2) a whole `docker buildx build --load` of
//! `FROM scratch` + `COPY . /ctx/` with each kind of context, `--no-cache`,
//! each in a child process of this one (`bench context --variant ...`), so
//! that the peak memory of the process and of its children (the docker CLI
//! and buildx) is that variant's alone.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mzbuild::build::context::BuildContext;
use mzbuild::Status;

use super::generate::Rng;
use crate::flags::BenchContext;

const TAG: &str = "mzbuild-bench-context:latest";

pub fn run(args: BenchContext) -> Result<Status> {
    let dir = args.dir.join(format!("ctx-{}mb", args.size_mb));
    prepare(&dir, args.size_mb)?;
    if let Some(variant) = &args.variant {
        return child(&dir, variant);
    }
    let ctx = context(&dir)?;
    let bytes = ctx.content_bytes();
    // (1) The tar alone, into a sink.
    let before = peak_rss();
    let mut times = vec![];
    for _ in 0..args.runs {
        let started = Instant::now();
        let mut sink = Counter(0);
        ctx.write_tar(&mut sink)?;
        times.push(started.elapsed());
    }
    let after = peak_rss();
    let (best, median) = super::stats(&times);
    println!("mzbuild context benchmark: {}", dir.display());
    println!(
        "context      {} files, {:.1} MB of content (one {} MB incompressible file)",
        ctx.paths().iter().filter(|p| !p.ends_with('/')).count(),
        bytes as f64 / 1e6,
        args.size_mb
    );
    println!("machine      load average {}", super::load_average().unwrap_or_else(|| "unknown".into()));
    println!();
    println!(
        "tar stream into a sink                  best {:>9.1}ms  median {:>9.1}ms  ({:.0} MB/s)",
        super::ms(best),
        super::ms(median),
        bytes as f64 / 1e6 / best.as_secs_f64()
    );
    println!(
        "  peak RSS of this process              before {:>7.1} MB  after {:>7.1} MB",
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    println!();
    println!("docker buildx build --no-cache --load   wall        peak RSS self   peak RSS docker+buildx");
    let mut rows = vec![];
    for variant in ["dir", "tar"] {
        let exe = std::env::current_exe()?;
        let mut cmd = mzbuild::process::command(&exe);
        cmd.args(["bench", "context", "--variant", variant, "--size-mb", &args.size_mb.to_string(), "--dir"])
            .arg(&args.dir)
            .stderr(Stdio::inherit());
        let out = cmd.output().context("running a variant")?;
        if !out.status.success() {
            bail!("variant {variant} failed: {}", String::from_utf8_lossy(&out.stdout));
        }
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let f: Vec<f64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        if f.len() != 3 {
            bail!("variant {variant}: unexpected output `{text}`");
        }
        let label = if variant == "dir" { "directory (before: -f - DIR)" } else { "tar stream (now: -f Dockerfile -)" };
        println!("  {label:<36} {:>8.2}s   {:>9.1} MB   {:>12.1} MB", f[0], f[1] / 1e6, f[2] / 1e6);
        rows.push(f);
    }
    println!(
        "ratio tar / directory: wall {:.2}, peak RSS docker+buildx {:.2}",
        rows[1][0] / rows[0][0],
        rows[1][2] / rows[0][2]
    );
    let _ = mzbuild::process::command("docker").args(["rmi", TAG]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    Ok(Status::Success)
}

/// One build with one kind of context; prints `seconds self_rss children_rss`.
fn child(dir: &Path, variant: &str) -> Result<Status> {
    let started = Instant::now();
    let base = ["buildx", "build", "--no-cache", "--progress=quiet", "--provenance=false", "-t", TAG, "--load"];
    let mut cmd = mzbuild::process::command("docker");
    cmd.args(base).env("SOURCE_DATE_EPOCH", "0").stdout(Stdio::null()).stderr(Stdio::inherit()).stdin(Stdio::piped());
    let dockerfile = std::fs::read(dir.join("Dockerfile"))?;
    match variant {
        "dir" => {
            cmd.args(["-f", "-"]).arg(dir);
            let mut child = cmd.spawn()?;
            child.stdin.take().expect("piped").write_all(&dockerfile)?;
            wait(child)?;
        }
        "tar" => {
            cmd.args(["-f", "Dockerfile", "-"]);
            let ctx = context(dir)?;
            let mut child = cmd.spawn()?;
            let mut stdin = child.stdin.take().expect("piped");
            std::thread::scope(|s| -> Result<()> {
                let writer = s.spawn(move || ctx.write_tar(&mut stdin));
                wait(child)?;
                writer.join().map_err(|_| anyhow::anyhow!("the writer panicked"))??;
                Ok(())
            })?;
        }
        _ => bail!("--variant is dir or tar"),
    }
    let wall = started.elapsed();
    println!("{:.3} {} {}", wall.as_secs_f64(), peak_rss(), children_peak_rss());
    Ok(Status::Success)
}

fn wait(mut child: std::process::Child) -> Result<()> {
    let status = child.wait()?;
    if !status.success() {
        bail!("docker buildx build failed ({status})");
    }
    Ok(())
}

/// The context of `dir` as mzbuild builds it: every file, nothing written
/// by pre-images.
fn context(dir: &Path) -> Result<BuildContext> {
    let root = dir.parent().expect("a parent");
    let name = dir.file_name().expect("a name").to_string_lossy().to_string();
    let mut visible = vec![];
    for entry in std::fs::read_dir(dir)? {
        visible.push(format!("{name}/{}", entry?.file_name().to_string_lossy()));
    }
    visible.sort();
    let dockerfile = std::fs::read(dir.join("Dockerfile"))?;
    BuildContext::new(root, &name, "bench", &visible, &[], dockerfile)
}

/// The context directory: a Dockerfile, `size_mb` MB of incompressible
/// bytes in `big.bin`, and a few small files (kept when already there).
fn prepare(dir: &Path, size_mb: usize) -> Result<()> {
    let big = dir.join("big.bin");
    if big.metadata().is_ok_and(|m| m.len() == (size_mb as u64) << 20) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY . /ctx/\n")?;
    for i in 0..20 {
        std::fs::write(dir.join(format!("small-{i}.txt")), format!("small file {i}\n"))?;
    }
    let mut rng = Rng(14);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&big)?);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..size_mb {
        for chunk in buf.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        f.write_all(&buf)?;
    }
    f.flush()?;
    Ok(())
}

struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Peak resident memory of this process, bytes.
fn peak_rss() -> u64 {
    maxrss(libc::RUSAGE_SELF)
}

/// Peak resident memory of the largest waited-for descendant, bytes.
fn children_peak_rss() -> u64 {
    maxrss(libc::RUSAGE_CHILDREN)
}

fn maxrss(who: libc::c_int) -> u64 {
    // SAFETY: getrusage writes into the struct we hand it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    // Kilobytes on Linux, bytes on macOS.
    if cfg!(target_os = "macos") {
        usage.ru_maxrss as u64
    } else {
        usage.ru_maxrss as u64 * 1024
    }
}
