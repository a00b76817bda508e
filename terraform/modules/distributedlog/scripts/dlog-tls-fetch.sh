#!/bin/bash
# dlog-tls-fetch REGION SECRET_ID DIR GROUP
#
# Writes the TLS set held in the Secrets Manager secret SECRET_ID (a JSON
# object with ca, certificate and private_key, as tls.tf stores it) to
# DIR/ca.pem, DIR/cert.pem and DIR/key.pem. DIR and key.pem are readable by
# root and GROUP only; the certificates by everyone.
#
# Runs as root before the node's service starts (ExecStartPre) and every 15
# minutes from dlog-tls-fetch.timer, so a certificate that Terraform
# re-issued reaches a running node without a restart: dlog reads its files
# again every tls.reload_interval, etcd at each new connection.
#
# Crash safety: each file is written in full to a temporary file in DIR and
# renamed over the old one, and only when its content changed, so a reader
# sees the old file or the new one, never a part. Dying between two renames
# leaves a new certificate with the old key for a moment: dlog refuses such
# a set and keeps the one it has; the next run finishes the change.
#
# When the secret cannot be read (Secrets Manager unreachable, no
# permission yet) within about a minute, the files already in DIR are kept
# and the script exits 0 with a warning; with no files yet it exits 1, and
# the service does not start until a later try succeeds. A secret without
# one of the three fields changes nothing and exits 1. Runs are serialised
# (flock on DIR/.lock); a temporary folder left by a killed run is removed
# by a later one.
set -euo pipefail
if [ "$#" -ne 4 ]; then
  echo "usage: dlog-tls-fetch REGION SECRET_ID DIR GROUP" >&2
  exit 2
fi
region=$1 secret=$2 dir=$3 group=$4
install -d -m 0750 -o root -g "$group" "$dir"
exec 9>"$dir/.lock"
flock 9
find "$dir" -maxdepth 1 -name '.fetch.*' -exec rm -rf {} +
tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

have_all() {
  [ -s "$dir/ca.pem" ] && [ -s "$dir/cert.pem" ] && [ -s "$dir/key.pem" ]
}

# Bounded: a black-holed endpoint must not hold a service start for minutes.
if ! AWS_MAX_ATTEMPTS=3 timeout 60 aws secretsmanager get-secret-value --region "$region" --secret-id "$secret" \
  --query SecretString --output text --cli-connect-timeout 5 --cli-read-timeout 10 \
  >"$tmp/secret.json" 2>"$tmp/error"; then
  if have_all; then
    echo "dlog-tls-fetch: cannot read $secret; keeping the files in $dir: $(head -c 500 "$tmp/error")" >&2
    exit 0
  fi
  echo "dlog-tls-fetch: cannot read $secret and $dir holds no certificate yet: $(head -c 500 "$tmp/error")" >&2
  exit 1
fi

# Every field first: nothing is replaced unless the whole set is there.
for pair in ca:ca.pem certificate:cert.pem private_key:key.pem; do
  field=${pair%%:*}
  file=${pair#*:}
  if ! jq -er --arg f "$field" '.[$f] | select(type == "string" and startswith("-----BEGIN "))' \
    "$tmp/secret.json" >"$tmp/$file" 2>/dev/null; then
    echo "dlog-tls-fetch: secret $secret has no PEM field $field; $dir left as it is" >&2
    exit 1
  fi
done

changed=""
# The key goes last: a new certificate beside the old key is refused by
# dlog (it keeps its set) until the key follows.
for file in ca.pem cert.pem key.pem; do
  if cmp -s "$tmp/$file" "$dir/$file"; then
    continue
  fi
  if [ "$file" = key.pem ]; then
    chmod 0640 "$tmp/$file"
  else
    chmod 0644 "$tmp/$file"
  fi
  chown "root:$group" "$tmp/$file"
  mv -f "$tmp/$file" "$dir/$file"
  changed="$changed $file"
done
if [ -n "$changed" ]; then
  echo "dlog-tls-fetch: updated$changed in $dir from $secret" >&2
fi
