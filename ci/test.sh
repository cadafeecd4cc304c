#!/usr/bin/env bash
# Runs every test of the repository: brings up the real Docker stack the
# end-to-end tests need (engine, buildx, two registries on 127.0.0.1), then
# the whole cargo test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/stack.sh up
cargo test --workspace --locked "$@"
