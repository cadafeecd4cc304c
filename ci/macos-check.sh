#!/usr/bin/env bash
# ci/macos-check.sh — type-check and lint the whole workspace (all targets:
# the engine, xtask, tests, benches) for macOS on Apple silicon and Intel,
# on this Linux machine: `cargo clippy -D warnings` runs the compiler's full
# type-check plus the lints, per target. There is no macOS runner here, so
# this is what keeps Linux-only calls out of shared code.
#
# Needs: the targets' std (`rustup target add`, idempotent) and a C compiler
# for macOS for the build scripts that compile C (ring): zig from PyPI's
# `ziglang`, pinned below, through ci/zig-cc. Nothing is linked.
set -euo pipefail
cd "$(dirname "$0")/.."

ZIG_VERSION=0.14.1
TARGETS=(aarch64-apple-darwin x86_64-apple-darwin)

rustup target add "${TARGETS[@]}" >/dev/null
if [[ "$(python3 -m ziglang version 2>/dev/null)" != "$ZIG_VERSION" ]]; then
    python3 -m pip install --quiet --disable-pip-version-check "ziglang==$ZIG_VERSION"
fi

for target in "${TARGETS[@]}"; do
    echo "macos-check: $target" >&2
    triple=${target//-/_}
    env "CC_$triple=$PWD/ci/zig-cc" MZ_ZIG_TARGET="${target%%-*}-macos" \
        cargo clippy --workspace --all-targets --locked --target "$target" \
        --target-dir target/macos -- -D warnings
done
