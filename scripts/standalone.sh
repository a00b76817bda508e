#!/usr/bin/env bash
# Builds dlog (installing protoc if missing) and runs it standalone: every
# role in one process, data under ./dlog-data, API on 127.0.0.1:7070.
# Extra arguments go to `dlog standalone` (e.g. --data-dir DIR --listen ADDR).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_protoc
exec cargo run --release --locked --bin dlog -- standalone "$@"
