//! `cargo xtask bench ...`: benchmarks of mzbuild itself.
//!
//! `bench fingerprint` generates a Materialize-shaped monorepo (once; it is
//! reused while the parameters match) and measures, in one process, the time
//! to fingerprint every image beside a floor: `git ls-files` plus one
//! single-threaded pass that reads and SHA-1-hashes each unique input file.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha1::{Digest, Sha1};

use crate::cli::{Bench, BenchFingerprint, GeneratedRepo};
use crate::config::PreImage;
use crate::fingerprint;
use crate::repo::Repo;
use crate::settings::{Arch, Profile, Settings};
use crate::tree::Tree;

pub fn run(b: Bench) -> Result<ExitCode> {
    match b {
        Bench::Fingerprint(args) => bench_fingerprint(args),
        Bench::Ensure(args) => crate::bench_ensure::run(args),
    }
}

/// Bump when the generator's output changes, so old repositories are
/// regenerated.
const GENERATOR_VERSION: u32 = 3;
const SEED: u64 = 0x6d7a_6275_696c_6421;
const STAMP: &str = ".git/mzbuild-bench-stamp";
/// The file (in the ignored `target/`) used to compare SHA-1 speed with
/// `sha1sum`.
const SPEED_FILE: &str = "target/sha1-speed.bin";
const SPEED_FILE_LEN: usize = 128 << 20;

// ---------------------------------------------------------------------------
// The benchmark.

/// Generate the benchmark repository unless it is already there; its
/// canonical root, and how long generating took (if it was generated).
pub(crate) fn prepare(args: &GeneratedRepo) -> Result<(PathBuf, Option<Duration>)> {
    if args.files < 1000 {
        bail!("--files {} is too small for a Materialize-shaped repository: give at least 1000", args.files);
    }
    if args.images < 6 {
        bail!(
            "--images {} is too small: give at least 6 (3 base images plus cargo-build, copy and plain ones)",
            args.images
        );
    }
    let root = if args.dir.is_absolute() { args.dir.clone() } else { std::env::current_dir()?.join(&args.dir) };
    let generated = ensure_repo(&root, args.files, args.images)?;
    Ok((std::fs::canonicalize(&root)?, generated))
}

fn bench_fingerprint(args: BenchFingerprint) -> Result<ExitCode> {
    let runs = args.runs.max(1);
    let (root, generated) = prepare(&args.repo)?;

    // Facts about the repository and the inputs, outside any timed region.
    eprintln!("bench: examining {}", root.display());
    let settings =
        Settings { profile: Profile::Optimized, arch: Arch::host(), coverage: false, sanitizer: "none".into() };
    let repo = Repo::load(&root, false)?;
    let images = repo.resolve(&[])?;
    let tracked = git_ls_files(&root, &["--cached"])?.len();
    let tree_files = repo.tree.files.len();
    let tree_bytes: u64 = repo.tree.files.iter().map(|f| file_len(&root, f)).sum();
    if let Some(f) = repo.tree.files.iter().find(|f| f.starts_with("target/")) {
        bail!("internal error: the ignored target/ leaked into the tree ({f})");
    }
    let (target_files, target_bytes) = dir_size(&root.join("target"));
    let mut per_image: Vec<Vec<String>> = Vec::new();
    for image in &images {
        per_image.push(fingerprint::inputs(&repo, image)?);
    }
    let mut unique: Vec<&str> = per_image.iter().flatten().map(String::as_str).collect();
    unique.sort_unstable();
    unique.dedup();
    let size: BTreeMap<&str, u64> = unique.iter().map(|f| (*f, file_len(&root, f))).collect();
    let unique_bytes: u64 = size.values().sum();
    let naive_files: usize = per_image.iter().map(Vec::len).sum();
    let naive_bytes: u64 = per_image.iter().flatten().map(|f| size[f.as_str()]).sum();
    let (mut n_cargo, mut n_copy, mut n_plain, mut n_both) = (0, 0, 0, 0);
    let mut closures = Vec::new();
    for image in &images {
        let cargo: Vec<_> = image
            .config
            .pre_images
            .iter()
            .filter_map(|p| if let PreImage::CargoBuild(c) = p { Some(c) } else { None })
            .collect();
        let copy = image.config.pre_images.iter().any(|p| matches!(p, PreImage::Copy(_)));
        match (cargo.is_empty(), copy) {
            (false, c) => {
                n_cargo += 1;
                n_both += usize::from(c);
                let ws = repo.workspace()?;
                let mut crates = BTreeSet::new();
                for cb in cargo {
                    for bin in &cb.bins {
                        crates.extend(ws.closure(ws.crate_for_bin(bin)?, false));
                    }
                    for ex in &cb.examples {
                        crates.extend(ws.closure(ws.crate_for_example(ex)?, true));
                    }
                }
                closures.push(crates.len());
            }
            (true, true) => n_copy += 1,
            (true, false) => n_plain += 1,
        }
    }
    let n_crates = repo.workspace()?.crates.len();
    let reference = fingerprint::fingerprint_all(&repo, &images, &settings)?;
    drop(images);
    drop(repo);

    // Warm-up: fills the page cache with everything both sides read.
    eprintln!("bench: warm-up pass (page cache warm from here on)");
    mzbuild_pass(&root, &settings)?;
    floor_pass(&root, &unique)?;

    let load_before = load_average();
    let mut t = Timings::default();
    for r in 0..runs {
        eprintln!("bench: run {}/{runs}", r + 1);
        let (total, load, fp, fps) = mzbuild_pass(&root, &settings)?;
        if fps.iter().map(|(n, f)| (n, f.fingerprint)).ne(reference.iter().map(|(n, f)| (n, f.fingerprint))) {
            bail!("fingerprints differ between runs: the benchmark repository changed under us");
        }
        t.mz_total.push(total);
        t.mz_load.push(load);
        t.mz_fp.push(fp);
        let (git, hash, listed) = floor_pass(&root, &unique)?;
        if listed != tree_files {
            eprintln!("bench: warning: git ls-files lists {listed} files, Tree::list {tree_files}");
        }
        t.floor_git.push(git);
        t.floor_hash.push(hash);
        t.floor_total.push(git + hash);
        breakdown_pass(&root, &mut t)?;
    }
    let load_after = load_average();
    let speed = sha1_speed(&root, runs)?;

    // The report.
    let (mz_best, mz_med) = stats(&t.mz_total);
    let (fl_best, fl_med) = stats(&t.floor_total);
    let mb = |b: u64| b as f64 / 1e6;
    let rate = |b: u64, d: Duration| mb(b) / d.as_secs_f64();
    println!("mzbuild fingerprint benchmark: {}", root.display());
    println!(
        "repository   {} git-visible files ({tracked} tracked, {} untracked), {:.1} MB; ignored target/: {target_files} files, {:.1} MB (never listed)",
        tree_files,
        tree_files.saturating_sub(tracked),
        mb(tree_bytes),
        mb(target_bytes),
    );
    if let Some(g) = generated {
        println!("generation   {:.1} s (this run)", g.as_secs_f64());
    }
    println!(
        "images       {} ({n_cargo} cargo-build [{n_both} of them also copy], {n_copy} copy, {n_plain} neither); workspace {n_crates} crates",
        reference.len()
    );
    if !closures.is_empty() {
        println!(
            "closures     cargo-build images reach {}..{} crates (mean {:.0}) over path dependencies",
            closures.iter().min().unwrap(),
            closures.iter().max().unwrap(),
            closures.iter().sum::<usize>() as f64 / closures.len() as f64
        );
    }
    println!(
        "inputs       unique: {} files, {:.1} MB; naive (sum over images): {naive_files} files, {:.1} MB; each unique file is hashed once instead of {:.1} times on average",
        unique.len(),
        mb(unique_bytes),
        mb(naive_bytes),
        naive_files as f64 / unique.len().max(1) as f64
    );
    println!(
        "settings     profile=optimized arch={}; xtask built {}; {} threads; runs: {runs} after 1 warm-up (page cache warm), interleaved mzbuild/floor",
        settings.arch.gcc(),
        if cfg!(debug_assertions) { "in the dev profile" } else { "optimized" },
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if let (Some(a), Some(b)) = (&load_before, &load_after) {
        println!("machine      load average {a} before the runs, {b} after (other processes compete for the cores)");
    }
    println!();
    println!("{:<54} {:>10} {:>10}", "time", "best", "median");
    let row = |name: &str, v: &[Duration]| {
        let (b, m) = stats(v);
        println!("{name:<54} {:>8.1}ms {:>8.1}ms", ms(b), ms(m));
    };
    row("mzbuild: load + resolve + fingerprint_all", &t.mz_total);
    row("  Repo::load (tree listing + discovery)", &t.mz_load);
    row("  resolve + fingerprint_all", &t.mz_fp);
    row("floor: git ls-files + 1-thread read+SHA-1", &t.floor_total);
    row("  git ls-files -z --cached --others --exclude-standard", &t.floor_git);
    row("  read + SHA-1 of the unique inputs, 1 thread", &t.floor_hash);
    println!(
        "{:<54} {:>10.3} {:>10.3}",
        "ratio mzbuild / floor (target <= 1)",
        mz_best.as_secs_f64() / fl_best.as_secs_f64(),
        mz_med.as_secs_f64() / fl_med.as_secs_f64()
    );
    println!();
    println!("{:<54} {:>10} {:>10}", "mzbuild phases (separate calls)", "best", "median");
    row("  Tree::list", &t.tree);
    row("  Repo::load (incl. Tree::list)", &t.load);
    row("  workspace (Cargo.toml files)", &t.workspace);
    row("  fingerprint::inputs, image by image", &t.inputs);
    row("  fingerprint::hash_files, unique inputs, all cores", &t.hash_files);
    println!();
    println!("SHA-1 throughput (MB = 10^6 bytes, best of {runs}):");
    println!("  floor pass, read + hash, 1 thread        {:>7.0} MB/s", rate(unique_bytes, stats(&t.floor_hash).0));
    println!("  hash_files, read + hash, all cores       {:>7.0} MB/s", rate(unique_bytes, stats(&t.hash_files).0));
    println!("  sha1 crate in this binary, in cache      {:>7.0} MB/s", speed.in_memory);
    println!("  sha1 crate in this binary, {} MiB file  {:>7.0} MB/s", SPEED_FILE_LEN >> 20, speed.file);
    match speed.sha1sum {
        Some(s) => println!("  sha1sum, same file                       {s:>7.0} MB/s"),
        None => println!("  sha1sum, same file                       (sha1sum not found)"),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Default)]
struct Timings {
    mz_total: Vec<Duration>,
    mz_load: Vec<Duration>,
    mz_fp: Vec<Duration>,
    floor_git: Vec<Duration>,
    floor_hash: Vec<Duration>,
    floor_total: Vec<Duration>,
    tree: Vec<Duration>,
    load: Vec<Duration>,
    workspace: Vec<Duration>,
    inputs: Vec<Duration>,
    hash_files: Vec<Duration>,
}

type Fingerprints = BTreeMap<String, fingerprint::Fingerprinted>;

/// What `cargo xtask mzbuild` does to fingerprint every image.
fn mzbuild_pass(root: &Path, settings: &Settings) -> Result<(Duration, Duration, Duration, Fingerprints)> {
    let start = Instant::now();
    let repo = Repo::load(root, false)?;
    let loaded = Instant::now();
    let images = repo.resolve(&[])?;
    let fps = fingerprint::fingerprint_all(&repo, &images, settings)?;
    let done = Instant::now();
    drop(images);
    drop(repo);
    Ok((done - start, loaded - start, done - loaded, fps))
}

/// The floor: list the tree with git, then read and hash each unique input
/// once on one thread. Returns (git time, hash time, files listed).
fn floor_pass(root: &Path, unique: &[&str]) -> Result<(Duration, Duration, usize)> {
    let start = Instant::now();
    let listed = git_ls_files(root, &["--cached", "--others", "--exclude-standard"])?.len();
    let listed_at = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    let mut acc = 0u8;
    for rel in unique {
        let mut file = std::fs::File::open(root.join(rel)).with_context(|| format!("opening {rel}"))?;
        let mut hasher = Sha1::new();
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        acc ^= hasher.finalize()[0];
    }
    let done = Instant::now();
    std::hint::black_box(acc);
    Ok((listed_at - start, done - listed_at, listed))
}

/// The phases of `mzbuild_pass`, each timed on its own.
fn breakdown_pass(root: &Path, t: &mut Timings) -> Result<()> {
    let start = Instant::now();
    let tree = Tree::list(root)?;
    t.tree.push(start.elapsed());
    drop(tree);
    let start = Instant::now();
    let repo = Repo::load(root, false)?;
    t.load.push(start.elapsed());
    let start = Instant::now();
    repo.workspace()?;
    t.workspace.push(start.elapsed());
    let images = repo.resolve(&[])?;
    let start = Instant::now();
    let all: Vec<Vec<String>> = images.iter().map(|i| fingerprint::inputs(&repo, i)).collect::<Result<_>>()?;
    t.inputs.push(start.elapsed());
    let mut unique: Vec<&str> = all.iter().flatten().map(String::as_str).collect();
    unique.sort_unstable();
    unique.dedup();
    let start = Instant::now();
    let hashes = fingerprint::hash_files(root, &unique)?;
    t.hash_files.push(start.elapsed());
    std::hint::black_box(hashes);
    Ok(())
}

struct Speed {
    in_memory: f64,
    file: f64,
    sha1sum: Option<f64>,
}

/// SHA-1 throughput of this binary (in memory and reading a file) and of
/// `sha1sum` on the same file.
fn sha1_speed(root: &Path, runs: usize) -> Result<Speed> {
    eprintln!("bench: SHA-1 speed");
    let path = root.join(SPEED_FILE);
    let len = std::fs::metadata(&path)
        .with_context(|| format!("{} is missing: regenerate the repository", path.display()))?
        .len();
    let mb = len as f64 / 1e6;
    // In memory: the same number of bytes, from a 1 MiB buffer that stays
    // in the CPU cache, so only the hashing counts.
    let chunk = vec![0x5au8; 1 << 20];
    let rounds = (len as usize).div_ceil(chunk.len());
    let chunk_mb = (rounds * chunk.len()) as f64 / 1e6;
    let mut best = [f64::MAX; 3];
    let mut sha1sum_found = true;
    let mut buf = vec![0u8; 256 * 1024];
    for _ in 0..runs {
        let start = Instant::now();
        let mut hasher = Sha1::new();
        for _ in 0..rounds {
            hasher.update(&chunk);
        }
        std::hint::black_box(hasher.finalize());
        best[0] = best[0].min(start.elapsed().as_secs_f64());

        let start = Instant::now();
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha1::new();
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let digest = hasher.finalize();
        best[1] = best[1].min(start.elapsed().as_secs_f64());
        let expected: String = digest.iter().map(|b| format!("{b:02x}")).collect();

        if sha1sum_found {
            let start = Instant::now();
            match Command::new("sha1sum").arg(&path).output() {
                Ok(out) if out.status.success() => {
                    best[2] = best[2].min(start.elapsed().as_secs_f64());
                    if !String::from_utf8_lossy(&out.stdout).starts_with(&expected) {
                        bail!("sha1sum disagrees with the sha1 crate on {}", path.display());
                    }
                }
                _ => sha1sum_found = false,
            }
        }
    }
    Ok(Speed { in_memory: chunk_mb / best[0], file: mb / best[1], sha1sum: sha1sum_found.then(|| mb / best[2]) })
}

/// The 1-minute load average, where the system reports one.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next().map(str::to_string)
}

fn stats(v: &[Duration]) -> (Duration, Duration) {
    let mut s = v.to_vec();
    s.sort();
    (s[0], s[s.len() / 2])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn git_ls_files(root: &Path, flags: &[&str]) -> Result<Vec<Vec<u8>>> {
    let out = Command::new("git")
        .arg("ls-files")
        .arg("-z")
        .args(flags)
        .current_dir(root)
        .output()
        .context("running git ls-files")?;
    if !out.status.success() {
        bail!("git ls-files failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()).map(<[u8]>::to_vec).collect())
}

/// The length of the file a path names, following symlinks (as hashing does).
fn file_len(root: &Path, rel: &str) -> u64 {
    std::fs::metadata(root.join(rel)).map_or(0, |m| m.len())
}

fn dir_size(dir: &Path) -> (usize, u64) {
    let (mut n, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => {
                    n += 1;
                    bytes += e.metadata().map_or(0, |m| m.len());
                }
                Err(_) => {}
            }
        }
    }
    (n, bytes)
}

// ---------------------------------------------------------------------------
// The generator.

/// Generate the repository unless `root` already holds one generated with
/// the same parameters. Returns the generation time if it generated.
fn ensure_repo(root: &Path, files: usize, images: usize) -> Result<Option<Duration>> {
    let params = format!("mzbuild-bench v{GENERATOR_VERSION} seed={SEED:#x} files={files} images={images}\n");
    let stamp = root.join(STAMP);
    match std::fs::read_to_string(&stamp) {
        Ok(s) if s == params => {
            eprintln!("bench: reusing {} ({})", root.display(), params.trim());
            return Ok(None);
        }
        Ok(_) => {
            eprintln!("bench: {} was generated with other parameters (or incompletely); regenerating", root.display());
            std::fs::remove_dir_all(root).with_context(|| format!("removing {}", root.display()))?;
        }
        Err(_) => {
            if root.exists() && std::fs::read_dir(root)?.next().is_some() {
                bail!(
                    "{} exists and was not generated by this benchmark (no {STAMP}); remove it or pass another --dir",
                    root.display()
                );
            }
        }
    }
    let start = Instant::now();
    std::fs::create_dir_all(root)?;
    git(root, &["init", "-q", "-b", "main"])?;
    // Background `git gc --auto` would disturb the measurements.
    git(root, &["config", "gc.auto", "0"])?;
    git(root, &["config", "maintenance.auto", "false"])?;
    std::fs::write(&stamp, "incomplete\n")?;
    let mut g = Gen::new(root, SEED);
    g.generate(files, images)?;
    eprintln!("bench: git add + commit ({} files, {:.0} MB)", g.tracked, g.tracked_bytes as f64 / 1e6);
    git(root, &["add", "-A"])?;
    git(
        root,
        &["-c", "user.name=bench", "-c", "user.email=bench@invalid", "commit", "-q", "-m", "Generated monorepo"],
    )?;
    g.after_commit()?;
    std::fs::write(&stamp, &params)?;
    let took = start.elapsed();
    eprintln!("bench: generated {} in {:.1} s", root.display(), took.as_secs_f64());
    Ok(Some(took))
}

fn git(root: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("git").args(args).current_dir(root).output().context("running git")?;
    if !out.status.success() {
        bail!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// SplitMix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const WORDS: &[&str] = &[
    "ore",
    "repr",
    "sql",
    "adapter",
    "storage",
    "compute",
    "persist",
    "expr",
    "catalog",
    "cluster",
    "controller",
    "types",
    "client",
    "server",
    "proto",
    "kafka",
    "pgwire",
    "http",
    "util",
    "balancer",
    "orchestrator",
    "secrets",
    "timely",
    "dataflow",
    "interchange",
    "avro",
    "postgres",
    "mysql",
    "aws",
    "cloud",
    "build",
    "lint",
    "audit",
    "metrics",
    "trace",
    "txn",
    "transform",
    "plan",
    "parser",
    "lowering",
    "optimizer",
    "rocks",
    "durable",
    "walkabout",
    "stack",
    "frontend",
    "environment",
    "testdrive",
    "logic",
    "license",
    "alloc",
    "registry",
    "dyncfg",
    "copy",
    "regexp",
    "timestamp",
    "oracle",
    "arrow",
    "sink",
    "source",
    "ssh",
    "tunnel",
    "webhook",
    "auth",
    "tls",
    "cache",
    "schema",
    "codec",
    "memory",
    "operator",
    "render",
    "worker",
    "service",
    "process",
    "config",
    "pgtest",
    "lsp",
    "prof",
    "canary",
    "sequencer",
    "session",
    "coord",
    "frontegg",
    "tracing",
    "hash",
    "window",
    "join",
    "reduce",
    "index",
    "view",
    "table",
    "upsert",
    "snapshot",
    "ingest",
    "debezium",
    "json",
    "csv",
    "protobuf",
    "cli",
    "fuzz",
    "bench",
    "s3",
    "sqlsmith",
    "mirror",
    "health",
    "status",
    "usage",
    "billing",
    "tenant",
    "region",
];

const MODULES: &[&str] = &[
    "types",
    "error",
    "util",
    "client",
    "server",
    "state",
    "config",
    "metrics",
    "codec",
    "encode",
    "decode",
    "ops",
    "plan",
    "render",
    "read",
    "write",
    "batch",
    "cache",
    "iter",
    "stats",
    "txn",
    "schema",
    "handle",
    "worker",
    "shard",
    "trace",
    "columnar",
    "impls",
    "convert",
    "scalar",
    "relation",
    "func",
    "agg",
    "window",
    "lower",
    "join",
    "reduce",
    "source",
    "sink",
    "upsert",
    "catalog",
    "builtin",
    "durable",
    "migrate",
    "names",
    "parse",
    "lexer",
    "ast",
    "visit",
    "fold",
    "display",
    "pretty",
    "proto",
    "json",
    "array",
    "list",
    "map",
    "range",
    "datum",
    "row",
    "time",
    "interval",
    "numeric",
    "string",
    "bytes",
    "uuid",
    "oid",
    "notice",
    "explain",
    "statement",
    "coord",
];

const TEST_DIRS: &[&str] = &[
    "sqllogictest",
    "testdrive",
    "cluster",
    "kafka-auth",
    "pg-cdc",
    "mysql-cdc",
    "upsert",
    "bounded-memory",
    "platform-checks",
    "feature-benchmark",
    "scalability",
    "zippy",
    "parallel-workload",
    "legacy-upgrade",
    "ssh-connection",
    "source-sink-errors",
    "persistence",
    "restart",
    "limits",
    "data-ingest",
    "cloudtest",
    "debezium",
    "kafka-resumption",
    "s3-sink",
    "txn-wal",
    "storage-usage",
    "retain-history",
    "dbt-materialize",
    "canary-environment",
    "sqlsmith",
    "rqg",
    "lang",
];

/// A crate being generated.
struct CrateSpec {
    dir: String,
    layer: usize,
    /// The binary an image builds (`None` for library crates).
    bin: Option<String>,
    main_rs: bool,
    extra_bins: Vec<String>,
    examples: Vec<String>,
    deps: Vec<usize>,
    build_deps: Vec<usize>,
    dev_deps: Vec<usize>,
    in_ws_deps: bool,
    files: usize,
}

/// A test directory: its files (relative to it), for copy pre-images.
struct TestDir {
    dir: String,
    exts: Vec<String>,
    subdirs: Vec<String>,
}

struct Gen {
    root: PathBuf,
    rng: Rng,
    /// Rust-like text that files are cut from.
    pool: Vec<u8>,
    made_dirs: HashSet<PathBuf>,
    tracked: usize,
    tracked_bytes: u64,
    buf: Vec<u8>,
}

impl Gen {
    fn new(root: &Path, seed: u64) -> Gen {
        let mut rng = Rng(seed);
        let pool = make_pool(&mut rng, 3 << 20);
        Gen {
            root: root.to_path_buf(),
            rng,
            pool,
            made_dirs: HashSet::new(),
            tracked: 0,
            tracked_bytes: 0,
            buf: Vec::new(),
        }
    }

    fn raw_write(&mut self, rel: &str, content: &[u8]) -> Result<()> {
        let path = self.root.join(rel);
        let parent = path.parent().unwrap().to_path_buf();
        if !self.made_dirs.contains(&parent) {
            std::fs::create_dir_all(&parent)?;
            self.made_dirs.insert(parent);
        }
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))
    }

    /// Write a file that git will track.
    fn write(&mut self, rel: &str, content: &[u8]) -> Result<()> {
        self.raw_write(rel, content)?;
        self.tracked += 1;
        self.tracked_bytes += content.len() as u64;
        Ok(())
    }

    fn executable(&mut self, rel: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.root.join(rel), std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    }

    /// A realistic source-file size: mostly a few KB, a long tail up to 1 MB
    /// (mean about 6.5 KB).
    fn size(&mut self) -> usize {
        let u = self.rng.unit();
        if u < 0.001 {
            self.rng.range(200_000, 1_000_000)
        } else if u < 0.041 {
            self.rng.range(20_000, 60_000)
        } else if u < 0.341 {
            self.rng.range(4_000, 16_000)
        } else {
            self.rng.range(200, 4_000)
        }
    }

    /// Bytes cut from the text pool, behind a line naming the file (so that
    /// every file is distinct).
    fn content(&mut self, rel: &str, size: usize) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let comment = if rel.ends_with(".py") || rel.ends_with(".toml") || rel.ends_with(".yml") || rel.ends_with(".sh")
        {
            "#"
        } else {
            "//"
        };
        buf.extend_from_slice(format!("{comment} Copyright Materialize, Inc. and contributors. {rel}\n").as_bytes());
        let start = self.rng.below(self.pool.len() - size);
        buf.extend_from_slice(&self.pool[start..start + size]);
        buf
    }

    /// A tracked text file of a random size.
    fn text(&mut self, rel: &str) -> Result<()> {
        let size = self.size();
        self.text_sized(rel, size)
    }

    fn text_sized(&mut self, rel: &str, size: usize) -> Result<()> {
        let buf = self.content(rel, size);
        self.write(rel, &buf)?;
        self.buf = buf;
        Ok(())
    }

    fn words(&mut self, n: usize) -> String {
        (0..n).map(|_| *self.rng.pick(WORDS)).collect::<Vec<_>>().join(" ")
    }

    fn generate(&mut self, files: usize, n_images: usize) -> Result<()> {
        eprintln!("bench: generating a {files}-file repository with {n_images} images in {}", self.root.display());
        let crates = self.plan_crates(files);
        self.root_files(&crates)?;
        let crate_files_target = files / 2;
        self.crate_files(&crates, crate_files_target)?;
        eprintln!("bench:   {} crates, {} files so far", crates.len(), self.tracked);
        let tests = self.test_files(files * 3 / 10)?;
        eprintln!("bench:   {} test directories, {} files so far", tests.len(), self.tracked);
        self.images(&crates, &tests, n_images)?;
        eprintln!("bench:   {n_images} images, {} files so far", self.tracked);
        self.misc_files(files)?;
        self.ignored_files(&crates, files)?;
        Ok(())
    }

    fn plan_crates(&mut self, files: usize) -> Vec<CrateSpec> {
        let n = (files / 200).clamp(20, 600);
        let mut used = HashSet::new();
        let mut names = Vec::new();
        for i in 0..n {
            let mut name = match WORDS.get(i) {
                Some(w) => w.to_string(),
                None => format!("{}-{}", self.rng.pick(WORDS), self.rng.pick(WORDS)),
            };
            while !used.insert(name.clone()) {
                name = format!("{}-{}", name, self.rng.pick(WORDS));
            }
            names.push(name);
        }
        // Layers: 0 is the low-level base everything uses (ore, repr, ...);
        // binaries live in the top layers.
        let bounds = [0.05, 0.22, 0.45, 0.68, 0.85, 1.0];
        let layer_of = |i: usize| bounds.iter().position(|b| (i as f64) < b * n as f64).unwrap_or(5);
        let by_layer: Vec<Vec<usize>> = (0..6).map(|l| (0..n).filter(|i| layer_of(*i) == l).collect()).collect();
        let mut crates: Vec<CrateSpec> = Vec::new();
        for (i, dir) in names.into_iter().enumerate() {
            let layer = layer_of(i);
            let mut deps = BTreeSet::new();
            if layer > 0 {
                if self.rng.chance(0.9) {
                    deps.insert(0);
                }
                for _ in 0..self.rng.range(1, 3) {
                    deps.insert(*self.rng.pick(&by_layer[0]));
                }
                for (l, lower) in by_layer.iter().enumerate().take(layer).skip(1) {
                    let k = if l + 1 == layer { self.rng.range(1, 4) } else { self.rng.range(0, 2) };
                    for _ in 0..k {
                        deps.insert(*self.rng.pick(lower));
                    }
                }
            }
            let mut dev_deps = BTreeSet::new();
            if layer > 1 && self.rng.chance(0.3) {
                let l = self.rng.below(layer);
                dev_deps.insert(*self.rng.pick(&by_layer[l]));
            }
            let mut build_deps = BTreeSet::new();
            if layer > 0 && self.rng.chance(0.1) {
                build_deps.insert(*self.rng.pick(&by_layer[0]));
            }
            let is_bin = layer == 5 || (layer == 4 && self.rng.chance(0.5));
            let main_rs = is_bin && self.rng.chance(0.5);
            let bin = is_bin.then(|| if main_rs { format!("mz-{dir}") } else { dir.clone() });
            let extra_bins = if self.rng.chance(0.08) {
                (0..self.rng.range(1, 3)).map(|k| format!("{dir}-util{k}")).collect()
            } else {
                vec![]
            };
            let examples = if self.rng.chance(0.1) {
                (0..self.rng.range(1, 2)).map(|k| format!("{dir}-ex{k}")).collect()
            } else {
                vec![]
            };
            // Skewed sizes: a few crates hold much of the code.
            let u = self.rng.unit();
            let weight = 1 + (40.0 * u * u * u) as usize;
            crates.push(CrateSpec {
                dir,
                layer,
                bin,
                main_rs,
                extra_bins,
                examples,
                deps: deps.into_iter().collect(),
                build_deps: build_deps.into_iter().collect(),
                dev_deps: dev_deps.into_iter().collect(),
                in_ws_deps: layer <= 1 && self.rng.chance(0.3),
                files: weight,
            });
        }
        crates
    }

    fn root_files(&mut self, crates: &[CrateSpec]) -> Result<()> {
        let mut toml = String::from(
            "[workspace]\nmembers = [\"src/*\"]\nresolver = \"2\"\n\n[workspace.package]\nedition = \"2021\"\nrust-version = \"1.82.0\"\n\n[workspace.dependencies]\n",
        );
        for c in crates.iter().filter(|c| c.in_ws_deps) {
            toml.push_str(&format!("mz-{0} = {{ path = \"src/{0}\" }}\n", c.dir));
        }
        toml.push_str("anyhow = \"1.0.95\"\nserde = { version = \"1.0.217\", features = [\"derive\"] }\ntokio = { version = \"1.38.0\", features = [\"full\"] }\n\n");
        toml.push_str("[profile.dev]\nsplit-debuginfo = \"unpacked\"\n\n[profile.release]\nlto = \"thin\"\ndebug = 1\n\n[profile.optimized]\ninherits = \"release\"\nlto = \"off\"\n");
        self.write("Cargo.toml", toml.as_bytes())?;
        // Cargo.lock: long, like the real one (about 10 KB per 30 packages).
        let mut lock = String::from("# This file is automatically @generated by Cargo.\n# It is not intended for manual editing.\nversion = 3\n\n");
        for c in crates {
            lock.push_str(&format!("[[package]]\nname = \"mz-{}\"\nversion = \"0.0.0\"\ndependencies = [\n", c.dir));
            for d in &c.deps {
                lock.push_str(&format!(" \"mz-{}\",\n", crates[*d].dir));
            }
            lock.push_str("]\n\n");
        }
        for i in 0..1200 {
            let name = format!("{}-{}{}", self.rng.pick(WORDS), self.rng.pick(MODULES), i);
            let sum: String = (0..4).map(|_| format!("{:016x}", self.rng.next())).collect();
            lock.push_str(&format!(
                "[[package]]\nname = \"{name}\"\nversion = \"{}.{}.{}\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"{sum}\"\n\n",
                self.rng.below(3),
                self.rng.below(40),
                self.rng.below(20)
            ));
        }
        self.write("Cargo.lock", lock.as_bytes())?;
        self.write(
            ".cargo/config",
            b"[alias]\nxtask = \"run --package xtask --\"\n\n[build]\nrustflags = [\"--cfg=tokio_unstable\", \"-Csymbol-mangling-version=v0\"]\n\n[target.x86_64-unknown-linux-gnu]\nlinker = \"clang\"\n",
        )?;
        self.write(".gitignore", b"/target\n*.log\n__pycache__/\n*.pyc\nnode_modules/\n.mypy_cache/\n/.idea\n*.swp\n")?;
        self.write(".dockerignore", b"target\n.git\n")?;
        self.text("README.md")?;
        self.text("LICENSE")?;
        self.write("rust-toolchain.toml", b"[toolchain]\nchannel = \"1.82.0\"\n")?;
        self.write("ci/builder/Dockerfile", b"# Copyright Materialize, Inc.\nFROM ubuntu:noble-20241118.1\nRUN apt-get update && apt-get install -y --no-install-recommends build-essential clang cmake git\n")?;
        for f in ["ci/builder/stable.stamp", "ci/builder/nightly.stamp"] {
            self.write(f, b"2024-12-01\n")?;
        }
        for f in
            ["ci/builder/crosstool-x86_64.defconfig", "ci/builder/crosstool-aarch64.defconfig", "ci/builder/README.md"]
        {
            self.text(f)?;
        }
        self.text("ci/builder/build.sh")?;
        self.executable("ci/builder/build.sh")?;
        for i in 0..40 {
            let f = format!(
                "ci/{}/{}-{i}.yml",
                self.rng.pick(&["test", "nightly", "release-qualification", "plugins"]),
                self.rng.pick(MODULES)
            );
            self.text(&f)?;
        }
        Ok(())
    }

    fn crate_files(&mut self, crates: &[CrateSpec], target: usize) -> Result<()> {
        let total_weight: usize = crates.iter().map(|c| c.files).sum();
        for c in crates {
            let dir = format!("src/{}", c.dir);
            let mut n = (target * c.files / total_weight).max(4);
            let mut manifest = format!(
                "[package]\nname = \"mz-{}\"\ndescription = \"{}.\"\nversion = \"0.0.0\"\nedition.workspace = true\nrust-version.workspace = true\npublish = false\n",
                c.dir,
                self.words(6)
            );
            if let (Some(bin), false) = (&c.bin, c.main_rs) {
                manifest.push_str(&format!("\n[[bin]]\nname = \"{bin}\"\npath = \"src/bin/{bin}.rs\"\n"));
            }
            let dep_line = |d: &CrateSpec, extra: &str| {
                if d.in_ws_deps {
                    format!("mz-{}.workspace = true\n", d.dir)
                } else {
                    format!("mz-{0} = {{ path = \"../{0}\"{extra} }}\n", d.dir)
                }
            };
            manifest.push_str("\n[dependencies]\nanyhow.workspace = true\n");
            for d in &c.deps {
                let extra = if self.rng.chance(0.2) { ", default-features = false" } else { "" };
                manifest.push_str(&dep_line(&crates[*d], extra));
            }
            manifest.push_str("serde.workspace = true\ntokio = { version = \"1.38.0\", features = [\"macros\"] }\n");
            if !c.build_deps.is_empty() {
                manifest.push_str("\n[build-dependencies]\n");
                for d in &c.build_deps {
                    manifest.push_str(&dep_line(&crates[*d], ""));
                }
            }
            if !c.dev_deps.is_empty() {
                manifest.push_str("\n[dev-dependencies]\ncriterion = \"0.5.1\"\n");
                for d in &c.dev_deps {
                    manifest.push_str(&dep_line(&crates[*d], ""));
                }
            }
            if c.layer > 3 && self.rng.chance(0.2) {
                manifest.push_str(
                    "\n[target.'cfg(not(target_os = \"macos\"))'.dependencies]\ntikv-jemallocator = \"0.6.0\"\n",
                );
            }
            manifest.push_str("\n[package.metadata.cargo-udeps.ignore]\nnormal = [\"workspace-hack\"]\n");
            self.write(&format!("{dir}/Cargo.toml"), manifest.as_bytes())?;
            n -= 1;
            match (&c.bin, c.main_rs) {
                (Some(_), true) => self.text(&format!("{dir}/src/main.rs"))?,
                (Some(bin), false) => {
                    self.text(&format!("{dir}/src/bin/{bin}.rs"))?;
                    self.text(&format!("{dir}/src/lib.rs"))?;
                    n -= 1;
                }
                (None, _) => self.text(&format!("{dir}/src/lib.rs"))?,
            }
            n -= 1;
            for b in &c.extra_bins {
                self.text(&format!("{dir}/src/bin/{b}.rs"))?;
                n = n.saturating_sub(1);
            }
            for e in &c.examples {
                self.text(&format!("{dir}/examples/{e}.rs"))?;
                n = n.saturating_sub(1);
            }
            let mut extras: Vec<String> = Vec::new();
            if !c.build_deps.is_empty() || self.rng.chance(0.15) {
                extras.push("build.rs".into());
            }
            if self.rng.chance(0.4) {
                extras.push("README.md".into());
            }
            if self.rng.chance(0.06) {
                extras.push("mzcompose.py".into());
            }
            if self.rng.chance(0.03) {
                extras.push("mzcompose".into());
            }
            if self.rng.chance(0.3) {
                for t in 0..self.rng.range(1, 5) {
                    extras.push(format!("tests/{}{t}.rs", self.rng.pick(MODULES)));
                }
            }
            if self.rng.chance(0.1) {
                for t in 0..self.rng.range(1, 8) {
                    extras.push(format!("src/{}{t}.proto", self.rng.pick(MODULES)));
                }
            }
            if self.rng.chance(0.05) {
                extras.push(format!("benches/{}.rs", self.rng.pick(MODULES)));
            }
            for e in extras {
                self.text(&format!("{dir}/{e}"))?;
                if e == "mzcompose" {
                    self.executable(&format!("{dir}/{e}"))?;
                }
                n = n.saturating_sub(1);
            }
            // The bulk: modules in a few directories (about ten files a
            // directory, as in real crates), some nested two deep.
            let mut dirs = vec!["src".to_string()];
            for _ in 0..n / 10 {
                let top = *self.rng.pick(MODULES);
                let d = if self.rng.chance(0.3) {
                    format!("src/{top}/{}", self.rng.pick(MODULES))
                } else {
                    format!("src/{top}")
                };
                dirs.push(d);
            }
            for k in 0..n {
                let d = self.rng.pick(&dirs).clone();
                let ext = if self.rng.chance(0.03) { "snap" } else { "rs" };
                let f = format!("{dir}/{d}/{}_{k}.{ext}", self.rng.pick(MODULES));
                self.text(&f)?;
            }
        }
        Ok(())
    }

    fn test_files(&mut self, target: usize) -> Result<Vec<TestDir>> {
        let n = (target / 300).clamp(8, 200);
        let mut used = HashSet::new();
        let mut dirs = Vec::new();
        for i in 0..n {
            let mut name = match TEST_DIRS.get(i) {
                Some(s) => s.to_string(),
                None => format!("{}-{}", self.rng.pick(WORDS), self.rng.pick(MODULES)),
            };
            while !used.insert(name.clone()) {
                name = format!("{name}-{}", self.rng.pick(WORDS));
            }
            dirs.push(name);
        }
        // sqllogictest-like giants first, then a long tail.
        let weights: Vec<usize> =
            (0..n).map(|i| if i == 0 { n * 3 } else { 1 + (20.0 * self.rng.unit().powi(2)) as usize }).collect();
        let total: usize = weights.iter().sum();
        let mut out = Vec::new();
        for (name, w) in dirs.into_iter().zip(weights) {
            let dir = format!("test/{name}");
            let count = (target * w / total).max(3);
            let main_ext = *self.rng.pick(&["td", "slt", "sql", "json", "py", "csv", "txt"]);
            let subdirs: Vec<String> =
                (0..self.rng.range(0, 8)).map(|k| format!("{}{k}", self.rng.pick(MODULES))).collect();
            let mut exts = BTreeSet::new();
            self.text(&format!("{dir}/mzcompose.py"))?;
            exts.insert("py".to_string());
            for k in 0..count - 1 {
                let ext =
                    if self.rng.chance(0.8) { main_ext } else { *self.rng.pick(&["md", "yml", "sh", "proto", "avsc"]) };
                exts.insert(ext.to_string());
                let f = if subdirs.is_empty() || self.rng.chance(0.3) {
                    format!("{dir}/{}-{k}.{ext}", self.rng.pick(MODULES))
                } else {
                    let sub = self.rng.pick(&subdirs).clone();
                    format!("{dir}/{sub}/{}-{k}.{ext}", self.rng.pick(MODULES))
                };
                // Test data runs larger than code.
                let size = self.size() * if ext == "slt" { 3 } else { 1 };
                self.text_sized(&f, size.min(1_000_000))?;
            }
            // Only the subdirectories that got files.
            let subdirs = subdirs.into_iter().filter(|s| self.root.join(&dir).join(s).is_dir()).collect();
            out.push(TestDir { dir, exts: exts.into_iter().collect(), subdirs });
        }
        Ok(out)
    }

    fn images(&mut self, crates: &[CrateSpec], tests: &[TestDir], n_images: usize) -> Result<()> {
        let mut names: Vec<String> = Vec::new();
        let mut used: HashSet<String> = HashSet::new();
        let mut unique = |base: String| {
            let mut name = base.clone();
            let mut k = 1;
            while !used.insert(name.clone()) {
                k += 1;
                name = format!("{base}-{k}");
            }
            name
        };
        let bases = [
            (
                "ubuntu-base",
                "FROM ubuntu:noble-20241118.1\nRUN apt-get update && apt-get -qy install ca-certificates curl\n"
                    .to_string(),
            ),
            (
                "prod-base",
                "MZFROM ubuntu-base\nRUN groupadd --system --gid=999 materialize\nUSER materialize\n".to_string(),
            ),
            (
                "distroless-prod-base",
                "FROM gcr.io/distroless/cc-debian12\nCOPY --from=busybox:1.36 /bin/busybox /bin/busybox\n".to_string(),
            ),
        ];
        for (name, dockerfile) in &bases {
            let dir = format!("misc/images/{name}");
            let yml = format!(
                "# Copyright Materialize, Inc. and contributors. All rights reserved.\nname: {name}\npublish: false\n"
            );
            self.write(&format!("{dir}/mzbuild.yml"), yml.as_bytes())?;
            self.write(
                &format!("{dir}/Dockerfile"),
                format!("# Copyright Materialize, Inc.\n{dockerfile}").as_bytes(),
            )?;
            self.text(&format!("{dir}/README.md"))?;
            names.push(unique(name.to_string()));
        }
        let mut bin_crates: Vec<usize> = (0..crates.len()).filter(|i| crates[*i].bin.is_some()).collect();
        // Shuffle (Fisher-Yates) so images do not follow crate order.
        for i in (1..bin_crates.len()).rev() {
            let j = self.rng.below(i + 1);
            bin_crates.swap(i, j);
        }
        let with_examples: Vec<usize> = (0..crates.len()).filter(|i| !crates[*i].examples.is_empty()).collect();
        let mut next_bin = 0;
        let mut ci_used = HashSet::new();
        let mut plain_dirs: Vec<String> = Vec::new();
        for i in bases.len()..n_images {
            let kind = (i - bases.len()) % 3;
            let mut pre = String::new();
            let mut froms = Vec::new();
            let mut body = String::new();
            let (name, dir) = match kind {
                0 => {
                    // cargo-build
                    let c = &crates[bin_crates[next_bin % bin_crates.len()]];
                    next_bin += 1;
                    let bin = c.bin.clone().unwrap();
                    let name = unique(bin.trim_start_matches("mz-").to_string());
                    let dir = if ci_used.insert(c.dir.clone()) && self.rng.chance(0.5) {
                        format!("src/{}/ci", c.dir)
                    } else {
                        format!("misc/images/{name}")
                    };
                    pre.push_str("pre-image:\n  - type: cargo-build\n");
                    let mut bins = vec![bin.clone()];
                    if self.rng.chance(0.2) {
                        let other = &crates[*self.rng.pick(&bin_crates)];
                        bins.push(other.bin.clone().unwrap());
                        bins.extend(other.extra_bins.iter().cloned());
                    }
                    bins.dedup();
                    if bins.len() == 1 {
                        pre.push_str(&format!("    bin: {bin}\n"));
                    } else {
                        pre.push_str(&format!("    bin: [{}]\n", bins.join(", ")));
                    }
                    if !with_examples.is_empty() && self.rng.chance(0.1) {
                        let e = &crates[*self.rng.pick(&with_examples)];
                        pre.push_str(&format!("    example: {}\n", e.examples[0]));
                    }
                    if self.rng.chance(0.2) {
                        pre.push_str("    strip: false\n");
                    }
                    if self.rng.chance(0.3) {
                        pre.push_str("    features: [tokio-console, jemalloc]\n");
                    }
                    if self.rng.chance(0.2) {
                        let t = self.rng.pick(tests);
                        pre.push_str(&format!("  - type: copy\n    source: {}\n    destination: testdata\n", t.dir));
                    }
                    froms.push(if self.rng.chance(0.5) { "prod-base" } else { "distroless-prod-base" }.to_string());
                    for b in &bins {
                        body.push_str(&format!("COPY {b} /usr/local/bin/\n"));
                    }
                    body.push_str(&format!("ENTRYPOINT [\"tini\", \"--\", \"{bin}\"]\n"));
                    // Pre-image outputs must be git-ignored, or they become
                    // inputs once built (mzbuild warns about that).
                    let ignore: String = bins
                        .iter()
                        .map(|b| format!("/{b}\n"))
                        .chain(["/examples\n".to_string(), "/testdata\n".to_string()])
                        .collect();
                    self.write(&format!("{dir}/.gitignore"), ignore.as_bytes())?;
                    (name, dir)
                }
                1 => {
                    // copy
                    let n_copies = if self.rng.chance(0.2) { 2 } else { 1 };
                    let first = self.rng.pick(tests);
                    let name = unique(format!(
                        "{}-{}",
                        first.dir.trim_start_matches("test/"),
                        self.rng.pick(&["test", "data", "runner", "fixtures"])
                    ));
                    let dir = format!("misc/images/{name}");
                    pre.push_str("pre-image:\n");
                    for k in 0..n_copies {
                        let t = if k == 0 { first } else { self.rng.pick(tests) };
                        let u = self.rng.unit();
                        let matching = if u < 0.5 {
                            None
                        } else if u < 0.8 {
                            Some(format!("\"*.{}\"", self.rng.pick(&t.exts)))
                        } else if !t.subdirs.is_empty() {
                            Some(self.rng.pick(&t.subdirs).clone())
                        } else {
                            Some("\"*\"".to_string())
                        };
                        pre.push_str(&format!("  - type: copy\n    source: {}\n    destination: data{k}\n", t.dir));
                        if let Some(m) = matching {
                            pre.push_str(&format!("    matching: {m}\n"));
                        }
                    }
                    self.write(&format!("{dir}/.gitignore"), b"/data0\n/data1\n")?;
                    froms.push("ubuntu-base".to_string());
                    body.push_str("COPY data0 /data\nENTRYPOINT [\"/usr/local/bin/run-tests\"]\n");
                    (name, dir)
                }
                _ => {
                    // plain: built from other images
                    let name = unique(format!(
                        "{}-{}",
                        self.rng.pick(WORDS),
                        self.rng.pick(&["tools", "runner", "proxy", "server", "mock", "client"])
                    ));
                    let dir = if !plain_dirs.is_empty() && self.rng.chance(0.1) {
                        // Nested inside another image's context.
                        format!("{}/{name}", self.rng.pick(&plain_dirs))
                    } else {
                        format!("misc/images/{name}")
                    };
                    plain_dirs.push(dir.clone());
                    froms.push(self.rng.pick(&names[..3]).clone());
                    body.push_str("RUN apt-get update && apt-get -qy install python3\nCOPY . /workdir\n");
                    (name, dir)
                }
            };
            // Sometimes also built from an earlier image, as a build stage.
            if self.rng.chance(0.3) {
                let other = self.rng.pick(&names).clone();
                if !froms.contains(&other) {
                    froms.insert(0, format!("{other} AS builder"));
                }
            }
            let mut dockerfile = String::from("# Copyright Materialize, Inc. and contributors. All rights reserved.\n#\n# Use of this software is governed by the Business Source License.\n\n");
            for f in &froms {
                dockerfile.push_str(&format!("MZFROM {f}\n\n"));
            }
            dockerfile.push_str(&body);
            let yml = format!(
                "# Copyright Materialize, Inc. and contributors. All rights reserved.\nname: {name}\ndescription: {}.\n{}{pre}",
                self.words(5),
                if self.rng.chance(0.2) { "publish: false\n" } else { "" }
            );
            self.write(&format!("{dir}/mzbuild.yml"), yml.as_bytes())?;
            self.write(&format!("{dir}/Dockerfile"), dockerfile.as_bytes())?;
            for k in 0..self.rng.range(0, 5) {
                let f = format!(
                    "{dir}/{}{k}.{}",
                    self.rng.pick(MODULES),
                    self.rng.pick(&["sh", "py", "yml", "conf", "md"])
                );
                self.text(&f)?;
                if f.ends_with(".sh") {
                    self.executable(&f)?;
                }
            }
            if self.rng.chance(0.05) {
                // A symlink inside the context (hashed through to its target).
                self.text(&format!("{dir}/entrypoint.sh"))?;
                self.executable(&format!("{dir}/entrypoint.sh"))?;
                std::os::unix::fs::symlink("entrypoint.sh", self.root.join(&dir).join("run.sh"))?;
                self.tracked += 1;
            }
            names.push(name);
        }
        Ok(())
    }

    /// Python tooling, documentation, CI configuration: fills up to `files`.
    fn misc_files(&mut self, files: usize) -> Result<()> {
        let mut k = 0;
        while self.tracked < files {
            let f = match self.rng.below(4) {
                0 => format!("misc/python/materialize/{}/{}{k}.py", self.rng.pick(WORDS), self.rng.pick(MODULES)),
                1 | 2 => format!(
                    "doc/user/content/{}/{}/{}-{k}.md",
                    self.rng.pick(&MODULES[..30]),
                    self.rng.pick(&WORDS[..8]),
                    self.rng.pick(MODULES)
                ),
                _ => format!(
                    "misc/{}/{}-{k}.{}",
                    self.rng.pick(WORDS),
                    self.rng.pick(MODULES),
                    self.rng.pick(&["sh", "yml", "json", "ts"])
                ),
            };
            self.text(&f)?;
            k += 1;
        }
        Ok(())
    }

    /// Files git ignores: a large `target/` (plus the file used to measure
    /// SHA-1 speed), logs and Python caches.
    fn ignored_files(&mut self, crates: &[CrateSpec], files: usize) -> Result<()> {
        eprintln!("bench:   ignored target/");
        let mut budget = files as u64 * 3000;
        let mut i = 0;
        while budget > 0 {
            let c = &crates[i % crates.len()].dir;
            let hash = format!("{:016x}", self.rng.next());
            let (f, size) = match i % 4 {
                0 => (format!("target/debug/deps/libmz_{c}-{hash}.rlib"), self.rng.range(50_000, 500_000)),
                1 => (format!("target/debug/deps/mz_{c}-{hash}.d"), self.rng.range(500, 5_000)),
                2 => (format!("target/debug/build/mz-{c}-{hash}/out/generated.rs"), self.rng.range(1_000, 60_000)),
                _ => (
                    format!("target/debug/incremental/mz_{c}-{}/s-{hash}/query-cache.bin", i / 40),
                    self.rng.range(1_000, 100_000),
                ),
            };
            let buf = self.content(&f, size);
            self.raw_write(&f, &buf)?;
            self.buf = buf;
            budget = budget.saturating_sub(size as u64);
            i += 1;
        }
        let mut speed = Vec::with_capacity(SPEED_FILE_LEN);
        while speed.len() < SPEED_FILE_LEN {
            let take = (SPEED_FILE_LEN - speed.len()).min(self.pool.len());
            speed.extend_from_slice(&self.pool[..take]);
        }
        self.raw_write(SPEED_FILE, &speed)?;
        for k in 0..20 {
            let f = format!(
                "misc/python/materialize/{}/__pycache__/{}{k}.cpython-312.pyc",
                self.rng.pick(WORDS),
                self.rng.pick(MODULES)
            );
            let buf = self.content(&f, 3000);
            self.raw_write(&f, &buf)?;
            self.buf = buf;
        }
        for k in 0..10 {
            let f = format!("test/{}/run-{k}.log", self.rng.pick(TEST_DIRS));
            self.raw_write(&f, b"log\n")?;
        }
        Ok(())
    }

    /// Untracked, not ignored files (inputs all the same), and files in the
    /// copy destinations that the images' `.gitignore` hides.
    fn after_commit(&mut self) -> Result<()> {
        let out = Command::new("git").args(["ls-files", "-z"]).current_dir(&self.root).output()?;
        let tracked: Vec<String> = out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        let dirs: Vec<&str> = tracked
            .iter()
            .filter(|f| f.starts_with("src/") || f.starts_with("misc/images/") || f.starts_with("test/"))
            .filter_map(|f| f.rsplit_once('/').map(|(d, _)| d))
            .collect();
        for k in 0..25 {
            let d = self.rng.pick(&dirs).to_string();
            let ext = if d.starts_with("src/") { "rs" } else { "txt" };
            let f = format!("{d}/untracked-{k}.{ext}");
            let buf = self.content(&f, 2000);
            self.raw_write(&f, &buf)?;
            self.buf = buf;
        }
        for f in tracked.iter().filter(|f| f.ends_with("/.gitignore") && f.starts_with("misc/images/")).take(10) {
            let d = f.trim_end_matches("/.gitignore");
            self.raw_write(&format!("{d}/data0/copied.td"), b"ignored copy destination\n")?;
        }
        Ok(())
    }
}

/// Rust-like lines of text, `len` bytes.
fn make_pool(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut pool = String::with_capacity(len + 200);
    let mut indent = 0usize;
    while pool.len() < len {
        let w = |rng: &mut Rng| MODULES[rng.below(MODULES.len())];
        let pad = "    ".repeat(indent);
        let line = match rng.below(10) {
            0 => {
                indent = (indent + 1).min(4);
                format!(
                    "{pad}pub fn {}_{}(&self, {}: &{}) -> Result<{}, Error> {{\n",
                    w(rng),
                    w(rng),
                    w(rng),
                    cap(w(rng)),
                    cap(w(rng))
                )
            }
            1 if indent > 0 => {
                indent -= 1;
                format!("{}}}\n", "    ".repeat(indent))
            }
            2 => format!("{pad}// {} {} {} {} {} {}.\n", w(rng), w(rng), w(rng), w(rng), w(rng), w(rng)),
            3 => format!("{pad}let {} = self.{}.{}({}, {})?;\n", w(rng), w(rng), w(rng), w(rng), rng.below(1000)),
            4 => format!("{pad}if {}.is_empty() {{ return Ok({}::default()); }}\n", w(rng), cap(w(rng))),
            5 => format!(
                "{pad}match {} {{ {}::{} => {}, _ => {} }}\n",
                w(rng),
                cap(w(rng)),
                cap(w(rng)),
                w(rng),
                rng.below(100)
            ),
            6 => "\n".to_string(),
            7 => format!("{pad}use crate::{}::{{{}, {}}};\n", w(rng), cap(w(rng)), cap(w(rng))),
            _ => format!("{pad}{}.push({}::new({}, \"{}\"));\n", w(rng), cap(w(rng)), rng.below(10_000), w(rng)),
        };
        pool.push_str(&line);
    }
    pool.into_bytes()
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}
