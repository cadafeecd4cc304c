//! Integration tests: release tags for multi-arch images (`tag`), end to
//! end, with the real `xtask` binary, the real Docker engine (buildx builds
//! `FROM scratch` images for linux/arm64 without emulation: they only copy
//! files) and the two real registries of `ci/stack.sh` (127.0.0.1:5000
//! plain, 127.0.0.1:5001 with htpasswd auth). What a registry holds is
//! asked of its HTTP API with `curl`, and pulled with `docker pull
//! --platform`, never asked of the tool.

use std::ops::Deref;
use std::process::Command;

use support::docker::docker;
use support::registry::{curl, manifest_digest, Project, ACCEPT, PLAIN};
use support::{run, Output};

/// A `Project` (publishing to `127.0.0.1:5000/<id>` and
/// `127.0.0.1:5001/<id>`) with `base` <- `app`, `tool` (`mainline: false`)
/// and `local` (`publish: false`).
struct Fixture {
    project: Project,
}

impl Deref for Fixture {
    type Target = Project;
    fn deref(&self) -> &Project {
        &self.project
    }
}

impl Fixture {
    fn new() -> Fixture {
        let project = Project::new();
        let id = project.id.clone();
        project
            .file_image("base", "", &format!("base {id}\n"))
            .image("app", "", "MZFROM base\nCOPY app.txt /app.txt\n", &[("app.txt", "app\n")])
            .file_image("tool", "mainline: false\n", &format!("tool {id}\n"))
            .image("local", "publish: false\n", "MZFROM base\nCOPY local.txt /local.txt\n", &[("local.txt", "local\n")])
            .repo
            .commit_all();
        Fixture { project }
    }

    /// `new`, after an `ensure` (x86_64) that published it.
    fn published() -> Fixture {
        let fx = Fixture::new();
        fx.run(&["ensure", "--arch", "x86_64"]).ok();
        fx
    }

    /// `command`, without `$BUILDKITE_TAG` from the developer's shell.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(args);
        cmd.env_remove("BUILDKITE_TAG");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        run(&mut self.cmd(args))
    }

    /// The fingerprint of `image` for `arch`.
    fn fp(&self, image: &str, arch: &str) -> String {
        self.run(&["fingerprint", "--arch", arch, image]).fingerprint()
    }

    /// The digest each registry (plain, auth) holds under `image:tag`.
    fn digests(&self, image: &str, tag: &str) -> (Option<String>, Option<String>) {
        (manifest_digest(&self.plain_url(), image, tag), manifest_digest(&self.auth_url(), image, tag))
    }

    /// The digest of `image`'s per-arch image, the same in both registries.
    fn member(&self, image: &str, arch: &str) -> String {
        let tag = format!("mzbuild-{}", self.fp(image, arch));
        let (plain, auth) = self.digests(image, &tag);
        assert_eq!(plain, auth, "{image} ({arch}) differs between the registries");
        plain.unwrap_or_else(|| panic!("{image} ({arch}) is not published"))
    }
}

/// The index under `image:tag` in the plain registry: `(platform, digest)`
/// of each manifest it lists, and its media type.
fn index(fx: &Fixture, image: &str, tag: &str) -> (String, Vec<(String, String)>) {
    let url = format!("http://{PLAIN}/v2/{}/{image}/manifests/{tag}", fx.id);
    let out = curl(&["-H", ACCEPT, &url], false);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{url}: {e}\n{out}"));
    let members = json["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("not an index: {json}"))
        .iter()
        .map(|m| {
            let p = &m["platform"];
            (
                format!("{}/{}", p["os"].as_str().unwrap(), p["architecture"].as_str().unwrap()),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (json["mediaType"].as_str().unwrap_or_default().to_string(), members)
}

/// The architecture of `reference` pulled for `platform`, and the image
/// removed again.
fn pulled_architecture(reference: &str, platform: &str) -> String {
    let pull = docker(&["pull", "--quiet", "--platform", platform, reference]);
    assert_eq!(pull.code, Some(0), "docker pull --platform {platform} {reference}\n{pull}");
    let inspect = docker(&["image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", reference]);
    let _ = docker(&["rmi", reference]);
    inspect.line()
}

/// The stdout lines of a `tag` run (images in dependency order), with the fixture's registries shown as
/// `plain` and `auth` and digests as `<digest>`.
fn tag_lines(fx: &Fixture, out: &Output) -> String {
    out.ok()
        .lines()
        .map(|l| {
            let l = l.replace(&fx.plain_url(), "plain").replace(&fx.auth_url(), "auth");
            let words: Vec<String> = l
                .split(' ')
                .map(|w| {
                    let core = w.trim_start_matches('(').trim_end_matches(')');
                    if core.starts_with("sha256:") {
                        w.replace(core, "<digest>")
                    } else {
                        w.to_string()
                    }
                })
                .collect();
            format!("{}\n", words.join(" "))
        })
        .collect()
}

#[test]
fn a_release_tag_points_at_a_multi_arch_index_in_every_registry() {
    let fx = Fixture::published();

    // The aarch64 images are not published yet: nothing is tagged.
    let out = fx.run(&["tag", "v1.0.0", "--arch", "x86_64", "--arch", "aarch64"]);
    let stderr = out.error();
    assert!(stderr.contains("6 per-arch image(s) are not in every registry"), "{out}");
    let missing = format!("{}/app:mzbuild-{} (aarch64)", fx.plain_url(), fx.fp("app", "aarch64"));
    assert!(stderr.contains(&missing), "{out}");
    assert!(stderr.contains("ensure --arch <arch>") && stderr.contains("nothing was tagged"), "{out}");
    assert_eq!(fx.digests("app", "v1.0.0"), (None, None));

    // Copy-only images build for arm64 on this amd64 engine, no emulation.
    let out = fx.run(&["ensure", "--arch", "aarch64"]);
    out.ok();
    assert_ne!(fx.fp("app", "aarch64"), fx.fp("app", "x86_64"));

    let out = fx.run(&["tag", "v1.0.0", "--dry-run"]);
    assert_eq!(
        tag_lines(&fx, &out),
        "plain/base:v1.0.0 <digest> create\nauth/base:v1.0.0 <digest> create\n\
         plain/app:v1.0.0 <digest> create\nauth/app:v1.0.0 <digest> create\n\
         plain/tool:v1.0.0 <digest> create\nauth/tool:v1.0.0 <digest> create\n",
        "{out}"
    );
    assert!(out.stderr.contains("dry run: 6 to create, 0 to move, 0 unchanged; nothing was changed"), "{out}");
    assert_eq!(fx.digests("app", "v1.0.0"), (None, None));

    let out = fx.run(&["tag", "v1.0.0", "--arch", "x86_64", "--arch", "aarch64"]);
    assert_eq!(
        tag_lines(&fx, &out),
        "plain/base:v1.0.0 <digest> created\nauth/base:v1.0.0 <digest> created\n\
         plain/app:v1.0.0 <digest> created\nauth/app:v1.0.0 <digest> created\n\
         plain/tool:v1.0.0 <digest> created\nauth/tool:v1.0.0 <digest> created\n",
        "{out}"
    );
    let (plain, auth) = fx.digests("app", "v1.0.0");
    assert!(plain.is_some() && plain == auth, "{plain:?} {auth:?}");
    let v1 = plain.unwrap();
    assert!(out.stdout.contains(&v1), "{out}");
    let (media_type, members) = index(&fx, "app", "v1.0.0");
    assert_eq!(media_type, "application/vnd.oci.image.index.v1+json");
    assert_eq!(
        members,
        [
            ("linux/amd64".to_string(), fx.member("app", "x86_64")),
            ("linux/arm64".to_string(), fx.member("app", "aarch64"))
        ]
    );
    let reference = format!("{}/app:v1.0.0", fx.plain_url());
    assert_eq!(pulled_architecture(&reference, "linux/arm64"), "linux/arm64");
    assert_eq!(pulled_architecture(&reference, "linux/amd64"), "linux/amd64");

    // Again: nothing to do.
    let out = fx.run(&["tag", "v1.0.0"]);
    assert!(tag_lines(&fx, &out).lines().all(|l| l.ends_with(" unchanged")), "{out}");
    // As a document: a row per image and registry, with the index's digest.
    let out = fx.run(&["tag", "v1.0.0", "--json"]);
    let rows = support::json::rows(out.ok(), "tag");
    assert_eq!(rows.len(), 6, "{out}");
    assert!(rows.iter().all(|r| r["status"] == "unchanged" && r["previous"].is_null()), "{out}");
    assert!(rows.iter().any(|r| r["name"] == "app" && r["digest"] == v1.as_str()), "{out}");
    assert!(out.stderr.contains("v1.0.0: 0 created, 0 moved, 6 unchanged"), "{out}");
    assert_eq!(fx.digests("app", "v1.0.0"), (Some(v1.clone()), Some(v1.clone())));

    // A change to app: both arches get new images; the tag moves, base's stays.
    let base = fx.digests("base", "v1.0.0");
    fx.repo.write("images/app/app.txt", "app, edited\n");
    fx.run(&["ensure", "--arch", "x86_64", "app"]).ok();
    fx.run(&["ensure", "--arch", "aarch64", "app"]).ok();
    let out = fx.run(&["tag", "v1.0.0", "app"]);
    assert_eq!(
        tag_lines(&fx, &out),
        "plain/base:v1.0.0 <digest> unchanged\nauth/base:v1.0.0 <digest> unchanged\n\
         plain/app:v1.0.0 <digest> moved (from <digest>)\nauth/app:v1.0.0 <digest> moved (from <digest>)\n",
        "{out}"
    );
    assert!(out.stdout.contains(&format!("(from {v1})")), "{out}");
    let (plain, auth) = fx.digests("app", "v1.0.0");
    assert!(plain.is_some() && plain == auth && plain.as_ref() != Some(&v1), "{plain:?} {auth:?}");
    assert_eq!(index(&fx, "app", "v1.0.0").1[1], ("linux/arm64".to_string(), fx.member("app", "aarch64")));
    assert_eq!(fx.digests("base", "v1.0.0"), base);
}

#[test]
fn tag_builds_leave_out_non_mainline_images_and_refuse_unpublished_ones() {
    let fx = Fixture::published();
    // As the original on a tag build ($BUILDKITE_TAG set): `tool` is
    // `mainline: false`, so not tagged; single-arch here.
    let out = run(fx.cmd(&["tag", "v2.0.0", "--arch", "x86_64"]).env("BUILDKITE_TAG", "v2.0.0"));
    assert_eq!(
        tag_lines(&fx, &out),
        "plain/base:v2.0.0 <digest> created\nauth/base:v2.0.0 <digest> created\n\
         plain/app:v2.0.0 <digest> created\nauth/app:v2.0.0 <digest> created\n",
        "{out}"
    );
    assert_eq!(fx.digests("tool", "v2.0.0"), (None, None));
    assert_eq!(index(&fx, "base", "v2.0.0").1, [("linux/amd64".to_string(), fx.member("base", "x86_64"))]);
    // Named, it is tagged; an unpublished image cannot be.
    let out = fx.run(&["tag", "v2.0.0", "--arch", "x86_64", "tool", "--mainline-only"]);
    assert_eq!(tag_lines(&fx, &out), "plain/tool:v2.0.0 <digest> created\nauth/tool:v2.0.0 <digest> created\n");
    let out = fx.run(&["tag", "v2.0.0", "local"]);
    assert!(out.error().contains("`local` is not published (publish: false)"), "{out}");
    let out = fx.run(&["tag", "mzbuild-X", "app"]);
    assert!(out.error().contains("content-addressed"), "{out}");
    // Several --arch are for `tag` only.
    let out = fx.run(&["ensure", "--arch", "x86_64", "--arch", "aarch64"]);
    assert!(out.error().contains("only `tag` and `gc` take several architectures"), "{out}");
}
