#!/usr/bin/env bash
# Runs scripts/bench.sh ROUNDS times (default 3) and renders the median of
# the rounds, with the spread of p99, as BENCHMARKS.md's tables:
#
#     scripts/bench-rounds.sh [ROUNDS] [OUT_DIR]     (default: 3 target/bench)
#
# OUT_DIR/round-N/results.jsonl holds each round, OUT_DIR/tables.md the
# median tables. The idle-logs memory figure comes from round 1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
OUT=${2:-target/bench}
for round in $(seq "$ROUNDS"); do
    echo "==== round $round of $ROUNDS" >&2
    # The idle-logs memory figure once (it takes ~2 minutes).
    if [ "$round" -gt 1 ]; then export IDLE_LOGS=0; fi
    bash scripts/bench.sh "$OUT/round-$round"
done
python3 scripts/bench_tables.py "$OUT"/round-*/results.jsonl >"$OUT/tables.md"
echo "tables: $OUT/tables.md" >&2
