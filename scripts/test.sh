#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs the test servers
# when missing, then checks formatting and lints and runs every test against
# real etcd and a real S3-compatible server. Under CI=true a missing server
# fails the run instead of skipping tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cargo_bin_on_path

bash scripts/install-test-deps.sh
for tool in etcd s3s-fs protoc; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "test.sh: $tool is missing after installation" >&2
        exit 1
    fi
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== doc tests"
cargo test --workspace --doc --locked
echo "== cargo nextest"
cargo nextest run --workspace --locked --profile ci
if [ -f scripts/check-terraform.sh ]; then
    echo "== terraform"
    bash scripts/check-terraform.sh
fi
echo "== all checks passed"
