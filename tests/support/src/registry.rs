//! The two local registries of `ci/stack.sh` as the tests see them: unique
//! repository paths, `Cargo.toml` registry tables, a temporary repository
//! that publishes to both (`Project`), and asking a registry's HTTP API with
//! `curl` (never the tool under test). The password goes to `curl` on stdin
//! (`-K -`), never on a command line: the secrets test watches every
//! process's arguments while other tests run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use super::docker::RemoveImages;
use super::{run, Output, TempRepo};

pub const PLAIN: &str = "127.0.0.1:5000";
pub const AUTH: &str = "127.0.0.1:5001";
pub const USER: &str = "mzbuild";
pub const PASSWORD: &str = "mzbuild-test-password";
/// The variable a `Project`'s `Cargo.toml` names as the auth registry's
/// token (`password-env`); `Project::command` sets it to `PASSWORD`.
pub const TOKEN_VAR: &str = "MZ_TEST_TOKEN";

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

/// A path on the plain registry that no other test and no earlier run uses
/// (`127.0.0.1:5000/t-<unique>`, for `--image-registry`), and the guard that
/// removes the local images under it when the test ends.
pub fn scratch() -> (String, RemoveImages) {
    let id = unique();
    (format!("{PLAIN}/{id}"), RemoveImages::new([id]))
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
    let config = if auth { format!("user = \"{USER}:{PASSWORD}\"\n") } else { String::new() };
    super::curl(&config, args)
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

/// HTTP status of `GET /v2/<path>/<image>/tags/list` on the registry of
/// `url` (`host:port/path`): "404" once the repository is unknown there.
pub fn tags_status(url: &str, image: &str) -> String {
    let (host, path) = url.split_once('/').unwrap();
    let endpoint = format!("http://{host}/v2/{path}/{image}/tags/list");
    let out = curl(&["-o", "/dev/null", "-w", "%{http_code}", &endpoint], host == AUTH);
    assert_eq!(out.code, Some(0), "curl {endpoint} failed\n{out}");
    out.stdout
}

/// A temporary repository that publishes to registry paths no other test
/// and no earlier run uses (`127.0.0.1:5000/<id>` and `127.0.0.1:5001/<id>`
/// unless `set_registries` says otherwise), run with the auth registry's
/// password in `TOKEN_VAR`. Removes the local images under `/<id>/` and
/// `/<id>-extra/` when dropped (the registries keep theirs: their paths are
/// unique, and the plain `docker-registry` has no cheap delete).
pub struct Project {
    pub repo: TempRepo,
    pub id: String,
    _images: RemoveImages,
}

impl Project {
    /// An empty repository (`/target/` ignored) publishing to both registries.
    pub fn new() -> Project {
        let id = unique();
        let project =
            Project { repo: TempRepo::new(), _images: RemoveImages::new([id.clone(), format!("{id}-extra")]), id };
        project.set_registries(&[project.plain_entry(), project.auth_entry()]);
        project.repo.write(".gitignore", "/target/\n");
        project
    }

    /// `127.0.0.1:5000/<id>`.
    pub fn plain_url(&self) -> String {
        format!("{PLAIN}/{}", self.id)
    }

    /// `127.0.0.1:5001/<id>`.
    pub fn auth_url(&self) -> String {
        format!("{AUTH}/{}", self.id)
    }

    /// A third registry path, on the plain registry: `127.0.0.1:5000/<id>-extra`.
    pub fn extra_url(&self) -> String {
        format!("{PLAIN}/{}-extra", self.id)
    }

    /// The `Cargo.toml` registry entry of `plain_url`.
    pub fn plain_entry(&self) -> String {
        format!("{{ url = \"{}\" }}", self.plain_url())
    }

    /// The `Cargo.toml` registry entry of `auth_url`, with its user and
    /// `password-env = TOKEN_VAR`.
    pub fn auth_entry(&self) -> String {
        format!("{{ url = \"{}\", username = \"{USER}\", password-env = \"{TOKEN_VAR}\" }}", self.auth_url())
    }

    /// The `Cargo.toml` entry of this project's path on another registry,
    /// at `host` (a proxy's, for one): `{ url = "<host>/<id>" }`.
    pub fn entry_at(&self, host: &str) -> String {
        format!("{{ url = \"{host}/{}\" }}", self.id)
    }

    /// Make `entries` (TOML inline tables) the publish targets.
    pub fn set_registries(&self, entries: &[String]) {
        self.repo.write("Cargo.toml", cargo_toml(entries));
    }

    /// Write `images/<name>`: `mzbuild.yml` (`name: <name>` and `yml_extra`),
    /// `Dockerfile` and `files` (path in the directory, contents).
    pub fn image(&self, name: &str, yml_extra: &str, dockerfile: &str, files: &[(&str, &str)]) -> &Self {
        self.repo.image(&format!("images/{name}"), &format!("name: {name}\n{yml_extra}"), dockerfile);
        for (rel, text) in files {
            self.repo.write(&format!("images/{name}/{rel}"), text);
        }
        self
    }

    /// `images/<name>`: `FROM scratch` and one file, `<name>.txt` holding
    /// `content` (unique to the test where its image must be: tests running
    /// at once must not share image IDs, or one's cleanup races another's
    /// build).
    pub fn file_image(&self, name: &str, yml_extra: &str, content: &str) -> &Self {
        let file = format!("{name}.txt");
        self.image(name, yml_extra, &format!("FROM scratch\nCOPY {file} /{file}\n"), &[(&file, content)])
    }

    /// `mzbuild --root REPO args...` with the right token in the child's
    /// environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.repo.mzbuild_command(args);
        cmd.env(TOKEN_VAR, PASSWORD);
        cmd
    }

    /// Run `command(args)` to completion.
    pub fn mz(&self, args: &[&str]) -> Output {
        run(&mut self.command(args))
    }

    /// The fingerprint of `image`.
    #[track_caller]
    pub fn fingerprint(&self, image: &str) -> String {
        self.mz(&["fingerprint", image]).fingerprint()
    }

    /// The spec of `image`.
    #[track_caller]
    pub fn spec(&self, image: &str) -> String {
        self.mz(&["spec", image]).line()
    }

    /// The build log of `image`.
    pub fn log(&self, image: &str) -> PathBuf {
        self.repo.build_log(image)
    }

    /// The build log directory.
    pub fn log_dir(&self) -> PathBuf {
        self.repo.path("target/mzbuild/logs")
    }

    /// Every build log with its modification time and size.
    pub fn logs(&self) -> BTreeMap<String, (SystemTime, u64)> {
        self.repo.build_logs()
    }
}

impl Default for Project {
    fn default() -> Self {
        Project::new()
    }
}
