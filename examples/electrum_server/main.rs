//! An Electrum server (protocol 1.4 to 1.7 over TCP, TLS, WebSocket, secure WebSocket and HTTP) on an
//! in-process regtest chain,
//! with every request going through `indexer_sessions::SessionManager`.
//!
//! ```text
//! cargo run --example electrum_server --features tokio -- --pay-to bcrt1q…:1.5
//! ```
//!
//! See `README.md` next to this file, and `--help` for every flag.

mod admin;
#[allow(dead_code)] // shared with the tests, which use more of it
mod chain;
mod cli;
mod hosts;
mod http_request;
mod http_rpc;
#[allow(dead_code)] // shared with the tests and the fuzz target, which use more of it
mod jsonrpc;
mod observe;
mod padding;
mod protocol;
mod proxy;
mod rpc;
mod server;
mod services;
mod tls;
#[allow(dead_code)] // shared with the tests, which use more of it
mod wallet;
mod websocket;

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let options = match cli::parse(std::env::args().skip(1)) {
        Ok(cli::Command::Run(options)) => *options,
        Ok(cli::Command::Help) => {
            print!("{}", cli::help());
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprint!("{message}");
            return ExitCode::from(2);
        }
    };
    init_logging(options.log_format);
    let payments = options.pay_to.clone();
    let server = match server::start(options).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let tip = server.node().tip();
    println!("regtest chain at height {} (tip {})", tip.height, tip.hash);
    for (address, sats) in &payments {
        println!(
            "paid {} BTC to {address}",
            bitcoin::Amount::from_sat(*sats).to_btc()
        );
    }
    println!("admin RPC on {}", server.admin_addr());
    #[cfg(feature = "redis")]
    if let Some(ledger) = server.redis() {
        println!(
            "sharing IP group costs and bans through Redis as node {}",
            ledger.node()
        );
    }
    if let Some(addr) = server.metrics_addr() {
        println!("Prometheus metrics on http://{addr}/metrics");
    }
    if let Some(addr) = server.status_addr() {
        println!("status page on http://{addr}/");
    }
    if let Some(fingerprint) = server.tls_fingerprint() {
        println!("tls certificate sha256 {fingerprint}");
    }
    for service in server.services() {
        println!("listening on {service}");
    }
    match tokio::signal::ctrl_c().await {
        Ok(()) => println!("shutting down"),
        Err(error) => eprintln!("cannot wait for Ctrl-C ({error}); shutting down"),
    }
    server.shutdown().await;
    ExitCode::SUCCESS
}

/// Log events to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: server::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        server::LogFormat::Text => builder.init(),
        server::LogFormat::Json => builder.json().init(),
    }
}
