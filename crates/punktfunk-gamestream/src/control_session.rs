//! One session's control stream as a state machine: which ENet peer is the client, when the
//! session is over, and what the client's control packets mean.
//!
//! [`crate::control`] seals and opens single messages; this module is the session around
//! them. It owns no socket and no ENet host and reads no clock: the driver feeds it transport
//! events with `now` and carries out what it asks for. Peers are [`PeerId`]s, an opaque number
//! the driver maps to its transport's peer handle.
//!
//! ```
//! use punktfunk_core::input::Feedback;
//! use punktfunk_gamestream::control::{kind, ControlCipher};
//! use punktfunk_gamestream::control_session::{ControlEvent, ControlSession, PeerId, Verdict};
//! use punktfunk_gamestream::rtsp::Origin;
//! use std::time::Instant;
//!
//! let key = [7u8; 16];
//! let t = Instant::now();
//! let mut session = ControlSession::new(t, 0xC0FF_EE00, &key);
//! assert_eq!(session.handle_connect(t, PeerId(1), 0xC0FF_EE00), Verdict::Accept);
//! let mut client = ControlCipher::new(&key, Origin::Client);
//! session.handle_packet(t, PeerId(1), &client.seal(kind::REQUEST_IDR, &[0, 0]));
//! assert_eq!(session.poll_event(), Some(ControlEvent::Connected(PeerId(1))));
//! assert_eq!(session.poll_event(), Some(ControlEvent::KeyframeRequested));
//! session.handle_feedback(t, Feedback::Rumble { pad: 0, low: 1, high: 2 });
//! let tx = session.poll_transmit().unwrap();
//! assert_eq!(client.open(&tx.payload).unwrap().kind, kind::RUMBLE);
//! ```

use crate::control::{self as ctl, ClientMessage, ControlCipher, ControlError};
use crate::input::{self, Input, InputError};
use crate::rtsp::Origin;
use punktfunk_core::input::{Feedback, InputEvent};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// How long a new session waits for its control connection.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// An attached session without control traffic for this long ends (the client pings every
/// 100 ms).
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(10);
/// The ENet channel host messages go out on.
pub const CHANNEL: u8 = 0;

/// A transport peer, as the driver numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

/// What the driver does with a connecting peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it: it is this session's client.
    Accept,
    /// Disconnect it at once.
    Refuse(Refusal),
}

/// Why a connecting peer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Its connect data is not this session's (another launch, or a stranger).
    WrongConnectData {
        /// What it sent.
        got: u32,
    },
    /// The session's client is already attached.
    Occupied,
    /// The session is over.
    Ended,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::WrongConnectData { got } => {
                write!(f, "connect data {got:#010x} matches no session")
            }
            Refusal::Occupied => f.write_str("the session's client is already connected"),
            Refusal::Ended => f.write_str("the session has ended"),
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// The client closed the control stream.
    ClientDisconnected,
    /// No control traffic for [`SILENCE_TIMEOUT`].
    Silent,
    /// No control connection within [`START_TIMEOUT`] of the session's start.
    NeverConnected,
    /// The app ended by itself.
    AppEnded,
    /// The app was cancelled (`/cancel`).
    Cancelled,
    /// A new session took this one's place.
    Replaced,
    /// The session's video or audio failed (encoder, no ping).
    StreamFailed,
    /// The host is shutting down.
    HostShutdown,
}

impl EndReason {
    /// A short phrase for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::ClientDisconnected => "client disconnected",
            EndReason::Silent => "no control traffic for 10 s",
            EndReason::NeverConnected => "no control connection within 10 s",
            EndReason::AppEnded => "the app ended",
            EndReason::Cancelled => "the session was cancelled",
            EndReason::Replaced => "replaced by a new session",
            EndReason::StreamFailed => "the stream failed",
            EndReason::HostShutdown => "the host is shutting down",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a control packet was dropped. Always the sender's fault (or a stranger's).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// From a peer that is not this session's attached client.
    NotAttached,
    /// The envelope does not authenticate under the launch key.
    Unauthentic,
    /// Not a well-formed envelope, or an authentic message too short for its type.
    Malformed(ControlError),
    /// An authentic input message whose packet does not decode.
    BadInput(InputError),
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::NotAttached => f.write_str("from a peer not attached to the session"),
            DropReason::Unauthentic => f.write_str("failed authentication"),
            DropReason::Malformed(e) => write!(f, "malformed: {e}"),
            DropReason::BadInput(e) => write!(f, "bad input: {e}"),
        }
    }
}

/// Something the driver acts on. Exhaustive on purpose: a new event is something every driver
/// has to decide about.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlEvent {
    /// The session's client is attached on this peer; its transport timeouts are the driver's
    /// to set.
    Connected(PeerId),
    /// Make the next frame a keyframe. Reference invalidation asks for this too: a host that
    /// does not track references answers it with an IDR.
    KeyframeRequested,
    /// Input to inject.
    Input(InputEvent),
    /// One character typed on the client's on-screen keyboard.
    Text(String),
    /// The client's per-frame FEC report.
    FecStatus {
        /// Frame number.
        frame: u32,
        /// Data shards received.
        received_data: u16,
        /// Parity shards received.
        received_parity: u16,
        /// Data shards in the frame.
        total_data: u16,
    },
    /// A packet was dropped (already counted in [`ControlStats`]); for logs.
    Dropped(DropReason),
    /// The session is over; the last event. Transmits still queued (the termination message)
    /// go out before the driver lets go of the machine.
    Ended(EndReason),
}

/// A sealed message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Who gets it.
    pub peer: PeerId,
    /// The ENet channel ([`CHANNEL`]); every host message is sent reliably.
    pub channel: u8,
    /// The packet payload (an encrypted control envelope).
    pub payload: Vec<u8>,
    /// Disconnect the peer once this has been delivered (after the termination message).
    pub disconnect_after: bool,
}

/// Dropped control packets by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// From a peer that is not attached.
    pub not_attached: u64,
    /// Failed authentication.
    pub unauthentic: u64,
    /// Malformed envelopes or messages.
    pub malformed: u64,
    /// Input packets that do not decode.
    pub bad_input: u64,
}

impl DropCounts {
    /// All dropped packets.
    pub fn total(&self) -> u64 {
        self.not_attached + self.unauthentic + self.malformed + self.bad_input
    }
}

/// The session's control counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlStats {
    /// Authentic messages from the client.
    pub messages: u64,
    /// Dropped packets, by cause.
    pub dropped: DropCounts,
    /// Peers refused at connect.
    pub refused_peers: u64,
    /// Keyframe requests (IDR requests and reference invalidations).
    pub idr_requests: u64,
    /// Input events handed out ([`ControlEvent::Input`]).
    pub input_events: u64,
    /// Input packets by kind (`key`, `mouse-move`, `text`, `unmapped-key`, `unknown`, the
    /// unmodelled kinds' names, …). The kinds are a fixed set of names, so this stays small.
    pub input_kinds: BTreeMap<&'static str, u64>,
    /// Rumble messages sealed for the client.
    pub rumble_sent: u64,
}

#[derive(Debug, Clone, Copy)]
enum Link {
    Waiting,
    Attached { peer: PeerId, last_heard: Instant },
    Ended,
}

/// The control stream of one GameStream session, from ANNOUNCE until it ends.
///
/// Calling order, for a driver that owns the transport (an ENet host):
///
/// 1. [`ControlSession::new`] when the session starts (RTSP ANNOUNCE accepted).
/// 2. For each transport event, one call: a connect → [`ControlSession::handle_connect`]
///    (then keep or drop the peer as the [`Verdict`] says), a disconnect →
///    [`ControlSession::handle_disconnect`], a packet → [`ControlSession::handle_packet`].
///    For each host-side cause: the injector's feedback → [`ControlSession::handle_feedback`];
///    the app ending, `/cancel`, a replacing session, a failed stream, shutdown →
///    [`ControlSession::end`]. When [`ControlSession::poll_timeout`] passes →
///    [`ControlSession::handle_timeout`].
/// 3. After each of those, drain [`ControlSession::poll_transmit`] until `None` (send each
///    reliably; disconnect its peer after it if asked), then [`ControlSession::poll_event`]
///    until `None`, then wait for the next transport event or the new `poll_timeout`.
/// 4. After [`ControlEvent::Ended`], flush the transport and drop the machine.
///
/// Every call applies the deadlines that passed by `now` before anything else, so the outcome
/// depends only on the sequence of inputs and their times, not on how often the driver calls
/// [`ControlSession::handle_timeout`].
#[derive(Debug)]
pub struct ControlSession {
    connect_data: u32,
    cipher: ControlCipher,
    started: Instant,
    link: Link,
    events: VecDeque<ControlEvent>,
    transmits: VecDeque<Transmit>,
    stats: ControlStats,
}

impl ControlSession {
    /// A session started at `now`, waiting for the peer that connects with `connect_data`
    /// (SETUP's `X-SS-Connect-Data`), its messages sealed under the launch key `key`.
    pub fn new(now: Instant, connect_data: u32, key: &[u8; 16]) -> ControlSession {
        ControlSession {
            connect_data,
            cipher: ControlCipher::new(key, Origin::Host),
            started: now,
            link: Link::Waiting,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            stats: ControlStats::default(),
        }
    }

    /// A peer connected with `data` in its ENet CONNECT.
    pub fn handle_connect(&mut self, now: Instant, peer: PeerId, data: u32) -> Verdict {
        self.handle_timeout(now);
        let refusal = match self.link {
            Link::Ended => Refusal::Ended,
            Link::Attached { .. } => Refusal::Occupied,
            Link::Waiting if data != self.connect_data => Refusal::WrongConnectData { got: data },
            Link::Waiting => {
                self.link = Link::Attached {
                    peer,
                    last_heard: now,
                };
                self.events.push_back(ControlEvent::Connected(peer));
                return Verdict::Accept;
            }
        };
        self.stats.refused_peers += 1;
        Verdict::Refuse(refusal)
    }

    /// A peer disconnected (or its transport timed out).
    pub fn handle_disconnect(&mut self, now: Instant, peer: PeerId) {
        self.handle_timeout(now);
        if self.attached() == Some(peer) {
            self.link = Link::Ended;
            self.events
                .push_back(ControlEvent::Ended(EndReason::ClientDisconnected));
        }
    }

    /// A packet arrived from `peer`.
    pub fn handle_packet(&mut self, now: Instant, peer: PeerId, packet: &[u8]) {
        self.handle_timeout(now);
        if self.attached() != Some(peer) {
            return self.drop_packet(DropReason::NotAttached);
        }
        let msg = match self.cipher.open(packet) {
            Ok(m) => m,
            Err(ControlError::Crypto) => return self.drop_packet(DropReason::Unauthentic),
            Err(e) => return self.drop_packet(DropReason::Malformed(e)),
        };
        // Only authentic messages count as the client being there: anyone can send ENet
        // packets that fail to open.
        if let Link::Attached { last_heard, .. } = &mut self.link {
            *last_heard = now;
        }
        self.stats.messages += 1;
        match ClientMessage::parse(&msg) {
            Ok(ClientMessage::RequestIdr | ClientMessage::InvalidateRefs { .. }) => {
                self.stats.idr_requests += 1;
                self.events.push_back(ControlEvent::KeyframeRequested);
            }
            Ok(ClientMessage::Input(p)) => self.input(&p),
            Ok(ClientMessage::FecStatus {
                frame,
                received_data,
                received_parity,
                total_data,
            }) => self.events.push_back(ControlEvent::FecStatus {
                frame,
                received_data,
                received_parity,
                total_data,
            }),
            // Start-up messages, pings and what this host has no use for: the traffic itself
            // was the point.
            Ok(_) => {}
            Err(e) => self.drop_packet(DropReason::Malformed(e)),
        }
    }

    /// Feedback from the session's injector, for the client's devices.
    pub fn handle_feedback(&mut self, now: Instant, feedback: Feedback) {
        self.handle_timeout(now);
        let Some(peer) = self.attached() else {
            return;
        };
        let Feedback::Rumble { pad, low, high } = feedback;
        let payload = self
            .cipher
            .seal(ctl::kind::RUMBLE, &ctl::rumble(u16::from(pad), low, high));
        self.transmits.push_back(Transmit {
            peer,
            channel: CHANNEL,
            payload,
            disconnect_after: false,
        });
        self.stats.rumble_sent += 1;
    }

    /// The host ends the session: an attached client is told with a graceful termination
    /// message and disconnected after it. Nothing happens once the session has ended.
    pub fn end(&mut self, now: Instant, why: EndReason) {
        self.handle_timeout(now);
        match self.link {
            Link::Ended => {}
            Link::Waiting => self.finish(why),
            Link::Attached { peer, .. } => self.terminate(peer, why),
        }
    }

    /// Applies the deadlines that passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.link {
            Link::Waiting if now >= self.started + START_TIMEOUT => {
                self.finish(EndReason::NeverConnected);
            }
            Link::Attached { peer, last_heard } if now >= last_heard + SILENCE_TIMEOUT => {
                self.terminate(peer, EndReason::Silent);
            }
            _ => {}
        }
    }

    /// When [`ControlSession::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.link {
            Link::Waiting => Some(self.started + START_TIMEOUT),
            Link::Attached { last_heard, .. } => Some(last_heard + SILENCE_TIMEOUT),
            Link::Ended => None,
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ControlEvent> {
        self.events.pop_front()
    }

    /// The counters so far.
    pub fn stats(&self) -> &ControlStats {
        &self.stats
    }

    /// The attached client's peer, if any.
    pub fn attached(&self) -> Option<PeerId> {
        match self.link {
            Link::Attached { peer, .. } => Some(peer),
            _ => None,
        }
    }

    /// Whether the session is over.
    pub fn is_ended(&self) -> bool {
        matches!(self.link, Link::Ended)
    }

    /// When the session started.
    pub fn started(&self) -> Instant {
        self.started
    }

    fn input(&mut self, packet: &[u8]) {
        let kind = match input::decode(packet) {
            Ok(Input::Event(ev)) => {
                let kind = event_kind(&ev);
                self.stats.input_events += 1;
                self.events.push_back(ControlEvent::Input(ev));
                kind
            }
            Ok(Input::Text(t)) => {
                self.events.push_back(ControlEvent::Text(t));
                "text"
            }
            Ok(Input::UnmappedKey(_)) => "unmapped-key",
            Ok(Input::Unmodelled(what)) => what,
            Ok(Input::Unknown(_)) => "unknown",
            Err(e) => return self.drop_packet(DropReason::BadInput(e)),
        };
        *self.stats.input_kinds.entry(kind).or_default() += 1;
    }

    fn drop_packet(&mut self, why: DropReason) {
        let d = &mut self.stats.dropped;
        match why {
            DropReason::NotAttached => d.not_attached += 1,
            DropReason::Unauthentic => d.unauthentic += 1,
            DropReason::Malformed(_) => d.malformed += 1,
            DropReason::BadInput(_) => d.bad_input += 1,
        }
        self.events.push_back(ControlEvent::Dropped(why));
    }

    fn terminate(&mut self, peer: PeerId, why: EndReason) {
        let payload = self.cipher.seal(
            ctl::kind::TERMINATION,
            &ctl::termination(ctl::TERMINATION_GRACEFUL),
        );
        self.transmits.push_back(Transmit {
            peer,
            channel: CHANNEL,
            payload,
            disconnect_after: true,
        });
        self.finish(why);
    }

    fn finish(&mut self, why: EndReason) {
        self.link = Link::Ended;
        self.events.push_back(ControlEvent::Ended(why));
    }
}

/// A short name for an input event's kind, for counters and logs.
pub fn event_kind(ev: &InputEvent) -> &'static str {
    ev.kind()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary time origin
mod tests {
    use super::*;
    use crate::control::{kind, Message};
    use crate::input::magic;
    use punktfunk_core::input::Modifiers;

    const KEY: [u8; 16] = [0x42; 16];
    const DATA: u32 = 0x1234_5678;
    const CLIENT: PeerId = PeerId(7);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn client() -> ControlCipher {
        ControlCipher::new(&KEY, Origin::Client)
    }

    /// A session started at `t0` with its client attached at `t0`; the connect event drained.
    fn attached(t0: Instant) -> ControlSession {
        let mut s = ControlSession::new(t0, DATA, &KEY);
        assert_eq!(s.handle_connect(t0, CLIENT, DATA), Verdict::Accept);
        assert_eq!(s.poll_event(), Some(ControlEvent::Connected(CLIENT)));
        s
    }

    fn events(s: &mut ControlSession) -> Vec<ControlEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    /// An input packet the way the client builds one: BE32 size, LE32 magic, body.
    fn input(magic: u32, body: &[u8]) -> Vec<u8> {
        let mut p = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        p.extend_from_slice(&magic.to_le_bytes());
        p.extend_from_slice(body);
        p
    }

    /// Opens a host transmit as the client does and checks it is a graceful termination
    /// that disconnects.
    fn assert_termination(t: &Transmit, c: &ControlCipher) {
        assert_eq!((t.peer, t.channel, t.disconnect_after), (CLIENT, 0, true));
        let m = c.open(&t.payload).expect("the client opens it");
        assert_eq!(
            m,
            Message {
                kind: kind::TERMINATION,
                payload: vec![0x80, 0x03, 0x00, 0x23],
            }
        );
    }

    #[test]
    fn a_silent_client_is_dropped_after_ten_seconds_not_before() {
        let t0 = Instant::now();
        let mut s = attached(t0);
        let mut c = client();
        // Its last message at 1 s: silence counts from there.
        s.handle_packet(t0 + secs(1.0), CLIENT, &c.seal(kind::PING, &[0; 6]));
        assert_eq!(s.poll_timeout(), Some(t0 + secs(11.0)));
        s.handle_timeout(t0 + secs(10.9));
        assert!(!s.is_ended());
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(events(&mut s), vec![]);
        s.handle_timeout(t0 + secs(11.0));
        assert!(s.is_ended());
        assert_termination(&s.poll_transmit().unwrap(), &c);
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(events(&mut s), vec![ControlEvent::Ended(EndReason::Silent)]);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn silence_is_measured_from_the_last_authentic_message() {
        let t0 = Instant::now();
        let mut s = attached(t0);
        let mut c = client();
        // Pings every 100 ms for 20 s keep it alive, …
        for i in 1..=200 {
            let t = t0 + Duration::from_millis(100 * i);
            s.handle_packet(t, CLIENT, &c.seal(kind::PING, &[0; 6]));
        }
        assert!(!s.is_ended());
        // … packets that do not open do not.
        let forged = ControlCipher::new(&[0; 16], Origin::Client).seal(kind::PING, &[0; 6]);
        for i in 1..=99 {
            let t = t0 + secs(20.0) + Duration::from_millis(100 * i);
            s.handle_packet(t, CLIENT, &forged);
        }
        assert!(!s.is_ended());
        s.handle_packet(t0 + secs(30.0), CLIENT, &forged);
        assert!(s.is_ended());
        assert!(events(&mut s).contains(&ControlEvent::Ended(EndReason::Silent)));
    }

    #[test]
    fn no_control_connection_within_ten_seconds_ends_the_session() {
        let t0 = Instant::now();
        let mut s = ControlSession::new(t0, DATA, &KEY);
        assert_eq!(s.poll_timeout(), Some(t0 + START_TIMEOUT));
        s.handle_timeout(t0 + secs(9.9));
        assert!(!s.is_ended());
        s.handle_timeout(t0 + START_TIMEOUT);
        assert_eq!(
            events(&mut s),
            vec![ControlEvent::Ended(EndReason::NeverConnected)]
        );
        // Nobody to tell.
        assert_eq!(s.poll_transmit(), None);
        // A late client is refused, even without a timer call in between.
        let mut late = ControlSession::new(t0, DATA, &KEY);
        assert_eq!(
            late.handle_connect(t0 + secs(10.5), CLIENT, DATA),
            Verdict::Refuse(Refusal::Ended)
        );
        assert_eq!(
            events(&mut late),
            vec![ControlEvent::Ended(EndReason::NeverConnected)]
        );
    }

    #[test]
    fn only_the_peer_with_the_connect_data_is_attached_and_only_one() {
        let t0 = Instant::now();
        let mut s = ControlSession::new(t0, DATA, &KEY);
        assert_eq!(
            s.handle_connect(t0, PeerId(1), DATA ^ 1),
            Verdict::Refuse(Refusal::WrongConnectData { got: DATA ^ 1 })
        );
        assert_eq!(s.attached(), None);
        assert_eq!(s.handle_connect(t0, CLIENT, DATA), Verdict::Accept);
        assert_eq!(s.attached(), Some(CLIENT));
        // A second peer with the right data still finds the seat taken.
        assert_eq!(
            s.handle_connect(t0, PeerId(2), DATA),
            Verdict::Refuse(Refusal::Occupied)
        );
        assert_eq!(s.stats().refused_peers, 2);
        // Packets from the refused peers reach nothing, even sealed with the right key.
        let mut c = client();
        s.handle_packet(t0, PeerId(2), &c.seal(kind::REQUEST_IDR, &[0, 0]));
        assert_eq!(s.stats().dropped.not_attached, 1);
        assert_eq!(s.stats().idr_requests, 0);
        // Their disconnects do not end the session; the client's does, without a message.
        s.handle_disconnect(t0, PeerId(2));
        assert!(!s.is_ended());
        s.handle_disconnect(t0, CLIENT);
        assert!(s.is_ended());
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(
            events(&mut s),
            vec![
                ControlEvent::Connected(CLIENT),
                ControlEvent::Dropped(DropReason::NotAttached),
                ControlEvent::Ended(EndReason::ClientDisconnected),
            ]
        );
        assert_eq!(
            s.handle_connect(t0, CLIENT, DATA),
            Verdict::Refuse(Refusal::Ended)
        );
    }

    #[test]
    fn the_host_ending_the_session_sends_the_termination_message() {
        for why in [
            EndReason::AppEnded,
            EndReason::Cancelled,
            EndReason::HostShutdown,
            EndReason::Replaced,
        ] {
            let t0 = Instant::now();
            let mut s = attached(t0);
            let c = client();
            s.end(t0 + secs(3.0), why);
            assert_termination(&s.poll_transmit().unwrap(), &c);
            assert_eq!(events(&mut s), vec![ControlEvent::Ended(why)]);
            // Once only.
            s.end(t0 + secs(3.0), EndReason::HostShutdown);
            s.handle_timeout(t0 + secs(60.0));
            assert_eq!(s.poll_transmit(), None);
            assert_eq!(events(&mut s), vec![]);
        }
        // Before the client connected there is nobody to tell.
        let t0 = Instant::now();
        let mut s = ControlSession::new(t0, DATA, &KEY);
        s.end(t0, EndReason::AppEnded);
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(
            events(&mut s),
            vec![ControlEvent::Ended(EndReason::AppEnded)]
        );
    }

    #[test]
    fn the_termination_follows_the_rumble_in_sequence() {
        // Both come from the host's one sequence counter, in order.
        let t0 = Instant::now();
        let mut s = attached(t0);
        s.handle_feedback(
            t0,
            Feedback::Rumble {
                pad: 0,
                low: 1,
                high: 2,
            },
        );
        s.end(t0, EndReason::AppEnded);
        let a = s.poll_transmit().unwrap();
        let b = s.poll_transmit().unwrap();
        assert_eq!(&a.payload[4..8], &[0, 0, 0, 0]);
        assert_eq!(&b.payload[4..8], &[1, 0, 0, 0]);
        assert!(!a.disconnect_after && b.disconnect_after);
    }

    #[test]
    fn malformed_and_unauthentic_packets_are_counted_and_dropped() {
        let t0 = Instant::now();
        let mut s = attached(t0);
        let mut c = client();
        // Not an envelope, truncated, wrong length.
        s.handle_packet(t0, CLIENT, &[]);
        s.handle_packet(t0, CLIENT, &[0x06, 0x02, 0, 0]);
        let good = c.seal(kind::REQUEST_IDR, &[0, 0]);
        s.handle_packet(t0, CLIENT, &good[..good.len() - 1]);
        // Tampered, the wrong key, and the host's own direction reflected back.
        let mut tampered = c.seal(kind::REQUEST_IDR, &[0, 0]);
        tampered[25] ^= 1;
        s.handle_packet(t0, CLIENT, &tampered);
        let other = ControlCipher::new(&[1; 16], Origin::Client).seal(kind::REQUEST_IDR, &[0, 0]);
        s.handle_packet(t0, CLIENT, &other);
        let reflected = ControlCipher::new(&KEY, Origin::Host).seal(kind::REQUEST_IDR, &[0, 0]);
        s.handle_packet(t0, CLIENT, &reflected);
        // Authentic but too short for its type.
        s.handle_packet(t0, CLIENT, &c.seal(kind::INVALIDATE_REFS, &[0; 8]));
        // Authentic input that does not decode.
        s.handle_packet(t0, CLIENT, &c.seal(kind::INPUT, &[0, 0, 0, 99, 3, 0, 0, 0]));
        // Garbage of every length.
        for n in 0..300usize {
            let junk: Vec<u8> = (0..n).map(|i| (i * 31 + n) as u8).collect();
            s.handle_packet(t0, CLIENT, &junk);
        }
        let st = s.stats().clone();
        assert_eq!(st.dropped.unauthentic, 3);
        assert_eq!(st.dropped.bad_input, 1);
        assert_eq!(st.dropped.malformed, 3 + 1 + 300);
        assert_eq!(st.dropped.total(), 308);
        assert_eq!(st.messages, 2, "the short RFI and the bad input opened");
        assert_eq!(st.idr_requests, 0);
        let evs = events(&mut s);
        assert_eq!(evs.len(), 308);
        assert!(evs.iter().all(|e| matches!(e, ControlEvent::Dropped(_))));
        assert!(evs.contains(&ControlEvent::Dropped(DropReason::Unauthentic)));
        // None of it hurt the session: the good packet still works.
        s.handle_packet(t0, CLIENT, &c.seal(kind::REQUEST_IDR, &[0, 0]));
        assert_eq!(events(&mut s), vec![ControlEvent::KeyframeRequested]);
    }

    #[test]
    fn control_messages_become_events() {
        let t0 = Instant::now();
        let mut s = attached(t0);
        let mut c = client();
        s.handle_packet(t0, CLIENT, &c.seal(kind::REQUEST_IDR, &[0, 0]));
        let rfi = [3u64.to_le_bytes(), 5u64.to_le_bytes(), [0; 8]].concat();
        s.handle_packet(t0, CLIENT, &c.seal(kind::INVALIDATE_REFS, &rfi));
        let mut fec = vec![0u8; 21];
        fec[..4].copy_from_slice(&9u32.to_be_bytes());
        fec[10..12].copy_from_slice(&4u16.to_be_bytes());
        fec[14..16].copy_from_slice(&3u16.to_be_bytes());
        fec[16..18].copy_from_slice(&1u16.to_be_bytes());
        s.handle_packet(t0, CLIENT, &c.seal(kind::FEC_STATUS, &fec));
        for k in [
            kind::START_A,
            kind::START_B,
            kind::PING,
            kind::LTR_ACK,
            0x7777,
        ] {
            s.handle_packet(t0, CLIENT, &c.seal(k, &[0; 8]));
        }
        assert_eq!(
            events(&mut s),
            vec![
                ControlEvent::KeyframeRequested,
                ControlEvent::KeyframeRequested,
                ControlEvent::FecStatus {
                    frame: 9,
                    received_data: 3,
                    received_parity: 1,
                    total_data: 4
                },
            ]
        );
        assert_eq!(s.stats().idr_requests, 2);
        assert_eq!(s.stats().messages, 8);
        assert_eq!(s.stats().dropped.total(), 0);
    }

    #[test]
    fn input_is_decoded_and_counted_by_kind() {
        let t0 = Instant::now();
        let mut s = attached(t0);
        let mut c = client();
        let mut send = |s: &mut ControlSession, p: Vec<u8>| {
            s.handle_packet(t0, CLIENT, &c.seal(kind::INPUT, &p));
        };
        // 'A' down twice, one relative mouse move.
        for _ in 0..2 {
            send(&mut s, input(magic::KEY_DOWN, &[0, 0x41, 0x80, 0, 0, 0]));
        }
        send(&mut s, input(magic::MOUSE_REL, &[0, 1, 0xFF, 0xFF]));
        // Text, an unmapped key, a known type with no model, an unknown type.
        send(&mut s, input(magic::TEXT, "é".as_bytes()));
        send(&mut s, input(magic::KEY_DOWN, &[0, 0xFF, 0x80, 0, 0, 0]));
        send(&mut s, input(magic::HAPTICS, &[1, 0]));
        send(&mut s, input(0x0BAD_F00D, &[]));
        let key = InputEvent::Key {
            code: 30,
            down: true,
            modifiers: Modifiers(0),
        };
        assert_eq!(
            events(&mut s),
            vec![
                ControlEvent::Input(key),
                ControlEvent::Input(key),
                ControlEvent::Input(InputEvent::MouseMove { dx: 1, dy: -1 }),
                ControlEvent::Text("é".into()),
            ]
        );
        let st = s.stats();
        assert_eq!(st.input_events, 3);
        let kinds: Vec<_> = st.input_kinds.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            kinds,
            vec![
                ("haptics enable", 1),
                ("key", 2),
                ("mouse-move", 1),
                ("text", 1),
                ("unknown", 1),
                ("unmapped-key", 1),
            ]
        );
    }

    #[test]
    fn rumble_is_sealed_for_the_client() {
        let t0 = Instant::now();
        let mut s = ControlSession::new(t0, DATA, &KEY);
        // Nobody attached: nobody to rumble.
        let rumble = Feedback::Rumble {
            pad: 2,
            low: 0x1234,
            high: 0xABCD,
        };
        s.handle_feedback(t0, rumble);
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(s.handle_connect(t0, CLIENT, DATA), Verdict::Accept);
        s.handle_feedback(t0, rumble);
        let t = s.poll_transmit().unwrap();
        assert_eq!((t.peer, t.channel, t.disconnect_after), (CLIENT, 0, false));
        let m = client().open(&t.payload).unwrap();
        assert_eq!(m.kind, kind::RUMBLE);
        assert_eq!(
            m.payload,
            [
                &0u32.to_le_bytes()[..],
                &2u16.to_le_bytes(),
                &0x1234u16.to_le_bytes(),
                &0xABCDu16.to_le_bytes()
            ]
            .concat()
        );
        assert_eq!(s.stats().rumble_sent, 1);
        // Rumble does not count as the client's traffic.
        s.handle_timeout(t0 + SILENCE_TIMEOUT);
        assert!(s.is_ended());
    }
}
