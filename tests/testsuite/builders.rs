//! Integration tests: buildx builders (`--builder`, `[workspace.metadata.
//! mzbuild] builders`), with the real `xtask` binary, the real Docker engine
//! and the two real registries of `ci/stack.sh`.
//!
//! The second builder is real: a docker context on the same engine, which
//! buildx lists as a builder of the `docker` driver (a `docker-container`
//! builder from `docker buildx create` would have to pull `moby/buildkit`,
//! which these machines cannot). It lives in a private DOCKER_CONFIG that
//! the test hands to the tool, so nothing touches the user's `~/.docker`.

use std::process::Command;

use support::docker::Recorder;
use support::registry::{manifest_digest, unique, Project};
use support::{run, Output};

/// A private DOCKER_CONFIG holding one docker context, `name`, on the
/// engine the tests use.
struct Context {
    config: tempfile::TempDir,
    name: String,
}

impl Context {
    fn new() -> Context {
        let config = tempfile::Builder::new().prefix("mzbuild-test-docker-config").tempdir().unwrap();
        let name = format!("mzb-{}", unique());
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let out = run(Command::new("docker").env("DOCKER_CONFIG", config.path()).args([
            "context",
            "create",
            &name,
            "--docker",
            &format!("host={host}"),
        ]));
        assert_eq!(out.code, Some(0), "docker context create\n{out}");
        let ls = run(Command::new("docker").env("DOCKER_CONFIG", config.path()).args(["buildx", "ls"]));
        assert!(ls.ok().contains(&name), "buildx does not list the context as a builder\n{ls}");
        Context { config, name }
    }

    /// `cmd` (the tool) with this DOCKER_CONFIG and a recording docker.
    fn apply<'a>(&self, cmd: &'a mut Command, recorder: &Recorder) -> &'a mut Command {
        recorder.apply(cmd).env("DOCKER_CONFIG", self.config.path())
    }
}

fn fixture() -> Project {
    let fx = Project::new();
    let id = fx.id.clone();
    fx.file_image("one", "", &format!("one {id}\n")).repo.commit_all();
    fx
}

/// The recorded builds, reduced to what says where they ran and what they
/// did with the result (the context's name shown as `CTX`).
fn builds(recorder: &Recorder, ctx: &Context) -> Vec<String> {
    const KEEP: [&str; 7] = ["--context", "CTX", "buildx", "build", "--builder", "--push", "--load"];
    recorder
        .builds()
        .iter()
        .map(|b| b.replace(&ctx.name, "CTX").split(' ').filter(|w| KEEP.contains(w)).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn a_configured_builder_builds_its_arch_and_the_flag_overrides() {
    let fx = fixture();
    let ctx = Context::new();
    fx.repo.append("Cargo.toml", format!("builders = {{ aarch64 = \"{}\" }}\n", ctx.name));

    // aarch64: the configured builder, a docker-driver one, so from its context.
    let recorder = Recorder::new(fx.repo.scratch());
    let out = run(ctx.apply(&mut fx.command(&["ensure", "--arch", "aarch64"]), &recorder));
    out.ok();
    assert_eq!(builds(&recorder, &ctx), ["--context CTX buildx build --builder CTX --push"], "{out}");
    let tag = format!("mzbuild-{}", fx.mz(&["fingerprint", "--arch", "aarch64", "one"]).fingerprint());
    assert!(manifest_digest(&fx.plain_url(), "one", &tag).is_some());
    assert!(manifest_digest(&fx.auth_url(), "one", &tag).is_some());

    // x86_64: none configured, buildx's current builder. It is this
    // engine's docker driver, which ignores rewrite-timestamp: the image is
    // built into the engine, its times normalised there (docker save |
    // docker load), then pushed with docker push.
    let recorder = Recorder::new(fx.repo.scratch());
    run(ctx.apply(&mut fx.command(&["ensure", "--arch", "x86_64"]), &recorder)).ok();
    assert_eq!(builds(&recorder, &ctx), ["buildx build --load"]);
    let pushes = recorder.calls().iter().filter(|c| c.starts_with("push ")).count();
    assert_eq!(pushes, 2, "one docker push per registry: {:?}", recorder.calls());

    // --builder wins, for any arch and command.
    let recorder = Recorder::new(fx.repo.scratch());
    let out = run(
        ctx.apply(&mut fx.command(&["build", "--force", "--arch", "x86_64", "--builder", &ctx.name, "one"]), &recorder)
    );
    out.ok();
    assert_eq!(builds(&recorder, &ctx), ["--context CTX buildx build --builder CTX --load"], "{out}");
}

#[test]
fn a_missing_builder_is_an_error_before_anything_is_built_or_pushed() {
    let fx = fixture();
    let ctx = Context::new();
    let missing = format!("missing-{}", fx.id);

    let recorder = Recorder::new(fx.repo.scratch());
    let out: Output = run(ctx.apply(&mut fx.command(&["build", "--builder", &missing, "one"]), &recorder));
    let err = out.error();
    assert!(err.contains(&format!("buildx builder `{missing}` (from --builder) is not available")), "{out}");
    assert!(err.contains("docker buildx inspect") && err.contains("nothing was built"), "{out}");
    assert_eq!(recorder.builds(), Vec::<String>::new(), "{out}");
    assert!(!fx.log_dir().exists(), "something was built: {:?}", fx.logs());

    fx.repo.append("Cargo.toml", format!("builders = {{ aarch64 = \"{missing}\" }}\n"));
    let recorder = Recorder::new(fx.repo.scratch());
    let out = run(ctx.apply(&mut fx.command(&["ensure", "--arch", "aarch64"]), &recorder));
    let err = out.error();
    assert!(
        err.contains(&format!(
            "buildx builder `{missing}` (from Cargo.toml [workspace.metadata.mzbuild] builders.aarch64) is not available"
        )),
        "{out}"
    );
    assert_eq!(recorder.builds(), Vec::<String>::new(), "{out}");
    assert!(!fx.log_dir().exists(), "something was built: {:?}", fx.logs());
    let tag = format!("mzbuild-{}", fx.mz(&["fingerprint", "--arch", "aarch64", "one"]).fingerprint());
    assert_eq!(manifest_digest(&fx.plain_url(), "one", &tag), None);
}
