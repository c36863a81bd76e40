//! wlr-screencopy against a real headless sway: the picture's pixels and size, damage-driven
//! idling, following a mode change, the compositor dying, the output name, and no threads or
//! fds left behind.
//!
//! The tests take one lock: the leak test counts the whole process's threads and fds, and one
//! sway at a time keeps the two shared cores free for the compositor.

use punktfunk_core::control::Mode;
use punktfunk_desktop::capture::{self, SourceOptions};
use punktfunk_desktop::{CaptureBackend, CaptureError, CaptureTarget, FrameSource};
use punktfunk_media::FrameRef;
use punktfunk_testenv::HeadlessSway;
use std::cell::Cell;
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn sway() -> HeadlessSway {
    HeadlessSway::start().expect("headless sway (run scripts/install-deps.sh)")
}

/// Runs a sway command over the fixture's own IPC socket.
fn sway_cmd(sway: &HeadlessSway, cmd: &str) {
    let stream = UnixStream::connect(sway.swaysock()).expect("sway IPC socket");
    let mut ipc = swayipc::Connection::from(stream);
    for outcome in ipc.run_command(cmd).expect("sway IPC") {
        if let Err(e) = outcome {
            panic!("sway refused {cmd:?}: {e}");
        }
    }
}

fn options(sway: &HeadlessSway, target: CaptureTarget) -> SourceOptions {
    SourceOptions {
        target,
        mode: Mode::new(640, 480, 60),
        epoch: Instant::now(),
        env: sway.desktop_env(),
    }
}

fn open(sway: &HeadlessSway) -> Box<dyn FrameSource> {
    capture::open(
        CaptureBackend::Screencopy,
        &options(sway, CaptureTarget::WaylandOutput("HEADLESS-1".into())),
    )
    .unwrap_or_else(|e| panic!("screencopy source: {e}"))
}

/// Blue, green, red at (x, y).
fn pixel(f: &FrameRef<'_>, x: u32, y: u32) -> [u8; 3] {
    let i = y as usize * f.stride + x as usize * 4;
    [f.data[i], f.data[i + 1], f.data[i + 2]]
}

/// Whether (nearly) all of a 9×9 grid over the frame, corners included, is `bgr`.
fn is_solid(f: &FrameRef<'_>, bgr: [u8; 3]) -> bool {
    let mut hits = 0;
    for gy in 0..9 {
        for gx in 0..9 {
            let x = (f.width - 1) * gx / 8;
            let y = (f.height - 1) * gy / 8;
            hits += usize::from(pixel(f, x, y) == bgr);
        }
    }
    hits >= 79
}

/// What a frame looked like.
#[derive(Debug, Clone, Copy)]
struct Seen {
    width: u32,
    height: u32,
    centre: [u8; 3],
    cost_us: u32,
    age: Duration,
}

/// Takes frames until one satisfies `want`, failing after `within`.
fn wait_for(
    src: &mut dyn FrameSource,
    within: Duration,
    want: impl Fn(&FrameRef<'_>) -> bool,
) -> Seen {
    let end = Instant::now() + within;
    let mut last = None;
    while Instant::now() < end {
        let got = src
            .next_frame(Instant::now() + Duration::from_millis(200))
            .expect("a working source");
        if let Some(c) = got {
            let f = &c.frame;
            assert!(f.stride >= f.width as usize * 4);
            assert!(f.data.len() >= f.stride * (f.height as usize - 1) + f.width as usize * 4);
            let seen = Seen {
                width: f.width,
                height: f.height,
                centre: pixel(f, f.width / 2, f.height / 2),
                cost_us: c.cost_us,
                age: c.captured_at.elapsed(),
            };
            if want(f) {
                return seen;
            }
            last = Some(seen);
        }
    }
    panic!("no matching frame within {within:?}; the last one: {last:?}");
}

#[test]
fn a_solid_background_arrives_at_the_outputs_size_and_a_new_colour_follows() {
    let _serial = serial();
    let sway = sway();
    let mut src = open(&sway);
    sway_cmd(&sway, "output HEADLESS-1 mode --custom 640x480@60Hz");
    sway_cmd(&sway, "output HEADLESS-1 bg #336699 solid_color");
    let seen = wait_for(&mut *src, Duration::from_secs(10), |f| {
        (f.width, f.height) == (640, 480) && is_solid(f, [0x99, 0x66, 0x33])
    });
    eprintln!("640x480: {seen:?}");
    // The presentation time is recent and the hand-over cheap.
    assert!(seen.age < Duration::from_secs(1), "{seen:?}");
    assert!(seen.cost_us < 100_000, "{seen:?}");

    sway_cmd(&sway, "output HEADLESS-1 bg #aa2211 solid_color");
    let seen = wait_for(&mut *src, Duration::from_secs(10), |f| {
        (f.width, f.height) == (640, 480) && is_solid(f, [0x11, 0x22, 0xaa])
    });
    assert_eq!(seen.centre, [0x11, 0x22, 0xaa]);
}

#[test]
fn an_idle_desktop_produces_no_frames_until_the_deadline() {
    let _serial = serial();
    let sway = sway();
    let mut src = open(&sway);
    sway_cmd(&sway, "output HEADLESS-1 bg #102030 solid_color");
    wait_for(&mut *src, Duration::from_secs(10), |f| {
        is_solid(f, [0x30, 0x20, 0x10])
    });
    // Let whatever is still being drawn settle.
    let settle_end = Instant::now() + Duration::from_secs(5);
    while src
        .next_frame(Instant::now() + Duration::from_millis(300))
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < settle_end, "the picture never settles");
    }
    let cpu_before = screencopy_cpu_ticks();
    for _ in 0..2 {
        let t = Instant::now();
        let got = src.next_frame(t + Duration::from_millis(500)).unwrap();
        assert!(got.is_none(), "an idle desktop sends no frames");
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(490) && waited < Duration::from_millis(800),
            "{waited:?}"
        );
    }
    // Waiting is waiting: the capture thread sleeps in poll, it does not spin.
    let spent = screencopy_cpu_ticks() - cpu_before;
    assert!(
        spent <= 2,
        "the capture thread used {spent} ticks while idle"
    );
    // A source opened on the idle desktop still starts with a picture.
    let mut second = open(&sway);
    wait_for(&mut *second, Duration::from_secs(2), |f| {
        is_solid(f, [0x30, 0x20, 0x10])
    });
    drop(second);
    // And a change wakes it again.
    sway_cmd(&sway, "output HEADLESS-1 bg #405060 solid_color");
    wait_for(&mut *src, Duration::from_secs(10), |f| {
        is_solid(f, [0x60, 0x50, 0x40])
    });
}

#[test]
fn frames_follow_the_output_to_a_new_mode() {
    let _serial = serial();
    let sway = sway();
    let mut src = open(&sway);
    // The headless output's own mode first (sway's default), for the figures.
    sway_cmd(&sway, "output HEADLESS-1 bg #224466 solid_color");
    let before = wait_for(&mut *src, Duration::from_secs(10), |f| {
        is_solid(f, [0x66, 0x44, 0x22])
    });
    eprintln!("default mode: {before:?}");
    src.set_mode(Mode::new(800, 600, 60)).expect("set_mode");
    sway_cmd(&sway, "output HEADLESS-1 mode --custom 800x600@60Hz");
    // The first frame after the change already has the new size: one the compositor copied
    // into an old-sized buffer across the change is not handed out.
    let first = Cell::new(None);
    let after = wait_for(&mut *src, Duration::from_secs(10), |f| {
        first.set(first.get().or(Some((f.width, f.height))));
        (f.width, f.height) == (800, 600) && is_solid(f, [0x66, 0x44, 0x22])
    });
    assert_eq!(first.get(), Some((800, 600)));
    eprintln!("800x600: {after:?}");
    assert_ne!((before.width, before.height), (800, 600));
    // And back up: the buffers grow again.
    sway_cmd(&sway, "output HEADLESS-1 mode --custom 1920x1080@60Hz");
    let big = wait_for(&mut *src, Duration::from_secs(10), |f| {
        (f.width, f.height) == (1920, 1080) && is_solid(f, [0x66, 0x44, 0x22])
    });
    eprintln!("1920x1080: {big:?}");
}

#[test]
fn a_killed_compositor_is_a_disconnect_within_the_deadlines() {
    let _serial = serial();
    let mut sway = sway();
    let mut src = capture::open(
        CaptureBackend::Screencopy,
        &options(&sway, CaptureTarget::Desktop),
    )
    .unwrap_or_else(|e| panic!("screencopy of the desktop: {e}"));
    sway_cmd(&sway, "output HEADLESS-1 bg #010203 solid_color");
    wait_for(&mut *src, Duration::from_secs(10), |f| {
        is_solid(f, [0x03, 0x02, 0x01])
    });
    sway.kill();
    let t = Instant::now();
    let err = loop {
        match src.next_frame(Instant::now() + Duration::from_millis(500)) {
            Ok(_) => assert!(
                t.elapsed() < Duration::from_secs(2),
                "no disconnect after 2 s"
            ),
            Err(e) => break e,
        }
    };
    assert_eq!(err, CaptureError::Disconnected);
    assert!(t.elapsed() < Duration::from_millis(2500));
    // It stays that way, at once.
    let t = Instant::now();
    assert_eq!(
        src.next_frame(Instant::now() + Duration::from_secs(5))
            .map(|f| f.is_some()),
        Err(CaptureError::Disconnected)
    );
    assert!(t.elapsed() < Duration::from_millis(100));
}

#[test]
fn an_unknown_output_is_unsupported_and_names_the_outputs_there_are() {
    let _serial = serial();
    let sway = sway();
    let opts = options(&sway, CaptureTarget::WaylandOutput("DP-9".into()));
    match capture::open(CaptureBackend::Screencopy, &opts) {
        Err(CaptureError::Unsupported(why)) => {
            assert!(why.contains("DP-9") && why.contains("HEADLESS-1"), "{why}")
        }
        Err(e) => panic!("expected Unsupported, got {e}"),
        Ok(_) => panic!("an output that does not exist was opened"),
    }
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).unwrap().count()
}

fn screencopy_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "screencopy")
        })
        .count()
}

/// User and system CPU time of the capture threads, in clock ticks.
fn screencopy_cpu_ticks() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| stat.contains("(screencopy)"))
        .map(|stat| {
            // Fields after the parenthesised name: state is the 3rd, utime the 14th.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
        })
        .sum()
}

#[test]
fn opening_and_dropping_sources_leaves_no_threads_or_fds() {
    let _serial = serial();
    let sway = sway();
    sway_cmd(&sway, "output HEADLESS-1 bg #445566 solid_color");
    // One source first: whatever is made once per process is made now.
    {
        let mut src = open(&sway);
        wait_for(&mut *src, Duration::from_secs(10), |f| {
            is_solid(f, [0x66, 0x55, 0x44])
        });
    }
    let fds = count_dir("/proc/self/fd");
    let tasks = count_dir("/proc/self/task");
    assert_eq!(screencopy_threads(), 0);
    for i in 0..20 {
        let mut src = open(&sway);
        // Some hold a frame (buffers made and handed out) when dropped, some do not.
        if i % 2 == 0 {
            sway_cmd(
                &sway,
                &format!("output HEADLESS-1 bg #4455{i:02x} solid_color"),
            );
            let _ = src.next_frame(Instant::now() + Duration::from_millis(300));
        }
        // A new thread takes its name itself, a moment after it starts.
        let named = Instant::now() + Duration::from_secs(1);
        while screencopy_threads() == 0 && Instant::now() < named {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(screencopy_threads(), 1, "one capture thread per source");
    }
    assert_eq!(screencopy_threads(), 0, "every capture thread is joined");
    // The harness may be starting or ending another test's thread: wait for it to settle.
    let end = Instant::now() + Duration::from_secs(2);
    while count_dir("/proc/self/task") > tasks && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(count_dir("/proc/self/task") <= tasks, "threads left behind");
    assert_eq!(count_dir("/proc/self/fd"), fds, "fds left behind");
}
