//! Deterministic pair test of the control machines: a `HostControl` and a `ClientControl` in
//! one process, every message through the byte codec and a link with a fixed delay each way,
//! a stand-in pipeline that takes a while to reconfigure, virtual time. Each test runs a whole
//! session and checks what both sides did and when.

// Outside the core: tests take a real time origin.
#![allow(clippy::disallowed_methods)]

use punktfunk_core::control::{
    datagram, ByeReason, ClientAction, ClientControl, ClientControlConfig, ClockEstimate, Codec,
    ControlError, Ended, Hello, HostAction, HostControl, Message, MessageReader, Mode,
    ReceiverStats, ScheduledReconfigure, Side, PROTOCOL_VERSION,
};
use punktfunk_core::crypto::CipherSuite;
use punktfunk_core::handshake::{ClientHandshake, HostHandshake, HostPolicy, ModeRefused};
use punktfunk_core::input::InputEvent;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);
/// One-way delay of the link.
const DELAY: Duration = Duration::from_millis(3);
/// How long the stand-in pipeline takes to rebuild at a new mode.
const REBUILD: Duration = Duration::from_millis(25);
/// The host clock started this long before the client's.
const HOST_AHEAD: Duration = Duration::from_secs(7);
const FPS: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToHost,
    ToClient,
    /// A QUIC datagram, client to host.
    Datagram,
}

/// Something the client's data plane does at a time after streaming started.
#[derive(Debug, Clone)]
enum Script {
    Loss { first: u32 },
    Input(Vec<InputEvent>),
}

struct Pair {
    now: Instant,
    host: HostControl,
    client: ClientControl,
    /// In flight, in send order (the fixed delay keeps it in arrival order too).
    link: VecDeque<(Instant, Dir, Vec<u8>)>,
    to_host: MessageReader,
    to_client: MessageReader,
    /// The pipeline's answer to a reconfigure, due at that time.
    rebuild: Option<(Instant, u32)>,
    script: Vec<(Duration, Script)>,
    host_started: Instant,
    // What happened, for the assertions.
    wire: Vec<(Instant, Dir, &'static str)>,
    pipeline: Vec<(Instant, HostAction)>,
    synced: Option<(Instant, ClockEstimate)>,
    mode_changes: Vec<(Instant, Mode, u32)>,
    host_end: Option<(Instant, Ended)>,
    client_end: Option<(Instant, Ended)>,
}

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

impl Pair {
    /// Runs the handshake, then builds both control machines at the same instant.
    fn new(cfg: ClientControlConfig, script: Vec<(Duration, Script)>) -> Pair {
        let mut hs = HostHandshake::new(policy());
        let mut cs = ClientHandshake::new(Hello {
            version: PROTOCOL_VERSION,
            mode: Mode::new(640, 360, 30),
            codecs: vec![Codec::H264],
            bitrate_kbps: 0,
            fec_percent: None,
            client_name: "pair".into(),
            app: String::new(),
        });
        let mut n = 0u8;
        let mut rnd = |b: &mut [u8]| {
            for x in b {
                n = n.wrapping_add(1);
                *x = n;
            }
        };
        for _ in 0..3 {
            while let Some(m) = cs.poll_message() {
                hs.handle(m, &mut rnd);
            }
            while let Some(m) = hs.poll_message() {
                cs.handle(m);
            }
        }
        let (welcome, _) = hs.established().expect("handshake done");
        assert_eq!(Some(welcome), cs.established());

        let client_epoch = Instant::now();
        let host_epoch = client_epoch - HOST_AHEAD;
        let now = client_epoch + Duration::from_secs(1);
        Pair {
            now,
            host: HostControl::new(welcome, hs.policy().clone(), host_epoch, now),
            client: ClientControl::new(welcome, cfg, client_epoch, now),
            link: VecDeque::new(),
            to_host: MessageReader::new(),
            to_client: MessageReader::new(),
            rebuild: None,
            script,
            host_started: now,
            wire: Vec::new(),
            pipeline: Vec::new(),
            synced: None,
            mode_changes: Vec::new(),
            host_end: None,
            client_end: None,
        }
    }

    fn send(&mut self, dir: Dir, bytes: Vec<u8>) {
        self.link.push_back((self.now + DELAY, dir, bytes));
    }

    /// The frame the stand-in pipeline is at (it runs at FPS from the session's start).
    fn frame_now(&self) -> u32 {
        (self.now.duration_since(self.host_started).as_millis() as u64 * FPS / 1000) as u32
    }

    /// Executes every pending action of both machines, as the two drivers would.
    fn drain(&mut self) {
        loop {
            let mut moved = false;
            while let Some(a) = self.host.poll_action() {
                moved = true;
                match a {
                    HostAction::Send(m) => self.send(Dir::ToClient, m.to_bytes()),
                    HostAction::Reconfigure { .. } => {
                        assert!(self.rebuild.is_none(), "one rebuild at a time");
                        self.rebuild = Some((self.now + REBUILD, 0));
                        self.pipeline.push((self.now, a));
                    }
                    HostAction::Keyframe { .. } | HostAction::Input(_) => {
                        self.pipeline.push((self.now, a))
                    }
                    HostAction::End(e) => {
                        assert!(self.host_end.is_none(), "one end");
                        self.host_end = Some((self.now, e));
                    }
                }
            }
            while let Some(a) = self.client.poll_action() {
                moved = true;
                match a {
                    ClientAction::Send(m) => self.send(Dir::ToHost, m.to_bytes()),
                    ClientAction::SendStats => {
                        let s = ReceiverStats {
                            frames_received: u64::from(self.frame_now()),
                            ..ReceiverStats::default()
                        };
                        self.send(Dir::ToHost, Message::Stats(s).to_bytes());
                    }
                    ClientAction::ClockSynced(e) => self.synced = Some((self.now, e)),
                    ClientAction::ModeChanged {
                        mode, first_frame, ..
                    } => self.mode_changes.push((self.now, mode, first_frame)),
                    ClientAction::End(e) => {
                        assert!(self.client_end.is_none(), "one end");
                        self.client_end = Some((self.now, e));
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs the session until the link is quiet and neither machine has a timer.
    fn run(&mut self) {
        self.drain();
        for _ in 0..100_000 {
            let script_at = self
                .synced
                .and_then(|(t, _)| self.script.first().map(|(after, _)| t + *after));
            let next = [
                self.link.front().map(|(t, ..)| *t),
                self.host.poll_timeout(),
                self.client.poll_timeout(),
                self.rebuild.map(|(t, _)| t),
                script_at,
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else { return };
            assert!(next >= self.now, "time never runs backwards");
            self.now = next;
            let now = self.now;
            while self.link.front().is_some_and(|(t, ..)| *t <= now) {
                let (_, dir, bytes) = self.link.pop_front().expect("checked");
                self.deliver(dir, &bytes);
            }
            if self.rebuild.is_some_and(|(t, _)| t <= now) {
                self.rebuild = None;
                let first = self.frame_now() + 1;
                self.host
                    .handle_reconfigured(now, first, self.host.bitrate_kbps())
                    .expect("a reconfigure was in flight");
            }
            if script_at.is_some_and(|t| t <= now) {
                match self.script.remove(0).1 {
                    Script::Loss { first } => self.client.handle_frames_lost(now, first),
                    Script::Input(events) => {
                        let mut d = vec![datagram::INPUT];
                        d.extend(InputEvent::encode_batch(&events));
                        self.send(Dir::Datagram, d);
                    }
                }
            }
            if self.host.poll_timeout().is_some_and(|t| t <= now) {
                self.host.handle_timeout(now);
            }
            if self.client.poll_timeout().is_some_and(|t| t <= now) {
                self.client.handle_timeout(now);
            }
            self.drain();
        }
        panic!("the session did not settle");
    }

    fn deliver(&mut self, dir: Dir, bytes: &[u8]) {
        let now = self.now;
        if dir == Dir::Datagram {
            self.wire.push((now, dir, "input"));
            self.host.handle_datagram(now, bytes);
            return;
        }
        let reader = match dir {
            Dir::ToHost => &mut self.to_host,
            _ => &mut self.to_client,
        };
        reader.push(bytes);
        while let Some(m) = reader.next_message().expect("the codec round-trips") {
            self.wire.push((now, dir, m.name()));
            match dir {
                Dir::ToHost => self.host.handle_message(now, m),
                _ => self.client.handle_message(now, m),
            }
        }
    }

    fn names(&self, dir: Dir) -> Vec<&'static str> {
        self.wire
            .iter()
            .filter(|(_, d, _)| *d == dir)
            .map(|(.., n)| *n)
            .collect()
    }
}

#[test]
fn probes_a_reconfigure_a_keyframe_input_and_a_bye_run_through_both_machines() {
    let target = Mode::new(1280, 720, 30);
    let cfg = ClientControlConfig {
        duration: Some(Duration::from_secs(3)),
        reconfigure: Some(ScheduledReconfigure {
            after: 1500 * MS,
            mode: target,
            bitrate_kbps: 0,
        }),
    };
    let click = vec![InputEvent::MouseMove { dx: 1, dy: 2 }];
    let mut p = Pair::new(
        cfg,
        vec![
            (200 * MS, Script::Input(click.clone())),
            (700 * MS, Script::Loss { first: 21 }),
        ],
    );
    let start = p.now;
    p.run();

    // Clock sync: eight probes back to back, each one round trip; with equal delays both ways
    // the estimate is exact.
    let (synced_at, clock) = p.synced.expect("clock synced");
    assert_eq!(synced_at, start + 8 * 2 * DELAY);
    assert_eq!(
        clock,
        ClockEstimate {
            offset_us: HOST_AHEAD.as_micros() as i64,
            rtt_us: (2 * DELAY).as_micros() as u64,
        }
    );

    let mut to_host = vec!["ClockProbe"; 8];
    to_host.extend([
        "RequestKeyframe", // 0.7 s
        "Stats",           // 1 s
        "Reconfigure",     // 1.5 s
        "Stats",           // 2 s
        "Bye",             // 3 s
    ]);
    assert_eq!(p.names(Dir::ToHost), to_host);
    let mut to_client = vec!["ClockReply"; 8];
    to_client.push("Reconfigured");
    assert_eq!(p.names(Dir::ToClient), to_client);
    assert_eq!(p.names(Dir::Datagram), ["input"]);

    // What the host asked of its pipeline and injector, and when.
    let asked = synced_at + 1500 * MS + DELAY;
    assert_eq!(
        p.pipeline,
        [
            (synced_at + 200 * MS + DELAY, HostAction::Input(click)),
            (
                synced_at + 700 * MS + DELAY,
                HostAction::Keyframe { frame: 21 }
            ),
            (
                asked,
                HostAction::Reconfigure {
                    mode: target,
                    bitrate_kbps: 10_000
                }
            ),
        ]
    );
    let first =
        ((asked + REBUILD).duration_since(start).as_millis() as u64 * FPS / 1000) as u32 + 1;
    assert_eq!(
        p.mode_changes,
        [(asked + REBUILD + DELAY, target, first)],
        "Reconfigured reaches the client one rebuild and one trip after the request"
    );
    assert_eq!((p.host.mode(), p.client.mode()), (target, target));

    // The client's Bye ends both sides cleanly; the host does not answer it.
    let bye = Ended {
        by: Side::Client,
        reason: Some(ByeReason::NORMAL),
        message: "duration reached".into(),
        outcome: Ok(()),
    };
    let end = synced_at + Duration::from_secs(3);
    assert_eq!(p.client_end, Some((end, bye.clone())));
    assert_eq!(p.host_end, Some((end + DELAY, bye)));

    let h = p.host.stats();
    assert_eq!(h.clock_probes, 8);
    assert_eq!(h.receiver_reports, 2);
    assert_eq!(
        h.last_receiver_report.map(|r| r.frames_received),
        Some((synced_at + 2000 * MS).duration_since(start).as_millis() as u64 * FPS / 1000)
    );
    assert_eq!(
        (h.keyframes, h.reconfigures_done, h.input_events),
        (1, 1, 1)
    );
    let c = p.client.stats();
    assert_eq!(
        (c.clock_replies, c.keyframe_requests, c.reconfigured),
        (8, 1, 1)
    );
}

#[test]
fn a_reconfigure_past_the_hosts_refresh_limit_ends_both_sides_and_never_reaches_the_pipeline() {
    let too_fast = Mode::new(1280, 720, 120);
    let cfg = ClientControlConfig {
        duration: Some(Duration::from_secs(3)),
        reconfigure: Some(ScheduledReconfigure {
            after: 500 * MS,
            mode: too_fast,
            bitrate_kbps: 0,
        }),
    };
    let mut p = Pair::new(cfg, Vec::new());
    p.run();
    assert_eq!(p.pipeline, [], "nothing reached the pipeline");
    assert_eq!(p.mode_changes, []);
    let (_, host_end) = p.host_end.clone().expect("host ended");
    assert_eq!(host_end.by, Side::Host);
    assert_eq!(
        host_end.outcome,
        Err(ControlError::Refused(ModeRefused::AboveLimit {
            mode: too_fast,
            limit: Mode::new(1920, 1080, 60)
        }))
    );
    let (_, client_end) = p.client_end.clone().expect("client ended");
    assert_eq!(
        (client_end.by, client_end.reason),
        (Side::Host, Some(ByeReason::UNSUPPORTED))
    );
    assert!(!client_end.is_clean());
    assert!(
        client_end.message.contains("exceeds the host's limit"),
        "{}",
        client_end.message
    );
    assert_eq!(
        p.names(Dir::ToHost).last(),
        Some(&"Reconfigure"),
        "the client sends nothing after the host's Bye"
    );
}
