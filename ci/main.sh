#!/usr/bin/env bash
# The main job, as CI runs it on every change: bring up the Docker stack
# (engine, buildx, the two local registries this repository publishes to),
# then publish every image that is not yet published, and run the service.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/stack.sh up
# The auth registry's password is the stack's test credential; a real CI
# passes its registry tokens the same way, as environment variables.
export MZ_AUTH_REGISTRY_PASSWORD="${MZ_AUTH_REGISTRY_PASSWORD:-mzbuild-test-password}"
cargo xtask mzbuild ensure "$@"
cargo xtask mzbuild run bundle -- CI
