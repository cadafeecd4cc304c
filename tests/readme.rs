//! The README's examples on this repository are real: every `console` block
//! that runs a read-only `cargo xtask mzbuild` command shows exactly what
//! that command prints now. (The `run` example needs Docker; the build
//! tests assert its output.)

mod common;

use std::path::PathBuf;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn readme_examples_print_what_they_say() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut checked = 0;
    for block in readme.split("```console\n").skip(1) {
        let block = block.split("\n```").next().unwrap();
        let mut lines = block.lines();
        let command = lines.next().unwrap();
        let Some(args) = command.strip_prefix("$ cargo xtask mzbuild ") else { continue };
        let args: Vec<&str> = args.split_whitespace().collect();
        if !["list", "describe", "fingerprint", "spec", "graph"].contains(&args[0]) {
            continue;
        }
        let expected: String = lines.map(|l| format!("{l}\n")).collect();
        let root_str = root.to_str().unwrap();
        let mut full = vec!["mzbuild", "--root", root_str];
        full.extend(&args);
        let out = common::xtask(&full);
        assert_eq!(out.code, Some(0), "`{command}` failed: {}", out.stderr);
        assert_eq!(out.stdout, expected, "README.md's example `{command}` is out of date: update it");
        checked += 1;
    }
    assert!(checked >= 5, "expected at least 5 README examples, found {checked}");
}
