//! Small value types shared by the host traits and the manager.

use ipnetwork::IpNetwork;
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

/// Writes `bytes` as lowercase hex, in the order given.
pub(crate) fn write_hex(f: &mut fmt::Formatter<'_>, bytes: impl IntoIterator<Item = u8>) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// Parses hex into exactly `N` bytes; `None` on a wrong length or a non-hex digit.
pub(crate) fn parse_hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(out)
}

pub(crate) fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes a hex string of any even length into bytes.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| Some((hex_digit(pair[0])? << 4) | hex_digit(pair[1])?))
        .collect()
}

/// Encodes bytes as lowercase hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = vec![0u8; bytes.len() * 2];
    let words = bytes.chunks_exact(4);
    let tail = words.remainder();
    let mut digits = out.chunks_exact_mut(8);
    for (eight, word) in digits.by_ref().zip(words) {
        eight.copy_from_slice(&hex_of_word([word[0], word[1], word[2], word[3]]));
    }
    for (pair, b) in digits.into_remainder().chunks_exact_mut(2).zip(tail) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
    // Only ASCII hex digits were written.
    String::from_utf8(out).unwrap_or_default()
}

/// The lowercase hex of four bytes, in order, computed in one 64-bit word
/// (each nibble spread to a byte, then `'0'` added, and `'a' − '0' − 10`
/// more where the nibble is 10 or more) rather than by eight table reads.
#[inline]
pub(crate) fn hex_of_word(bytes: [u8; 4]) -> [u8; 8] {
    const LANES: u64 = 0x0101_0101_0101_0101;
    let x = u64::from(u32::from_be_bytes(bytes));
    // Each byte to the low half of its own 16-bit lane.
    let x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    let x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    // High nibble to the lane's high byte, low nibble to its low byte.
    let nibbles = ((x >> 4) & 0x000F_000F_000F_000F) << 8 | (x & 0x000F_000F_000F_000F);
    // Bit 4 of `nibble + 6` is set exactly for 10..=15; no byte carries.
    let letters = ((nibbles + 6 * LANES) >> 4) & LANES;
    (nibbles + b'0' as u64 * LANES + letters * u64::from(b'a' - b'0' - 10)).to_be_bytes()
}

/// Length in bytes of a [`HashX`], as in ElectrumX.
pub const HASHX_LEN: usize = 11;

/// The index key of a script: the first [`HASHX_LEN`] bytes of its SHA-256
/// script hash, in internal (not reversed) byte order.
///
/// ```
/// use indexer_sessions::HashX;
/// let scripthash = [7u8; 32];
/// assert_eq!(HashX::from_scripthash(&scripthash).as_bytes(), &[7u8; 11]);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HashX(pub [u8; HASHX_LEN]);

impl HashX {
    /// The hashX of a 32-byte script hash (internal byte order).
    pub fn from_scripthash(scripthash: &[u8; 32]) -> Self {
        let mut out = [0u8; HASHX_LEN];
        out.copy_from_slice(&scripthash[..HASHX_LEN]);
        HashX(out)
    }

    /// The hashX of an Electrum scripthash string (64 hex digits, reversed
    /// byte order as clients send it); `None` if it is not valid hex of that length.
    pub fn from_scripthash_hex(text: &str) -> Option<Self> {
        let mut bytes: [u8; 32] = parse_hex_array(text)?;
        bytes.reverse();
        Some(Self::from_scripthash(&bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; HASHX_LEN] {
        &self.0
    }
}

impl fmt::Debug for HashX {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashX(")?;
        write_hex(f, self.0)?;
        f.write_str(")")
    }
}

macro_rules! hash32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Stored in internal byte order (as hashed); `Display` and
        /// [`Self::from_hex`] use the reversed order Electrum clients show.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Parses the reversed (display) hex form; `None` unless it is 64 hex digits.
            pub fn from_hex(text: &str) -> Option<Self> {
                let mut bytes: [u8; 32] = parse_hex_array(text)?;
                bytes.reverse();
                Some($name(bytes))
            }

            /// The reversed (display) hex form.
            pub fn to_hex(&self) -> String {
                self.to_string()
            }

            /// The raw bytes in internal order.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, self.0.iter().rev().copied())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }
    };
}

hash32!(
    /// A transaction id (double SHA-256 of the non-witness serialisation).
    TxHash
);
hash32!(
    /// A block hash (double SHA-256 of the 80-byte header).
    BlockHash
);

/// A block height.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Height(pub u32);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The chain tip: its height and block hash. Caches are invalidated when the
/// *hash* changes, so a reorg to a block at the same height is seen.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Tip {
    /// Height of the tip block.
    pub height: Height,
    /// Hash of the tip block.
    pub hash: BlockHash,
}

/// A unique, never reused identifier of a session within one manager.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How a client is connected; shown in admin tables (ElectrumX's flag letter).
///
/// Non-exhaustive: new kinds of connection may be added in a minor release.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum TransportKind {
    /// Plain TCP.
    Tcp,
    /// TCP with TLS.
    Ssl,
    /// WebSocket.
    Ws,
    /// WebSocket over TLS.
    Wss,
    /// HTTP JSON-RPC: requests and replies, no notifications (there is no
    /// way to push them), one session per HTTP connection.
    Http,
    /// The operator's local RPC interface.
    Rpc,
    /// Anything else.
    Other,
}

impl TransportKind {
    /// ElectrumX's one-letter flag for the kind (`T`, `S`, `W`, `X`, `R`,
    /// `O`), and `H` for HTTP, which ElectrumX does not serve.
    pub fn flag(self) -> char {
        match self {
            TransportKind::Tcp => 'T',
            TransportKind::Ssl => 'S',
            TransportKind::Ws => 'W',
            TransportKind::Wss => 'X',
            TransportKind::Http => 'H',
            TransportKind::Rpc => 'R',
            TransportKind::Other => 'O',
        }
    }
}

/// Why the manager closed (or asked the host to close) a session.
///
/// Two reasons are equal when they are the same variant and, for
/// [`DisconnectReason::TransportError`], the same error (not merely the
/// same text).
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum DisconnectReason {
    /// No complete message received within the session timeout.
    Stale,
    /// The session (or its group) used more than the hard cost limit.
    ExcessiveCost,
    /// A notification could not be delivered within `max_send_delay`.
    SendTimeout,
    /// An operator asked for it.
    Admin,
    /// The session's network was banned.
    Banned,
    /// The manager is shutting down.
    Shutdown,
    /// The host's transport failed; the error is the transport's own
    /// (serialized as its text).
    TransportError(
        #[cfg_attr(feature = "serde", serde(serialize_with = "serialize_display"))]
        crate::error::SharedHostError,
    ),
}

impl PartialEq for DisconnectReason {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (DisconnectReason::TransportError(a), DisconnectReason::TransportError(b)) => {
                std::sync::Arc::ptr_eq(a, b)
            }
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl Eq for DisconnectReason {}

#[cfg(feature = "serde")]
fn serialize_display<T: fmt::Display + ?Sized, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::Stale => f.write_str("stale: idle past the session timeout"),
            DisconnectReason::ExcessiveCost => f.write_str("excessive resource usage"),
            DisconnectReason::SendTimeout => f.write_str("client stopped reading notifications"),
            DisconnectReason::Admin => f.write_str("disconnected by the operator"),
            DisconnectReason::Banned => f.write_str("network banned"),
            DisconnectReason::Shutdown => f.write_str("server shutting down"),
            DisconnectReason::TransportError(e) => write!(f, "transport error: {e}"),
        }
    }
}

/// What the manager tells a client, typed (the host encodes it as JSON-RPC).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Notification {
    /// `blockchain.headers.subscribe`: a new tip header.
    Header {
        /// Height of the header.
        height: Height,
        /// The 80-byte raw header.
        header: Vec<u8>,
    },
    /// `blockchain.scripthash.subscribe`: the status of a subscribed script changed.
    ScriptHashStatus {
        /// The scripthash string exactly as the client subscribed with it.
        alias: String,
        /// The new status (lowercase hex), `None` for no history.
        status: Option<String>,
    },
}

/// A notification of Electrum protocol 1.7, sent through
/// [`crate::Transport::send_extended`]: kept apart from [`Notification`] so
/// that a host speaking protocols 1.4 to 1.6 (which never subscribes by
/// scriptPubKey or to outpoints, nor turns on noise) needs no change.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ExtendedNotification {
    /// `blockchain.scriptpubkey.subscribe`: the status of a script
    /// subscribed by [`crate::SessionHandle::subscribe_scriptpubkey`] changed.
    /// The host writes it on the wire: ElectrumX sends `[scripthash,
    /// status]` (the scripthash from [`crate::scripthash_of_scriptpubkey`]),
    /// and the Electrum wallet reads it so.
    ScriptPubKeyStatus {
        /// The scriptPubKey hex exactly as the client subscribed with it.
        script: String,
        /// The new status (lowercase hex), `None` for no history.
        status: Option<String>,
    },
    /// `blockchain.outpoint.subscribe`: the status of a subscribed outpoint
    /// changed. Params: `[tx_hash, txout_idx, status]`, the status as
    /// [`OutpointStatus`] describes it.
    OutpointStatus {
        /// The outpoint (its `txid` shown as Electrum shows txids).
        outpoint: OutPoint,
        /// Its new status.
        status: OutpointStatus,
    },
    /// `server.ping` sent as a notification, as noise against traffic
    /// analysis ([`crate::NoisePolicy`]). Params: one string of `padding`
    /// characters (the reference server sends 128 zeros), so the message is
    /// about as long as a script status notification.
    Ping {
        /// Characters of padding in the ping's one parameter.
        padding: usize,
    },
}

/// A transaction output: the transaction and the output's index in it.
///
/// ```
/// use indexer_sessions::OutPoint;
/// let txid = "ef1d870d24c85b89d92ad50f4631026f585d6a34e972eaf427475e5d60acf3a3";
/// let outpoint = OutPoint::parse(txid, 1).unwrap();
/// assert_eq!(outpoint.to_string(), format!("{txid}:1"));
/// assert!(OutPoint::parse(txid, -1).is_err());
/// assert!(OutPoint::parse(txid, 1 << 32).is_err());
/// assert!(OutPoint::parse("zz", 0).is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Debug)]
pub struct OutPoint {
    /// The transaction that created the output.
    pub txid: TxHash,
    /// The output's index in that transaction.
    pub vout: u32,
}

impl OutPoint {
    /// An outpoint from a client's `tx_hash` (64 hex digits, display order)
    /// and `txout_idx`.
    ///
    /// # Errors
    /// [`crate::ParamError::NotHex`] or [`crate::ParamError::Length`] for a
    /// malformed `tx_hash`; [`crate::ParamError::IndexOutOfRange`] for an
    /// index below 0 or above `u32::MAX`.
    pub fn parse(tx_hash: &str, txout_idx: i64) -> Result<Self, crate::error::ParamError> {
        let txid = parse_txid("tx_hash", tx_hash)?;
        let vout = u32::try_from(txout_idx).map_err(|_| crate::error::ParamError::IndexOutOfRange {
            param: "txout_idx",
            index: txout_idx,
        })?;
        Ok(OutPoint { txid, vout })
    }
}

impl fmt::Display for OutPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.txid, self.vout)
    }
}

/// Parses a txid in display order, naming `param` in the error.
pub(crate) fn parse_txid(param: &'static str, text: &str) -> Result<TxHash, crate::error::ParamError> {
    if text.len() != 64 {
        return Err(crate::error::ParamError::Length {
            param,
            expected: 64,
            found: text.len(),
        });
    }
    TxHash::from_hex(text).ok_or(crate::error::ParamError::NotHex { param })
}

/// The transaction that spent an outpoint, in an [`OutpointStatus`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct OutpointSpender {
    /// The spending transaction (`spender_txhash`).
    pub txid: TxHash,
    /// Its height (`spender_height`): the confirming block's, or for a
    /// mempool transaction −1 when it spends unconfirmed outputs, else 0.
    pub height: i64,
}

/// The status of an outpoint, as `blockchain.outpoint.subscribe` and
/// `get_status` return it and its notifications carry it. As JSON:
///
/// - `{}` when the output never existed in the chain nor the mempool
///   (`funder_height` is `None`);
/// - `{"funder_height": h}` while unspent;
/// - `{"funder_height": h, "spender_txhash": txid, "spender_height": s}`
///   once spent.
///
/// Heights follow the script-history convention: a block height when
/// confirmed; for a mempool transaction −1 when it spends unconfirmed
/// outputs, else 0.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct OutpointStatus {
    /// Height of the transaction that created the output; `None` when it
    /// never existed.
    pub funder_height: Option<i64>,
    /// The transaction that spent it, if any (never set without
    /// `funder_height`).
    pub spender: Option<OutpointSpender>,
}

impl OutpointStatus {
    /// Whether the status is `{}`: the output never existed.
    pub fn is_unknown(&self) -> bool {
        self.funder_height.is_none()
    }

    /// Whether the status involves the mempool (a height ≤ 0): such a
    /// status is checked again whenever the tip changes.
    pub fn involves_mempool(&self) -> bool {
        self.funder_height.is_some_and(|h| h <= 0) || self.spender.is_some_and(|s| s.height <= 0)
    }
}

/// An outpoint's confirmed state, as [`crate::Db::outpoint`] reads it: the
/// output exists in the chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ConfirmedOutpoint {
    /// Height of the block that confirmed the transaction creating it.
    pub height: Height,
    /// The confirmed transaction that spent it, if any.
    pub spender: Option<ConfirmedSpender>,
}

/// A confirmed spender, in a [`ConfirmedOutpoint`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ConfirmedSpender {
    /// The spending transaction.
    pub txid: TxHash,
    /// Height of the block that confirmed it.
    pub height: Height,
}

/// An outpoint's state in the mempool, as [`crate::Mempool::outpoint`]
/// reads it. The default is "the mempool knows nothing of it".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct MempoolOutpoint {
    /// Set when the transaction creating the output is in the mempool
    /// (and has an output at that index).
    pub funder: Option<MempoolFunder>,
    /// Set when a mempool transaction spends the output.
    pub spender: Option<MempoolSpender>,
}

/// The mempool transaction that created an outpoint, in a [`MempoolOutpoint`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MempoolFunder {
    /// Whether it spends outputs of other unconfirmed transactions
    /// (its height is then −1 instead of 0).
    pub has_unconfirmed_inputs: bool,
}

/// The mempool transaction that spends an outpoint, in a [`MempoolOutpoint`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MempoolSpender {
    /// The spending transaction.
    pub txid: TxHash,
    /// Whether it spends outputs of other unconfirmed transactions
    /// (its height is then −1 instead of 0).
    pub has_unconfirmed_inputs: bool,
}

/// Longest scriptPubKey accepted, in bytes (the consensus limit on a
/// script that can be spent): it bounds what a subscription by script
/// stores.
pub const MAX_SCRIPT_LEN: usize = 10_000;

/// The Electrum scripthash (64 hex digits: the SHA-256 of the script, in
/// reversed byte order) of the scriptPubKey `script_hex`, as a client of
/// protocol 1.7 sends it to the `blockchain.scriptpubkey.*` methods. A host
/// serves `get_balance`, `get_history`, `get_mempool` and `listunspent` by
/// script through the scripthash methods with it
/// ([`crate::SessionHandle::history`], [`crate::SessionHandle::mempool`]).
///
/// ```
/// use indexer_sessions::scripthash_of_scriptpubkey;
/// // The scripthash Electrum documents for the P2PKH script of
/// // 1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa.
/// let script = "76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac";
/// assert_eq!(
///     scripthash_of_scriptpubkey(script).unwrap(),
///     "8b01df4e368ea28f8dc0423bcf7a4923e3a12d307c875e47a0cfbf90b5c39161",
/// );
/// assert!(scripthash_of_scriptpubkey("abc").is_err());
/// ```
///
/// # Errors
/// [`crate::ParamError::NotHex`] for odd-length or non-hex text;
/// [`crate::ParamError::TooLong`] for a script over [`MAX_SCRIPT_LEN`] bytes.
pub fn scripthash_of_scriptpubkey(script_hex: &str) -> Result<String, crate::error::ParamError> {
    let mut hash = script_sha256(script_hex)?;
    hash.reverse();
    Ok(encode_hex(&hash))
}

/// The SHA-256 of a scriptPubKey given in hex (internal byte order).
pub(crate) fn script_sha256(script_hex: &str) -> Result<[u8; 32], crate::error::ParamError> {
    use sha2::Digest;
    const PARAM: &str = "scriptpubkey";
    if script_hex.len() > 2 * MAX_SCRIPT_LEN {
        return Err(crate::error::ParamError::TooLong {
            param: PARAM,
            max: 2 * MAX_SCRIPT_LEN,
            found: script_hex.len(),
        });
    }
    let script = decode_hex(script_hex).ok_or(crate::error::ParamError::NotHex { param: PARAM })?;
    Ok(sha2::Sha256::digest(&script).into())
}

/// The peer address and kind of a connection, as given by its [`crate::Transport`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PeerInfo {
    /// Remote address.
    pub addr: SocketAddr,
    /// Transport kind.
    pub kind: TransportKind,
}

/// One confirmed transaction touching a script.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HistoryEntry {
    /// The transaction.
    pub txid: TxHash,
    /// The height of the block that confirmed it.
    pub height: Height,
}

/// One unconfirmed transaction touching a script.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MempoolEntry {
    /// The transaction.
    pub txid: TxHash,
    /// Its fee in satoshis.
    pub fee: u64,
    /// Whether it spends outputs of other unconfirmed transactions
    /// (Electrum reports it at height −1 instead of 0).
    pub has_unconfirmed_inputs: bool,
}

/// One ban.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ban {
    /// The banned network (a single address is a /32 or /128).
    pub network: IpNetwork,
    /// When it lapses; `None` for never.
    pub until: Option<Instant>,
}

/// A cost in ElectrumX's units: finite and non-negative, checked where it
/// is made, so charging one cannot fail. [`crate::cost`] holds ElectrumX's
/// per-method costs as constants.
///
/// ```
/// use indexer_sessions::{Cost, cost};
/// const LOOKUP: Cost = Cost::constant(0.5); // checked at compile time
/// assert_eq!((LOOKUP + cost::PING).get(), 0.6);
/// assert_eq!((cost::PING * 3).get(), 0.1 * 3.0);
/// assert!(Cost::new(f64::NAN).is_err());
/// assert_eq!(Cost::saturating(-3.0), Cost::ZERO);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Cost(f64);

impl Cost {
    /// No cost.
    pub const ZERO: Cost = Cost(0.0);

    /// A cost known when the program is written. In a `const` an invalid
    /// value fails to compile; elsewhere it panics, so use
    /// [`Cost::new`] for values that come from outside.
    pub const fn constant(value: f64) -> Cost {
        assert!(
            value.is_finite() && value >= 0.0,
            "a cost is finite and non-negative"
        );
        Cost(value)
    }

    /// A checked cost.
    ///
    /// # Errors
    /// [`crate::InvalidCost`] for a negative, NaN or infinite value.
    pub fn new(value: f64) -> Result<Cost, crate::error::InvalidCost> {
        if value.is_finite() && value >= 0.0 {
            Ok(Cost(value))
        } else {
            Err(crate::error::InvalidCost(value))
        }
    }

    /// A cost computed from sizes and counts, clamped: negatives and NaN
    /// become zero and anything above `f64::MAX` becomes `f64::MAX`.
    pub fn saturating(value: f64) -> Cost {
        if value.is_nan() || value <= 0.0 {
            Cost::ZERO
        } else {
            Cost(value.min(f64::MAX))
        }
    }

    /// The value.
    pub const fn get(self) -> f64 {
        self.0
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, other: Cost) -> Cost {
        Cost::saturating(self.0 + other.0)
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, other: Cost) {
        *self = *self + other;
    }
}

/// `n` times a cost (`n` requests of one kind, `n` items of a lookup).
impl std::ops::Mul<u32> for Cost {
    type Output = Cost;
    fn mul(self, n: u32) -> Cost {
        Cost::saturating(self.0 * f64::from(n))
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::ZERO, |total, cost| total + cost)
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_in_display_order() {
        let text = "ef1d870d24c85b89d92ad50f4631026f585d6a34e972eaf427475e5d60acf3a3";
        let tx = TxHash::from_hex(text).unwrap();
        assert_eq!(tx.0[0], 0xa3);
        assert_eq!(tx.to_hex(), text);
        assert!(TxHash::from_hex("zz").is_none());
        assert!(TxHash::from_hex(&text[2..]).is_none());
        assert_eq!(decode_hex("00ff").unwrap(), vec![0, 255]);
        assert!(decode_hex("0").is_none());
        assert_eq!(encode_hex(&[1, 0xab]), "01ab");
    }

    proptest::proptest! {
        /// The word-at-a-time hex is the byte-at-a-time hex, for every
        /// length (whole words and a tail).
        #[test]
        fn hex_is_each_byte_as_two_lowercase_digits(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            proptest::prop_assert_eq!(encode_hex(&bytes), expected);
        }
    }

    #[test]
    fn every_byte_value_encodes_in_each_position_of_a_word() {
        for b in 0..=255u8 {
            for at in 0..4 {
                let mut word = [0x5a; 4];
                word[at] = b;
                let expected: String = word.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(hex_of_word(word), expected.as_bytes(), "{word:?}");
            }
        }
    }

    #[test]
    fn hashx_from_scripthash_hex_reverses() {
        let mut text = String::new();
        for i in 0..32u8 {
            text.push_str(&format!("{i:02x}"));
        }
        let h = HashX::from_scripthash_hex(&text).unwrap();
        assert_eq!(h.0[0], 31);
        assert_eq!(h.0[10], 21);
    }
}
