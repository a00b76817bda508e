#!/usr/bin/env bash
# Installs what the test suite needs, when missing: protoc, etcd (Debian's
# etcd-server), the s3s-fs S3-compatible server, pyarrow (in a venv under
# ~/.cache/distributedlog), the benchmark's peers (redis-server, nats-server)
# and cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cargo_bin_on_path

ensure_protoc
if ! command -v etcd >/dev/null 2>&1; then
    echo "installing etcd (etcd-server)" >&2
    apt_install etcd-server
fi
if ! command -v s3s-fs >/dev/null 2>&1; then
    # 0.14.1: newer releases need a newer rustc than 1.95.
    echo "installing s3s-fs 0.14.1 (about 3 minutes on 2 cores)" >&2
    cargo install s3s-fs --locked --version 0.14.1 --features binary
fi
# pyarrow: the analytics-engine test reads the offloaded Parquet files on
# the S3 server with it. Same venv as the terraform checks.
venv="${XDG_CACHE_HOME:-$HOME/.cache}/distributedlog/venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import pyarrow' >/dev/null 2>&1; then
    echo "installing pyarrow into $venv" >&2
    "$venv/bin/pip" install -q 'pyarrow>=14'
fi
# The benchmark's peers (their client code in src/bench is tested against them).
bash scripts/bench-peers.sh install
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest" >&2
    cargo install cargo-nextest --locked
fi
