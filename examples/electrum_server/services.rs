//! The Electrum listeners the server runs ("services", as ElectrumX calls
//! them): each a kind of connection on an address, all serving sessions of
//! the one session manager.
//!
//! Given with one flag per kind (`--listen`, `--tls`, `--ws`, `--wss`,
//! `--http`, each repeatable), or as ElectrumX's `SERVICES` list
//! ([`parse_list`]): `tcp://127.0.0.1:50001,ssl://:50002,wss://[::1]:50004`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use indexer_sessions::TransportKind;

/// A kind of Electrum listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    /// Newline-delimited JSON-RPC over plain TCP.
    Tcp,
    /// Newline-delimited JSON-RPC over TLS (what wallets call SSL, `:s`).
    Ssl,
    /// JSON-RPC in WebSocket text messages, one message per JSON-RPC message.
    Ws,
    /// WebSocket over TLS.
    Wss,
    /// JSON-RPC over HTTP: `POST` a request or batch, or `GET /v1/METHOD?params=[…]`.
    Http,
}

impl ServiceKind {
    /// Every kind, in the order listeners are reported.
    pub const ALL: [ServiceKind; 5] = [
        ServiceKind::Tcp,
        ServiceKind::Ssl,
        ServiceKind::Ws,
        ServiceKind::Wss,
        ServiceKind::Http,
    ];

    /// The kind's name in `SERVICES` (`tcp`, `ssl`, `ws`, `wss`, `http`).
    pub fn protocol(self) -> &'static str {
        match self {
            ServiceKind::Tcp => "tcp",
            ServiceKind::Ssl => "ssl",
            ServiceKind::Ws => "ws",
            ServiceKind::Wss => "wss",
            ServiceKind::Http => "http",
        }
    }

    /// The kind its sessions are reported as.
    pub fn transport(self) -> TransportKind {
        match self {
            ServiceKind::Tcp => TransportKind::Tcp,
            ServiceKind::Ssl => TransportKind::Ssl,
            ServiceKind::Ws => TransportKind::Ws,
            ServiceKind::Wss => TransportKind::Wss,
            ServiceKind::Http => TransportKind::Http,
        }
    }

    /// Whether its connections start with a TLS handshake.
    pub fn is_tls(self) -> bool {
        matches!(self, ServiceKind::Ssl | ServiceKind::Wss)
    }

    fn from_protocol(name: &str) -> Option<Self> {
        ServiceKind::ALL
            .into_iter()
            .find(|kind| kind.protocol().eq_ignore_ascii_case(name))
    }
}

/// One listener: a kind of connection on an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// What its connections speak.
    pub kind: ServiceKind,
    /// Where it listens (port 0: any free port, reported once bound).
    pub addr: SocketAddr,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.kind.protocol(), self.addr)
    }
}

/// One entry of a `SERVICES` list: a listener, or `rpc://` (the admin
/// listener, as ElectrumX lists it among its services).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// An Electrum listener.
    Service(Service),
    /// The admin RPC listener; `None` (a bare `rpc://`) keeps its address.
    Rpc(Option<SocketAddr>),
}

/// Parses ElectrumX's `SERVICES`: comma-separated `PROTOCOL://HOST:PORT`,
/// where PROTOCOL is `tcp`, `ssl`, `ws`, `wss`, `http` or `rpc`, HOST is an
/// IP address (IPv6 in brackets), `localhost`, or empty for every IPv4
/// interface, and `rpc://` alone keeps the admin listener's address.
///
/// # Errors
/// A message naming the entry and what is wrong with it.
pub fn parse_list(list: &str) -> Result<Vec<Entry>, String> {
    let entries: Vec<Entry> = list
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(parse_entry)
        .collect::<Result<_, _>>()?;
    if !entries.iter().any(|entry| matches!(entry, Entry::Service(_))) {
        return Err(format!(
            "{list:?} names no Electrum service (tcp, ssl, ws, wss or http)"
        ));
    }
    Ok(entries)
}

fn parse_entry(entry: &str) -> Result<Entry, String> {
    let (protocol, address) = entry
        .split_once("://")
        .ok_or_else(|| format!("{entry:?} is not PROTOCOL://HOST:PORT, e.g. ssl://127.0.0.1:50002"))?;
    if protocol.eq_ignore_ascii_case("rpc") {
        if address.is_empty() {
            return Ok(Entry::Rpc(None));
        }
        return address_of(address)
            .map(|addr| Entry::Rpc(Some(addr)))
            .map_err(|why| format!("{entry:?}: {why}"));
    }
    let kind = ServiceKind::from_protocol(protocol).ok_or_else(|| {
        format!("{entry:?}: unknown protocol {protocol:?} (expected tcp, ssl, ws, wss, http or rpc)")
    })?;
    let addr = address_of(address).map_err(|why| format!("{entry:?}: {why}"))?;
    Ok(Entry::Service(Service { kind, addr }))
}

/// `HOST:PORT` with HOST an IP address, `[IPv6]`, `localhost` or empty.
fn address_of(address: &str) -> Result<SocketAddr, String> {
    let address = address.trim_end_matches('/');
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = address
        .rsplit_once(':')
        .ok_or("expected HOST:PORT, e.g. 127.0.0.1:50001, [::1]:50001 or :50001")?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number"))?;
    let ip = match host {
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| {
                format!("{other:?} is not an IP address (host names other than localhost are not looked up)")
            })?,
    };
    Ok(SocketAddr::new(ip, port))
}
