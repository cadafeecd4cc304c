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

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cli::{BenchEnsure, GlobalArgs};
use crate::fingerprint::{base32, fingerprint_all};
use crate::registry::{Naming, Registry};
use crate::registry_api::{Client, Credentials, MANIFEST_TYPES};
use crate::Ctx;

const PLAIN: &str = "127.0.0.1:5000/bench";
const AUTH: &str = "127.0.0.1:5001/bench";

pub fn run(args: BenchEnsure) -> Result<ExitCode> {
    let (root, generated) = crate::bench::prepare(&args.repo)?;
    if let Some(t) = generated {
        eprintln!("bench: generated {} in {:.1}s", root.display(), t.as_secs_f64());
    }
    let password = std::env::var("MZ_AUTH_REGISTRY_PASSWORD").unwrap_or_else(|_| "mzbuild-test-password".into());
    let creds = Credentials {
        username: "mzbuild".into(),
        password: password.clone(),
        source: "$MZ_AUTH_REGISTRY_PASSWORD".into(),
    };
    let plain = Registry { url: PLAIN.into(), username: None, username_env: None, password_env: None };
    let auth = Registry {
        url: AUTH.into(),
        username: Some("mzbuild".into()),
        username_env: None,
        password_env: Some("MZ_AUTH_REGISTRY_PASSWORD".into()),
    };
    let load = || -> Result<Ctx> {
        let mut ctx =
            Ctx::load(&GlobalArgs { root: Some(root.clone()), arch: Some("x86_64".into()), ..Default::default() })?;
        ctx.naming = Naming {
            spec_registry: PLAIN.into(),
            prefix: String::new(),
            registries: vec![plain.clone(), auth.clone()],
        };
        Ok(ctx)
    };

    // Publish once (idempotent).
    let ctx = load()?;
    let images = ctx.repo.resolve(&[])?;
    let fps = fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
    let clients = [Client::new(&plain, None), Client::new(&auth, Some(creds.clone()))];
    let missing = crate::publish::published_status(&ctx, &clients, &images, &fps)?;
    if !missing.is_empty() {
        let t = Instant::now();
        let seed = Seed::push(&password)?;
        for (name, regs) in &missing {
            let tag = format!("mzbuild-{}", base32(&fps[name].fingerprint));
            for r in regs {
                let (reg, c) = if *r == 0 { (&plain, None) } else { (&auth, Some(&creds)) };
                seed.put(reg, c, &reg.repository("", name), &tag)?;
            }
        }
        eprintln!("bench: published {} image(s) once, in {:.1}s", missing.len(), t.elapsed().as_secs_f64());
    }
    // `publish: false` images count as done when the local engine has them:
    // tag the seed image locally under their specs.
    let local = crate::docker::local_images()?;
    let unpublished: Vec<String> = images
        .iter()
        .filter(|i| !i.config.publish)
        .map(|i| ctx.naming.spec(&i.name, &base32(&fps[&i.name].fingerprint)))
        .filter(|s| !local.contains(s))
        .collect();
    if !unpublished.is_empty() {
        let seed_ref = format!("127.0.0.1:5000/{SEED_REPO}:1");
        docker_ok(&["pull", "--quiet", &seed_ref])?;
        for spec in &unpublished {
            docker_ok(&["tag", &seed_ref, spec])?;
        }
        eprintln!("bench: tagged {} publish: false image(s) locally", unpublished.len());
    }
    let n_images = images.len();
    let n_pub = images.iter().filter(|i| i.config.publish).count();

    // The measurement: what a no-op `ensure` does, phase by phase.
    let mut fp_times = vec![];
    let mut check_times = vec![];
    let mut cpu_times = vec![];
    let mut per_registry: [Vec<Duration>; 2] = [vec![], vec![]];
    for _ in 0..args.runs {
        let t = Instant::now();
        let ctx = load()?;
        let images = ctx.repo.resolve(&[])?;
        let fps = fingerprint_all(&ctx.repo, &images, &ctx.settings)?;
        let t_fp = t.elapsed();
        let t = Instant::now();
        let cpu0 = own_cpu();
        let clients = [Client::new(&plain, None), Client::new(&auth, Some(creds.clone()))];
        for c in &clients {
            c.verify_credentials(&c.registry.repository("", &images[0].name))?;
        }
        let missing = crate::publish::published_status(&ctx, &clients, &images, &fps)?;
        let t_check = t.elapsed();
        cpu_times.push(own_cpu().saturating_sub(cpu0));
        // Each registry alone, to tell the client's cost from the server's.
        for (i, c) in clients.iter().enumerate() {
            let t = Instant::now();
            crate::publish::published_status(&ctx, std::slice::from_ref(c), &images, &fps)?;
            per_registry[i].push(t.elapsed());
        }
        if !missing.is_empty() {
            bail!("{} image(s) unexpectedly missing after publishing", missing.len());
        }
        fp_times.push(t_fp);
        check_times.push(t_check);
    }
    // And the real command, end to end, for the record.
    let exe = std::env::current_exe()?;
    let mut whole = vec![];
    for _ in 0..args.runs {
        let t = Instant::now();
        let out = Command::new(&exe)
            .args(["mzbuild", "--root"])
            .arg(&root)
            .args(["--arch", "x86_64", "--image-registry", PLAIN, "ensure"])
            .stdin(Stdio::null())
            .output()?;
        whole.push(t.elapsed());
        if !out.status.success() {
            bail!("ensure failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.contains("0 to build") {
            bail!("ensure was not a no-op: {err}");
        }
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        (v[0], v[v.len() / 2])
    };
    let (fp_min, fp_med) = med(&mut fp_times);
    let (ck_min, ck_med) = med(&mut check_times);
    let (wh_min, wh_med) = med(&mut whole);
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
    println!("  {:<44} {:>9.1} {:>9.1}", "fingerprint (discover + hash, in process)", ms(fp_min), ms(fp_med));
    println!("  {:<44} {:>9.1} {:>9.1}", "registry checks (verify + HEAD all, parallel)", ms(ck_min), ms(ck_med));
    println!("  {:<44} {:>9.1} {:>9.1}", "  of which mzbuild's own CPU time", ms(cpu_min), ms(cpu_med));
    println!("  {:<44} {:>9.1} {:>9.1}", "  127.0.0.1:5000 alone (no auth)", ms(plain_min), ms(plain_med));
    println!("  {:<44} {:>9.1} {:>9.1}", "  127.0.0.1:5001 alone (htpasswd basic auth)", ms(auth_min), ms(auth_med));
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "  {:<44} {:>9.2} {:>9.2}",
        "ratio checks / fingerprint (target <= 0.5)",
        ratio(ck_min, fp_min),
        ratio(ck_med, fp_med)
    );
    println!("  {:<44} {:>9.2} {:>9.2}", "  ratio, 5000 alone", ratio(plain_min, fp_min), ratio(plain_med, fp_med));
    println!("  {:<44} {:>9.2} {:>9.2}", "  ratio, 5001 alone", ratio(auth_min, fp_min), ratio(auth_med, fp_med));
    println!("  {:<44} {:>9.1} {:>9.1}", "whole `mzbuild ensure` process, 5000 only", ms(wh_min), ms(wh_med));
    println!("(the htpasswd registry checks a bcrypt hash on every request, on the same 2 cores)");
    Ok(ExitCode::SUCCESS)
}

/// This process's user + system CPU time (from /proc/self/stat).
fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0) + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn docker_ok(args: &[&str]) -> Result<()> {
    let out = Command::new(crate::docker::docker_program()).args(args).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// One small real image in both registries, whose manifest is re-tagged.
struct Seed {
    manifest: Vec<u8>,
    media_type: String,
    digests: Vec<String>,
    agent: ureq::Agent,
}

const SEED_REPO: &str = "bench/mzbuild-bench-seed";

impl Seed {
    fn push(password: &str) -> Result<Seed> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("seed.txt"), "mzbuild bench seed\n")?;
        let status = Command::new(crate::docker::docker_program())
            .args(["buildx", "build", "--quiet", "--push", "-f", "-", "-t", &format!("127.0.0.1:5000/{SEED_REPO}:1")])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"FROM scratch\nCOPY seed.txt /seed.txt\n")?;
                c.wait()
            })
            .context("docker buildx build of the seed image (is the stack up? `bash ci/stack.sh up`)")?;
        if !status.success() {
            bail!("pushing the seed image failed (is the stack up? `bash ci/stack.sh up`)");
        }
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut resp = agent
            .get(&format!("http://127.0.0.1:5000/v2/{SEED_REPO}/manifests/1"))
            .header("Accept", MANIFEST_TYPES)
            .call()?;
        let media_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let manifest = resp.body_mut().read_to_vec()?;
        let m: serde_json::Value = serde_json::from_slice(&manifest)?;
        let mut digests = vec![m["config"]["digest"].as_str().unwrap_or_default().to_string()];
        digests.extend(
            m["layers"].as_array().into_iter().flatten().filter_map(|l| l["digest"].as_str().map(str::to_string)),
        );
        let seed = Seed { manifest, media_type, digests, agent };
        // Copy the blobs into the auth registry's seed repository.
        let basic = format!("Basic {}", crate::registry_api::base64_of(&format!("mzbuild:{password}")));
        for d in &seed.digests {
            let blob = seed
                .agent
                .get(&format!("http://127.0.0.1:5000/v2/{SEED_REPO}/blobs/{d}"))
                .call()?
                .body_mut()
                .read_to_vec()?;
            let resp = seed
                .agent
                .post(&format!("http://127.0.0.1:5001/v2/{SEED_REPO}/blobs/uploads/"))
                .header("Authorization", &basic)
                .send_empty()?;
            let loc =
                resp.headers().get("location").and_then(|v| v.to_str().ok()).context("upload location")?.to_string();
            let loc = if loc.starts_with('/') { format!("http://127.0.0.1:5001{loc}") } else { loc };
            let sep = if loc.contains('?') { '&' } else { '?' };
            let r = seed
                .agent
                .put(&format!("{loc}{sep}digest={d}"))
                .header("Authorization", &basic)
                .header("Content-Type", "application/octet-stream")
                .send(&blob[..])?;
            if r.status().as_u16() != 201 {
                bail!("uploading seed blob to 127.0.0.1:5001: HTTP {}", r.status());
            }
        }
        Ok(seed)
    }

    fn put(&self, reg: &Registry, creds: Option<&Credentials>, repo: &str, tag: &str) -> Result<()> {
        let base = format!("http://{}", reg.host());
        let auth = creds
            .map(|c| format!("Basic {}", crate::registry_api::base64_of(&format!("{}:{}", c.username, c.password))));
        for d in &self.digests {
            let mut req = self.agent.post(&format!("{base}/v2/{repo}/blobs/uploads/?mount={d}&from={SEED_REPO}"));
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            let r = req.send_empty()?;
            if r.status().as_u16() != 201 {
                bail!("mounting {d} into {}/{repo}: HTTP {}", reg.host(), r.status());
            }
        }
        let mut req =
            self.agent.put(&format!("{base}/v2/{repo}/manifests/{tag}")).header("Content-Type", &self.media_type);
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let r = req.send(&self.manifest[..])?;
        if r.status().as_u16() != 201 {
            bail!("putting manifest {repo}:{tag} into {}: HTTP {}", reg.host(), r.status());
        }
        Ok(())
    }
}
