//! `punktfunk-host doctor` on this machine: no desktop, no GPU. The desktop variables are
//! removed from its environment so the result does not depend on where the test runs.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, Output};

const DESKTOP_VARS: [&str; 9] = [
    "WAYLAND_DISPLAY",
    "DISPLAY",
    "SWAYSOCK",
    "XDG_CURRENT_DESKTOP",
    "XDG_SESSION_TYPE",
    "XDG_RUNTIME_DIR",
    "DBUS_SESSION_BUS_ADDRESS",
    "PIPEWIRE_REMOTE",
    "RUST_LOG",
];

fn doctor(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_punktfunk-host"));
    for v in DESKTOP_VARS {
        c.env_remove(v);
    }
    c.arg("--config-dir")
        .arg(dir)
        .arg("doctor")
        .args(args)
        .output()
        .unwrap()
}

/// A UDP port that was free a moment ago.
fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Two different UDP ports that were free a moment ago (held together, so they differ).
fn free_udp_pair() -> (SocketAddr, SocketAddr) {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    (a.local_addr().unwrap(), b.local_addr().unwrap())
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The line of `edge`'s section that lists `backend`.
fn backend_line<'a>(report: &'a str, edge: &str, backend: &str) -> &'a str {
    let section = &report[report
        .find(&format!("\n{edge} (preference:"))
        .unwrap_or_else(|| panic!("no {edge} section:\n{report}"))
        + 1..];
    section
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .find(|l| l.trim_start().starts_with(&format!("{backend} ")))
        .unwrap_or_else(|| panic!("{edge} lists no {backend}:\n{report}"))
}

#[test]
fn reports_the_synthetic_backends_and_software_encoders_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (quic, data) = free_udp_pair();
    let out = doctor(
        dir.path(),
        &[
            "--listen",
            &quic.to_string(),
            "--data-port",
            &data.port().to_string(),
        ],
    );
    let r = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{r}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(r.contains("desktop: no desktop session"), "{r}");
    for (edge, backend) in [
        ("virtual display", "existing"),
        ("capture", "testpattern"),
        ("input", "log"),
        ("audio", "tone"),
    ] {
        assert!(
            backend_line(&r, edge, backend).ends_with("available"),
            "{edge} {backend}:\n{r}"
        );
    }
    for (edge, backend, why) in [
        ("virtual display", "sway", "no sway session"),
        ("virtual display", "mutter", "no GNOME session"),
        ("virtual display", "xorg", "no X server"),
        ("capture", "screencopy", "no Wayland display"),
        ("capture", "pipewire", "no PipeWire socket"),
        ("input", "xtest", "no X server"),
        ("audio", "pipewire", "no PipeWire socket"),
    ] {
        let line = backend_line(&r, edge, backend);
        assert!(line.contains(&format!("unavailable: {why}")), "{line}");
    }
    assert!(r.contains("\ncapture (preference: auto):\n"), "{r}");
    assert!(r.contains("  -> testpattern\n"), "{r}");
    assert!(r.contains("  h264 -> libx264\n"), "{r}");
    assert!(r.contains("    libx264          opens\n"), "{r}");
    assert!(
        r.contains("h264_vaapi       does not open: no VAAPI device"),
        "hardware encoders are tried and say why not:\n{r}"
    );
    assert!(
        r.contains(&format!("udp {quic:<22} punktfunk/1 QUIC         free")),
        "{r}"
    );
    assert!(r.contains("\nready: a stream can start"), "{r}");
}

#[test]
fn a_taken_port_makes_it_fail_and_names_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let held = UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap();
    let out = doctor(
        dir.path(),
        &[
            "--listen",
            &taken.to_string(),
            "--data-port",
            &free_udp().port().to_string(),
        ],
    );
    let r = text(&out);
    assert_eq!(out.status.code(), Some(2), "{r}");
    assert!(
        r.contains(&format!(
            "warning: udp port {} (punktfunk/1 QUIC, {taken}) is in use",
            taken.port()
        )),
        "{r}"
    );
    assert!(!r.contains("ready: a stream"), "{r}");

    // With GameStream on, its TCP ports are checked too.
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = http.local_addr().unwrap().port();
    let out = doctor(
        dir.path(),
        &[
            "--listen",
            &free_udp().to_string(),
            "--data-port",
            "0",
            "--gamestream",
            "--gamestream-port",
            &base.to_string(),
        ],
    );
    let r = text(&out);
    assert_eq!(out.status.code(), Some(2), "{r}");
    assert!(
        r.contains(&format!(
            "warning: tcp port {base} (GameStream HTTP, 127.0.0.1:{base}) is in use"
        )),
        "{r}"
    );
    assert!(
        r.contains(&format!("tcp 127.0.0.1:{}", base + 21)),
        "RTSP is listed: {r}"
    );
}

#[test]
fn json_has_the_same_facts() {
    let dir = tempfile::tempdir().unwrap();
    // Read from the configuration file: the preference and the ports come from it.
    let (quic, data) = free_udp_pair();
    std::fs::write(
        dir.path().join("host.toml"),
        format!(
            "[punktfunk1]\nlisten = \"{quic}\"\ndata_port = {}\n[desktop]\ncapture = [\"pipewire\", \"testpattern\"]\n",
            data.port()
        ),
    )
    .unwrap();
    let out = doctor(dir.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(j["ready"], true);
    assert_eq!(
        j["config_file"].as_str(),
        Some(dir.path().join("host.toml").to_str().unwrap())
    );
    let h264 = j["caps"]["codecs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["codec"] == "h264")
        .unwrap();
    assert_eq!(h264["encoder"], "libx264");
    assert!(h264["tried"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t[0] == "libx264" && t[1].is_null()));
    let capture = j["caps"]["edges"]["capture"].as_array().unwrap();
    let probe =
        |name: &str| capture.iter().find(|c| c["backend"] == name).unwrap()["probe"].clone();
    assert_eq!(probe("testpattern")["status"], "available");
    assert_eq!(probe("screencopy")["status"], "unavailable");
    assert!(probe("screencopy")["reason"]
        .as_str()
        .unwrap()
        .contains("WAYLAND_DISPLAY"));
    let sway = &j["caps"]["edges"]["display"][0];
    assert_eq!(
        (sway["backend"].as_str(), sway["probe"]["status"].as_str()),
        (Some("sway"), Some("unavailable"))
    );
    assert_eq!(j["chosen"]["capture"]["preference"], "pipewire,testpattern");
    assert_eq!(j["chosen"]["capture"]["backend"], "testpattern");
    assert!(j["chosen"]["capture"]["reason"]
        .as_str()
        .unwrap()
        .contains("passed over pipewire: unavailable"));
    assert_eq!(j["chosen"]["input"]["backend"], "log");
    assert_eq!(j["chosen"]["audio"]["backend"], "tone");
    let ports = j["ports"].as_array().unwrap();
    assert_eq!(ports[0]["address"], quic.to_string());
    assert_eq!(ports[1]["address"], data.to_string());
    assert!(
        ports.iter().all(|p| p["status"]["status"] == "free"),
        "{ports:?}"
    );

    // The same facts when a port is taken: not ready, and the warning names it.
    let held = UdpSocket::bind(data).unwrap();
    let out = doctor(dir.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(2));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["ready"], false);
    assert_eq!(j["ports"][1]["status"]["status"], "in_use");
    assert!(j["warnings"][0]
        .as_str()
        .unwrap()
        .starts_with(&format!("udp port {} (punktfunk/1 data plane", data.port())));
    drop(held);
}
