//! The wlr injector against a real headless sway, read back through the probe's log: pointer
//! motion (relative and absolute), buttons, scroll in both directions, keys with and without
//! Shift, typed text, and releasing what is held.

use punktfunk_core::input::{InputEvent, Modifiers, MouseButton};
use punktfunk_desktop::inject::{self, InjectorBackend};
use punktfunk_desktop::{CaptureTarget, InputInjector};
use punktfunk_testenv::HeadlessSway;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

/// The probe app, logging to a file the test reads.
struct ProbeApp {
    child: Child,
    log: PathBuf,
    /// Lines already matched by an earlier wait.
    seen: usize,
}

impl ProbeApp {
    fn start(sway: &HeadlessSway, args: &[&str]) -> ProbeApp {
        let log = sway.runtime_dir().join("probe.jsonl");
        let child = Command::new(env!("CARGO_BIN_EXE_punktfunk-desktop-probe"))
            .args(args)
            .arg("--log")
            .arg(&log)
            .env_clear()
            .envs(sway.env_vars())
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("starting the probe");
        ProbeApp {
            child,
            log,
            seen: 0,
        }
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for a line after the last matched one that satisfies `pred`.
    fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let from = self.seen;
        let (i, v) = self.wait_from(from, what, pred);
        self.seen = i + 1;
        v
    }

    /// Waits for a line at or after line `from` that satisfies `pred`: its index and itself.
    fn wait_from(
        &mut self,
        from: usize,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> (usize, Value) {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.lines();
            if let Some(i) = lines.iter().skip(from).position(&pred) {
                return (from + i, lines[from + i].clone());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the probe exited ({status}) while waiting for {what}");
            }
            if Instant::now() > deadline {
                let tail: Vec<String> = lines.iter().skip(from).map(|v| v.to_string()).collect();
                panic!(
                    "no {what} in the probe's log; since the last match:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ProbeApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is(v: &Value, event: &str) -> bool {
    v["event"] == event
}

fn key(code: u16, down: bool) -> InputEvent {
    InputEvent::Key {
        code,
        down,
        modifiers: Modifiers::default(),
    }
}

fn button(b: MouseButton, down: bool) -> InputEvent {
    InputEvent::MouseButton { button: b, down }
}

fn near(v: &Value, x: f64, y: f64) -> bool {
    let (Some(vx), Some(vy)) = (v["x"].as_f64(), v["y"].as_f64()) else {
        return false;
    };
    (vx - x).abs() <= 1.0 && (vy - y).abs() <= 1.0
}

#[test]
fn pointer_keys_and_text_reach_a_wayland_window() {
    let mut sway = HeadlessSway::start().expect("headless sway");
    let mut app = ProbeApp::start(&sway, &["--static"]);
    app.wait("the first frame", |v| is(v, "frame"));

    let env = sway.desktop_env();
    assert!(inject::probe(InjectorBackend::Wlr, &env).is_available());
    let mut inj = inject::open(
        InjectorBackend::Wlr,
        &env,
        &CaptureTarget::WaylandOutput("HEADLESS-1".into()),
    )
    .expect("the wlr injector");
    assert_eq!(inj.backend(), InjectorBackend::Wlr);

    // The window's size is the last one it was configured with (the first configure may
    // precede the fullscreen one).
    let configure = app
        .lines()
        .into_iter()
        .rfind(|v| is(v, "configure"))
        .expect("a configure");
    let (w, h) = (
        configure["width"].as_f64().unwrap(),
        configure["height"].as_f64().unwrap(),
    );

    // Absolute: the middle of a 640x480 reference is the middle of the output, which the
    // fullscreen window covers.
    inj.inject(&InputEvent::MouseAbsolute {
        x: 320,
        y: 240,
        width: 640,
        height: 480,
    })
    .unwrap();
    let (cx, cy) = (w / 2.0, h / 2.0);
    app.wait("the pointer at the centre", |v| {
        (is(v, "enter") || is(v, "motion")) && near(v, cx, cy)
    });

    // A click focuses the window (and its keyboard).
    inj.inject(&button(MouseButton::LEFT, true)).unwrap();
    inj.inject(&button(MouseButton::LEFT, false)).unwrap();
    app.wait("left pressed", |v| {
        is(v, "button") && v["button"] == 0x110 && v["state"] == "pressed"
    });
    app.wait("left released", |v| {
        is(v, "button") && v["button"] == 0x110 && v["state"] == "released"
    });
    // sway may have focused the window when it mapped it, before the click.
    app.wait_from(0, "keyboard focus", |v| is(v, "keyboard_enter"));

    inj.inject(&InputEvent::MouseMove { dx: 10, dy: 5 })
        .unwrap();
    app.wait("relative motion", |v| {
        is(v, "motion") && near(v, cx + 10.0, cy + 5.0)
    });

    inj.inject(&button(MouseButton::RIGHT, true)).unwrap();
    inj.inject(&button(MouseButton::RIGHT, false)).unwrap();
    app.wait("right pressed", |v| {
        is(v, "button") && v["button"] == 0x111 && v["state"] == "pressed"
    });
    app.wait("right released", |v| {
        is(v, "button") && v["button"] == 0x111 && v["state"] == "released"
    });

    // One notch up: Wayland's vertical axis is down-positive.
    inj.inject(&InputEvent::Scroll { dx: 0, dy: 120 }).unwrap();
    let up = app.wait("a scroll up", |v| is(v, "axis") && v["axis"] == "vertical");
    assert!(up["value"].as_f64().unwrap() < 0.0, "{up}");
    assert_eq!(up["discrete"], -1, "{up}");
    // Half a notch right, twice: the second completes a notch.
    inj.inject(&InputEvent::Scroll { dx: 60, dy: 0 }).unwrap();
    let right = app.wait("a scroll right", |v| {
        is(v, "axis") && v["axis"] == "horizontal"
    });
    assert!(right["value"].as_f64().unwrap() > 0.0, "{right}");
    inj.inject(&InputEvent::Scroll { dx: 60, dy: 0 }).unwrap();
    let right = app.wait("a second scroll right", |v| {
        is(v, "axis") && v["axis"] == "horizontal"
    });
    assert_eq!(right["discrete"], 1, "{right}");

    // KEY_A.
    inj.inject(&key(30, true)).unwrap();
    inj.inject(&key(30, false)).unwrap();
    let a = app.wait("key a", |v| {
        is(v, "key") && v["key"] == 30 && v["state"] == "pressed"
    });
    assert_eq!(a["keysym"], "a", "{a}");
    assert_eq!(a["utf8"], "a", "{a}");
    app.wait("key a released", |v| {
        is(v, "key") && v["key"] == 30 && v["state"] == "released"
    });

    // Shift + KEY_A.
    inj.inject(&key(42, true)).unwrap();
    app.wait("Shift held", |v| {
        is(v, "modifiers")
            && v["active"]
                .as_array()
                .is_some_and(|a| a.iter().any(|m| m == "Shift"))
    });
    inj.inject(&key(30, true)).unwrap();
    inj.inject(&key(30, false)).unwrap();
    inj.inject(&key(42, false)).unwrap();
    let big_a = app.wait("shifted a", |v| {
        is(v, "key") && v["key"] == 30 && v["state"] == "pressed"
    });
    assert_eq!(big_a["keysym"], "A", "{big_a}");
    assert_eq!(big_a["utf8"], "A", "{big_a}");
    app.wait("Shift released", |v| {
        is(v, "modifiers") && v["active"].as_array().is_some_and(|a| a.is_empty())
    });

    // Text: on the layout with Shift, then a character the layout lacks.
    inj.inject(&InputEvent::Text { ch: 'Z' }).unwrap();
    let z = app.wait("typed Z", |v| is(v, "key") && v["state"] == "pressed");
    assert_eq!(z["utf8"], "Z", "{z}");
    inj.inject(&InputEvent::Text { ch: 'é' }).unwrap();
    let e = app.wait("typed é", |v| is(v, "key") && v["state"] == "pressed");
    assert_eq!(e["utf8"], "é", "{e}");
    assert_eq!(e["keysym"], "eacute", "{e}");
    inj.inject(&InputEvent::Text { ch: '\n' }).unwrap();
    let ret = app.wait("typed return", |v| is(v, "key") && v["state"] == "pressed");
    assert_eq!(ret["keysym"], "Return", "{ret}");
    // Typing left no modifier behind: a plain key is lower case.
    inj.inject(&key(31, true)).unwrap();
    inj.inject(&key(31, false)).unwrap();
    let s = app.wait("key s", |v| {
        is(v, "key") && v["key"] == 31 && v["state"] == "pressed"
    });
    assert_eq!(s["utf8"], "s", "{s}");

    // A key held when the session ends is released.
    inj.inject(&key(48, true)).unwrap();
    app.wait("key b held", |v| {
        is(v, "key") && v["key"] == 48 && v["state"] == "pressed"
    });
    inj.release_all();
    app.wait("key b released", |v| {
        is(v, "key") && v["key"] == 48 && v["state"] == "released"
    });

    assert!(matches!(
        inj.inject(&InputEvent::Touch {
            id: 0,
            phase: punktfunk_core::input::TouchPhase::DOWN,
            x: 0,
            y: 0,
            pressure: 0,
        }),
        Err(punktfunk_desktop::InjectError::Unsupported(_))
    ));
    // The compositor goes away: the injector says so.
    drop(app);
    sway.kill();
    let gone = (0..50).find_map(|_| {
        std::thread::sleep(Duration::from_millis(10));
        inj.inject(&InputEvent::MouseMove { dx: 1, dy: 0 }).err()
    });
    assert_eq!(gone, Some(punktfunk_desktop::InjectError::Disconnected));
    inj.release_all();
}
