#!/bin/bash
# dlog-catalog-fetch [--restart UNIT] REGION SECRET_ID HOST:PORT/DATABASE ENV_FILE CA_FILE GROUP
#
# Tells a compactor where its Iceberg catalog is (catalog.tf): reads the
# secret in which RDS keeps the database's user and password (a JSON
# object with username and password) and writes ENV_FILE, readable by root
# and GROUP only, holding the one line
#
#   DLOG_COMPACTOR__ICEBERG_CATALOG='postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=verify-full&sslrootcert=CA_FILE'
#
# with user and password percent-encoded; quoted, so that a shell can read
# the file as systemd does (for an operator's psql). CA_FILE is the RDS certificate
# bundle of REGION, downloaded over HTTPS only: the compactor checks the
# database's certificate and name against it.
#
# Runs as root before dlog.service starts (ExecStartPre) and every 15
# minutes from dlog-catalog-fetch.timer with --restart dlog.service. The
# compactor reads the URI once, at start, and RDS rotates the password
# (every 7 days by default), so when ENV_FILE changed a --restart run asks
# systemd to restart UNIT if it is running (try-restart, not waited for:
# the restart's own ExecStartPre run needs the lock this run holds). A
# compactor restart is safe: offload and retention are crash-safe, and its
# segment claims are leases.
#
# Crash safety: ENV_FILE and CA_FILE are each written in full beside their
# destination and renamed over it, only when their content changed, so a
# reader sees the old file or the new one. A --restart run marks the
# restart as due (ENV_FILE.restart) before it renames and clears the mark
# once systemd has the restart, so a run killed in between is finished by
# the next one; a run without --restart clears the mark, since the service
# it runs for is about to start with the file as it is.
#
# When the CA bundle cannot be downloaded the one on disk is kept; when
# the secret cannot be read (Secrets Manager unreachable, no permission
# yet) within about a minute, ENV_FILE is kept and the run exits 0 with a
# warning. With no file to keep (first boot; /run is emptied by a reboot)
# it exits 1, and the compactor does not start: without the URI it would
# offload files into no table. A secret without a username or password
# changes nothing and exits 1. Runs are serialised (flock on ENV_FILE.lock).
set -euo pipefail
restart_unit=""
if [ "${1:-}" = "--restart" ]; then
  restart_unit=${2:?"--restart needs a unit"}
  shift 2
fi
if [ "$#" -ne 6 ]; then
  echo "usage: dlog-catalog-fetch [--restart UNIT] REGION SECRET_ID HOST:PORT/DATABASE ENV_FILE CA_FILE GROUP" >&2
  exit 2
fi
region=$1 secret=$2 endpoint=$3 env_file=$4 ca_file=$5 group=$6
ca_url="https://truststore.pki.rds.amazonaws.com/$region/$region-bundle.pem"
log() { echo "dlog-catalog-fetch: $*" >&2; }

install -d -m 0755 "$(dirname "$env_file")" "$(dirname "$ca_file")"
exec 9>"$env_file.lock"
flock 9
rm -f "$env_file".new.* "$ca_file".new.*
work=$(mktemp -d)
env_new=$(mktemp "$env_file.new.XXXXXX")
ca_new=$(mktemp "$ca_file.new.XXXXXX")
trap 'rm -rf "$work" "$env_new" "$ca_new"' EXIT

# The CA bundle first: the URI names it, so it must be on disk before the
# URI is. Every run, so that a bundle RDS extends reaches the node; the
# compactor reads it at each new connection.
if curl -fsS --proto '=https' --proto-redir '=https' --tlsv1.2 --retry 3 --retry-delay 2 \
  --connect-timeout 5 --max-time 30 -o "$ca_new" "$ca_url" 2>"$work/curl.err" &&
  grep -q -e '-----BEGIN CERTIFICATE-----' "$ca_new" && openssl x509 -noout -in "$ca_new" 2>/dev/null; then
  if ! cmp -s "$ca_new" "$ca_file"; then
    chmod 0644 "$ca_new"
    mv -f "$ca_new" "$ca_file"
    log "updated $ca_file from $ca_url"
  fi
elif [ -s "$ca_file" ]; then
  log "cannot download $ca_url; keeping $ca_file: $(head -c 300 "$work/curl.err")"
else
  log "cannot download $ca_url and there is no $ca_file yet: $(head -c 300 "$work/curl.err")"
  exit 1
fi

# Bounded, like dlog-tls-fetch: a black-holed endpoint must not hold the
# compactor's start for minutes.
if ! AWS_MAX_ATTEMPTS=3 timeout 60 aws secretsmanager get-secret-value --region "$region" --secret-id "$secret" \
  --query SecretString --output text --cli-connect-timeout 5 --cli-read-timeout 10 \
  >"$work/secret.json" 2>"$work/aws.err"; then
  if [ -s "$env_file" ]; then
    log "cannot read $secret; keeping $env_file: $(head -c 300 "$work/aws.err")"
    exit 0
  fi
  log "cannot read $secret and there is no $env_file yet: $(head -c 300 "$work/aws.err")"
  exit 1
fi

# Percent-encoded but for A-Z a-z 0-9 - _ . ~: jq 1.6 (Debian 12) keeps
# ! * ' ( ) as they are, so those are encoded here. Nothing inside the
# quotes is then special to systemd's environment files or to a shell.
encoded() {
  jq -er --arg f "$1" '.[$f] | select(type == "string" and length > 0) | @uri
    | gsub("!"; "%21") | gsub("\\*"; "%2A") | gsub("\u0027"; "%27") | gsub("\\("; "%28") | gsub("\\)"; "%29")' \
    "$work/secret.json" 2>/dev/null
}
if ! user=$(encoded username) || ! password=$(encoded password); then
  log "secret $secret has no username and password; $env_file left as it is"
  exit 1
fi
printf "DLOG_COMPACTOR__ICEBERG_CATALOG='postgres://%s:%s@%s?sslmode=verify-full&sslrootcert=%s'\\n" \
  "$user" "$password" "$endpoint" "$ca_file" >"$env_new"

if [ -z "$restart_unit" ]; then
  rm -f "$env_file.restart"
fi
if ! cmp -s "$env_new" "$env_file"; then
  chmod 0640 "$env_new"
  chown "root:$group" "$env_new"
  if [ -n "$restart_unit" ]; then
    : >"$env_file.restart"
  fi
  mv -f "$env_new" "$env_file"
  log "updated $env_file from $secret"
fi
if [ -n "$restart_unit" ] && [ -e "$env_file.restart" ]; then
  systemctl --no-block try-restart "$restart_unit"
  rm -f "$env_file.restart"
  log "the catalog URI changed: $restart_unit restarts if it runs"
fi
