//! `cargo xtask bench ensure`: the cost of a no-op `ensure` (every image
//! already published) over the generated monorepo of `bench fingerprint`,
//! beside the fingerprint-only time of the same run.
//!
//! The images are "published once" by seeding the two local registries of
//! `ci/stack.sh` through the registry API: one tiny real image is pushed with
//! buildx, then its manifest is put under every image's content-addressed
//! tag (blobs are mounted across repositories, not re-uploaded). Building
//! the 100+ generated images for real would measure cargo, not `ensure`: the
//! generated crates are not meant to compile. What `ensure` does on a no-op
//! run (fingerprint, verify credentials, ask every registry about every
//! image) is the same either way.
//!
//! The same no-op `ensure` then runs with a trust policy (`--trust-key`):
//! every tag of the plain registry is signed once with a bench key, and the
//! run checks each signature, with the verdicts of earlier runs cached and
//! without them.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mzbuild::fingerprint::fingerprint_all;
use mzbuild::publish::client::{Client, Credentials};
use mzbuild::publish::{missing, published_status};
use mzbuild::{Ctx, Env, Naming, Options, ProcessEnv, Registry, Status};

use super::own_cpu;
use crate::flags::BenchEnsure;

const PLAIN: &str = "127.0.0.1:5000/bench";
const AUTH: &str = "127.0.0.1:5001/bench";

pub fn run(args: BenchEnsure) -> Result<Status> {
    let (root, generated) = super::generate::prepare(&args.repo)?;
    if let Some(t) = generated {
        eprintln!("bench: generated {} in {:.1}s", root.display(), t.as_secs_f64());
    }
    let password = ProcessEnv.non_empty("MZ_AUTH_REGISTRY_PASSWORD").unwrap_or_else(|| "mzbuild-test-password".into());
    let creds = Credentials {
        username: "mzbuild".into(),
        password: password.clone(),
        source: "$MZ_AUTH_REGISTRY_PASSWORD".into(),
    };
    let plain = Registry::anonymous(PLAIN);
    let auth = Registry {
        url: AUTH.into(),
        username: Some("mzbuild".into()),
        username_env: None,
        password_env: Some("MZ_AUTH_REGISTRY_PASSWORD".into()),
    };
    let load = |no_cache: bool| -> Result<Ctx> {
        let options = Options { root: Some(root.clone()), arch: Some("x86_64".into()), no_cache, ..Default::default() };
        let mut ctx = Ctx::load(&options, root.clone(), Box::new(ProcessEnv))?;
        ctx.naming = Naming {
            spec_registry: PLAIN.into(),
            prefix: String::new(),
            registries: vec![plain.clone(), auth.clone()],
        };
        Ok(ctx)
    };

    // Publish once (idempotent).
    let ctx = load(false)?;
    let images = ctx.repo.resolve(&[])?;
    let fps = fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
    let clients = [Client::new(&plain, None), Client::new(&auth, Some(creds.clone()))];
    let missing = missing(&published_status(&ctx, &clients, &images, &fps)?, clients.len());
    if !missing.is_empty() {
        let t = Instant::now();
        let seed = Seed::push(&ctx, &clients)?;
        for (name, regs) in &missing {
            let tag = fps[name].fingerprint.tag();
            for r in regs {
                seed.put(&clients[*r], &clients[*r].registry.repository("", name), &tag)?;
            }
        }
        eprintln!("bench: published {} image(s) once, in {:.1}s", missing.len(), t.elapsed().as_secs_f64());
    }
    // `publish: false` images count as done when the local engine has them:
    // tag the seed image locally under their specs.
    let local = ctx.docker.local_images()?;
    let unpublished: Vec<String> = images
        .iter()
        .filter(|i| !i.config.publish)
        .map(|i| ctx.naming.spec(&i.name, &fps[&i.name].fingerprint))
        .filter(|s| !local.contains(s))
        .collect();
    if !unpublished.is_empty() {
        let seed_ref = format!("127.0.0.1:5000/{SEED_REPO}:1");
        docker_ok(&ctx, &["pull", "--quiet", &seed_ref])?;
        for spec in &unpublished {
            docker_ok(&ctx, &["tag", &seed_ref, spec])?;
        }
        eprintln!("bench: tagged {} publish: false image(s) locally", unpublished.len());
    }
    let n_images = images.len();
    let n_pub = images.iter().filter(|i| i.config.publish).count();
    let trust_key = sign_all(&ctx, &clients[0], &images, &fps, &root)?;

    // The measurement: what a no-op `ensure` does, phase by phase.
    let mut fp_times = vec![];
    let mut fp_warm_times = vec![];
    let mut check_times = vec![];
    let mut cpu_times = vec![];
    let mut per_registry: [Vec<Duration>; 2] = [vec![], vec![]];
    for _ in 0..args.runs {
        // The fingerprint without the caches (what a fresh CI checkout
        // pays), then with them warm (a re-run on the same agent).
        let t = Instant::now();
        let ctx = load(true)?;
        let images = ctx.repo.resolve(&[])?;
        let fps = fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
        let t_fp = t.elapsed();
        let t = Instant::now();
        let warm = load(false)?;
        let warm_images = warm.repo.resolve(&[])?;
        fingerprint_all(&warm.repo, &warm_images, &warm.settings)?;
        fp_warm_times.push(t.elapsed());
        drop(warm_images);
        drop(warm);
        let t = Instant::now();
        let cpu0 = own_cpu();
        let clients = [Client::new(&plain, None), Client::new(&auth, Some(creds.clone()))];
        for c in &clients {
            c.verify_credentials(&c.registry.repository("", &images[0].name))?;
        }
        let missing = mzbuild::publish::missing(&published_status(&ctx, &clients, &images, &fps)?, clients.len());
        let t_check = t.elapsed();
        cpu_times.push(own_cpu().saturating_sub(cpu0));
        // Each registry alone, to tell the client's cost from the server's.
        for (i, c) in clients.iter().enumerate() {
            let t = Instant::now();
            published_status(&ctx, std::slice::from_ref(c), &images, &fps)?;
            per_registry[i].push(t.elapsed());
        }
        if !missing.is_empty() {
            bail!("{} image(s) unexpectedly missing after publishing", missing.len());
        }
        fp_times.push(t_fp);
        check_times.push(t_check);
    }
    // And the real command, end to end, for the record: with the live
    // status line forced on (`--progress tty`, drawn on the pipe) and with
    // plain lines, interleaved so that both see the same machine.
    let exe = std::env::current_exe().context("finding this program")?;
    let verdicts = root.join(".git/mzbuild/trusted");
    let ensure_with = |progress: &str, trust: Trust| -> Result<Duration> {
        let mut cmd = mzbuild::process::command(&exe);
        cmd.args(["mzbuild", "--root"]).arg(&root);
        if trust != Trust::Off {
            cmd.arg("--trust-key").arg(&trust_key);
        }
        if trust == Trust::Cold {
            let _ = std::fs::remove_file(&verdicts);
        }
        let t = Instant::now();
        let out = cmd
            .args(["--arch", "x86_64", "--image-registry", PLAIN, "--progress", progress, "ensure"])
            .stdin(Stdio::null())
            .output()?;
        let took = t.elapsed();
        if !out.status.success() {
            bail!("ensure failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.contains("0 to build") {
            bail!("ensure was not a no-op: {err}");
        }
        Ok(took)
    };
    let ensure = |progress: &str| ensure_with(progress, Trust::Off);
    let (mut whole, mut live) = (vec![], vec![]);
    for i in 0..args.runs {
        // Each goes first in every other pair (the first of a pair warms up
        // the registry).
        if i % 2 == 0 {
            whole.push(ensure("plain")?);
            live.push(ensure("tty")?);
        } else {
            live.push(ensure("tty")?);
            whole.push(ensure("plain")?);
        }
    }
    // Trust on (every tag's signature checked against the bench key),
    // against off, interleaved: with the verdicts of earlier runs cached
    // (a re-run on one agent) and without (a fresh checkout).
    let (mut off, mut warm, mut cold) = (vec![], vec![], vec![]);
    ensure_with("plain", Trust::Warm)?;
    for _ in 0..args.runs {
        off.push(ensure_with("plain", Trust::Off)?);
        warm.push(ensure_with("plain", Trust::Warm)?);
        cold.push(ensure_with("plain", Trust::Cold)?);
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        (v[0], v[v.len() / 2])
    };
    let (fp_min, fp_med) = med(&mut fp_times);
    let (fw_min, fw_med) = med(&mut fp_warm_times);
    let (ck_min, ck_med) = med(&mut check_times);
    let (wh_min, wh_med) = med(&mut whole);
    let (live_min, live_med) = med(&mut live);
    let (cpu_min, cpu_med) = med(&mut cpu_times);
    let (plain_min, plain_med) = med(&mut per_registry[0]);
    let (auth_min, auth_med) = med(&mut per_registry[1]);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "bench ensure: no-op ensure over {} images ({} publishable), 2 registries ({} HEAD requests), {} runs",
        n_images,
        n_pub,
        2 * n_pub,
        args.runs
    );
    println!("  {:<44} {:>9} {:>9}", "phase", "min ms", "median ms");
    println!("  {:<44} {:>9.1} {:>9.1}", "fingerprint, no caches (discover + hash)", ms(fp_min), ms(fp_med));
    println!("  {:<44} {:>9.1} {:>9.1}", "fingerprint, warm caches", ms(fw_min), ms(fw_med));
    println!("  {:<44} {:>9.1} {:>9.1}", "registry checks (verify + HEAD all, parallel)", ms(ck_min), ms(ck_med));
    println!("  {:<44} {:>9.1} {:>9.1}", "  of which mzbuild's own CPU time", ms(cpu_min), ms(cpu_med));
    println!("  {:<44} {:>9.1} {:>9.1}", "  127.0.0.1:5000 alone (no auth)", ms(plain_min), ms(plain_med));
    println!("  {:<44} {:>9.1} {:>9.1}", "  127.0.0.1:5001 alone (htpasswd basic auth)", ms(auth_min), ms(auth_med));
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "  {:<44} {:>9.2} {:>9.2}",
        "ratio checks / fingerprint, no caches (<= 0.5)",
        ratio(ck_min, fp_min),
        ratio(ck_med, fp_med)
    );
    println!("  {:<44} {:>9.2} {:>9.2}", "  ratio, 5000 alone", ratio(plain_min, fp_min), ratio(plain_med, fp_med));
    println!("  {:<44} {:>9.2} {:>9.2}", "  ratio, 5001 alone", ratio(auth_min, fp_min), ratio(auth_med, fp_med));
    println!(
        "  {:<44} {:>9.2} {:>9.2}",
        "ratio checks / fingerprint, warm caches",
        ratio(ck_min, fw_min),
        ratio(ck_med, fw_med)
    );
    println!("  {:<44} {:>9.1} {:>9.1}", "whole `mzbuild ensure` process, 5000 only", ms(wh_min), ms(wh_med));
    println!("  {:<44} {:>9.1} {:>9.1}", "  the same, --progress tty (status line)", ms(live_min), ms(live_med));
    println!(
        "  {:<44} {:>9.2} {:>9.2}",
        "ratio --progress tty / plain (<= 1.05)",
        ratio(live_min, wh_min),
        ratio(live_med, wh_med)
    );
    let (off_min, off_med) = med(&mut off);
    let (warm_min, warm_med) = med(&mut warm);
    let (cold_min, cold_med) = med(&mut cold);
    println!("  {:<44} {:>9.1} {:>9.1}", "trust off: `mzbuild ensure`, 5000 only", ms(off_min), ms(off_med));
    println!("  {:<44} {:>9.1} {:>9.1}", "trust on, verdicts cached", ms(warm_min), ms(warm_med));
    println!("  {:<44} {:>9.1} {:>9.1}", "trust on, no cached verdict (fresh checkout)", ms(cold_min), ms(cold_med));
    println!(
        "  {:<44} {:>9.2} {:>9.2}",
        "ratio trust on / off, cached (< 1.5)",
        ratio(warm_min, off_min),
        ratio(warm_med, off_med)
    );
    println!(
        "  {:<44} {:>9.2} {:>9.2}",
        "ratio trust on / off, no cached verdict",
        ratio(cold_min, off_min),
        ratio(cold_med, off_med)
    );
    println!("(the htpasswd registry checks a bcrypt hash on every request, on the same 2 cores)");
    Ok(Status::Success)
}

/// Whether a measured `ensure` runs with a trust policy, and with the
/// verdicts of earlier runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trust {
    Off,
    Warm,
    Cold,
}

/// Sign every published image's tag in `client`'s registry with the bench
/// key (made once, kept beside the generated repository; signing skips
/// what the key signed already): the public key's path, for `--trust-key`.
fn sign_all(
    ctx: &Ctx,
    client: &Client,
    images: &[&mzbuild::Image],
    fps: &std::collections::BTreeMap<String, mzbuild::Fingerprinted>,
    root: &std::path::Path,
) -> Result<std::path::PathBuf> {
    let name = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let key_path = root.with_file_name(format!("{name}.bench-signing.pem"));
    let pub_path = root.with_file_name(format!("{name}.bench-signing.pub"));
    let pem = match std::fs::read_to_string(&key_path) {
        Ok(pem) => pem,
        Err(_) => {
            let pem = mzbuild::sigstore::SigningKey::generate_pem()?;
            std::fs::write(&key_path, &pem).with_context(|| format!("writing {}", key_path.display()))?;
            pem
        }
    };
    let signer =
        mzbuild::trust::Signer { key: mzbuild::sigstore::SigningKey::from_pem(&pem, None)?, source: "bench".into() };
    std::fs::write(&pub_path, signer.key.public().to_pem())?;
    let held = published_status(ctx, std::slice::from_ref(client), images, fps)?;
    let t = Instant::now();
    let todo: Vec<(String, String)> =
        held.iter().filter_map(|(n, h)| Some((client.registry.repository("", n), h[0].clone()?))).collect();
    let mut n = 0;
    for (repository, digest) in &todo {
        n += usize::from(signer.sign(client, repository, digest)?);
    }
    if n > 0 {
        eprintln!("bench: signed {n} image(s) in {}, in {:.1}s", client.registry.url, t.elapsed().as_secs_f64());
    }
    Ok(pub_path)
}

fn docker_ok(ctx: &Ctx, args: &[&str]) -> Result<()> {
    let out = ctx.docker.command(args).output()?;
    if !out.status.success() {
        bail!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// One small real image, pushed once; its manifest is then put under every
/// image's tag (blobs mounted across repositories, not re-uploaded).
struct Seed {
    manifest: Vec<u8>,
    media_type: String,
    digests: Vec<String>,
}

const SEED_REPO: &str = "bench/mzbuild-bench-seed";

impl Seed {
    /// Push the seed image to the first registry with buildx, and copy its
    /// blobs to the seed repository of the others.
    fn push(ctx: &Ctx, clients: &[Client]) -> Result<Seed> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("seed.txt"), "mzbuild bench seed\n")?;
        let reference = format!("{}/{SEED_REPO}:1", clients[0].registry.host());
        // buildx's state and its leftover `$TMPDIR/dockerfileNNNN/` go to a
        // private directory, as in every build of mzbuild's own.
        let run_dir = mzbuild::docker::RunDir::new(ctx.env.as_ref())?;
        let status = ctx
            .docker
            .with_env(run_dir.env())
            .command(&["buildx", "build", "--quiet", "--push", "-f", "-", "-t", &reference])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("piped").write_all(b"FROM scratch\nCOPY seed.txt /seed.txt\n")?;
                c.wait()
            })
            .context("docker buildx build of the seed image (is the stack up? `bash ci/stack.sh up`)")?;
        if !status.success() {
            bail!("pushing the seed image failed (is the stack up? `bash ci/stack.sh up`)");
        }
        let m = clients[0].get_manifest(SEED_REPO, "1")?.context("the seed image's manifest vanished")?;
        let v: serde_json::Value = serde_json::from_slice(&m.bytes)?;
        let mut digests = vec![v["config"]["digest"].as_str().unwrap_or_default().to_string()];
        digests.extend(
            v["layers"].as_array().into_iter().flatten().filter_map(|l| l["digest"].as_str().map(str::to_string)),
        );
        for d in &digests {
            let blob = clients[0].get_blob(SEED_REPO, d)?;
            for other in &clients[1..] {
                other.upload_blob(SEED_REPO, d, &blob)?;
            }
        }
        Ok(Seed { manifest: m.bytes, media_type: m.media_type, digests })
    }

    fn put(&self, client: &Client, repo: &str, tag: &str) -> Result<()> {
        for d in &self.digests {
            if !client.mount_blob(repo, d, SEED_REPO)? {
                bail!("mounting {d} into {}/{repo} failed", client.registry.host());
            }
        }
        client.put_manifest(repo, tag, &self.media_type, &self.manifest).map(|_| ())
    }
}
