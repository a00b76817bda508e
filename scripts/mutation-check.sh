#!/usr/bin/env bash
# The mutation check of the simulation: builds the simulation with each
# known safety bug reintroduced (a `mutation-*` cargo feature of dlog-sim,
# used by nothing else) and runs seeds until the checker finds it. Prints,
# per mutant, the seed and how many seeds it took; fails if a mutant
# survives MAX seeds.
#
#     scripts/mutation-check.sh [MAX]      default: 2000 seeds per mutant
set -euo pipefail
cd "$(dirname "$0")/.."
max=${1:-2000}
mutants=(
    mutation-ack-before-quorum
    mutation-recovery-stops-at-lac
    mutation-failed-read-not-held
    mutation-ack-before-fsync
)
survived=0
summary=()
for mutant in "${mutants[@]}"; do
    echo "== $mutant" >&2
    out=$(cargo run --release --locked --quiet -p dlog-sim --features "$mutant" --bin dlog-sim -- \
        --seeds "$max" --until-failure 2>&1 || true)
    found=$(grep -E '^first failure' <<<"$out" || true)
    grep -E '^FAILED' <<<"$out" | head -n 1 >&2 || true
    if ! grep -qE '^(ran|first failure)' <<<"$out"; then
        tail -n 20 <<<"$out" >&2
        summary+=("$mutant: the simulation did not run (build failed?)")
        survived=1
    elif [ -n "$found" ]; then
        summary+=("$mutant: found — $found")
    else
        summary+=("$mutant: NOT found in $max seeds")
        survived=1
    fi
done
printf '%s\n' "${summary[@]}"
exit "$survived"
