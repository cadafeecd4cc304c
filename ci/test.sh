#!/usr/bin/env bash
# Runs every test of the repository: brings up the real Docker stack the
# end-to-end tests need (engine, buildx, two registries on 127.0.0.1), then
# the whole cargo test suite, and closes with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/stack.sh up
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
# cargo prints one "test result" line per test binary (the last ones are
# empty doc-test runs): add them up.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
