#!/usr/bin/env bash
# Runs every check of the repository: formatting and clippy (warnings are
# errors), the same type-check and clippy for macOS (ci/macos-check.sh), then brings up the real Docker stack the end-to-end tests need
# (engine, buildx, two registries on 127.0.0.1), runs the whole cargo test
# suite and smoke runs of the fingerprint and copy benchmarks, and closes
# with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
bash ci/macos-check.sh
bash ci/stack.sh up
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
# The benchmarks must keep working: a small generated repository, one run.
cargo xtask bench fingerprint --files 1000 --images 6 --runs 1 --dir target/bench/smoke >/dev/null || status=$?
cargo xtask bench copy --files 1000 --images 6 --dir target/bench/smoke >/dev/null 2>&1 || status=$?
# cargo prints one "test result" line per test binary (the last ones are
# empty doc-test runs): add them up.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
