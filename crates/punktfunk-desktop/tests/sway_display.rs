//! The sway virtual display on a real headless sway: an output at the client's exact mode,
//! placed beside the others and focused, a mid-stream mode change, removal (parking on sway
//! 1.7) without leaking one output per session, and a compositor that goes away and comes back.

use punktfunk_core::control::Mode;
use punktfunk_desktop::vdisplay::sway::Sway;
use punktfunk_desktop::{CaptureTarget, DisplayError, VirtualDisplay};
use punktfunk_testenv::HeadlessSway;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

/// The fd count is process-wide: tests in this file run one at a time so another test's sockets
/// are not counted as this one's leak.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn outputs(sway: &HeadlessSway) -> Vec<swayipc::Output> {
    let s = UnixStream::connect(sway.swaysock()).expect("sway IPC");
    swayipc::Connection::from(s).get_outputs().expect("outputs")
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn an_output_per_stream_at_the_exact_mode_changed_mid_stream_and_gone_after() {
    let _serial = serial();
    let sway = HeadlessSway::start().expect("headless sway");
    let before = outputs(&sway);
    assert_eq!(before.len(), 1, "the fixture starts with one output");
    let first = &before[0];
    let mut display = Sway::new(&sway.desktop_env()).unwrap();

    let mut out = display.create(Mode::new(1280, 720, 60)).unwrap();
    let name = out.name().to_string();
    assert_ne!(name, first.name);
    assert_eq!(
        out.capture_target(),
        CaptureTarget::WaylandOutput(name.clone())
    );
    assert!(out
        .launch_env()
        .iter()
        .any(|(k, v)| k == "WAYLAND_DISPLAY" && v == sway.wayland_display()));
    let now = outputs(&sway);
    let o = now
        .iter()
        .find(|o| o.name == name)
        .expect("the new output is listed");
    let m = o.current_mode.as_ref().unwrap();
    assert_eq!((m.width, m.height, m.refresh), (1280, 720, 60_000));
    assert!(
        o.active && o.focused,
        "the stream's output is active and focused"
    );
    assert!(o.current_workspace.is_some(), "a workspace is on it");
    let other = now.iter().find(|o| o.name == first.name).unwrap();
    assert!(
        o.rect.x >= other.rect.x + other.rect.width || o.rect.x + o.rect.width <= other.rect.x,
        "placed beside the existing output, not over it: {:?} vs {:?}",
        o.rect,
        other.rect
    );

    out.set_mode(Mode::new(1920, 1080, 120)).unwrap();
    assert_eq!(out.mode(), Mode::new(1920, 1080, 120));
    let now = outputs(&sway);
    let o = now.iter().find(|o| o.name == name).unwrap();
    let m = o.current_mode.as_ref().unwrap();
    assert_eq!((m.width, m.height, m.refresh), (1920, 1080, 120_000));
    assert!(matches!(
        out.set_mode(Mode::new(0, 1080, 60)),
        Err(DisplayError::InvalidMode(_))
    ));

    drop(out);
    assert_gone_or_parked(&sway, &name);
}

/// The stream's output is gone, disabled, or (where sway cannot disable it) parked at the small
/// idle mode.
fn assert_gone_or_parked(sway: &HeadlessSway, name: &str) {
    let after = outputs(sway);
    if let Some(o) = after.iter().find(|o| o.name == name) {
        let m = o.current_mode.as_ref().unwrap();
        let park = punktfunk_desktop::vdisplay::sway::PARK_MODE;
        assert!(
            !o.active
                || (m.width, m.height, m.refresh)
                    == (
                        park.width as i32,
                        park.height as i32,
                        park.refresh_mhz as i32
                    ),
            "{name} is left on at {}x{}@{}",
            m.width,
            m.height,
            m.refresh
        );
    }
}

#[test]
fn twenty_sessions_in_a_row_leave_at_most_one_extra_output_and_no_fds() {
    let _serial = serial();
    let sway = HeadlessSway::start().expect("headless sway");
    let mut display = Sway::new(&sway.desktop_env()).unwrap();
    // One session first, so lazily opened process-wide handles do not count as leaks.
    drop(display.create(Mode::new(640, 480, 30)).unwrap());
    let fd0 = fds();
    let mut names = std::collections::BTreeSet::new();
    for i in 0..20u32 {
        let mode = Mode::new(640 + 16 * i, 480, 60);
        let out = display.create(mode).unwrap();
        assert_eq!(out.mode(), mode);
        names.insert(out.name().to_string());
        let now = outputs(&sway);
        let o = now.iter().find(|o| o.name == out.name()).unwrap();
        assert_eq!(o.current_mode.as_ref().unwrap().width, mode.width as i32);
    }
    let all = outputs(&sway);
    assert!(
        all.len() <= 2,
        "one output left over at most, not one per session: {}",
        all.len()
    );
    assert_eq!(names.len(), 1, "sessions reuse one output: {names:?}");
    for n in &names {
        assert_gone_or_parked(&sway, n);
    }
    assert_eq!(fds(), fd0, "no file descriptor outlives its session");
}

#[test]
fn a_killed_sway_is_a_clear_error_and_a_restarted_one_works_again() {
    let _serial = serial();
    let mut sway = HeadlessSway::start().expect("headless sway");
    let mut display = Sway::new(&sway.desktop_env()).unwrap();
    let out = display.create(Mode::new(1280, 720, 60)).unwrap();
    sway.kill();
    // Removing an output of a compositor that is gone is only logged.
    drop(out);
    let e = display.create(Mode::new(1280, 720, 60)).err().unwrap();
    assert_eq!(e, DisplayError::Disconnected);
    assert_eq!(e.to_string(), "the compositor is gone");
    sway.restart().expect("sway again");
    let out = display.create(Mode::new(1024, 768, 60)).unwrap();
    let now = outputs(&sway);
    let o = now.iter().find(|o| o.name == out.name()).unwrap();
    assert_eq!(o.current_mode.as_ref().unwrap().height, 768);
}
