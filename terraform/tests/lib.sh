# shellcheck shell=bash
# Helpers of the shell tests in this folder (etcd_start_test.sh,
# tls_fetch_test.sh, catalog_fetch_test.sh). Sourced, not run; the test
# sets test_name first.
#
#   ok WHAT, bad WHAT  print one result line and count it in passed and
#                      failed; the test ends with its own summary line
#                      ("N passed, N failed") and fails when failed > 0.
#   fake_aws DIR ID    writes DIR/aws, a stand-in for the one call the
#                      Secrets Manager fetchers make (get-secret-value of
#                      secret ID in eu-west-1): it prints
#                      $FAKE_DIR/secret.json, or fails as an unreachable
#                      endpoint while $FAKE_DIR/aws-down exists.

: "${test_name:?set test_name before sourcing lib.sh}"
passed=0
failed=0
ok() {
  echo "$test_name: ok    $1"
  passed=$((passed + 1))
}
bad() {
  echo "$test_name: FAIL  $1" >&2
  failed=$((failed + 1))
}

fake_aws() {
  cat >"$1/aws" <<END
#!/bin/bash
expected="secretsmanager get-secret-value --region eu-west-1 --secret-id $2 --query SecretString --output text --cli-connect-timeout 5 --cli-read-timeout 10"
if [ "\$*" != "\$expected" ]; then
  echo "fake aws: unexpected call: \$*" >&2
  exit 2
fi
if [ -e "\$FAKE_DIR/aws-down" ]; then
  echo "Could not connect to the endpoint URL" >&2
  exit 255
fi
cat "\$FAKE_DIR/secret.json"
END
  chmod +x "$1/aws"
}
