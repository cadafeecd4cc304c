//! Integration tests: the command line itself. `fingerprint` and `spec` of
//! several images, the shell completion scripts (run in a real bash and
//! fish, with `cargo` on PATH standing for `cargo xtask` as the real
//! binary), and the man pages.

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{run, xtask, TempRepo};

/// A repository with images `base`, `bundle` (on base) and `greeter`.
fn repo() -> TempRepo {
    let repo = TempRepo::new();
    repo.image("base", "name: base\n", "FROM scratch\n")
        .image("bundle", "name: bundle\n", "MZFROM base\n")
        .image("greeter", "name: greeter\n", "FROM scratch\n")
        .commit_all();
    repo
}

#[test]
fn fingerprint_and_spec_take_several_images_in_the_order_given() {
    let r = repo();
    for command in ["fingerprint", "spec"] {
        let one = |image: &str| r.mzbuild(&["--arch", "x86_64", command, image]).line();
        let out = r.mzbuild(&["--arch", "x86_64", command, "greeter", "base", "bundle", "base"]);
        let expected = format!("{}\n{}\n{}\n{}\n", one("greeter"), one("base"), one("bundle"), one("base"));
        assert_eq!(out.ok(), expected, "{out}");
    }
    // At least one (a usage error: clap's exit status 2).
    let out = r.mzbuild(&["fingerprint"]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("required arguments were not provided:\n  <IMAGE>..."), "{out}");
}

/// A directory holding a `cargo` that runs `cargo xtask ARGS` as the real
/// binary (`xtask ARGS`), to put first on PATH.
fn fake_cargo(dir: &Path) -> PathBuf {
    let bin = dir.join("fake-cargo-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!("#!/bin/sh\n[ \"$1\" = xtask ] && shift\nexec '{}' \"$@\"\n", env!("CARGO_BIN_EXE_xtask"));
    std::fs::write(bin.join("cargo"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("cargo"), std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// `PATH` with `bin` first.
fn path_with(bin: &Path) -> String {
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

/// In bash, with cargo's own completion stood in for by one that answers
/// `from-cargo`: `source <(cargo xtask mzbuild completions bash)`, then
/// what completing each of `lines` (words; the last is the one completed)
/// offers, one line each.
fn bash_complete(r: &TempRepo, lines: &[&str]) -> String {
    let mut script = String::from(
        "_cargos_own() { COMPREPLY=(from-cargo); }\n\
         complete -F _cargos_own cargo\n\
         source <(cargo xtask mzbuild completions bash) || exit 1\n\
         t() { COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); \
         _cargo_xtask_mzbuild cargo \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\"; \
         echo \"${COMPREPLY[*]}\"; }\n\
         complete -p cargo\n",
    );
    for l in lines {
        let words: Vec<String> = l.split(' ').map(|w| format!("'{w}'")).collect();
        script.push_str(&format!("t {}\n", words.join(" ")));
    }
    let out = run(Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .env("PATH", path_with(&fake_cargo(r.scratch())))
        .env("MZ_ROOT", r.root()));
    out.ok().to_string()
}

#[test]
fn bash_completes_commands_options_and_image_names() {
    let r = repo();
    let root = r.root_str();
    let got = bash_complete(
        &r,
        &[
            "cargo xtask mzbuild des",
            "cargo xtask mzbuild describe ",
            "cargo xtask mzbuild fingerprint greeter b",
            &format!("cargo xtask mzbuild --root {root} spec bu"),
            "cargo xtask mzbuild build --fo",
            "cargo xtask mzbuild tag ",
            "cargo xtask mzbuild tag v1.2.3 g",
            "cargo xtask mzbuild describe base ",
            "cargo xtask mzbuild completions f",
            "cargo xtask m",
            "cargo bu",
        ],
    );
    let mut lines = got.lines();
    assert_eq!(lines.next(), Some("complete -o bashdefault -o default -F _cargo_xtask_mzbuild cargo"), "{got}");
    let answers: Vec<&str> = lines.collect();
    assert_eq!(answers[0], "describe", "{got}");
    assert_eq!(answers[1], "base bundle greeter", "{got}");
    assert_eq!(answers[2], "base bundle", "{got}");
    assert_eq!(answers[3], "bundle", "{got}");
    assert_eq!(answers[4], "--force", "{got}");
    // A tag's first argument is the tag, not an image; then images.
    assert!(!answers[5].contains("base") && answers[5].contains("--dry-run"), "{got}");
    assert_eq!(answers[6], "greeter", "{got}");
    // describe takes one image: then options.
    assert!(!answers[7].contains("bundle") && answers[7].contains("--transitive"), "{got}");
    assert_eq!(answers[8], "fish", "{got}");
    assert_eq!(answers[9], "mzbuild", "{got}");
    // Anything but `cargo xtask` is cargo's own completion's.
    assert_eq!(answers[10], "from-cargo", "{got}");
    assert_eq!(answers.len(), 11, "{got}");
}

#[test]
fn fish_completes_commands_and_image_names() {
    require("fish");
    let r = repo();
    let script = "source (cargo xtask mzbuild completions fish | psub); or exit 1\n\
                  complete -C 'cargo xtask mzbuild des'; echo ==\n\
                  complete -C 'cargo xtask mzbuild spec b'";
    let out = run(Command::new("fish")
        .args(["--no-config", "-c", script])
        .env("PATH", path_with(&fake_cargo(r.scratch())))
        .env("MZ_ROOT", r.root()));
    let text = out.ok();
    let (commands, images) = text.split_once("==\n").unwrap_or_else(|| panic!("{out}"));
    assert!(commands.starts_with("describe\t"), "{out}");
    assert_eq!(images, "base\nbundle\n", "{out}");
}

#[test]
fn the_zsh_script_is_valid_and_completes_cargo() {
    let out = xtask(["mzbuild", "completions", "zsh"]);
    let text = out.ok();
    assert!(text.starts_with("#compdef cargo\n"), "{out}");
    assert!(text.contains("compdef _cargo_xtask_mzbuild cargo"), "{out}");
    assert!(text.contains(":image:_cargo_xtask_mzbuild_images'"), "{out}");
    assert!(text.contains(":images:_cargo_xtask_mzbuild_images'"), "{out}");
    require("zsh");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("_cargo_xtask");
    std::fs::write(&file, text).unwrap();
    let check = run(Command::new("zsh").arg("-n").arg(&file));
    check.ok();
}

#[test]
fn man_writes_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let out = xtask(["mzbuild", "man", "--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.ok(), "", "{out}");
    assert!(out.stderr.contains("wrote 23 man pages in"), "{out}");
    let mut names: Vec<String> =
        std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(
        names.join(" "),
        "mzbuild-acquire.1 mzbuild-attestation.1 mzbuild-build.1 mzbuild-check.1 mzbuild-completions.1 \
         mzbuild-describe.1 mzbuild-diff.1 mzbuild-ensure.1 mzbuild-explain.1 mzbuild-fingerprint.1 mzbuild-gc.1 \
         mzbuild-graph.1 mzbuild-hook.1 mzbuild-lint.1 mzbuild-list.1 mzbuild-man.1 mzbuild-repair.1 mzbuild-run.1 \
         mzbuild-sign.1 mzbuild-spec.1 mzbuild-tag.1 mzbuild-verify.1 mzbuild.1"
    );
    let top = std::fs::read_to_string(out_dir.join("mzbuild.1")).unwrap();
    assert!(top.contains("\n.TH mzbuild 1 "), "{top}");
    for sub in ["ensure", "fingerprint", "completions", "man"] {
        assert!(top.contains(&format!("mzbuild\\-{sub}(1)")), "mzbuild.1 does not name mzbuild-{sub}(1)\n{top}");
    }
    let ensure = std::fs::read_to_string(out_dir.join("mzbuild-ensure.1")).unwrap();
    assert!(ensure.contains("\n.TH mzbuild-ensure 1 "), "{ensure}");
    assert!(ensure.contains("cargo xtask mzbuild ensure"), "{ensure}");
    assert!(ensure.contains("\\-\\-allow\\-drift"), "{ensure}");
    // groff reads every page without a warning.
    require("groff");
    for name in &names {
        let page = out_dir.join(name);
        let out = run(Command::new("groff").args(["-man", "-Tutf8", "-ww", "-z"]).arg(&page));
        assert_eq!((out.code, out.stderr.as_str()), (Some(0), ""), "{name}\n{out}");
    }
}

/// `program` is on PATH: `ci/stack.sh up` installs it. A test that needs it
/// fails without it rather than passing without checking.
#[track_caller]
fn require(program: &str) {
    let out = run(Command::new("sh").args(["-c", &format!("command -v {program}")]));
    assert_eq!(out.code, Some(0), "no `{program}` on PATH: run `bash ci/stack.sh up`, which installs it");
}
