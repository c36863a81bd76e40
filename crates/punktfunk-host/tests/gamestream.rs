//! The GameStream side of a real `punktfunk-host serve --gamestream` process, driven by a
//! test-side client written in this repository from the protocol description (not a stock
//! client): serverinfo over HTTP and HTTPS, a complete pairing with the PIN entered through
//! `punktfunk-host pin`, the 401 for unknown certificates, apps, box art, launch, resume and
//! cancel, revocation with `clients remove`, persistence across a restart, and the lockout
//! after five wrong PINs; then streaming (RTSP, the ENet control stream, video with its
//! keyframes, audio, input, rumble, loss), the ends of a stream, and the host stopped by SIGTERM
//! in the middle of one.

mod common;
use common::free_base;
use punktfunk_gamestream::pairing::ClientPairing;
use punktfunk_gamestream::xml::{status_of, text_of};
use punktfunk_quic::Identity;
use ring::rand::SystemRandom;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// One test at a time: they use fixed port ranges and the pairing slot is per host.
static SERIAL: Mutex<()> = Mutex::new(());

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_punktfunk-host")
}

struct Host {
    child: Child,
    base: u16,
    dir: std::path::PathBuf,
    /// The host's log lines (stderr).
    log: Arc<Mutex<Vec<String>>>,
}

impl Host {
    fn start(dir: &Path) -> Host {
        Host::start_with(dir, &["--no-mdns", "--name", "test host"])
    }

    /// `serve --gamestream` on a free base port with `extra` flags.
    fn start_with(dir: &Path, extra: &[&str]) -> Host {
        Host::start_in(dir, extra, None)
    }

    /// [`Host::start_with`]; with `desktop`, in exactly that environment (plus `PATH`).
    fn start_in(dir: &Path, extra: &[&str], desktop: Option<&[(String, String)]>) -> Host {
        let base = free_base();
        let mut cmd = Command::new(bin());
        cmd.args(["--config-dir", dir.to_str().unwrap(), "--log", "info"])
            .args(["serve", "--listen", "127.0.0.1:0", "--gamestream"])
            .args(extra)
            .args(["--gamestream-port", &base.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(vars) = desktop {
            cmd.env_clear()
                .envs(vars.iter().cloned())
                .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        }
        let mut child = cmd.spawn().unwrap();
        let log = punktfunk_testenv::collect_lines(child.stderr.take().unwrap());
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        if !line.contains("listening") {
            // The host gave up before listening: say why.
            let status = child.wait().unwrap();
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "the host did not start ({status}): {line}\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        // Keep draining stdout (pairing prompts) so the host never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        Host {
            child,
            base,
            dir: dir.to_path_buf(),
            log,
        }
    }

    /// Waits up to `secs` for a log line containing every one of `parts`; returns it.
    fn wait_log(&self, parts: &[&str], secs: u64) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return l.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {parts:?}; log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn http(&self, target: &str) -> String {
        http_get(self.base, target)
    }

    fn https(&self, id: &Identity, target: &str) -> (String, Vec<u8>) {
        let tcp = TcpStream::connect(("127.0.0.1", self.base - 5)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_auth_cert(
            vec![CertificateDer::from(id.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone())),
        )
        .unwrap();
        let conn = rustls::ClientConnection::new(
            Arc::new(cfg),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        write!(s, "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let raw = read_all(&mut s);
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("HTTP head")
            + 4;
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        (head, raw[split..].to_vec())
    }

    fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(bin())
            .args(["--config-dir", self.dir.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `apps.toml` in `dir` with one app, `title` (`id`), that runs `command`.
fn one_app(dir: &Path, id: u32, title: &str, command: &[&str]) {
    let command = command
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        dir.join("apps.toml"),
        format!("[[app]]\nid = {id}\ntitle = {title:?}\ncommand = [{command}]\n"),
    )
    .unwrap();
}

/// An `apps.toml` in `dir` with one app, "Short game" (`id`), that exits after `secs` seconds.
fn short_game(dir: &Path, id: u32, secs: u32) {
    one_app(dir, id, "Short game", &["sleep", &secs.to_string()]);
}

/// GET over plain HTTP to the host's nvhttp port; returns the body.
fn http_get(base: u16, target: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", base)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(150))).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    body(&mut s)
}

fn read_all(s: &mut impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => v.extend_from_slice(&buf[..n]),
            // rustls reports a peer that closes without close_notify as an error; the body is
            // complete by then (Content-Length is checked by the callers' parsers).
            Err(_) => break,
        }
    }
    v
}

fn body(s: &mut impl Read) -> String {
    let raw = read_all(s);
    let text = String::from_utf8_lossy(&raw).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n").unwrap().1.to_string()
}

#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn clients() -> &'static (Identity, Identity) {
    static C: OnceLock<(Identity, Identity)> = OnceLock::new();
    C.get_or_init(|| {
        (
            Identity::generate("NVIDIA GameStream Client").unwrap(),
            Identity::generate("NVIDIA GameStream Client").unwrap(),
        )
    })
}

const Q: &str = "uniqueid=0123456789ABCDEF&uuid=5d1e0b3e";

/// Types `pin` on the host (through the control channel) once a pairing request waits for it.
fn enter_pin(host: &Host, pin: &str) {
    let mut tries = 0;
    loop {
        let (ok, out) = host.cli(&["pin", pin]);
        if ok {
            return;
        }
        assert!(out.contains("no pairing request is waiting"), "{out}");
        tries += 1;
        assert!(tries < 100, "the host never asked for a PIN");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pairs `me` with PIN 4321, asserting that it worked.
fn pair_owner(host: &Host, me: &Identity) {
    let r4 = pair(host, me, "4321", "4321", true).unwrap();
    assert_eq!(text_of(&r4, "paired"), Some("1"), "{r4}");
}

/// Pairs `id` typing `host_pin` on the host while the client shows `client_pin`. Returns the
/// phase-4 reply (or the error the client raised).
fn pair(
    host: &Host,
    id: &Identity,
    client_pin: &str,
    host_pin: &str,
    check_pin: bool,
) -> Result<String, String> {
    let mut c =
        ClientPairing::new(&id.cert_der, &id.key_der, client_pin, &SystemRandom::new()).unwrap();
    let q1 = format!("/pair?{Q}&{}", c.phase1_query());
    let base = host.base;
    let waiter = std::thread::spawn(move || {
        let h = Host {
            child: Command::new("true").spawn().unwrap(),
            base,
            dir: Default::default(),
            log: Default::default(),
        };
        let r = h.http(&q1);
        std::mem::forget(h);
        r
    });
    enter_pin(host, host_pin);
    let r1 = waiter.join().unwrap();
    if text_of(&r1, "plaincert").is_none() {
        return Err(r1);
    }
    let r2 = host.http(&format!(
        "/pair?{Q}&{}",
        c.phase2_query(&r1).map_err(|e| e.to_string())?
    ));
    let r3 = host.http(&format!(
        "/pair?{Q}&{}",
        c.phase3_query(&r2).map_err(|e| e.to_string())?
    ));
    let q4 = if check_pin {
        c.phase4_query(&r3).map_err(|e| e.to_string())?
    } else {
        c.phase4_query_without_pin_check()
    };
    Ok(host.http(&format!("/pair?{Q}&{q4}")))
}

#[test]
fn pairing_apps_launch_and_revocation() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (me, stranger) = clients();
    let host = Host::start(dir.path());

    let info = host.http(&format!("/serverinfo?{Q}"));
    for (k, v) in [
        ("appversion", "7.1.431.-1"),
        ("GfeVersion", "3.23.0.74"),
        ("hostname", "test host"),
        ("PairStatus", "0"),
        ("currentgame", "0"),
        ("state", "SUNSHINE_SERVER_FREE"),
    ] {
        assert_eq!(text_of(&info, k), Some(v), "{k} in {info}");
    }
    assert_eq!(
        text_of(&info, "HttpsPort").unwrap(),
        (host.base - 5).to_string()
    );
    let modes: u32 = text_of(&info, "ServerCodecModeSupport")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(modes & 1, 1, "H.264 (libx264) opens here");
    assert_eq!(
        modes & 0x100 != 0,
        text_of(&info, "MaxLumaPixelsHEVC") != Some("0")
    );
    assert_eq!(text_of(&info, "uniqueid").unwrap().len(), 36);

    // Unknown certificate: 401 on every HTTPS path.
    for p in [
        "/serverinfo",
        "/applist",
        "/launch",
        "/pair?phrase=pairchallenge",
    ] {
        let (_, b) = host.https(me, &format!("{p}?{Q}"));
        let b = String::from_utf8(b).unwrap();
        assert_eq!(status_of(&b), Some(401), "{p}: {b}");
    }
    assert_eq!(
        status_of(&host.http("/applist")),
        Some(404),
        "HTTP has no applist"
    );

    let r4 = pair(&host, me, "4821", "4821", true).unwrap();
    assert_eq!(text_of(&r4, "paired"), Some("1"), "{r4}");
    let (_, b) = host.https(
        me,
        &format!("/pair?{Q}&devicename=roth&updateState=1&phrase=pairchallenge"),
    );
    assert_eq!(text_of(&String::from_utf8(b).unwrap(), "paired"), Some("1"));
    let (_, b) = host.https(me, &format!("/serverinfo?{Q}"));
    assert_eq!(
        text_of(&String::from_utf8(b).unwrap(), "PairStatus"),
        Some("1")
    );
    let (_, b) = host.https(stranger, &format!("/serverinfo?{Q}"));
    assert_eq!(
        status_of(&String::from_utf8(b).unwrap()),
        Some(401),
        "another certificate is still unknown"
    );

    let (_, b) = host.https(me, &format!("/applist?{Q}"));
    let apps = String::from_utf8(b).unwrap();
    assert_eq!(text_of(&apps, "AppTitle"), Some("Desktop"), "{apps}");
    assert_eq!(text_of(&apps, "ID"), Some("1"));
    let (head, png) = host.https(me, &format!("/appasset?{Q}&appid=1&AssetType=2&AssetIdx=0"));
    assert!(
        head.contains("image/png") && png.starts_with(b"\x89PNG"),
        "{head}"
    );

    let launch = format!("/launch?{Q}&appid=1&mode=1280x720x60&additionalStates=1&sops=0&rikey=00112233445566778899AABBCCDDEEFF&rikeyid=1234&localAudioPlayMode=0&surroundAudioInfo=196610&remoteControllersBitmap=0&gcmap=0&corever=1");
    let (_, b) = host.https(me, &launch);
    let l = String::from_utf8(b).unwrap();
    assert_eq!(text_of(&l, "gamesession"), Some("1"), "{l}");
    assert_eq!(
        text_of(&l, "sessionUrl0"),
        Some(format!("rtspenc://127.0.0.1:{}", host.base + 21).as_str())
    );
    let (_, b) = host.https(me, &format!("/serverinfo?{Q}"));
    let info = String::from_utf8(b).unwrap();
    assert_eq!(text_of(&info, "currentgame"), Some("1"));
    assert_eq!(text_of(&info, "state"), Some("SUNSHINE_SERVER_BUSY"));
    let (_, b) = host.https(me, &launch);
    assert_eq!(
        status_of(&String::from_utf8(b).unwrap()),
        Some(400),
        "one session at a time"
    );
    // A client that cannot encrypt RTSP is refused unless the host allows legacy clients.
    let (_, b) = host.https(
        me,
        &format!("/resume?{Q}&rikey=FFEEDDCCBBAA99887766554433221100&rikeyid=99&corever=0"),
    );
    let r = String::from_utf8(b).unwrap();
    assert_eq!(status_of(&r), Some(403), "{r}");
    assert!(r.contains("--gamestream-allow-legacy"), "{r}");
    let (_, b) = host.https(
        me,
        &format!("/resume?{Q}&rikey=FFEEDDCCBBAA99887766554433221100&rikeyid=99&corever=1"),
    );
    let r = String::from_utf8(b).unwrap();
    assert_eq!(text_of(&r, "resume"), Some("1"), "{r}");
    assert!(text_of(&r, "sessionUrl0")
        .unwrap()
        .starts_with("rtspenc://"));
    let (_, b) = host.https(me, &format!("/cancel?{Q}"));
    assert_eq!(text_of(&String::from_utf8(b).unwrap(), "cancel"), Some("1"));
    let (_, b) = host.https(
        me,
        &format!("/resume?{Q}&rikey=FFEEDDCCBBAA99887766554433221100&rikeyid=99&corever=1"),
    );
    assert_eq!(
        status_of(&String::from_utf8(b).unwrap()),
        Some(503),
        "nothing to resume after cancel"
    );

    // Persistence across a restart.
    drop(host);
    let host = Host::start(dir.path());
    let (_, b) = host.https(me, &format!("/serverinfo?{Q}"));
    assert_eq!(
        text_of(&String::from_utf8(b).unwrap(), "PairStatus"),
        Some("1")
    );

    // Revocation takes effect on the next request.
    let (ok, list) = host.cli(&["clients", "list"]);
    assert!(ok, "{list}");
    assert!(
        !list.contains("never"),
        "the launch recorded when it was last seen: {list}"
    );
    // A header line, then one row per client: id first, then the protocol.
    let row = list.lines().nth(1).unwrap_or_default();
    assert!(row.contains("GameStream"), "{list}");
    let id = row.split_whitespace().next().unwrap().to_string();
    let (ok, out) = host.cli(&["clients", "remove", &id]);
    assert!(ok, "{out}");
    let (_, b) = host.https(me, &format!("/serverinfo?{Q}"));
    assert_eq!(status_of(&String::from_utf8(b).unwrap()), Some(401));
    let (ok, out) = host.cli(&["clients", "remove", &id]);
    assert!(!ok && out.contains("no paired client"), "{out}");
}

#[test]
fn an_app_that_exits_ends_its_session() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    short_game(dir.path(), 5, 1);
    let (me, _) = clients();
    let host = Host::start(dir.path());
    let r4 = pair(&host, me, "7777", "7777", true).unwrap();
    assert_eq!(text_of(&r4, "paired"), Some("1"), "{r4}");
    let (_, b) = host.https(me, &format!("/applist?{Q}"));
    assert_eq!(
        text_of(&String::from_utf8(b).unwrap(), "AppTitle"),
        Some("Short game")
    );
    let (_, b) = host.https(me, &format!("/launch?{Q}&appid=5&mode=1280x720x60&rikey=00112233445566778899AABBCCDDEEFF&rikeyid=1&localAudioPlayMode=0&corever=1"));
    assert_eq!(
        text_of(&String::from_utf8(b).unwrap(), "gamesession"),
        Some("1")
    );
    let (_, b) = host.https(me, &format!("/serverinfo?{Q}"));
    assert_eq!(
        text_of(&String::from_utf8(b).unwrap(), "currentgame"),
        Some("5")
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (_, b) = host.https(me, &format!("/serverinfo?{Q}"));
    let info = String::from_utf8(b).unwrap();
    assert_eq!(text_of(&info, "currentgame"), Some("0"), "{info}");
    assert_eq!(text_of(&info, "state"), Some("SUNSHINE_SERVER_FREE"));
}

#[test]
fn wrong_pins_fail_and_five_failed_ceremonies_lock_pairing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (me, _) = clients();
    let host = Host::start(dir.path());
    // The client notices the wrong PIN itself at phase 3 and stops, as stock clients do: the
    // host counts that ceremony as a failure too.
    let e = pair(&host, me, "1111", "2222", true).unwrap_err();
    assert!(e.contains("wrong PIN"), "{e}");
    host.http(&format!("/unpair?{Q}"));
    // A client that ignores it is refused by the host: paired=0, nothing stored. The fifth
    // failure in all locks pairing.
    for i in 0..4 {
        let r = pair(&host, me, "1111", "2222", false).unwrap();
        assert_eq!(text_of(&r, "paired"), Some("0"), "attempt {i}: {r}");
    }
    let (_, list) = host.cli(&["clients", "list"]);
    assert!(list.contains("no paired clients"), "{list}");
    // Locked now: phase 1 is refused at once, without waiting for a PIN.
    let c = ClientPairing::new(&me.cert_der, &me.key_der, "1111", &SystemRandom::new()).unwrap();
    let r = host.http(&format!("/pair?{Q}&{}", c.phase1_query()));
    assert_eq!(status_of(&r), Some(503), "{r}");
    assert_eq!(text_of(&r, "paired"), Some("0"));
    // Phases out of order: no pairing in progress.
    let r = host.http(&format!(
        "/pair?{Q}&clientchallenge=00112233445566778899AABBCCDDEEFF"
    ));
    assert_eq!(status_of(&r), Some(400), "{r}");
    let (ok, out) = host.cli(&["pin", "12a4"]);
    assert!(!ok && out.contains("4 digits"), "{out}");
}

#[test]
fn moonlight_finds_the_host_over_mdns() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_with(dir.path(), &["--name", "mdns test host"]);
    let base = host.base;
    let browser = mdns_sd::ServiceDaemon::new().unwrap();
    let _ = browser.enable_interface(mdns_sd::IfKind::LoopbackV4);
    let rx = browser.browse("_nvstream._tcp.local.").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut found = None;
    while std::time::Instant::now() < deadline {
        if let Ok(mdns_sd::ServiceEvent::ServiceResolved(info)) =
            rx.recv_timeout(Duration::from_millis(500))
        {
            if info.get_port() == base {
                found = Some(info);
                break;
            }
        }
    }
    drop(host);
    let _ = browser.shutdown();
    let info = found.expect("the host's _nvstream._tcp record on loopback");
    assert!(
        info.get_fullname().starts_with("mdns-test-host."),
        "{}",
        info.get_fullname()
    );
}

// ---------------------------------------------------------------------------------------------
// Streaming: a client written here from the protocol notes runs RTSP, the ENet control stream,
// and receives video and audio, as a stock Moonlight client does.

use punktfunk_gamestream::audio::AudioReceiver;
use punktfunk_gamestream::control::{self as ctl, ControlCipher};
use punktfunk_gamestream::rtsp::{self as rtsp_proto, Origin};
use punktfunk_gamestream::video::{Reassembled, VideoReassembler};
use rusty_enet as enet;

const KEY: [u8; 16] = [
    0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE, 0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF,
];
const KEY_ID: i32 = -123_456_789;

/// The client's side of encrypted RTSP.
struct Rtsp {
    port: u16,
    seq: u32,
    cseq: u32,
    session: Option<String>,
}

struct RtspReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RtspReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Rtsp {
    fn new(base: u16) -> Rtsp {
        Rtsp {
            port: base + 21,
            seq: 0,
            cseq: 0,
            session: None,
        }
    }

    fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(bytes).unwrap();
        read_all(&mut s)
    }

    fn request(&mut self, line: &str, extra: &[(&str, String)], body: &str) -> RtspReply {
        self.cseq += 1;
        let mut m = format!(
            "{line} RTSP/1.0\r\nCSeq: {}\r\nX-GS-ClientVersion: 14\r\nHost: 0.0.0.0\r\n",
            self.cseq
        );
        if let Some(s) = &self.session {
            m += &format!("Session: {s}\r\n");
        }
        for (k, v) in extra {
            m += &format!("{k}: {v}\r\n");
        }
        if !body.is_empty() {
            m += &format!(
                "Content-type: application/sdp\r\nContent-length: {}\r\n",
                body.len()
            );
        }
        m += "\r\n";
        m += body;
        self.seq += 1;
        let raw = self.raw(&rtsp_proto::seal(
            &KEY,
            self.seq,
            Origin::Client,
            m.as_bytes(),
        ));
        let (plain, _, used) = rtsp_proto::open(&KEY, Origin::Host, &raw)
            .expect("reply authenticates")
            .expect("whole reply");
        assert_eq!(used, raw.len(), "no trailing bytes after the envelope");
        let text = String::from_utf8(plain).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("blank line");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("RTSP/1.0 "), "{status_line}");
        let status = status_line[9..12].parse().unwrap();
        let headers = lines
            .map(|l| {
                // The client drops exactly one character after the colon: a space must be there.
                let (k, v) = l.split_once(':').unwrap();
                assert!(v.starts_with(' '), "{l}");
                (k.to_string(), v[1..].to_string())
            })
            .collect::<Vec<_>>();
        assert!(
            headers.iter().any(|(k, _)| k == "CSeq"),
            "replies carry CSeq"
        );
        RtspReply {
            status,
            headers,
            body: body.to_string(),
        }
    }
}

fn announce_body(w: u32, h: u32, fps: u32, codec: u32, extra: &str) -> String {
    let mut b =
        String::from("v=0\r\no=android 0 14 IN IPv4 127.0.0.1\r\ns=NVIDIA Streaming Client\r\n");
    for (k, v) in [
        ("x-ml-general.featureFlags", "3".to_string()),
        ("x-ss-general.encryptionEnabled", "7".into()),
        ("x-ss-video[0].chromaSamplingType", "0".into()),
        ("x-nv-video[0].clientViewportWd", w.to_string()),
        ("x-nv-video[0].clientViewportHt", h.to_string()),
        ("x-nv-video[0].maxFPS", fps.to_string()),
        ("x-nv-video[0].packetSize", "992".into()),
        ("x-nv-video[0].rateControlMode", "4".into()),
        ("x-nv-vqos[0].bw.maximumBitrateKbps", "2400".into()),
        ("x-ml-video.configuredBitrateKbps", "3000".into()),
        ("x-nv-general.featureFlags", "167".into()),
        ("x-nv-general.useReliableUdp", "13".into()),
        ("x-nv-vqos[0].fec.minRequiredFecPackets", "2".into()),
        ("x-nv-video[0].videoEncoderSlicesPerFrame", "1".into()),
        ("x-nv-vqos[0].bitStreamFormat", codec.to_string()),
        ("x-nv-video[0].dynamicRangeMode", "0".into()),
        ("x-nv-video[0].maxNumReferenceFrames", "1".into()),
        ("x-nv-audio.surround.numChannels", "2".into()),
        ("x-nv-audio.surround.channelMask", "3".into()),
        ("x-nv-audio.surround.enable", "0".into()),
        ("x-nv-audio.surround.AudioQuality", "0".into()),
        ("x-nv-aqos.packetDuration", "5".into()),
        ("x-nv-video[0].encoderCscMode", "0".into()),
    ] {
        b += &format!("a={k}:{v} \r\n");
    }
    b += extra;
    b += "t=0 0\r\nm=video 47998  \r\n";
    b
}

/// What a streaming run saw.
#[derive(Debug, Default)]
struct StreamRun {
    frames: Vec<u32>,
    idr_frames: u32,
    /// Indices of the IDR frames received, in order.
    idr_at: Vec<u32>,
    idr_requests: u32,
    stamps: Vec<u32>,
    recovered_shards: usize,
    audio_packets: u32,
    /// Audio sequence numbers from the first to the last packet received (what was sent).
    audio_span: u32,
    audio_recovered: u32,
    left_440: f64,
    left_660: f64,
    right_660: f64,
    termination: Option<u32>,
    /// Rumble messages from the host: (controller, low motor, high motor).
    rumble: Vec<(u16, u16, u16)>,
    /// The trigger values sent, in order: (left, right).
    triggers_sent: Vec<(u8, u8)>,
    /// Decoded pictures without a readable stamp (a desktop before its app is on screen).
    unstamped: u32,
    /// On a desktop: every 30th stamped picture, kept to compare with what the app drew.
    pictures: Vec<(punktfunk_media::Stamp, punktfunk_media::DecodedFrame)>,
}

/// What a streaming run asks for.
struct Spec<'a> {
    /// Stop after this many video frames.
    frames: usize,
    /// `bitStreamFormat`: 0 H.264, 1 HEVC.
    codec: u32,
    /// With `false` the client sends nothing on the control stream after start-up (ENet itself
    /// stays alive).
    chatty: bool,
    /// Width, height, frames per second.
    mode: (u32, u32, u32),
    /// A real desktop: the host's own injector (not the log injector) and pictures that carry
    /// no stamp until the app is on screen (counted, not fatal).
    desktop: bool,
    /// Input sent instead of the default traffic: (tick, ENet channel, packet) with ticks of
    /// 100 ms counted from the first stamped picture.
    script: &'a [(u32, u8, Vec<u8>)],
}

impl Spec<'static> {
    fn new(frames: usize, codec: u32) -> Spec<'static> {
        Spec {
            frames,
            codec,
            chatty: true,
            mode: (640, 360, 30),
            desktop: false,
            script: &[],
        }
    }
}

/// An input packet as the control stream carries it: length, magic, body.
fn input_packet(magic: u32, body: &[u8]) -> Vec<u8> {
    let mut p = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    p.extend_from_slice(&magic.to_le_bytes());
    p.extend_from_slice(body);
    p
}

/// Runs the RTSP handshake, the control stream and receives `frames` video frames (or until
/// the host terminates the stream), sending input meanwhile.
fn stream(host: &Host, frames: usize, codec: u32) -> StreamRun {
    stream_spec(host, &Spec::new(frames, codec), &mut |_| true)
}

/// [`stream`] with `chatty` (see [`Spec::chatty`]).
fn stream_with(host: &Host, frames: usize, codec: u32, chatty: bool) -> StreamRun {
    let spec = Spec {
        chatty,
        ..Spec::new(frames, codec)
    };
    stream_spec(host, &spec, &mut |_| true)
}

/// [`stream_with`], calling `watch` with what arrived so far on every turn of the receive loop;
/// the client stops receiving when it returns false.
fn stream_watching(
    host: &Host,
    frames: usize,
    codec: u32,
    chatty: bool,
    watch: &mut dyn FnMut(&StreamRun) -> bool,
) -> StreamRun {
    let spec = Spec {
        chatty,
        ..Spec::new(frames, codec)
    };
    stream_spec(host, &spec, watch)
}

/// One stream as `spec` says, calling `watch` as [`stream_watching`] does.
fn stream_spec(host: &Host, spec: &Spec, watch: &mut dyn FnMut(&StreamRun) -> bool) -> StreamRun {
    use punktfunk_media::{read_stamp_luma, Codec, Decoder};
    let (frames, codec, chatty) = (spec.frames, spec.codec, spec.chatty);
    let mut r = Rtsp::new(host.base);
    assert_eq!(
        r.request(
            &format!("OPTIONS rtsp://0.0.0.0:{}", host.base + 21),
            &[],
            ""
        )
        .status,
        200
    );
    let d = r.request(
        &format!("DESCRIBE rtsp://0.0.0.0:{}", host.base + 21),
        &[("Accept", "application/sdp".into())],
        "",
    );
    assert_eq!(d.status, 200);
    assert!(
        d.body.contains("x-ss-general.encryptionSupported:7"),
        "{}",
        d.body
    );
    assert!(
        d.body.contains("x-ss-general.encryptionRequested:7"),
        "{}",
        d.body
    );
    assert!(d.body.contains("surround-params=21101"), "{}", d.body);
    // The log injector delivers touch (so pen and touch events are asked for) but no
    // controller touchpad or motion; a desktop's injector says what it has.
    if !spec.desktop {
        assert!(d.body.contains("x-ss-general.featureFlags:1"), "{}", d.body);
    }
    assert!(
        !d.body.contains("refPicInvalidation"),
        "no RFI without an encoder that can"
    );

    let transport = [(
        "Transport",
        "unicast;X-GS-ClientPort=50000-50001".to_string(),
    )];
    let a = r.request("SETUP streamid=audio/0/0", &transport, "");
    assert_eq!(a.status, 200);
    let session = a.header("Session").unwrap().to_string();
    assert!(session.ends_with(";timeout = 90"), "{session}");
    r.session = Some(session.split(';').next().unwrap().to_string());
    let ping = a.header("X-SS-Ping-Payload").unwrap().to_string();
    assert_eq!(ping.len(), 16);
    let audio_port: u16 = a.header("Transport").unwrap()["server_port=".len()..]
        .parse()
        .unwrap();
    let v = r.request("SETUP streamid=video/0/0", &transport, "");
    assert_eq!(v.header("X-SS-Ping-Payload"), Some(ping.as_str()));
    let video_port: u16 = v.header("Transport").unwrap()["server_port=".len()..]
        .parse()
        .unwrap();
    let c = r.request("SETUP streamid=control/13/0", &transport, "");
    let control_port: u16 = c.header("Transport").unwrap()["server_port=".len()..]
        .parse()
        .unwrap();
    let connect_data: u32 = c.header("X-SS-Connect-Data").unwrap().parse().unwrap();
    assert_eq!(
        (video_port, control_port, audio_port),
        (host.base + 9, host.base + 10, host.base + 11)
    );
    let an = r.request(
        "ANNOUNCE streamid=control/13/0",
        &[],
        &announce_body(spec.mode.0, spec.mode.1, spec.mode.2, codec, ""),
    );
    assert_eq!(an.status, 200);
    assert_eq!(r.request("PLAY /", &[], "").status, 200);

    // Pings: the payload then a counter, every 500 ms, to video and audio.
    let vsock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let asock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    vsock
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    asock.set_nonblocking(true).unwrap();
    let ping_to = |s: &std::net::UdpSocket, port: u16, n: u32| {
        let mut p = ping.as_bytes().to_vec();
        p.extend_from_slice(&n.to_be_bytes());
        s.send_to(&p, ("127.0.0.1", port)).unwrap();
    };

    // Control stream: ENet with the connect data, then the encrypted start-up messages.
    let esock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut enet_host = enet::Host::new(
        esock,
        enet::HostSettings {
            peer_limit: 1,
            channel_limit: 0x30,
            ..Default::default()
        },
    )
    .unwrap();
    let peer = enet_host
        .connect(([127, 0, 0, 1], control_port).into(), 0x30, connect_data)
        .unwrap()
        .id();
    let mut cipher = ControlCipher::new(&KEY, Origin::Client);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(std::time::Instant::now() < deadline, "ENet never connected");
        match enet_host.service().unwrap().map(|e| e.no_ref()) {
            Some(enet::EventNoRef::Connect { .. }) => break,
            Some(other) => panic!("unexpected ENet event {other:?}"),
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    let mut send = |h: &mut enet::Host<std::net::UdpSocket>, ch: u8, kind: u16, p: &[u8]| {
        let pkt = cipher.seal(kind, p);
        h.peer_mut(peer)
            .send(ch, &enet::Packet::reliable(pkt.as_slice()))
            .unwrap();
    };
    send(&mut enet_host, 0, ctl::kind::REQUEST_IDR, &[0, 0]);
    send(&mut enet_host, 0, ctl::kind::START_B, &[0]);
    let input = input_packet;
    // The tick the script counts from: the first stamped picture's.
    let mut script_zero: Option<u32> = None;

    let host_cipher = ControlCipher::new(&KEY, Origin::Client);
    let mut video = VideoReassembler::new(992, Some(&KEY));
    let mut audio = AudioReceiver::new(Some(KEY), KEY_ID as u32, 5);
    let mut opus = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
    // Decoded audio by sequence number, so a packet lost for good leaves a gap of its own length
    // instead of shifting the phase of everything after it.
    let mut pcm_by_seq = std::collections::BTreeMap::new();
    let mut decoder = Decoder::new(if codec == 1 { Codec::HEVC } else { Codec::H264 }).unwrap();
    let mut run = StreamRun::default();
    let mut buf = vec![0u8; 4096];
    let mut tick = 0u32;
    let mut last_ping = std::time::Instant::now() - Duration::from_secs(1);
    let mut awaiting_idr = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while run.frames.len() < frames && run.termination.is_none() && watch(&run) {
        assert!(
            std::time::Instant::now() < deadline,
            "stream stalled: {run:?}"
        );
        if last_ping.elapsed() >= Duration::from_millis(100) {
            last_ping = std::time::Instant::now();
            tick += 1;
            if tick % 5 == 1 {
                ping_to(&vsock, video_port, tick);
                ping_to(&asock, audio_port, tick);
            }
            if tick == 1 {
                // A second start-of-stream request, right after the first ping, as a client
                // whose video side starts after its control stream: it lands just before or
                // just after the stream's first frame (a keyframe) and must not bring another.
                send(&mut enet_host, 0, ctl::kind::REQUEST_IDR, &[0, 0]);
            }
            if !chatty {
                continue;
            }
            if !spec.script.is_empty() {
                send(
                    &mut enet_host,
                    0,
                    ctl::kind::PING,
                    &[4, 0, 0, 0, 0, 0, 0, 0],
                );
                if let Some(zero) = script_zero {
                    for (_, ch, p) in spec.script.iter().filter(|e| e.0 + zero == tick) {
                        send(&mut enet_host, *ch, ctl::kind::INPUT, p);
                    }
                }
                continue;
            }
            send(
                &mut enet_host,
                0,
                ctl::kind::PING,
                &[4, 0, 0, 0, 0, 0, 0, 0],
            );
            // Input: a relative mouse move every tick, a key press, a gamepad state.
            send(
                &mut enet_host,
                3,
                ctl::kind::INPUT,
                &input(0x07, &[0, 3, 0xFF, 0xFE]),
            );
            if tick.is_multiple_of(10) {
                send(
                    &mut enet_host,
                    2,
                    ctl::kind::INPUT,
                    &input(0x03, &[0, 0x41, 0x80, 0, 0, 0]),
                );
                send(
                    &mut enet_host,
                    2,
                    ctl::kind::INPUT,
                    &input(0x04, &[0, 0x41, 0x80, 0, 0, 0]),
                );
                // Pad 0 with the A button held and triggers that change every time.
                let triggers = ((tick / 10 * 40) as u8, 255 - (tick / 10 * 40) as u8);
                run.triggers_sent.push(triggers);
                let mut pad = vec![0x1A, 0, 0, 0, 1, 0, 0x14, 0, 0x00, 0x10];
                pad.extend_from_slice(&[triggers.0, triggers.1]);
                pad.extend_from_slice(&[0; 8]);
                pad.extend_from_slice(&[0x9C, 0, 0, 0, 0x55, 0]);
                send(&mut enet_host, 0x10, ctl::kind::INPUT, &input(0x0C, &pad));
            }
        }
        while let Some(ev) = enet_host.service().unwrap().map(|e| e.no_ref()) {
            match ev {
                enet::EventNoRef::Receive { packet, .. } => {
                    let m = host_cipher_open(&host_cipher, packet.data());
                    if m.kind == ctl::kind::TERMINATION {
                        run.termination =
                            Some(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
                    }
                    if m.kind == ctl::kind::RUMBLE {
                        // 4 reserved bytes, then controller, low and high motor (LE16 each).
                        assert_eq!(m.payload.len(), 10, "{:?}", m.payload);
                        let le = |i: usize| u16::from_le_bytes([m.payload[i], m.payload[i + 1]]);
                        assert_eq!(&m.payload[..4], &[0; 4]);
                        run.rumble.push((le(4), le(6), le(8)));
                    }
                }
                enet::EventNoRef::Disconnect { .. } => {
                    run.termination.get_or_insert(0);
                }
                enet::EventNoRef::Connect { .. } => {}
            }
        }
        while let Ok((n, _)) = asock.recv_from(&mut buf) {
            for p in audio.push(&buf[..n]) {
                run.audio_packets += 1;
                run.audio_recovered += u32::from(p.recovered);
                let mut out = vec![0i16; 48 * 5 * 2];
                let k = opus.decode(&p.opus, &mut out, false).unwrap();
                pcm_by_seq.insert(p.seq, out[..k * 2].to_vec());
            }
        }
        let Ok((n, _)) = vsock.recv_from(&mut buf) else {
            continue;
        };
        if let Reassembled::Frame(f) = video.push(&buf[..n]) {
            if run.frames.is_empty() {
                assert_eq!((f.index, f.kind), (1, 2), "the first frame is IDR frame 1");
            }
            run.idr_frames += u32::from(f.kind == 2);
            if f.kind == 2 {
                run.idr_at.push(f.index);
            }
            run.recovered_shards += f.recovered;
            // A gap means a frame FEC could not rebuild: like Moonlight, ask for an IDR and
            // decode nothing until it arrives (later frames reference the lost one).
            if run.frames.last().is_some_and(|l| f.index != l + 1) {
                awaiting_idr = true;
                run.idr_requests += 1;
                send(&mut enet_host, 1, ctl::kind::REQUEST_IDR, &[0, 0]);
            }
            run.frames.push(f.index);
            if run.frames.len() == 1 {
                // And once more as the first frame arrives, as a client whose control stream
                // comes up after its video has started: the host has sent a keyframe and
                // nothing since, so this one is coalesced as well.
                send(&mut enet_host, 0, ctl::kind::REQUEST_IDR, &[0, 0]);
            }
            if awaiting_idr && f.kind != 2 {
                continue;
            }
            awaiting_idr = false;
            for pic in decoder.decode(&f.data).unwrap() {
                match read_stamp_luma(&pic.y, pic.y_stride, pic.width, pic.height) {
                    Some(s) => {
                        run.stamps.push(s.frame);
                        script_zero.get_or_insert(tick);
                        if spec.desktop && run.stamps.len() % 30 == 0 && run.pictures.len() < 8 {
                            run.pictures.push((s, pic));
                        }
                    }
                    None if spec.desktop => run.unstamped += 1,
                    None => panic!("every picture carries a readable stamp"),
                }
            }
        }
    }
    // The client stops: a graceful ENet disconnect.
    enet_host.peer_mut(peer).disconnect(0);
    for _ in 0..50 {
        let _ = enet_host.service();
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut pcm = Vec::new();
    if let (Some(&first), Some(&last)) = (pcm_by_seq.keys().next(), pcm_by_seq.keys().last()) {
        run.audio_span = u32::from(last - first) + 1;
        for seq in first..=last {
            match pcm_by_seq.get(&seq) {
                Some(samples) => pcm.extend_from_slice(samples),
                None => pcm.resize(pcm.len() + 48 * 5 * 2, 0),
            }
        }
    }
    let ch =
        |c: usize, f: f64| punktfunk_desktop::audio::tone::tone_strength(&pcm, 2, c, f, 48_000);
    run.left_440 = ch(0, 440.0);
    run.left_660 = ch(0, 660.0);
    run.right_660 = ch(1, 660.0);
    run
}

fn host_cipher_open(c: &ControlCipher, p: &[u8]) -> ctl::Message {
    c.open(p).expect("host control messages authenticate")
}

fn launch(host: &Host, me: &Identity, resume: bool) {
    launch_mode(host, me, resume, "640x360x30");
}

/// [`launch`] at `mode` (`WxHxFPS`).
fn launch_mode(host: &Host, me: &Identity, resume: bool, mode: &str) {
    let what = if resume { "resume" } else { "launch" };
    let (_, b) = host.https(
        me,
        &format!(
            "/{what}?{Q}&appid=1&mode={mode}&rikey={}&rikeyid={KEY_ID}&localAudioPlayMode=0&surroundAudioInfo=196610&corever=1",
            punktfunk_gamestream::hex_encode(&KEY)
        ),
    );
    let b = String::from_utf8(b).unwrap();
    assert_eq!(
        text_of(&b, "sessionUrl0"),
        Some(format!("rtspenc://127.0.0.1:{}", host.base + 21).as_str()),
        "{b}"
    );
}

#[test]
fn a_session_streams_video_audio_and_takes_input_then_resumes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (me, _) = clients();
    let host = Host::start_with(dir.path(), &["--no-mdns", "--gamestream-rumble-echo"]);
    pair_owner(&host, me);
    launch(&host, me, false);
    let run = stream(&host, 60, 0);
    assert_eq!(run.termination, None);
    assert_eq!(
        run.frames,
        (1..=60).collect::<Vec<_>>(),
        "consecutive frames"
    );
    // The first frame is the keyframe, and the client's start-of-stream IDR requests are
    // coalesced with it: no second keyframe back to back (nothing was lost, nothing else asked).
    assert_eq!(run.idr_at, [1], "one IDR, frame 1: {run:?}");
    // The stamps count the source's frames: consecutive too (the encoder dropped none).
    assert!(
        run.stamps.windows(2).all(|w| w[1] == w[0] + 1),
        "{:?}",
        run.stamps
    );
    assert!(run.audio_packets > 200, "{run:?}");
    assert!(
        run.left_440 > 2000.0 && run.left_660 < run.left_440 / 10.0,
        "{run:?}"
    );
    assert!(run.right_660 > 2000.0, "{run:?}");
    // Rumble: the echo aid answers each new trigger position on pad 0, in order.
    let mut want = Vec::new();
    let mut last = (0, 0);
    for &t in &run.triggers_sent {
        if t != last {
            want.push((0, u16::from(t.0) * 257, u16::from(t.1) * 257));
            last = t;
        }
    }
    assert!(!run.rumble.is_empty(), "{run:?}");
    assert_eq!(run.rumble, want[..run.rumble.len()], "{run:?}");
    let end = host.wait_log(&["GameStream session ended", "client disconnected"], 10);
    for part in [
        "key=",
        "mouse-move=",
        "gamepad=",
        "input_dropped=0",
        "control_dropped=0",
    ] {
        assert!(end.contains(part), "{part} in {end}");
    }
    let rumble_sent: usize = end
        .split("rumble_sent=")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (run.rumble.len()..=want.len()).contains(&rumble_sent),
        "{rumble_sent} rumble messages sent, {} received: {end}",
        run.rumble.len()
    );
    // The app keeps running: /resume starts a new session, here with HEVC.
    launch(&host, me, true);
    let again = stream(&host, 20, 1);
    assert_eq!(again.frames, (1..=20).collect::<Vec<_>>());
    assert_eq!(
        again.idr_at,
        [1],
        "a resumed stream starts with one IDR too"
    );
    assert!(again.stamps.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn video_and_audio_survive_five_percent_loss_through_fec() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (me, _) = clients();
    let host = Host::start_with(
        dir.path(),
        &[
            "--no-mdns",
            "--gamestream-drop-video",
            "0.05",
            "--gamestream-drop-audio",
            "0.05",
        ],
    );
    pair(&host, me, "1357", "1357", true).unwrap();
    launch(&host, me, false);
    let run = stream(&host, 150, 0);
    // Frames that FEC could not rebuild are missing from the sequence; at 5 % loss and 20 %
    // parity (at least 2 shards per block) that is rare.
    let delivered = run.frames.len() as f64 / f64::from(*run.frames.last().unwrap());
    assert!(delivered >= 0.95, "{delivered} {run:?}");
    assert!(run.recovered_shards > 10, "FEC rebuilt shards: {run:?}");
    // Every picture decoded shows its own frame: stamps only ever move forward.
    assert!(
        run.stamps.windows(2).all(|w| w[1] > w[0]),
        "{:?}",
        run.stamps
    );
    if run.idr_requests > 0 {
        assert!(run.idr_frames >= 2, "an IDR answered the request: {run:?}");
    }
    // Audio: lost packets come back from the 4 + 2 FEC, and the tone is intact.
    assert!(run.audio_recovered > 5, "{run:?}");
    assert!(run.left_440 > 2000.0 && run.right_660 > 2000.0, "{run:?}");
    assert!(run.rumble.is_empty(), "no rumble without a source of it");
    host.wait_log(&["dropping video/audio datagrams on purpose"], 1);
}

#[test]
fn the_host_ends_the_stream_when_the_app_exits() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    short_game(dir.path(), 1, 3);
    let (me, _) = clients();
    let host = Host::start(dir.path());
    pair(&host, me, "2468", "2468", true).unwrap();
    launch(&host, me, false);
    let run = stream(&host, 100_000, 0);
    assert_eq!(run.termination, Some(ctl::TERMINATION_GRACEFUL), "{run:?}");
    assert!(!run.frames.is_empty());
    host.wait_log(&["GameStream session terminated by the host"], 5);
}

/// Whether a process exists (a zombie still does: only a reaped child is gone).
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[test]
fn sigterm_mid_stream_tells_the_client_ends_the_app_and_exits_cleanly() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    one_app(dir.path(), 1, "Long game", &["sh", "-c", "sleep 300"]);
    let (me, _) = clients();
    let mut host = Host::start(dir.path());
    pair(&host, me, "3690", "3690", true).unwrap();
    launch(&host, me, false);
    let started = host.wait_log(&["started the app", "Long game"], 10);
    let app: i32 = started
        .split("pid=")
        .nth(1)
        .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {started}"));
    assert!(alive(app), "the app runs: {started}");
    let socket = dir.path().join("control.sock");
    assert!(
        socket.exists(),
        "the control socket is there while the host runs"
    );

    // Stream until video flows, then SIGTERM the host; keep the control stream serviced until
    // the termination message arrives (or give up after 10 s).
    let host_pid = host.child.id() as i32;
    let mut signalled: Option<std::time::Instant> = None;
    let run = stream_watching(&host, usize::MAX, 0, true, &mut |run| {
        match signalled {
            None if run.frames.len() >= 20 => {
                // SAFETY: kill only sends a signal, to the host this test started.
                assert_eq!(unsafe { libc::kill(host_pid, libc::SIGTERM) }, 0);
                signalled = Some(std::time::Instant::now());
                true
            }
            None => true,
            Some(t) => t.elapsed() < Duration::from_secs(10),
        }
    });
    assert!(signalled.is_some() && run.frames.len() >= 20, "{run:?}");
    assert_eq!(
        run.termination,
        Some(ctl::TERMINATION_GRACEFUL),
        "the client is told with a termination message: {run:?}"
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = host.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the host still runs 10 s after SIGTERM; log:\n{}",
            host.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let gone = !alive(app);
    if !gone {
        // Do not leave the app behind when the check below fails.
        // SAFETY: the app leads its own process group; kill only sends a signal.
        unsafe { libc::kill(-app, libc::SIGKILL) };
    }
    let log = host.log.lock().unwrap().join("\n");
    assert_eq!(status.code(), Some(0), "{status}; log:\n{log}");
    assert!(gone, "the app (pid {app}) outlived the host; log:\n{log}");
    assert!(
        !socket.exists(),
        "the control socket is removed on exit; log:\n{log}"
    );
    for part in [
        "SIGTERM: shutting down",
        "host shutdown: ending the app",
        "stopped",
    ] {
        assert!(log.contains(part), "{part:?} in the log:\n{log}");
    }
    // The session is torn down before the host exits: its figures are logged, under the
    // shutdown's name.
    for line in [
        "GameStream session terminated by the host",
        "GameStream session ended",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(line) && l.contains("the host is shutting down")),
            "{line:?}, naming the shutdown, in the log:\n{log}"
        );
    }
}

#[test]
fn a_silent_client_is_dropped_after_ten_seconds_and_can_resume() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (me, _) = clients();
    let host = Host::start(dir.path());
    pair(&host, me, "8642", "8642", true).unwrap();
    launch(&host, me, false);
    let t = std::time::Instant::now();
    let run = stream_with(&host, 100_000, 0, false);
    assert_eq!(run.termination, Some(ctl::TERMINATION_GRACEFUL), "{run:?}");
    assert!(t.elapsed() >= Duration::from_secs(9), "{:?}", t.elapsed());
    host.wait_log(
        &["GameStream session ended", "no control traffic for 10 s"],
        5,
    );
    // The app still runs: the client resumes it.
    launch(&host, me, true);
    let again = stream(&host, 10, 0);
    assert_eq!(again.frames, (1..=10).collect::<Vec<_>>());
}

#[test]
fn rtsp_refuses_plaintext_bad_requests_and_impossible_streams() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (me, _) = clients();
    let host = Host::start(dir.path());
    pair(&host, me, "1111", "1111", true).unwrap();
    let mut r = Rtsp::new(host.base);
    // Without a launch there is nothing to set up.
    let raw = r.raw(b"OPTIONS rtsp://0.0.0.0 RTSP/1.0\r\nCSeq: 1\r\n\r\n");
    assert!(
        String::from_utf8_lossy(&raw).starts_with("RTSP/1.0 503"),
        "{raw:?}"
    );
    launch(&host, me, false);
    // The launch asked for encrypted RTSP: plaintext is refused.
    let raw = r.raw(b"OPTIONS rtsp://0.0.0.0 RTSP/1.0\r\nCSeq: 1\r\n\r\n");
    assert!(
        String::from_utf8_lossy(&raw).starts_with("RTSP/1.0 400"),
        "{raw:?}"
    );
    // A sealed message under another key does not authenticate: the connection just closes.
    let forged = rtsp_proto::seal(
        &[0; 16],
        1,
        Origin::Client,
        b"OPTIONS x RTSP/1.0\r\nCSeq: 1\r\n\r\n",
    );
    assert!(r.raw(&forged).is_empty());
    // Garbage inside a valid envelope is a 400.
    r.seq += 1;
    let raw = r.raw(&rtsp_proto::seal(
        &KEY,
        r.seq,
        Origin::Client,
        b"GET / HTTP/1.1\r\n\r\n",
    ));
    let (plain, _, _) = rtsp_proto::open(&KEY, Origin::Host, &raw).unwrap().unwrap();
    assert!(plain.starts_with(b"RTSP/1.0 400"));
    // ANNOUNCE before SETUP, then requests the host cannot serve.
    let body = announce_body(640, 360, 30, 0, "");
    assert_eq!(
        r.request("ANNOUNCE streamid=control/13/0", &[], &body)
            .status,
        400
    );
    let transport = [(
        "Transport",
        "unicast;X-GS-ClientPort=50000-50001".to_string(),
    )];
    assert_eq!(
        r.request("SETUP streamid=audio/0/0", &transport, "").status,
        200
    );
    assert_eq!(
        r.request("SETUP streamid=bogus/0/0", &transport, "").status,
        404
    );
    // An ENet peer with the wrong connect data never gets a connection (nor a peer slot).
    let c = r.request("SETUP streamid=control/13/0", &transport, "");
    let data: u32 = c.header("X-SS-Connect-Data").unwrap().parse().unwrap();
    let mut h = enet::Host::new(
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        enet::HostSettings::default(),
    )
    .unwrap();
    h.connect(([127, 0, 0, 1], host.base + 10).into(), 0x30, data ^ 1)
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        if let Some(enet::EventNoRef::Connect { .. }) = h.service().unwrap().map(|e| e.no_ref()) {
            panic!("an ENet peer with the wrong connect data was connected");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let hdr = announce_body(640, 360, 30, 0, "a=x-nv-video[0].dynamicRangeMode:1 \r\n");
    assert_eq!(
        r.request("ANNOUNCE streamid=control/13/0", &[], &hdr)
            .status,
        400
    );
    host.wait_log(&["stream request refused", "10-bit"], 5);
    let odd = announce_body(641, 360, 30, 0, "");
    assert_eq!(
        r.request("ANNOUNCE streamid=control/13/0", &[], &odd)
            .status,
        400
    );
    let missing = body.replace("a=x-nv-video[0].maxFPS:30 \r\n", "");
    assert_eq!(
        r.request("ANNOUNCE streamid=control/13/0", &[], &missing)
            .status,
        400
    );
    assert_eq!(r.request("TEARDOWN /", &[], "").status, 501);
}

// ---------------------------------------------------------------------------------------------
// GameStream on a real desktop: a private headless sway with the host in it (the host picks
// the sway output, screencopy and wlr input from the environment itself) and the desktop probe
// app as the launched app.

/// Every kind of pointer and keyboard input a stock client sends, in ticks of 100 ms after the
/// first stamped picture: a click in the middle of a `w`×`h` stream (focus), relative motion,
/// the right button, both scroll axes, `a`, Shift+`a`, the text `é`, `a` with only the Shift
/// flag, and `B` pressed and never released (the client leaves with it held).
fn desktop_script(w: u16, h: u16) -> Vec<(u32, u8, Vec<u8>)> {
    use punktfunk_gamestream::input::magic as m;
    let mut abs = Vec::new();
    for v in [w / 2, h / 2, 0, w, h] {
        abs.extend_from_slice(&v.to_be_bytes());
    }
    let key = |vk: u8, mods: u8| vec![0, vk, 0x80, mods, 0, 0];
    let (shift, a, b) = (0x10, 0x41, 0x42);
    vec![
        (2, 3, input_packet(m::MOUSE_ABS, &abs)),
        (3, 3, input_packet(m::BUTTON_DOWN, &[1])),
        (4, 3, input_packet(m::BUTTON_UP, &[1])),
        (6, 3, input_packet(m::MOUSE_REL, &[0, 10, 0, 5])),
        (7, 3, input_packet(m::BUTTON_DOWN, &[3])),
        (8, 3, input_packet(m::BUTTON_UP, &[3])),
        // Wheel up one notch (both amounts, as Moonlight sends them), then right one notch.
        (9, 3, input_packet(m::SCROLL, &[0, 120, 0, 120, 0, 0])),
        (10, 3, input_packet(m::HSCROLL, &[0, 120])),
        (11, 2, input_packet(m::KEY_DOWN, &key(a, 0))),
        (12, 2, input_packet(m::KEY_UP, &key(a, 0))),
        (13, 2, input_packet(m::KEY_DOWN, &key(shift, 0))),
        (14, 2, input_packet(m::KEY_DOWN, &key(a, 1))),
        (15, 2, input_packet(m::KEY_UP, &key(a, 1))),
        (16, 2, input_packet(m::KEY_UP, &key(shift, 0))),
        (17, 2, input_packet(m::TEXT, "é".as_bytes())),
        // `A` as a soft keyboard sends it: the Shift flag without a Shift key.
        (18, 2, input_packet(m::KEY_DOWN, &key(a, 1))),
        (19, 2, input_packet(m::KEY_UP, &key(a, 1))),
        (21, 2, input_packet(m::KEY_DOWN, &key(b, 0))),
    ]
}

/// Mean absolute luma difference, per 16×16 patch on a grid below the stamp, between a decoded
/// picture and the probe's picture for the same stamp (the media crate's test pattern at that
/// frame, the stamp drawn over it, converted as the host converts).
fn patch_errors(stamp: punktfunk_media::Stamp, pic: &punktfunk_media::DecodedFrame) -> Vec<f64> {
    use punktfunk_media::{draw_stamp_bgra, BgraFrame, Converter, TestPattern, YuvFrame};
    let (w, h) = (pic.width, pic.height);
    let mut drawn = BgraFrame::new(w, h);
    TestPattern::new(w, h).render(stamp.frame, 0, &mut drawn);
    draw_stamp_bgra(&mut drawn, stamp);
    let mut yuv = YuvFrame {
        width: w,
        height: h,
        data: Vec::new(),
    };
    Converter::new(w, h)
        .unwrap()
        .convert(&drawn, &mut yuv)
        .unwrap();
    let top = punktfunk_media::stamp::cell_size(w) * 5;
    let mut errors = Vec::new();
    for gy in 0..4 {
        for gx in 0..6 {
            let x0 = (w - 16) * gx / 5;
            let y0 = top + (h - 16 - top) * gy / 3;
            let (mut want, mut got) = (0f64, 0f64);
            for y in y0..y0 + 16 {
                for x in x0..x0 + 16 {
                    want += f64::from(yuv.data[(y * w + x) as usize]);
                    got += f64::from(pic.y[y as usize * pic.y_stride + x as usize]);
                }
            }
            errors.push((want - got).abs() / 256.0);
        }
    }
    errors
}

#[test]
fn a_gamestream_client_streams_an_app_on_a_sway_desktop_and_its_input_reaches_the_app() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sway =
        punktfunk_testenv::HeadlessSway::start().expect("headless sway (scripts/install-deps.sh)");
    let dir = tempfile::tempdir().unwrap();
    let probe = punktfunk_testenv::sibling_bin(
        Path::new(bin()),
        "punktfunk-desktop-probe",
        "punktfunk-desktop-probe",
    );
    let probe_log = sway.runtime_dir().join("probe-gamestream.jsonl");
    one_app(
        dir.path(),
        1,
        "Probe",
        &[
            probe.to_str().unwrap(),
            "--log",
            probe_log.to_str().unwrap(),
        ],
    );
    let vars = sway.env_vars();
    let host = Host::start_in(dir.path(), &["--no-mdns"], Some(&vars));
    let (me, _) = clients();
    let r4 = pair(&host, me, "2468", "2468", true).unwrap();
    assert_eq!(text_of(&r4, "paired"), Some("1"), "{r4}");
    launch_mode(&host, me, false, "1280x720x60");
    let script = desktop_script(1280, 720);
    let spec = Spec {
        mode: (1280, 720, 60),
        desktop: true,
        script: &script,
        ..Spec::new(usize::MAX, 0)
    };
    // Stream until 3.5 s after the first stamped picture: the script is done by 2 s.
    let mut first: Option<std::time::Instant> = None;
    let run = stream_spec(&host, &spec, &mut |run| {
        if !run.stamps.is_empty() {
            first.get_or_insert_with(std::time::Instant::now);
        }
        first.is_none_or(|t| t.elapsed() < Duration::from_millis(3500))
    });
    let log = || host.log.lock().unwrap().join("\n");
    assert_eq!(run.termination, None, "{}", log());
    assert!(
        log().contains("backends=[\"sway\", \"screencopy\", \"wlr\""),
        "the host chose the desktop's backends:\n{}",
        log()
    );
    assert_eq!(
        run.frames,
        (1..=run.frames.len() as u32).collect::<Vec<_>>(),
        "consecutive frames"
    );
    // Every stamped picture is a later frame of the app than the one before (the compositor
    // may show a frame the capture missed, never an older one).
    assert!(
        run.stamps.len() >= 60,
        "{} stamped pictures",
        run.stamps.len()
    );
    assert!(
        run.stamps.windows(2).all(|w| w[1] > w[0]),
        "{:?}",
        run.stamps
    );
    assert!(
        run.unstamped <= 60,
        "{} pictures before the app was on screen",
        run.unstamped
    );
    // What the client decoded is what the app drew, within the codec's loss.
    assert!(
        run.pictures.len() >= 2,
        "{} pictures kept",
        run.pictures.len()
    );
    for (stamp, pic) in &run.pictures {
        assert_eq!((pic.width, pic.height), (1280, 720));
        let e = patch_errors(*stamp, pic);
        let worst = e.iter().cloned().fold(0.0, f64::max);
        let mean = e.iter().sum::<f64>() / e.len() as f64;
        assert!(
            worst < 24.0 && mean < 8.0,
            "frame {}: luma error per patch mean {mean:.1}, worst {worst:.1}: {e:?}",
            stamp.frame
        );
    }

    // The input as the probe app saw it; B is released once the client has gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut log = punktfunk_testenv::ProbeLog::read(&probe_log);
    while !log.key(48, false) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        log = punktfunk_testenv::ProbeLog::read(&probe_log);
    }
    log.assert_pointer_script((640.0, 360.0));
    let typed = log.typed();
    assert!(
        typed.windows(5).any(|w| w == ["a", "A", "é", "A", "b"]),
        "a, Shift+a, the text é, a with the Shift flag alone and then b in order: {typed:?}"
    );
    assert!(log.key(48, true), "B pressed");
    assert!(
        log.key(48, false),
        "B released after the client left: {:?}",
        log.lines
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile peers: what a stranger on the network can and cannot do to the owner's streams.

/// A TCP connection to `port` on 127.0.0.1 from the loopback address `ip`.
fn tcp_from(ip: &str, port: u16) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{ip}:0").parse().unwrap();
    s.bind(&local.into()).unwrap();
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// GET over plain HTTP from the loopback address `ip`; returns the body.
fn http_from(ip: &str, base: u16, target: &str) -> String {
    let mut s = tcp_from(ip, base);
    write!(s, "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    body(&mut s)
}

#[test]
fn strangers_enet_connects_take_no_slot_and_the_client_streams_at_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (me, _) = clients();
    let host = Host::start(dir.path());
    pair_owner(&host, me);
    launch(&host, me, false);
    // Sixteen strangers (several source ports, two addresses) keep asking for an ENet
    // connection with guessed connect data, renewing their attempts, for the whole stream.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let control = host.base + 10;
    let attackers: Vec<_> = (0..16u32)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let ip = if i % 2 == 0 { "127.0.0.1" } else { "127.0.0.3" };
                let sock = std::net::UdpSocket::bind(format!("{ip}:0")).unwrap();
                let mut h = enet::Host::new(
                    sock,
                    enet::HostSettings {
                        peer_limit: 4,
                        ..Default::default()
                    },
                )
                .unwrap();
                let mut connected = 0u32;
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if n.is_multiple_of(50) {
                        let guess = i.wrapping_mul(0x9E37_79B9) ^ n;
                        let _ = h.connect(([127, 0, 0, 1], control).into(), 0x30, guess);
                    }
                    n += 1;
                    while let Ok(Some(ev)) = h.service() {
                        if let enet::EventNoRef::Connect { .. } = ev.no_ref() {
                            connected += 1;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                connected
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let t = std::time::Instant::now();
    let run = stream(&host, 60, 0);
    let took = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let stranger_connections: u32 = attackers.into_iter().map(|a| a.join().unwrap()).sum();
    assert_eq!(run.termination, None);
    assert_eq!(
        run.frames,
        (1..=60).collect::<Vec<_>>(),
        "consecutive frames"
    );
    assert_eq!(stranger_connections, 0, "a stranger got an ENet connection");
    let end = host.wait_log(&["control_screened"], 15);
    println!(
        "16 strangers asking for ENet connections: the client streamed 60 frames in {:.2} s; \
         strangers connected: {stranger_connections}; session end: {end}",
        took.as_secs_f64()
    );
}

#[test]
fn an_rtsp_slow_drip_is_cut_off_by_the_request_deadline() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let mut s = tcp_from("127.0.0.1", host.base + 21);
    s.set_nonblocking(true).unwrap();
    let t = std::time::Instant::now();
    // One byte a second of a request that never ends: each read alone would be in time.
    let closed_after = loop {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the drip was never cut off"
        );
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => break t.elapsed(),
            Ok(_) => break t.elapsed(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break t.elapsed(),
        }
        if s.write_all(b"O").is_err() {
            break t.elapsed();
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    println!(
        "RTSP slow drip (1 byte/s) closed after {:.1} s (deadline 10 s per request)",
        closed_after.as_secs_f64()
    );
    assert!(
        closed_after >= Duration::from_secs(8) && closed_after < Duration::from_secs(15),
        "closed after {closed_after:?}"
    );
}

#[test]
fn a_vanished_pairing_requester_frees_the_slot_and_the_owner_pairs() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (me, other) = clients();
    let host = Host::start(dir.path());
    // A stranger asks to pair and goes away while the host waits for the PIN.
    let c = ClientPairing::new(
        &other.cert_der,
        &other.key_der,
        "1111",
        &SystemRandom::new(),
    )
    .unwrap();
    let mut s = tcp_from("127.0.0.4", host.base);
    write!(
        s,
        "GET /pair?{Q}&{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        c.phase1_query()
    )
    .unwrap();
    host.wait_log(&["pairing request; waiting for the PIN"], 10);
    let t = std::time::Instant::now();
    drop(s);
    host.wait_log(&["the pairing client went away"], 10);
    let freed = t.elapsed();
    // The operator's PIN now has no one to go to, and the owner can pair at once.
    let (ok, out) = host.cli(&["pin", "1111"]);
    assert!(
        !ok && out.contains("no pairing request is waiting"),
        "{out}"
    );
    pair_owner(&host, me);
    println!(
        "the vanished requester's pairing slot was free {} ms after its connection closed",
        freed.as_millis()
    );
}

#[test]
fn a_challenge_injected_from_another_address_is_refused_and_the_ceremony_pairs() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (me, other) = clients();
    let host = Host::start(dir.path());
    let mut victim =
        ClientPairing::new(&me.cert_der, &me.key_der, "4321", &SystemRandom::new()).unwrap();
    let q1 = format!("/pair?{Q}&{}", victim.phase1_query());
    let base = host.base;
    let waiter = std::thread::spawn(move || http_get(base, &q1));
    enter_pin(&host, "4321");
    let r1 = waiter.join().unwrap();
    // The intruder (same uniqueid, as every stock client sends) runs its own ceremony's
    // phase 2 and an unpair into the victim's, from another address.
    let mut intruder = ClientPairing::new(
        &other.cert_der,
        &other.key_der,
        "9999",
        &SystemRandom::new(),
    )
    .unwrap();
    let iq2 = intruder.phase2_query(&r1).unwrap();
    let ir = http_from("127.0.0.5", host.base, &format!("/pair?{Q}&{iq2}"));
    assert_eq!(status_of(&ir), Some(400), "{ir}");
    let _ = http_from("127.0.0.5", host.base, &format!("/unpair?{Q}"));
    // The victim's ceremony is untouched.
    let r2 = host.http(&format!("/pair?{Q}&{}", victim.phase2_query(&r1).unwrap()));
    let r3 = host.http(&format!("/pair?{Q}&{}", victim.phase3_query(&r2).unwrap()));
    let r4 = host.http(&format!("/pair?{Q}&{}", victim.phase4_query(&r3).unwrap()));
    assert_eq!(text_of(&r4, "paired"), Some("1"), "{r4}");
    println!("an injected phase 2 and unpair from another address: refused (400, ignored); the ceremony paired");
}

/// `/launch` as an old client sends it: without `corever`.
fn legacy_launch(host: &Host, me: &Identity) -> String {
    let (_, b) = host.https(
        me,
        &format!(
            "/launch?{Q}&appid=1&mode=640x360x30&rikey={}&rikeyid={KEY_ID}&localAudioPlayMode=0",
            punktfunk_gamestream::hex_encode(&KEY)
        ),
    );
    String::from_utf8(b).unwrap()
}

#[test]
fn legacy_launches_are_refused_and_with_them_allowed_a_stranger_gets_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (me, _) = clients();
    let host = Host::start_with(dir.path(), &["--no-mdns", "--gamestream-allow-legacy"]);
    pair_owner(&host, me);
    let b = legacy_launch(&host, me);
    assert!(
        text_of(&b, "sessionUrl0").is_some_and(|u| u.starts_with("rtsp://")),
        "{b}"
    );
    host.wait_log(&["launch without encrypted RTSP"], 5);
    // The launch is plaintext: a keyless stranger who saw it tries to set the stream up.
    let plain = |ip: &str, req: &str| {
        let mut s = tcp_from(ip, host.base + 21);
        s.write_all(req.as_bytes()).unwrap();
        String::from_utf8_lossy(&read_all(&mut s)).into_owned()
    };
    let options = format!(
        "OPTIONS rtsp://127.0.0.1:{} RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        host.base + 21
    );
    let setup = "SETUP streamid=control/13/0 RTSP/1.0\r\nCSeq: 2\r\nTransport: unicast\r\n\r\n";
    for req in [options.as_str(), setup] {
        let r = plain("127.0.0.6", req);
        assert!(r.starts_with("RTSP/1.0 403"), "{r}");
        assert!(!r.contains("X-SS-Connect-Data"), "{r}");
    }
    // The launching client's address is answered.
    let r = plain("127.0.0.1", &options);
    assert!(r.starts_with("RTSP/1.0 200"), "{r}");
    // Refused by default, with the way out named.
    drop(host);
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    pair_owner(&host, me);
    let b = legacy_launch(&host, me);
    assert_eq!(status_of(&b), Some(403), "{b}");
    assert!(b.contains("--gamestream-allow-legacy"), "{b}");
}

#[test]
fn a_flood_of_the_audio_port_keeps_the_audio_flowing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (me, _) = clients();
    let host = Host::start(dir.path());
    pair_owner(&host, me);
    launch(&host, me, false);
    let quiet = stream(&host, 150, 0);
    // Unlimited junk at the audio port from a stranger for the whole second run.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (stop, port) = (stop.clone(), host.base + 11);
        std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.7:0").unwrap();
            let junk = [0x5Au8; 200];
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if s.send_to(&junk, ("127.0.0.1", port)).is_ok() {
                    sent += 1;
                }
            }
            sent
        })
    };
    launch(&host, me, true);
    let t = std::time::Instant::now();
    let flooded = stream(&host, 150, 0);
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.join().unwrap();
    let share = |r: &StreamRun| f64::from(r.audio_packets) / f64::from(r.audio_span.max(1));
    println!(
        "audio delivered: {:.2} % quiet ({} of {}), {:.2} % under a flood of {:.0} datagrams/s ({} of {})",
        100.0 * share(&quiet),
        quiet.audio_packets,
        quiet.audio_span,
        100.0 * share(&flooded),
        sent as f64 / secs,
        flooded.audio_packets,
        flooded.audio_span
    );
    assert_eq!(flooded.frames.len(), 150, "{flooded:?}");
    assert!(flooded.audio_span > 500, "{flooded:?}");
    assert!(
        share(&flooded) >= 0.99,
        "only {:.2} % of the audio arrived under the flood",
        100.0 * share(&flooded)
    );
}
