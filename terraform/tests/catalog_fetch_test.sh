#!/usr/bin/env bash
# Runs the rendered dlog-catalog-fetch (tests/render_templates.py, scenario
# compactor) with `aws`, `curl` and `systemctl` commands of this test's on
# PATH: aws answers `secretsmanager get-secret-value` from a file, curl
# "downloads" a CA bundle made here, systemctl records what it was asked;
# each fails when told to:
#
#   1. no secret readable, no env file yet  -> exit 1, no env file
#   2. a password with @ : / ? # & % $ ' " + = ! * ( ) \ and a space
#                                           -> the URI, user and password
#                                              percent-encoded (they decode
#                                              back), the CA bundle beside it;
#                                              env file 0640 root:GROUP
#   3. the same secret again (--restart)    -> nothing rewritten, no restart
#   4. a rotated password (--restart)       -> new URI, one try-restart
#   5. Secrets Manager unreachable          -> exit 0, env file kept
#   6. CA download fails, bundle on disk    -> bundle kept, URI still updated
#   7. a secret without password            -> exit 1, env file kept
#   8. a restart left due by a killed run   -> the next --restart run does
#                                              it; a run without --restart
#                                              (ExecStartPre) clears it
#   9. no CA bundle and no download         -> exit 1
#   and no temporary file is left behind.
#
# Usage: catalog_fetch_test.sh RENDERED_DIR. Needs root (the env file goes
# to root and a group), jq, openssl, python3.
set -euo pipefail
rendered=$1
fetch=$rendered/compactor/usr/local/sbin/dlog-catalog-fetch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
group=daemon
secret_id='arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-1-AbC'
endpoint=db.example.eu-west-1.rds.amazonaws.com:5432/iceberg
test_name=catalog-fetch-test
# shellcheck source=terraform/tests/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir "$work/bin" "$work/run" "$work/etc"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/ca.key" \
  -out "$work/bundle.pem" -days 2 -subj "/CN=stand-in RDS CA" 2>/dev/null
fake_aws "$work/bin" "$secret_id"
cat >"$work/bin/curl" <<'EOF'
#!/bin/bash
# Serves the regional bundle URL only, over https only.
out="" url=""
proto=no
while [ "$#" -gt 0 ]; do
  case $1 in
    -o) out=$2; shift ;;
    --proto) [ "$2" = "=https" ] && proto=yes; shift ;;
    --proto-redir | --retry | --retry-delay | --connect-timeout | --max-time) shift ;;
    -*) ;;
    *) url=$1 ;;
  esac
  shift
done
if [ "$url" != "https://truststore.pki.rds.amazonaws.com/eu-west-1/eu-west-1-bundle.pem" ] || [ "$proto" != yes ]; then
  echo "fake curl: unexpected download of $url (https only: $proto)" >&2
  exit 2
fi
if [ -e "$FAKE_DIR/curl-down" ]; then
  echo "curl: (6) Could not resolve host" >&2
  exit 6
fi
cp "$FAKE_DIR/bundle.pem" "$out"
EOF
cat >"$work/bin/systemctl" <<'EOF'
#!/bin/bash
echo "$*" >>"$FAKE_DIR/systemctl.log"
EOF
chmod +x "$work/bin/curl" "$work/bin/systemctl"
export FAKE_DIR=$work PATH="$work/bin:$PATH"
env_file=$work/run/catalog.env
ca_file=$work/etc/rds-ca.pem

secret() { jq -n --arg u "$1" --arg p "$2" '{username: $u, password: $p}' >"$work/secret.json"; }
run() {
  status=0
  bash "$fetch" "$@" eu-west-1 "$secret_id" "$endpoint" "$env_file" "$ca_file" "$group" >"$work/out" 2>&1 || status=$?
}
restarts() { if [ -e "$work/systemctl.log" ]; then wc -l <"$work/systemctl.log"; else echo 0; fi; }
# The user and password the URI carries, decoded as a client would.
decoded() {
  python3 -c '
import sys, urllib.parse
line = open(sys.argv[1]).read()
key, quoted = line.rstrip("\n").split("=", 1)
assert quoted[0] == quoted[-1] == "\x27", quoted
parts = urllib.parse.urlsplit(quoted[1:-1])
assert key == "DLOG_COMPACTOR__ICEBERG_CATALOG", key
print(urllib.parse.unquote(parts.username))
print(urllib.parse.unquote(parts.password))
print(parts.hostname, parts.port, parts.path, parts.query, sep="|")
' "$env_file"
}

touch "$work/aws-down"
run
if [ "$status" -eq 1 ] && [ ! -e "$env_file" ] && grep -q "there is no $env_file yet" "$work/out"; then
  ok "nothing readable and no env file yet: exit 1, nothing written"
else
  bad "nothing readable: exit $status, output: $(cat "$work/out")"
fi
rm "$work/aws-down"

password="p@ss:w/rd?#&%x \$HOME'\"+=!*()\\"
secret dlog "$password"
run
want="dlog
$password
db.example.eu-west-1.rds.amazonaws.com|5432|/iceberg|sslmode=verify-full&sslrootcert=$ca_file"
got=$(decoded 2>&1 || true)
if [ "$status" -eq 0 ] && [ "$got" = "$want" ] &&
  grep -qF "='postgres://dlog:p%40ss%3Aw%2Frd%3F%23%26%25x%20%24HOME%27%22%2B%3D%21%2A%28%29%5C@db." "$env_file"; then
  ok "the URI carries user and password percent-encoded, and they decode back"
else
  bad "first fetch: exit $status, decoded: $got, output: $(cat "$work/out")"
fi
if [ "$(stat -c '%a %U %G' "$env_file")" = "640 root $group" ] && cmp -s "$ca_file" "$work/bundle.pem" &&
  [ "$(stat -c '%a' "$ca_file")" = 644 ]; then
  ok "env file readable by root and $group only; CA bundle in place, 0644"
else
  bad "modes: env $(stat -c '%a %U %G' "$env_file"), CA $(stat -c '%a' "$ca_file" 2>&1)"
fi

before=$(stat -c %i "$env_file")
run --restart dlog.service
if [ "$status" -eq 0 ] && [ "$(stat -c %i "$env_file")" = "$before" ] && [ "$(restarts)" -eq 0 ] && [ ! -s "$work/out" ]; then
  ok "the same secret again: nothing rewritten, no restart"
else
  bad "same secret: exit $status, restarts $(restarts), output: $(cat "$work/out")"
fi

secret dlog rotated-1
run --restart dlog.service
if [ "$status" -eq 0 ] && grep -q ':rotated-1@' "$env_file" && [ "$(cat "$work/systemctl.log")" = "--no-block try-restart dlog.service" ] &&
  [ ! -e "$env_file.restart" ]; then
  ok "a rotated password: new URI, dlog.service restarted once"
else
  bad "rotation: exit $status, systemctl: $(cat "$work/systemctl.log" 2>&1), output: $(cat "$work/out")"
fi

touch "$work/aws-down"
secret dlog rotated-2
run --restart dlog.service
if [ "$status" -eq 0 ] && grep -q ':rotated-1@' "$env_file" && [ "$(restarts)" -eq 1 ] && grep -q "keeping $env_file" "$work/out"; then
  ok "Secrets Manager unreachable: the env file is kept, no restart"
else
  bad "unreachable: exit $status, restarts $(restarts), output: $(cat "$work/out")"
fi
rm "$work/aws-down"

touch "$work/curl-down"
run --restart dlog.service
if [ "$status" -eq 0 ] && grep -q ':rotated-2@' "$env_file" && cmp -s "$ca_file" "$work/bundle.pem" &&
  grep -q "keeping $ca_file" "$work/out" && [ "$(restarts)" -eq 2 ]; then
  ok "CA download fails: the bundle on disk is kept and the URI still follows the secret"
else
  bad "CA download down: exit $status, output: $(cat "$work/out")"
fi
rm "$work/curl-down"

jq 'del(.password)' "$work/secret.json" >"$work/s" && mv "$work/s" "$work/secret.json"
run --restart dlog.service
if [ "$status" -eq 1 ] && grep -q ':rotated-2@' "$env_file" && grep -q "has no username and password" "$work/out"; then
  ok "a secret without password changes nothing"
else
  bad "missing password: exit $status, output: $(cat "$work/out")"
fi

secret dlog rotated-2
touch "$env_file.restart"
run --restart dlog.service
if [ "$status" -eq 0 ] && [ "$(restarts)" -eq 3 ] && [ ! -e "$env_file.restart" ]; then
  ok "a restart left due by a killed run is done by the next timer run"
else
  bad "due restart: exit $status, restarts $(restarts), output: $(cat "$work/out")"
fi
touch "$env_file.restart"
run
if [ "$status" -eq 0 ] && [ "$(restarts)" -eq 3 ] && [ ! -e "$env_file.restart" ]; then
  ok "a run before the service starts clears a due restart without asking for one"
else
  bad "ExecStartPre run with a due restart: exit $status, restarts $(restarts)"
fi

rm "$ca_file"
touch "$work/curl-down"
run
if [ "$status" -eq 1 ] && [ ! -e "$ca_file" ] && grep -q "there is no $ca_file yet" "$work/out"; then
  ok "no CA bundle and none downloadable: exit 1"
else
  bad "no CA bundle: exit $status, output: $(cat "$work/out")"
fi
rm "$work/curl-down"

leftover=$(find "$work/run" "$work/etc" -name '*.new.*' | wc -l)
if [ "$leftover" -eq 0 ]; then ok "no temporary file is left"; else bad "$leftover temporary files left"; fi

echo "catalog fetch: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
