//! The host's half of a punktfunk/1 session after the handshake.

use super::end::{ControlError, Ended, Side};
use super::{datagram, ByeReason, ClockReply, Message, Mode, ReceiverStats, Welcome};
use crate::handshake::{Admitted, HostPolicy, ModeRefused};
use crate::input::InputEvent;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long the pipeline may take to answer a reconfigure before the host gives up with
/// `Bye(internal error)`. Rebuilding the source and opening a software encoder takes well under
/// a second; a pipeline silent for this long is stuck, and the client would otherwise wait on a
/// frozen picture forever.
pub const RECONFIGURE_TIMEOUT: Duration = Duration::from_secs(10);

/// Least time between two keyframes produced on request. A keyframe costs several times a
/// normal frame's bytes, so a client flooding `RequestKeyframe` must not turn the host into an
/// amplifier; requests inside the interval are deferred to its end (never dropped, or a loss
/// right after a keyframe would leave the client without one). Honest clients ask at most every
/// 100 ms and never wait on this.
pub const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(50);

/// What the host's driver must do next. Drained from [`HostControl::poll_action`] in order.
///
/// Deliberately exhaustive: a new kind of action must fail to compile in every driver rather than
/// fall into a catch-all arm that ignores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAction {
    /// Send this message on the control stream.
    Send(Message),
    /// Make the next frame a keyframe.
    Keyframe {
        /// The first frame the client could not rebuild (for logs).
        frame: u32,
    },
    /// Rebuild the source and encoder at this mode and bitrate (already admitted by the policy,
    /// a bitrate of 0 in the request already resolved to the current one), then report the
    /// result with [`HostControl::handle_reconfigured`] or
    /// [`HostControl::handle_reconfigure_failed`].
    Reconfigure {
        /// The new mode.
        mode: Mode,
        /// The bitrate to target, kbit/s.
        bitrate_kbps: u32,
    },
    /// Inject these input events, in order.
    Input(Vec<InputEvent>),
    /// The session is over: stop the pipeline and close the connection. Always the last action;
    /// a Bye to send, if any, comes before it.
    End(Ended),
}

/// The driver reported a pipeline answer while no reconfigure was in flight: a bug in the
/// driver, not the client's doing.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("the pipeline answered a reconfigure, but none was in flight")]
#[non_exhaustive]
pub struct NoReconfigurePending;

/// Counters of one session's control plane (host side).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostControlStats {
    /// Control messages handled (before the end).
    pub messages: u64,
    /// Messages of a type this build does not know, skipped.
    pub unknown_messages: u64,
    /// `RequestKeyframe` messages received.
    pub keyframe_requests: u64,
    /// Keyframes asked of the pipeline ([`HostAction::Keyframe`]).
    pub keyframes: u64,
    /// Keyframe requests held back by [`KEYFRAME_MIN_INTERVAL`] (each served late, or merged
    /// with one already held back).
    pub keyframes_deferred: u64,
    /// Clock probes answered.
    pub clock_probes: u64,
    /// Receiver reports received.
    pub receiver_reports: u64,
    /// The latest receiver report.
    pub last_receiver_report: Option<ReceiverStats>,
    /// `Reconfigure` messages received.
    pub reconfigures_requested: u64,
    /// Reconfigures refused by the policy (the session then ends).
    pub reconfigures_refused: u64,
    /// Queued reconfigures replaced by a newer one before they reached the pipeline.
    pub reconfigures_superseded: u64,
    /// Reconfigures the pipeline completed (`Reconfigured` sent).
    pub reconfigures_done: u64,
    /// Input datagrams decoded.
    pub input_datagrams: u64,
    /// Input events decoded.
    pub input_events: u64,
    /// Input datagrams dropped as malformed.
    pub input_malformed: u64,
    /// Datagrams dropped for an unknown first byte (or none).
    pub datagrams_unknown: u64,
    /// Inputs that arrived after the end and were ignored.
    pub ignored_after_end: u64,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    target: Admitted,
    deadline: Instant,
    /// The newest request that arrived meanwhile: mode already admitted, bitrate as requested
    /// (0 = keep), resolved when it is issued so "keep" means the rate the first one set.
    queued: Option<(Mode, u32)>,
}

/// The host side of a punktfunk/1 session after the handshake, as a sans-IO state machine.
///
/// It decides everything the host's control loop used to decide inline: answers clock probes
/// with the host clock, admits `Reconfigure` through the same [`HostPolicy::admit`] as the
/// handshake, keeps at most one reconfigure in flight, rate-limits keyframes, decodes input
/// datagrams, and ends the session with the right `Bye` on a protocol error, a pipeline failure
/// or a shutdown. It performs no I/O and reads no clock: the driver owns the control stream,
/// the datagram socket, the pipeline, the injector and the timer.
///
/// # Driving it
///
/// 1. Build it from the handshake's result: [`HostControl::new`].
/// 2. Feed each input as it happens, with the current time: [`handle_message`],
///    [`handle_malformed`], [`handle_closed`], [`handle_datagram`], the pipeline's answers
///    ([`handle_reconfigured`], [`handle_reconfigure_failed`], [`handle_pipeline_failed`]) and
///    [`shutdown`]. When the clock reaches [`poll_timeout`], call [`handle_timeout`].
/// 3. After every call of step 2, drain [`poll_action`] until it returns `None` and execute the
///    actions in the order given. A Bye comes out as [`HostAction::Send`] before
///    [`HostAction::End`], so sending in order delivers it before the driver tears down.
/// 4. After [`HostAction::End`] the machine ignores every input (counted in
///    [`HostControlStats::ignored_after_end`]) and [`poll_timeout`] is `None`.
///
/// A second `Reconfigure` while one is in flight is admitted at once (a refused one ends the
/// session as usual) and queued; a third replaces the queued one. When the pipeline answers the
/// first, the host sends its `Reconfigured` and issues the queued one. So the pipeline never
/// rebuilds twice at once, and a client resizing a window in steps ends at its last size.
///
/// [`handle_message`]: HostControl::handle_message
/// [`handle_malformed`]: HostControl::handle_malformed
/// [`handle_closed`]: HostControl::handle_closed
/// [`handle_datagram`]: HostControl::handle_datagram
/// [`handle_reconfigured`]: HostControl::handle_reconfigured
/// [`handle_reconfigure_failed`]: HostControl::handle_reconfigure_failed
/// [`handle_pipeline_failed`]: HostControl::handle_pipeline_failed
/// [`shutdown`]: HostControl::shutdown
/// [`poll_timeout`]: HostControl::poll_timeout
/// [`handle_timeout`]: HostControl::handle_timeout
/// [`poll_action`]: HostControl::poll_action
///
/// ```
/// use std::time::{Duration, Instant};
/// use punktfunk_core::control::{ClockProbe, HostAction, HostControl, Message, Mode, Welcome};
/// use punktfunk_core::handshake::HostPolicy;
/// # fn setup() -> (Welcome, HostPolicy) {
/// #     use punktfunk_core::control::{Codec, Hello, PROTOCOL_VERSION};
/// #     use punktfunk_core::crypto::CipherSuite;
/// #     use punktfunk_core::handshake::{ClientHandshake, HostHandshake};
/// #     let policy = HostPolicy {
/// #         codecs: vec![Codec::H264], max_mode: Mode::new(1920, 1080, 60),
/// #         default_bitrate_kbps: 8000, bitrate_range_kbps: (500, 50_000),
/// #         default_fec_percent: 20, fec_parity_range: (2, 1024), shard_len: 1400,
/// #         suite: CipherSuite::AES_128_GCM, data_port: 47801,
/// #     };
/// #     let mut host = HostHandshake::new(policy.clone());
/// #     let mut client = ClientHandshake::new(Hello {
/// #         version: PROTOCOL_VERSION, mode: Mode::new(1280, 720, 60), codecs: vec![Codec::H264],
/// #         bitrate_kbps: 0, fec_percent: None, client_name: "doc".into(), app: String::new(),
/// #     });
/// #     let mut rnd = |b: &mut [u8]| b.fill(7);
/// #     while let Some(m) = client.poll_message() { host.handle(m, &mut rnd); }
/// #     while let Some(m) = host.poll_message() { client.handle(m); }
/// #     while let Some(m) = client.poll_message() { host.handle(m, &mut rnd); }
/// #     (host.established().unwrap().0.clone(), policy)
/// # }
/// let (welcome, policy) = setup(); // from a completed HostHandshake
/// let epoch = Instant::now(); // the host clock's zero (capture timestamps count from it)
/// let start = epoch + Duration::from_secs(3);
/// let mut hc = HostControl::new(&welcome, policy, epoch, start);
///
/// hc.handle_message(start, Message::ClockProbe(ClockProbe { id: 0, t0_us: 55 }));
/// let Some(HostAction::Send(Message::ClockReply(r))) = hc.poll_action() else { panic!() };
/// assert_eq!((r.id, r.t1_us), (0, 3_000_000));
///
/// // Past the host's 60 Hz limit: refused without reaching the pipeline.
/// let too_fast = Mode::new(1280, 720, 120);
/// hc.handle_message(start, Message::Reconfigure { mode: too_fast, bitrate_kbps: 0 });
/// assert!(matches!(hc.poll_action(), Some(HostAction::Send(Message::Bye { .. }))));
/// let Some(HostAction::End(end)) = hc.poll_action() else { panic!() };
/// assert!(!end.is_clean());
/// assert_eq!(hc.poll_action(), None);
/// ```
#[derive(Debug)]
pub struct HostControl {
    policy: HostPolicy,
    epoch: Instant,
    session_id: u64,
    mode: Mode,
    bitrate_kbps: u32,
    reconfigure: Option<InFlight>,
    last_keyframe: Option<Instant>,
    /// When a held-back keyframe is due, and the frame its first request named.
    deferred_keyframe: Option<(Instant, u32)>,
    actions: VecDeque<HostAction>,
    ended: bool,
    /// The latest time seen. Drivers stamp inputs from several tasks, so a `now` may arrive
    /// slightly older than one before it; deadlines must not move backwards when that happens.
    now: Instant,
    stats: HostControlStats,
}

impl HostControl {
    /// The control machine of an established session: `welcome` is the configuration the
    /// handshake agreed, `policy` the one it chose from (so Reconfigure obeys the same limits),
    /// `epoch` the zero of the host clock that clock replies and capture timestamps count from.
    pub fn new(welcome: &Welcome, policy: HostPolicy, epoch: Instant, now: Instant) -> Self {
        HostControl {
            policy,
            epoch,
            session_id: welcome.session_id,
            mode: welcome.mode,
            bitrate_kbps: welcome.bitrate_kbps,
            reconfigure: None,
            last_keyframe: None,
            deferred_keyframe: None,
            actions: VecDeque::new(),
            ended: false,
            now,
            stats: HostControlStats::default(),
        }
    }

    /// Feeds one decoded control message from the client.
    pub fn handle_message(&mut self, now: Instant, msg: Message) {
        let Some(now) = self.advance(now) else { return };
        self.stats.messages += 1;
        match msg {
            Message::RequestKeyframe { frame } => self.keyframe_requested(now, frame),
            Message::Reconfigure { mode, bitrate_kbps } => {
                self.reconfigure_requested(now, mode, bitrate_kbps)
            }
            Message::ClockProbe(p) => {
                self.stats.clock_probes += 1;
                // The reply leaves as soon as the driver drains it, so receive and send time
                // are the same instant to within the driver's latency.
                let t = self.host_us(now);
                self.actions
                    .push_back(HostAction::Send(Message::ClockReply(ClockReply {
                        id: p.id,
                        t0_us: p.t0_us,
                        t1_us: t,
                        t2_us: t,
                    })));
            }
            Message::Stats(s) => {
                self.stats.receiver_reports += 1;
                self.stats.last_receiver_report = Some(s);
            }
            Message::Bye { reason, message } => {
                let outcome = Ended::outcome_of_bye(reason, &message);
                self.end(Side::Client, Some(reason), message, outcome);
            }
            Message::Unknown { .. } => self.stats.unknown_messages += 1,
            other @ (Message::Hello(_)
            | Message::Welcome(_)
            | Message::Start
            | Message::Reconfigured { .. }
            | Message::ClockReply(_)
            | Message::PairStart(_)
            | Message::PairChallenge { .. }
            | Message::PairConfirm { .. }
            | Message::PairPending { .. }
            | Message::PairDone { .. }) => {
                self.protocol_error(format!("unexpected {} after the handshake", other.name()))
            }
        }
    }

    /// The control stream carried bytes that do not decode as a message; the framing is lost,
    /// so the session ends with `Bye(protocol error)`.
    pub fn handle_malformed(&mut self, now: Instant, detail: &str) {
        if self.advance(now).is_none() {
            return;
        }
        self.protocol_error(format!("malformed message: {detail}"));
    }

    /// The client finished its control stream without a Bye.
    pub fn handle_closed(&mut self, now: Instant) {
        if self.advance(now).is_none() {
            return;
        }
        self.end(Side::Client, None, String::new(), Err(ControlError::Closed));
    }

    /// Feeds one QUIC datagram from the client. Input batches become [`HostAction::Input`];
    /// malformed batches and unknown side-plane codes are counted and dropped.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        if self.advance(now).is_none() {
            return;
        }
        match datagram.split_first() {
            Some((&datagram::INPUT, batch)) => match InputEvent::decode_batch(batch) {
                Ok(events) => {
                    self.stats.input_datagrams += 1;
                    self.stats.input_events += events.len() as u64;
                    if !events.is_empty() {
                        self.actions.push_back(HostAction::Input(events));
                    }
                }
                Err(_) => self.stats.input_malformed += 1,
            },
            _ => self.stats.datagrams_unknown += 1,
        }
    }

    /// Runs the timers that are due: a held-back keyframe, the reconfigure deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(now) = self.advance(now) else { return };
        if let Some((due, frame)) = self.deferred_keyframe {
            if due <= now {
                self.emit_keyframe(now, frame);
            }
        }
        if self.reconfigure.is_some_and(|r| r.deadline <= now) {
            self.reconfigure = None;
            let e = ControlError::Pipeline(format!(
                "no answer to a reconfigure within {} s",
                RECONFIGURE_TIMEOUT.as_secs()
            ));
            self.fail(ByeReason::INTERNAL, format!("reconfigure failed: {e}"), e);
        }
    }

    /// The pipeline switched to the in-flight reconfigure's mode: `first_frame` is the index of
    /// the first frame in it (a keyframe), `bitrate_kbps` the rate it now targets. Sends
    /// `Reconfigured` and issues a queued reconfigure, if any.
    ///
    /// An answer arriving after the session ended is ignored; one with nothing in flight is the
    /// driver's mistake and changes nothing.
    pub fn handle_reconfigured(
        &mut self,
        now: Instant,
        first_frame: u32,
        bitrate_kbps: u32,
    ) -> Result<(), NoReconfigurePending> {
        let Some(now) = self.advance(now) else {
            return Ok(());
        };
        let done = self.reconfigure.take().ok_or(NoReconfigurePending)?;
        self.stats.reconfigures_done += 1;
        self.mode = done.target.mode;
        self.bitrate_kbps = bitrate_kbps;
        self.actions
            .push_back(HostAction::Send(Message::Reconfigured {
                mode: self.mode,
                bitrate_kbps,
                first_frame,
            }));
        if let Some((mode, bitrate_kbps)) = done.queued {
            self.issue_reconfigure(now, mode, bitrate_kbps);
        }
        Ok(())
    }

    /// The pipeline could not switch to the in-flight reconfigure's mode: the session ends with
    /// `Bye(internal error)` (the stream is in no defined mode any more).
    pub fn handle_reconfigure_failed(
        &mut self,
        now: Instant,
        detail: &str,
    ) -> Result<(), NoReconfigurePending> {
        if self.advance(now).is_none() {
            return Ok(());
        }
        self.reconfigure.take().ok_or(NoReconfigurePending)?;
        self.fail(
            ByeReason::INTERNAL,
            format!("reconfigure failed: {detail}"),
            ControlError::Pipeline(detail.to_owned()),
        );
        Ok(())
    }

    /// The pipeline failed on its own (source, encoder, send path): the session ends with
    /// `Bye(internal error)`.
    pub fn handle_pipeline_failed(&mut self, now: Instant, detail: &str) {
        if self.advance(now).is_none() {
            return;
        }
        self.fail(
            ByeReason::INTERNAL,
            detail.to_owned(),
            ControlError::Pipeline(detail.to_owned()),
        );
    }

    /// The host ends the session in order (it is shutting down, or a limit ran out): sends
    /// `Bye(reason, message)` and ends. [`ByeReason::SHUTDOWN`] is the reason for a host that
    /// stops serving.
    pub fn shutdown(&mut self, now: Instant, reason: ByeReason, message: &str) {
        if self.advance(now).is_none() {
            return;
        }
        self.send_bye(reason, message);
        self.end(Side::Host, Some(reason), message.to_owned(), Ok(()));
    }

    /// The next action for the driver, in order; `None` when there is nothing to do.
    pub fn poll_action(&mut self) -> Option<HostAction> {
        self.actions.pop_front()
    }

    /// When [`HostControl::handle_timeout`] must next be called; `None` while no timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        let keyframe = self.deferred_keyframe.map(|(t, _)| t);
        let reconfigure = self.reconfigure.map(|r| r.deadline);
        match (keyframe, reconfigure) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The session's counters.
    pub fn stats(&self) -> &HostControlStats {
        &self.stats
    }

    /// The session id from the Welcome.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The mode the stream carries (the Welcome's, then each completed reconfigure's).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The bitrate the stream targets, kbit/s.
    pub fn bitrate_kbps(&self) -> u32 {
        self.bitrate_kbps
    }

    /// The reconfigure the pipeline is working on, if any.
    pub fn reconfigure_in_flight(&self) -> Option<Admitted> {
        self.reconfigure.map(|r| r.target)
    }

    /// Whether the session is over ([`HostAction::End`] was queued).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Takes `now` into account; `None` once the session is over, and the input is ignored.
    fn advance(&mut self, now: Instant) -> Option<Instant> {
        if self.ended {
            self.stats.ignored_after_end += 1;
            return None;
        }
        self.now = self.now.max(now);
        Some(self.now)
    }

    fn host_us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    fn keyframe_requested(&mut self, now: Instant, frame: u32) {
        self.stats.keyframe_requests += 1;
        let earliest = self.last_keyframe.map(|t| t + KEYFRAME_MIN_INTERVAL);
        match earliest {
            Some(due) if now < due => {
                self.stats.keyframes_deferred += 1;
                self.deferred_keyframe.get_or_insert((due, frame));
            }
            _ => self.emit_keyframe(now, frame),
        }
    }

    fn emit_keyframe(&mut self, now: Instant, frame: u32) {
        // This keyframe serves a held-back request too: keeping it would send a second one at
        // the same instant. The held-back request names the earlier loss.
        let frame = self.deferred_keyframe.take().map_or(frame, |(_, f)| f);
        self.stats.keyframes += 1;
        self.last_keyframe = Some(now);
        self.actions.push_back(HostAction::Keyframe { frame });
    }

    fn reconfigure_requested(&mut self, now: Instant, mode: Mode, bitrate_kbps: u32) {
        self.stats.reconfigures_requested += 1;
        if let Err(e) = self.policy.admit(mode, bitrate_kbps, self.bitrate_kbps) {
            self.refuse(e);
            return;
        }
        match &mut self.reconfigure {
            Some(in_flight) => {
                if in_flight.queued.replace((mode, bitrate_kbps)).is_some() {
                    self.stats.reconfigures_superseded += 1;
                }
            }
            None => self.issue_reconfigure(now, mode, bitrate_kbps),
        }
    }

    fn issue_reconfigure(&mut self, now: Instant, mode: Mode, bitrate_kbps: u32) {
        // Admitted already when it arrived; admitting again resolves "keep" against the rate
        // now in effect. The policy does not change, so this cannot refuse what passed before,
        // but it is handled rather than assumed.
        let target = match self.policy.admit(mode, bitrate_kbps, self.bitrate_kbps) {
            Ok(a) => a,
            Err(e) => {
                self.refuse(e);
                return;
            }
        };
        self.reconfigure = Some(InFlight {
            target,
            deadline: now + RECONFIGURE_TIMEOUT,
            queued: None,
        });
        self.actions.push_back(HostAction::Reconfigure {
            mode: target.mode,
            bitrate_kbps: target.bitrate_kbps,
        });
    }

    fn refuse(&mut self, e: ModeRefused) {
        self.stats.reconfigures_refused += 1;
        self.fail(
            ByeReason::UNSUPPORTED,
            format!("reconfigure refused: {e}"),
            ControlError::Refused(e),
        );
    }

    fn protocol_error(&mut self, detail: String) {
        self.fail(
            ByeReason::PROTOCOL_ERROR,
            detail.clone(),
            ControlError::Protocol(detail),
        );
    }

    /// Ends the session from the host's side with a Bye that says why.
    fn fail(&mut self, reason: ByeReason, message: String, error: ControlError) {
        self.send_bye(reason, &message);
        self.end(Side::Host, Some(reason), message, Err(error));
    }

    fn send_bye(&mut self, reason: ByeReason, message: &str) {
        self.actions.push_back(HostAction::Send(Message::Bye {
            reason,
            message: message.to_owned(),
        }));
    }

    fn end(
        &mut self,
        by: Side,
        reason: Option<ByeReason>,
        message: String,
        outcome: Result<(), ControlError>,
    ) {
        self.ended = true;
        self.reconfigure = None;
        self.deferred_keyframe = None;
        self.actions.push_back(HostAction::End(Ended {
            by,
            reason,
            message,
            outcome,
        }));
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary time origin
mod tests {
    use super::*;
    use crate::control::{ClockProbe, Codec, DirectionKey, Hello, PROTOCOL_VERSION};
    use crate::crypto::CipherSuite;
    use crate::fec::FecCode;
    use crate::handshake::ModeRefused;
    use crate::input::MouseButton;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> HostPolicy {
        HostPolicy {
            codecs: vec![Codec::H264],
            max_mode: Mode::new(3840, 2160, 240),
            default_bitrate_kbps: 10_000,
            bitrate_range_kbps: (500, 150_000),
            default_fec_percent: 20,
            fec_parity_range: (2, 1024),
            shard_len: 1400,
            suite: CipherSuite::AES_128_GCM,
            data_port: 47_801,
        }
    }

    fn welcome() -> Welcome {
        Welcome {
            version: PROTOCOL_VERSION,
            session_id: 42,
            codec: Codec::H264,
            mode: Mode::new(1920, 1080, 60),
            bitrate_kbps: 10_000,
            fec_percent: 20,
            fec_min_parity: 2,
            fec_max_parity: 1024,
            fec_small_code: FecCode::GF8_CAUCHY,
            shard_len: 1400,
            suite: CipherSuite::AES_128_GCM,
            host_to_client: DirectionKey {
                key: vec![1; 16],
                salt: [2; 12],
            },
            client_to_host: DirectionKey {
                key: vec![3; 16],
                salt: [4; 12],
            },
            data_port: 47_801,
        }
    }

    /// A machine whose host clock started 2 s before the session.
    fn machine() -> (HostControl, Instant) {
        let epoch = Instant::now();
        let start = epoch + Duration::from_secs(2);
        (HostControl::new(&welcome(), policy(), epoch, start), start)
    }

    fn drain(hc: &mut HostControl) -> Vec<HostAction> {
        std::iter::from_fn(|| hc.poll_action()).collect()
    }

    fn reconfigure(mode: Mode, bitrate_kbps: u32) -> Message {
        Message::Reconfigure { mode, bitrate_kbps }
    }

    /// Asserts the actions are exactly a Bye with `reason` and an End by the host with an
    /// error, and returns the error.
    fn assert_host_bye(actions: Vec<HostAction>, reason: ByeReason) -> ControlError {
        let [HostAction::Send(Message::Bye { reason: sent, .. }), HostAction::End(end)] =
            actions.as_slice()
        else {
            panic!("expected Bye + End, got {actions:?}")
        };
        assert_eq!(*sent, reason);
        assert_eq!(end.by, Side::Host);
        assert_eq!(end.reason, Some(reason));
        end.outcome.clone().expect_err("an error end")
    }

    #[test]
    fn clock_probe_is_answered_with_the_host_clock() {
        let (mut hc, start) = machine();
        let now = start + Duration::from_micros(500_250);
        hc.handle_message(now, Message::ClockProbe(ClockProbe { id: 9, t0_us: 77 }));
        assert_eq!(
            drain(&mut hc),
            [HostAction::Send(Message::ClockReply(ClockReply {
                id: 9,
                t0_us: 77,
                t1_us: 2_500_250,
                t2_us: 2_500_250,
            }))]
        );
        assert_eq!(hc.stats().clock_probes, 1);
        assert_eq!(hc.poll_timeout(), None);
    }

    #[test]
    fn keyframe_request_reaches_the_pipeline() {
        let (mut hc, start) = machine();
        hc.handle_message(start, Message::RequestKeyframe { frame: 31 });
        assert_eq!(drain(&mut hc), [HostAction::Keyframe { frame: 31 }]);
        // Past the interval the next request goes straight through too.
        hc.handle_message(
            start + KEYFRAME_MIN_INTERVAL,
            Message::RequestKeyframe { frame: 60 },
        );
        assert_eq!(drain(&mut hc), [HostAction::Keyframe { frame: 60 }]);
        assert_eq!(hc.stats().keyframes, 2);
        assert_eq!(hc.stats().keyframes_deferred, 0);
    }

    #[test]
    fn keyframe_requests_inside_the_interval_are_deferred_and_merged_not_dropped() {
        let (mut hc, start) = machine();
        hc.handle_message(start, Message::RequestKeyframe { frame: 10 });
        assert_eq!(drain(&mut hc), [HostAction::Keyframe { frame: 10 }]);
        hc.handle_message(start + 10 * MS, Message::RequestKeyframe { frame: 12 });
        hc.handle_message(start + 20 * MS, Message::RequestKeyframe { frame: 14 });
        assert_eq!(drain(&mut hc), [], "held back, not sent");
        assert_eq!(hc.poll_timeout(), Some(start + KEYFRAME_MIN_INTERVAL));
        hc.handle_timeout(start + KEYFRAME_MIN_INTERVAL - MS);
        assert_eq!(drain(&mut hc), []);
        hc.handle_timeout(start + KEYFRAME_MIN_INTERVAL);
        assert_eq!(
            drain(&mut hc),
            [HostAction::Keyframe { frame: 12 }],
            "one keyframe for both, named by the first"
        );
        assert_eq!(hc.poll_timeout(), None);
        let s = hc.stats();
        assert_eq!(
            (s.keyframe_requests, s.keyframes, s.keyframes_deferred),
            (3, 2, 2)
        );
    }

    /// Found by the property test: a request arriving exactly when a held-back one fell due
    /// produced two keyframes at the same instant.
    #[test]
    fn a_request_when_a_held_back_one_is_due_gives_one_keyframe() {
        let (mut hc, start) = machine();
        hc.handle_message(start, Message::RequestKeyframe { frame: 1 });
        hc.handle_message(start + 5 * MS, Message::RequestKeyframe { frame: 2 });
        drain(&mut hc);
        let due = start + KEYFRAME_MIN_INTERVAL;
        hc.handle_message(due, Message::RequestKeyframe { frame: 3 });
        assert_eq!(drain(&mut hc), [HostAction::Keyframe { frame: 2 }]);
        assert_eq!(hc.poll_timeout(), None, "nothing left held back");
        hc.handle_timeout(due);
        assert_eq!(drain(&mut hc), []);
    }

    #[test]
    fn reconfigure_within_the_policy_reaches_the_pipeline_and_is_answered() {
        let (mut hc, start) = machine();
        let mode = Mode::new(1280, 720, 120);
        hc.handle_message(start, reconfigure(mode, 20_000));
        assert_eq!(
            drain(&mut hc),
            [HostAction::Reconfigure {
                mode,
                bitrate_kbps: 20_000
            }]
        );
        assert_eq!(hc.poll_timeout(), Some(start + RECONFIGURE_TIMEOUT));
        assert_eq!(
            hc.mode(),
            Mode::new(1920, 1080, 60),
            "not before the pipeline"
        );
        hc.handle_reconfigured(start + 40 * MS, 901, 19_000)
            .unwrap();
        assert_eq!(
            drain(&mut hc),
            [HostAction::Send(Message::Reconfigured {
                mode,
                bitrate_kbps: 19_000,
                first_frame: 901
            })]
        );
        assert_eq!((hc.mode(), hc.bitrate_kbps()), (mode, 19_000));
        assert_eq!(hc.reconfigure_in_flight(), None);
        assert_eq!(hc.poll_timeout(), None);
        assert_eq!(hc.stats().reconfigures_done, 1);
    }

    /// The bug: the host's control loop checked width and height against `--max-mode` but not
    /// the refresh rate, so a client could reconfigure up to 480 fps whatever the host allowed.
    #[test]
    fn reconfigure_past_the_max_modes_refresh_is_refused_before_the_pipeline() {
        let (mut hc, start) = machine();
        let mode = Mode::new(1920, 1080, 480);
        assert!(
            mode.validate().is_ok(),
            "a streamable mode, only above the limit"
        );
        hc.handle_message(start, reconfigure(mode, 0));
        let actions = drain(&mut hc);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, HostAction::Reconfigure { .. })),
            "{actions:?}"
        );
        let e = assert_host_bye(actions, ByeReason::UNSUPPORTED);
        assert_eq!(
            e,
            ControlError::Refused(ModeRefused::AboveLimit {
                mode,
                limit: Mode::new(3840, 2160, 240)
            })
        );
        assert!(hc.is_ended());
        assert_eq!(hc.stats().reconfigures_refused, 1);
        assert_eq!(hc.mode(), Mode::new(1920, 1080, 60));
    }

    #[test]
    fn reconfigure_larger_than_the_max_width_or_height_or_not_streamable_is_refused() {
        for mode in [
            Mode::new(4096, 1080, 60),
            Mode::new(1920, 2400, 60),
            Mode::new(1921, 1080, 60),
        ] {
            let (mut hc, start) = machine();
            hc.handle_message(start, reconfigure(mode, 0));
            let e = assert_host_bye(drain(&mut hc), ByeReason::UNSUPPORTED);
            assert!(matches!(e, ControlError::Refused(_)), "{mode}: {e}");
        }
        // Exactly the limit is fine.
        let (mut hc, start) = machine();
        hc.handle_message(start, reconfigure(Mode::new(3840, 2160, 240), 0));
        assert!(matches!(
            drain(&mut hc).as_slice(),
            [HostAction::Reconfigure { .. }]
        ));
    }

    #[test]
    fn reconfigure_bitrate_is_clamped_to_the_policy_and_zero_keeps_the_current_rate() {
        let (mut hc, start) = machine();
        let mode = Mode::new(1280, 720, 60);
        let asked = |hc: &mut HostControl, kbps: u32| {
            hc.handle_message(start, reconfigure(mode, kbps));
            let [HostAction::Reconfigure { bitrate_kbps, .. }] = drain(hc)[..] else {
                panic!("expected one Reconfigure")
            };
            // The pipeline applies what it was asked.
            hc.handle_reconfigured(start, 0, bitrate_kbps).unwrap();
            drain(hc);
            bitrate_kbps
        };
        assert_eq!(asked(&mut hc, 0), 10_000, "keep the Welcome's rate");
        assert_eq!(asked(&mut hc, 1_000_000), 150_000);
        assert_eq!(asked(&mut hc, 100), 500);
        assert_eq!(asked(&mut hc, 42_000), 42_000);
        assert_eq!(asked(&mut hc, 0), 42_000, "keep the rate now in effect");
    }

    #[test]
    fn second_reconfigure_while_one_is_in_flight_waits_and_the_newest_wins() {
        let (mut hc, start) = machine();
        let (a, b, c) = (
            Mode::new(1280, 720, 60),
            Mode::new(640, 360, 30),
            Mode::new(800, 600, 30),
        );
        hc.handle_message(start, reconfigure(a, 0));
        assert_eq!(drain(&mut hc).len(), 1);
        hc.handle_message(start + MS, reconfigure(b, 0));
        hc.handle_message(start + 2 * MS, reconfigure(c, 0));
        assert_eq!(drain(&mut hc), [], "nothing reaches the pipeline meanwhile");
        assert_eq!(hc.reconfigure_in_flight().map(|r| r.mode), Some(a));
        assert_eq!(hc.stats().reconfigures_superseded, 1);

        hc.handle_reconfigured(start + 30 * MS, 100, 10_000)
            .unwrap();
        assert_eq!(
            drain(&mut hc),
            [
                HostAction::Send(Message::Reconfigured {
                    mode: a,
                    bitrate_kbps: 10_000,
                    first_frame: 100
                }),
                HostAction::Reconfigure {
                    mode: c,
                    bitrate_kbps: 10_000
                },
            ]
        );
        assert_eq!(
            hc.poll_timeout(),
            Some(start + 30 * MS + RECONFIGURE_TIMEOUT),
            "the queued one gets its own deadline"
        );
        hc.handle_reconfigured(start + 60 * MS, 110, 10_000)
            .unwrap();
        assert_eq!(
            drain(&mut hc),
            [HostAction::Send(Message::Reconfigured {
                mode: c,
                bitrate_kbps: 10_000,
                first_frame: 110
            })]
        );
        assert_eq!(hc.stats().reconfigures_done, 2);

        // A second one the policy refuses ends the session even while the first is in flight.
        let (mut hc, start) = machine();
        hc.handle_message(start, reconfigure(a, 0));
        drain(&mut hc);
        hc.handle_message(start, reconfigure(Mode::new(640, 360, 300), 0));
        assert_host_bye(drain(&mut hc), ByeReason::UNSUPPORTED);
        assert_eq!(hc.handle_reconfigured(start, 5, 10_000), Ok(()));
        assert_eq!(drain(&mut hc), [], "a late answer after the end is ignored");
    }

    #[test]
    fn reconfigure_the_pipeline_never_answers_times_out_with_internal_error() {
        let (mut hc, start) = machine();
        hc.handle_message(start, reconfigure(Mode::new(1280, 720, 60), 0));
        drain(&mut hc);
        hc.handle_timeout(start + RECONFIGURE_TIMEOUT - MS);
        assert_eq!(drain(&mut hc), []);
        hc.handle_timeout(start + RECONFIGURE_TIMEOUT);
        let e = assert_host_bye(drain(&mut hc), ByeReason::INTERNAL);
        assert!(matches!(e, ControlError::Pipeline(_)), "{e}");
    }

    #[test]
    fn failed_reconfigure_and_pipeline_failure_end_with_internal_error() {
        let (mut hc, start) = machine();
        hc.handle_message(start, reconfigure(Mode::new(1280, 720, 60), 0));
        drain(&mut hc);
        hc.handle_reconfigure_failed(start, "encoder refused 1280x720")
            .unwrap();
        let e = assert_host_bye(drain(&mut hc), ByeReason::INTERNAL);
        assert_eq!(e, ControlError::Pipeline("encoder refused 1280x720".into()));

        let (mut hc, start) = machine();
        hc.handle_pipeline_failed(start, "capture lost");
        let e = assert_host_bye(drain(&mut hc), ByeReason::INTERNAL);
        assert_eq!(e, ControlError::Pipeline("capture lost".into()));
    }

    #[test]
    fn pipeline_answers_with_nothing_in_flight_are_a_driver_error() {
        let (mut hc, start) = machine();
        assert_eq!(
            hc.handle_reconfigured(start, 1, 10_000),
            Err(NoReconfigurePending)
        );
        assert_eq!(
            hc.handle_reconfigure_failed(start, "x"),
            Err(NoReconfigurePending)
        );
        assert_eq!(drain(&mut hc), []);
        assert!(!hc.is_ended());
    }

    #[test]
    fn receiver_reports_are_kept_and_unknown_messages_skipped() {
        let (mut hc, start) = machine();
        let report = ReceiverStats {
            frames_received: 60,
            frames_decoded: 59,
            ..ReceiverStats::default()
        };
        hc.handle_message(start, Message::Stats(report));
        hc.handle_message(start, Message::Unknown { ty: 200 });
        assert_eq!(drain(&mut hc), []);
        let s = hc.stats();
        assert_eq!(s.receiver_reports, 1);
        assert_eq!(s.last_receiver_report, Some(report));
        assert_eq!((s.unknown_messages, s.messages), (1, 2));
        assert!(!hc.is_ended());
    }

    #[test]
    fn client_bye_ends_the_session_without_an_answer() {
        let (mut hc, start) = machine();
        hc.handle_message(
            start,
            Message::Bye {
                reason: ByeReason::NORMAL,
                message: "done".into(),
            },
        );
        assert_eq!(
            drain(&mut hc),
            [HostAction::End(Ended {
                by: Side::Client,
                reason: Some(ByeReason::NORMAL),
                message: "done".into(),
                outcome: Ok(()),
            })]
        );

        let (mut hc, start) = machine();
        let bye = Message::Bye {
            reason: ByeReason::PROTOCOL_ERROR,
            message: "bad Reconfigured".into(),
        };
        hc.handle_message(start, bye);
        let [HostAction::End(end)] = &drain(&mut hc)[..] else {
            panic!()
        };
        assert_eq!(end.by, Side::Client);
        assert_eq!(
            end.outcome,
            Err(ControlError::PeerEnded {
                reason: ByeReason::PROTOCOL_ERROR,
                message: "bad Reconfigured".into()
            })
        );
    }

    #[test]
    fn messages_a_client_must_not_send_end_with_a_protocol_error() {
        let hello = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            mode: Mode::new(1280, 720, 60),
            codecs: vec![Codec::H264],
            bitrate_kbps: 0,
            fec_percent: None,
            client_name: "again".into(),
            app: String::new(),
        });
        for msg in [
            hello,
            Message::Welcome(welcome()),
            Message::Start,
            Message::Reconfigured {
                mode: Mode::new(1280, 720, 60),
                bitrate_kbps: 1,
                first_frame: 2,
            },
            Message::ClockReply(ClockReply {
                id: 0,
                t0_us: 0,
                t1_us: 0,
                t2_us: 0,
            }),
        ] {
            let (mut hc, start) = machine();
            let name = msg.name();
            hc.handle_message(start, msg);
            let e = assert_host_bye(drain(&mut hc), ByeReason::PROTOCOL_ERROR);
            assert!(
                matches!(&e, ControlError::Protocol(m) if m.contains(name)),
                "{name}: {e}"
            );
        }
    }

    #[test]
    fn malformed_message_ends_with_a_protocol_error_and_a_closed_stream_without_bye_is_an_error() {
        let (mut hc, start) = machine();
        hc.handle_malformed(start, "message type 5 truncated");
        let e = assert_host_bye(drain(&mut hc), ByeReason::PROTOCOL_ERROR);
        assert!(matches!(&e, ControlError::Protocol(m) if m.contains("truncated")));

        let (mut hc, start) = machine();
        hc.handle_closed(start);
        assert_eq!(
            drain(&mut hc),
            [HostAction::End(Ended {
                by: Side::Client,
                reason: None,
                message: String::new(),
                outcome: Err(ControlError::Closed),
            })]
        );
    }

    #[test]
    fn input_datagrams_become_events_and_bad_ones_are_counted_and_dropped() {
        let (mut hc, start) = machine();
        let events = vec![
            InputEvent::MouseMove { dx: 3, dy: -4 },
            InputEvent::MouseButton {
                button: MouseButton::LEFT,
                down: true,
            },
        ];
        let mut d = vec![datagram::INPUT];
        d.extend(InputEvent::encode_batch(&events));
        hc.handle_datagram(start, &d);
        assert_eq!(drain(&mut hc), [HostAction::Input(events)]);

        hc.handle_datagram(start, &d[..d.len() - 1]); // truncated batch
        hc.handle_datagram(start, &[datagram::INPUT]); // an empty batch: nothing to inject
        hc.handle_datagram(start, &[]);
        hc.handle_datagram(start, &[0x7F, 1, 2]);
        hc.handle_datagram(start, &[datagram::AUDIO, 1]); // host-to-client code
        assert_eq!(drain(&mut hc), []);
        let s = hc.stats();
        assert_eq!(
            (
                s.input_datagrams,
                s.input_events,
                s.input_malformed,
                s.datagrams_unknown
            ),
            (2, 2, 1, 3)
        );
        assert!(!hc.is_ended(), "bad datagrams never end a session");
    }

    #[test]
    fn shutdown_says_bye_ends_cleanly_and_ignores_what_follows() {
        let (mut hc, start) = machine();
        hc.handle_message(start, reconfigure(Mode::new(1280, 720, 60), 0));
        hc.handle_message(start, Message::RequestKeyframe { frame: 1 });
        hc.handle_message(start + MS, Message::RequestKeyframe { frame: 2 });
        drain(&mut hc);
        assert!(hc.poll_timeout().is_some());
        hc.shutdown(
            start + 2 * MS,
            ByeReason::SHUTDOWN,
            "the host is shutting down",
        );
        assert_eq!(
            drain(&mut hc),
            [
                HostAction::Send(Message::Bye {
                    reason: ByeReason::SHUTDOWN,
                    message: "the host is shutting down".into()
                }),
                HostAction::End(Ended {
                    by: Side::Host,
                    reason: Some(ByeReason::SHUTDOWN),
                    message: "the host is shutting down".into(),
                    outcome: Ok(()),
                }),
            ]
        );
        assert_eq!(hc.poll_timeout(), None, "no timer runs after the end");
        hc.handle_message(start, Message::RequestKeyframe { frame: 3 });
        hc.handle_datagram(start, &[datagram::INPUT]);
        hc.handle_timeout(start + RECONFIGURE_TIMEOUT);
        hc.shutdown(start, ByeReason::SHUTDOWN, "twice");
        assert_eq!(hc.handle_reconfigured(start, 1, 1), Ok(()));
        assert_eq!(drain(&mut hc), []);
        assert_eq!(hc.stats().ignored_after_end, 5);
    }

    #[test]
    fn an_older_now_does_not_move_a_deadline_back() {
        let (mut hc, start) = machine();
        hc.handle_message(start + 100 * MS, Message::RequestKeyframe { frame: 1 });
        // Stamped before the first request by a driver task that ran late.
        hc.handle_message(start + 90 * MS, Message::RequestKeyframe { frame: 2 });
        assert_eq!(
            hc.poll_timeout(),
            Some(start + 100 * MS + KEYFRAME_MIN_INTERVAL)
        );
    }
}
