//! Screening ENet datagrams before the ENet host sees them, so strangers cannot hold its
//! peer slots.
//!
//! An ENet host gives a peer slot to every `CONNECT` command it receives and keeps it while
//! it retransmits its `VERIFY_CONNECT` (tens of seconds) — before the connect data that ties
//! the peer to a launch is ever looked at. A handful of datagrams would fill the slots and
//! lock the real client out. This screen reads the datagram's header and first command:
//!
//! - a datagram addressed to an existing peer (its header names a peer id) passes: ENet
//!   itself drops it unless it comes from that peer's address and session;
//! - a datagram for no peer yet (peer id `0xFFF`) can only matter through a `CONNECT`. It
//!   passes only when its first command is a complete `CONNECT` whose connect data is the
//!   launched session's and it comes from the launching client's address; everything else is
//!   dropped and counted by [`Screened`].
//!
//! Wire layout (big-endian): a 2-byte header word (peer id in the low 12 bits, session in bits
//! 12–13, flag 14 = compressed, flag 15 = a 2-byte sent time follows), then commands of a
//! 4-byte header (command number in the low 4 bits) and a fixed body; `CONNECT` (command 2) is
//! 48 bytes with its connect data in the last 4. This host's ENet uses neither compression nor
//! checksums, so a compressed datagram cannot be a valid `CONNECT` for it.

use std::net::IpAddr;

/// The peer id of a datagram for no peer yet.
const NO_PEER: u16 = 0x0FFF;
const FLAG_COMPRESSED: u16 = 1 << 14;
const FLAG_SENT_TIME: u16 = 1 << 15;
const COMMAND_CONNECT: u8 = 2;
const CONNECT_LEN: usize = 48;
/// Offset of the connect data in a `CONNECT` command.
const CONNECT_DATA_AT: usize = 44;

/// What a datagram is, as far as admission goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram {
    /// For an existing peer: ENet decides.
    ForPeer,
    /// A connection request carrying this connect data.
    Connect {
        /// The `CONNECT` command's data field.
        data: u32,
    },
    /// For no peer and not a connection request ENet could act on.
    Junk,
}

/// Classifies one datagram (never panics, reads at most its first command).
pub fn classify(datagram: &[u8]) -> Datagram {
    let Some(word) = datagram.get(..2) else {
        return Datagram::Junk;
    };
    let word = u16::from_be_bytes([word[0], word[1]]);
    if word & NO_PEER != NO_PEER {
        return Datagram::ForPeer;
    }
    if word & FLAG_COMPRESSED != 0 {
        return Datagram::Junk;
    }
    let header = if word & FLAG_SENT_TIME != 0 { 4 } else { 2 };
    let Some(cmd) = datagram.get(header..).and_then(|c| c.get(..CONNECT_LEN)) else {
        return Datagram::Junk;
    };
    if cmd[0] & 0x0F != COMMAND_CONNECT {
        return Datagram::Junk;
    }
    let d = &cmd[CONNECT_DATA_AT..CONNECT_LEN];
    Datagram::Connect {
        data: u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
    }
}

/// Who may connect now: the launched session's connect data, from its client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// SETUP's `X-SS-Connect-Data` of the session.
    pub connect_data: u32,
    /// The address the launch came from.
    pub client: IpAddr,
}

/// Counters of what the screen dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Screened {
    /// Datagrams for no peer that were not a connection request.
    pub junk: u64,
    /// Connection requests while no session waits for one.
    pub no_session: u64,
    /// Connection requests with another session's (or a guessed) connect data.
    pub wrong_data: u64,
    /// Connection requests with the right data from another address than the launch's.
    pub wrong_address: u64,
}

impl Screened {
    /// All dropped datagrams.
    pub fn total(&self) -> u64 {
        self.junk + self.no_session + self.wrong_data + self.wrong_address
    }
}

/// The screen: whether each datagram from `from` may reach the ENet host.
#[derive(Debug, Default)]
pub struct Screen {
    expected: Option<Expected>,
    dropped: Screened,
}

impl Screen {
    /// Nobody may connect yet.
    pub fn new() -> Screen {
        Screen::default()
    }

    /// Sets (or clears, between sessions) who may connect.
    pub fn expect(&mut self, expected: Option<Expected>) {
        self.expected = expected;
    }

    /// Whether the datagram passes; a dropped one is counted.
    pub fn admit(&mut self, from: IpAddr, datagram: &[u8]) -> bool {
        let data = match classify(datagram) {
            Datagram::ForPeer => return true,
            Datagram::Junk => {
                self.dropped.junk += 1;
                return false;
            }
            Datagram::Connect { data } => data,
        };
        let Some(want) = self.expected else {
            self.dropped.no_session += 1;
            return false;
        };
        if data != want.connect_data {
            self.dropped.wrong_data += 1;
            false
        } else if !same_host(from, want.client) {
            self.dropped.wrong_address += 1;
            false
        } else {
            true
        }
    }

    /// What was dropped so far.
    pub fn dropped(&self) -> Screened {
        self.dropped
    }
}

/// Addresses compared as hosts, an IPv4-mapped IPv6 address equal to its IPv4 form.
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20));
    const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 66));

    /// A CONNECT datagram the way ENet clients send it (with the sent-time header).
    fn connect(data: u32) -> Vec<u8> {
        let mut d = vec![];
        d.extend_from_slice(&(NO_PEER | FLAG_SENT_TIME).to_be_bytes());
        d.extend_from_slice(&0x1234u16.to_be_bytes());
        let mut cmd = [0u8; CONNECT_LEN];
        cmd[0] = 0x80 | COMMAND_CONNECT; // acknowledge flag
        cmd[2..4].copy_from_slice(&1u16.to_be_bytes());
        cmd[8..12].copy_from_slice(&1392u32.to_be_bytes()); // mtu
        cmd[CONNECT_DATA_AT..].copy_from_slice(&data.to_be_bytes());
        d.extend_from_slice(&cmd);
        d
    }

    fn expecting(data: u32) -> Screen {
        let mut s = Screen::new();
        s.expect(Some(Expected {
            connect_data: data,
            client: CLIENT,
        }));
        s
    }

    #[test]
    fn only_the_launched_clients_connect_passes() {
        let mut s = expecting(0xC0FF_EE00);
        assert!(s.admit(CLIENT, &connect(0xC0FF_EE00)));
        assert!(!s.admit(CLIENT, &connect(0xC0FF_EE01)));
        assert!(!s.admit(STRANGER, &connect(0xC0FF_EE00)));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 168, 1, 20).to_ipv6_mapped());
        assert!(s.admit(mapped, &connect(0xC0FF_EE00)));
        assert_eq!(
            s.dropped(),
            Screened {
                wrong_data: 1,
                wrong_address: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn without_a_session_no_connect_passes() {
        let mut s = Screen::new();
        assert!(!s.admit(CLIENT, &connect(7)));
        s.expect(Some(Expected {
            connect_data: 7,
            client: CLIENT,
        }));
        assert!(s.admit(CLIENT, &connect(7)));
        s.expect(None);
        assert!(!s.admit(CLIENT, &connect(7)));
        assert_eq!(s.dropped().no_session, 2);
    }

    #[test]
    fn datagrams_for_a_peer_pass_and_anything_else_for_no_peer_is_junk() {
        let mut s = expecting(7);
        // Peer 3, session 1, with sent time: ENet's own checks apply.
        let for_peer = [(FLAG_SENT_TIME | 1 << 12 | 3).to_be_bytes(), [0, 0]].concat();
        assert!(s.admit(STRANGER, &for_peer));
        let mut ping = (NO_PEER).to_be_bytes().to_vec();
        ping.extend_from_slice(&[0x85, 0xFF, 0, 1]);
        let mut compressed = connect(7);
        compressed[0] |= (FLAG_COMPRESSED >> 8) as u8;
        let short = connect(7)[..40].to_vec();
        for junk in [&[][..], &[0xFF], &ping, &compressed, &short] {
            assert!(!s.admit(CLIENT, junk), "{junk:02x?}");
        }
        assert_eq!(s.dropped().junk, 5);
        assert_eq!(s.dropped().total(), 5);
    }

    #[test]
    fn a_connect_without_the_sent_time_header_is_read_at_its_offset() {
        let mut d = NO_PEER.to_be_bytes().to_vec();
        d.extend_from_slice(&connect(0xAABB_CCDD)[4..]);
        assert_eq!(classify(&d), Datagram::Connect { data: 0xAABB_CCDD });
    }

    #[test]
    fn classify_never_panics_on_any_length() {
        let full = connect(1);
        for n in 0..=full.len() {
            let _ = classify(&full[..n]);
        }
    }
}
