//! `cargo xtask bench copy`: what filling a registry gap costs by copying
//! (what `ensure` does when another registry has the images) against
//! rebuilding (what it did before), for every image of the generated
//! monorepo, between the two local registries of `ci/stack.sh`.
//!
//! The generated monorepo's images cannot be built here (their crates are
//! not meant to compile, their bases are public images), so the benchmark
//! builds a stand-in repository beside it: one image per generated image,
//! with the same name and the same `MZFROM` graph, `FROM scratch` at the
//! roots, each copying its generated image's context files, plus random
//! (incompressible) payloads where the real ones are big: 16 MiB in each
//! root image (the base OS layers) and 4 MiB in each cargo-build image (its
//! binaries). Every stand-in image is published.
//!
//! One run: (1) publish everything to `127.0.0.1:5001/bench-copy-src` (once;
//! a no-op when it is there already); (2) *rebuild*: `ensure` with only a
//! fresh path of `127.0.0.1:5000` configured, which builds and pushes every
//! image, with BuildKit's cache warm from (1) (the best case for a
//! rebuild); (3) *copy*: `ensure` with the source and another fresh path of
//! `127.0.0.1:5000`, which copies every image. Both (2) and (3) reach
//! `127.0.0.1:5000` through a TCP proxy that counts the bytes sent to it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mzbuild::config::image::PreImage;
use mzbuild::publish::client::{Client, Credentials};
use mzbuild::{Env, ProcessEnv, Registry, Repo, Status};
use tcp_proxy::Proxy;

use super::generate::{git, Rng};
use crate::flags::BenchCopy;

const SOURCE: &str = "127.0.0.1:5001/bench-copy-src";
const TARGET_HOST: &str = "127.0.0.1:5000";
const PASSWORD_VAR: &str = "MZ_AUTH_REGISTRY_PASSWORD";
const STANDIN_VERSION: u32 = 2;
const ROOT_PAYLOAD: usize = 16 << 20;
const CARGO_PAYLOAD: usize = 4 << 20;

pub fn run(args: BenchCopy) -> Result<Status> {
    let (root, _) = super::generate::prepare(&args.repo)?;
    let generated = Repo::load(&root, false)?;
    let standin = root.with_file_name(format!("{}-copy-standin", root.file_name().unwrap().to_string_lossy()));
    let (payload_bytes, n_payloads) = write_standin(&generated, &standin)?;
    let n = generated.images.len();
    if ProcessEnv.non_empty(PASSWORD_VAR).is_none() {
        eprintln!("bench: ${PASSWORD_VAR} not set: using the stack's test password");
    }
    let password = ProcessEnv.non_empty(PASSWORD_VAR).unwrap_or_else(|| "mzbuild-test-password".into());
    let source_entry = format!("{{ url = \"{SOURCE}\", username = \"mzbuild\", password-env = \"{PASSWORD_VAR}\" }}");
    let run_id = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis());
    let proxy = Proxy::start(TARGET_HOST).context("starting the byte-counting proxy")?;
    let rebuild_url = format!("{}/bench-copy-{run_id}-rebuild", proxy.host());
    let copy_url = format!("{}/bench-copy-{run_id}-copy", proxy.host());

    // (1) The source, published once.
    let seed = ensure(&standin, std::slice::from_ref(&source_entry), &password, args.jobs)?;
    eprintln!(
        "bench: source {SOURCE}: {} pushed, {} already there, in {:.1} s",
        seed.count("pushed"),
        seed.count("published"),
        seed.took.as_secs_f64()
    );
    // (2) A rebuild into a registry that has nothing.
    let before = proxy.sent();
    let rebuild = ensure(&standin, &[format!("{{ url = \"{rebuild_url}\" }}")], &password, args.jobs)?;
    let rebuild_bytes = proxy.sent() - before;
    // (3) A copy into another one.
    let before = proxy.sent();
    let copy = ensure(&standin, &[source_entry, format!("{{ url = \"{copy_url}\" }}")], &password, args.jobs)?;
    let copy_bytes = proxy.sent() - before;
    if rebuild.count("pushed") != n || copy.count("copied") != n {
        bail!(
            "expected {n} pushed and {n} copied images, got {} and {}",
            rebuild.count("pushed"),
            copy.count("copied")
        );
    }

    // Which results are the source's content, digest for digest.
    let creds = Credentials { username: "mzbuild".into(), password, source: format!("${PASSWORD_VAR}") };
    let source = Client::new(&auth_registry(SOURCE), Some(creds));
    let rebuilt = Client::new(&Registry::anonymous(&rebuild_url), None);
    let copied = Client::new(&Registry::anonymous(&copy_url), None);
    let (mut same_rebuilt, mut same_copied) = (0, 0);
    for (name, tag) in &copy.tags {
        let digest = |c: &Client| c.manifest_digest(&c.registry.repository("", name), tag);
        let src = digest(&source)?;
        same_rebuilt += usize::from(src.is_some() && digest(&rebuilt)? == src);
        same_copied += usize::from(src.is_some() && digest(&copied)? == src);
    }
    // What the builds left in the local engine: the rebuild's tags, and the
    // source's (the registry keeps those; they build again in seconds).
    remove_local_images(&rebuild_url);
    remove_local_images(SOURCE);

    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "bench copy: {n} images (stand-ins of the generated monorepo's: same names and MZFROM graph, \
         {n_payloads} random payloads, {:.0} MB), {SOURCE} -> {TARGET_HOST} (through a byte-counting proxy)",
        mb(payload_bytes)
    );
    println!("  {:<46} {:>9} {:>12} {:>16}", "", "time s", "MB sent", "same digest");
    let row = |what: &str, e: &Ensured, bytes: u64, same: usize| {
        println!("  {what:<46} {:>9.1} {:>12.1} {:>12}/{n}", e.took.as_secs_f64(), mb(bytes), same);
    };
    row("rebuild: ensure builds and pushes all", &rebuild, rebuild_bytes, same_rebuilt);
    row("copy: ensure copies all from the source", &copy, copy_bytes, same_copied);
    println!(
        "  {:<46} {:>9.2} {:>12.2}",
        "ratio copy / rebuild",
        copy.took.as_secs_f64() / rebuild.took.as_secs_f64(),
        copy_bytes as f64 / rebuild_bytes.max(1) as f64
    );
    println!(
        "  (copy: {:.1} MB of blobs and manifests by mzbuild's count; the rebuild had BuildKit's cache warm, \
         the best case for it)",
        mb(copy.bytes_copied)
    );
    Ok(Status::Success)
}

fn auth_registry(url: &str) -> Registry {
    Registry {
        url: url.into(),
        username: Some("mzbuild".into()),
        username_env: None,
        password_env: Some(PASSWORD_VAR.into()),
    }
}

/// What one `ensure` run did.
struct Ensured {
    took: Duration,
    /// Each image's status.
    statuses: Vec<String>,
    /// Each image's name and tag.
    tags: Vec<(String, String)>,
    bytes_copied: u64,
}

impl Ensured {
    fn count(&self, status: &str) -> usize {
        self.statuses.iter().filter(|s| *s == status).count()
    }
}

/// `mzbuild ensure --json` on the stand-in, publishing to `registries`.
fn ensure(standin: &Path, registries: &[String], password: &str, jobs: Option<usize>) -> Result<Ensured> {
    let list: String = registries.iter().map(|r| format!("  {r},\n")).collect();
    std::fs::write(
        standin.join("Cargo.toml"),
        format!("[workspace]\nmembers = []\n\n[workspace.metadata.mzbuild]\nregistries = [\n{list}]\n"),
    )?;
    let exe = std::env::current_exe().context("finding this program")?;
    let mut cmd = mzbuild::process::command(&exe);
    cmd.args(["mzbuild", "--root"]).arg(standin).args(["--arch", "x86_64", "ensure", "--json"]);
    if let Some(j) = jobs {
        cmd.args(["--jobs", &j.to_string()]);
    }
    cmd.env(PASSWORD_VAR, password).stdin(Stdio::null()).stderr(Stdio::inherit());
    let t = Instant::now();
    let out = cmd.output().context("running mzbuild ensure")?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!("mzbuild ensure failed (is the stack up? `bash ci/stack.sh up`)");
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).context("ensure --json")?;
    let rows = doc["rows"].as_array().context("ensure --json has no `rows` array")?;
    let text = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or_default().to_string();
    Ok(Ensured {
        took,
        statuses: rows.iter().map(|r| text(r, "status")).collect(),
        tags: rows.iter().map(|r| (text(r, "name"), format!("mzbuild-{}", text(r, "fingerprint")))).collect(),
        bytes_copied: rows.iter().filter_map(|r| r["bytes_copied"].as_u64()).sum(),
    })
}

/// Write the stand-in repository (see the module docs) unless it is there
/// for this generated repository already. Returns the payload bytes and
/// how many payloads there are.
fn write_standin(generated: &Repo, dir: &Path) -> Result<(u64, usize)> {
    let params = format!("bench-copy stand-in v{STANDIN_VERSION}, {} images\n", generated.images.len());
    let stamp = dir.join(".git/mzbuild-bench-copy-stamp");
    let payloads: Vec<(&str, usize)> = generated
        .images
        .values()
        .filter_map(|i| {
            let cargo = i.config.pre_images.iter().any(|p| matches!(p, PreImage::CargoBuild(_)));
            match (i.depends_on.is_empty(), cargo) {
                (true, _) => Some((i.name.as_str(), ROOT_PAYLOAD)),
                (false, true) => Some((i.name.as_str(), CARGO_PAYLOAD)),
                (false, false) => None,
            }
        })
        .collect();
    let total: u64 = payloads.iter().map(|(_, n)| *n as u64).sum();
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == params) {
        eprintln!("bench: reusing {}", dir.display());
        return Ok((total, payloads.len()));
    }
    let t = Instant::now();
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    git(dir, &["init", "-q", "-b", "main"])?;
    std::fs::write(dir.join(".gitignore"), "/target/\n")?;
    for image in generated.images.values() {
        let at = dir.join("images").join(&image.name);
        std::fs::create_dir_all(at.join("context"))?;
        std::fs::write(at.join("mzbuild.yml"), format!("name: {}\n", image.name))?;
        // The generated image's context files (not those of images nested
        // in it, nor its mzbuild.yml, which would make another image).
        let prefix = format!("{}/", image.dir);
        let nested: Vec<String> = generated.nested_dirs(image).map(|d| format!("{d}/")).collect();
        for f in generated.tree.files.iter().filter(|f| f.starts_with(&prefix)) {
            if nested.iter().any(|n| f.starts_with(n.as_str())) || f.ends_with("/mzbuild.yml") {
                continue;
            }
            let to = at.join("context").join(&f[prefix.len()..]);
            std::fs::create_dir_all(to.parent().unwrap())?;
            std::fs::copy(generated.root().join(f), &to).with_context(|| format!("copying {f}"))?;
        }
        let mut dockerfile = String::new();
        for (k, dep) in image.depends_on.iter().enumerate().skip(1) {
            dockerfile.push_str(&format!("MZFROM {dep} AS stage{k}\n"));
        }
        match image.depends_on.first() {
            Some(dep) => dockerfile.push_str(&format!("MZFROM {dep}\n")),
            None => dockerfile.push_str("FROM scratch\n"),
        }
        dockerfile.push_str(&format!("COPY context/ /srv/{}/\n", image.name));
        if let Some((_, len)) = payloads.iter().find(|(n, _)| *n == image.name) {
            write_random(&at.join("payload.bin"), *len, &image.name)?;
            dockerfile.push_str(&format!("COPY payload.bin /srv/{}/payload.bin\n", image.name));
        }
        std::fs::write(at.join("Dockerfile"), dockerfile)?;
    }
    std::fs::write(&stamp, &params)?;
    eprintln!("bench: wrote the stand-in repository {} in {:.1} s", dir.display(), t.elapsed().as_secs_f64());
    Ok((total, payloads.len()))
}

/// `len` pseudo-random bytes, the same for the same `seed` every time.
fn write_random(path: &PathBuf, len: usize, seed: &str) -> Result<()> {
    let mut rng =
        Rng(seed.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)));
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        bytes.extend_from_slice(&rng.next().to_le_bytes());
    }
    bytes.truncate(len);
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Remove the local engine's tags under `url` (what the rebuild left).
fn remove_local_images(url: &str) {
    let Ok(out) = mzbuild::process::command("docker")
        .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    let mine: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|r| r.starts_with(&format!("{url}/")))
        .map(str::to_string)
        .collect();
    for chunk in mine.chunks(50) {
        let _ = mzbuild::process::command("docker")
            .arg("rmi")
            .args(chunk)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
