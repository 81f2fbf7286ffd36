#!/bin/sh
# Attack soak of examples/electrum_server (see examples/attack_soak.rs):
# builds the server and the soak in release, then runs every attack in turn
# against a fresh server process. Takes about five minutes.
#
#   scripts/attack_soak.sh                    # every attack
#   scripts/attack_soak.sh --only flood --flood 200000
set -eu
cd "$(dirname "$0")/.."
cargo build --release --features tokio --example electrum_server --example attack_soak
exec target/release/examples/attack_soak --server target/release/examples/electrum_server "$@"
