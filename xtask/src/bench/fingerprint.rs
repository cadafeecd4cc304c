//! `cargo xtask bench fingerprint`: the time to fingerprint every image of
//! the generated monorepo, in one process, beside a floor: `git ls-files`
//! plus one single-threaded pass that reads and SHA-1-hashes each unique
//! input file. That comparison runs without mzbuild's caches (as
//! `--no-cache`); a second table measures the caches (listing, blob hashes,
//! fingerprint memos) and `diff`, as ratios to a cold-cache fingerprint of
//! the same run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mzbuild::config::image::PreImage;
use mzbuild::discover::Image;
use mzbuild::fingerprint::{self, fileset::FileSet, hash::hash_files};
use mzbuild::git::tree::Tree;
use mzbuild::{Arch, Ctx, Options, ProcessEnv, Profile, Repo, Settings, Status};
use sha1::{Digest, Sha1};

use super::generate::{SPEED_FILE, SPEED_FILE_LEN};
use super::{load_average, ms, stats};
use crate::flags::BenchFingerprint;

// ---------------------------------------------------------------------------
// The benchmark.

pub fn run(args: BenchFingerprint) -> Result<Status> {
    let runs = args.runs.max(1);
    let (root, generated) = super::generate::prepare(&args.repo)?;

    // Facts about the repository and the inputs, outside any timed region.
    eprintln!("bench: examining {}", root.display());
    let settings =
        Settings { profile: Profile::Optimized, arch: Arch::host(), coverage: false, sanitizer: "none".into() };
    let facts = Facts::gather(&root, &settings)?;
    let unique: Vec<&str> = facts.unique.iter().map(String::as_str).collect();

    // Warm-up: fills the page cache with everything both sides read.
    eprintln!("bench: warm-up pass (page cache warm from here on)");
    mzbuild_pass(&root, &settings)?;
    floor_pass(&root, &unique)?;

    let load_before = load_average();
    let t = timed_runs(&root, &settings, &facts, &unique, runs)?;
    eprintln!("bench: blob cache and diff");
    let cache = cache_pass(&root, runs)?;
    let load_after = load_average();
    let speed = sha1_speed(&root, runs)?;

    // The report.
    println!("mzbuild fingerprint benchmark: {}", root.display());
    print_repository(&facts, generated);
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
    print_times(&t);
    println!();
    print_caches(&cache);
    println!();
    print_speed(&facts, &t, &speed, runs);
    Ok(Status::Success)
}

/// What the benchmark reports about the repository and the inputs, and
/// the fingerprints every run must reproduce.
struct Facts {
    tracked: usize,
    tree_files: usize,
    tree_bytes: u64,
    target_files: usize,
    target_bytes: u64,
    /// The unique input files of all images, sorted.
    unique: Vec<String>,
    unique_bytes: u64,
    /// Input files summed over the images.
    naive_files: usize,
    naive_bytes: u64,
    kinds: Kinds,
    n_crates: usize,
    reference: Fingerprints,
}

/// How many images have which pre-images, and the closure sizes of the
/// cargo-build ones.
#[derive(Default)]
struct Kinds {
    cargo: usize,
    copy: usize,
    plain: usize,
    both: usize,
    closures: Vec<usize>,
}

impl Facts {
    fn gather(root: &Path, settings: &Settings) -> Result<Facts> {
        let repo = Repo::load(root, false)?;
        let images = repo.resolve(&[])?;
        let tracked = git_ls_files(root, &["--cached"])?.len();
        let tree_files = repo.tree.files.len();
        let tree_bytes: u64 = repo.tree.files.iter().map(|f| file_len(root, f)).sum();
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
        let size: BTreeMap<&str, u64> = unique.iter().map(|f| (*f, file_len(root, f))).collect();
        Ok(Facts {
            tracked,
            tree_files,
            tree_bytes,
            target_files,
            target_bytes,
            unique_bytes: size.values().sum(),
            naive_files: per_image.iter().map(Vec::len).sum(),
            naive_bytes: per_image.iter().flatten().map(|f| size[f.as_str()]).sum(),
            unique: unique.into_iter().map(str::to_string).collect(),
            kinds: Kinds::of(&repo, &images)?,
            n_crates: repo.crates()?.crates.len(),
            reference: fingerprint::fingerprint_all(&repo, &images, settings)?,
        })
    }
}

impl Kinds {
    fn of(repo: &Repo, images: &[&Image]) -> Result<Kinds> {
        let mut k = Kinds::default();
        for image in images {
            let cargo: Vec<_> = image
                .config
                .pre_images
                .iter()
                .filter_map(|p| if let PreImage::CargoBuild(c) = p { Some(c) } else { None })
                .collect();
            let copy = image.config.pre_images.iter().any(|p| matches!(p, PreImage::Copy(_)));
            match (cargo.is_empty(), copy) {
                (false, c) => {
                    k.cargo += 1;
                    k.both += usize::from(c);
                    let ws = repo.crates()?;
                    let rule = repo.workspace.path_dependencies.unwrap_or_default();
                    let mut crates = BTreeSet::new();
                    for cb in cargo {
                        for bin in &cb.bins {
                            crates.extend(ws.closure(ws.crate_for_bin(bin)?, false, rule));
                        }
                        for ex in &cb.examples {
                            crates.extend(ws.closure(ws.crate_for_example(ex)?, true, rule));
                        }
                    }
                    k.closures.push(crates.len());
                }
                (true, true) => k.copy += 1,
                (true, false) => k.plain += 1,
            }
        }
        Ok(k)
    }
}

/// The timed runs: mzbuild and the floor interleaved, then the phases.
fn timed_runs(root: &Path, settings: &Settings, facts: &Facts, unique: &[&str], runs: usize) -> Result<Timings> {
    let mut t = Timings::default();
    for r in 0..runs {
        eprintln!("bench: run {}/{runs}", r + 1);
        let (total, load, fp, fps) = mzbuild_pass(root, settings)?;
        if fps.iter().map(|(n, f)| (n, f.fingerprint)).ne(facts.reference.iter().map(|(n, f)| (n, f.fingerprint))) {
            bail!("fingerprints differ between runs: the benchmark repository changed under us");
        }
        t.mz_total.push(total);
        t.mz_load.push(load);
        t.mz_fp.push(fp);
        let (git, hash, listed) = floor_pass(root, unique)?;
        if listed != facts.tree_files {
            eprintln!("bench: warning: git ls-files lists {listed} files, Tree::list {}", facts.tree_files);
        }
        t.floor_git.push(git);
        t.floor_hash.push(hash);
        t.floor_total.push(git + hash);
        breakdown_pass(root, &mut t)?;
    }
    Ok(t)
}

fn print_repository(f: &Facts, generated: Option<Duration>) {
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "repository   {} git-visible files ({} tracked, {} untracked), {:.1} MB; ignored target/: {} files, {:.1} MB (never listed)",
        f.tree_files,
        f.tracked,
        f.tree_files.saturating_sub(f.tracked),
        mb(f.tree_bytes),
        f.target_files,
        mb(f.target_bytes),
    );
    if let Some(g) = generated {
        println!("generation   {:.1} s (this run)", g.as_secs_f64());
    }
    let k = &f.kinds;
    println!(
        "images       {} ({} cargo-build [{} of them also copy], {} copy, {} neither); workspace {} crates",
        f.reference.len(),
        k.cargo,
        k.both,
        k.copy,
        k.plain,
        f.n_crates
    );
    if !k.closures.is_empty() {
        println!(
            "closures     cargo-build images reach {}..{} crates (mean {:.0}) over path dependencies",
            k.closures.iter().min().unwrap(),
            k.closures.iter().max().unwrap(),
            k.closures.iter().sum::<usize>() as f64 / k.closures.len() as f64
        );
    }
    println!(
        "inputs       unique: {} files, {:.1} MB; naive (sum over images): {} files, {:.1} MB; each unique file is hashed once instead of {:.1} times on average",
        f.unique.len(),
        mb(f.unique_bytes),
        f.naive_files,
        mb(f.naive_bytes),
        f.naive_files as f64 / f.unique.len().max(1) as f64
    );
}

fn row(name: &str, v: &[Duration]) {
    let (b, m) = stats(v);
    println!("{name:<54} {:>8.1}ms {:>8.1}ms", ms(b), ms(m));
}

fn print_times(t: &Timings) {
    let (mz_best, mz_med) = stats(&t.mz_total);
    let (fl_best, fl_med) = stats(&t.floor_total);
    println!("{:<54} {:>10} {:>10}", "time", "best", "median");
    row("mzbuild, no caches: load + resolve + fingerprint_all", &t.mz_total);
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
    println!("{:<54} {:>10} {:>10}", "mzbuild phases, no caches (separate calls)", "best", "median");
    row("  Tree::list", &t.tree);
    row("  Repo::load (incl. Tree::list)", &t.load);
    row("  workspace (Cargo.toml files)", &t.workspace);
    row("  fingerprint::input_sets, all images", &t.inputs);
    row("  fingerprint::hash_files, unique inputs, all cores", &t.hash_files);
}

fn print_caches(cache: &CacheTimes) {
    println!("{:<54} {:>10} {:>10}", "caches and diff (same process, medians)", "median", "/ cold fp");
    let (_, cold) = stats(&cache.fp_cold);
    let ratio_row = |name: &str, v: &[Duration], target: &str| {
        let (_, m) = stats(v);
        println!("{name:<54} {:>8.1}ms {:>10.3}  target {target}", ms(m), m.as_secs_f64() / cold.as_secs_f64());
    };
    ratio_row("  fingerprint, cold caches", &cache.fp_cold, "= 1");
    ratio_row("  fingerprint again, nothing changed, warm caches", &cache.fp_warm, "<= 0.3");
    ratio_row("  diff against a commit with 1 file changed, cold", &cache.diff_cold, "<= 2");
    ratio_row("  diff against that commit, warm caches", &cache.diff_warm, "<= 0.3");
    ratio_row("  fingerprint with --no-cache (for reference)", &cache.fp_none, "-");
    println!(
        "  (cold: .git/mzbuild removed before the run; each line loads the repository anew, as a command does;\n   \
         diff = both sides; {} image(s) differ, {} input file(s))",
        cache.differing, cache.changed_files
    );
}

fn print_speed(f: &Facts, t: &Timings, speed: &Speed, runs: usize) {
    let rate = |b: u64, d: Duration| b as f64 / 1e6 / d.as_secs_f64();
    println!("SHA-1 throughput (MB = 10^6 bytes, best of {runs}):");
    println!("  floor pass, read + hash, 1 thread        {:>7.0} MB/s", rate(f.unique_bytes, stats(&t.floor_hash).0));
    println!("  hash_files, read + hash, all cores       {:>7.0} MB/s", rate(f.unique_bytes, stats(&t.hash_files).0));
    println!("  sha1 crate in this binary, in cache      {:>7.0} MB/s", speed.in_memory);
    println!("  sha1 crate in this binary, {} MiB file  {:>7.0} MB/s", SPEED_FILE_LEN >> 20, speed.file);
    match speed.sha1sum {
        Some(s) => println!("  sha1sum, same file                       {s:>7.0} MB/s"),
        None => println!("  sha1sum, same file                       (sha1sum not found)"),
    }
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
    let repo = Repo::load_with(root, false, false)?;
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
    let tree = Tree::list_with(root, false)?;
    t.tree.push(start.elapsed());
    drop(tree);
    let start = Instant::now();
    let repo = Repo::load_with(root, false, false)?;
    t.load.push(start.elapsed());
    let start = Instant::now();
    repo.crates()?;
    t.workspace.push(start.elapsed());
    let images = repo.resolve(&[])?;
    let start = Instant::now();
    let sets = fingerprint::input_sets(&repo, &images)?;
    t.inputs.push(start.elapsed());
    let mut union = FileSet::new(repo.tree.files.len());
    for (set, _) in &sets {
        union.union_with(set);
    }
    let unique: Vec<&str> = union.iter().map(|at| repo.tree.files[at].as_str()).collect();
    let start = Instant::now();
    let hashes = hash_files(root, &unique)?;
    t.hash_files.push(start.elapsed());
    std::hint::black_box(hashes);
    Ok(())
}

#[derive(Default)]
struct CacheTimes {
    fp_cold: Vec<Duration>,
    fp_warm: Vec<Duration>,
    diff_cold: Vec<Duration>,
    diff_warm: Vec<Duration>,
    fp_none: Vec<Duration>,
    differing: usize,
    changed_files: usize,
}

/// Fingerprint and `diff` with cold and warm caches. The revision
/// to diff against is HEAD with one input file changed, made with git
/// plumbing in a private index (the work tree and its index stay as they
/// are).
fn cache_pass(root: &Path, runs: usize) -> Result<CacheTimes> {
    let git = |args: &[&str], index: Option<&Path>, stdin: Option<&[u8]>| -> Result<String> {
        use std::io::Write;
        let mut cmd = mzbuild::process::command("git");
        cmd.args(args).current_dir(root).stdout(std::process::Stdio::piped()).stdin(std::process::Stdio::piped());
        if let Some(i) = index {
            cmd.env("GIT_INDEX_FILE", i);
        }
        let mut child = cmd.spawn().context("running git")?;
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or_default())?;
        drop(input);
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("git {} failed", args.join(" "));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let scratch = tempfile::tempdir()?;
    let index = scratch.path().join("index");
    let repo = Repo::load(root, false)?;
    let images = repo.resolve(&[])?;
    let input = fingerprint::inputs(&repo, images.last().expect("images"))?.into_iter().last().expect("an input");
    git(&["read-tree", "HEAD"], Some(&index), None)?;
    let mut bytes = std::fs::read(root.join(&input))?;
    bytes.extend_from_slice(b"\n// changed\n");
    let blob = git(&["hash-object", "-w", "--stdin"], None, Some(&bytes))?;
    git(&["update-index", "--cacheinfo", &format!("100644,{blob},{input}")], Some(&index), None)?;
    let tree = git(&["write-tree"], Some(&index), None)?;
    let commit = git(&["commit-tree", &tree, "-p", "HEAD", "-m", "bench: one file changed"], None, None)?;
    drop(images);
    drop(repo);

    let caches = root.join(".git/mzbuild");
    let load = |no_cache: bool| -> Result<Ctx> {
        let options = Options {
            root: Some(root.to_path_buf()),
            arch: Some(Arch::host().gcc().to_string()),
            no_cache,
            ..Default::default()
        };
        Ctx::load(&options, root.to_path_buf(), Box::new(ProcessEnv))
    };
    let reference = {
        let ctx = load(true)?;
        let images = ctx.repo.resolve(&[])?;
        fingerprint::fingerprint_all(&ctx.repo, &images, &ctx.settings)?
    };
    let fp = |no_cache: bool| -> Result<Duration> {
        let t = Instant::now();
        let ctx = load(no_cache)?;
        let images = ctx.repo.resolve(&[])?;
        let fps = fingerprint::fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
        let elapsed = t.elapsed();
        if fps.iter().map(|(n, f)| (n, f.fingerprint)).ne(reference.iter().map(|(n, f)| (n, f.fingerprint))) {
            bail!("internal error: fingerprints with caches differ from those without");
        }
        Ok(elapsed)
    };
    let diff = || -> Result<(Duration, usize, usize)> {
        let t = Instant::now();
        let ctx = load(false)?;
        let diffs = mzbuild::commands::diff::diff_images(&ctx, &commit, None)?;
        let elapsed = t.elapsed();
        if diffs.is_empty() {
            bail!("internal error: diff found nothing against a commit with {input} changed");
        }
        let files = diffs.iter().filter_map(|d| d.change.as_ref()).map(|c| c.changed.len()).max().unwrap_or(0);
        Ok((elapsed, diffs.len(), files))
    };
    let mut t = CacheTimes::default();
    for _ in 0..runs {
        let _ = std::fs::remove_dir_all(&caches);
        t.fp_cold.push(fp(false)?);
        t.fp_warm.push(fp(false)?);
        let _ = std::fs::remove_dir_all(&caches);
        let (cold, n, files) = diff()?;
        t.diff_cold.push(cold);
        t.diff_warm.push(diff()?.0);
        (t.differing, t.changed_files) = (n, files);
        t.fp_none.push(fp(true)?);
    }
    Ok(t)
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
            match mzbuild::process::command("sha1sum").arg(&path).output() {
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

fn git_ls_files(root: &Path, flags: &[&str]) -> Result<Vec<Vec<u8>>> {
    let out = mzbuild::process::command("git")
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
