//! Traffic-analysis resistance for encrypted connections (`--padding`):
//! outgoing JSON-RPC is padded with spaces so that, after a warm-up, every
//! packet is at least [`MIN_PACKET`] bytes, as ElectrumX's padded transport
//! does. An observer who sees only packet sizes (TLS hides the bytes) then
//! cannot tell a header notification from a status change or a reply.
//!
//! Pure: [`next_packet`] cuts a packet from a buffer of whole messages and
//! pads it; the connection's writer decides when (see `crate::rpc`): it
//! sends the first [`WARMUP`] bytes unpadded (the handshake's small
//! messages go out at once), then waits up to [`WAIT`] for at least
//! [`MIN_PACKET`] bytes to gather before cutting a packet.

use std::time::Duration;

/// The smallest packet sent after the warm-up.
pub const MIN_PACKET: usize = 1024;
/// Bytes sent unpadded at the start of a connection.
pub const WARMUP: usize = 1024;
/// How long the writer waits for messages to gather into a packet.
pub const WAIT: Duration = Duration::from_secs(1);

/// Where a connection pads its output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Padding {
    /// Not at all.
    #[default]
    Off,
    /// Packets of whole newline-terminated messages (TCP and TLS).
    Packets,
    /// Each message on its own (WebSocket: one message per frame).
    Messages,
}

/// Which listeners pad (`--padding`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PaddingMode {
    /// None.
    Off,
    /// The TLS ones (`ssl`, `wss`), where an observer sees only sizes.
    #[default]
    Tls,
    /// Every one but HTTP (whose replies answer one request each).
    On,
}

impl PaddingMode {
    /// How a session of `kind` pads.
    pub fn for_kind(self, kind: indexer_sessions::TransportKind) -> Padding {
        use indexer_sessions::TransportKind;
        match (self, kind) {
            (PaddingMode::Off, _) => Padding::Off,
            (_, TransportKind::Ssl) | (PaddingMode::On, TransportKind::Tcp) => Padding::Packets,
            (_, TransportKind::Wss) | (PaddingMode::On, TransportKind::Ws) => Padding::Messages,
            _ => Padding::Off,
        }
    }
}

/// The next packet cut from `buf`, a run of whole messages each ending in
/// `}\n` or `]\n`, and how many bytes of `buf` it holds.
///
/// The whole buffer is padded to the next power of two above its length
/// (at least [`MIN_PACKET`]); unless `whole` is set, when that would pad
/// more than cutting at a message boundary below half that size, only the
/// messages that fit in the half are taken (the rest wait for the next
/// packet). Padding is spaces before the last message's closing bracket,
/// which JSON ignores. `None` when `buf` does not end a message.
pub fn next_packet(buf: &[u8], whole: bool) -> Option<(Vec<u8>, usize)> {
    if !ends_a_message(buf) {
        return None;
    }
    let large = MIN_PACKET.max(1 << (usize::BITS - buf.len().leading_zeros()));
    let large_padding = large - buf.len();
    let small = MIN_PACKET.max(large / 2);
    let small_payload = buf[..small.min(buf.len())]
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map(|at| at + 1);
    let (payload, padding) = match small_payload {
        Some(payload) if !whole && small - payload < large_padding => (payload, small - payload),
        _ => (buf.len(), large_padding),
    };
    let mut packet = Vec::with_capacity(payload + padding);
    packet.extend_from_slice(&buf[..payload - 2]);
    packet.resize(payload - 2 + padding, b' ');
    packet.extend_from_slice(&buf[payload - 2..payload]);
    Some((packet, payload))
}

/// Whether `buf` ends with a message's last two bytes (`}\n` or `]\n`).
fn ends_a_message(buf: &[u8]) -> bool {
    buf.len() >= 2 && matches!(&buf[buf.len() - 2..], b"}\n" | b"]\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> Vec<u8> {
        let mut text = format!(
            "{{\"id\":1,\"result\":\"{}\"}}",
            "x".repeat(len.saturating_sub(23))
        );
        text.push('\n');
        text.into_bytes()
    }

    /// The messages in `bytes`, with padding removed.
    fn messages(bytes: &[u8]) -> Vec<serde_json::Value> {
        bytes
            .split(|&byte| byte == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(|line| serde_json::from_slice(line).expect("a padded message is still JSON"))
            .collect()
    }

    #[test]
    fn a_small_message_is_padded_to_the_minimum() {
        let buf = message(60);
        let (packet, used) = next_packet(&buf, false).unwrap();
        assert_eq!((packet.len(), used), (MIN_PACKET, buf.len()));
        assert_eq!(messages(&packet), messages(&buf));
        assert!(packet.ends_with(b"}\n"));
    }

    #[test]
    fn a_buffer_is_cut_where_padding_the_whole_would_waste_more() {
        // Two messages of about 600 bytes: the whole pads to 2048 (about
        // 850 spaces); the first alone pads to 1024 (about 425): the second
        // waits.
        let first = message(600);
        let mut buf = first.clone();
        buf.extend(message(600));
        let (packet, used) = next_packet(&buf, false).unwrap();
        assert_eq!((packet.len(), used), (1024, first.len()));
        // Told to send everything, it does.
        let (packet, used) = next_packet(&buf, true).unwrap();
        assert_eq!((packet.len(), used), (2048, buf.len()));
        assert_eq!(messages(&packet), messages(&buf));
    }

    #[test]
    fn every_packet_is_at_least_the_minimum_and_keeps_every_message() {
        for sizes in [
            &[30usize][..],
            &[30, 40, 50],
            &[1000, 30],
            &[5000],
            &[1023],
            &[2047, 10, 10],
        ] {
            let mut buf: Vec<u8> = sizes.iter().flat_map(|&size| message(size)).collect();
            let all = messages(&buf);
            let mut sent = Vec::new();
            while !buf.is_empty() {
                let (packet, used) = next_packet(&buf, false).unwrap();
                assert!(packet.len() >= MIN_PACKET, "{sizes:?}");
                assert!(packet.len().is_power_of_two(), "{sizes:?}: {}", packet.len());
                sent.extend_from_slice(&packet);
                buf.drain(..used);
            }
            assert_eq!(messages(&sent), all, "{sizes:?}");
        }
        assert_eq!(next_packet(b"{\"id\":1", false), None);
    }

    #[test]
    fn tls_listeners_pad_by_default() {
        use indexer_sessions::TransportKind::{Http, Ssl, Tcp, Ws, Wss};
        let default = PaddingMode::default();
        assert_eq!(default.for_kind(Ssl), Padding::Packets);
        assert_eq!(default.for_kind(Wss), Padding::Messages);
        assert_eq!(default.for_kind(Tcp), Padding::Off);
        assert_eq!(default.for_kind(Ws), Padding::Off);
        assert_eq!(PaddingMode::On.for_kind(Tcp), Padding::Packets);
        assert_eq!(PaddingMode::On.for_kind(Http), Padding::Off);
        assert_eq!(PaddingMode::Off.for_kind(Ssl), Padding::Off);
    }
}
