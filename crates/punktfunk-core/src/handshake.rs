//! The punktfunk/1 session handshake as two sans-IO state machines.
//!
//! ```text
//! client                         host
//!   Hello  ───────────────────────►   checks version, picks codec/mode/bitrate, makes keys
//!          ◄───────────────────────   Welcome (complete data-plane configuration)
//!   Start  ───────────────────────►   streaming begins
//! ```
//!
//! Either side may send `Bye` at any time. A version mismatch, a malformed message or a message
//! out of order ends the handshake with a `Bye` carrying the reason and an error on both sides.
//! The machines only produce and consume [`Message`]s; the QUIC driver moves bytes, and the host
//! supplies its decisions ([`HostPolicy`]) and randomness (a fill function) from outside.

use crate::control::{
    ByeReason, Codec, DirectionKey, Hello, Message, Mode, Welcome, PROTOCOL_VERSION,
};
use crate::crypto::{CipherSuite, SALT_LEN};
use crate::fec::FecCode;
use thiserror::Error;

/// How a handshake failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The peers speak different protocol versions.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// Our version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
    },
    /// A message arrived that the protocol does not allow here.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The host cannot serve the request (no common codec, mode out of range, busy).
    #[error(
        "host refused the session ({reason}): {}",
        crate::text::Escaped(message)
    )]
    Refused {
        /// The reason code from the host's Bye.
        reason: ByeReason,
        /// The host's explanation.
        message: String,
    },
}

/// What the host can offer; the handshake picks from it per client.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// Codecs the host can encode, in the host's order of preference.
    pub codecs: Vec<Codec>,
    /// Largest mode the host will produce (either dimension and the refresh rate).
    pub max_mode: Mode,
    /// Bitrate used when the client asks for none, kbit/s.
    pub default_bitrate_kbps: u32,
    /// Accepted bitrate range, kbit/s.
    pub bitrate_range_kbps: (u32, u32),
    /// FEC percentage used when the client asks for none.
    pub default_fec_percent: u16,
    /// Floor and ceiling of parity shards per frame.
    pub fec_parity_range: (u16, u16),
    /// Largest shard payload.
    pub shard_len: u16,
    /// Packet cipher.
    pub suite: CipherSuite,
    /// Host UDP data port.
    pub data_port: u16,
}

/// A mode and bitrate the host's policy accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The mode, unchanged from the request.
    pub mode: Mode,
    /// The bitrate to target, kbit/s.
    pub bitrate_kbps: u32,
}

/// Why the host's policy refused a requested mode. Always the requester's doing.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModeRefused {
    /// Not a streamable mode at all (odd or out-of-range size, refresh out of range).
    #[error("mode {mode} is not streamable: {detail}")]
    Invalid {
        /// The requested mode.
        mode: Mode,
        /// What is wrong with it.
        detail: String,
    },
    /// Width, height or refresh rate above the host's maximum.
    #[error("mode {mode} exceeds the host's limit {limit}")]
    AboveLimit {
        /// The requested mode.
        mode: Mode,
        /// The host's maximum.
        limit: Mode,
    },
}

impl HostPolicy {
    /// The one admission check for a stream's mode and bitrate: the handshake runs it on the
    /// Hello and the control loop on every Reconfigure, so a limit cannot be enforced on one
    /// path and forgotten on the other.
    ///
    /// The mode must be streamable ([`Mode::validate`]) and within [`HostPolicy::max_mode`] in
    /// width, height and refresh rate, each on its own. A requested bitrate of 0 means "no
    /// preference" and stands for `unset_kbps` (the default in a Hello, the current rate in a
    /// Reconfigure); the result is clamped to [`HostPolicy::bitrate_range_kbps`] either way, so
    /// nothing outside the range reaches an encoder whatever a pipeline reported before.
    pub fn admit(
        &self,
        mode: Mode,
        bitrate_kbps: u32,
        unset_kbps: u32,
    ) -> Result<Admitted, ModeRefused> {
        mode.validate()
            .map_err(|detail| ModeRefused::Invalid { mode, detail })?;
        let limit = self.max_mode;
        if mode.width > limit.width
            || mode.height > limit.height
            || mode.refresh_mhz > limit.refresh_mhz
        {
            return Err(ModeRefused::AboveLimit { mode, limit });
        }
        let (lo, hi) = self.bitrate_range_kbps;
        let wanted = match bitrate_kbps {
            0 => unset_kbps,
            b => b,
        };
        // `max` then `min` rather than `clamp`: a misconfigured range (lo > hi) must not panic
        // when a client connects.
        let bitrate_kbps = wanted.max(lo).min(hi);
        Ok(Admitted { mode, bitrate_kbps })
    }
}

/// The decisions of a completed handshake, as both sides see them.
pub type SessionConfig = Welcome;

/// The host side of one session's handshake.
#[derive(Debug)]
pub struct HostHandshake {
    policy: HostPolicy,
    state: HostState,
    out: Vec<Message>,
}

#[derive(Debug)]
enum HostState {
    AwaitHello,
    AwaitStart(Box<Welcome>, Hello),
    Established(Box<Welcome>, Hello),
    Failed(HandshakeError),
}

impl HostHandshake {
    /// A host handshake that will answer with choices from `policy`.
    pub fn new(policy: HostPolicy) -> Self {
        HostHandshake {
            policy,
            state: HostState::AwaitHello,
            out: Vec::new(),
        }
    }

    /// Feeds one message from the client; `fill_random` supplies key material.
    pub fn handle(&mut self, msg: Message, fill_random: &mut dyn FnMut(&mut [u8])) {
        let state = std::mem::replace(&mut self.state, HostState::AwaitHello);
        self.state = match (state, msg) {
            (s @ HostState::Failed(_), _) => s,
            (_, Message::Bye { reason, message }) => {
                HostState::Failed(HandshakeError::Refused { reason, message })
            }
            (s, Message::Unknown { .. }) => s,
            (HostState::AwaitHello, Message::Hello(hello)) => {
                match self.welcome(&hello, fill_random) {
                    Ok(w) => {
                        self.out.push(Message::Welcome(w.clone()));
                        HostState::AwaitStart(Box::new(w), hello)
                    }
                    Err((reason, err)) => self.fail(reason, err),
                }
            }
            (HostState::AwaitStart(w, h), Message::Start) => HostState::Established(w, h),
            (s @ HostState::Established(..), _) => s,
            (_, other) => self.fail(
                ByeReason::PROTOCOL_ERROR,
                HandshakeError::Protocol(format!(
                    "unexpected {} during the handshake",
                    other.name()
                )),
            ),
        };
    }

    /// Ends the handshake because the transport reported an undecodable message.
    pub fn malformed(&mut self, detail: &str) {
        let e = HandshakeError::Protocol(format!("malformed message: {detail}"));
        self.state = self.fail(ByeReason::PROTOCOL_ERROR, e);
    }

    /// Refuses the client (e.g. the host is at its session limit).
    pub fn refuse(&mut self, reason: ByeReason, message: &str) {
        self.out.push(Message::Bye {
            reason,
            message: message.into(),
        });
        self.state = HostState::Failed(HandshakeError::Refused {
            reason,
            message: message.into(),
        });
    }

    fn fail(&mut self, reason: ByeReason, err: HandshakeError) -> HostState {
        self.out.push(Message::Bye {
            reason,
            message: err.to_string(),
        });
        HostState::Failed(err)
    }

    fn welcome(
        &self,
        hello: &Hello,
        fill_random: &mut dyn FnMut(&mut [u8]),
    ) -> Result<Welcome, (ByeReason, HandshakeError)> {
        let p = &self.policy;
        if hello.version != PROTOCOL_VERSION {
            return Err((
                ByeReason::VERSION_MISMATCH,
                HandshakeError::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs: hello.version,
                },
            ));
        }
        let unsupported = |m: String| (ByeReason::UNSUPPORTED, HandshakeError::Protocol(m));
        let admitted = p
            .admit(hello.mode, hello.bitrate_kbps, p.default_bitrate_kbps)
            .map_err(|e| unsupported(e.to_string()))?;
        // The client's preference order wins among the codecs the host has.
        let codec = hello
            .codecs
            .iter()
            .copied()
            .find(|c| p.codecs.contains(c))
            .ok_or_else(|| {
                let list = |v: &[Codec]| v.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
                unsupported(format!(
                    "no common codec: client decodes [{}], host encodes [{}]",
                    list(&hello.codecs),
                    list(&p.codecs)
                ))
            })?;
        let fec_percent = hello.fec_percent.map_or(p.default_fec_percent, u16::from);
        let key_len = p.suite.key_len().unwrap_or(0);
        let mut key = |len| {
            let mut k = DirectionKey {
                key: vec![0; len],
                salt: [0; SALT_LEN],
            };
            fill_random(&mut k.key);
            fill_random(&mut k.salt);
            k
        };
        let host_to_client = key(key_len);
        let client_to_host = key(key_len);
        let mut id = [0u8; 8];
        fill_random(&mut id);
        Ok(Welcome {
            version: PROTOCOL_VERSION,
            session_id: u64::from_le_bytes(id),
            codec,
            mode: admitted.mode,
            bitrate_kbps: admitted.bitrate_kbps,
            fec_percent,
            fec_min_parity: p.fec_parity_range.0,
            fec_max_parity: p.fec_parity_range.1,
            fec_small_code: FecCode::GF8_CAUCHY,
            shard_len: p.shard_len,
            suite: p.suite,
            host_to_client,
            client_to_host,
            data_port: p.data_port,
        })
    }

    /// The next message to send to the client.
    pub fn poll_message(&mut self) -> Option<Message> {
        (!self.out.is_empty()).then(|| self.out.remove(0))
    }

    /// The policy this handshake chose from; the session's control loop admits Reconfigure
    /// requests by the same one.
    pub fn policy(&self) -> &HostPolicy {
        &self.policy
    }

    /// The agreed configuration and the client's Hello once Start arrived.
    pub fn established(&self) -> Option<(&Welcome, &Hello)> {
        match &self.state {
            HostState::Established(w, h) => Some((w, h)),
            _ => None,
        }
    }

    /// The failure, if the handshake failed.
    pub fn error(&self) -> Option<&HandshakeError> {
        match &self.state {
            HostState::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// The client side of the handshake.
#[derive(Debug)]
pub struct ClientHandshake {
    hello: Hello,
    state: ClientState,
    out: Vec<Message>,
}

#[derive(Debug)]
enum ClientState {
    AwaitWelcome,
    Established(Box<Welcome>),
    Failed(HandshakeError),
}

impl ClientHandshake {
    /// Starts a handshake; the Hello is the first message to send.
    pub fn new(hello: Hello) -> Self {
        let out = vec![Message::Hello(hello.clone())];
        ClientHandshake {
            hello,
            state: ClientState::AwaitWelcome,
            out,
        }
    }

    /// Feeds one message from the host.
    pub fn handle(&mut self, msg: Message) {
        let state = std::mem::replace(&mut self.state, ClientState::AwaitWelcome);
        self.state = match (state, msg) {
            (s @ ClientState::Failed(_), _) => s,
            (_, Message::Bye { reason, message }) => {
                ClientState::Failed(HandshakeError::Refused { reason, message })
            }
            (s, Message::Unknown { .. }) => s,
            (ClientState::AwaitWelcome, Message::Welcome(w)) => match self.check(&w) {
                Ok(()) => {
                    self.out.push(Message::Start);
                    ClientState::Established(Box::new(w))
                }
                Err(e) => {
                    self.out.push(Message::Bye {
                        reason: ByeReason::PROTOCOL_ERROR,
                        message: e.to_string(),
                    });
                    ClientState::Failed(e)
                }
            },
            (s @ ClientState::Established(_), _) => s,
            (_, other) => {
                let e =
                    HandshakeError::Protocol(format!("unexpected {} before Welcome", other.name()));
                self.out.push(Message::Bye {
                    reason: ByeReason::PROTOCOL_ERROR,
                    message: e.to_string(),
                });
                ClientState::Failed(e)
            }
        };
    }

    /// Ends the handshake because the host sent an undecodable message.
    pub fn malformed(&mut self, detail: &str) {
        let e = HandshakeError::Protocol(format!("malformed message from host: {detail}"));
        self.out.push(Message::Bye {
            reason: ByeReason::PROTOCOL_ERROR,
            message: e.to_string(),
        });
        self.state = ClientState::Failed(e);
    }

    fn check(&self, w: &Welcome) -> Result<(), HandshakeError> {
        if w.version != self.hello.version {
            return Err(HandshakeError::VersionMismatch {
                ours: self.hello.version,
                theirs: w.version,
            });
        }
        let bad = |m: String| Err(HandshakeError::Protocol(m));
        if !self.hello.codecs.contains(&w.codec) {
            return bad(format!(
                "host chose codec {} which the client did not offer",
                w.codec
            ));
        }
        if let Err(e) = w.mode.validate() {
            return bad(format!("host chose an invalid mode: {e}"));
        }
        match w.suite.key_len() {
            Some(n) if w.host_to_client.key.len() == n && w.client_to_host.key.len() == n => {}
            _ => {
                return bad(format!(
                    "cipher suite {:?} with keys of the wrong length",
                    w.suite
                ))
            }
        }
        if w.suite == CipherSuite::NONE {
            return bad("host offered an unencrypted data plane".into());
        }
        if !w.fec_small_code.is_known() || w.shard_len < 64 || w.data_port == 0 {
            return bad("host sent an unusable data-plane configuration".into());
        }
        Ok(())
    }

    /// The next message to send to the host.
    pub fn poll_message(&mut self) -> Option<Message> {
        (!self.out.is_empty()).then(|| self.out.remove(0))
    }

    /// The host's configuration once Welcome was accepted (Start is then queued).
    pub fn established(&self) -> Option<&Welcome> {
        match &self.state {
            ClientState::Established(w) => Some(w),
            _ => None,
        }
    }

    /// The failure, if the handshake failed.
    pub fn error(&self) -> Option<&HandshakeError> {
        match &self.state {
            ClientState::Failed(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::MessageReader;

    fn policy() -> HostPolicy {
        HostPolicy {
            codecs: vec![Codec::H264, Codec::HEVC],
            max_mode: Mode::new(3840, 2160, 144),
            default_bitrate_kbps: 10_000,
            bitrate_range_kbps: (500, 150_000),
            default_fec_percent: 20,
            fec_parity_range: (2, 1024),
            shard_len: 1400,
            suite: CipherSuite::AES_128_GCM,
            data_port: 47_100,
        }
    }

    fn hello() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            mode: Mode::new(1280, 720, 60),
            codecs: vec![Codec::AV1, Codec::HEVC, Codec::H264],
            bitrate_kbps: 500_000,
            fec_percent: None,
            client_name: "test".into(),
            app: String::new(),
        }
    }

    fn counter_random() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |b: &mut [u8]| {
            for x in b {
                n = n.wrapping_add(1);
                *x = n;
            }
        }
    }

    /// Runs both machines, passing every message through the byte codec.
    fn run(host: &mut HostHandshake, client: &mut ClientHandshake) {
        let mut rnd = counter_random();
        for _ in 0..10 {
            let mut moved = false;
            while let Some(m) = client.poll_message() {
                let mut r = MessageReader::new();
                r.push(&m.to_bytes());
                host.handle(r.next_message().unwrap().unwrap(), &mut rnd);
                moved = true;
            }
            while let Some(m) = host.poll_message() {
                let mut r = MessageReader::new();
                r.push(&m.to_bytes());
                client.handle(r.next_message().unwrap().unwrap());
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }

    #[test]
    fn handshake_agrees_on_a_configuration() {
        let mut host = HostHandshake::new(policy());
        let mut client = ClientHandshake::new(hello());
        run(&mut host, &mut client);
        let (hw, hh) = host.established().expect("host established");
        let cw = client.established().expect("client established");
        assert_eq!(hw, cw);
        assert_eq!(hh, &hello());
        assert_eq!(
            cw.codec,
            Codec::HEVC,
            "client preference among the host's codecs"
        );
        assert_eq!(
            cw.bitrate_kbps, 150_000,
            "bitrate clamped to the host's range"
        );
        assert_eq!(cw.fec_percent, 20);
        assert_eq!(cw.host_to_client.key.len(), 16);
        assert_ne!(cw.host_to_client.key, cw.client_to_host.key);
        assert_ne!(cw.host_to_client.salt, cw.client_to_host.salt);
    }

    #[test]
    fn version_mismatch_fails_both_sides() {
        let mut host = HostHandshake::new(policy());
        let mut client = ClientHandshake::new(Hello {
            version: 9,
            ..hello()
        });
        run(&mut host, &mut client);
        assert_eq!(
            host.error(),
            Some(&HandshakeError::VersionMismatch { ours: 1, theirs: 9 })
        );
        let Some(HandshakeError::Refused { reason, message }) = client.error() else {
            panic!("{:?}", client.error())
        };
        assert_eq!(*reason, ByeReason::VERSION_MISMATCH);
        assert!(
            message.contains("we speak 1, the peer speaks 9"),
            "{message}"
        );
    }

    #[test]
    fn no_common_codec_is_refused_with_a_reason() {
        let mut host = HostHandshake::new(policy());
        let mut client = ClientHandshake::new(Hello {
            codecs: vec![Codec::AV1],
            ..hello()
        });
        run(&mut host, &mut client);
        let Some(HandshakeError::Refused { reason, message }) = client.error() else {
            panic!("{:?}", client.error())
        };
        assert_eq!(*reason, ByeReason::UNSUPPORTED);
        assert!(message.contains("no common codec"), "{message}");
        assert!(host.established().is_none());
    }

    #[test]
    fn out_of_order_and_malformed_messages_end_the_handshake() {
        let mut host = HostHandshake::new(policy());
        host.handle(Message::Start, &mut counter_random());
        assert!(matches!(host.error(), Some(HandshakeError::Protocol(_))));
        assert!(matches!(
            host.poll_message(),
            Some(Message::Bye {
                reason: ByeReason::PROTOCOL_ERROR,
                ..
            })
        ));

        let mut client = ClientHandshake::new(hello());
        let _ = client.poll_message();
        client.malformed("truncated Welcome");
        assert!(matches!(client.error(), Some(HandshakeError::Protocol(_))));
        assert!(matches!(client.poll_message(), Some(Message::Bye { .. })));

        // A Welcome with a codec the client never offered is refused.
        let mut host = HostHandshake::new(HostPolicy {
            codecs: vec![Codec(42)],
            ..policy()
        });
        let mut client = ClientHandshake::new(Hello {
            codecs: vec![Codec(42)],
            ..hello()
        });
        run(&mut host, &mut client);
        assert!(client.established().is_some());
        let mut client = ClientHandshake::new(hello());
        let mut w = host.established().unwrap().0.clone();
        w.codec = Codec(42);
        client.handle(Message::Welcome(w));
        assert!(
            matches!(client.error(), Some(HandshakeError::Protocol(m)) if m.contains("did not offer"))
        );
    }

    #[test]
    fn admit_checks_each_limit_and_clamps_the_bitrate() {
        let p = HostPolicy {
            max_mode: Mode::new(3840, 2160, 240),
            ..policy()
        };
        let ok = |m: Mode, kbps| p.admit(m, kbps, 7_777);
        assert_eq!(
            p.admit(Mode::new(1280, 720, 60), 0, 900_000)
                .map(|a| a.bitrate_kbps),
            Ok(150_000),
            "the unset rate is clamped too"
        );
        assert_eq!(
            ok(Mode::new(3840, 2160, 240), 0),
            Ok(Admitted {
                mode: Mode::new(3840, 2160, 240),
                bitrate_kbps: 7_777
            }),
            "the limit itself is allowed; 0 takes the caller's unset rate"
        );
        for m in [
            Mode::new(3842, 1080, 60),
            Mode::new(1920, 2162, 60),
            Mode::new(1920, 1080, 480),
            Mode {
                refresh_mhz: 240_001,
                ..Mode::new(1920, 1080, 60)
            },
        ] {
            assert_eq!(
                ok(m, 0),
                Err(ModeRefused::AboveLimit {
                    mode: m,
                    limit: p.max_mode
                }),
                "{m}"
            );
        }
        assert!(matches!(
            ok(Mode::new(1279, 720, 60), 0),
            Err(ModeRefused::Invalid { .. })
        ));
        let kbps = |b| ok(Mode::new(1280, 720, 60), b).map(|a| a.bitrate_kbps);
        assert_eq!(kbps(1), Ok(500));
        assert_eq!(kbps(150_001), Ok(150_000));
        assert_eq!(kbps(20_000), Ok(20_000));
        // A misconfigured range does not panic.
        let odd = HostPolicy {
            bitrate_range_kbps: (9_000, 1_000),
            ..policy()
        };
        assert!(odd.admit(Mode::new(1280, 720, 60), 5_000, 0).is_ok());
    }

    #[test]
    fn refresh_above_the_hosts_limit_is_refused_in_the_hello() {
        let mut host = HostHandshake::new(policy());
        let mut client = ClientHandshake::new(Hello {
            mode: Mode::new(1280, 720, 240),
            ..hello()
        });
        run(&mut host, &mut client);
        let Some(HandshakeError::Refused { reason, message }) = client.error() else {
            panic!("{:?}", client.error())
        };
        assert_eq!(*reason, ByeReason::UNSUPPORTED);
        assert!(message.contains("exceeds the host's limit"), "{message}");
    }

    #[test]
    fn bitrate_zero_in_the_hello_takes_the_hosts_default() {
        let mut host = HostHandshake::new(policy());
        let mut client = ClientHandshake::new(Hello {
            bitrate_kbps: 0,
            ..hello()
        });
        run(&mut host, &mut client);
        assert_eq!(client.established().unwrap().bitrate_kbps, 10_000);
    }

    #[test]
    fn oversized_mode_is_refused() {
        let mut host = HostHandshake::new(policy());
        let mut client = ClientHandshake::new(Hello {
            mode: Mode::new(7680, 4320, 60),
            ..hello()
        });
        run(&mut host, &mut client);
        assert!(matches!(
            client.error(),
            Some(HandshakeError::Refused {
                reason: ByeReason::UNSUPPORTED,
                ..
            })
        ));
    }
}
