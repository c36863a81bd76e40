//! The client's half of a punktfunk/1 session after the handshake.

use super::end::{ControlError, Ended, Side};
use super::{ByeReason, ClockProbe, ClockReply, Message, Mode, Welcome};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Clock probes sent before streaming; the reply with the smallest round trip gives the offset.
pub const CLOCK_PROBES: u32 = 8;
/// How long the host has to answer one clock probe before the client gives up.
pub const CLOCK_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the client sends a receiver report.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// Least time between two keyframe requests. The receiver reports every lost run, and one
/// burst of loss gives several in a row; a single keyframe repairs them all.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(100);

/// What the client's session does on its own, counted from the moment streaming starts
/// ([`ClientAction::ClockSynced`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientControlConfig {
    /// End the session (`Bye(normal)`) after this long; `None` runs until
    /// [`ClientControl::close`] or the host ends it.
    pub duration: Option<Duration>,
    /// Ask the host for another mode once.
    pub reconfigure: Option<ScheduledReconfigure>,
}

/// A reconfigure the client asks for at a set time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledReconfigure {
    /// Time after streaming started.
    pub after: Duration,
    /// The mode to ask for.
    pub mode: Mode,
    /// The bitrate to ask for, kbit/s (0 = keep).
    pub bitrate_kbps: u32,
}

/// The client's estimate of the host clock, from the clock probe with the smallest round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockEstimate {
    /// Host clock minus client clock, µs: a host timestamp minus this is client time.
    pub offset_us: i64,
    /// The control plane's round trip, µs.
    pub rtt_us: u64,
}

/// What the client's driver must do next. Drained from [`ClientControl::poll_action`] in order.
///
/// Deliberately exhaustive: a new kind of action must fail to compile in every driver rather than
/// fall into a catch-all arm that ignores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    /// Send this message on the control stream.
    Send(Message),
    /// The clock offset is known: start the data plane (capture timestamps can now be turned
    /// into latencies). The session's schedule (stats, reconfigure, duration) starts now.
    ClockSynced(ClockEstimate),
    /// Send a receiver report now: `Message::Stats` with the data plane's counters, which the
    /// driver has and this machine does not.
    SendStats,
    /// The host now streams this mode, from `first_frame` on (a keyframe).
    ModeChanged {
        /// The new mode.
        mode: Mode,
        /// The bitrate the host now targets, kbit/s.
        bitrate_kbps: u32,
        /// Index of the first frame in the new mode.
        first_frame: u32,
    },
    /// The session is over. Always the last action; a Bye to send, if any, comes before it.
    End(Ended),
}

/// Counters of one session's control plane (client side).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientControlStats {
    /// Clock probes sent.
    pub clock_probes: u64,
    /// Clock replies that answered the probe in flight.
    pub clock_replies: u64,
    /// Clock replies for no probe in flight (a stale or invented id), ignored.
    pub stray_clock_replies: u64,
    /// Receiver reports asked for ([`ClientAction::SendStats`]).
    pub stats_reports: u64,
    /// Losses the receiver reported.
    pub losses: u64,
    /// `RequestKeyframe` messages sent.
    pub keyframe_requests: u64,
    /// `Reconfigure` messages sent.
    pub reconfigures: u64,
    /// `Reconfigured` answers received.
    pub reconfigured: u64,
    /// Messages of a type this build does not know, skipped.
    pub unknown_messages: u64,
    /// Inputs that arrived after the end and were ignored.
    pub ignored_after_end: u64,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Probing the host clock; one probe in flight at a time.
    Syncing {
        id: u32,
        t0_us: u64,
        deadline: Instant,
        best: Option<ClockEstimate>,
    },
    Streaming {
        next_stats: Instant,
        reconfigure: Option<(Instant, ScheduledReconfigure)>,
        end_at: Option<Instant>,
    },
    Ended,
}

/// The client side of a punktfunk/1 session after the handshake, as a sans-IO state machine.
///
/// It first measures the host clock with [`CLOCK_PROBES`] probes, one at a time, keeping the
/// reply with the smallest round trip ([`ClientAction::ClockSynced`]). Then it streams: a
/// receiver report every [`STATS_INTERVAL`], the scheduled reconfigure, keyframe requests when
/// the receiver reports loss (at most one per [`KEYFRAME_REQUEST_INTERVAL`]; a loss inside the
/// interval is served at its end, never dropped), and `Bye(normal)` when the configured
/// duration is up or the driver calls [`ClientControl::close`]. A Bye from the host, a
/// malformed message or a message a host must not send ends it. It performs no I/O and reads
/// no clock.
///
/// # Driving it
///
/// 1. Build it once the handshake is established: [`ClientControl::new`] (queues the first
///    probe).
/// 2. Feed each input as it happens, with the current time: [`handle_message`],
///    [`handle_malformed`], [`handle_closed`], [`handle_frames_lost`], and the driver's own
///    requests [`reconfigure`] and [`close`]. When the clock reaches [`poll_timeout`], call
///    [`handle_timeout`].
/// 3. After every call of step 2, drain [`poll_action`] until it returns `None` and execute the
///    actions in the order given.
/// 4. After [`ClientAction::End`] the machine ignores every input (counted in
///    [`ClientControlStats::ignored_after_end`]) and [`poll_timeout`] is `None`.
///
/// [`handle_message`]: ClientControl::handle_message
/// [`handle_malformed`]: ClientControl::handle_malformed
/// [`handle_closed`]: ClientControl::handle_closed
/// [`handle_frames_lost`]: ClientControl::handle_frames_lost
/// [`reconfigure`]: ClientControl::reconfigure
/// [`close`]: ClientControl::close
/// [`poll_timeout`]: ClientControl::poll_timeout
/// [`handle_timeout`]: ClientControl::handle_timeout
/// [`poll_action`]: ClientControl::poll_action
#[derive(Debug)]
pub struct ClientControl {
    epoch: Instant,
    cfg: ClientControlConfig,
    mode: Mode,
    bitrate_kbps: u32,
    phase: Phase,
    clock: Option<ClockEstimate>,
    last_keyframe_request: Option<Instant>,
    /// When a held-back keyframe request is due, and the frame its first loss named.
    deferred_keyframe: Option<(Instant, u32)>,
    actions: VecDeque<ClientAction>,
    /// The latest time seen, so deadlines never move backwards on a slightly stale `now`.
    now: Instant,
    stats: ClientControlStats,
}

impl ClientControl {
    /// The control machine of an established session: `welcome` is the host's configuration,
    /// `epoch` the zero of the client clock that probe times (and the driver's latency figures)
    /// count from. Queues the first clock probe.
    pub fn new(welcome: &Welcome, cfg: ClientControlConfig, epoch: Instant, now: Instant) -> Self {
        let mut c = ClientControl {
            epoch,
            cfg,
            mode: welcome.mode,
            bitrate_kbps: welcome.bitrate_kbps,
            // Replaced by the first probe's state below.
            phase: Phase::Syncing {
                id: 0,
                t0_us: 0,
                deadline: now,
                best: None,
            },
            clock: None,
            last_keyframe_request: None,
            deferred_keyframe: None,
            actions: VecDeque::new(),
            now,
            stats: ClientControlStats::default(),
        };
        c.send_probe(now, 0, None);
        c
    }

    /// Feeds one decoded control message from the host.
    pub fn handle_message(&mut self, now: Instant, msg: Message) {
        let Some(now) = self.advance(now) else { return };
        match msg {
            Message::ClockReply(r) => self.clock_reply(now, r),
            Message::Reconfigured {
                mode,
                bitrate_kbps,
                first_frame,
            } => {
                // Not matched against a request: the host may merge several, and a host-side
                // change of mode (a display resize) is announced the same way.
                self.stats.reconfigured += 1;
                self.mode = mode;
                self.bitrate_kbps = bitrate_kbps;
                self.actions.push_back(ClientAction::ModeChanged {
                    mode,
                    bitrate_kbps,
                    first_frame,
                });
            }
            Message::Bye { reason, message } => {
                let outcome = Ended::outcome_of_bye(reason, &message);
                self.end(Side::Host, Some(reason), message, outcome);
            }
            Message::Unknown { .. } => self.stats.unknown_messages += 1,
            other @ (Message::Hello(_)
            | Message::Welcome(_)
            | Message::Start
            | Message::RequestKeyframe { .. }
            | Message::Reconfigure { .. }
            | Message::ClockProbe(_)
            | Message::Stats(_)
            | Message::PairStart(_)
            | Message::PairChallenge { .. }
            | Message::PairConfirm { .. }
            | Message::PairPending { .. }
            | Message::PairDone { .. }) => {
                self.protocol_error(format!("unexpected {} from the host", other.name()))
            }
        }
    }

    /// The control stream carried bytes that do not decode as a message: the session ends with
    /// `Bye(protocol error)`.
    pub fn handle_malformed(&mut self, now: Instant, detail: &str) {
        if self.advance(now).is_none() {
            return;
        }
        self.protocol_error(format!("malformed message from the host: {detail}"));
    }

    /// The host finished its control stream without a Bye.
    pub fn handle_closed(&mut self, now: Instant) {
        if self.advance(now).is_none() {
            return;
        }
        self.end(Side::Host, None, String::new(), Err(ControlError::Closed));
    }

    /// The receiver gave frames up from `first` on: ask for a keyframe (at most one per
    /// [`KEYFRAME_REQUEST_INTERVAL`]).
    pub fn handle_frames_lost(&mut self, now: Instant, first: u32) {
        let Some(now) = self.advance(now) else { return };
        self.stats.losses += 1;
        match self.last_keyframe_request {
            Some(t) if now < t + KEYFRAME_REQUEST_INTERVAL => {
                self.deferred_keyframe
                    .get_or_insert((t + KEYFRAME_REQUEST_INTERVAL, first));
            }
            _ => self.request_keyframe(now, first),
        }
    }

    /// Runs the timers that are due: the probe deadline while syncing; the end of the
    /// session, the scheduled reconfigure, the receiver report and a held-back keyframe request
    /// while streaming.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(now) = self.advance(now) else { return };
        match self.phase {
            Phase::Syncing { deadline, .. } if deadline <= now => {
                let e = ControlError::Timeout {
                    what: "a clock probe",
                    after: CLOCK_PROBE_TIMEOUT,
                };
                self.fail(ByeReason::TIMEOUT, e.to_string(), e);
                return;
            }
            Phase::Syncing { .. } | Phase::Ended => {}
            Phase::Streaming {
                ref mut next_stats,
                ref mut reconfigure,
                end_at,
            } => {
                // The end first: nothing else is worth sending once the time is up.
                if end_at.is_some_and(|t| t <= now) {
                    self.close(now, "duration reached");
                    return;
                }
                let due_reconfigure = reconfigure.take_if(|(t, _)| *t <= now);
                let stats_due = *next_stats <= now;
                if stats_due {
                    *next_stats += STATS_INTERVAL;
                    if *next_stats <= now {
                        // The driver slept through several intervals: one report, not a burst.
                        *next_stats = now + STATS_INTERVAL;
                    }
                }
                if let Some((_, r)) = due_reconfigure {
                    self.reconfigure(now, r.mode, r.bitrate_kbps);
                }
                if stats_due {
                    self.stats.stats_reports += 1;
                    self.actions.push_back(ClientAction::SendStats);
                }
            }
        }
        if let Some((due, frame)) = self.deferred_keyframe {
            if due <= now {
                self.request_keyframe(now, frame);
            }
        }
    }

    /// Asks the host for another mode (and bitrate, 0 = keep). The answer comes as
    /// [`ClientAction::ModeChanged`]; a refusal as the host's Bye.
    pub fn reconfigure(&mut self, now: Instant, mode: Mode, bitrate_kbps: u32) {
        if self.advance(now).is_none() {
            return;
        }
        self.stats.reconfigures += 1;
        self.actions
            .push_back(ClientAction::Send(Message::Reconfigure {
                mode,
                bitrate_kbps,
            }));
    }

    /// Ends the session in order: sends `Bye(normal, message)` and ends.
    pub fn close(&mut self, now: Instant, message: &str) {
        if self.advance(now).is_none() {
            return;
        }
        self.send_bye(ByeReason::NORMAL, message);
        self.end(
            Side::Client,
            Some(ByeReason::NORMAL),
            message.to_owned(),
            Ok(()),
        );
    }

    /// The next action for the driver, in order; `None` when there is nothing to do.
    pub fn poll_action(&mut self) -> Option<ClientAction> {
        self.actions.pop_front()
    }

    /// When [`ClientControl::handle_timeout`] must next be called; `None` once ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let phase = match self.phase {
            Phase::Ended => return None,
            Phase::Syncing { deadline, .. } => Some(deadline),
            Phase::Streaming {
                next_stats,
                reconfigure,
                end_at,
            } => [Some(next_stats), reconfigure.map(|(t, _)| t), end_at]
                .into_iter()
                .flatten()
                .min(),
        };
        [phase, self.deferred_keyframe.map(|(t, _)| t)]
            .into_iter()
            .flatten()
            .min()
    }

    /// The session's counters.
    pub fn stats(&self) -> &ClientControlStats {
        &self.stats
    }

    /// The host clock estimate, once the probes are done.
    pub fn clock(&self) -> Option<ClockEstimate> {
        self.clock
    }

    /// The mode the host streams (the Welcome's, then each `Reconfigured`'s).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The bitrate the host targets, kbit/s.
    pub fn bitrate_kbps(&self) -> u32 {
        self.bitrate_kbps
    }

    /// Whether the clock is synced and the session streams.
    pub fn is_streaming(&self) -> bool {
        matches!(self.phase, Phase::Streaming { .. })
    }

    /// Whether the session is over ([`ClientAction::End`] was queued).
    pub fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended)
    }

    fn advance(&mut self, now: Instant) -> Option<Instant> {
        if self.is_ended() {
            self.stats.ignored_after_end += 1;
            return None;
        }
        self.now = self.now.max(now);
        Some(self.now)
    }

    fn client_us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    fn send_probe(&mut self, now: Instant, id: u32, best: Option<ClockEstimate>) {
        let t0_us = self.client_us(now);
        self.stats.clock_probes += 1;
        self.phase = Phase::Syncing {
            id,
            t0_us,
            deadline: now + CLOCK_PROBE_TIMEOUT,
            best,
        };
        self.actions
            .push_back(ClientAction::Send(Message::ClockProbe(ClockProbe {
                id,
                t0_us,
            })));
    }

    fn clock_reply(&mut self, now: Instant, r: ClockReply) {
        let Phase::Syncing {
            id, t0_us, best, ..
        } = self.phase
        else {
            self.stats.stray_clock_replies += 1;
            return;
        };
        if r.id != id {
            self.stats.stray_clock_replies += 1;
            return;
        }
        self.stats.clock_replies += 1;
        // Our own send time, not the echoed one: a host that echoes a wrong t0 must not skew
        // the estimate.
        let r = ClockReply { t0_us, ..r };
        let (offset_us, rtt_us) = r.offset_and_rtt(self.client_us(now));
        let this = ClockEstimate { offset_us, rtt_us };
        let best = match best {
            Some(b) if b.rtt_us <= rtt_us => b,
            _ => this,
        };
        if id + 1 < CLOCK_PROBES {
            self.send_probe(now, id + 1, Some(best));
            return;
        }
        self.clock = Some(best);
        let after = |d: Duration| now.checked_add(d);
        self.phase = Phase::Streaming {
            next_stats: now + STATS_INTERVAL,
            reconfigure: self
                .cfg
                .reconfigure
                .and_then(|r| Some((after(r.after)?, r))),
            end_at: self.cfg.duration.and_then(after),
        };
        self.actions.push_back(ClientAction::ClockSynced(best));
    }

    fn request_keyframe(&mut self, now: Instant, frame: u32) {
        // This request covers a held-back one too: keeping it would send a second request at
        // the same instant. The held-back one names the earlier loss.
        let frame = self.deferred_keyframe.take().map_or(frame, |(_, f)| f);
        self.stats.keyframe_requests += 1;
        self.last_keyframe_request = Some(now);
        self.actions
            .push_back(ClientAction::Send(Message::RequestKeyframe { frame }));
    }

    fn protocol_error(&mut self, detail: String) {
        self.fail(
            ByeReason::PROTOCOL_ERROR,
            detail.clone(),
            ControlError::Protocol(detail),
        );
    }

    fn fail(&mut self, reason: ByeReason, message: String, error: ControlError) {
        self.send_bye(reason, &message);
        self.end(Side::Client, Some(reason), message, Err(error));
    }

    fn send_bye(&mut self, reason: ByeReason, message: &str) {
        self.actions.push_back(ClientAction::Send(Message::Bye {
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
        self.phase = Phase::Ended;
        self.deferred_keyframe = None;
        self.actions.push_back(ClientAction::End(Ended {
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
    use crate::control::{Codec, DirectionKey, ReceiverStats, PROTOCOL_VERSION};
    use crate::crypto::CipherSuite;
    use crate::fec::FecCode;

    const MS: Duration = Duration::from_millis(1);

    fn welcome() -> Welcome {
        Welcome {
            version: PROTOCOL_VERSION,
            session_id: 7,
            codec: Codec::H264,
            mode: Mode::new(640, 360, 30),
            bitrate_kbps: 4_000,
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

    fn drain(cc: &mut ClientControl) -> Vec<ClientAction> {
        std::iter::from_fn(|| cc.poll_action()).collect()
    }

    fn probe_of(actions: &[ClientAction]) -> ClockProbe {
        match actions {
            [ClientAction::Send(Message::ClockProbe(p))] => *p,
            other => panic!("expected one probe, got {other:?}"),
        }
    }

    /// A host whose clock reads 5 s more than the client's answers after `rtt`, half each way.
    fn reply(p: ClockProbe, rtt: Duration) -> Message {
        let t1 = p.t0_us + 5_000_000 + rtt.as_micros() as u64 / 2;
        Message::ClockReply(ClockReply {
            id: p.id,
            t0_us: p.t0_us,
            t1_us: t1,
            t2_us: t1,
        })
    }

    /// A machine past clock sync at the returned instant (every probe answered in 2 ms).
    fn streaming(cfg: ClientControlConfig) -> (ClientControl, Instant) {
        let epoch = Instant::now();
        let mut now = epoch + Duration::from_secs(1);
        let mut cc = ClientControl::new(&welcome(), cfg, epoch, now);
        loop {
            let actions = drain(&mut cc);
            if let [ClientAction::ClockSynced(_)] = actions[..] {
                return (cc, now);
            }
            let p = probe_of(&actions);
            now += 2 * MS;
            cc.handle_message(now, reply(p, 2 * MS));
        }
    }

    fn bye(reason: ByeReason, message: &str) -> Message {
        Message::Bye {
            reason,
            message: message.into(),
        }
    }

    /// Asserts the actions are exactly a Bye with `reason` and an End by the client with an
    /// error, and returns the error.
    fn assert_client_bye(actions: Vec<ClientAction>, reason: ByeReason) -> ControlError {
        let [ClientAction::Send(Message::Bye { reason: sent, .. }), ClientAction::End(end)] =
            actions.as_slice()
        else {
            panic!("expected Bye + End, got {actions:?}")
        };
        assert_eq!(*sent, reason);
        assert_eq!((end.by, end.reason), (Side::Client, Some(reason)));
        end.outcome.clone().expect_err("an error end")
    }

    #[test]
    fn clock_sync_probes_one_at_a_time_and_keeps_the_smallest_round_trip() {
        let epoch = Instant::now();
        let mut now = epoch + Duration::from_secs(1);
        let mut cc = ClientControl::new(&welcome(), ClientControlConfig::default(), epoch, now);
        let rtts = [9, 4, 7, 3, 8, 3, 6, 5].map(|ms| ms * MS);
        for (id, rtt) in rtts.into_iter().enumerate() {
            let p = probe_of(&drain(&mut cc));
            assert_eq!(p.id, id as u32);
            assert_eq!(p.t0_us, now.duration_since(epoch).as_micros() as u64);
            assert_eq!(cc.poll_timeout(), Some(now + CLOCK_PROBE_TIMEOUT));
            assert!(!cc.is_streaming());
            // A reply to no probe in flight changes nothing.
            cc.handle_message(now, reply(ClockProbe { id: 99, t0_us: 0 }, MS));
            assert_eq!(drain(&mut cc), []);
            now += rtt;
            // The next probe leaves at once, stamped with this time.
            cc.handle_message(now, reply(p, rtt));
        }
        let want = ClockEstimate {
            offset_us: 5_000_000,
            rtt_us: 3_000,
        };
        assert_eq!(drain(&mut cc), [ClientAction::ClockSynced(want)]);
        assert_eq!(cc.clock(), Some(want));
        assert!(cc.is_streaming());
        let s = cc.stats();
        assert_eq!((s.clock_probes, s.clock_replies), (8, 8));
        assert_eq!(s.stray_clock_replies, 8);
    }

    #[test]
    fn the_estimate_uses_the_clients_own_send_time_not_the_echoed_one() {
        let epoch = Instant::now();
        let mut now = epoch;
        let mut cc = ClientControl::new(&welcome(), ClientControlConfig::default(), epoch, now);
        for _ in 0..CLOCK_PROBES {
            let p = probe_of(&drain(&mut cc));
            now += 4 * MS;
            let Message::ClockReply(r) = reply(p, 4 * MS) else {
                unreachable!()
            };
            let lying = ClockReply {
                t0_us: r.t0_us + 1_000_000,
                ..r
            };
            cc.handle_message(now, Message::ClockReply(lying));
        }
        let [ClientAction::ClockSynced(e)] = drain(&mut cc)[..] else {
            panic!()
        };
        assert_eq!((e.offset_us, e.rtt_us), (5_000_000, 4_000));
    }

    #[test]
    fn a_clock_probe_without_an_answer_ends_with_a_timeout() {
        let epoch = Instant::now();
        let mut cc = ClientControl::new(&welcome(), ClientControlConfig::default(), epoch, epoch);
        drain(&mut cc);
        cc.handle_timeout(epoch + CLOCK_PROBE_TIMEOUT - MS);
        assert_eq!(drain(&mut cc), []);
        cc.handle_timeout(epoch + CLOCK_PROBE_TIMEOUT);
        let e = assert_client_bye(drain(&mut cc), ByeReason::TIMEOUT);
        assert!(matches!(e, ControlError::Timeout { .. }), "{e}");
        assert_eq!(cc.clock(), None);
    }

    /// Runs the machine's timers up to `until`, recording each action with its time.
    fn run_until(cc: &mut ClientControl, until: Instant) -> Vec<(Instant, ClientAction)> {
        let mut out = Vec::new();
        while let Some(t) = cc.poll_timeout().filter(|t| *t <= until) {
            cc.handle_timeout(t);
            out.extend(drain(cc).into_iter().map(|a| (t, a)));
        }
        out
    }

    #[test]
    fn the_schedule_reports_every_second_reconfigures_once_and_ends_on_time() {
        let target = Mode::new(320, 180, 30);
        let (mut cc, t) = streaming(ClientControlConfig {
            duration: Some(Duration::from_secs(3)),
            reconfigure: Some(ScheduledReconfigure {
                after: 1500 * MS,
                mode: target,
                bitrate_kbps: 0,
            }),
        });
        let got = run_until(&mut cc, t + Duration::from_secs(60));
        let end = Ended {
            by: Side::Client,
            reason: Some(ByeReason::NORMAL),
            message: "duration reached".into(),
            outcome: Ok(()),
        };
        assert_eq!(
            got,
            [
                (t + 1000 * MS, ClientAction::SendStats),
                (
                    t + 1500 * MS,
                    ClientAction::Send(Message::Reconfigure {
                        mode: target,
                        bitrate_kbps: 0
                    })
                ),
                (t + 2000 * MS, ClientAction::SendStats),
                // At 3 s the end wins over a report that is due at the same time.
                (
                    t + 3000 * MS,
                    ClientAction::Send(bye(ByeReason::NORMAL, "duration reached"))
                ),
                (t + 3000 * MS, ClientAction::End(end)),
            ]
        );
        assert!(cc.is_ended());
        assert_eq!(cc.poll_timeout(), None);
        let s = cc.stats();
        assert_eq!((s.stats_reports, s.reconfigures), (2, 1));
    }

    #[test]
    fn a_driver_that_oversleeps_gets_one_report_not_a_burst() {
        let (mut cc, t) = streaming(ClientControlConfig::default());
        cc.handle_timeout(t + 3500 * MS);
        assert_eq!(drain(&mut cc), [ClientAction::SendStats]);
        assert_eq!(cc.poll_timeout(), Some(t + 4500 * MS));
    }

    #[test]
    fn losses_ask_for_a_keyframe_at_most_once_per_interval_and_late_ones_are_served() {
        let (mut cc, t) = streaming(ClientControlConfig::default());
        cc.handle_frames_lost(t, 40);
        assert_eq!(
            drain(&mut cc),
            [ClientAction::Send(Message::RequestKeyframe { frame: 40 })]
        );
        cc.handle_frames_lost(t + 30 * MS, 43);
        cc.handle_frames_lost(t + 60 * MS, 45);
        assert_eq!(drain(&mut cc), []);
        assert_eq!(cc.poll_timeout(), Some(t + KEYFRAME_REQUEST_INTERVAL));
        cc.handle_timeout(t + KEYFRAME_REQUEST_INTERVAL);
        assert_eq!(
            drain(&mut cc),
            [ClientAction::Send(Message::RequestKeyframe { frame: 43 })]
        );
        // Well after the interval a loss is asked for at once.
        cc.handle_frames_lost(t + 500 * MS, 70);
        assert_eq!(
            drain(&mut cc),
            [ClientAction::Send(Message::RequestKeyframe { frame: 70 })]
        );
        let s = cc.stats();
        assert_eq!((s.losses, s.keyframe_requests), (4, 3));
    }

    /// Found by the property test: a loss reported exactly when a held-back request fell due
    /// sent two requests at the same instant.
    #[test]
    fn a_loss_when_a_held_back_request_is_due_sends_one_request() {
        let (mut cc, t) = streaming(ClientControlConfig::default());
        cc.handle_frames_lost(t, 1);
        cc.handle_frames_lost(t, 2);
        drain(&mut cc);
        let due = t + KEYFRAME_REQUEST_INTERVAL;
        cc.handle_frames_lost(due, 3);
        assert_eq!(
            drain(&mut cc),
            [ClientAction::Send(Message::RequestKeyframe { frame: 2 })]
        );
        assert_eq!(
            cc.poll_timeout(),
            Some(t + STATS_INTERVAL),
            "nothing held back"
        );
    }

    #[test]
    fn reconfigured_changes_the_mode() {
        let (mut cc, t) = streaming(ClientControlConfig::default());
        let mode = Mode::new(320, 180, 30);
        cc.reconfigure(t, mode, 0);
        assert_eq!(
            drain(&mut cc),
            [ClientAction::Send(Message::Reconfigure {
                mode,
                bitrate_kbps: 0
            })]
        );
        cc.handle_message(
            t + 50 * MS,
            Message::Reconfigured {
                mode,
                bitrate_kbps: 4_000,
                first_frame: 45,
            },
        );
        assert_eq!(
            drain(&mut cc),
            [ClientAction::ModeChanged {
                mode,
                bitrate_kbps: 4_000,
                first_frame: 45
            }]
        );
        assert_eq!((cc.mode(), cc.bitrate_kbps()), (mode, 4_000));
        assert_eq!(cc.stats().reconfigured, 1);
    }

    #[test]
    fn the_hosts_bye_ends_the_session_clean_only_for_a_normal_end_or_shutdown() {
        for (reason, clean) in [
            (ByeReason::NORMAL, true),
            (ByeReason::SHUTDOWN, true),
            (ByeReason::UNSUPPORTED, false),
            (ByeReason::INTERNAL, false),
        ] {
            let (mut cc, t) = streaming(ClientControlConfig::default());
            cc.handle_message(t, bye(reason, "why"));
            let [ClientAction::End(end)] = &drain(&mut cc)[..] else {
                panic!("no answer to a Bye, only the end")
            };
            assert_eq!((end.by, end.reason), (Side::Host, Some(reason)));
            assert_eq!(end.is_clean(), clean, "{reason}");
            assert_eq!(
                end.to_string(),
                format!("host ended the session ({reason}): why")
            );
        }
    }

    #[test]
    fn messages_a_host_must_not_send_end_with_a_protocol_error() {
        for msg in [
            Message::Welcome(welcome()),
            Message::Start,
            Message::RequestKeyframe { frame: 1 },
            Message::Reconfigure {
                mode: Mode::new(640, 360, 30),
                bitrate_kbps: 0,
            },
            Message::ClockProbe(ClockProbe { id: 1, t0_us: 1 }),
            Message::Stats(ReceiverStats::default()),
        ] {
            let (mut cc, t) = streaming(ClientControlConfig::default());
            let name = msg.name();
            cc.handle_message(t, msg);
            let e = assert_client_bye(drain(&mut cc), ByeReason::PROTOCOL_ERROR);
            assert!(
                matches!(&e, ControlError::Protocol(m) if m.contains(name)),
                "{name}: {e}"
            );
        }
        // Unknown types are skipped, as everywhere in the protocol.
        let (mut cc, t) = streaming(ClientControlConfig::default());
        cc.handle_message(t, Message::Unknown { ty: 77 });
        assert_eq!(drain(&mut cc), []);
        assert_eq!(cc.stats().unknown_messages, 1);
    }

    #[test]
    fn malformed_or_closed_streams_end_the_session() {
        let (mut cc, t) = streaming(ClientControlConfig::default());
        cc.handle_malformed(t, "message length 0 out of range");
        let e = assert_client_bye(drain(&mut cc), ByeReason::PROTOCOL_ERROR);
        assert!(matches!(e, ControlError::Protocol(_)));

        let (mut cc, t) = streaming(ClientControlConfig::default());
        cc.handle_closed(t);
        let [ClientAction::End(end)] = &drain(&mut cc)[..] else {
            panic!()
        };
        assert_eq!(end.outcome, Err(ControlError::Closed));
        assert_eq!(
            end.to_string(),
            "host closed the control stream without a Bye"
        );
    }

    #[test]
    fn close_says_bye_and_ignores_what_follows() {
        let (mut cc, t) = streaming(ClientControlConfig::default());
        cc.handle_frames_lost(t, 1);
        cc.handle_frames_lost(t + MS, 2);
        drain(&mut cc);
        cc.close(t + 2 * MS, "user quit");
        assert_eq!(
            drain(&mut cc),
            [
                ClientAction::Send(bye(ByeReason::NORMAL, "user quit")),
                ClientAction::End(Ended {
                    by: Side::Client,
                    reason: Some(ByeReason::NORMAL),
                    message: "user quit".into(),
                    outcome: Ok(()),
                }),
            ]
        );
        assert_eq!(cc.poll_timeout(), None, "the held-back request is gone too");
        cc.handle_frames_lost(t, 3);
        cc.handle_message(t, bye(ByeReason::NORMAL, "late"));
        cc.handle_timeout(t + Duration::from_secs(5));
        assert_eq!(drain(&mut cc), []);
        assert_eq!(cc.stats().ignored_after_end, 3);
    }
}
