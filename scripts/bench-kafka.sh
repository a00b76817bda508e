#!/usr/bin/env bash
# The Kafka listener against native gRPC, in one run on one standalone node
# (BENCHMARKS.md, "Kafka listener"):
#
#     scripts/bench-kafka.sh [OUT_DIR]      (default: target/bench-kafka)
#
# Rounds alternate gRPC and Kafka so both see the same machine:
#   * throughput, 1 KiB records over 4 logs / a 4-partition topic: `dlog
#     bench` (8 appenders, 200 records per append) against a librdkafka
#     producer (acks=all, linger 5 ms);
#   * latency at 1 000 records/s, 1 KiB, one log / partition: `dlog bench
#     --rate 1000` against a librdkafka producer at 1 000 messages/s
#     (linger 5 ms, librdkafka's default, and linger 0), acknowledgement
#     latency; and produce -> consume end to end through a Kafka consumer.
# OUT_DIR/results.jsonl gets every result; the summary goes to stdout.
# ROUNDS (default 3) and DURATION (seconds, default 8) set the length.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cargo_bin_on_path
bash scripts/install-test-deps.sh >&2
cargo build --release --locked --bin dlog >&2
bench_setup "${1:-target/bench-kafka}"
ROUNDS=${ROUNDS:-3}
venv=$(project_venv)

port=$(free_port)
kafka=$(free_port)
"$DLOG" standalone --data-dir "$WORK/standalone" --listen "127.0.0.1:$port" \
    --kafka-listen "127.0.0.1:$kafka" >"$WORK/standalone.log" 2>&1 &
PIDS+=($!)
wait_port "$port"
wait_port "$kafka"
E=(--endpoint "http://127.0.0.1:$port")
kafka_bench() {
    echo "== kafka $*" >&2
    "$venv/bin/python" scripts/kafka_bench.py "$@" | tee -a "$RESULTS" >&2
}
"$venv/bin/python" - "$kafka" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}"})
for f in admin.create_topics([NewTopic("tput", 4), NewTopic("lat", 1)]).values():
    f.result()
PY
# Latency first: the throughput runs leave the compactor offloading
# gigabytes, which the latency runs would feel.
for round in $(seq 1 "$ROUNDS"); do
    echo "== latency round $round" >&2
    bench "grpc latency 1000/s 1024B" "${E[@]}" --namespace "lat" --rate 1000 --record-size 1024
    kafka_bench latency "127.0.0.1:$kafka" lat 1024 1000 "$DURATION" 5
    kafka_bench latency "127.0.0.1:$kafka" lat 1024 1000 "$DURATION" 0
done
for round in $(seq 1 "$ROUNDS"); do
    echo "== throughput round $round" >&2
    bench "grpc max 1024B" "${E[@]}" --namespace "max" --logs 4 --concurrency 8 --batch 200 --record-size 1024
    kafka_bench throughput "127.0.0.1:$kafka" tput 4 1024 "$DURATION"
done
"$venv/bin/python" - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
grpc_max = [r["records_per_s"] for r in rows if r.get("label") == "grpc max 1024B"]
kafka_max = [r["messages_per_s"] for r in rows if r.get("mode") == "throughput"]
grpc_lat = [r["latency_ms"]["p99"] for r in rows if r.get("label") == "grpc latency 1000/s 1024B"]
grpc_p50 = [r["latency_ms"]["p50"] for r in rows if r.get("label") == "grpc latency 1000/s 1024B"]
med = statistics.median
print("| measure | gRPC | Kafka | Kafka / gRPC |")
print("|---|---|---|---|")
print(f"| throughput, 1 KiB, 4 logs (records/s, median of {len(grpc_max)}) | {med(grpc_max):.0f} | {med(kafka_max):.0f} | {med(kafka_max) / med(grpc_max):.0%} |")
for linger in (5, 0):
    lat = [r for r in rows if r.get("mode") == "latency" and r.get("linger_ms") == linger]
    ack50 = med([r["ack_ms"]["p50"] for r in lat])
    ack99 = med([r["ack_ms"]["p99"] for r in lat])
    e2e50 = med([r["e2e_ms"]["p50"] for r in lat])
    e2e99 = med([r["e2e_ms"]["p99"] for r in lat])
    print(f"| 1000/s, 1 KiB, linger {linger} ms: ack p50 / p99 ms | {med(grpc_p50):.2f} / {med(grpc_lat):.2f} | {ack50:.2f} / {ack99:.2f} | p99 {ack99 / med(grpc_lat):.2f}x |")
    print(f"| 1000/s, 1 KiB, linger {linger} ms: produce -> consume p50 / p99 ms | | {e2e50:.2f} / {e2e99:.2f} | |")
print()
print("throughput rounds: grpc", [round(x) for x in grpc_max], "kafka", [round(x) for x in kafka_max])
print("gRPC p99 rounds:", grpc_lat)
for linger in (5, 0):
    print(f"kafka linger {linger} ack p99 rounds:", [round(r["ack_ms"]["p99"], 2) for r in rows if r.get("mode") == "latency" and r.get("linger_ms") == linger])
PY
