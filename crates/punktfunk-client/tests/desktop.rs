//! A real desktop end to end: a private headless sway, a `punktfunk-host serve` process in it
//! (sway output, screencopy, wlr input, all chosen by the host itself), the desktop probe app
//! launched by the host on the stream's own output, and `punktfunk-client` decoding it. The
//! probe's stamps prove every picture came from the app, in order, and time the app's render to
//! the client's decode; the probe's log proves the client's input arrived.

mod common;
use common::{client_bin, sibling_bin};
use punktfunk_testenv::{HeadlessSway, ProbeLog};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One at a time: each streams real video on two cores.
static SERIAL: Mutex<()> = Mutex::new(());

struct Host {
    child: Child,
    quic: String,
    log: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// The host inside `sway`, with the probe as app "Probe" logging to `probe_log`.
fn start_host(sway: &HeadlessSway, probe_log: &Path, probe_args: &[&str]) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let probe = sibling_bin("punktfunk-desktop-probe", "punktfunk-desktop-probe");
    let mut command = vec![probe.display().to_string()];
    command.extend(probe_args.iter().map(|a| a.to_string()));
    command.extend(["--log".to_string(), probe_log.display().to_string()]);
    let command = command
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        dir.path().join("apps.toml"),
        format!("[[app]]\nid = 1\ntitle = \"Desktop\"\n\n[[app]]\nid = 2\ntitle = \"Probe\"\ncommand = [{command}]\n"),
    )
    .unwrap();
    let mut child = Command::new(sibling_bin("punktfunk-host", "punktfunk-host"))
        .args([
            "--config-dir",
            dir.path().to_str().unwrap(),
            "--log",
            "info",
        ])
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-port",
            "0",
            "--no-mdns",
            // About the desktop, not trust: pairing has its own tests.
            "--allow-unpaired",
        ])
        .env_clear()
        .envs(sway.env_vars())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = punktfunk_testenv::collect_lines(child.stderr.take().unwrap());
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.contains("listening"),
        "the host did not start: {line}\n{}",
        log.lock().unwrap().join("\n")
    );
    let quic = line.split_whitespace().nth(3).unwrap().to_string();
    Host {
        child,
        quic,
        log,
        dir,
    }
}

struct Run {
    ok: bool,
    report: Value,
    stderr: String,
}

fn client(host: &Host, args: &[&str]) -> Run {
    let cfg = host.dir.path().join("client");
    let out = Command::new(client_bin())
        .args(["--config-dir", cfg.to_str().unwrap(), "--log", "warn"])
        .args(["connect", &host.quic, "--json"])
        .args(args)
        .output()
        .unwrap();
    Run {
        ok: out.status.success(),
        report: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

fn n(r: &Value, k: &str) -> u64 {
    r[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {r}"))
}

fn outputs(sway: &HeadlessSway) -> Vec<swayipc::Output> {
    let s = UnixStream::connect(sway.swaysock()).expect("sway IPC");
    swayipc::Connection::from(s).get_outputs().expect("outputs")
}

/// The scripted input: focus with a click in the middle, then every kind once; KEY_B (48) is
/// still held when the stream ends.
const SCRIPT: &str = "\
700  abs 640 360 1280 720
750  button left down
800  button left up
1000 move 10 5
1100 button right down
1150 button right up
1200 scroll 0 120
1300 scroll 120 0
1400 key 30 down
1450 key 30 up
1500 key 42 down shift
1550 key 30 down shift
1600 key 30 up shift
1650 key 42 up
1700 text é
1900 key 48 down
";

#[test]
fn a_stream_of_an_app_on_its_own_sway_output_with_a_mode_change_and_input() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sway = HeadlessSway::start().expect("headless sway");
    let probe_log = sway.runtime_dir().join("probe.jsonl");
    let host = start_host(&sway, &probe_log, &[]);
    let script = host.dir.path().join("input.txt");
    std::fs::write(&script, SCRIPT).unwrap();
    let before = outputs(&sway).len();

    // The output exists at the client's mode while it streams.
    let during = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut seen = Vec::new();
            while Instant::now() < deadline && seen.len() < 2 {
                for o in outputs(&sway) {
                    if let Some(m) = o.current_mode {
                        let m = (m.width, m.height, m.refresh);
                        if o.name != "HEADLESS-1" && o.focused && !seen.contains(&m) {
                            seen.push(m);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        let r = client(
            &host,
            &[
                "--mode",
                "1280x720@60",
                "--seconds",
                "5",
                "--reconfigure",
                "3:1920x1080@120",
                "--app",
                "Probe",
                "--app-stamps",
                "--input-script",
                script.to_str().unwrap(),
            ],
        );
        (r, watcher.join().unwrap())
    });
    let (r, modes) = during;
    assert!(r.ok, "{}\nhost:\n{}", r.stderr, host.log());
    let rep = &r.report;
    assert!(
        modes.contains(&(1280, 720, 60_000)) && modes.contains(&(1920, 1080, 120_000)),
        "the stream's output took both modes: {modes:?}"
    );
    assert!(
        host.log()
            .contains("backends=[\"sway\", \"screencopy\", \"wlr\""),
        "the host chose the desktop's backends:\n{}",
        host.log()
    );
    // Every picture the client decoded is one the probe drew, in order, but for a few while it
    // maps and around the mode change (the output at its new size before the probe has drawn
    // at it).
    assert_eq!(n(rep, "frames_corrupt"), 0, "{rep}\n{}", r.stderr);
    assert!(n(rep, "app_unstamped") <= 12, "{rep}");
    assert_eq!(n(rep, "frames_out_of_order"), 0, "{rep}");
    assert!(n(rep, "app_frames") > 60, "the app's pictures moved: {rep}");
    assert!(rep["sizes"]["1280x720"].as_u64().unwrap_or(0) > 10, "{rep}");
    assert!(
        rep["sizes"]["1920x1080"].as_u64().unwrap_or(0) > 10,
        "{rep}"
    );
    let app_ms = rep["app_render_to_decoded_ms"]["p50"].as_f64().unwrap();
    assert!(app_ms > 0.0 && app_ms < 1000.0, "{rep}");

    // The input arrived, as the probe saw it.
    std::thread::sleep(Duration::from_millis(300));
    let log = ProbeLog::read(&probe_log);
    log.assert_pointer_script((640.0, 360.0));
    let keys = log.typed();
    assert!(
        keys.windows(3).any(|w| w == ["a", "A", "é"]),
        "keys a, Shift+a and the text é in order: {keys:?}"
    );
    assert!(log.key(48, true), "KEY_B went down");
    assert!(log.key(48, false), "KEY_B released at the end");

    // After the stream its output is gone or parked, and the probe has ended.
    let after = outputs(&sway);
    assert!(after.len() <= before + 1, "{} outputs", after.len());
    let park = punktfunk_desktop::vdisplay::sway::PARK_MODE;
    for o in after.iter().filter(|o| o.name != "HEADLESS-1" && o.active) {
        let m = o.current_mode.as_ref().unwrap();
        assert_eq!(
            (m.width as u32, m.height as u32),
            (park.width, park.height),
            "{} left at the stream's mode",
            o.name
        );
    }
    assert!(
        host.log().contains("the app was stopped"),
        "the probe was stopped with the stream:\n{}",
        host.log()
    );
}

#[test]
fn sway_killed_mid_stream_ends_it_with_a_reason_and_the_host_serves_again_once_sway_is_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut sway = HeadlessSway::start().expect("headless sway");
    let probe_log = sway.runtime_dir().join("probe.jsonl");
    let host = start_host(&sway, &probe_log, &[]);
    let args = [
        "--mode",
        "640x480@30",
        "--seconds",
        "20",
        "--app",
        "Probe",
        "--app-stamps",
    ];
    let r = std::thread::scope(|s| {
        let c = s.spawn(|| client(&host, &args));
        // Kill sway once the stream is up.
        let deadline = Instant::now() + Duration::from_secs(15);
        while !host.log().contains("session started") {
            assert!(Instant::now() < deadline, "no session:\n{}", host.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(1500));
        sway.kill();
        c.join().unwrap()
    });
    let told = format!(
        "{}{}",
        r.report["end"].as_str().unwrap_or_default(),
        r.stderr
    );
    assert!(
        told.contains("gone"),
        "the client is told the desktop went away: {told}\n{}",
        host.log()
    );
    assert!(
        r.report["seconds"].as_f64().unwrap_or(0.0) < 15.0,
        "it ended at once, not after 20 s"
    );

    // While sway is down: a clear refusal, and the host still runs.
    let r = client(&host, &args);
    assert!(!r.ok, "no stream without the desktop");
    assert!(
        r.stderr.contains("sway")
            || r.stderr.contains("compositor")
            || r.stderr.contains("Wayland"),
        "the refusal names the desktop: {}",
        r.stderr
    );

    // sway back at the same sockets: streams work again.
    sway.restart().expect("sway again");
    let args = [
        "--mode",
        "640x480@30",
        "--seconds",
        "2",
        "--app",
        "Probe",
        "--app-stamps",
    ];
    let r = client(&host, &args);
    assert!(r.ok, "{}\nhost:\n{}", r.stderr, host.log());
    assert!(n(&r.report, "app_frames") > 10, "{}", r.report);
}

/// Open file descriptors and threads of a process.
fn fds_and_threads(pid: u32) -> (usize, usize) {
    let count = |d: String| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
    (
        count(format!("/proc/{pid}/fd")),
        count(format!("/proc/{pid}/task")),
    )
}

#[test]
fn twenty_sessions_in_a_row_leak_no_output_thread_or_descriptor_and_an_idle_app_costs_little() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sway = HeadlessSway::start().expect("headless sway");
    let probe_log = sway.runtime_dir().join("probe.jsonl");
    let host = start_host(&sway, &probe_log, &["--static"]);
    let pid = host.child.id();
    let args = [
        "--mode",
        "640x480@60",
        "--seconds",
        "0.5",
        "--app",
        "Probe",
        "--app-stamps",
    ];
    // The first session opens what the process keeps for good (encoder probes, pools).
    let r = client(&host, &args);
    assert!(r.ok, "{}\nhost:\n{}", r.stderr, host.log());
    std::thread::sleep(Duration::from_millis(500));
    let removed = |host: &Host| host.log().matches("sway output removed").count();
    let wait_removed = |host: &Host, count: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while removed(host) < count {
            assert!(
                Instant::now() < deadline,
                "output {count} not removed:\n{}",
                host.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_removed(&host, 1);
    let (fd0, threads0) = fds_and_threads(pid);
    for i in 0..20 {
        let r = client(&host, &args);
        assert!(r.ok, "session {i}: {}\nhost:\n{}", r.stderr, host.log());
        // The next client comes once this stream's output is gone (a client that comes
        // sooner gets an output of its own: two streams at once need two).
        wait_removed(&host, i + 2);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (fd1, threads1) = fds_and_threads(pid);
    assert_eq!(fd1, fd0, "file descriptors after 20 sessions");
    // A thread of the first session may still have been winding down at the first count.
    assert!(
        threads1 <= threads0,
        "threads after 20 sessions: {threads1}, after the first {threads0}"
    );
    let extra = outputs(&sway).len() - 1;
    assert!(extra <= 1, "{extra} outputs left over after 21 sessions");

    // A still app: the host sends its picture again at the minimum rate (10 a second), not at
    // the mode's 60.
    let idle = [
        "--mode",
        "640x480@60",
        "--seconds",
        "3",
        "--app",
        "Probe",
        "--app-stamps",
    ];
    let r = client(&host, &idle);
    assert!(r.ok, "{}", r.stderr);
    let sent = n(&r.report, "frames_sent");
    assert!(
        (15..=60).contains(&sent),
        "an idle desktop streams about 10 frames a second, not 60: {sent} in 3 s"
    );
    assert!(
        n(&r.report, "app_frames") <= 3,
        "the still app drew once: {}",
        r.report
    );
}
