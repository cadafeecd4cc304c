//! Integration tests: mzbuild's own registry HTTP paths (`check`, the copies
//! of `ensure` and `repair`, `tag`) against a registry with bearer-token
//! auth, as ghcr.io and Docker Hub run it: `support::token_registry` (a real
//! Distribution registry and a token service), with the real `xtask`
//! binary. Anonymous pull tokens, scoped push tokens (one repository, and
//! two for a cross-repository mount), and a token service that fails,
//! answers garbage, or signs with a key the registry does not trust.
//!
//! The failure modes are tried on mzbuild's HTTP paths, not on pushes: a
//! `docker push` against a failing token endpoint takes about 50 s of
//! dockerd retries. Each test starts its own token registry.

use std::process::Command;

use support::registry::{manifest_digest, Project};
use support::token_registry::{Mode, TokenRegistry, TokenRequest, PASSWORD, USER};
use support::{run, Output};

/// The variable the token registry's entry names for its password.
const BEARER_VAR: &str = "MZ_TEST_BEARER_TOKEN";

/// A project with one image, `one`, published to the plain registry, and
/// a token registry that does not have it yet: the project's registries are
/// the plain one and the token registry (at path `<id>`).
struct Fixture {
    project: Project,
    reg: TokenRegistry,
}

impl Fixture {
    fn new() -> Fixture {
        let project = Project::new();
        let id = project.id.clone();
        project.file_image("one", "", &format!("one {id}\n")).repo.commit_all();
        project.set_registries(&[project.plain_entry()]);
        project.mz(&["ensure"]).ok();
        let fx = Fixture { project, reg: TokenRegistry::start() };
        fx.project.set_registries(&[fx.project.plain_entry(), fx.token_entry("")]);
        fx
    }

    /// The token registry's entry for `Cargo.toml`, under path `<id><suffix>`.
    fn token_entry(&self, suffix: &str) -> String {
        format!(
            "{{ url = \"{}/{}{suffix}\", username = \"{USER}\", password-env = \"{BEARER_VAR}\" }}",
            self.reg.url(),
            self.project.id
        )
    }

    /// `mzbuild args...` with the token registry's password.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.project.command(args);
        cmd.env(BEARER_VAR, PASSWORD);
        cmd
    }

    fn mz(&self, args: &[&str]) -> Output {
        run(&mut self.command(args))
    }

    fn tag(&self) -> String {
        format!("mzbuild-{}", self.project.fingerprint("one"))
    }

    /// The digest of `one`'s current tag in the token registry, under path
    /// `<id><suffix>`.
    fn token_digest(&self, suffix: &str) -> Option<String> {
        self.reg.manifest_digest(&format!("{}{suffix}/one", self.project.id), &self.tag())
    }

    /// The token requests since the last `clear_requests`, as
    /// `method user status scopes -> granted` lines.
    fn token_log(&self) -> Vec<String> {
        self.reg.requests().iter().map(show).collect()
    }
}

fn show(r: &TokenRequest) -> String {
    format!(
        "{} {} {} {} -> {}",
        r.method,
        r.user.as_deref().unwrap_or("anonymous"),
        r.status,
        r.scopes.join(" "),
        r.granted.join(" ")
    )
}

#[test]
fn copies_checks_and_tags_go_through_scoped_bearer_tokens() {
    let fx = Fixture::new();
    let repo = format!("{}/one", fx.project.id);

    // A copy into the token registry: push tokens for the repository, as USER.
    fx.reg.clear_requests();
    let out = fx.mz(&["ensure", "--json"]);
    out.ok();
    assert!(support::json::rows(&out.stdout, "ensure").iter().any(|r| r["status"] == "copied"), "{out}");
    let log = fx.token_log();
    assert!(!log.is_empty(), "no token was asked for\n{out}");
    for line in &log {
        assert!(line.starts_with(&format!("GET {USER} 200 ")), "not an authenticated token request: {line}\n{log:#?}");
    }
    let push = format!("repository:{repo}:push,pull");
    assert!(log.iter().any(|l| l.ends_with(&format!("-> {push}"))), "no push token for {repo}: {log:#?}");
    let digest = manifest_digest(&fx.project.plain_url(), "one", &fx.tag());
    assert!(digest.is_some());
    assert_eq!(fx.token_digest(""), digest, "the copy has another digest");

    // check without credentials: anonymous pull tokens only.
    fx.reg.clear_requests();
    let out = run(fx.command(&["check"]).env_remove(BEARER_VAR));
    out.ok();
    assert_eq!(fx.token_log(), [format!("GET anonymous 200 repository:{repo}:pull -> repository:{repo}:pull")]);

    // A release tag: the index goes into the token registry too, by push token.
    fx.reg.clear_requests();
    let out = fx.mz(&["tag", "v1", "--arch", "x86_64"]);
    assert_eq!(out.ok().lines().filter(|l| l.ends_with(" created")).count(), 2, "{out}");
    assert!(fx.token_log().iter().any(|l| l.ends_with(&format!("-> {push}"))), "{:#?}", fx.token_log());
    let index = manifest_digest(&fx.project.plain_url(), "one", "v1");
    assert!(index.is_some());
    assert_eq!(fx.reg.manifest_digest(&repo, "v1"), index);
}

/// Two repositories of the token registry: the copy from one to the other
/// mounts every blob, with one token for both repositories.
#[test]
fn a_copy_within_a_token_registry_mounts_its_blobs_with_a_two_repository_token() {
    let fx = Fixture::new();
    fx.mz(&["ensure"]).ok();
    fx.project.set_registries(&[fx.token_entry(""), fx.token_entry("-b")]);
    fx.reg.clear_requests();
    let out = fx.mz(&["ensure", "--json"]);
    out.ok();
    let json = support::json::rows(&out.stdout, "ensure");
    let row = &json[0];
    assert_eq!(row["status"], "copied", "{out}");
    // Only the manifest's own bytes moved: the config and layer were mounted.
    let manifest_len = row["bytes_copied"].as_u64().unwrap();
    assert!(manifest_len < 2000, "{out}");
    assert!(out.stderr.contains("(0 blob(s) streamed, 2 mounted, 0 already there)"), "{out}");
    let (a, b) = (format!("{}/one", fx.project.id), format!("{}-b/one", fx.project.id));
    let two = format!("repository:{b}:push,pull repository:{a}:pull");
    assert!(
        fx.reg.requests().iter().any(|r| r.scopes.join(" ") == two && r.granted.len() == 2),
        "no token for both repositories: {:#?}",
        fx.token_log()
    );
    assert_eq!(fx.token_digest("-b"), fx.token_digest(""));
}

/// A token service that fails, answers garbage, or signs with a key the
/// registry does not trust: `check` and `ensure` fail cleanly, name the
/// registry (and the token service where it is at fault), and copy nothing.
#[test]
fn a_failing_garbage_or_untrusted_token_service_fails_cleanly() {
    let fx = Fixture::new();
    let token_url = format!("{}/{}", fx.reg.url(), fx.project.id);
    for (mode, says) in [
        (Mode::TokenEndpointFails, "HTTP 500"),
        (Mode::TokenEndpointGarbage, "invalid JSON"),
        (Mode::UntrustedSigner, "does not accept the token its token service"),
    ] {
        fx.reg.set_mode(mode);
        for args in [&["check"][..], &["ensure"], &["repair"]] {
            let out = fx.mz(args);
            let err = out.error();
            assert!(err.contains(&format!("registry {token_url}")), "{mode:?} {args:?}: not named\n{out}");
            assert!(err.contains(says), "{mode:?} {args:?}: not `{says}`\n{out}");
            if mode != Mode::UntrustedSigner {
                assert!(err.contains(fx.reg.realm()), "{mode:?} {args:?}: the token service is not named\n{out}");
            }
            assert!(!err.contains(PASSWORD), "{out}");
        }
    }
    fx.reg.set_mode(Mode::Normal);
    assert_eq!(fx.token_digest(""), None, "something was copied");
    // Back to normal, the same run works.
    fx.mz(&["ensure"]).ok();
    assert!(fx.token_digest("").is_some());
}
