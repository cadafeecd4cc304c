//! Signatures, provenance and the trust policy, against the two real
//! registries of `ci/stack.sh` (127.0.0.1:5000 plain, 127.0.0.1:5001 with
//! htpasswd) and the real `cosign` CLI (Debian's, installed by
//! `ci/stack.sh`): cosign accepts what mzbuild signs and attests, mzbuild
//! accepts what cosign signs, and a tag that no trusted key signed is
//! neither skipped nor built over.
//!
//! Key pairs come from `cosign generate-key-pair` (the password in
//! `COSIGN_PASSWORD`, never on a command line); mzbuild gets the private key
//! in an environment variable, as CI would from a secret.

use std::path::{Path, PathBuf};
use std::process::Command;

use support::docker::Recorder;
use support::registry::{curl, manifest_digest, Project, AUTH, PASSWORD, PLAIN, USER};
use support::{run, Output};

const KEY_VAR: &str = "MZ_TEST_SIGNING_KEY";
const PASSWORD_VAR: &str = "MZ_TEST_SIGNING_PASSWORD";

/// A cosign key pair in a directory of its own.
struct KeyPair {
    dir: tempfile::TempDir,
    password: String,
}

impl KeyPair {
    fn new() -> KeyPair {
        let dir = tempfile::tempdir().unwrap();
        let password = format!("pw-{}", support::registry::unique());
        let out = run(Command::new("cosign")
            .arg("generate-key-pair")
            .current_dir(dir.path())
            .env("COSIGN_PASSWORD", &password));
        assert_eq!(out.code, Some(0), "cosign generate-key-pair\n{out}");
        KeyPair { dir, password }
    }

    fn public(&self) -> PathBuf {
        self.dir.path().join("cosign.pub")
    }

    fn private_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cosign.key")).unwrap()
    }

    /// `cosign args...` with the key's password in its environment and
    /// `docker_config` (a directory with the auth registry's login) as its
    /// DOCKER_CONFIG.
    fn cosign(&self, args: &[&str], docker_config: &Path) -> Output {
        run(Command::new("cosign")
            .args(args)
            .current_dir(self.dir.path())
            .env("COSIGN_PASSWORD", &self.password)
            .env("DOCKER_CONFIG", docker_config))
    }
}

/// A DOCKER_CONFIG directory logged in to the auth registry (for cosign).
fn docker_config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let auth = mzbuild::sigstore::b64(format!("{USER}:{PASSWORD}").as_bytes());
    let config = serde_json::json!({ "auths": { AUTH: { "auth": auth } } });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

/// Two images (base <- top) publishing to both registries; `extra` goes
/// into `[workspace.metadata.mzbuild]`.
fn project(extra: &str) -> Project {
    let p = Project::new();
    let id = p.id.clone();
    p.file_image("base", "", &format!("base {id}\n")).image(
        "top",
        "",
        "MZFROM base\nCOPY top.txt /top.txt\n",
        &[("top.txt", "top\n")],
    );
    p.repo.append("Cargo.toml", extra);
    p.repo.commit_all();
    p
}

/// `[workspace.metadata.mzbuild]` lines: sign with the key in KEY_VAR.
fn signing() -> String {
    format!("signing = {{ key-env = \"{KEY_VAR}\", password-env = \"{PASSWORD_VAR}\" }}\n")
}

/// `[workspace.metadata.mzbuild]` lines: trust `ci/mzbuild.pub`, which is
/// written from `key`.
fn trusting(p: &Project, key: &KeyPair) -> String {
    p.repo.write("ci/mzbuild.pub", std::fs::read(key.public()).unwrap());
    "trust = { keys = [\"ci/mzbuild.pub\"] }\n".to_string()
}

/// `mzbuild args...` on `p` with `key` in the environment.
fn with_key(p: &Project, key: &KeyPair, args: &[&str]) -> Command {
    let mut cmd = p.command(args);
    cmd.env(KEY_VAR, key.private_pem()).env(PASSWORD_VAR, &key.password);
    cmd
}

/// `host/path/image@digest` of the current tag of `image` in `url`.
fn pinned(p: &Project, url: &str, image: &str) -> String {
    let tag = format!("mzbuild-{}", p.fingerprint(image));
    let digest = manifest_digest(url, image, &tag).unwrap_or_else(|| panic!("{url}/{image}:{tag} is not there"));
    format!("{url}/{image}@{digest}")
}

/// Put an image of no layers whose config holds `text` under `tag` of
/// `image` in registry `url`: content that no key signed. Its digest.
fn plant(url: &str, image: &str, tag: &str, text: &str, scratch: &Path) -> String {
    let (host, path) = url.split_once('/').unwrap();
    let auth = host == AUTH;
    let base = format!("http://{host}/v2/{path}/{image}");
    let config = serde_json::json!({ "architecture": "amd64", "os": "linux", "config": {}, "rootfs": { "type": "layers", "diff_ids": [] }, "planted": text }).to_string();
    let config_digest = mzbuild::sigstore::sha256(config.as_bytes());
    let file = scratch.join(format!("planted-{}", support::registry::unique()));
    std::fs::write(&file, &config).unwrap();
    let started = curl(&["-X", "POST", "-D", "-", "-o", "/dev/null", &format!("{base}/blobs/uploads/")], auth);
    let location = started
        .stdout
        .lines()
        .find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("location")).map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no upload location\n{started}"));
    let location = if location.starts_with('/') { format!("http://{host}{location}") } else { location };
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = format!("{location}{sep}digest={}", config_digest.replace(':', "%3A"));
    let data = format!("@{}", file.display());
    // `PUT url` of the file, as `content_type`: created, or the test fails.
    let put_file = |url: &str, content_type: &str| {
        let header = format!("Content-Type: {content_type}");
        let out = curl(&["-X", "PUT", "-w", "%{http_code}", "-H", &header, "--data-binary", &data, url], auth);
        assert!(out.stdout.ends_with("201"), "PUT {url}\n{out}");
    };
    put_file(&put, "application/octet-stream");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [],
    })
    .to_string();
    std::fs::write(&file, &manifest).unwrap();
    put_file(&format!("{base}/manifests/{tag}"), "application/vnd.oci.image.manifest.v1+json");
    mzbuild::sigstore::sha256(manifest.as_bytes())
}

/// The signature manifest of `digest` of `image` in `url`.
fn signature_manifest(url: &str, image: &str, digest: &str) -> Option<serde_json::Value> {
    let (host, path) = url.split_once('/').unwrap();
    let tag = mzbuild::sigstore::signature_tag(digest);
    let out = curl(
        &[
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!("http://{host}/v2/{path}/{image}/manifests/{tag}"),
        ],
        host == AUTH,
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    v.get("layers").is_some().then_some(v)
}

#[test]
fn cosign_verifies_what_ensure_signs_and_attests_in_both_registries() {
    let key = KeyPair::new();
    let p = project(&signing());
    let out = run(&mut with_key(&p, &key, &["ensure"]));
    assert_eq!(out.code, Some(0), "{out}");
    let login = docker_config();
    let public = key.public();
    let public = public.to_str().unwrap();
    for url in [p.plain_url(), p.auth_url()] {
        for image in ["base", "top"] {
            let reference = pinned(&p, &url, image);
            let verify = key.cosign(
                &["verify", "--key", public, "--insecure-ignore-tlog=true", "--allow-http-registry", &reference],
                login.path(),
            );
            assert_eq!(verify.code, Some(0), "cosign verify {reference}\n{verify}");
            assert!(verify.stdout.contains(&reference.split_once('@').unwrap().1.to_string()), "{verify}");
            let attested = key.cosign(
                &[
                    "verify-attestation",
                    "--key",
                    public,
                    "--type",
                    "slsaprovenance1",
                    "--insecure-ignore-tlog=true",
                    "--allow-http-registry",
                    &reference,
                ],
                login.path(),
            );
            assert_eq!(attested.code, Some(0), "cosign verify-attestation {reference}\n{attested}");
        }
    }
    // A second run signs nothing twice.
    let digest = manifest_digest(&p.plain_url(), "top", &format!("mzbuild-{}", p.fingerprint("top"))).unwrap();
    let before = signature_manifest(&p.plain_url(), "top", &digest).unwrap();
    assert_eq!(before["layers"].as_array().unwrap().len(), 1, "{before}");
    run(&mut with_key(&p, &key, &["ensure"])).ok();
    assert_eq!(signature_manifest(&p.plain_url(), "top", &digest).unwrap(), before);

    // The provenance, verified: every input file with its SHA-1, the
    // dependency by digest.
    let out = run(&mut with_key(&p, &key, &["--trust-key", public, "attestation", "top"]));
    let statement: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(statement["subject"][0]["digest"]["sha256"], digest.strip_prefix("sha256:").unwrap());
    let deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    let inputs: Vec<&str> = deps.iter().filter_map(|d| d["name"].as_str()).filter(|n| n.contains('/')).collect();
    assert_eq!(inputs, p.repo.inputs("top"), "{statement:#}");
    // `printf 'top\n' | sha1sum`.
    assert!(
        deps.iter()
            .any(|d| d["name"] == "images/top/top.txt"
                && d["digest"]["sha1"] == "4dca56d05a21f0d018cd311f43e134e4501cf6d9"),
        "{statement:#}"
    );
    let base_digest = manifest_digest(&p.plain_url(), "base", &format!("mzbuild-{}", p.fingerprint("base"))).unwrap();
    assert!(
        deps.iter()
            .any(|d| d["name"] == "base" && d["digest"]["sha256"] == base_digest.strip_prefix("sha256:").unwrap()),
        "{statement:#}"
    );
    assert_eq!(statement["predicate"]["buildDefinition"]["externalParameters"]["fingerprint"], p.fingerprint("top"),);

    // A base image that is not an MZFROM, by tag in the Dockerfile: the
    // provenance names the digest the build resolved it to.
    let base_ref = format!("{}/base:mzbuild-{}", p.plain_url(), p.fingerprint("base"));
    p.image("ext", "", &format!("FROM {base_ref}\nCOPY ext.txt /ext.txt\n"), &[("ext.txt", "ext\n")]);
    p.repo.commit_all();
    run(&mut with_key(&p, &key, &["ensure"])).ok();
    let out = run(&mut with_key(&p, &key, &["--trust-key", public, "attestation", "ext"]));
    let statement: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    let deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    assert!(
        deps.iter().any(|d| d["uri"] == format!("docker://{base_ref}")
            && d["digest"]["sha256"] == base_digest.strip_prefix("sha256:").unwrap()),
        "{statement:#}"
    );
}

#[test]
fn a_planted_unsigned_tag_is_untrusted_until_signed_and_copies_carry_signatures() {
    let key = KeyPair::new();
    let p = Project::new();
    let extra = format!("{}{}", signing(), trusting(&p, &key));
    let id = p.id.clone();
    p.file_image("base", "", &format!("base {id}\n")).image(
        "top",
        "",
        "MZFROM base\nCOPY top.txt /top.txt\n",
        &[("top.txt", "top\n")],
    );
    p.repo.append("Cargo.toml", &extra);
    p.repo.commit_all();
    // Someone who can push plants other content under base's current tag.
    let tag = format!("mzbuild-{}", p.fingerprint("base"));
    let planted = plant(&p.plain_url(), "base", &tag, "not what the repository builds", p.repo.scratch());
    let recorder = Recorder::new(p.repo.scratch());
    let out = run(recorder.apply(&mut with_key(&p, &key, &["ensure"])));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "base: untrusted: {PLAIN}/{id}/base:{tag} ({planted}) in registry {PLAIN}/{id}: no signature"
        )),
        "{out}"
    );
    assert!(out.stderr.contains("sign base`"), "{out}");
    assert!(recorder.builds().is_empty(), "built over an untrusted tag: {:?}", recorder.builds());
    // The dry run stops there too.
    let dry = run(&mut p.command(&["ensure", "--dry-run"]));
    assert_eq!(dry.code, Some(1), "{dry}");
    assert!(dry.stderr.contains("base: untrusted") && dry.stderr.contains("ensure would stop here"), "{dry}");
    // Nothing copied, nothing pushed.
    assert_eq!(manifest_digest(&p.auth_url(), "base", &tag), None);
    assert_eq!(manifest_digest(&p.plain_url(), "base", &tag), Some(planted.clone()), "the planted tag was overwritten");
    // `check` reports it too, in its document as well.
    let check = run(&mut p.command(&["check"]));
    assert_eq!(check.code, Some(1), "{check}");
    assert!(check.stderr.contains("base: untrusted"), "{check}");
    let check = run(&mut p.command(&["check", "--json"]));
    assert_eq!(check.code, Some(1), "{check}");
    let rows = support::json::rows(&check.stdout, "check");
    let base = rows.iter().find(|r| r["name"] == "base").unwrap();
    assert_eq!(base["status"], "untrusted", "{rows:?}");
    assert_eq!(base["untrusted"], serde_json::json!([p.plain_url()]), "{rows:?}");
    assert_eq!(support::json::result(&check.stdout, "check"), "failure");

    // After review, someone signs it: the run passes, copying it (with
    // its signature) to the other registry.
    let signed = run(&mut with_key(&p, &key, &["sign", "base"]));
    assert_eq!(signed.code, Some(0), "{signed}");
    let out = run(&mut with_key(&p, &key, &["ensure"]));
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(manifest_digest(&p.auth_url(), "base", &tag), Some(planted.clone()));
    // The copy verifies in the auth registry alone: with mzbuild, and
    // with cosign.
    p.set_registries(&[p.auth_entry()]);
    p.repo.append("Cargo.toml", &extra);
    let alone = run(&mut p.command(&["--no-cache", "ensure"]));
    assert_eq!(alone.code, Some(0), "{alone}");
    assert!(alone.stderr.contains("0 to copy; 0 to build"), "{alone}");
    let login = docker_config();
    let verify = key.cosign(
        &[
            "verify",
            "--key",
            key.public().to_str().unwrap(),
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            &pinned(&p, &p.auth_url(), "base"),
        ],
        login.path(),
    );
    assert_eq!(verify.code, Some(0), "{verify}");
}

#[test]
fn unknown_keys_and_altered_signatures_are_untrusted() {
    let key = KeyPair::new();
    let other = KeyPair::new();
    let p = project(&signing());
    run(&mut with_key(&p, &key, &["ensure"])).ok();
    let pub_of = |k: &KeyPair| k.public().to_str().unwrap().to_string();
    // Trusted key: a no-op run.
    let out = run(&mut p.command(&["--trust-key", &pub_of(&key), "ensure"]));
    assert_eq!(out.code, Some(0), "{out}");
    // Another key only: untrusted.
    let out = run(&mut p.command(&["--trust-key", &pub_of(&other), "ensure"]));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("untrusted") && out.stderr.contains("unknown key"), "{out}");

    // Alter one byte of base's signature in the plain registry.
    let url = p.plain_url();
    let digest = manifest_digest(&url, "base", &format!("mzbuild-{}", p.fingerprint("base"))).unwrap();
    let mut m = signature_manifest(&url, "base", &digest).unwrap();
    let annotation = "dev.cosignproject.cosign/signature";
    let mut sig = mzbuild::sigstore::unb64(m["layers"][0]["annotations"][annotation].as_str().unwrap()).unwrap();
    let last = sig.len() - 1;
    sig[last] ^= 1;
    m["layers"][0]["annotations"][annotation] = mzbuild::sigstore::b64(&sig).into();
    let file = p.repo.scratch().join("tampered.json");
    std::fs::write(&file, m.to_string()).unwrap();
    let (host, path) = url.split_once('/').unwrap();
    let put = curl(
        &[
            "-X",
            "PUT",
            "-w",
            "%{http_code}",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("http://{host}/v2/{path}/base/manifests/{}", mzbuild::sigstore::signature_tag(&digest)),
        ],
        false,
    );
    assert!(put.stdout.ends_with("201"), "{put}");
    // Fresh: no verdict cached from the first run.
    let out = run(&mut p.command(&["--no-cache", "--trust-key", &pub_of(&key), "ensure"]));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains(&format!("base: untrusted: {PLAIN}/{}/base:", p.id)), "{out}");
    // The auth registry's copy is intact.
    assert!(!out.stderr.contains(&format!("{AUTH}/{}/base:", p.id)), "{out}");
}

#[test]
fn signatures_made_by_cosign_are_trusted() {
    let key = KeyPair::new();
    let p = project("");
    p.set_registries(&[p.plain_entry()]);
    run(&mut p.command(&["ensure"])).ok();
    let public = key.public().to_str().unwrap().to_string();
    let only_plain = |args: &[&str]| {
        let mut all = vec!["--trust-key", public.as_str()];
        all.extend_from_slice(args);
        run(&mut p.command(&all))
    };
    let out = only_plain(&["ensure"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("no signature"), "{out}");
    let login = docker_config();
    for image in ["base", "top"] {
        let reference = pinned(&p, &p.plain_url(), image);
        let signed = key.cosign(
            &["sign", "--key", "cosign.key", "--tlog-upload=false", "--allow-http-registry", "-y", &reference],
            login.path(),
        );
        assert_eq!(signed.code, Some(0), "cosign sign {reference}\n{signed}");
    }
    let out = only_plain(&["ensure"]);
    assert_eq!(out.code, Some(0), "{out}");
}

#[test]
fn the_signing_key_reaches_no_child_argument_log_or_file() {
    let key = KeyPair::new();
    let p = project(&signing());
    // A docker that writes its environment and arguments to files, then
    // runs the real one.
    let dumps = p.repo.scratch().join("docker-env");
    std::fs::create_dir_all(&dumps).unwrap();
    let wrapper = support::docker::wrapper(
        p.repo.scratch(),
        "docker-env-dumper",
        &format!("env > '{0}/env-'$$; printf '%s\\n' \"$*\" > '{0}/args-'$$\n", dumps.display()),
    );
    let mut cmd = with_key(&p, &key, &["-v", "ensure"]);
    cmd.env("MZ_DOCKER", &wrapper);
    let out = run(&mut cmd);
    assert_eq!(out.code, Some(0), "{out}");
    let pem = key.private_pem();
    // A line of the key's body: distinctive, unlike its header.
    let secret_line = pem.lines().nth(2).unwrap().to_string();
    let secrets = [secret_line.as_str(), key.password.as_str()];
    let mut seen = 0;
    for entry in std::fs::read_dir(&dumps).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        seen += 1;
        for s in secrets {
            assert!(!text.contains(s), "a docker child saw the key material:\n{text}");
        }
        assert!(!text.contains(KEY_VAR) && !text.contains(PASSWORD_VAR), "{text}");
    }
    assert!(seen > 0, "the wrapper never ran");
    for s in secrets {
        assert!(!out.stdout.contains(s) && !out.stderr.contains(s));
    }
    // Nothing the run left in the repository (logs, caches) holds it.
    fn walk(dir: &Path, secrets: &[&str]) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, secrets);
            } else if let Ok(bytes) = std::fs::read(&path) {
                let text = String::from_utf8_lossy(&bytes);
                for s in secrets {
                    assert!(!text.contains(s), "{} holds the key material", path.display());
                }
            }
        }
    }
    walk(p.repo.root(), &secrets);
}

#[test]
fn acquire_and_repair_refuse_untrusted_tags_and_accept_signed_ones() {
    let key = KeyPair::new();
    let p = project("");
    // Published to the plain registry only, unsigned.
    p.set_registries(&[p.plain_entry()]);
    run(&mut p.command(&["ensure"])).ok();
    // Not in the local engine: `acquire` has to pull them.
    for image in ["base", "top"] {
        support::docker::docker(&["image", "rm", "-f", &p.spec(image)]);
    }
    p.set_registries(&[p.plain_entry(), p.auth_entry()]);
    p.repo.append("Cargo.toml", signing());
    let public = key.public().to_str().unwrap().to_string();
    let recorder = Recorder::new(p.repo.scratch());
    let out = run(recorder.apply(&mut p.command(&["--trust-key", &public, "acquire", "top"])));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("top: untrusted") && out.stderr.contains("no signature"), "{out}");
    assert!(out.stderr.contains("nothing was pulled or built"), "{out}");
    assert!(
        recorder.calls().iter().all(|c| !c.starts_with("pull") && !support::docker::is_build(c)),
        "{:?}",
        recorder.calls()
    );
    // repair would copy the plain registry's unsigned content: refused.
    let out = run(&mut p.command(&["--trust-key", &public, "repair"]));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("base: untrusted") && out.stderr.contains("nothing was changed"), "{out}");
    let tag = format!("mzbuild-{}", p.fingerprint("base"));
    assert_eq!(manifest_digest(&p.auth_url(), "base", &tag), None);
    // Signed after review: both go through.
    let signed = run(&mut with_key(&p, &key, &["sign", "base", "top"]));
    assert_eq!(signed.code, Some(0), "{signed}");
    assert!(signed.stderr.contains("base: not in registry"), "{signed}");
    let out = run(&mut p.command(&["--trust-key", &public, "repair"]));
    assert_eq!(out.code, Some(0), "{out}");
    assert!(manifest_digest(&p.auth_url(), "base", &tag).is_some());
    let out = run(&mut p.command(&["--trust-key", &public, "acquire", "top"]));
    assert_eq!(out.code, Some(0), "{out}");
}

/// `acquire` pulls the digest it verified, not whatever the tag names when
/// the pull starts: here the tag is re-pointed (to unsigned content) by the
/// `docker pull` itself, after the check.
#[test]
fn acquire_pulls_the_verified_digest_even_if_the_tag_moves_after_the_check() {
    let key = KeyPair::new();
    let p = project("");
    p.set_registries(&[p.plain_entry()]);
    p.repo.append("Cargo.toml", signing());
    run(&mut with_key(&p, &key, &["ensure"])).ok();
    let tag = format!("mzbuild-{}", p.fingerprint("top"));
    let signed = manifest_digest(&p.plain_url(), "top", &tag).unwrap();
    for image in ["base", "top"] {
        support::docker::docker(&["image", "rm", "-f", &p.spec(image)]);
    }
    let decoy = plant(&p.plain_url(), "top", "decoy", "not what was signed", p.repo.scratch());
    let (host, path) = p.plain_url().split_once('/').map(|(h, r)| (h.to_string(), r.to_string())).unwrap();
    let manifests = format!("http://{host}/v2/{path}/top/manifests");
    let media = "application/vnd.oci.image.manifest.v1+json";
    let mark = p.repo.scratch().join("re-pointed");
    let docker = support::docker::wrapper(
        p.repo.scratch(),
        "docker-repoints-on-pull",
        &format!(
            "case \"$*\" in pull*/top[:@]*) if [ ! -e '{mark}' ]; then touch '{mark}'; \
             curl -sf -H 'Accept: {media}' '{manifests}/decoy' -o '{mark}.json' && \
             curl -sf -X PUT -H 'Content-Type: {media}' --data-binary '@{mark}.json' '{manifests}/{tag}' >/dev/null \
             || exit 99; fi;; esac\n",
            mark = mark.display()
        ),
    );
    let public = key.public().to_str().unwrap().to_string();
    let out = run(p.command(&["--trust-key", &public, "acquire", "top"]).env("MZ_DOCKER", &docker));
    assert_eq!(out.code, Some(0), "{out}");
    assert!(mark.exists(), "the wrapper did not re-point the tag");
    assert_eq!(manifest_digest(&p.plain_url(), "top", &tag).as_deref(), Some(decoy.as_str()));
    // What the engine holds under the spec is the signed image.
    let digests = support::docker::docker(&["image", "inspect", "--format", "{{json .RepoDigests}}", &p.spec("top")]);
    assert!(digests.ok().contains(&signed), "not the verified digest: {digests}");
    assert!(!digests.ok().contains(&decoy), "the re-pointed tag's content was pulled: {digests}");
}

#[test]
fn tag_signs_its_indexes_and_indexes_only_trusted_images() {
    let key = KeyPair::new();
    let p = project("");
    run(&mut p.command(&["--arch", "x86_64", "ensure"])).ok();
    let public = key.public().to_str().unwrap().to_string();
    // Unsigned per-arch images are not indexed.
    let out = run(&mut p.command(&["--trust-key", &public, "tag", "v1.0.0", "--arch", "x86_64"]));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("untrusted") && out.stderr.contains("nothing was tagged"), "{out}");
    assert_eq!(manifest_digest(&p.plain_url(), "base", "v1.0.0"), None);
    // Signed, they are; and the index is signed in both registries.
    p.repo.append("Cargo.toml", signing());
    let signed = run(&mut with_key(&p, &key, &["--arch", "x86_64", "sign", "base", "top"]));
    assert_eq!(signed.code, Some(0), "{signed}");
    let out = run(&mut with_key(&p, &key, &["--trust-key", &public, "tag", "v1.0.0", "--arch", "x86_64"]));
    assert_eq!(out.code, Some(0), "{out}");
    let login = docker_config();
    for url in [p.plain_url(), p.auth_url()] {
        let index = manifest_digest(&url, "top", "v1.0.0").unwrap();
        let reference = format!("{url}/top@{index}");
        let verify = key.cosign(
            &["verify", "--key", &public, "--insecure-ignore-tlog=true", "--allow-http-registry", &reference],
            login.path(),
        );
        assert_eq!(verify.code, Some(0), "cosign verify {reference}\n{verify}");
    }
    // A tag already right writes nothing: no key is needed.
    let out = run(&mut p.command(&["--trust-key", &public, "tag", "v1.0.0", "--arch", "x86_64"]));
    assert_eq!(out.code, Some(0), "{out}");
}

#[test]
fn bad_keys_and_a_missing_signing_key_fail_clearly_before_anything_is_published() {
    let p = project(&signing());
    let out = run(&mut p.command(&["--trust-key", "/nonexistent/mzbuild.pub", "list"]));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("trusted key /nonexistent/mzbuild.pub: cannot read"), "{out}");
    p.repo.write("not-a-key.pub", "hello\n");
    let out = run(&mut p.command(&["--trust-key", p.repo.path("not-a-key.pub").to_str().unwrap(), "list"]));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("no PEM block of the kind `PUBLIC KEY`"), "{out}");
    // Configured to sign, the key not in the environment: nothing is
    // pushed unsigned.
    let recorder = Recorder::new(p.repo.scratch());
    let out = run(recorder.apply(&mut p.command(&["ensure"])));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains(&format!("the environment variable {KEY_VAR} (the cosign private key, PEM) is not set")),
        "{out}"
    );
    assert!(recorder.builds().is_empty(), "{:?}", recorder.builds());
    // A wrong password says so.
    let key = KeyPair::new();
    let out = run(p.command(&["ensure"]).env(KEY_VAR, key.private_pem()).env(PASSWORD_VAR, "wrong"));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("the password does not open the key"), "{out}");
    assert_eq!(manifest_digest(&p.plain_url(), "base", &format!("mzbuild-{}", p.fingerprint("base"))), None);
}
