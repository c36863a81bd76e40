//! punktfunk/1 trust with the real binaries: a host that requires pairing refuses an unpaired
//! client before anything streams or is injected; PIN pairing (`punktfunk-host pair` +
//! `punktfunk-client pair`) and approval pairing then stream; revocation ends a running
//! session and refuses the next; pairings survive a restart; a corrupt store stops the host;
//! concurrent `clients remove` (and a remove during a pairing) lose nothing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::client_bin;

/// One streaming test at a time (two cores).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn host_bin() -> PathBuf {
    common::sibling_bin("punktfunk-host", "punktfunk-host")
}

/// The host exited before it listened; what it logged.
#[derive(Debug)]
struct NotStarted {
    log: String,
}

struct Host {
    child: Child,
    quic: String,
    dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    /// `serve` on the test pattern with the logging input injector, config in `dir`.
    fn start(dir: &Path, extra: &[&str]) -> Result<Host, NotStarted> {
        let mut child = Command::new(host_bin())
            .args(["--config-dir", dir.to_str().unwrap()])
            // The log injector reports each event at debug.
            .args(["--log", "info,punktfunk_desktop=debug"])
            .args(["serve", "--listen", "127.0.0.1:0", "--data-port", "0"])
            .args([
                "--no-mdns",
                "--display",
                "existing",
                "--capture",
                "testpattern",
            ])
            .args(["--input", "log", "--audio", "tone"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = punktfunk_testenv::collect_lines(child.stderr.take().unwrap());
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if !line.contains("listening") {
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            return Err(NotStarted {
                log: log.lock().unwrap().join("\n"),
            });
        }
        Ok(Host {
            child,
            quic: line.split_whitespace().nth(3).unwrap().to_string(),
            dir: dir.to_path_buf(),
            log,
        })
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn cli(&self, args: &[&str]) -> Output {
        host_cli(&self.dir, args)
    }

    /// Pairs the client config `cfg` with a fresh PIN; panics unless both sides succeed.
    fn pair(&self, cfg: &Path, name: &str) {
        common::pair(&self.dir, &self.quic, cfg, name);
    }
}

fn host_cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(host_bin())
        .args(["--config-dir", dir.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

fn client(cfg: &Path, args: &[&str]) -> Output {
    Command::new(client_bin())
        .args(["--config-dir", cfg.to_str().unwrap(), "--log", "warn"])
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn stream(host: &Host, cfg: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["connect", host.quic.as_str(), "--json"];
    args.extend(["--mode", "320x180@30", "--seconds", "1"]);
    args.extend(extra);
    client(cfg, &args)
}

fn frames_decoded(out: &Output) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["frames_decoded"].as_u64().unwrap_or(0)
}

/// The id the host's `clients list` shows for the punktfunk/1 client named `name`.
fn listed_id(host_dir: &Path, name: &str) -> Option<String> {
    let out = host_cli(host_dir, &["clients", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name && c["protocol"] == "punktfunk1")
        .map(|c| c["id"].as_str().unwrap().to_string())
}

#[test]
fn an_unpaired_client_reaches_nothing_then_pairs_with_the_pin_and_streams() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path(), &[]).unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let script = cfg.path().join("input.txt");
    std::fs::write(&script, "0 move 5 5\n10 key 30 down\n20 key 30 up\n").unwrap();

    // Unpaired: refused with the way out, before any session exists.
    let out = stream(
        &host,
        cfg.path(),
        &["--input-script", script.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "this host requires pairing: run punktfunk-client pair {}",
            host.quic
        )),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = host.log();
    assert!(
        log.contains("refused an unpaired punktfunk/1 client"),
        "{log}"
    );
    for never in [
        "session established",
        "session started",
        "client data address",
        "input event",
    ] {
        assert!(
            !log.contains(never),
            "{never:?} for an unpaired client:\n{log}"
        );
    }

    // A wrong PIN fails on both sides, and the PIN is used up.
    let armed = common::arm(&host.dir);
    let pin = armed.pin.clone();
    let wrong = format!("{:04}", (pin.parse::<u32>().unwrap() + 1) % 10_000);
    let out = client(cfg.path(), &["pair", &host.quic, "--pin-code", &wrong]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the PIN check failed"),
        "{}",
        text(&out.stderr)
    );
    let (ok, _) = armed.finish();
    assert!(!ok, "the host's pair reports the failure");
    let out = client(cfg.path(), &["pair", &host.quic, "--pin-code", &pin]);
    assert!(!out.status.success(), "one ceremony per PIN");
    assert!(
        text(&out.stderr).contains("no pairing PIN is armed"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("PIN check failed"));

    // The right PIN pairs; the client streams, its input arrives.
    host.pair(cfg.path(), "laptop");
    let id = listed_id(&host.dir, "laptop").expect("listed as paired");
    let out = stream(
        &host,
        cfg.path(),
        &["--input-script", script.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(frames_decoded(&out) > 10);
    std::thread::sleep(Duration::from_millis(300));
    assert!(host.log().contains("input event"), "{}", host.log());
    // The host stored the client's fingerprint, the client the host's.
    let known = std::fs::read_to_string(cfg.path().join("client/known_hosts")).unwrap();
    assert!(known.contains(&host.quic), "{known}");
    let list = text(&host.cli(&["clients", "list"]).stdout);
    assert!(
        list.contains(&id) && list.contains("punktfunk/1") && list.contains("laptop"),
        "{list}"
    );
}

#[test]
fn revocation_ends_the_running_session_and_pairings_survive_a_restart() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path(), &[]).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    host.pair(a.path(), "a");
    host.pair(b.path(), "b");
    let a_id = listed_id(&host.dir, "a").unwrap();

    // A long session of a, revoked while it streams.
    let running = Command::new(client_bin())
        .args(["--config-dir", a.path().to_str().unwrap(), "--log", "info"])
        .args([
            "connect",
            &host.quic,
            "--json",
            "--mode",
            "320x180@30",
            "--seconds",
            "30",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !host.log().contains("session started") {
        assert!(t.elapsed() < Duration::from_secs(20), "{}", host.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let out = host.cli(&["clients", "remove", &a_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let revoked_at = Instant::now();
    let out = running.wait_with_output().unwrap();
    assert!(
        revoked_at.elapsed() < Duration::from_secs(5),
        "the session ended soon after the revocation"
    );
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let all = format!("{rep}{}", text(&out.stderr));
    assert!(
        all.contains("revoked") && all.contains("removed this client"),
        "{all}"
    );
    // Its next connection is refused.
    let out = stream(&host, a.path(), &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("requires pairing"),
        "{}",
        text(&out.stderr)
    );

    // A restart keeps b's pairing.
    drop(host);
    let host = Host::start(dir.path(), &[]).unwrap();
    let out = stream(&host, b.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(frames_decoded(&out) > 10);
    drop(host);

    // A corrupt store stops the host with the file's name instead of forgetting everyone.
    std::fs::write(dir.path().join("clients.json"), b"{\"clients\": [").unwrap();
    let err = match Host::start(dir.path(), &[]) {
        Ok(_) => panic!("the host started on a corrupt store"),
        Err(NotStarted { log }) => log,
    };
    assert!(
        err.contains("clients.json") && err.contains("not a valid list"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("clients.json")).unwrap(),
        b"{\"clients\": [",
        "the store is left for the owner to repair"
    );
}

#[test]
fn approval_without_a_pin_pairs_or_is_refused_by_the_owner() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path(), &[]).unwrap();
    let run = |cfg: &Path, name: &str| {
        Command::new(client_bin())
            .args(["--config-dir", cfg.to_str().unwrap(), "--log", "warn"])
            .args(["pair", &host.quic, "--no-pin", "--name", name])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let waiting_id = |name: &str| {
        let t = Instant::now();
        loop {
            let out = host.cli(&["clients", "list", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if let Some(p) = v["pending"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
            {
                return p["id"].as_str().unwrap().to_string();
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no request from {name}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let yes = tempfile::tempdir().unwrap();
    let c = run(yes.path(), "tv");
    let id = waiting_id("tv");
    let listed = text(&host.cli(&["clients", "list"]).stdout);
    assert!(
        listed.contains("waiting for approval") && listed.contains(&id),
        "{listed}"
    );
    let out = host.cli(&["clients", "approve", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("clients approve {id}")));
    let out = stream(&host, yes.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let no = tempfile::tempdir().unwrap();
    let c = run(no.path(), "stranger");
    let id = waiting_id("stranger");
    assert!(host.cli(&["clients", "refuse", &id]).status.success());
    let out = c.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("refused this client"),
        "{}",
        text(&out.stderr)
    );
    assert!(listed_id(&host.dir, "stranger").is_none());
    let out = host.cli(&["clients", "approve", "000000000000"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no pairing request"),
        "{}",
        text(&out.stderr)
    );
}

/// A store file with these punktfunk/1 clients (fingerprints of repeated hex bytes).
fn seed_store(dir: &Path, names: &[&str]) -> Vec<String> {
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let fp = format!("{:02x}", 0x10 + i).repeat(32);
        ids.push(fp[..12].to_string());
        clients.push(serde_json::json!({
            "id": &fp[..12], "protocol": "punktfunk1", "name": n, "fingerprint": fp, "paired_at": 1
        }));
    }
    std::fs::write(
        dir.join("clients.json"),
        serde_json::to_vec(&serde_json::json!({ "clients": clients })).unwrap(),
    )
    .unwrap();
    ids
}

#[test]
fn fifty_rounds_of_concurrent_removes_and_removes_during_pairing_lose_nothing() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    for round in 0..50 {
        let ids = seed_store(dir.path(), &["x", "y", "z"]);
        let spawn = |id: &str| {
            Command::new(host_bin())
                .args(["--config-dir", dir.path().to_str().unwrap()])
                .args(["clients", "remove", id])
                .output()
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| spawn(&ids[0]).unwrap());
            let b = s.spawn(|| spawn(&ids[1]).unwrap());
            (a.join().unwrap(), b.join().unwrap())
        });
        assert!(
            text(&a.stdout).starts_with("removed"),
            "round {round}: {}",
            text(&a.stderr)
        );
        assert!(
            text(&b.stdout).starts_with("removed"),
            "round {round}: {}",
            text(&b.stderr)
        );
        let left = text(&host_cli(dir.path(), &["clients", "list", "--json"]).stdout);
        assert!(
            !left.contains(&ids[0]) && !left.contains(&ids[1]) && left.contains(&ids[2]),
            "round {round}: {left}"
        );
    }

    // A remove while the running host stores a new pairing.
    let host = Host::start(dir.path(), &[]).unwrap();
    for round in 0..50 {
        let ids = seed_store(dir.path(), &["x", "y"]);
        let cfg = tempfile::tempdir().unwrap();
        let name = format!("new{round}");
        std::thread::scope(|s| {
            let r = s.spawn(|| host.cli(&["clients", "remove", &ids[0]]));
            host.pair(cfg.path(), &name);
            assert!(r.join().unwrap().status.success(), "round {round}");
        });
        let left = text(&host.cli(&["clients", "list", "--json"]).stdout);
        assert!(
            !left.contains(&ids[0]) && left.contains(&ids[1]) && left.contains(&name),
            "round {round}: {left}"
        );
    }
}

#[test]
fn allow_unpaired_streams_without_pairing_and_says_so() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path(), &["--allow-unpaired"]).unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let out = stream(&host, cfg.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(frames_decoded(&out) > 10);
    assert!(
        host.log().contains("serves unpaired clients"),
        "{}",
        host.log()
    );
}
