#!/usr/bin/env bash
# Runs the rendered dlog-etcd-start (tests/render_templates.py, scenarios
# t-x-new, t-x-existing, t-y) against a real etcd on loopback addresses, and
# the guide's snapshot-restore runbook:
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
# Usage: etcd_start_test.sh RENDERED_DIR. Needs etcd, etcdctl and jq.
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
X=http://127.0.0.21:23791
Y=http://127.0.0.22:23792
passed=0
failed=0

ok() {
  echo "etcd-start-test: ok    $1"
  passed=$((passed + 1))
}
bad() {
  echo "etcd-start-test: FAIL  $1" >&2
  failed=$((failed + 1))
}

# member SCENARIO NAME: a copy of the scenario's start script that reads
# $work/NAME.env, with data and WAL under $work/NAME.
member() {
  local scenario=$1 name=$2
  mkdir -p "$work/$name/data" "$work/$name/wal"
  chmod 0700 "$work/$name/data" "$work/$name/wal"
  printf 'ETCDCTL_API=3\nETCD_MEMBER=%s\nETCD_DATA_DIR=%s\nETCD_WAL_DIR=%s\n' \
    "$name" "$work/$name/data" "$work/$name/wal" >"$work/$name.env"
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

y=$(member t-y ty)
refused "empty member that is not in the member list: refused" "$y" "is not a member"

etcdctl --endpoints "$X" member add ty --peer-urls=http://127.0.0.22:23802 >/dev/null
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
  --name tx --initial-advertise-peer-urls http://127.0.0.21:23801 \
  --initial-cluster tx=http://127.0.0.21:23801 \
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

echo "etcd start guard and restore: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
