//! The GameStream side of a real `punktfunk-host serve --gamestream` process, driven by a
//! test-side client written in this repository from the protocol description (not a stock
//! client): serverinfo over HTTP and HTTPS, a complete pairing with the PIN entered through
//! `punktfunk-host pin`, the 401 for unknown certificates, apps, box art, launch, resume and
//! cancel, revocation with `clients remove`, persistence across a restart, and the lockout
//! after five wrong PINs.

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

/// A base port whose HTTPS (−5) and HTTP ports are free now.
fn free_base() -> u16 {
    for _ in 0..200 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        if p > 2000 && p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p - 5)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair");
}

struct Host {
    child: Child,
    base: u16,
    dir: std::path::PathBuf,
}

impl Host {
    fn start(dir: &Path) -> Host {
        Host::start_with(dir, &["--no-mdns", "--name", "test host"])
    }

    /// `serve --gamestream` on a free base port with `extra` flags.
    fn start_with(dir: &Path, extra: &[&str]) -> Host {
        let base = free_base();
        let mut child = Command::new(bin())
            .args(["--config-dir", dir.to_str().unwrap(), "--log", "info"])
            .args(["serve", "--listen", "127.0.0.1:0", "--gamestream"])
            .args(extra)
            .args(["--gamestream-port", &base.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.contains("listening"), "{line}");
        // Keep draining stdout (pairing prompts) so the host never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        Host {
            child,
            base,
            dir: dir.to_path_buf(),
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
        };
        let r = h.http(&q1);
        std::mem::forget(h);
        r
    });
    // The host holds phase 1 until the PIN is typed: enter it through the control channel.
    let mut tries = 0;
    loop {
        let (ok, out) = host.cli(&["pin", host_pin]);
        if ok {
            break;
        }
        assert!(out.contains("no pairing request is waiting"), "{out}");
        tries += 1;
        assert!(tries < 100, "the host never asked for a PIN");
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let (_, b) = host.https(
        me,
        &format!("/resume?{Q}&rikey=FFEEDDCCBBAA99887766554433221100&rikeyid=99&corever=0"),
    );
    let r = String::from_utf8(b).unwrap();
    assert_eq!(text_of(&r, "resume"), Some("1"), "{r}");
    assert!(text_of(&r, "sessionUrl0").unwrap().starts_with("rtsp://"));
    let (_, b) = host.https(me, &format!("/cancel?{Q}"));
    assert_eq!(text_of(&String::from_utf8(b).unwrap(), "cancel"), Some("1"));
    let (_, b) = host.https(
        me,
        &format!("/resume?{Q}&rikey=FFEEDDCCBBAA99887766554433221100&rikeyid=99"),
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
    let id = list.split_whitespace().next().unwrap().to_string();
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
    std::fs::write(
        dir.path().join("apps.toml"),
        "[[app]]\nid = 5\ntitle = \"Short game\"\ncommand = [\"sleep\", \"1\"]\n",
    )
    .unwrap();
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
fn wrong_pins_fail_and_five_lock_pairing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (me, _) = clients();
    let host = Host::start(dir.path());
    // The client notices the wrong PIN itself.
    let e = pair(&host, me, "1111", "2222", true).unwrap_err();
    assert!(e.contains("wrong PIN"), "{e}");
    host.http(&format!("/unpair?{Q}"));
    // A client that ignores it is refused by the host: paired=0, nothing stored.
    for i in 0..5 {
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
