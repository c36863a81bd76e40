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
    #[error("host refused the session ({reason}): {message}")]
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
                    name(&other)
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
        hello
            .mode
            .validate()
            .map_err(|e| unsupported(format!("requested mode: {e}")))?;
        let m = hello.mode;
        if m.width > p.max_mode.width
            || m.height > p.max_mode.height
            || m.refresh_mhz > p.max_mode.refresh_mhz
        {
            return Err(unsupported(format!(
                "mode {m} exceeds the host's limit {}",
                p.max_mode
            )));
        }
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
        let bitrate = match hello.bitrate_kbps {
            0 => p.default_bitrate_kbps,
            b => b.clamp(p.bitrate_range_kbps.0, p.bitrate_range_kbps.1),
        };
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
            mode: m,
            bitrate_kbps: bitrate,
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
                    HandshakeError::Protocol(format!("unexpected {} before Welcome", name(&other)));
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

fn name(m: &Message) -> &'static str {
    match m {
        Message::Hello(_) => "Hello",
        Message::Welcome(_) => "Welcome",
        Message::Start => "Start",
        Message::RequestKeyframe { .. } => "RequestKeyframe",
        Message::Reconfigure { .. } => "Reconfigure",
        Message::Reconfigured { .. } => "Reconfigured",
        Message::ClockProbe(_) => "ClockProbe",
        Message::ClockReply(_) => "ClockReply",
        Message::Stats(_) => "Stats",
        Message::Bye { .. } => "Bye",
        Message::Unknown { .. } => "unknown message",
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
