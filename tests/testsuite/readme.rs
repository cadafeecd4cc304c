//! The README's examples on this repository are real: every `console` block
//! that runs a read-only `cargo xtask mzbuild` command shows exactly what
//! that command prints now. (The `run` example needs Docker; the build
//! tests assert its output.) `UPDATE_EXPECT=1 cargo test -p xtask --test testsuite -- readme`
//! rewrites the blocks, as expect-test does for snapshots.

use std::path::PathBuf;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn readme_examples_print_what_they_say() {
    let root = workspace_root();
    let path = root.join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut blocks: Vec<String> = readme.split("```console\n").map(str::to_string).collect();
    let mut checked = 0;
    for block in blocks.iter_mut().skip(1) {
        let (body, rest) = block.split_once("\n```").map(|(b, r)| (b.to_string(), r.to_string())).unwrap();
        let mut lines = body.lines();
        let command = lines.next().unwrap().to_string();
        let Some(args) = command.strip_prefix("$ cargo xtask mzbuild ") else { continue };
        let args: Vec<&str> = args.split_whitespace().collect();
        if !["list", "describe", "fingerprint", "spec", "graph"].contains(&args[0]) {
            continue;
        }
        let expected: String = lines.map(|l| format!("{l}\n")).collect();
        let root_str = root.to_str().unwrap();
        let mut full = vec!["mzbuild", "--root", root_str];
        full.extend(&args);
        let out = support::xtask(&full);
        assert_eq!(out.code, Some(0), "`{command}` failed: {}", out.stderr);
        if update {
            *block = format!("{command}\n{}\n```{rest}", out.stdout.trim_end_matches('\n'));
        } else {
            assert_eq!(
                out.stdout, expected,
                "README.md's example `{command}` is out of date: update it (UPDATE_EXPECT=1 cargo test -p xtask --test testsuite -- readme)"
            );
        }
        checked += 1;
    }
    if update {
        std::fs::write(&path, blocks.join("```console\n")).unwrap();
    }
    assert!(checked >= 5, "expected at least 5 README examples, found {checked}");
}
