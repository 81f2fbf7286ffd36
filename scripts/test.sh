#!/bin/sh
# Every test: installs what the tests need beyond Rust (Debian's `chromium`
# for the status page test, `redis-server` for the shared-ledger tests,
# `haproxy` for the PROXY protocol tests),
# checks they run, starts one Redis on a random loopback port with
# persistence off for the tests (INDEXER_SESSIONS_REDIS_URL), then runs
# `cargo test --all-features`. Extra arguments go to cargo test.
#
#   scripts/test.sh
#   scripts/test.sh --test observability
set -eu
cd "$(dirname "$0")/.."

missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -x /usr/bin/redis-server ] || missing="$missing redis-server"
[ -x /usr/sbin/haproxy ] || missing="$missing haproxy"
if [ -n "$missing" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: missing:$missing, and apt-get is not available; install them" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y $missing
fi
/usr/bin/chromium --headless --no-sandbox --version >/dev/null 2>&1 || {
    echo "error: /usr/bin/chromium does not run" >&2
    exit 1
}
/usr/bin/redis-server --version >/dev/null 2>&1 || {
    echo "error: /usr/bin/redis-server does not run" >&2
    exit 1
}

/usr/sbin/haproxy -v >/dev/null 2>&1 || {
    echo "error: /usr/sbin/haproxy does not run" >&2
    exit 1
}

# One Redis for the run; the tests that stop and restart Redis start their own.
redis_dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
    || shuf -i 20000-60000 -n 1)
/usr/bin/redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$redis_dir" --daemonize yes --pidfile "$redis_dir/redis.pid" --logfile "$redis_dir/redis.log"
cleanup() {
    if [ -f "$redis_dir/redis.pid" ]; then
        pid=$(cat "$redis_dir/redis.pid")
        kill "$pid" 2>/dev/null || true
        # Wait for it to exit before removing its directory.
        n=0
        while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 100 ]; do
            n=$((n + 1))
            sleep 0.05
        done
    fi
    rm -rf "$redis_dir" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
i=0
until /usr/bin/redis-cli -p "$port" ping >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 50 ]; then
        echo "error: redis-server did not start on port $port" >&2
        cat "$redis_dir/redis.log" >&2 || true
        exit 1
    fi
    sleep 0.1
done
export INDEXER_SESSIONS_REDIS_URL="redis://127.0.0.1:$port/"
status=0
cargo test --all-features "$@" || status=$?
cleanup
trap - EXIT
exit "$status"
