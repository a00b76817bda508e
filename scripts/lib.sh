# shellcheck shell=bash
# Shared helpers of the project's scripts. Sourced, not run.

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
# Installs Debian packages, running `apt-get update` once first.
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -q >/dev/null
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# Puts cargo's bin directory on PATH (where `cargo install` puts binaries).
cargo_bin_on_path() {
    local bin="${CARGO_HOME:-$HOME/.cargo}/bin"
    case ":$PATH:" in *":$bin:"*) ;; *) export PATH="$bin:$PATH" ;; esac
}

# Whether we run under CI: CI=true or CI=1 (the test kit reads it the same
# way). Under CI a missing tool is a failure, never a skip.
in_ci() {
    [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]
}

# The project's Python venv (pyarrow, nats-server, the Terraform checks):
# $DLOG_VENV, else ${XDG_CACHE_HOME:-$HOME/.cache}/distributedlog/venv.
# The test kit resolves it the same way (dlog_testkit::project_venv).
project_venv() {
    if [ -n "${DLOG_VENV:-}" ]; then
        echo "$DLOG_VENV"
    else
        echo "${XDG_CACHE_HOME:-$HOME/.cache}/distributedlog/venv"
    fi
}

# The venv of checkov (the Terraform checks), beside the project venv: its
# own, because checkov's bc-python-hcl2 installs a module named hcl2 that
# would replace python-hcl2's (pinned for tests/check_references.py).
checkov_venv() {
    echo "$(dirname "$(project_venv)")/checkov-venv"
}

# Whether protoc compiles a file that imports a well-known type
# (google/protobuf/descriptor.proto), as etcd-client's build script needs.
protoc_has_well_known_types() {
    command -v protoc >/dev/null 2>&1 || return 1
    local dir status=0
    dir=$(mktemp -d)
    printf '%s\n' 'syntax = "proto3";' 'import "google/protobuf/descriptor.proto";' \
        'message Probe { google.protobuf.FileDescriptorProto file = 1; }' >"$dir/probe.proto"
    protoc --proto_path="$dir" --descriptor_set_out="$dir/probe.pb" "$dir/probe.proto" \
        >/dev/null 2>&1 || status=1
    rm -rf "$dir"
    return "$status"
}

# protoc with its well-known types (Debian's libprotobuf-dev holds them;
# protobuf-compiler without recommends does not bring it).
ensure_protoc() {
    if ! protoc_has_well_known_types; then
        echo "installing protoc with its well-known types (protobuf-compiler, libprotobuf-dev)" >&2
        apt_install protobuf-compiler libprotobuf-dev
    fi
    if ! protoc_has_well_known_types; then
        echo "protoc cannot compile a file importing google/protobuf/descriptor.proto: install libprotobuf-dev (or set PROTOC_INCLUDE)" >&2
        return 1
    fi
}

# A free TCP port on loopback.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to 20 s for something to listen on loopback port $1.
wait_port() {
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# The set-up of a benchmark script: the release `dlog` (DLOG), the output
# directory $1 (OUT) with an empty results.jsonl (RESULTS), DURATION
# (seconds per scenario, default 8), and a work directory (WORK) whose
# processes (add their pids to PIDS) are killed on exit.
bench_setup() {
    # The build before leaves gigabytes of dirty pages; their writeback,
    # about 30 s later, stalls the node's fdatasyncs for a second or more
    # (measured: a 1.4 s p99 in the round it hit). Start clean.
    sync
    DLOG=${CARGO_TARGET_DIR:-$PWD/target}/release/dlog
    OUT=$1
    DURATION=${DURATION:-8}
    mkdir -p "$OUT"
    RESULTS=$OUT/results.jsonl
    : >"$RESULTS"
    WORK=$(mktemp -d)
    PIDS=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}

# Starts a one-member etcd on loopback (data in $WORK/etcd) and waits for
# it; sets etcd_port.
start_etcd() {
    etcd_port=$(free_port)
    local peer
    peer=$(free_port)
    etcd --name n1 --data-dir "$WORK/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "n1=http://127.0.0.1:$peer" --log-level warn >"$WORK/etcd.log" 2>&1 &
    PIDS+=($!)
    wait_port "$etcd_port"
}

# bench LABEL ARGS..: one `dlog bench` scenario, its JSON line appended to
# RESULTS and a summary on stderr.
bench() {
    local label=$1
    shift
    echo "== $label" >&2
    "$DLOG" bench --json --label "$label" --duration "$DURATION" "$@" >>"$RESULTS"
    tail -n 1 "$RESULTS" | python3 -c '
import json, sys
r = json.load(sys.stdin)
l = r["latency_ms"]
print("   %.0f records/s %.1f MB/s p50 %.3f p90 %.3f p99 %.3f ms errors %d" % (r["records_per_s"], r["mb_per_s"], l["p50"], l["p90"], l["p99"], r["errors"]))' >&2
}
