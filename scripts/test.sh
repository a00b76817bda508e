#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs the test servers
# when missing, then checks formatting and lints and runs every test against
# real etcd and a real S3-compatible server. Under CI (CI=true or CI=1) a
# missing server or tool fails the run instead of skipping tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cargo_bin_on_path

# A clean clone gains nothing from incremental compilation, and its caches
# take as much disk as the build itself; CI machines have little to spare.
if in_ci; then
    export CARGO_INCREMENTAL=0
fi

# Installs what is missing, then checks every tool (scripts/check-tools.sh)
# and stops here, naming the missing piece, when one is still missing.
bash scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== doc tests"
cargo test --workspace --doc --locked
echo "== cargo nextest"
cargo nextest run --workspace --locked --profile ci
echo "== terraform"
bash scripts/check-terraform.sh
echo "== all checks passed"
