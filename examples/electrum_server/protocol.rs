//! Electrum protocol versions: negotiation (`server.version`) and which
//! methods each version offers, as ElectrumX 2.0 has them.
//!
//! | version | adds | removes |
//! | --- | --- | --- |
//! | 1.4 | the base protocol | |
//! | 1.4.2 | `blockchain.scripthash.unsubscribe` | |
//! | 1.6 | `blockchain.block.headers` answers an array of headers; `blockchain.transaction.broadcast_package`, `mempool.get_info` | `blockchain.relayfee` |
//! | 1.7 | `blockchain.outpoint.*`, `blockchain.scriptpubkey.*`, `blockchain.transaction.testmempoolaccept`, `mempool.recent`; `server.ping` takes `pong_len`/`data` and may come as a notification; `server.features` drops `hash_function` | `blockchain.scripthash.*` |
//!
//! (1.5 is a version number nothing was added at: a client asking for it
//! gets it, with 1.4.2's methods.)

use std::fmt;

/// A protocol version, `major.minor.patch` (`1.4` is `1.4.0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32, pub u32, pub u32);

/// The oldest version served.
pub const MIN: Version = Version(1, 4, 0);
/// The newest version served.
pub const MAX: Version = Version(1, 7, 0);
/// What an HTTP session speaks (HTTP has no `server.version`): the newest
/// version that still has the `blockchain.scripthash.*` methods.
pub const HTTP: Version = Version(1, 6, 0);

impl Version {
    /// Parses `1.4`, `1.4.2`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.trim().split('.').map(|part| part.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = match parts.next() {
            None => 0,
            Some(patch) => patch?,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Version(major, minor, patch))
    }
}

impl fmt::Display for Version {
    /// `1.4`, or `1.4.2` when the patch is not 0 (as ElectrumX writes it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.2 {
            0 => write!(f, "{}.{}", self.0, self.1),
            patch => write!(f, "{}.{}.{patch}", self.0, self.1),
        }
    }
}

/// The version to speak with a client that speaks `client_min` to
/// `client_max`: the highest both speak, or `None` when the ranges do not
/// meet.
pub fn negotiate(client_min: Version, client_max: Version) -> Option<Version> {
    let version = client_max.min(MAX);
    (version >= client_min.max(MIN)).then_some(version)
}

/// Whether `version` offers `method` (as a request).
pub fn offers(method: &str, version: Version) -> bool {
    let v1_4_2 = Version(1, 4, 2);
    let v1_6 = Version(1, 6, 0);
    let v1_7 = Version(1, 7, 0);
    match method {
        "blockchain.scripthash.get_balance"
        | "blockchain.scripthash.get_history"
        | "blockchain.scripthash.get_mempool"
        | "blockchain.scripthash.listunspent"
        | "blockchain.scripthash.subscribe" => version < v1_7,
        "blockchain.scripthash.unsubscribe" => v1_4_2 <= version && version < v1_7,
        "blockchain.transaction.broadcast_package" | "mempool.get_info" => version >= v1_6,
        "blockchain.relayfee" => version < v1_6,
        "blockchain.transaction.testmempoolaccept"
        | "blockchain.outpoint.subscribe"
        | "blockchain.outpoint.get_status"
        | "blockchain.outpoint.unsubscribe"
        | "blockchain.scriptpubkey.get_balance"
        | "blockchain.scriptpubkey.get_history"
        | "blockchain.scriptpubkey.get_mempool"
        | "blockchain.scriptpubkey.listunspent"
        | "blockchain.scriptpubkey.subscribe"
        | "blockchain.scriptpubkey.unsubscribe"
        | "mempool.recent" => version >= v1_7,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_order_and_print_as_electrumx_writes_them() {
        assert_eq!(Version::parse("1.4"), Some(Version(1, 4, 0)));
        assert_eq!(Version::parse(" 1.4.2 "), Some(Version(1, 4, 2)));
        for bad in ["", "1", "1.", "1.4.2.1", "a.b", "1.-4"] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
        assert!(Version(1, 4, 2) < Version(1, 5, 0));
        assert_eq!(Version(1, 4, 0).to_string(), "1.4");
        assert_eq!(Version(1, 4, 2).to_string(), "1.4.2");
    }

    #[test]
    fn negotiation_takes_the_highest_common_version() {
        let v = |text| Version::parse(text).unwrap();
        assert_eq!(negotiate(v("1.4"), v("1.4")), Some(v("1.4")));
        assert_eq!(negotiate(v("1.4"), v("1.6")), Some(v("1.6")));
        assert_eq!(negotiate(v("1.4"), v("2.0")), Some(v("1.7")));
        assert_eq!(negotiate(v("1.7"), v("1.7")), Some(v("1.7")));
        assert_eq!(negotiate(v("1.2"), v("1.4.2")), Some(v("1.4.2")));
        assert_eq!(negotiate(v("1.8"), v("2.0")), None);
        assert_eq!(negotiate(v("1.0"), v("1.3")), None);
    }

    #[test]
    fn methods_come_and_go_with_their_versions() {
        let v = |text| Version::parse(text).unwrap();
        assert!(offers("blockchain.scripthash.subscribe", v("1.6")));
        assert!(!offers("blockchain.scripthash.subscribe", v("1.7")));
        assert!(!offers("blockchain.scripthash.unsubscribe", v("1.4")));
        assert!(offers("blockchain.scripthash.unsubscribe", v("1.4.2")));
        assert!(offers("blockchain.relayfee", v("1.5")));
        assert!(!offers("blockchain.relayfee", v("1.6")));
        assert!(!offers("mempool.get_info", v("1.5")));
        assert!(offers("mempool.get_info", v("1.7")));
        assert!(!offers("blockchain.outpoint.subscribe", v("1.6")));
        assert!(offers("blockchain.scriptpubkey.listunspent", v("1.7")));
        assert!(offers("server.ping", v("1.4")));
    }
}
