#!/usr/bin/env bash
# Memory per connection of examples/electrum_server (see examples/connection_memory.rs):
# the server's RSS growth over N idle connections, each subscribed to headers
# and 5 scripthashes. Raises the open-files limit as far as the hard limit
# allows (20,000 connections need about 20,100 descriptors in the server).
#
#   scripts/connection_memory.sh                        # 2,000 and 20,000 connections
#   scripts/connection_memory.sh --connections 500,5000
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --features tokio --example electrum_server --example connection_memory
exec target/release/examples/connection_memory --server target/release/examples/electrum_server "$@"
