#!/usr/bin/env bash
# Runs the benchmark scenarios of BENCHMARKS.md (issue 7) on this machine and
# writes their tables:
#
#     scripts/bench.sh [OUT_DIR]        (default: target/bench)
#
# OUT_DIR/results.jsonl gets one `dlog bench --json` line per scenario and
# OUT_DIR/tables.md the Markdown tables (scripts/bench_tables.py). Set-ups,
# each started here on loopback ports and stopped at the end:
#   * the machine: 4 KiB write+fdatasync latency, sequential 1 MiB+fdatasync;
#   * standalone: `dlog standalone` (one cache node, replication 1/1/1);
#   * cluster: real etcd, s3s-fs, 3 cache nodes, one node with the ingest,
#     compactor and reader roles; replication 3/3/2 (E/W/A);
#   * peers at equal durability: Redis (appendfsync always), NATS JetStream
#     (file storage, sync_interval always), etcd with 1 and 3 members.
# DURATION (seconds per scenario, default 8) shortens or lengthens the run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_protoc
cargo_bin_on_path
bash scripts/install-test-deps.sh >&2
bash scripts/bench-peers.sh install >&2
cargo build --release --locked --bin dlog >&2

bench_setup "${1:-target/bench}"

# The appends/s of the last result, times a factor (for the 80 % runs).
last_rate() {
    tail -n 1 "$RESULTS" | python3 -c "import json, sys; r = json.load(sys.stdin); print(max(1, round(r['appends'] / r['duration_s'] * $1)))"
}

# Scenarios run against every dlog set-up: SETUP is the label prefix.
dlog_scenarios() {
    local setup=$1 endpoint=$2
    local E=(--endpoint "$endpoint")
    for size in 100 1024; do
        bench "$setup latency 1000/s ${size}B" "${E[@]}" --namespace "lat$size" --rate 1000 --record-size $size
        bench "$setup max ${size}B" "${E[@]}" --namespace "max$size" --logs 4 --concurrency 8 --batch 200 --record-size $size
        bench "$setup 80% ${size}B" "${E[@]}" --namespace "max$size" --logs 4 --batch 200 --record-size $size --rate "$(last_rate 0.8)"
        bench "$setup single ${size}B" "${E[@]}" --namespace "one$size" --record-size $size
        bench "$setup pipeline100 ${size}B" "${E[@]}" --namespace "one$size" --batch 100 --record-size $size
    done
    bench "$setup tail 1000 readers" "${E[@]}" --namespace tail --workload tail --readers 1000 --rate 1000 --record-size 100
}

# ---- the machine ----
bench "machine disk" --workload disk --dir "$WORK"

# ---- standalone ----
port=$(free_port)
"$DLOG" standalone --data-dir "$WORK/standalone" --listen "127.0.0.1:$port" --kafka-listen off >"$WORK/standalone.log" 2>&1 &
PIDS+=($!)
wait_port "$port"
dlog_scenarios standalone "http://127.0.0.1:$port"
bench "standalone 10000 logs" --endpoint "http://127.0.0.1:$port" --namespace many --logs 10000 --rate 10000 --record-size 100
# Idle logs: the node's resident memory before and after opening IDLE_LOGS
# more logs (one append each: an owner, an open segment, a cache segment).
# IDLE_LOGS=0 skips it.
IDLE_LOGS=${IDLE_LOGS:-100000}
rss() { awk '/^VmRSS/ {printf "%d\n", $2 * 1024}' "/proc/$1/status"; }
if [ "$IDLE_LOGS" -gt 0 ]; then
    rss_before=$(rss "${PIDS[-1]}")
    echo "== standalone idle $IDLE_LOGS logs" >&2
    "$DLOG" bench --json --endpoint "http://127.0.0.1:$port" --namespace idle --logs "$IDLE_LOGS" \
        --rate 1 --duration 1 --warmup 0 --record-size 100 >/dev/null
    sleep 2
    rss_after=$(rss "${PIDS[-1]}")
    python3 -c "
import json, sys
logs, before, after = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print(json.dumps({'label': 'standalone idle logs', 'idle_logs': logs, 'rss_before': before,
                  'rss_after': after, 'bytes_per_log': (after - before) / logs}))" \
        "$IDLE_LOGS" "$rss_before" "$rss_after" >>"$RESULTS"
    tail -n 1 "$RESULTS" >&2
fi
kill "${PIDS[-1]}"
wait "${PIDS[-1]}" 2>/dev/null || true

# ---- local cluster: etcd, s3s-fs, 3 cache nodes, ingest+compactor+reader ----
start_etcd
s3_port=$(free_port)
mkdir -p "$WORK/s3/bench"
s3s-fs --host 127.0.0.1 --port "$s3_port" --access-key benchaccess --secret-key benchsecret0123456789 "$WORK/s3" >"$WORK/s3.log" 2>&1 &
PIDS+=($!)
wait_port "$s3_port"
export AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port AWS_ACCESS_KEY_ID=benchaccess \
    AWS_SECRET_ACCESS_KEY=benchsecret0123456789 AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
for i in 1 2 3; do
    p=$(free_port)
    "$DLOG" serve --roles cache --metastore "etcd://127.0.0.1:$etcd_port" --listen "127.0.0.1:$p" \
        --data-dir "$WORK/cache$i" --node-id "cache-$i" >"$WORK/cache$i.log" 2>&1 &
    PIDS+=($!)
    wait_port "$p"
done
node_port=$(free_port)
DLOG_COMPACTOR__CACHE_DROP_GRACE=1s "$DLOG" serve --roles ingest,compactor,reader --metastore "etcd://127.0.0.1:$etcd_port" \
    --object-store s3://bench/cluster --listen "127.0.0.1:$node_port" --data-dir "$WORK/node" --node-id node-1 \
    >"$WORK/node.log" 2>&1 &
PIDS+=($!)
wait_port "$node_port"
CLUSTER=http://127.0.0.1:$node_port
dlog_scenarios cluster "$CLUSTER"

# Cold reads from Parquet on the S3 server: write, seal, wait until the
# segments are offloaded and dropped from the cache nodes, read once.
for size in 100 1024; do
    echo "== cluster load for cold read ${size}B" >&2
    "$DLOG" bench --endpoint "$CLUSTER" --namespace "cold$size" --concurrency 8 --batch 200 --record-size $size \
        --duration 4 --warmup 0 >/dev/null
    "$DLOG" --endpoint "$CLUSTER" seal "cold$size/l0" >/dev/null
    for _ in $(seq 300); do
        if "$DLOG" --endpoint "$CLUSTER" logs info "cold$size/l0" --json |
            python3 -c 'import json, sys; s = json.load(sys.stdin)["segments"]; sys.exit(0 if all(x["state"] == "offloaded" for x in s if x["state"] != "open") and any(x["state"] == "offloaded" for x in s) else 1)'; then
            break
        fi
        sleep 0.2
    done
    sleep 3 # the cache drop grace (1 s) and a compactor pass
    bench "cluster cold read ${size}B" --endpoint "$CLUSTER" --namespace "cold$size" --workload read --record-size $size
done

# ---- peers ----
peer_scenarios() {
    local name=$1 url=$2
    for size in 100 1024; do
        bench "$name single ${size}B" --target "$url" --record-size $size
        bench "$name pipeline100 ${size}B" --target "$url" --batch 100 --record-size $size
    done
}
redis_port=$(free_port)
bash scripts/bench-peers.sh start-redis "$redis_port" "$WORK/redis" &
PIDS+=($!)
wait_port "$redis_port"
peer_scenarios redis "redis://127.0.0.1:$redis_port"
nats_port=$(free_port)
bash scripts/bench-peers.sh start-nats "$nats_port" "$WORK/nats" &
PIDS+=($!)
wait_port "$nats_port"
peer_scenarios nats "nats://127.0.0.1:$nats_port"
peer_scenarios etcd1 "etcd://127.0.0.1:$etcd_port"
# Three etcd members on this machine (consensus round trips, 3 fsyncs).
members=()
for i in 1 2 3; do members+=("$(free_port):$(free_port)"); done
cluster_urls=$(for i in 1 2 3; do echo -n "m$i=http://127.0.0.1:${members[$((i - 1))]#*:},"; done)
for i in 1 2 3; do
    c=${members[$((i - 1))]%:*}
    p=${members[$((i - 1))]#*:}
    etcd --name "m$i" --data-dir "$WORK/etcd3-$i" \
        --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
        --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
        --initial-cluster "${cluster_urls%,}" --initial-cluster-state new --log-level warn >"$WORK/etcd3-$i.log" 2>&1 &
    PIDS+=($!)
done
wait_port "${members[0]%:*}"
sleep 2 # leader election
peer_scenarios etcd3 "etcd://127.0.0.1:${members[0]%:*}"

python3 scripts/bench_tables.py "$RESULTS" >"$OUT/tables.md"
echo "results: $RESULTS, tables: $OUT/tables.md" >&2
