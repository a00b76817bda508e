#!/usr/bin/env bash
# A long run of the deterministic simulation (crate dlog-sim): N seeds from
# FROM, on every core, printing seeds per second as it goes. Every failing
# seed is printed with the one-line command that reruns it.
#
#     scripts/sim.sh [N] [FROM]      default: 10000 seeds from 0
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-10000}
from=${2:-0}
cargo run --release --locked --quiet -p dlog-sim --bin dlog-sim -- --seeds "$seeds" --from "$from"
