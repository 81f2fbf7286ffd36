#!/bin/sh
# Every test: installs what the tests need beyond Rust (Debian's `chromium`,
# for the status page test in tests/status_page.rs), checks it runs, then
# runs `cargo test --all-features`. Extra arguments go to cargo test.
#
#   scripts/test.sh
#   scripts/test.sh --test observability
set -eu
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: /usr/bin/chromium is missing and apt-get is not available; install Chromium" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium
fi
/usr/bin/chromium --headless --no-sandbox --version >/dev/null 2>&1 || {
    echo "error: /usr/bin/chromium does not run" >&2
    exit 1
}
exec cargo test --all-features "$@"
