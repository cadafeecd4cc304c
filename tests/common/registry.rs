//! The two local registries of `ci/stack.sh` as the tests see them: unique
//! repository paths, `Cargo.toml` registry tables, and asking a registry's
//! HTTP API with `curl` (never the tool under test). The password goes to
//! `curl` on stdin (`-K -`), never on a command line: the secrets test
//! watches every process's arguments while other tests run.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use super::Output;

pub const PLAIN: &str = "127.0.0.1:5000";
pub const AUTH: &str = "127.0.0.1:5001";
pub const USER: &str = "mzbuild";
pub const PASSWORD: &str = "mzbuild-test-password";

pub const ACCEPT: &str = "Accept: application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// A name no other test and no earlier run uses: `t-<pid>-<nanos>-<n>`.
pub fn unique() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("t-{:x}-{:x}-{n}", std::process::id(), nanos % (1 << 48))
}

/// A root `Cargo.toml` with `registries` (TOML inline tables) as the
/// publish targets.
pub fn cargo_toml(registries: &[String]) -> String {
    let list: String = registries.iter().map(|r| format!("  {r},\n")).collect();
    format!("[workspace]\nmembers = []\n\n[workspace.metadata.mzbuild]\nregistries = [\n{list}]\n")
}

/// `curl -s args...`, logged in to the auth registry when `auth` (the
/// credentials go in a config on stdin).
pub fn curl(args: &[&str], auth: bool) -> Output {
    let mut cmd = Command::new("curl");
    cmd.arg("-s").args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if auth {
        cmd.args(["-K", "-"]);
    }
    let mut child = cmd.spawn().expect("curl is installed");
    let mut stdin = child.stdin.take().unwrap();
    if auth {
        writeln!(stdin, "user = \"{USER}:{PASSWORD}\"").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// HTTP status of `HEAD /v2/<path>/<image>/manifests/mzbuild-<fp>` on the
/// registry of `url` (`host:port/path`), e.g. "200" or "404".
pub fn manifest_status(url: &str, image: &str, fp: &str) -> String {
    let (host, path) = url.split_once('/').unwrap();
    let endpoint = format!("http://{host}/v2/{path}/{image}/manifests/mzbuild-{fp}");
    let out = curl(&["-o", "/dev/null", "-w", "%{http_code}", "-I", "-H", ACCEPT, &endpoint], host == AUTH);
    assert_eq!(out.code, Some(0), "curl {endpoint} failed\n{out}");
    out.stdout
}

/// The repositories of the registry of `url` (`host:port/path`) under
/// `path/`, from its `_catalog` (sorted: those under `path/` follow
/// `last=path/`).
pub fn catalog(url: &str) -> Vec<String> {
    let (host, path) = url.split_once('/').unwrap();
    let endpoint = format!("http://{host}/v2/_catalog?n=100&last={path}/");
    let out = curl(&[&endpoint], host == AUTH);
    assert_eq!(out.code, Some(0), "curl {endpoint} failed\n{out}");
    let json: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{endpoint}: not JSON ({e}): {}", out.stdout));
    let repos = json["repositories"].as_array().unwrap_or_else(|| panic!("no repositories in {}", out.stdout));
    repos
        .iter()
        .map(|r| r.as_str().expect("repository names are strings").to_string())
        .filter(|r| r.starts_with(&format!("{path}/")))
        .collect()
}

/// The `Docker-Content-Digest` of `HEAD /v2/<path>/<image>/manifests/<tag>`
/// on the registry of `url` (`host:port/path`), or `None` when it is not
/// there.
pub fn manifest_digest(url: &str, image: &str, tag: &str) -> Option<String> {
    let (host, path) = url.split_once('/').unwrap();
    let endpoint = format!("http://{host}/v2/{path}/{image}/manifests/{tag}");
    let out = curl(&["-I", "-H", ACCEPT, &endpoint], host == AUTH);
    assert_eq!(out.code, Some(0), "curl {endpoint} failed\n{out}");
    let status = out.stdout.split_whitespace().nth(1).unwrap_or_default();
    match status {
        "200" => {
            let digest = out.stdout.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("docker-content-digest").then(|| value.trim().to_string())
            });
            Some(digest.unwrap_or_else(|| panic!("no digest for {endpoint}\n{out}")))
        }
        "404" => None,
        s => panic!("HTTP {s} for HEAD {endpoint}\n{out}"),
    }
}

/// `DELETE` the manifest `digest` of `<path>/<image>` on the registry of
/// `url` (deletes are enabled on the stack's registries); its tags go with
/// it.
pub fn delete_manifest(url: &str, image: &str, digest: &str) {
    let (host, path) = url.split_once('/').unwrap();
    let endpoint = format!("http://{host}/v2/{path}/{image}/manifests/{digest}");
    let out = curl(&["-X", "DELETE", "-o", "/dev/null", "-w", "%{http_code}", &endpoint], host == AUTH);
    assert_eq!(out.stdout, "202", "DELETE {endpoint}\n{out}");
}
