#!/usr/bin/env bash
# Runs the rendered dlog-tls-fetch (tests/render_templates.py, scenario
# ingest) with an `aws` command of this test's on PATH that answers
# `secretsmanager get-secret-value` from a file, or fails when asked to:
#
#   1. no secret readable, no files yet          -> exit 1, nothing written
#   2. the secret                                -> ca.pem, cert.pem, key.pem
#                                                   with its fields; key 0640,
#                                                   folder 0750, group GROUP
#   3. the same secret again                     -> no file rewritten
#   4. a re-issued certificate and key           -> those two replaced, the
#                                                   CA file left alone
#   5. Secrets Manager unreachable, files there  -> exit 0, files kept
#   6. a secret without private_key              -> exit 1, files kept
#   7. a field that is not PEM                   -> exit 1, files kept
#   and no temporary folder is left behind.
#
# Usage: tls_fetch_test.sh RENDERED_DIR. Needs root (the script gives the
# files to root and a group), jq.
set -euo pipefail
rendered=$1
fetch=$rendered/ingest/usr/local/sbin/dlog-tls-fetch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
group=daemon
test_name=tls-fetch-test
# shellcheck source=terraform/tests/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir "$work/bin"
fake_aws "$work/bin" arn:test
export FAKE_DIR=$work PATH="$work/bin:$PATH"
dir=$work/tls

pem() { printf -- '-----BEGIN %s-----\n%s\n-----END %s-----\n' "$1" "$2" "$1"; }
secret() {
  jq -n --arg ca "$(pem CERTIFICATE "$1")" --arg certificate "$(pem CERTIFICATE "$2")" \
    --arg private_key "$(pem 'PRIVATE KEY' "$3")" '{ca: $ca, certificate: $certificate, private_key: $private_key}' \
    >"$work/secret.json"
}
run() {
  status=0
  bash "$fetch" eu-west-1 arn:test "$dir" "$group" >"$work/out" 2>&1 || status=$?
}
inode() { stat -c %i "$dir/$1"; }

touch "$work/aws-down"
run
if [ "$status" -eq 1 ] && [ ! -e "$dir/cert.pem" ] && grep -q "holds no certificate yet" "$work/out"; then
  ok "nothing readable and no files yet: exit 1, nothing written"
else
  bad "nothing readable and no files yet: exit $status, output: $(cat "$work/out")"
fi
rm "$work/aws-down"

secret CA1 CERT1 KEY1
run
if [ "$status" -eq 0 ] && grep -q CA1 "$dir/ca.pem" && grep -q CERT1 "$dir/cert.pem" && grep -q KEY1 "$dir/key.pem"; then
  ok "the secret's three fields are written"
else
  bad "first fetch: exit $status, output: $(cat "$work/out")"
fi
modes="$(stat -c '%a %U %G' "$dir") / $(stat -c '%a %U %G' "$dir/key.pem") / $(stat -c '%a' "$dir/cert.pem")"
if [ "$modes" = "750 root $group / 640 root $group / 644" ]; then
  ok "the key is readable by root and $group only"
else
  bad "modes (folder / key / certificate): $modes"
fi

before="$(inode ca.pem) $(inode cert.pem) $(inode key.pem)"
run
after="$(inode ca.pem) $(inode cert.pem) $(inode key.pem)"
if [ "$status" -eq 0 ] && [ "$before" = "$after" ] && [ ! -s "$work/out" ]; then
  ok "the same secret again rewrites nothing"
else
  bad "same secret: exit $status, inodes $before -> $after, output: $(cat "$work/out")"
fi

ca_inode=$(inode ca.pem)
secret CA1 CERT2 KEY2
run
if [ "$status" -eq 0 ] && grep -q CERT2 "$dir/cert.pem" && grep -q KEY2 "$dir/key.pem" &&
  [ "$(inode ca.pem)" = "$ca_inode" ] && grep -q "updated cert.pem key.pem" "$work/out"; then
  ok "a re-issued certificate and key replace the old ones, the CA file stays"
else
  bad "rotation: exit $status, output: $(cat "$work/out")"
fi

touch "$work/aws-down"
run
if [ "$status" -eq 0 ] && grep -q CERT2 "$dir/cert.pem" && grep -q "keeping the files" "$work/out"; then
  ok "Secrets Manager unreachable: the files on disk are kept"
else
  bad "unreachable with files: exit $status, output: $(cat "$work/out")"
fi
rm "$work/aws-down"

jq 'del(.private_key) | .certificate = "-----BEGIN CERTIFICATE-----\nCERT3\n-----END CERTIFICATE-----\n"' \
  "$work/secret.json" >"$work/s" && mv "$work/s" "$work/secret.json"
run
if [ "$status" -eq 1 ] && grep -q CERT2 "$dir/cert.pem" && grep -q "no PEM field private_key" "$work/out"; then
  ok "a secret without private_key changes nothing"
else
  bad "missing field: exit $status, cert: $(cat "$dir/cert.pem"), output: $(cat "$work/out")"
fi

secret CA1 CERT4 KEY4
jq '.ca = 42' "$work/secret.json" >"$work/s" && mv "$work/s" "$work/secret.json"
run
if [ "$status" -eq 1 ] && grep -q CERT2 "$dir/cert.pem" && grep -q "no PEM field ca" "$work/out"; then
  ok "a field that is not PEM changes nothing"
else
  bad "non-PEM field: exit $status, output: $(cat "$work/out")"
fi

mkdir -m 0700 "$dir/.fetch.killed"
secret CA1 CERT2 KEY2
run
leftover=$(find "$dir" -name '.fetch.*' | wc -l)
if [ "$leftover" -eq 0 ]; then ok "no temporary folder is left"; else bad "$leftover temporary folders left in $dir"; fi

echo "tls fetch: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
