//! GameStream, the protocol stock Moonlight clients speak, as sans-IO pieces.
//!
//! This crate holds what the host's GameStream side parses, produces and decides, without
//! sockets, threads or clocks (time comes in as `now`, randomness through the caller; the
//! crate's `clippy.toml` refuses the clock and thread calls), so every piece is unit-tested on
//! virtual time and fuzzed on its own:
//!
//! - [`http`]: the request head and query string of nvhttp (`GET /path?a=b&…`), bounded;
//! - [`xml`]: the XML replies (`<root status_code="200">…</root>`) with escaping;
//! - [`crypto`]: the primitives of the pairing ceremony (SHA-256, AES-128-ECB, RSA-SHA256,
//!   certificate signature bytes);
//! - [`pairing`]: the ceremony itself as a typed state machine (one state per expected
//!   message) and a client side written from the protocol description, for tests;
//! - [`pairing_gate`]: the policy around ceremonies (one at a time, the PIN wait, the
//!   wrong-PIN lockout), on the caller's clock;
//! - [`launch`]: the parameters of `/launch` and `/resume`;
//! - [`rtsp`]: RTSP requests and replies, the encrypted-RTSP envelope, ANNOUNCE and DESCRIBE;
//! - [`setup`]: the state between one launch's RTSP requests (session ids, reply numbering);
//! - [`plan`]: the session plan resolved from an ANNOUNCE, with a reason per choice;
//! - [`control`]: the encrypted control-stream envelope and its messages;
//! - [`control_session`]: one session's control stream (which peer, silence, termination,
//!   packets into events), on the caller's clock;
//! - [`enet_gate`]: which ENet datagrams may reach the ENet host (strangers hold no peer
//!   slot);
//! - [`input`]: input packets decoded into the core input model;
//! - [`video`]: video datagrams with the Moonlight-exact FEC blocks, and their reassembly;
//! - [`audio`]: audio datagrams, AES-CBC and the 4 + 2 audio FEC, and their reception;
//! - `fuzzing` (hidden): the fuzz targets' bodies, shared by cargo-fuzz and the corpus tests.
//!
//! The wire facts come from the project's GameStream protocol notes; where a client disagrees
//! with them, the client wins.

pub mod audio;
pub mod control;
pub mod control_session;
pub mod crypto;
pub mod enet_gate;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod input;
pub mod launch;
pub mod pairing;
pub mod pairing_gate;
pub mod plan;
pub mod rtsp;
pub mod setup;
pub mod video;
pub mod xml;

/// The version this host reports: GameStream generation 7.1.431 with a negative fourth part,
/// which tells Moonlight clients to enable every extension of the modern host protocol.
pub const APP_VERSION: &str = "7.1.431.-1";
/// The GeForce Experience version reported beside it (clients warn about newer ones).
pub const GFE_VERSION: &str = "3.23.0.74";

/// Port offsets from the HTTP base port (47989 by default).
pub mod ports {
    /// nvhttp over HTTPS: base − 5.
    pub const HTTPS_OFFSET: i32 = -5;
    /// Video (UDP): base + 9.
    pub const VIDEO_OFFSET: i32 = 9;
    /// Control stream (ENet over UDP): base + 10.
    pub const CONTROL_OFFSET: i32 = 10;
    /// Audio (UDP): base + 11.
    pub const AUDIO_OFFSET: i32 = 11;
    /// RTSP (TCP): base + 21.
    pub const RTSP_OFFSET: i32 = 21;
    /// The default HTTP base port.
    pub const DEFAULT_BASE: u16 = 47989;

    /// `base + offset`, or `None` when it leaves the port range.
    pub fn derive(base: u16, offset: i32) -> Option<u16> {
        u16::try_from(i32::from(base) + offset)
            .ok()
            .filter(|p| *p != 0)
    }
}

/// Hex encoding as the protocol uses it (upper case; both cases are accepted on input).
pub fn hex_encode(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[usize::from(b >> 4)] as char);
        s.push(D[usize::from(b & 15)] as char);
    }
    s
}

/// Hex decoding; `None` for an odd length or a non-hex digit.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    b.chunks_exact(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let v: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_decode(&hex_encode(&v)).unwrap(), v);
        assert_eq!(hex_decode("aBcD").unwrap(), vec![0xAB, 0xCD]);
        assert!(hex_decode("abc").is_none());
        assert!(hex_decode("zz").is_none());
    }

    #[test]
    fn ports_derive_from_the_base() {
        assert_eq!(ports::derive(47989, ports::HTTPS_OFFSET), Some(47984));
        assert_eq!(ports::derive(47989, ports::RTSP_OFFSET), Some(48010));
        assert_eq!(ports::derive(65530, ports::RTSP_OFFSET), None);
        assert_eq!(ports::derive(3, ports::HTTPS_OFFSET), None);
    }
}
