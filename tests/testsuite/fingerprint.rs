//! Integration tests: public fingerprint vectors and fingerprint behaviour.
//!
//! Every test runs the real binary on a temporary git repository, with the
//! settings environment removed and `$HOME` pointing at an empty directory,
//! and always passes `--arch` so that the results do not depend on the host.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use expect_test::expect;
use support::{describe_inputs, run, settings_flags, tests_dir, vectors, xtask, xtask_command, TempRepo, Vector};

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
    repo.mzbuild(&["--arch", "x86_64", "fingerprint", image]).fingerprint()
}

#[test]
fn public_vectors() {
    let repo = fixture();
    let rows = vectors("public-fixture.expected");
    for row in &rows {
        let Vector { settings, image, fingerprint, spec } = row;
        for (command, want) in [("fingerprint", fingerprint), ("spec", spec)] {
            let mut args = settings_flags(settings).to_vec();
            args.extend([command, image]);
            let out = repo.mzbuild(&args);
            assert_eq!(out.ok(), format!("{want}\n"), "{settings} {command} {image}\n{out}");
        }
    }
    // Six settings for two images: a truncated file must not pass quietly.
    assert_eq!(rows.len(), 12);
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
    support::git_home(&mut cmd, support::empty_home());
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
fn independent_of_location() {
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
    // Mtimes and group/other bits changed in place: cases of `CASES`.
}

// ---------------------------------------------------------------------------
// What changes a fingerprint, and what does not: one table of named cases

/// What a case expects of one image's fingerprint.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Changed,
    Unchanged,
}
use Expect::{Changed, Unchanged};

/// A repository that the cases change: made once, and copied for each
/// case. Known by its name; `known` are fingerprints it must have unchanged
/// (the public vectors).
#[derive(Clone, Copy)]
struct Setup {
    name: &'static str,
    make: fn() -> TempRepo,
    known: &'static [(&'static str, &'static str)],
}

const FIXTURE: Setup = Setup { name: "public fixture", make: fixture, known: &[("app", APP), ("base", BASE)] };
const CARGO: Setup = Setup { name: "cargo repo", make: cargo_repo, known: &[] };
const CARGO_PATHS: Setup =
    Setup { name: "cargo repo, path-dependencies = cargo", make: cargo_repo_cargo_paths, known: &[] };
const NESTED: Setup = Setup { name: "nested images", make: nested_repo, known: &[] };
/// The public fixture, published: where to is no input, so the public
/// vectors hold.
const PUBLISHED: Setup =
    Setup { name: "public fixture with [workspace.metadata.mzbuild]", make: published_fixture, known: FIXTURE.known };

/// Where the public fixture's images go, in its root `Cargo.toml`.
const PUBLISHING: &str = "\n[workspace.metadata.mzbuild]\n# where images go\nregistries = [\n  \
    { url = \"ghcr.io/org/x\", username = \"me\", password-env = \"TOKEN\" },\n]\n";

fn published_fixture() -> TempRepo {
    let repo = fixture();
    repo.append("Cargo.toml", PUBLISHING);
    repo
}

/// `published_fixture` with its table's `what` replaced by `with`.
fn republish<'a>(repo: &'a TempRepo, what: &str, with: &str) -> &'a TempRepo {
    let text = std::fs::read_to_string(repo.path("Cargo.toml")).unwrap();
    assert!(text.contains(what), "{what} not in {text}");
    repo.write("Cargo.toml", text.replace(what, with))
}

/// A change to a repository, returning it (so that one call is a change).
type Change = for<'a> fn(&'a TempRepo) -> &'a TempRepo;

/// One change to a fresh copy of a `setup` repository and what it must do to
/// the fingerprint of each of `expect`'s images (against the unchanged
/// repository). Every image a change reaches also gets a fingerprint no
/// other case of the same setup gives it.
struct Case {
    name: &'static str,
    setup: Setup,
    change: Change,
    expect: &'static [(&'static str, Expect)],
}

/// A case (a row of `CASES`).
const fn case(name: &'static str, setup: Setup, change: Change, expect: &'static [(&'static str, Expect)]) -> Case {
    Case { name, setup, change, expect }
}

/// A change to `app`'s inputs only.
const APP_ONLY: &[(&str, Expect)] = &[("app", Changed), ("base", Unchanged)];
/// A change to `base`, which reaches its dependant `app`.
const BASE_AND_APP: &[(&str, Expect)] = &[("app", Changed), ("base", Changed)];
/// A change to no input.
const NEITHER: &[(&str, Expect)] = &[("app", Unchanged), ("base", Unchanged)];
/// A change to the inner image, which reaches the outer one.
const INNER_AND_OUTER: &[(&str, Expect)] = &[("inner", Changed), ("outer", Changed)];
/// A change to the crates that `tool` (only) builds.
const TOOL_ONLY: &[(&str, Expect)] = &[("tool", Changed), ("ex", Unchanged), ("auto", Unchanged)];
/// A change to no input of the cargo repository's images.
const NO_TOOL: &[(&str, Expect)] = &[("tool", Unchanged), ("ex", Unchanged), ("auto", Unchanged)];

#[rustfmt::skip]
const CASES: &[Case] = &[
    // The build context counts by content, tracked or not, dotfiles too.
    case("context file", FIXTURE, |r| r.append("misc/images/app/run.sh", "echo bye\n"), APP_ONLY),
    case("untracked context file", FIXTURE, |r| r.write("misc/images/app/untracked.txt", "untracked!\n"), APP_ONLY),
    case("context dotfile", FIXTURE, |r| r.append("misc/images/app/.gitignore", "/bar\n"), APP_ONLY),
    case("new untracked context file", FIXTURE, |r| r.write("misc/images/app/new.txt", "new\n"), APP_ONLY),
    // The owner-execute bit counts, and a dependency's change reaches its
    // dependants.
    case("exec bit of a tracked file", FIXTURE, |r| {
        assert_eq!(r.mode("misc/images/app/run.sh") & 0o100, 0o100, "run.sh is not executable to begin with");
        r.chmod("misc/images/app/run.sh", 0o644)
    }, APP_ONLY),
    case("exec bit of an untracked file", FIXTURE, |r| r.chmod("misc/images/app/untracked.txt", 0o744), APP_ONLY),
    case("exec bit of a dependency's file", FIXTURE, |r| r.chmod("misc/images/base/Dockerfile", 0o700), BASE_AND_APP),
    case("dependency's Dockerfile", FIXTURE, |r| r.append("misc/images/base/Dockerfile", "RUN true\n"), BASE_AND_APP),
    // Copy sources, new files included.
    case("copy source file", FIXTURE, |r| r.write("test/data/a.td", "A\n"), APP_ONLY),
    case("copy source file in a subdirectory", FIXTURE, |r| r.write("test/data/sub/b.td", "B\n"), APP_ONLY),
    case("new file deep in a copy source", FIXTURE, |r| r.write("test/data/sub/deeper/c.td", "c\n"), APP_ONLY),
    // The crate closure: bar is a path dependency of foo, whose binary app
    // builds; and the workspace files of a cargo-build.
    case("path dependency's source", FIXTURE, |r| r.append("src/bar/src/lib.rs", "pub fn y() {}\n"), APP_ONLY),
    case("built crate's source", FIXTURE, |r| r.append("src/foo/src/main.rs", "// more\n"), APP_ONLY),
    case("new file in a crate of the closure", FIXTURE, |r| r.write("src/bar/src/extra.rs", "\n"), APP_ONLY),
    case("Cargo.lock", FIXTURE, |r| r.write("Cargo.lock", "# lock v2\n"), APP_ONLY),
    case("Cargo.toml", FIXTURE, |r| r.append("Cargo.toml", "# comment\n"), APP_ONLY),
    case("ci/builder/Dockerfile", FIXTURE, |r| r.write("ci/builder/Dockerfile", "FROM debian\n"), APP_ONLY),
    // Not inputs: an ignored file (`/foo` in misc/images/app/.gitignore) and
    // directory in the context, mzcompose.py of a crate in the closure,
    // files outside every input (tracked or not). Committing the untracked
    // input changes nothing: the working tree counts.
    case("ignored file in the context", FIXTURE, |r| r.write("misc/images/app/foo", "other ignored\n"), NEITHER),
    case("ignored directory in the context", FIXTURE, |r| r.write("misc/images/app/data/copied.td", "x\n"), NEITHER),
    case("mzcompose.py of a crate in the closure", FIXTURE, |r| r.write("src/foo/mzcompose.py", "print(2)\n"), NEITHER),
    case("files outside every input", FIXTURE, |r| {
        r.write("README.md", "hello\n").write("test/other.td", "o\n").write("misc/notes.txt", "n\n").commit_all()
    }, NEITHER),
    case("committing the untracked input", FIXTURE, |r| r.commit_all(), NEITHER),
    // Mtimes (every input's, far away) and group/other bits (what another
    // umask gives) do not count.
    case("mtimes", FIXTURE, |r| {
        let when = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        for rel in [
            "misc/images/app/Dockerfile", "misc/images/app/run.sh", "misc/images/app/untracked.txt",
            "misc/images/base/Dockerfile", "test/data/a.td", "src/bar/src/lib.rs", "Cargo.lock",
        ] {
            std::fs::File::options().write(true).open(r.path(rel)).unwrap().set_modified(when).unwrap();
        }
        r
    }, NEITHER),
    case("group and other bits", FIXTURE, |r| {
        r.chmod("misc/images/app/run.sh", 0o775)
            .chmod("misc/images/app/Dockerfile", 0o664)
            .chmod("misc/images/base/Dockerfile", 0o600)
            .chmod("test/data/a.td", 0o646)
            .chmod("src/bar/src/lib.rs", 0o604)
            .chmod("misc/images/app/untracked.txt", 0o670)
    }, NEITHER),
    // The crates a cargo-build reaches through a renamed dependency count by
    // content; through a `workspace = true` one (no `path` key) only when
    // opted in, as the original does not follow it.
    case("renamed dependency", CARGO, |r| r.append("crates/bar/src/lib.rs", "// x\n"), TOOL_ONLY),
    case("workspace dependency, not followed", CARGO, |r| r.append("crates/wsdep/src/lib.rs", "// x\n"), NO_TOOL),
    case("workspace dependency, opted in", CARGO_PATHS, |r| r.append("crates/wsdep/src/lib.rs", "// y\n"), TOOL_ONLY),
    // Where images are published changes no fingerprint: the table of
    // [workspace.metadata.mzbuild] is not hashed with the root Cargo.toml.
    // What changes what is built changes the cargo-build images (and their
    // dependants) only.
    case("adding [workspace.metadata.mzbuild]", FIXTURE, |r| r.append("Cargo.toml", PUBLISHING), NEITHER),
    case("a registry's username", PUBLISHED, |r| republish(r, "\"me\"", "\"you\""), NEITHER),
    case("another registry, builders", PUBLISHED, |r| {
        republish(r, "\n]\n", "\n  { url = \"127.0.0.1:5000/y\" },\n]\nbuilders = { aarch64 = \"arm\" }\n")
    }, NEITHER),
    case("switches that build the same", PUBLISHED, |r| {
        r.append("Cargo.toml", "extra-cargo-inputs = []\npath-dependencies = \"original\"\n")
    }, NEITHER),
    case("image-rustflags", PUBLISHED, |r| r.append("Cargo.toml", "image-rustflags = [\"-Copt-level=1\"]\n"), APP_ONLY),
    case("Cargo.toml beside the table", PUBLISHED, |r| r.append("Cargo.toml", "[profile.dev]\nlto = true\n"), APP_ONLY),
    // The inner image's files reach the outer one only through the inner
    // one's fingerprint.
    case("inner image's file", NESTED, |r| r.write("misc/outer/inner/b.txt", "B\n"), INNER_AND_OUTER),
];

/// A setup's repository, unchanged, and the fingerprints of its images.
type Template = (TempRepo, BTreeMap<String, String>);

/// The fingerprints of a case's images after its change, or what went wrong.
type Outcome = Result<Vec<(&'static str, String)>, String>;

/// Run one case on a copy of `template`, whose fingerprints are `before`;
/// when it goes wrong, say so for every image, not just the first.
fn run_case(case: &Case, template: &TempRepo, before: &BTreeMap<String, String>) -> Outcome {
    let repo = template.copy();
    (case.change)(&repo);
    let mut after = vec![];
    let mut wrong = vec![];
    for (image, expect) in case.expect {
        let (before, now) = (&before[*image], fp(&repo, image));
        let got = if now == *before { Unchanged } else { Changed };
        if got != *expect {
            wrong.push(format!("{image}: expected {expect:?}, got {got:?} ({before} -> {now})"));
        }
        after.push((*image, now));
    }
    if wrong.is_empty() {
        Ok(after)
    } else {
        Err(wrong.join("; "))
    }
}

/// Every case of `CASES`, each on its own fresh copy, a few at once.
/// A failing case names itself (also when it panics: its thread has its
/// name), and all failures are reported together.
#[test]
fn what_changes_a_fingerprint() {
    // Each setup once (by the first case that needs it), with the
    // fingerprints of every image a case asks about.
    let mut templates: Vec<(Setup, OnceLock<Template>)> = vec![];
    for case in CASES {
        if !templates.iter().any(|(setup, _)| setup.name == case.setup.name) {
            templates.push((case.setup, OnceLock::new()));
        }
    }
    let template = |case: &Case| {
        let (setup, once) = templates.iter().find(|(setup, _)| setup.name == case.setup.name).unwrap();
        once.get_or_init(|| {
            let repo = (setup.make)();
            let images: BTreeSet<&str> = CASES
                .iter()
                .filter(|c| c.setup.name == setup.name)
                .flat_map(|c| c.expect.iter().map(|(i, _)| *i))
                .collect();
            let before: BTreeMap<String, String> = images.into_iter().map(|i| (i.to_string(), fp(&repo, i))).collect();
            for (image, want) in setup.known {
                assert_eq!(before[*image], *want, "{image} of the {}", setup.name);
            }
            (repo, before)
        })
    };

    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
    let results: Vec<(usize, Outcome)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = vec![];
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(case) = CASES.get(i) else { return done };
                        let name = format!("case `{}` ({})", case.name, case.setup.name);
                        let result = std::thread::Builder::new()
                            .name(name.clone())
                            .spawn_scoped(s, || {
                                let (repo, before) = template(case);
                                run_case(case, repo, before)
                            })
                            .unwrap()
                            .join()
                            .unwrap_or_else(|panic| {
                                let message = panic
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default();
                                Err(format!("panicked: {message}"))
                            });
                        done.push((i, result));
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.len(), CASES.len());

    let mut failures = vec![];
    // Changed fingerprints by (setup, image): no two cases may give the same.
    let mut seen: BTreeMap<(&str, &str, String), &str> = BTreeMap::new();
    for (i, result) in &results {
        let case = &CASES[*i];
        match result {
            Err(wrong) => failures.push(format!("case `{}` ({}): {wrong}", case.name, case.setup.name)),
            Ok(after) => {
                for ((image, expect), (_, now)) in case.expect.iter().zip(after) {
                    if *expect != Changed {
                        continue;
                    }
                    if let Some(other) = seen.insert((case.setup.name, image, now.clone()), case.name) {
                        failures.push(format!(
                            "cases `{other}` and `{}` ({}) give {image} the same fingerprint {now}",
                            case.name, case.setup.name
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n  {}", failures.len(), CASES.len(), failures.join("\n  "));
}

#[test]
fn list() {
    let repo = fixture();
    assert_eq!(repo.mzbuild(&["list"]).ok(), "app\nbase\n");
    let out = repo.mzbuild(&["--arch", "x86_64", "list", "--json"]);
    support::json::list(out.ok());
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
    // The same, as a document.
    let out = repo.mzbuild(&["--arch", "x86_64", "describe", "--transitive", "app", "--json"]);
    let row = &support::json::rows(out.ok(), "describe")[0];
    let first_dep = &row["dependencies"][0]["name"];
    assert_eq!((&row["fingerprint"], first_dep), (&"EKRH75RVF7F4TUGBLBAGMWNVTXK3MZOI".into(), &"base".into()), "{out}");
    assert_eq!(row["inputs"].as_array().unwrap().len(), 17, "{out}");
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

/// The opt-in to every path dependency cargo uses, for a root `Cargo.toml`.
const PATH_DEPENDENCIES_CARGO: &str = "\n[workspace.metadata.mzbuild]\npath-dependencies = \"cargo\"\n";

/// `cargo_repo`, opted in to every path dependency cargo uses.
fn cargo_repo_cargo_paths() -> TempRepo {
    let repo = cargo_repo();
    repo.append("Cargo.toml", PATH_DEPENDENCIES_CARGO);
    repo
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
        repo.inputs("ex"),
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
        repo.inputs("auto"),
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
    // What their contents do to the fingerprint, by default and opted in:
    // the cases `workspace dependency, not followed`, `renamed dependency`
    // and `workspace dependency, opted in` of `CASES`.

    // Opted in: every path dependency cargo uses, and no warning.
    repo.append("Cargo.toml", PATH_DEPENDENCIES_CARGO);
    let out = repo.mzbuild(&["--arch", "x86_64", "describe", "tool"]);
    let mut all = tool.to_vec();
    all.extend(["crates/wsdep/Cargo.toml", "crates/wsdep/src/lib.rs"]);
    assert_eq!(describe_inputs(out.ok()), with_common("tool", &all));
    assert!(!out.stderr.contains("warning"), "{out}");
}

/// An image directory inside another's.
fn nested_repo() -> TempRepo {
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
    repo
}

#[test]
fn nested_image_files_belong_to_the_inner_image() {
    let repo = nested_repo();
    assert_eq!(
        repo.inputs("outer"),
        ["misc/outer/Dockerfile", "misc/outer/a.txt", "misc/outer/inner.txt", "misc/outer/mzbuild.yml"]
    );
    assert_eq!(
        repo.inputs("inner"),
        [
            "misc/outer/inner/Dockerfile",
            "misc/outer/inner/b.txt",
            "misc/outer/inner/deeper/c.txt",
            "misc/outer/inner/mzbuild.yml"
        ]
    );
    // Inner's files reach outer only through inner's fingerprint: the case
    // `inner image's file` of `CASES`.
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
    assert_eq!(repo.inputs("all"), with_own("all", &["a.td", "c.txt", "sub/b.td", "sub/d.txt", "subway.td"]));
    assert_eq!(repo.inputs("td"), with_own("td", &["a.td", "sub/b.td", "subway.td"]));
    assert_eq!(repo.inputs("dir"), with_own("dir", &["sub/b.td", "sub/d.txt"]));
    assert_eq!(repo.inputs("dirslash"), with_own("dirslash", &["sub/b.td", "sub/d.txt"]));
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
