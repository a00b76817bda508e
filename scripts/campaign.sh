#!/usr/bin/env bash
# A fault campaign against real processes (tests/campaign.rs): 3 etcd
# members, an S3 server, 3 cache nodes, 3 ingest+reader nodes and 2
# compactors under a seeded nemesis (kill -9 of owners, cache nodes, a
# compactor and an etcd member; owners frozen past their lease and cache
# nodes frozen; partitions with iptables; a bit flip in, or the loss of, one
# cache node's disk; logs deleted and re-created under load), then a check
# of the whole history. Each run appends one JSON line to the report file.
# Partitions need root and iptables (scripts/install-test-deps.sh).
#
#     scripts/campaign.sh [RUNS] [SECONDS]     default: 3 runs of 180 s
#
# DLOG_CAMPAIGN_SEED repeats a run's nemesis schedule (with RUNS=1);
# DLOG_CAMPAIGN_LOGS sets the number of logs (4); DLOG_CAMPAIGN_REPORT the
# report file (target/campaign.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cargo_bin_on_path
runs=${1:-3}
seconds=${2:-180}
report=${DLOG_CAMPAIGN_REPORT:-$PWD/target/campaign.jsonl}
mkdir -p "$(dirname "$report")"
for run in $(seq "$runs"); do
    echo "== campaign run $run of $runs: $seconds s" >&2
    DLOG_CAMPAIGN_SECS=$seconds DLOG_CAMPAIGN_REPORT=$report \
        cargo nextest run --locked --profile campaign --test campaign --no-capture 2>&1 \
        | grep -E '^campaign|FAIL|PASS|panicked|anomal' || true
done
echo "reports in $report" >&2
tail -n "$runs" "$report"
