//! End to end with the real binaries: a `punktfunk-host serve` process and
//! `punktfunk-client connect` processes on loopback, real x264 encoding and libavcodec
//! decoding, the data plane optionally through the impairment proxy. Every shown frame is
//! verified by the stamp the host drew into it.

use punktfunk_media::probe_stream_file;
use punktfunk_net::{ImpairConfig, ImpairProxy};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The tests run one at a time: each streams real video, and two cores shared by several
/// encoders and decoders would turn the timing-related checks into a test of the scheduler.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

mod common;
use common::client_bin;

fn host_bin() -> PathBuf {
    common::sibling_bin("punktfunk-host", "punktfunk-host")
}

struct Host {
    child: Child,
    quic: SocketAddr,
    data_port: u16,
    fingerprint: String,
    /// The host was started with `--allow-unpaired`: clients connect without pairing.
    open: bool,
    /// Client config directories paired with this host so far.
    paired: std::sync::Mutex<Vec<PathBuf>>,
    _dir: tempfile::TempDir,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_host(extra: &[&str]) -> Host {
    start_host_in(tempfile::tempdir().unwrap(), extra)
}

/// [`start_host`] with the config directory `dir` (prepared by the test: apps.toml, …).
/// The host requires pairing (unless `extra` says `--allow-unpaired`); [`client`] pairs each
/// client config directory once, the way a person would. `tests/pairing.rs` tests pairing
/// itself.
fn start_host_in(dir: tempfile::TempDir, extra: &[&str]) -> Host {
    let mut child = Command::new(host_bin())
        .args([
            "--config-dir",
            dir.path().to_str().unwrap(),
            "--log",
            "warn",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-port",
            "0",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "punktfunk-host listening on 127.0.0.1:PORT (data DPORT), fingerprint HEX"
    let quic: SocketAddr = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    let data_port: u16 = line
        .split("(data ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let fingerprint = line.trim().rsplit(' ').next().unwrap().to_string();
    assert_eq!(fingerprint.len(), 64, "{line}");
    Host {
        child,
        quic,
        data_port,
        fingerprint,
        open: extra.contains(&"--allow-unpaired"),
        paired: Default::default(),
        _dir: dir,
    }
}

struct Run {
    ok: bool,
    report: Value,
    stderr: String,
}

/// Pairs the client config `config` with `host` unless done before (or the host is open):
/// `punktfunk-host pair` arms a PIN, `punktfunk-client pair --pin-code` types it.
fn ensure_paired(host: &Host, config: &Path) {
    let mut paired = host.paired.lock().unwrap();
    if host.open || paired.iter().any(|p| p == config) {
        return;
    }
    common::pair(
        host._dir.path(),
        &host.quic.to_string(),
        config,
        "e2e-client",
    );
    paired.push(config.to_path_buf());
}

fn client(host: &Host, config: &Path, args: &[&str]) -> Run {
    ensure_paired(host, config);
    let out = Command::new(client_bin())
        .args([
            "--config-dir",
            config.to_str().unwrap(),
            "--log",
            "warn",
            "connect",
            &host.quic.to_string(),
            "--json",
        ])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    Run {
        ok: out.status.success(),
        report,
        stderr,
    }
}

fn n(r: &Value, k: &str) -> u64 {
    r[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {r}"))
}

#[test]
fn clean_network_every_frame_decoded_in_order_and_the_file_plays() {
    let _serial = serial();
    let host = start_host(&["--sessions", "1"]);
    let cfg = tempfile::tempdir().unwrap();
    let file = cfg.path().join("stream.h264");
    let png = cfg.path().join("frame.png");
    let pin = host.fingerprint.clone();
    let r = client(
        &host,
        cfg.path(),
        &[
            "--mode",
            "640x360@30",
            "--seconds",
            "3",
            "--pin",
            &pin,
            "--out",
            file.to_str().unwrap(),
            "--png",
            png.to_str().unwrap(),
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let rep = &r.report;
    let sent = n(rep, "frames_sent");
    assert!(sent >= 60, "{rep}");
    for k in ["frames_received", "frames_decoded"] {
        assert_eq!(n(rep, k), sent, "{k}: {rep}");
    }
    for k in [
        "frames_lost",
        "frames_corrupt",
        "frames_out_of_order",
        "frames_skipped",
        "keyframes_requested",
        "packets_rejected",
    ] {
        assert_eq!(n(rep, k), 0, "{k}: {rep}");
    }
    assert_eq!(
        n(rep, "keyframes_received"),
        1,
        "one keyframe, at the start"
    );
    assert!(rep["capture_to_decoded_ms"]["p50"].as_f64().unwrap() > 0.0);
    let info = probe_stream_file(&file).unwrap();
    assert_eq!(
        (info.codec.as_str(), info.width, info.height, info.frames),
        ("h264", 640, 360, sent),
        "{info:?}"
    );
    // Decoded again from the file, as a player would: every picture's stamp in sequence.
    assert_eq!(info.stamps_in_sequence, sent, "{info:?}");
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
}

/// An impairment proxy in front of the host's data port that impairs video (host -> client, the
/// proxy's backward direction) by `video_spec`; returns it and the address for `--data-via`.
fn proxy_to(host: &Host, video_spec: &str) -> (ImpairProxy, String) {
    let upstream: SocketAddr = format!("127.0.0.1:{}", host.data_port).parse().unwrap();
    let back: ImpairConfig = video_spec.parse().unwrap();
    let proxy = ImpairProxy::spawn(
        "127.0.0.1:0".parse().unwrap(),
        upstream,
        ImpairConfig::default(),
        back,
    )
    .unwrap();
    let via = proxy.local_addr().to_string();
    (proxy, via)
}

#[test]
fn five_percent_loss_with_fec_is_recovered_and_never_corrupt() {
    let _serial = serial();
    let host = start_host(&["--sessions", "1"]);
    // Video flows host -> client: the proxy's backward direction.
    let (proxy, via) = proxy_to(&host, "loss=5%,seed=11");
    let cfg = tempfile::tempdir().unwrap();
    let r = client(
        &host,
        cfg.path(),
        &[
            "--mode",
            "640x360@30",
            "--seconds",
            "4",
            "--fec",
            "20",
            "--bitrate",
            "3000",
            "--data-via",
            &via,
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let rep = &r.report;
    let dropped = proxy.stats().backward.dropped_random;
    assert!(dropped > 50, "the proxy lost only {dropped} datagrams");
    assert!(n(rep, "frames_recovered") > 10, "{rep}");
    assert_eq!(n(rep, "frames_corrupt"), 0, "{rep}");
    assert_eq!(n(rep, "frames_out_of_order"), 0, "{rep}");
    let (sent, decoded) = (n(rep, "frames_sent"), n(rep, "frames_decoded"));
    assert!(
        decoded * 100 >= sent * 90,
        "decoded {decoded} of {sent}: {rep}"
    );
}

#[test]
fn a_burst_that_defeats_fec_triggers_a_keyframe_and_recovers() {
    let _serial = serial();
    let host = start_host(&["--sessions", "1"]);
    // ~58 datagrams per frame at this bitrate (48 data + 10 parity): 150 in a row wipe out
    // several frames.
    let (proxy, via) = proxy_to(&host, "blackout=1500+150");
    let cfg = tempfile::tempdir().unwrap();
    let r = client(
        &host,
        cfg.path(),
        &[
            "--mode",
            "640x360@30",
            "--seconds",
            "4",
            "--bitrate",
            "10000",
            "--data-via",
            &via,
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let rep = &r.report;
    assert_eq!(proxy.stats().backward.dropped_blackout, 150);
    assert!(n(rep, "frames_lost") >= 1, "{rep}");
    assert!(n(rep, "keyframes_requested") >= 1, "{rep}");
    assert!(
        n(rep, "keyframes_received") >= 2,
        "the requested keyframe arrived: {rep}"
    );
    assert_eq!(n(rep, "frames_corrupt"), 0, "{rep}");
    // Recovery within a few frames: only the frames between the loss and the new keyframe
    // (one round trip plus an encode) are skipped.
    assert!(n(rep, "frames_skipped") <= 5, "{rep}");
    let sent = n(rep, "frames_sent");
    let accounted = n(rep, "frames_decoded") + n(rep, "frames_lost") + n(rep, "frames_skipped");
    assert_eq!(
        accounted, sent,
        "every frame decoded, lost or skipped: {rep}"
    );
}

#[test]
fn reconfigure_changes_the_decoded_size_mid_stream() {
    let _serial = serial();
    let host = start_host(&["--sessions", "1"]);
    let cfg = tempfile::tempdir().unwrap();
    let r = client(
        &host,
        cfg.path(),
        &[
            "--mode",
            "640x360@30",
            "--seconds",
            "3",
            "--reconfigure",
            "1.5:320x180@30",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let rep = &r.report;
    assert_eq!(rep["mode"], "320x180@30", "{rep}");
    let sizes = &rep["sizes"];
    assert!(sizes["640x360"].as_u64().unwrap_or(0) > 20, "{rep}");
    assert!(sizes["320x180"].as_u64().unwrap_or(0) > 20, "{rep}");
    assert_eq!(n(rep, "frames_corrupt"), 0, "{rep}");
    assert_eq!(n(rep, "frames_lost"), 0, "{rep}");
}

#[test]
fn sessions_back_to_back_with_trust_on_first_use_and_pins() {
    let _serial = serial();
    // Trust on first use is what a host without pairing (a trusted network) relies on.
    let host = start_host(&["--sessions", "3", "--allow-unpaired"]);
    let cfg = tempfile::tempdir().unwrap();
    // First use: stored.
    let r = client(
        &host,
        cfg.path(),
        &["--mode", "320x180@30", "--seconds", "1"],
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("trusting this host on first use"),
        "{}",
        r.stderr
    );
    let known = std::fs::read_to_string(cfg.path().join("client/known_hosts")).unwrap();
    assert!(known.contains(&host.fingerprint), "{known}");
    // The client made its own identity on first use, private, and keeps it.
    let cert_path = cfg.path().join("client/client-cert.der");
    let key_path = cfg.path().join("client/client-key.der");
    let cert = std::fs::read(&cert_path).expect("the client's certificate");
    for p in [&cert_path, &key_path] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", p.display());
    }
    // Second session on the same listener: known host, no warning.
    let r = client(
        &host,
        cfg.path(),
        &["--mode", "320x180@30", "--seconds", "1"],
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(!r.stderr.contains("first use"), "{}", r.stderr);
    assert!(n(&r.report, "frames_decoded") > 10);
    // A wrong pin is refused before anything streams.
    let wrong = "ab".repeat(32);
    let r = client(&host, cfg.path(), &["--seconds", "1", "--pin", &wrong]);
    assert!(!r.ok);
    assert!(r.stderr.contains("not the pinned"), "{}", r.stderr);
    // A malformed pin is an error, not a silent downgrade to TOFU.
    let r = client(&host, cfg.path(), &["--seconds", "1", "--pin", "12345"]);
    assert!(!r.ok);
    assert!(r.stderr.contains("invalid fingerprint"), "{}", r.stderr);
    assert_eq!(
        std::fs::read(&cert_path).unwrap(),
        cert,
        "the same identity every session"
    );
    // A damaged key is a clear error naming the file, and is not replaced.
    let key = std::fs::read(&key_path).unwrap();
    std::fs::write(&key_path, b"garbage").unwrap();
    let r = client(&host, cfg.path(), &["--seconds", "1"]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("client-key.der") && r.stderr.contains("not a usable identity"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read(&key_path).unwrap(), b"garbage");
    std::fs::write(&key_path, key).unwrap();
    // Third real session still works.
    let r = client(
        &host,
        cfg.path(),
        &[
            "--mode",
            "320x180@30",
            "--seconds",
            "1",
            "--pin",
            &host.fingerprint,
        ],
    );
    assert!(r.ok, "{}", r.stderr);
}

#[test]
fn a_changed_host_identity_is_refused_with_advice() {
    let _serial = serial();
    let cfg = tempfile::tempdir().unwrap();
    let first = start_host(&["--sessions", "1", "--allow-unpaired"]);
    let r = client(
        &first,
        cfg.path(),
        &["--mode", "320x180@30", "--seconds", "0.5"],
    );
    assert!(r.ok, "{}", r.stderr);
    // Another host (new identity) answering under the same name: store the first host's entry
    // under the second's address, as if the machine had been reinstalled.
    let second = start_host(&["--sessions", "1", "--allow-unpaired"]);
    let kh = cfg.path().join("client/known_hosts");
    let text = std::fs::read_to_string(&kh)
        .unwrap()
        .replace(&first.quic.to_string(), &second.quic.to_string());
    std::fs::write(&kh, text).unwrap();
    let r = client(&second, cfg.path(), &["--seconds", "0.5"]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("CHANGED") && r.stderr.contains("--pin"),
        "{}",
        r.stderr
    );
}

/// Sends SIGTERM to `child` and waits up to `secs` for it to exit.
fn terminate(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(killed.success(), "kill -TERM failed");
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running {secs} s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_mid_stream_ends_the_session_with_a_shutdown_bye_and_the_host_exits_cleanly() {
    let _serial = serial();
    // No session limit: only the signal can make this host stop.
    let mut host = start_host(&[]);
    let cfg = tempfile::tempdir().unwrap();
    ensure_paired(&host, cfg.path());
    let mut c = Command::new(client_bin())
        .args([
            "--config-dir",
            cfg.path().to_str().unwrap(),
            "--log",
            "info",
            "connect",
            &host.quic.to_string(),
            "--json",
            "--pin",
            &host.fingerprint,
            "--mode",
            "320x180@30",
            "--seconds",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The client's log, read on a thread so the test sees when the session is up.
    let (tx, rx) = std::sync::mpsc::channel();
    let err = BufReader::new(c.stderr.take().unwrap());
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        for line in err.lines().map_while(Result::ok) {
            if line.contains("session established") {
                let _ = tx.send(());
            }
            all += &line;
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the session is established");
    // Let video flow for a while before the host is stopped.
    std::thread::sleep(Duration::from_millis(1500));
    let status = terminate(&mut host.child, 10);
    assert_eq!(status.code(), Some(0), "host exit: {status}");
    let out = c.wait_with_output().unwrap();
    let stderr = log.join().unwrap();
    assert!(out.status.success(), "client: {}\n{stderr}", out.status);
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let end = rep["end"].as_str().unwrap_or_default();
    assert!(
        end.starts_with("host ended the session (shutdown)"),
        "{end:?}: {rep}\n{stderr}"
    );
    assert!(n(&rep, "frames_decoded") > 10, "video flowed: {rep}");
    assert_eq!(n(&rep, "frames_corrupt"), 0, "{rep}");
    assert!(
        rep["seconds"].as_f64().unwrap() < 30.0,
        "the host's end, not the client's 60 s: {rep}"
    );
}

#[test]
fn a_named_app_runs_for_the_stream_its_exit_ends_it_and_an_unknown_one_is_refused() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("apps.toml"),
        "[[app]]\nid = 1\ntitle = \"Desktop\"\n\n[[app]]\nid = 2\ntitle = \"Short\"\ncommand = [\"sleep\", \"2\"]\n",
    )
    .unwrap();
    let host = start_host_in(dir, &["--sessions", "2"]);
    let cfg = tempfile::tempdir().unwrap();
    let pin = host.fingerprint.clone();
    let script = cfg.path().join("input.txt");
    std::fs::write(
        &script,
        "100 move 5 5\n200 key 30 down\n250 key 30 up\n300 text hi\n",
    )
    .unwrap();
    let base = ["--mode", "320x180@30", "--seconds", "30", "--pin", &pin];
    let mut args = base.to_vec();
    args.extend(["--app", "short", "--input-script", script.to_str().unwrap()]);
    let r = client(&host, cfg.path(), &args);
    assert!(r.ok, "{}", r.stderr);
    let rep = &r.report;
    let end = rep["end"].as_str().unwrap_or_default();
    assert!(end.contains("the app exited"), "{end:?}: {rep}");
    assert!(
        rep["seconds"].as_f64().unwrap() < 15.0,
        "the app's end, not the client's 30 s: {rep}"
    );
    assert!(n(rep, "frames_decoded") > 10, "{rep}");
    assert_eq!(
        n(rep, "input_sent"),
        5,
        "every scripted event went out: {rep}"
    );

    let mut args = base.to_vec();
    args.extend(["--app", "Minesweeper"]);
    let r = client(&host, cfg.path(), &args);
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("the host has no app \"Minesweeper\" (it has \"Desktop\", \"Short\")"),
        "{}",
        r.stderr
    );
}

#[test]
fn bad_flags_are_clear_errors() {
    let _serial = serial();
    let cfg = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(client_bin())
            .args(["--config-dir", cfg.path().to_str().unwrap(), "connect"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, e) = run(&["127.0.0.1:1", "--mode", "1921x1080"]);
    assert!(!ok && e.contains("must be even"), "{e}");
    let (ok, e) = run(&["127.0.0.1:1", "--codec", "mpeg2"]);
    assert!(!ok && e.contains("unknown codec"), "{e}");
    let (ok, e) = run(&["127.0.0.1:1", "--seconds=-1"]);
    assert!(!ok && e.contains("--seconds"), "{e}");
    let script = cfg.path().join("bad.txt");
    std::fs::write(&script, "10 move 1 2\n20 wiggle\n").unwrap();
    let (ok, e) = run(&["127.0.0.1:1", "--input-script", script.to_str().unwrap()]);
    assert!(!ok && e.contains("line 2: unknown event \"wiggle\""), "{e}");
    let _ = Duration::ZERO;
}
