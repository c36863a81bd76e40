//! Property tests of the control machines under a hostile or buggy peer: any sequence of
//! messages, datagrams, timer calls and pipeline answers never panics, never lets a mode past
//! the host's policy reach the pipeline, never has two reconfigures in flight, never produces
//! keyframes or keyframe requests faster than their limits, ends at most once with nothing
//! after the end, and every timer makes progress.

// Outside the core: tests take a real time origin.
#![allow(clippy::disallowed_methods)]

use proptest::prelude::*;
use punktfunk_core::control::{
    datagram, ByeReason, ClientAction, ClientControl, ClientControlConfig, ClockProbe, ClockReply,
    Codec, DirectionKey, HostAction, HostControl, Message, Mode, ReceiverStats,
    ScheduledReconfigure, Welcome, KEYFRAME_MIN_INTERVAL, KEYFRAME_REQUEST_INTERVAL,
    PROTOCOL_VERSION,
};
use punktfunk_core::crypto::CipherSuite;
use punktfunk_core::fec::FecCode;
use punktfunk_core::handshake::HostPolicy;
use std::time::{Duration, Instant};

fn policy() -> HostPolicy {
    HostPolicy {
        codecs: vec![Codec::H264],
        max_mode: Mode::new(1920, 1080, 60),
        default_bitrate_kbps: 10_000,
        bitrate_range_kbps: (500, 50_000),
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
        session_id: 1,
        codec: Codec::H264,
        mode: Mode::new(1280, 720, 60),
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

/// Modes mostly within the policy (1920x1080@60), a quarter of them past it in one respect.
fn mode() -> impl Strategy<Value = Mode> {
    let within = (32u32..=960, 32u32..=540, 1_000u32..=60_000).prop_map(|(w, h, hz)| Mode {
        width: w * 2,
        height: h * 2,
        refresh_mhz: hz,
    });
    (within, 0u8..8, 1u32..=3000).prop_map(|(m, how, n)| match how {
        0 => Mode {
            width: 1920 + 2 * n.min(2880),
            ..m
        },
        1 => Mode {
            height: 1080 + 2 * n.min(1620),
            ..m
        },
        2 => Mode {
            refresh_mhz: 60_000 + n * 140,
            ..m
        },
        3 => Mode {
            width: m.width | 1,
            ..m
        },
        _ => m,
    })
}

fn bye() -> impl Strategy<Value = Message> {
    (0u16..9).prop_map(|r| Message::Bye {
        reason: ByeReason(r),
        message: "x".into(),
    })
}

fn reconfigured() -> impl Strategy<Value = Message> {
    (mode(), any::<u32>(), any::<u32>()).prop_map(|(mode, bitrate_kbps, first_frame)| {
        Message::Reconfigured {
            mode,
            bitrate_kbps,
            first_frame,
        }
    })
}

fn clock_reply() -> impl Strategy<Value = Message> {
    (0u32..10, any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(id, t0_us, t1_us, t2_us)| {
        Message::ClockReply(ClockReply {
            id,
            t0_us,
            t1_us,
            t2_us,
        })
    })
}

/// What a client sends, with the occasional message it must not send.
fn to_host() -> impl Strategy<Value = Message> {
    prop_oneof![
        8 => any::<u32>().prop_map(|frame| Message::RequestKeyframe { frame }),
        8 => (mode(), prop_oneof![Just(0u32), any::<u32>()])
            .prop_map(|(mode, bitrate_kbps)| Message::Reconfigure { mode, bitrate_kbps }),
        4 => (0u32..10, any::<u64>())
            .prop_map(|(id, t0_us)| Message::ClockProbe(ClockProbe { id, t0_us })),
        3 => any::<u64>().prop_map(|n| Message::Stats(ReceiverStats {
            frames_received: n,
            ..ReceiverStats::default()
        })),
        1 => any::<u8>().prop_map(|ty| Message::Unknown { ty }),
        1 => prop_oneof![
            bye(),
            reconfigured(),
            clock_reply(),
            Just(Message::Start),
            Just(Message::Welcome(welcome())),
        ],
    ]
}

/// What a host sends, with the occasional message it must not send.
fn to_client() -> impl Strategy<Value = Message> {
    prop_oneof![
        10 => clock_reply(),
        4 => reconfigured(),
        1 => any::<u8>().prop_map(|ty| Message::Unknown { ty }),
        1 => prop_oneof![
            bye(),
            Just(Message::Start),
            Just(Message::Welcome(welcome())),
            any::<u32>().prop_map(|frame| Message::RequestKeyframe { frame }),
            Just(Message::Stats(ReceiverStats::default())),
        ],
    ]
}

#[derive(Debug, Clone)]
enum HostOp {
    Message(Message),
    Malformed,
    Closed,
    Datagram(Vec<u8>),
    Timeout,
    Reconfigured(u32, u32),
    ReconfigureFailed,
    PipelineFailed,
    Shutdown,
}

fn host_op() -> impl Strategy<Value = HostOp> {
    prop_oneof![
        60 => to_host().prop_map(HostOp::Message),
        1 => Just(HostOp::Malformed),
        1 => Just(HostOp::Closed),
        6 => prop::collection::vec(any::<u8>(), 0..24).prop_map(|mut d| {
            if d.len() % 2 == 0 && !d.is_empty() {
                d[0] = datagram::INPUT;
            }
            HostOp::Datagram(d)
        }),
        6 => Just(HostOp::Timeout),
        5 => (any::<u32>(), any::<u32>()).prop_map(|(f, b)| HostOp::Reconfigured(f, b)),
        1 => Just(HostOp::ReconfigureFailed),
        1 => Just(HostOp::PipelineFailed),
        1 => Just(HostOp::Shutdown),
    ]
}

#[derive(Debug, Clone)]
enum ClientOp {
    Message(Message),
    Malformed,
    Closed,
    Lost(u32),
    Timeout,
    Reconfigure(Mode),
    Close,
}

fn client_op() -> impl Strategy<Value = ClientOp> {
    prop_oneof![
        20 => to_client().prop_map(ClientOp::Message),
        1 => Just(ClientOp::Malformed),
        1 => Just(ClientOp::Closed),
        8 => any::<u32>().prop_map(ClientOp::Lost),
        10 => Just(ClientOp::Timeout),
        2 => mode().prop_map(ClientOp::Reconfigure),
        1 => Just(ClientOp::Close),
    ]
}

/// Checks the end rules that hold for both machines, given all actions so far and whether
/// each is an end.
fn check_end(ends_seen: &mut usize, is_end: bool) -> Result<(), TestCaseError> {
    prop_assert_eq!(*ends_seen, 0, "an action after the end");
    if is_end {
        *ends_seen += 1;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn host_control_keeps_its_promises_whatever_the_client_sends(
        ops in prop::collection::vec((0u64..80, host_op()), 1..60)
    ) {
        let p = policy();
        let epoch = Instant::now();
        let mut now = epoch;
        let mut hc = HostControl::new(&welcome(), p.clone(), epoch, now);
        let mut in_flight = false;
        let mut ends = 0;
        let mut last_keyframe: Option<Instant> = None;
        for (dt, op) in ops {
            now += Duration::from_millis(dt);
            let ended = hc.is_ended();
            match op {
                HostOp::Message(m) => hc.handle_message(now, m),
                HostOp::Malformed => hc.handle_malformed(now, "bad"),
                HostOp::Closed => hc.handle_closed(now),
                HostOp::Datagram(d) => hc.handle_datagram(now, &d),
                HostOp::Timeout => {
                    if let Some(t) = hc.poll_timeout() {
                        now = now.max(t);
                        hc.handle_timeout(now);
                        prop_assert!(
                            hc.is_ended() || hc.poll_timeout().is_none_or(|n| n > now),
                            "a timer handled at its deadline must move on"
                        );
                    }
                }
                HostOp::Reconfigured(first, kbps) => {
                    let r = hc.handle_reconfigured(now, first, kbps);
                    prop_assert_eq!(r.is_ok(), in_flight || ended);
                    in_flight = false;
                }
                HostOp::ReconfigureFailed => {
                    let r = hc.handle_reconfigure_failed(now, "no");
                    prop_assert_eq!(r.is_ok(), in_flight || ended);
                    in_flight = false;
                }
                HostOp::PipelineFailed => hc.handle_pipeline_failed(now, "gone"),
                HostOp::Shutdown => hc.shutdown(now, ByeReason::SHUTDOWN, "bye"),
            }
            while let Some(a) = hc.poll_action() {
                check_end(&mut ends, matches!(a, HostAction::End(_)))?;
                match a {
                    HostAction::Reconfigure { mode, bitrate_kbps } => {
                        prop_assert!(!in_flight, "two reconfigures in flight");
                        in_flight = true;
                        // Spelled out rather than asking `admit`, which is what is under test.
                        let max = p.max_mode;
                        prop_assert!(
                            mode.validate().is_ok()
                                && mode.width <= max.width
                                && mode.height <= max.height
                                && mode.refresh_mhz <= max.refresh_mhz,
                            "{} reached the pipeline past {}", mode, max
                        );
                        prop_assert!((500..=50_000).contains(&bitrate_kbps));
                    }
                    HostAction::Keyframe { .. } => {
                        prop_assert!(last_keyframe.is_none_or(|t| now >= t + KEYFRAME_MIN_INTERVAL));
                        last_keyframe = Some(now);
                    }
                    HostAction::Input(events) => prop_assert!(!events.is_empty()),
                    HostAction::Send(_) | HostAction::End(_) => {}
                }
            }
            if hc.is_ended() {
                prop_assert_eq!(hc.poll_timeout(), None);
                in_flight = false;
            }
        }
    }

    #[test]
    fn client_control_keeps_its_promises_whatever_the_host_sends(
        ops in prop::collection::vec((0u64..400, client_op()), 1..80),
        duration in prop::option::of(0u64..5000),
        reconfigure_after in prop::option::of(0u64..5000),
    ) {
        let epoch = Instant::now();
        let mut now = epoch;
        let cfg = ClientControlConfig {
            duration: duration.map(Duration::from_millis),
            reconfigure: reconfigure_after.map(|ms| ScheduledReconfigure {
                after: Duration::from_millis(ms),
                mode: Mode::new(640, 360, 30),
                bitrate_kbps: 0,
            }),
        };
        let mut cc = ClientControl::new(&welcome(), cfg, epoch, now);
        let mut ends = 0;
        let mut synced = false;
        let mut last_request: Option<Instant> = None;
        for (dt, op) in ops {
            now += Duration::from_millis(dt);
            match op {
                ClientOp::Message(m) => cc.handle_message(now, m),
                ClientOp::Malformed => cc.handle_malformed(now, "bad"),
                ClientOp::Closed => cc.handle_closed(now),
                ClientOp::Lost(first) => cc.handle_frames_lost(now, first),
                ClientOp::Timeout => {
                    if let Some(t) = cc.poll_timeout() {
                        now = now.max(t);
                        cc.handle_timeout(now);
                        prop_assert!(
                            cc.is_ended() || cc.poll_timeout().is_none_or(|n| n > now),
                            "a timer handled at its deadline must move on"
                        );
                    }
                }
                ClientOp::Reconfigure(m) => cc.reconfigure(now, m, 0),
                ClientOp::Close => cc.close(now, "done"),
            }
            while let Some(a) = cc.poll_action() {
                check_end(&mut ends, matches!(a, ClientAction::End(_)))?;
                match a {
                    ClientAction::ClockSynced(_) => {
                        prop_assert!(!synced, "synced twice");
                        synced = true;
                    }
                    ClientAction::SendStats => prop_assert!(synced, "a report before streaming"),
                    ClientAction::Send(Message::RequestKeyframe { .. }) => {
                        prop_assert!(last_request.is_none_or(|t| now >= t + KEYFRAME_REQUEST_INTERVAL));
                        last_request = Some(now);
                    }
                    _ => {}
                }
            }
            if cc.is_ended() {
                prop_assert_eq!(cc.poll_timeout(), None);
            }
        }
    }
}
