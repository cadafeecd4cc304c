#!/usr/bin/env bash
# Runs every check of the repository: formatting and clippy (warnings are
# errors), the same type-check and clippy for macOS (ci/macos-check.sh),
# then brings up the real Docker stack the end-to-end tests need (engine,
# buildx, two registries on 127.0.0.1), runs the whole cargo test suite and
# smoke runs of the fingerprint, copy, context and cache benchmarks, and closes with one
# summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
bash ci/macos-check.sh
bash ci/stack.sh up
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# Snapshots are checked, never rewritten: with UPDATE_EXPECT set, every
# `expect![[...]]` and the README check would rewrite their file and pass.
unset UPDATE_EXPECT
# Every tracked source file and the README, hashed: nothing may change them
# during the run (a snapshot rewritten by some other route fails CI).
snapshots() { git ls-files -z -- '*.rs' README.md | xargs -0 sha1sum; }
before=$(snapshots)
# --no-fail-fast: one red test target does not hide the results of the others.
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
if [ "$(snapshots)" != "$before" ]; then
  echo "error: the test run changed a tracked file (a snapshot rewritten?):" >&2
  diff <(echo "$before") <(snapshots) >&2 || true
  status=1
fi
# The benchmarks must keep working: a small generated repository, one run.
cargo xtask bench fingerprint --files 1000 --images 6 --runs 1 --dir target/bench/smoke >/dev/null || status=$?
cargo xtask bench copy --files 1000 --images 6 --dir target/bench/smoke >/dev/null 2>&1 || status=$?
cargo xtask bench context --size-mb 5 --runs 1 --dir target/bench/smoke-context >/dev/null 2>&1 || status=$?
cargo xtask bench cache --run-secs 1 --dir target/bench/smoke >/dev/null 2>&1 || status=$?
# cargo prints one "test result" line per test target (the unit tests of
# each crate, the one integration-test binary tests/testsuite, the empty
# doc-test runs): add them up.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
