#!/usr/bin/env bash
# Runs the rendered dlog-etcd-start (tests/render_templates.py, scenarios
# t-x-new, t-x-existing, t-y) against a real etcd on loopback addresses, with
# TLS and client-certificate auth as the module runs it (certificates made
# here with openssl, as tls.tf makes them), and the guide's snapshot-restore
# runbook:
#
#   1. tx, empty data, no peer answers, created "existing"  -> refused
#   2. tx, empty data, no peer answers, created "new"       -> bootstraps
#   3. ty, empty data, tx answers, ty not a member          -> refused
#   4. after `etcdctl member add ty`                        -> joins, reads tx's key
#   5. ty stopped, its data wiped, still a started member   -> refused
#   6. ty with its data kept                                -> starts again
#   7. restore: snapshot of tx, restored (new token) into fresh data and WAL
#      directories, started by the same script            -> every key is back
#
# and that tx refuses plaintext clients, TLS clients without a certificate
# and clients whose certificate another CA signed, and that ty cannot join
# as a peer with a certificate of the right CA but not a member's name; and
# that a certificate replaced on disk is served without a restart.
#
# Usage: etcd_start_test.sh RENDERED_DIR. Needs etcd, etcdctl, jq, openssl.
# Only the path of /etc/dlog/etcd.env is changed in the copies it runs.
set -euo pipefail
rendered=$1
work=$(mktemp -d)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
export ETCDCTL_API=3
X=https://127.0.0.21:23791
Y=https://127.0.0.22:23792
test_name=etcd-start-test
# shellcheck source=terraform/tests/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# cert NAME CA SUBJECT [SAN]: a P-256 key and certificate NAME.pem/NAME.key
# in $work/pki signed by CA (ca or other), for server and client use.
cert() {
  local name=$1 ca=$2 subject=$3 san=${4:-IP:127.0.0.1}
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/pki/$name.key" -subj "$subject" -out "$work/pki/$name.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' "$san" >"$work/pki/$name.ext"
  openssl x509 -req -in "$work/pki/$name.csr" -CA "$work/pki/$ca.pem" -CAkey "$work/pki/$ca.key" \
    -CAcreateserial -days 2 -extfile "$work/pki/$name.ext" -out "$work/pki/$name.pem" 2>/dev/null
}
mkdir -p "$work/pki"
for ca in ca other; do
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/pki/$ca.key" -subj "/O=distributedlog/CN=test $ca" -days 2 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -out "$work/pki/$ca.pem" 2>/dev/null
done
members_san=IP:127.0.0.21,IP:127.0.0.22,IP:127.0.0.1
# The members' certificate: the common name --peer-cert-allowed-cn demands.
cert member ca "/O=distributedlog/OU=dlog-etcd/CN=etcd.t.dlog.internal" "$members_san"
# A dlog node's: same CA, same addresses, not a member's name.
cert node ca "/O=distributedlog/OU=dlog-node/CN=nodes.t.dlog.internal" "$members_san"
# Another CA's.
cert stranger other "/O=distributedlog/OU=dlog-node/CN=nodes.t.dlog.internal" "$members_san"
# This script's own etcdctl calls, as the module's etcdctl: with the member's.
export ETCDCTL_CACERT=$work/pki/ca.pem ETCDCTL_CERT=$work/pki/member.pem ETCDCTL_KEY=$work/pki/member.key

# member SCENARIO NAME [CERT]: a copy of the scenario's start script that
# reads $work/NAME.env, with data and WAL under $work/NAME, and CERT (the
# members' certificate by default) as its TLS set.
member() {
  local scenario=$1 name=$2 cert=${3:-member}
  mkdir -p "$work/$name/data" "$work/$name/wal"
  chmod 0700 "$work/$name/data" "$work/$name/wal"
  printf 'ETCDCTL_API=3\nETCD_MEMBER=%s\nETCD_DATA_DIR=%s\nETCD_WAL_DIR=%s\nETCDCTL_CACERT=%s\nETCDCTL_CERT=%s\nETCDCTL_KEY=%s\n' \
    "$name" "$work/$name/data" "$work/$name/wal" \
    "$work/pki/ca.pem" "$work/pki/$cert.pem" "$work/pki/$cert.key" >"$work/$name.env"
  sed "s|/etc/dlog/etcd.env|$work/$name.env|" \
    "$rendered/$scenario/usr/local/sbin/dlog-etcd-start" >"$work/$scenario.sh"
  echo "$work/$scenario.sh"
}

# refused WHAT SCRIPT MESSAGE: the script exits 1 at once, saying MESSAGE.
refused() {
  local what=$1 script=$2 message=$3 status=0
  timeout 20 bash "$script" >"$work/out" 2>&1 || status=$?
  if [ "$status" -eq 1 ] && grep -q -- "$message" "$work/out"; then
    ok "$what"
  else
    bad "$what: exit $status, output: $(cat "$work/out")"
  fi
}

# started WHAT SCRIPT ENDPOINT: the script runs etcd, which becomes healthy.
started() {
  local what=$1 script=$2 endpoint=$3
  bash "$script" >"$work/$(basename "$script").log" 2>&1 &
  pids+=("$!")
  last_pid=$!
  for _ in $(seq 1 40); do
    if etcdctl --endpoints "$endpoint" --dial-timeout 1s --command-timeout 2s endpoint health >/dev/null 2>&1; then
      ok "$what"
      return 0
    fi
    if ! kill -0 "$last_pid" 2>/dev/null; then
      break
    fi
    sleep 0.5
  done
  bad "$what: not healthy; log: $(cat "$work/$(basename "$script").log")"
  return 1
}

stop() {
  [ "$1" -gt 1 ] || return 0
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

x_existing=$(member t-x-existing tx)
refused "empty member, no peer answers, created existing: refused" "$x_existing" "restore the cluster from a snapshot"

x_new=$(member t-x-new tx)
started "empty member, no peer answers, created new: bootstraps" "$x_new" "$X"
x_pid=$last_pid
etcdctl --endpoints "$X" put /dlog/t/manifest one >/dev/null
etcdctl --endpoints "$X" put /dlog/t/segment two >/dev/null

# Clients: TLS with a certificate of the cluster CA, nothing else.
if env -u ETCDCTL_CACERT -u ETCDCTL_CERT -u ETCDCTL_KEY etcdctl --endpoints http://127.0.0.21:23791 \
  --dial-timeout 2s --command-timeout 3s get /dlog/t/manifest >/dev/null 2>&1; then
  bad "a plaintext client read from etcd"
else
  ok "a plaintext client is refused"
fi
if env -u ETCDCTL_CERT -u ETCDCTL_KEY etcdctl --endpoints "$X" \
  --dial-timeout 2s --command-timeout 3s get /dlog/t/manifest >/dev/null 2>&1; then
  bad "a TLS client without a certificate read from etcd"
else
  ok "a TLS client without a certificate is refused"
fi
if ETCDCTL_CERT=$work/pki/stranger.pem ETCDCTL_KEY=$work/pki/stranger.key etcdctl --endpoints "$X" \
  --dial-timeout 2s --command-timeout 3s get /dlog/t/manifest >/dev/null 2>&1; then
  bad "a client certificate of another CA read from etcd"
else
  ok "a client certificate of another CA is refused"
fi
got=$(ETCDCTL_CERT=$work/pki/node.pem ETCDCTL_KEY=$work/pki/node.key etcdctl --endpoints "$X" \
  --dial-timeout 2s --command-timeout 3s get /dlog/t/manifest --print-value-only 2>/dev/null || true)
if [ "$got" = one ]; then ok "a dlog node's certificate reads from etcd"; else bad "a dlog node's certificate read '$got'"; fi

y=$(member t-y ty)
refused "empty member that is not in the member list: refused" "$y" "is not a member"

etcdctl --endpoints "$X" member add ty --peer-urls=https://127.0.0.22:23802 >/dev/null

# A peer with the right CA but not a member's name never joins.
y_node=$(member t-y ty node)
bash "$y_node" >"$work/ty-node.log" 2>&1 &
pids+=("$!")
y_node_pid=$!
joined=false
for _ in $(seq 1 16); do
  if etcdctl --endpoints "$Y" --dial-timeout 1s --command-timeout 2s endpoint health >/dev/null 2>&1; then
    joined=true
    break
  fi
  sleep 0.5
done
if $joined; then bad "a peer with a dlog node's certificate joined the cluster"; else ok "a peer without a member's certificate name cannot join"; fi
stop "$y_node_pid"
rm -rf "$work/ty"
y=$(member t-y ty)
if started "after etcdctl member add: joins as existing" "$y" "$Y"; then
  y_pid=$last_pid
  if grep -q "initial cluster state existing" "$work/$(basename "$y").log"; then
    ok "joined with --initial-cluster-state existing"
  else
    bad "joined without --initial-cluster-state existing"
  fi
  got=$(etcdctl --endpoints "$Y" get /dlog/t/manifest --print-value-only 2>/dev/null || true)
  if [ "$got" = one ]; then ok "the joined member serves the cluster's data"; else bad "joined member read '$got'"; fi
  stop "$y_pid"
  mv "$work/ty/data" "$work/ty/data.kept"
  mv "$work/ty/wal" "$work/ty/wal.kept"
  mkdir -m 0700 "$work/ty/data" "$work/ty/wal"
  refused "empty member still listed as started: refused" "$y" "still has it as a started member"
  rm -rf "$work/ty/data" "$work/ty/wal"
  mv "$work/ty/data.kept" "$work/ty/data"
  mv "$work/ty/wal.kept" "$work/ty/wal"
  if started "member with its data: starts as it was" "$y" "$Y"; then
    y_pid=$last_pid
  fi
fi

# The restore runbook (terraform/README.md, "Restoring etcd from a
# snapshot", steps 3-4), into a fresh single-member cluster.
etcdctl --endpoints "$X" --command-timeout 20s snapshot save "$work/snapshot.db" >/dev/null 2>&1 ||
  bad "snapshot save failed"
if [ -n "${y_pid:-}" ]; then
  stop "$y_pid"
fi
stop "$x_pid"
mv "$work/tx" "$work/tx.old"
etcdctl snapshot restore "$work/snapshot.db" \
  --name tx --initial-advertise-peer-urls https://127.0.0.21:23801 \
  --initial-cluster tx=https://127.0.0.21:23801 \
  --initial-cluster-token dlog-t-restored \
  --data-dir "$work/tx/data" --wal-dir "$work/tx/wal" >/dev/null 2>&1
chmod 0700 "$work/tx/data" "$work/tx/wal"
# The restored member starts through the guard although the instance was
# created "existing" and no peer answers: its data directory holds a member.
if started "restored member starts from its restored data" "$x_existing" "$X"; then
  keys=$(etcdctl --endpoints "$X" get --prefix /dlog/t/ --keys-only | grep -c . || true)
  if [ "$keys" -eq 2 ]; then ok "every key is back after the restore"; else bad "$keys of 2 keys after the restore"; fi
  members=$(etcdctl --endpoints "$X" member list | grep -c . || true)
  if [ "$members" -eq 1 ]; then ok "the restored cluster has only its own member"; else bad "restored cluster has $members members"; fi
fi

# Rotation, as dlog-tls-fetch does it (renames over the files): the running
# member presents the new certificate to the next connection, no restart.
served_serial() {
  openssl s_client -connect 127.0.0.21:23791 -CAfile "$work/pki/ca.pem" \
    -cert "$work/pki/member.pem" -key "$work/pki/member.key" </dev/null 2>/dev/null |
    openssl x509 -noout -serial 2>/dev/null || true
}
old_serial=$(served_serial)
cert rotated ca "/O=distributedlog/OU=dlog-etcd/CN=etcd.t.dlog.internal" "$members_san"
new_serial=$(openssl x509 -noout -serial -in "$work/pki/rotated.pem")
cp "$work/pki/rotated.key" "$work/pki/member.key.new" && mv "$work/pki/member.key.new" "$work/pki/member.key"
cp "$work/pki/rotated.pem" "$work/pki/member.pem.new" && mv "$work/pki/member.pem.new" "$work/pki/member.pem"
got_serial=$(served_serial)
if [ -n "$old_serial" ] && [ "$old_serial" != "$new_serial" ] && [ "$got_serial" = "$new_serial" ] &&
  etcdctl --endpoints "$X" --command-timeout 3s get /dlog/t/manifest --print-value-only 2>/dev/null | grep -qx one; then
  ok "a rotated certificate is served to the next connection without a restart"
else
  bad "rotation: served '$old_serial', then '$got_serial'; want '$new_serial'"
fi

echo "etcd start guard and restore: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
