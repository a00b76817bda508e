#!/usr/bin/env bash
# The latency cost of TLS (BENCHMARKS.md, "TLS"): two clusters side by
# side on one etcd, the same shape (3 cache nodes, one ingest node,
# replication 3/3/2), one plaintext and one with TLS on every hop (client to
# ingest, ingest to cache nodes with node certificates). Appends at
# 1 000/s, 100 B and 1 KiB records, alternating plaintext and TLS rounds so
# both see the same machine:
#
#     scripts/bench-tls.sh [OUT_DIR]    (default: target/bench-tls)
#
# OUT_DIR/results.jsonl gets one `dlog bench --json` line per round.
# ROUNDS (default 3) and DURATION (seconds per round, default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_protoc
cargo_bin_on_path
bash scripts/install-test-deps.sh >&2
cargo build --release --locked --bin dlog >&2

ROUNDS=${ROUNDS:-3}
bench_setup "${1:-target/bench-tls}"

# A CA and one node certificate (OU=dlog-node, for 127.0.0.1) every node
# of the TLS cluster uses, made with openssl (not in every base image).
command -v openssl >/dev/null 2>&1 || apt_install openssl
pki=$WORK/pki
mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/OU=dlog-node/CN=bench-node" -keyout "$pki/node.key" -out "$pki/node.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$pki/node.ext"
openssl x509 -req -in "$pki/node.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$pki/node.ext" -out "$pki/node.pem" 2>/dev/null
TLS_FLAGS=(--tls-cert "$pki/node.pem" --tls-key "$pki/node.key" --tls-ca "$pki/ca.pem")

start_etcd

# cluster NAME [FLAGS..]: 3 cache nodes and an ingest node of cluster NAME;
# sets INGEST_PORT.
cluster() {
    local name=$1
    shift
    for i in 1 2 3; do
        local p
        p=$(free_port)
        "$DLOG" serve --roles cache --metastore "etcd://127.0.0.1:$etcd_port/$name" --listen "127.0.0.1:$p" \
            --data-dir "$WORK/$name-cache$i" --node-id "$name-cache-$i" "$@" >"$WORK/$name-cache$i.log" 2>&1 &
        PIDS+=($!)
        wait_port "$p"
    done
    INGEST_PORT=$(free_port)
    "$DLOG" serve --roles ingest --metastore "etcd://127.0.0.1:$etcd_port/$name" --listen "127.0.0.1:$INGEST_PORT" \
        --data-dir "$WORK/$name-ingest" --node-id "$name-ingest" "$@" >"$WORK/$name-ingest.log" 2>&1 &
    PIDS+=($!)
    wait_port "$INGEST_PORT"
}
cluster plain
PLAIN=(--endpoint "http://127.0.0.1:$INGEST_PORT")
cluster tls "${TLS_FLAGS[@]}"
TLS=(--endpoint "https://127.0.0.1:$INGEST_PORT" --tls-ca "$pki/ca.pem")

for round in $(seq "$ROUNDS"); do
    for size in 100 1024; do
        bench "plaintext ${size}B round $round" "${PLAIN[@]}" --rate 1000 --namespace "p$size" --record-size $size
        bench "tls ${size}B round $round" "${TLS[@]}" --rate 1000 --namespace "t$size" --record-size $size
    done
done

# Median over the rounds of each scenario's p50, p90, p99.
python3 - "$RESULTS" <<'EOF'
import json, re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    key = re.sub(r" round \d+$", "", r["label"])
    rows.setdefault(key, []).append(r)
print("| scenario | rounds | appends/s | p50 ms | p90 ms | p99 ms | errors |")
print("|---|---|---|---|---|---|---|")
for key, runs in rows.items():
    med = lambda f: statistics.median(f(r) for r in runs)
    print("| %s | %d | %.0f | %.2f | %.2f | %.2f | %d |" % (
        key, len(runs), med(lambda r: r["appends"] / r["duration_s"]),
        med(lambda r: r["latency_ms"]["p50"]), med(lambda r: r["latency_ms"]["p90"]),
        med(lambda r: r["latency_ms"]["p99"]), sum(r["errors"] for r in runs)))
EOF
