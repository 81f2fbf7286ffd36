//! The PROXY protocol header (versions 1 and 2), which a proxy such as
//! HAProxy (`send-proxy`, `send-proxy-v2`) sends before the client's bytes
//! to pass on the client's address.
//!
//! [`parse`] is strict and bounded: it looks at no more than a header's
//! maximum size (107 bytes for v1, 16 + 65535 for v2), says how many more
//! bytes it surely needs while the header is incomplete, and refuses
//! anything the specification does not allow. [`read`] drives it over a
//! buffered reader, taking no byte past the header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncReadExt};

/// The v2 header's first 12 bytes.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 header's first 6 bytes.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, `\r\n` included.
pub const V1_MAX: usize = 107;
/// The fixed part of a v2 header, before its addresses.
const V2_FIXED: usize = 16;

/// What a header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// The proxy relays a client: its source and the address it connected to.
    Proxied {
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// The connection is the proxy's own (v2 `LOCAL`), or its client's
    /// address is not told (v1 `UNKNOWN`, v2 `UNSPEC`): the connection's own
    /// address stands.
    Local,
}

/// The outcome of [`parse`] on the bytes received so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A complete header, `len` bytes long.
    Complete {
        /// The header.
        header: Header,
        /// Its length; what follows belongs to the client.
        len: usize,
    },
    /// The header is not complete: at least `needed` more bytes belong to it.
    Incomplete {
        /// Bytes that surely follow in the header (at least 1).
        needed: usize,
    },
}

/// Why a header is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The bytes start with neither signature.
    #[error("no PROXY protocol header")]
    Missing,
    /// A v1 header longer than 107 bytes.
    #[error("PROXY v1 header longer than {V1_MAX} bytes")]
    TooLong,
    /// A header that breaks the specification.
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    /// The connection ended before the header did.
    #[error("connection closed inside the PROXY header")]
    Truncated,
    /// The header did not arrive in time.
    #[error("no PROXY header within {0:?}")]
    TimedOut(Duration),
    /// The socket failed.
    #[error("reading the PROXY header: {0}")]
    Io(String),
}

/// Parses the header at the start of `buf`, the bytes received so far.
///
/// # Errors
/// [`ProxyError`] as soon as `buf` cannot start a valid header.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let sig = buf.len().min(V2_SIGNATURE.len());
    if buf[..sig] == V2_SIGNATURE[..sig] && !buf.is_empty() && buf[0] == b'\r' {
        return parse_v2(buf);
    }
    let prefix = buf.len().min(V1_PREFIX.len());
    if buf[..prefix] == V1_PREFIX[..prefix] {
        return parse_v1(buf);
    }
    Err(ProxyError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if window.len() >= V1_MAX {
            return Err(ProxyError::TooLong);
        }
        // The shortest header is `PROXY UNKNOWN\r\n`.
        let needed = "PROXY UNKNOWN\r\n".len().saturating_sub(window.len()).max(1);
        return Ok(Parsed::Incomplete { needed });
    };
    let len = newline + 1;
    let Some(line) = window[..newline].strip_suffix(b"\r") else {
        return Err(ProxyError::Malformed("v1 line does not end in CRLF"));
    };
    if line.len() < V1_PREFIX.len() {
        return Err(ProxyError::Malformed("v1 line too short"));
    }
    let line = std::str::from_utf8(&line[V1_PREFIX.len()..])
        .map_err(|_| ProxyError::Malformed("v1 line is not ASCII"))?;
    if !line.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(ProxyError::Malformed("v1 line has control characters"));
    }
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(Parsed::Complete {
            header: Header::Local,
            len,
        });
    }
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyError::Malformed("v1 line needs 5 fields"));
    };
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (ipv4(src)?.into(), ipv4(dst)?.into()),
        "TCP6" => (ipv6(src)?.into(), ipv6(dst)?.into()),
        _ => return Err(ProxyError::Malformed("v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Parsed::Complete {
        header: Header::Proxied {
            source: SocketAddr::new(src, port(sport)?),
            destination: SocketAddr::new(dst, port(dport)?),
        },
        len,
    })
}

fn ipv4(text: &str) -> Result<Ipv4Addr, ProxyError> {
    text.parse()
        .map_err(|_| ProxyError::Malformed("v1 TCP4 address is not IPv4"))
}

fn ipv6(text: &str) -> Result<Ipv6Addr, ProxyError> {
    text.parse()
        .map_err(|_| ProxyError::Malformed("v1 TCP6 address is not IPv6"))
}

/// A port: 1 to 5 digits, no leading zero, at most 65535.
fn port(text: &str) -> Result<u16, ProxyError> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return Err(ProxyError::Malformed("v1 port is not a decimal 0-65535"));
    }
    text.parse()
        .map_err(|_| ProxyError::Malformed("v1 port is not a decimal 0-65535"))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < V2_FIXED {
        if buf.len() > V2_SIGNATURE.len() && buf[12] >> 4 != 2 {
            return Err(ProxyError::Malformed("v2 version is not 2"));
        }
        return Ok(Parsed::Incomplete {
            needed: V2_FIXED - buf.len(),
        });
    }
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0f;
    let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if version != 2 {
        return Err(ProxyError::Malformed("v2 version is not 2"));
    }
    if command > 1 {
        return Err(ProxyError::Malformed("v2 command is neither LOCAL nor PROXY"));
    }
    if family > 3 || transport > 2 {
        return Err(ProxyError::Malformed("v2 address family or transport unknown"));
    }
    let addresses = match family {
        1 => 12,
        2 => 36,
        _ => 0,
    };
    if command == 1 && len < V2_FIXED + addresses {
        return Err(ProxyError::Malformed("v2 length too short for its addresses"));
    }
    if buf.len() < len {
        return Ok(Parsed::Incomplete {
            needed: len - buf.len(),
        });
    }
    let header = if command == 0 {
        // LOCAL: the proxy's own connection (a health check); addresses ignored.
        Header::Local
    } else {
        let a = &buf[V2_FIXED..len];
        match family {
            0 => Header::Local,
            1 | 2 if transport != 1 => {
                return Err(ProxyError::Malformed("v2 transport is not a stream"));
            }
            1 => {
                let ip = |at: usize| IpAddr::from([a[at], a[at + 1], a[at + 2], a[at + 3]]);
                let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
                Header::Proxied {
                    source: SocketAddr::new(ip(0), port(8)),
                    destination: SocketAddr::new(ip(4), port(10)),
                }
            }
            2 => {
                let ip = |at: usize| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&a[at..at + 16]);
                    IpAddr::from(octets)
                };
                let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
                Header::Proxied {
                    source: SocketAddr::new(ip(0), port(32)),
                    destination: SocketAddr::new(ip(16), port(34)),
                }
            }
            _ => return Err(ProxyError::Malformed("v2 address family is not IPv4 or IPv6")),
        }
    };
    Ok(Parsed::Complete { header, len })
}

/// Reads one header from `reader` within `limit`, taking exactly its bytes
/// (what follows stays in `reader` for the client's stream).
///
/// # Errors
/// [`ProxyError`] for a missing, malformed, truncated or late header.
pub async fn read<R: AsyncBufRead + Unpin>(reader: &mut R, limit: Duration) -> Result<Header, ProxyError> {
    let reading = async {
        let mut buf = Vec::with_capacity(V1_MAX);
        loop {
            match parse(&buf)? {
                Parsed::Complete { header, len } => {
                    debug_assert_eq!(len, buf.len());
                    return Ok(header);
                }
                Parsed::Incomplete { needed } => {
                    let start = buf.len();
                    buf.resize(start + needed, 0);
                    reader.read_exact(&mut buf[start..]).await.map_err(|error| {
                        if error.kind() == std::io::ErrorKind::UnexpectedEof {
                            ProxyError::Truncated
                        } else {
                            ProxyError::Io(error.to_string())
                        }
                    })?;
                }
            }
        }
    };
    tokio::time::timeout(limit, reading)
        .await
        .unwrap_or(Err(ProxyError::TimedOut(limit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.push(0x20 | command);
        bytes.push(family);
        bytes.extend_from_slice(&u16::try_from(addresses.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(addresses);
        bytes
    }

    fn complete(bytes: &[u8]) -> Header {
        match parse(bytes) {
            Ok(Parsed::Complete { header, len }) => {
                assert_eq!(len, bytes.len(), "the whole header and nothing else");
                header
            }
            other => panic!("{other:?} for {bytes:?}"),
        }
    }

    fn proxied(source: &str, destination: &str) -> Header {
        Header::Proxied {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    /// Every proper prefix is incomplete, never an error, and never asks for
    /// a byte past the header.
    fn prefixes_are_incomplete(bytes: &[u8]) {
        for cut in 0..bytes.len() {
            match parse(&bytes[..cut]) {
                Ok(Parsed::Incomplete { needed }) => {
                    assert!(
                        needed >= 1 && cut + needed <= bytes.len(),
                        "cut {cut}: needed {needed}"
                    );
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 50001\r\n";
        assert_eq!(complete(line), proxied("192.0.2.7:56324", "198.51.100.1:50001"));
        prefixes_are_incomplete(line);
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n";
        assert_eq!(complete(line), proxied("[2001:db8::7]:65535", "[2001:db8::1]:0"));
        prefixes_are_incomplete(line);
    }

    #[test]
    fn v1_unknown_keeps_the_connection_address() {
        assert_eq!(complete(b"PROXY UNKNOWN\r\n"), Header::Local);
        assert_eq!(
            complete(b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"),
            Header::Local
        );
    }

    #[test]
    fn v1_header_is_followed_by_the_client_bytes() {
        let mut bytes = b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\n".to_vec();
        let len = bytes.len();
        bytes.extend_from_slice(b"{\"id\":1}\n");
        assert_eq!(
            parse(&bytes),
            Ok(Parsed::Complete {
                header: proxied("192.0.2.7:1", "198.51.100.1:2"),
                len
            })
        );
    }

    #[test]
    fn v1_malformed() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 50001\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 50001 7\r\n",
            b"PROXY TCP4  192.0.2.7 198.51.100.1 56324 50001\r\n",
            b"PROXY TCP4 2001:db8::7 198.51.100.1 56324 50001\r\n",
            b"PROXY TCP6 192.0.2.7 2001:db8::1 56324 50001\r\n",
            b"PROXY TCP4 192.0.2.256 198.51.100.1 56324 50001\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 50001\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 056324 50001\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 +5 50001\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 50001\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 56324 50001\r\n",
            b"PROXY tcp4 192.0.2.7 198.51.100.1 56324 50001\r\n",
            b"PROXY \r\n",
            b"PROXY UNKNOWN\t\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 5\xff\r\n",
            b"PROXY UNKNOWN\r\r\n",
            b"PROXY\r\n",
            b"proxy UNKNOWN\r\n",
            b"{\"id\":1,\"method\":\"server.version\"}\n",
            b"GET / HTTP/1.1\r\n",
        ];
        for bytes in bad {
            assert!(parse(bytes).is_err(), "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn v1_is_bounded_at_107_bytes() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX - 2, b'x');
        line.extend_from_slice(b"\r\n");
        assert_eq!(complete(&line), Header::Local);
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX - 1, b'x');
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long), Err(ProxyError::TooLong));
        // Endless bytes without a newline: refused once 107 are in.
        let mut endless = V1_PREFIX.to_vec();
        endless.resize(500, b'9');
        assert_eq!(parse(&endless[..V1_MAX]), Err(ProxyError::TooLong));
        assert!(matches!(
            parse(&endless[..V1_MAX - 1]),
            Ok(Parsed::Incomplete { .. })
        ));
    }

    #[test]
    fn v2_ipv4_and_ipv6() {
        let ipv4 = v2(1, 0x11, &[192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0xc3, 0x51]);
        assert_eq!(complete(&ipv4), proxied("192.0.2.7:56324", "198.51.100.1:50001"));
        prefixes_are_incomplete(&ipv4);
        let mut addresses = Vec::new();
        addresses.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        addresses.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        addresses.extend_from_slice(&[0xdc, 0x04, 0xc3, 0x51]);
        let ipv6 = v2(1, 0x21, &addresses);
        assert_eq!(
            complete(&ipv6),
            proxied("[2001:db8::7]:56324", "[2001:db8::1]:50001")
        );
        prefixes_are_incomplete(&ipv6);
    }

    #[test]
    fn v2_skips_tlvs_and_leaves_the_client_bytes() {
        // The addresses, then a TLV (PP2_TYPE_NOOP, 3 bytes), inside the length.
        let mut addresses = vec![192, 0, 2, 7, 198, 51, 100, 1, 0, 1, 0, 2];
        addresses.extend_from_slice(&[0x04, 0x00, 0x03, 0, 0, 0]);
        let header = v2(1, 0x11, &addresses);
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"{\"id\":1}\n");
        assert_eq!(
            parse(&bytes),
            Ok(Parsed::Complete {
                header: proxied("192.0.2.7:1", "198.51.100.1:2"),
                len: header.len()
            })
        );
    }

    #[test]
    fn v2_local_and_unspec_keep_the_connection_address() {
        assert_eq!(complete(&v2(0, 0x00, &[])), Header::Local);
        // LOCAL may carry addresses, which are ignored.
        assert_eq!(complete(&v2(0, 0x11, &[0; 12])), Header::Local);
        assert_eq!(complete(&v2(1, 0x00, &[])), Header::Local);
    }

    #[test]
    fn v2_malformed() {
        let mut bad_version = v2(1, 0x11, &[0; 12]);
        bad_version[12] = 0x11;
        let mut bad_signature = v2(1, 0x11, &[0; 12]);
        bad_signature[11] = b'X';
        let cases = [
            bad_version,
            bad_signature,
            v2(2, 0x11, &[0; 12]),  // command 2
            v2(1, 0x11, &[0; 11]),  // IPv4 addresses cut short
            v2(1, 0x21, &[0; 35]),  // IPv6 addresses cut short
            v2(1, 0x12, &[0; 12]),  // UDP
            v2(1, 0x31, &[0; 216]), // a UNIX socket
            v2(1, 0x41, &[0; 12]),  // family 4
            v2(1, 0x13, &[0; 12]),  // transport 3
        ];
        for bytes in cases {
            assert!(parse(&bytes).is_err(), "{bytes:?}");
        }
        // A wrong version is refused as soon as its byte is in.
        let mut early = V2_SIGNATURE.to_vec();
        early.push(0x10);
        assert!(parse(&early).is_err());
    }

    #[test]
    fn v2_largest_length_is_awaited_not_refused() {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&bytes), Ok(Parsed::Incomplete { needed: 65535 }));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // Every short input over an alphabet of the bytes the parser looks at.
        let alphabet = [b'\r', b'\n', 0, b'Q', b'P', b' ', b'1', 0x21, 0x11, 0xff];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = usize::try_from(state % 40).unwrap();
            let mut bytes: Vec<u8> = (0..len)
                .map(|i| alphabet[usize::try_from((state >> (i % 60)) % 10).unwrap()])
                .collect();
            if state % 3 == 0 {
                let mut with_sig = V2_SIGNATURE.to_vec();
                with_sig.append(&mut bytes);
                bytes = with_sig;
            } else if state % 3 == 1 {
                let mut with_prefix = V1_PREFIX.to_vec();
                with_prefix.append(&mut bytes);
                bytes = with_prefix;
            }
            let _ = parse(&bytes);
        }
    }

    #[tokio::test]
    async fn read_takes_the_header_and_no_more() {
        let mut bytes = b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\n".to_vec();
        bytes.extend_from_slice(b"rest\n");
        let mut reader = tokio::io::BufReader::new(&bytes[..]);
        let header = read(&mut reader, Duration::from_secs(1)).await.unwrap();
        assert_eq!(header, proxied("192.0.2.7:1", "198.51.100.1:2"));
        let mut rest = String::new();
        reader.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "rest\n");
    }

    #[tokio::test]
    async fn read_refuses_truncated_and_late_headers() {
        let cut = b"PROXY TCP4 192.0.2.7 198.51".to_vec();
        let mut reader = tokio::io::BufReader::new(&cut[..]);
        assert_eq!(
            read(&mut reader, Duration::from_secs(1)).await,
            Err(ProxyError::Truncated)
        );
        let (client, server) = tokio::io::duplex(64);
        let mut reader = tokio::io::BufReader::new(server);
        let limit = Duration::from_millis(50);
        assert_eq!(read(&mut reader, limit).await, Err(ProxyError::TimedOut(limit)));
        drop(client);
    }
}
