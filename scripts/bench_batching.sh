#!/usr/bin/env bash
# What dynamic batching buys in `naba serve`: the same load (32 clients sending /v1/analyze back to
# back, loopback only) against batching on and off, and the throughput ratio. Arguments go to the
# benchmark: --seconds N --clients N --docs N --ner-model DIR --topic-model DIR --stance-model DIR
# (default: the tiny parity fixtures). Add --release via CARGO_FLAGS=--release for real models.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run ${CARGO_FLAGS:-} -q -p naba-server --example bench_batching -- "$@"
