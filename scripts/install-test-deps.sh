#!/usr/bin/env bash
# Installs what the test suite needs, when missing: protoc, etcd (Debian's
# etcd-server), the s3s-fs S3-compatible server and cargo-nextest.
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
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest" >&2
    cargo install cargo-nextest --locked
fi
