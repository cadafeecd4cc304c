//! Integration tests: public fingerprint vectors and fingerprint behaviour.
//!
//! Every test runs the real binary on a temporary git repository, with the
//! settings environment removed and `$HOME` pointing at an empty directory,
//! and always passes `--arch` so that the results do not depend on the host.

// Tests drive real processes and read their own environment directly;
// the repository ban (clippy.toml) is for the engine.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::PathBuf;

use common::{describe_inputs, run, tests_dir, xtask, xtask_command, TempRepo};
use expect_test::expect;

const APP: &str = "EKRH75RVF7F4TUGBLBAGMWNVTXK3MZOI";
const BASE: &str = "4FYOTBXU2Y7DYZFLCTATAG3JICKTOVHD";
const APP_RELEASE: &str = "YNR5XTCDWCFAY45GAHVZWDS6A4Q3TMPG";
const APP_DEV_COVERAGE: &str = "777YSBBWKE64YQPGS2PI46I2K3KWCVYN";
const APP_ADDRESS: &str = "RBTEV3U4NIVISDATI2G3B427OWEJONIX";

fn fixture() -> TempRepo {
    TempRepo::from_script(&tests_dir().join("fixtures/public-fixture.sh"))
}

/// `fingerprint IMAGE` with the default settings on x86_64.
#[track_caller]
fn fp(repo: &TempRepo, image: &str) -> String {
    let out = repo.mzbuild(&["--arch", "x86_64", "fingerprint", image]);
    let stdout = out.ok();
    assert_eq!(stdout.len(), 33, "not a fingerprint line: {stdout:?}");
    stdout.trim_end().to_string()
}

/// Fingerprints of (app, base).
#[track_caller]
fn fps(repo: &TempRepo) -> (String, String) {
    (fp(repo, "app"), fp(repo, "base"))
}

fn flags(settings: &str) -> &'static [&'static str] {
    match settings {
        "optimized" => &["--arch", "x86_64"],
        "release" => &["--release", "--arch", "x86_64"],
        "dev" => &["--dev", "--arch", "x86_64"],
        "dev-coverage" => &["--dev", "--coverage", "--arch", "x86_64"],
        "optimized-address" => &["--sanitizer", "address", "--arch", "x86_64"],
        "release-aarch64" => &["--release", "--arch", "aarch64"],
        other => panic!("unknown settings `{other}` in public-fixture.expected"),
    }
}

#[test]
fn public_vectors() {
    let repo = fixture();
    let expected = std::fs::read_to_string(tests_dir().join("fixtures/public-fixture.expected")).unwrap();
    let mut rows = 0;
    for line in expected.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [settings, image, fingerprint, spec] = cols[..] else { panic!("bad row {line:?}") };
        for (command, want) in [("fingerprint", fingerprint), ("spec", spec)] {
            let mut args = flags(settings).to_vec();
            args.extend([command, image]);
            let out = repo.mzbuild(&args);
            assert_eq!(out.ok(), format!("{want}\n"), "{settings} {command} {image}\n{out}");
        }
        rows += 1;
    }
    // Six settings for two images: a truncated file must not pass quietly.
    assert_eq!(rows, 12);
}

#[test]
fn options_after_the_subcommand() {
    let repo = fixture();
    let out = xtask(["mzbuild", "fingerprint", "--root", repo.root_str(), "--release", "app", "--arch", "x86_64"]);
    assert_eq!(out.ok(), format!("{APP_RELEASE}\n"));
    let out = xtask(["mzbuild", "spec", "base", "--arch=x86_64", "--root", repo.root_str()]);
    assert_eq!(out.ok(), format!("ghcr.io/materializeinc/materialize/base:mzbuild-{BASE}\n"));
}

#[test]
fn environment_defaults() {
    let repo = fixture();
    let with_env = |vars: &[(&str, &str)], args: &[&str]| {
        let mut cmd = repo.mzbuild_command(args);
        cmd.envs(vars.iter().copied());
        let out = run(&mut cmd);
        out.ok().to_string()
    };
    let fp_app = ["--arch", "x86_64", "fingerprint", "app"];
    assert_eq!(with_env(&[("CI_LTO", "1")], &fp_app), format!("{APP_RELEASE}\n"));
    assert_eq!(with_env(&[("CI_LTO", "true")], &fp_app), format!("{APP_RELEASE}\n"));
    // Not truthy: the default profile stays.
    for falsy in ["", "0", "no", "false", "FALSE"] {
        assert_eq!(with_env(&[("CI_LTO", falsy)], &fp_app), format!("{APP}\n"), "CI_LTO={falsy:?}");
    }
    // The command line wins over the environment.
    assert_eq!(
        with_env(&[("CI_LTO", "1")], &["--optimized", "--arch", "x86_64", "fingerprint", "app"]),
        format!("{APP}\n")
    );
    assert_eq!(
        with_env(&[("CI_COVERAGE_ENABLED", "1")], &["--dev", "--arch", "x86_64", "fingerprint", "app"]),
        format!("{APP_DEV_COVERAGE}\n")
    );
    assert_eq!(with_env(&[("CI_SANITIZER", "address")], &fp_app), format!("{APP_ADDRESS}\n"));
    assert_eq!(
        with_env(&[("MZ_GHCR", "0")], &["--arch", "x86_64", "spec", "app"]),
        format!("materialize/app:mzbuild-{APP}\n")
    );
    assert_eq!(
        with_env(&[("MZ_GHCR", "1")], &["--arch", "x86_64", "spec", "app"]),
        format!("ghcr.io/materializeinc/materialize/app:mzbuild-{APP}\n")
    );

    // MZ_ROOT instead of --root, run from an unrelated directory.
    let mut cmd = xtask_command(["mzbuild", "--arch", "x86_64", "fingerprint", "base"]);
    cmd.env("MZ_ROOT", repo.root()).current_dir(repo.scratch());
    common::git_home(&mut cmd, common::empty_home());
    assert_eq!(run(&mut cmd).ok(), format!("{BASE}\n"));
    // --root wins over MZ_ROOT.
    let other = TempRepo::new();
    let mut cmd = xtask_command(["mzbuild", "--root", repo.root_str(), "--arch", "x86_64", "fingerprint", "base"]);
    cmd.env("MZ_ROOT", other.root());
    assert_eq!(run(&mut cmd).ok(), format!("{BASE}\n"));
}

#[test]
fn independent_of_working_directory() {
    let repo = fixture();
    for cwd in
        [repo.root().to_path_buf(), repo.path("misc/images/app"), repo.scratch().to_path_buf(), PathBuf::from("/")]
    {
        let mut cmd = repo.mzbuild_command(&["--arch", "x86_64", "fingerprint", "app"]);
        cmd.current_dir(&cwd);
        assert_eq!(run(&mut cmd).ok(), format!("{APP}\n"), "run in {}", cwd.display());
    }
    // A relative --root is taken relative to the working directory.
    let mut cmd = xtask_command(["mzbuild", "--root", "repo", "--arch", "x86_64", "fingerprint", "app"]);
    cmd.current_dir(repo.scratch());
    assert_eq!(run(&mut cmd).ok(), format!("{APP}\n"));
}

#[test]
fn independent_of_location_mtimes_and_group_bits() {
    let repo = fixture();
    // A copy elsewhere, made without preserving times: the absolute root and
    // every mtime differ.
    let copy = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-R")
        .arg(repo.root())
        .arg(copy.path().join("elsewhere"))
        .status()
        .unwrap();
    assert!(status.success());
    let out = xtask([
        "mzbuild",
        "--root",
        copy.path().join("elsewhere").to_str().unwrap(),
        "--arch",
        "x86_64",
        "fingerprint",
        "app",
    ]);
    assert_eq!(out.ok(), format!("{APP}\n"));

    // Touch every input with a far-away mtime.
    let when = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    for rel in [
        "misc/images/app/Dockerfile",
        "misc/images/app/run.sh",
        "misc/images/app/untracked.txt",
        "misc/images/base/Dockerfile",
        "test/data/a.td",
        "src/bar/src/lib.rs",
        "Cargo.lock",
    ] {
        std::fs::File::options().write(true).open(repo.path(rel)).unwrap().set_modified(when).unwrap();
    }
    assert_eq!(fps(&repo), (APP.to_string(), BASE.to_string()));

    // Group/other bits (what a different umask gives) do not count; only
    // the owner-execute bit does.
    repo.chmod("misc/images/app/run.sh", 0o775)
        .chmod("misc/images/app/Dockerfile", 0o664)
        .chmod("misc/images/base/Dockerfile", 0o600)
        .chmod("test/data/a.td", 0o646)
        .chmod("src/bar/src/lib.rs", 0o604)
        .chmod("misc/images/app/untracked.txt", 0o670);
    assert_eq!(fps(&repo), (APP.to_string(), BASE.to_string()));
}

/// Apply `change` to a fresh fixture and return the new (app, base).
fn after(change: impl FnOnce(&TempRepo)) -> (String, String) {
    let repo = fixture();
    change(&repo);
    fps(&repo)
}

#[test]
fn changes_with_context_content() {
    let (app, base) = after(|r| {
        r.append("misc/images/app/run.sh", "echo bye\n");
    });
    assert_ne!(app, APP);
    assert_eq!(base, BASE);
    // Untracked inputs count by content too.
    let (app2, _) = after(|r| {
        r.write("misc/images/app/untracked.txt", "untracked!\n");
    });
    assert_ne!(app2, APP);
    assert_ne!(app2, app);
    // And so do dotfiles.
    let (app3, _) = after(|r| {
        r.append("misc/images/app/.gitignore", "/bar\n");
    });
    assert_ne!(app3, APP);
}

#[test]
fn changes_with_the_owner_exec_bit() {
    let (app, base) = after(|r| {
        assert_eq!(r.mode("misc/images/app/run.sh") & 0o100, 0o100);
        r.chmod("misc/images/app/run.sh", 0o644);
    });
    assert_ne!(app, APP);
    assert_eq!(base, BASE);
    let (app, base) = after(|r| {
        r.chmod("misc/images/app/untracked.txt", 0o744);
    });
    assert_ne!(app, APP);
    assert_eq!(base, BASE);
    let (app, base) = after(|r| {
        r.chmod("misc/images/base/Dockerfile", 0o700);
    });
    assert_ne!(base, BASE);
    assert_ne!(app, APP, "a dependency's fingerprint change must reach its dependants");
}

#[test]
fn changes_with_a_new_untracked_file() {
    let (app, base) = after(|r| {
        r.write("misc/images/app/new.txt", "new\n");
    });
    assert_ne!(app, APP);
    assert_eq!(base, BASE);
    // A new file in a copy source is an input too.
    let (app, _) = after(|r| {
        r.write("test/data/sub/deeper/c.td", "c\n");
    });
    assert_ne!(app, APP);
}

#[test]
fn changes_with_a_copy_source() {
    let (app, base) = after(|r| {
        r.write("test/data/a.td", "A\n");
    });
    assert_ne!(app, APP);
    assert_eq!(base, BASE);
    let (app, _) = after(|r| {
        r.write("test/data/sub/b.td", "B\n");
    });
    assert_ne!(app, APP);
}

#[test]
fn changes_with_the_crate_closure() {
    // bar is a path dependency of foo, whose binary app builds.
    let (app, base) = after(|r| {
        r.append("src/bar/src/lib.rs", "pub fn y() {}\n");
    });
    assert_ne!(app, APP);
    assert_eq!(base, BASE);
    let (app, base) = after(|r| {
        r.append("src/foo/src/main.rs", "// more\n");
    });
    assert_ne!(app, APP);
    assert_eq!(base, BASE);
    // A new file in a crate of the closure.
    let (app, _) = after(|r| {
        r.write("src/bar/src/extra.rs", "\n");
    });
    assert_ne!(app, APP);
}

#[test]
fn changes_with_workspace_files() {
    let (app, base) = after(|r| {
        r.write("Cargo.lock", "# lock v2\n");
    });
    assert_ne!(app, APP);
    assert_eq!(base, BASE);
    let (app, _) = after(|r| {
        r.append("Cargo.toml", "# comment\n");
    });
    assert_ne!(app, APP);
    let (app, base) = after(|r| {
        r.write("ci/builder/Dockerfile", "FROM debian\n");
    });
    assert_ne!(app, APP);
    assert_eq!(base, BASE);
}

#[test]
fn dependency_change_propagates() {
    let (app, base) = after(|r| {
        r.append("misc/images/base/Dockerfile", "RUN true\n");
    });
    assert_ne!(base, BASE);
    assert_ne!(app, APP);
}

#[test]
fn unchanged_by_files_that_are_not_inputs() {
    let unchanged = (APP.to_string(), BASE.to_string());
    // An ignored file in the context (`/foo` in misc/images/app/.gitignore).
    assert_eq!(
        after(|r| {
            r.write("misc/images/app/foo", "other ignored contents\n");
        }),
        unchanged
    );
    // A new ignored file and directory in the context.
    assert_eq!(
        after(|r| {
            r.write("misc/images/app/data/copied.td", "x\n");
        }),
        unchanged
    );
    // mzcompose.py of a crate in the closure is excluded.
    assert_eq!(
        after(|r| {
            r.write("src/foo/mzcompose.py", "print(2)\n");
        }),
        unchanged
    );
    // Files outside every input, tracked or not.
    assert_eq!(
        after(|r| {
            r.write("README.md", "hello\n").write("test/other.td", "o\n").write("misc/notes.txt", "n\n");
            r.commit_all();
        }),
        unchanged
    );
    // Committing the untracked input changes nothing: the working tree counts.
    assert_eq!(
        after(|r| {
            r.commit_all();
        }),
        unchanged
    );
}

#[test]
fn list() {
    let repo = fixture();
    assert_eq!(repo.mzbuild(&["list"]).ok(), "app\nbase\n");
    let out = repo.mzbuild(&["--arch", "x86_64", "list", "--json"]);
    let want = format!(
        r#"[
  {{
    "name": "app",
    "path": "misc/images/app",
    "fingerprint": "{APP}",
    "spec": "ghcr.io/materializeinc/materialize/app:mzbuild-{APP}",
    "publish": true,
    "depends_on": [
      "base"
    ]
  }},
  {{
    "name": "base",
    "path": "misc/images/base",
    "fingerprint": "{BASE}",
    "spec": "ghcr.io/materializeinc/materialize/base:mzbuild-{BASE}",
    "publish": true,
    "depends_on": []
  }}
]
"#
    );
    assert_eq!(out.ok(), want);
    // The settings reach the JSON.
    let out = repo.mzbuild(&["--arch", "x86_64", "--release", "list", "--json"]);
    assert!(out.ok().contains(&format!("\"fingerprint\": \"{APP_RELEASE}\"")), "{out}");
}

#[test]
fn describe() {
    let repo = fixture();
    let out = repo.mzbuild(&["--arch", "x86_64", "describe", "app"]);
    expect![[r#"
        name: app
        path: misc/images/app
        publish: true
        fingerprint: EKRH75RVF7F4TUGBLBAGMWNVTXK3MZOI
        spec: ghcr.io/materializeinc/materialize/app:mzbuild-EKRH75RVF7F4TUGBLBAGMWNVTXK3MZOI
        dependencies:
          base 4FYOTBXU2Y7DYZFLCTATAG3JICKTOVHD
        inputs (15):
          Cargo.lock
          Cargo.toml
          ci/builder/Dockerfile
          misc/images/app/.gitignore
          misc/images/app/Dockerfile
          misc/images/app/link.sh
          misc/images/app/mzbuild.yml
          misc/images/app/run.sh
          misc/images/app/untracked.txt
          src/bar/Cargo.toml
          src/bar/src/lib.rs
          src/foo/Cargo.toml
          src/foo/src/main.rs
          test/data/a.td
          test/data/sub/b.td
    "#]]
    .assert_eq(out.ok());

    let out = repo.mzbuild(&["--arch", "x86_64", "describe", "base"]);
    expect![[r#"
        name: base
        path: misc/images/base
        publish: true
        fingerprint: 4FYOTBXU2Y7DYZFLCTATAG3JICKTOVHD
        spec: ghcr.io/materializeinc/materialize/base:mzbuild-4FYOTBXU2Y7DYZFLCTATAG3JICKTOVHD
        dependencies: none
        inputs (2):
          misc/images/base/Dockerfile
          misc/images/base/mzbuild.yml
    "#]]
    .assert_eq(out.ok());

    let out = repo.mzbuild(&["--arch", "x86_64", "describe", "--transitive", "app"]);
    expect![[r#"
        name: app
        path: misc/images/app
        publish: true
        fingerprint: EKRH75RVF7F4TUGBLBAGMWNVTXK3MZOI
        spec: ghcr.io/materializeinc/materialize/app:mzbuild-EKRH75RVF7F4TUGBLBAGMWNVTXK3MZOI
        dependencies (transitive):
          base 4FYOTBXU2Y7DYZFLCTATAG3JICKTOVHD
        inputs (transitive) (17):
          Cargo.lock
          Cargo.toml
          ci/builder/Dockerfile
          misc/images/app/.gitignore
          misc/images/app/Dockerfile
          misc/images/app/link.sh
          misc/images/app/mzbuild.yml
          misc/images/app/run.sh
          misc/images/app/untracked.txt
          misc/images/base/Dockerfile
          misc/images/base/mzbuild.yml
          src/bar/Cargo.toml
          src/bar/src/lib.rs
          src/foo/Cargo.toml
          src/foo/src/main.rs
          test/data/a.td
          test/data/sub/b.td
    "#]]
    .assert_eq(out.ok());
}

#[test]
fn graph() {
    let repo = fixture();
    repo.write("misc/images/local/mzbuild.yml", "name: local\npublish: false\n")
        .write("misc/images/local/Dockerfile", "MZFROM app\nMZFROM base\n");
    let out = repo.mzbuild(&["graph"]);
    expect![[r#"
        digraph mzbuild {
            rankdir=BT;
            node [shape=box];
            "app";
            "base";
            "local" [style=dashed];
            "app" -> "base";
            "local" -> "app";
            "local" -> "base";
        }
    "#]]
    .assert_eq(out.ok());
}

#[test]
fn help() {
    let out = xtask(["mzbuild", "--help"]);
    let stdout = out.ok();
    assert!(stdout.contains("Usage: cargo xtask mzbuild"), "{out}");
    for command in ["list", "fingerprint", "spec", "describe", "graph"] {
        assert!(stdout.contains(&format!("\n  {command} ")), "`mzbuild --help` does not list `{command}`\n{out}");
        let out = xtask(["mzbuild", command, "--help"]);
        assert!(
            out.ok().contains(&format!("Usage: cargo xtask mzbuild {command} ")),
            "`mzbuild {command} --help`\n{out}"
        );
    }
}

/// A repository with crates reached in every way cargo allows: examples with
/// path dev-dependencies, auto-discovered and renamed binaries, renamed and
/// `workspace = true` path dependencies.
fn cargo_repo() -> TempRepo {
    let repo = TempRepo::new();
    repo.write(
        "Cargo.toml",
        "[workspace]\nmembers = [\"crates/*\"]\n\n[workspace.dependencies]\nwsdep = { path = \"crates/wsdep\" }\n",
    )
    .write("Cargo.lock", "# lock\n")
    .write(".cargo/config", "[build]\n")
    .write("ci/builder/Dockerfile", "FROM ubuntu\n")
    // An example whose path dev-dependency is an input (dev-dependencies
    // only count for examples).
    .write(
        "crates/exa/Cargo.toml",
        "[package]\nname = \"exa\"\nversion = \"0.1.0\"\n\n[dev-dependencies]\ndevdep = { path = \"../devdep\" }\n",
    )
    .write("crates/exa/src/lib.rs", "\n")
    .write("crates/exa/examples/demo.rs", "fn main() {}\n")
    .write("crates/devdep/Cargo.toml", "[package]\nname = \"devdep\"\nversion = \"0.1.0\"\n")
    .write("crates/devdep/src/lib.rs", "\n")
    // An auto-discovered binary.
    .write("crates/auto/Cargo.toml", "[package]\nname = \"auto\"\nversion = \"0.1.0\"\n")
    .write("crates/auto/src/lib.rs", "\n")
    .write("crates/auto/src/bin/x.rs", "fn main() {}\n")
    // A [[bin]] with its own name, a renamed dependency, a workspace
    // dependency and a dev-dependency that must not count.
    .write(
        "crates/tool/Cargo.toml",
        "[package]\nname = \"tool\"\nversion = \"0.1.0\"\n\n[[bin]]\nname = \"custom-name\"\npath = \"src/custom.rs\"\n\n\
         [dependencies]\nbaz = { package = \"bar\", path = \"../bar\" }\nwsdep = { workspace = true }\n\n\
         [dev-dependencies]\ndevdep = { path = \"../devdep\" }\n",
    )
    .write("crates/tool/src/custom.rs", "fn main() {}\n")
    .write("crates/tool/mzcompose.py", "\n")
    .write("crates/tool/mzcompose/ignored-by-mzbuild.txt", "\n")
    .write("crates/bar/Cargo.toml", "[package]\nname = \"bar\"\nversion = \"0.1.0\"\n")
    .write("crates/bar/src/lib.rs", "\n")
    .write("crates/wsdep/Cargo.toml", "[package]\nname = \"wsdep\"\nversion = \"0.1.0\"\n")
    .write("crates/wsdep/src/lib.rs", "\n")
    .write("crates/unrelated/Cargo.toml", "[package]\nname = \"unrelated\"\nversion = \"0.1.0\"\n")
    .write("crates/unrelated/src/main.rs", "fn main() {}\n");
    for (name, pre) in [("ex", "example: demo"), ("auto", "bin: x"), ("tool", "bin: [custom-name]")] {
        repo.write(
            &format!("images/{name}/mzbuild.yml"),
            format!("name: {name}\npre-image:\n  - type: cargo-build\n    {pre}\n"),
        )
        .write(&format!("images/{name}/Dockerfile"), "FROM scratch\n");
    }
    repo.commit_all();
    repo
}

fn inputs(repo: &TempRepo, image: &str) -> Vec<String> {
    describe_inputs(repo.mzbuild(&["--arch", "x86_64", "describe", image]).ok())
}

const CARGO_COMMON: &[&str] = &[".cargo/config", "Cargo.lock", "Cargo.toml", "ci/builder/Dockerfile"];

fn with_common(image: &str, crates: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = CARGO_COMMON.iter().map(|s| s.to_string()).collect();
    v.extend(crates.iter().map(|s| s.to_string()));
    v.push(format!("images/{image}/Dockerfile"));
    v.push(format!("images/{image}/mzbuild.yml"));
    v.sort();
    v
}

#[test]
fn cargo_build_example_inputs() {
    let repo = cargo_repo();
    assert_eq!(
        inputs(&repo, "ex"),
        with_common(
            "ex",
            &[
                "crates/devdep/Cargo.toml",
                "crates/devdep/src/lib.rs",
                "crates/exa/Cargo.toml",
                "crates/exa/examples/demo.rs",
                "crates/exa/src/lib.rs",
            ]
        )
    );
}

#[test]
fn cargo_build_auto_bin_inputs() {
    let repo = cargo_repo();
    assert_eq!(
        inputs(&repo, "auto"),
        with_common("auto", &["crates/auto/Cargo.toml", "crates/auto/src/bin/x.rs", "crates/auto/src/lib.rs"])
    );
}

#[test]
fn cargo_build_custom_bin_renamed_and_workspace_deps() {
    let repo = cargo_repo();
    let tool =
        ["crates/bar/Cargo.toml", "crates/bar/src/lib.rs", "crates/tool/Cargo.toml", "crates/tool/src/custom.rs"];
    // By default, the original's rule: `wsdep = { workspace = true }` has no
    // `path` key, so it is not followed; a warning says so, and how to opt in.
    let out = repo.mzbuild(&["--arch", "x86_64", "describe", "tool"]);
    assert_eq!(describe_inputs(out.ok()), with_common("tool", &tool));
    assert!(
        out.stderr
            .contains("crates/wsdep (through crates/tool/Cargo.toml [dependencies] wsdep = { workspace = true })")
            && out.stderr.contains("`path-dependencies = \"cargo\"`"),
        "{out}"
    );
    let before = fp(&repo, "tool");
    repo.append("crates/wsdep/src/lib.rs", "// x\n");
    assert_eq!(fp(&repo, "tool"), before, "a crate the original does not follow changed the fingerprint");
    repo.append("crates/bar/src/lib.rs", "// x\n");
    let after_bar = fp(&repo, "tool");
    assert_ne!(after_bar, before);

    // Opted in: every path dependency cargo uses, and no warning.
    repo.append("Cargo.toml", "\n[workspace.metadata.mzbuild]\npath-dependencies = \"cargo\"\n");
    let out = repo.mzbuild(&["--arch", "x86_64", "describe", "tool"]);
    let mut all = tool.to_vec();
    all.extend(["crates/wsdep/Cargo.toml", "crates/wsdep/src/lib.rs"]);
    assert_eq!(describe_inputs(out.ok()), with_common("tool", &all));
    assert!(!out.stderr.contains("warning"), "{out}");
    let opted_in = fp(&repo, "tool");
    repo.append("crates/wsdep/src/lib.rs", "// y\n");
    assert_ne!(fp(&repo, "tool"), opted_in);
}

#[test]
fn nested_image_files_belong_to_the_inner_image() {
    let repo = TempRepo::new();
    repo.write("misc/outer/mzbuild.yml", "name: outer\n")
        .write("misc/outer/Dockerfile", "MZFROM inner\n")
        .write("misc/outer/a.txt", "a\n")
        // Looks like the inner directory by prefix, but is outer's.
        .write("misc/outer/inner.txt", "i\n")
        .write("misc/outer/inner/mzbuild.yml", "name: inner\n")
        .write("misc/outer/inner/Dockerfile", "FROM scratch\n")
        .write("misc/outer/inner/b.txt", "b\n")
        .write("misc/outer/inner/deeper/c.txt", "c\n")
        // A sibling whose name starts like outer's.
        .write("misc/outer-x/d.txt", "d\n")
        .commit_all();
    assert_eq!(
        inputs(&repo, "outer"),
        ["misc/outer/Dockerfile", "misc/outer/a.txt", "misc/outer/inner.txt", "misc/outer/mzbuild.yml"]
    );
    assert_eq!(
        inputs(&repo, "inner"),
        [
            "misc/outer/inner/Dockerfile",
            "misc/outer/inner/b.txt",
            "misc/outer/inner/deeper/c.txt",
            "misc/outer/inner/mzbuild.yml"
        ]
    );
    // Inner's files reach outer only through inner's fingerprint.
    let outer = fp(&repo, "outer");
    repo.write("misc/outer/inner/b.txt", "B\n");
    assert_ne!(fp(&repo, "outer"), outer);
}

#[test]
fn copy_matching() {
    let repo = TempRepo::new();
    repo.write("test/data/a.td", "a\n")
        .write("test/data/c.txt", "c\n")
        .write("test/data/sub/b.td", "b\n")
        .write("test/data/sub/d.txt", "d\n")
        .write("test/data/subway.td", "s\n")
        .write("test/data-other/x.td", "x\n");
    let copy = |name: &str, matching: &str| {
        repo.write(
            &format!("images/{name}/mzbuild.yml"),
            format!(
                "name: {name}\npre-image:\n  - type: copy\n    source: test/data\n    destination: data\n{matching}"
            ),
        )
        .write(&format!("images/{name}/Dockerfile"), "FROM scratch\n");
    };
    copy("all", "");
    copy("td", "    matching: '*.td'\n");
    copy("dir", "    matching: sub\n");
    copy("dirslash", "    matching: sub/\n");
    repo.commit_all();
    let own = |name: &str| [format!("images/{name}/Dockerfile"), format!("images/{name}/mzbuild.yml")];
    let with_own = |name: &str, files: &[&str]| {
        let mut v: Vec<String> = files.iter().map(|f| format!("test/data/{f}")).collect();
        v.extend(own(name));
        v.sort();
        v
    };
    assert_eq!(inputs(&repo, "all"), with_own("all", &["a.td", "c.txt", "sub/b.td", "sub/d.txt", "subway.td"]));
    assert_eq!(inputs(&repo, "td"), with_own("td", &["a.td", "sub/b.td", "subway.td"]));
    assert_eq!(inputs(&repo, "dir"), with_own("dir", &["sub/b.td", "sub/d.txt"]));
    assert_eq!(inputs(&repo, "dirslash"), with_own("dirslash", &["sub/b.td", "sub/d.txt"]));
}

#[test]
fn images_are_the_git_visible_mzbuild_files() {
    let repo = TempRepo::new();
    repo.write(".gitignore", "/ignored/\n")
        // The root's own mzbuild.yml is not an image.
        .write("mzbuild.yml", "name: root\n")
        .write("Dockerfile", "FROM scratch\n")
        .write("ignored/mzbuild.yml", "name: ignored\n")
        .write("ignored/Dockerfile", "FROM scratch\n")
        .write("tracked/mzbuild.yml", "name: tracked\n")
        .write("tracked/Dockerfile", "FROM scratch\n")
        .commit_all();
    // Untracked but not ignored: an image.
    repo.write("deep/down/untracked/mzbuild.yml", "name: untracked\n")
        .write("deep/down/untracked/Dockerfile", "FROM scratch\n")
        // Not named mzbuild.yml exactly.
        .write("other/mzbuild.yaml", "name: other\n")
        .write("other/Dockerfile", "FROM scratch\n");
    assert_eq!(repo.mzbuild(&["list"]).ok(), "tracked\nuntracked\n");
    // Deleting a tracked mzbuild.yml removes the image.
    repo.remove("tracked/mzbuild.yml");
    assert_eq!(repo.mzbuild(&["list"]).ok(), "untracked\n");
}
