// The example server's modules, declared at the root of a test crate that
// drives the server in-process: `include!("support/example_server.rs");`.
// Each test uses part of them; `support` holds the helpers that drive it.
#[allow(dead_code)]
#[path = "../../examples/electrum_server/admin.rs"]
mod admin;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/chain.rs"]
mod chain;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/cli.rs"]
mod cli;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/hosts.rs"]
mod hosts;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/http_request.rs"]
mod http_request;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/http_rpc.rs"]
mod http_rpc;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/jsonrpc.rs"]
mod jsonrpc;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/observe.rs"]
mod observe;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/padding.rs"]
mod padding;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/protocol.rs"]
mod protocol;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/proxy.rs"]
mod proxy;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/rpc.rs"]
mod rpc;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/services.rs"]
mod services;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/tls.rs"]
mod tls;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/wallet.rs"]
mod wallet;
#[allow(dead_code)]
#[path = "../../examples/electrum_server/websocket.rs"]
mod websocket;
#[allow(dead_code)] // each test binary uses part of it
#[path = "observe.rs"]
mod support;
