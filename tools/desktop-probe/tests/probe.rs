//! The probe on its own: it animates with stamped frames timed on the clock it is given, says
//! so in its log, exits 0 when the compositor goes away, and fails clearly without one.

use punktfunk_testenv::HeadlessSway;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn animates_on_the_host_clock_and_exits_when_the_compositor_goes() {
    let mut sway = HeadlessSway::start().expect("headless sway");
    let log = sway.runtime_dir().join("probe-frames.jsonl");
    let epoch = monotonic_ns();
    let mut child = Command::new(env!("CARGO_BIN_EXE_punktfunk-desktop-probe"))
        .arg("--log")
        .arg(&log)
        .env_clear()
        .envs(sway.env_vars())
        .env("PUNKTFUNK_EPOCH_MONOTONIC_NS", epoch.to_string())
        .stdin(Stdio::null())
        .spawn()
        .expect("starting the probe");

    // Frame 60 is logged after about a second of frame callbacks.
    let deadline = Instant::now() + Duration::from_secs(8);
    let frame60 = loop {
        if let Some(v) = lines(&log)
            .into_iter()
            .find(|v| v["event"] == "frame" && v["n"] == 60)
        {
            break v;
        }
        assert!(Instant::now() < deadline, "no frame 60: {:?}", lines(&log));
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed_us = (monotonic_ns() - epoch) / 1000;
    let first = lines(&log)
        .into_iter()
        .find(|v| v["event"] == "frame")
        .unwrap();
    assert_eq!(first["n"], 0);
    let (c0, c60) = (
        first["capture_us"].as_u64().unwrap(),
        frame60["capture_us"].as_u64().unwrap(),
    );
    assert!(c0 < c60 && c60 <= elapsed_us, "{c0} {c60} {elapsed_us}");
    assert!(frame60["t_us"].as_u64().unwrap() >= c60);

    sway.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the probe outlived its compositor");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    assert_eq!(lines(&log).last().unwrap()["event"], "closed");
}

#[test]
fn fails_clearly_without_a_compositor() {
    let dir = std::env::temp_dir().join(format!("pf-probe-nowl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_punktfunk-desktop-probe"))
        .env_clear()
        .env("XDG_RUNTIME_DIR", &dir)
        .env("WAYLAND_DISPLAY", "wayland-none")
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to a Wayland compositor"),
        "{err}"
    );
}
