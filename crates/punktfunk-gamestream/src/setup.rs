//! The state RTSP keeps between requests of one launch: the session ids SETUP hands out and the
//! sequence number of the host's sealed replies.
//!
//! A client sends OPTIONS, DESCRIBE, three SETUPs, ANNOUNCE and PLAY, each on its own TCP
//! connection, so whatever ties them together lives here, not in a connection. The ids are
//! what later binds the UDP pings and the ENet connection to this launch: the ping payload and
//! the connect data. Nothing here reads a clock; randomness comes in through `fill_random`,
//! as in the core's handshake.
//!
//! ```
//! use punktfunk_gamestream::setup::RtspSetup;
//!
//! let mut counter = 0u8;
//! let mut fill = |b: &mut [u8]| b.iter_mut().for_each(|x| { counter += 1; *x = counter });
//! let mut rtsp = RtspSetup::new();
//! let key = [7u8; 16];
//! assert!(rtsp.announce(&key).is_err()); // ANNOUNCE before SETUP
//! let ids = rtsp.setup(&key, &mut fill).clone();
//! assert_eq!(rtsp.setup(&key, &mut fill), &ids); // audio, video and control share them
//! assert_eq!(rtsp.announce(&key).unwrap(), &ids);
//! assert_eq!(rtsp.next_reply_seq(), 1);
//! ```

use crate::hex_encode;
use crate::rtsp::{self, Origin};
use thiserror::Error;

/// What SETUP hands out: the values that tie the UDP pings and the ENet connection to a
/// session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIds {
    /// RTSP session id (16 hex digits).
    pub session_id: String,
    /// `X-SS-Ping-Payload` (16 ASCII hex digits).
    pub ping_payload: [u8; 16],
    /// `X-SS-Connect-Data`: the `data` of the client's ENet CONNECT.
    pub connect_data: u32,
}

/// Random bytes behind one set of [`SessionIds`].
const ID_RANDOM_BYTES: usize = 8 + 4 + 8;

impl SessionIds {
    /// Fresh ids from `fill_random` (a cryptographic source in the host: the connect data and
    /// ping payload are all that stands between a stranger and a launched session's streams).
    pub fn random(fill_random: &mut dyn FnMut(&mut [u8])) -> SessionIds {
        let mut b = [0u8; ID_RANDOM_BYTES];
        fill_random(&mut b);
        let mut ping_payload = [0u8; 16];
        ping_payload.copy_from_slice(hex_encode(&b[..8]).as_bytes());
        SessionIds {
            session_id: hex_encode(&b[12..]),
            ping_payload,
            connect_data: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

/// Why an RTSP request cannot go ahead in the current setup state. The client's fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetupError {
    /// ANNOUNCE for a launch whose streams were never SET UP.
    #[error("ANNOUNCE before SETUP for this launch")]
    AnnounceBeforeSetup,
}

#[derive(Debug)]
struct Setup {
    launch_key: [u8; 16],
    ids: SessionIds,
}

/// The RTSP state of the current launch. One per host: the driver calls it per request, under
/// whatever lock its connections share.
///
/// Calling order per request: [`RtspSetup::setup`] for SETUP, [`RtspSetup::announce`] for
/// ANNOUNCE, and [`RtspSetup::next_reply_seq`] (or [`RtspSetup::seal_reply`]) once for every
/// reply that goes out sealed, in the order they are sent.
#[derive(Debug, Default)]
pub struct RtspSetup {
    current: Option<Setup>,
    /// Sequence number of the last sealed reply of the current launch.
    reply_seq: u32,
}

impl RtspSetup {
    /// No launch set up yet.
    pub fn new() -> RtspSetup {
        RtspSetup::default()
    }

    /// SETUP of any stream of the launch keyed `launch_key`: the ids it already has, or new
    /// ones when this is the first SETUP of a new launch. A new launch also restarts the
    /// sequence numbers of sealed replies: they belong to its key.
    pub fn setup(
        &mut self,
        launch_key: &[u8; 16],
        fill_random: &mut dyn FnMut(&mut [u8]),
    ) -> &SessionIds {
        if self
            .current
            .as_ref()
            .is_none_or(|s| s.launch_key != *launch_key)
        {
            self.reply_seq = 0;
            self.current = Some(Setup {
                launch_key: *launch_key,
                ids: SessionIds::random(fill_random),
            });
        }
        &self.current.as_ref().expect("set above").ids
    }

    /// ANNOUNCE of the launch keyed `launch_key`: its ids, which the session is started with.
    pub fn announce(&self, launch_key: &[u8; 16]) -> Result<&SessionIds, SetupError> {
        self.ids(launch_key).ok_or(SetupError::AnnounceBeforeSetup)
    }

    /// The ids SETUP gave the launch keyed `launch_key`, if it ran.
    pub fn ids(&self, launch_key: &[u8; 16]) -> Option<&SessionIds> {
        self.current
            .as_ref()
            .filter(|s| s.launch_key == *launch_key)
            .map(|s| &s.ids)
    }

    /// The sequence number for the next sealed reply (the first is 1).
    pub fn next_reply_seq(&mut self) -> u32 {
        self.reply_seq = self.reply_seq.wrapping_add(1);
        self.reply_seq
    }

    /// Seals a reply's bytes under `launch_key` with the next sequence number.
    pub fn seal_reply(&mut self, launch_key: &[u8; 16], reply: &[u8]) -> Vec<u8> {
        let seq = self.next_reply_seq();
        rtsp::seal(launch_key, seq, Origin::Host, reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic source: 1, 2, 3, … across calls.
    fn counter() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |b: &mut [u8]| {
            for x in b {
                n = n.wrapping_add(1);
                *x = n;
            }
        }
    }

    #[test]
    fn ids_come_from_the_random_source_in_the_documented_layout() {
        let ids = SessionIds::random(&mut counter());
        assert_eq!(&ids.ping_payload, b"0102030405060708");
        assert_eq!(ids.connect_data, 0x090A_0B0C);
        assert_eq!(ids.session_id, "0D0E0F1011121314");
    }

    #[test]
    fn the_same_launch_keeps_its_ids_and_a_new_launch_gets_new_ones() {
        let mut fill = counter();
        let mut rtsp = RtspSetup::new();
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let first = rtsp.setup(&a, &mut fill).clone();
        assert_eq!(rtsp.setup(&a, &mut fill), &first);
        assert_eq!(rtsp.setup(&a, &mut fill), &first);
        let second = rtsp.setup(&b, &mut fill).clone();
        assert_ne!(second, first);
        assert_ne!(second.connect_data, first.connect_data);
        // The earlier launch is gone: its ANNOUNCE is refused, the new one's accepted.
        assert_eq!(rtsp.announce(&a), Err(SetupError::AnnounceBeforeSetup));
        assert_eq!(rtsp.announce(&b), Ok(&second));
        // Going back to the first key is a new launch again, with new ids.
        assert_ne!(rtsp.setup(&a, &mut fill), &first);
    }

    #[test]
    fn announce_before_setup_is_refused() {
        let rtsp = RtspSetup::new();
        assert_eq!(
            rtsp.announce(&[9; 16]),
            Err(SetupError::AnnounceBeforeSetup)
        );
        assert_eq!(rtsp.ids(&[9; 16]), None);
    }

    #[test]
    fn reply_sequence_numbers_count_per_launch() {
        let mut fill = counter();
        let mut rtsp = RtspSetup::new();
        let (a, b) = ([1u8; 16], [2u8; 16]);
        // Replies before any SETUP (OPTIONS, DESCRIBE) are numbered too.
        assert_eq!(rtsp.next_reply_seq(), 1);
        rtsp.setup(&a, &mut fill);
        assert_eq!(rtsp.next_reply_seq(), 1, "a new launch starts again");
        assert_eq!(rtsp.next_reply_seq(), 2);
        rtsp.setup(&a, &mut fill);
        assert_eq!(rtsp.next_reply_seq(), 3, "the same launch keeps counting");
        rtsp.setup(&b, &mut fill);
        assert_eq!(rtsp.next_reply_seq(), 1);
    }

    #[test]
    fn sealed_replies_open_with_the_launch_key_and_carry_the_sequence_number() {
        let mut fill = counter();
        let mut rtsp = RtspSetup::new();
        let key = [5u8; 16];
        rtsp.setup(&key, &mut fill);
        let one = rtsp.seal_reply(&key, b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n");
        let two = rtsp.seal_reply(&key, b"RTSP/1.0 200 OK\r\nCSeq: 2\r\n\r\n");
        let (pt, seq, used) = rtsp::open(&key, Origin::Host, &one).unwrap().unwrap();
        assert_eq!(
            (pt.as_slice(), seq, used),
            (&b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n"[..], 1, one.len())
        );
        assert_eq!(rtsp::open(&key, Origin::Host, &two).unwrap().unwrap().1, 2);
        assert!(rtsp::open(&[6; 16], Origin::Host, &one).is_err());
    }
}
