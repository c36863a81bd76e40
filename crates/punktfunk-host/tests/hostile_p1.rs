//! A real `punktfunk-host serve` process against peers that do not play by the rules on its
//! punktfunk/1 port: idle connections, refusals of every kind, and a flood of QUIC handshakes.
//! Each test prints the figure it measured; bounds on time are loose (what the host must
//! guarantee, not how fast this machine is).
//!
//! Loopback has a whole /8: strangers connect from 127.0.0.2 and up, the owner from 127.0.0.1.

use punktfunk_core::control::{ByeReason, Codec, Hello, Message, Mode, PROTOCOL_VERSION};
use punktfunk_quic::{quinn, ControlStream, Fingerprint, Identity, Trust};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Host {
    child: Child,
    addr: SocketAddr,
    fingerprint: Fingerprint,
    log: Arc<Mutex<Vec<String>>>,
}

impl Host {
    fn start(dir: &Path, extra: &[&str]) -> Host {
        let mut child = Command::new(env!("CARGO_BIN_EXE_punktfunk-host"))
            .args(["--config-dir", dir.to_str().unwrap(), "--log", "info"])
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-port",
                "0",
                "--no-mdns",
                "--no-gamestream",
            ])
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
        // "punktfunk-host listening on ADDR (data N), fingerprint FP"
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(line.starts_with("punktfunk-host listening on"), "{line}");
        Host {
            addr: words[3].parse().unwrap(),
            fingerprint: words.last().unwrap().parse().unwrap(),
            child,
            log,
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn from(ip: &str) -> SocketAddr {
    format!("{ip}:0").parse().unwrap()
}

fn hello(version: u16, mode: Mode) -> Message {
    Message::Hello(Hello {
        version,
        mode,
        codecs: vec![Codec::H264],
        bitrate_kbps: 0,
        fec_percent: None,
        client_name: "hostile-test".into(),
        app: String::new(),
    })
}

fn small() -> Mode {
    Mode::new(320, 240, 30)
}

async fn connect(
    host: &Host,
    bind: &str,
) -> Result<punktfunk_quic::Connected, punktfunk_quic::TransportError> {
    let me = Identity::generate_client("hostile-test").unwrap();
    punktfunk_quic::connect_from(from(bind), host.addr, &Trust::Pinned(host.fingerprint), &me).await
}

/// Sends `first` on a new control stream and returns the host's answer.
async fn ask(conn: &quinn::Connection, first: &Message) -> (ControlStream, Message) {
    let mut cs = ControlStream::open(conn).await.unwrap();
    cs.send(first).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), cs.recv())
        .await
        .expect("the host answers within 10 s")
        .expect("the answer arrives intact")
        .expect("the host answers before closing the stream");
    (cs, m)
}

fn bye_reason(m: &Message) -> ByeReason {
    match m {
        Message::Bye { reason, .. } => *reason,
        other => panic!("expected a Bye, got {other:?}"),
    }
}

#[test]
fn idle_connections_hold_no_session_and_one_address_cannot_take_every_handshake_slot() {
    let dir = tempfile::tempdir().unwrap();
    // One session at most; strangers' connections that never say anything must not count.
    let host = Host::start(dir.path(), &["--max-sessions", "1", "--allow-unpaired"]);
    runtime().block_on(async {
        let mut idle = Vec::new();
        for _ in 0..8 {
            idle.push(connect(&host, "127.0.0.2").await.expect("a stranger's handshake"));
        }
        // A ninth from the same address is refused; another address still gets in.
        let ninth = connect(&host, "127.0.0.2").await;
        assert!(ninth.is_err(), "the ninth idle connection from one address was admitted");
        idle.push(connect(&host, "127.0.0.3").await.expect("another address"));
        // The owner is served although nine strangers sit on open connections.
        let owner = connect(&host, "127.0.0.1").await.expect("the owner connects");
        let (_cs, m) = ask(&owner.connection, &hello(PROTOCOL_VERSION, small())).await;
        assert!(
            matches!(m, Message::Welcome(_)),
            "the owner was not welcomed: {m:?}"
        );
        println!(
            "9 idle stranger connections open; a 9th from one address refused ({}); the owner welcomed",
            ninth.err().unwrap()
        );
        drop(idle);
    });
}

#[test]
fn every_refusal_arrives_as_a_bye_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(
        dir.path(),
        &[
            "--max-sessions",
            "1",
            "--allow-unpaired",
            "--handshake-timeout",
            "2",
        ],
    );
    let strict_dir = tempfile::tempdir().unwrap();
    let strict = Host::start(strict_dir.path(), &[]);
    runtime().block_on(async {
        // Another protocol version.
        let c = connect(&host, "127.0.0.1").await.unwrap();
        let (_, m) = ask(&c.connection, &hello(PROTOCOL_VERSION + 7, small())).await;
        assert_eq!(bye_reason(&m), ByeReason::VERSION_MISMATCH, "{m:?}");
        // A mode above the host's limit.
        let c = connect(&host, "127.0.0.1").await.unwrap();
        let (_, m) = ask(&c.connection, &hello(PROTOCOL_VERSION, Mode::new(7680, 4320, 240))).await;
        assert_eq!(bye_reason(&m), ByeReason::UNSUPPORTED, "{m:?}");
        // Not paired, on a host that requires pairing.
        let c = connect(&strict, "127.0.0.1").await.unwrap();
        let (_, m) = ask(&c.connection, &hello(PROTOCOL_VERSION, small())).await;
        assert_eq!(bye_reason(&m), ByeReason::PAIRING_REQUIRED, "{m:?}");

        // Too slow: a Hello but never a Start. The deadline counts from the connection's start.
        let t = Instant::now();
        let c = connect(&host, "127.0.0.1").await.unwrap();
        let (mut cs, m) = ask(&c.connection, &hello(PROTOCOL_VERSION, small())).await;
        let m = match m {
            Message::Welcome(_) => tokio::time::timeout(Duration::from_secs(10), cs.recv())
                .await
                .expect("the host speaks within 10 s")
                .unwrap()
                .expect("a message, not a closed stream"),
            other => panic!("expected a Welcome, got {other:?}"),
        };
        let slow = t.elapsed();
        assert_eq!(bye_reason(&m), ByeReason::TIMEOUT, "{m:?}");
        // Silent: connected, but never a stream. The close carries the reason.
        let t = Instant::now();
        let c = connect(&host, "127.0.0.1").await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(10), c.connection.closed())
            .await
            .expect("the host closes a silent connection");
        let silent = t.elapsed();
        match &closed {
            quinn::ConnectionError::ApplicationClosed(a) => {
                assert_eq!(u64::from(a.error_code), u64::from(ByeReason::TIMEOUT.0));
                assert_eq!(&a.reason[..], b"handshake took too long");
            }
            other => panic!("expected an application close, got {other:?}"),
        }
        println!(
            "handshake deadline 2 s: Bye(timeout) after {:.2} s without Start, close(timeout) after {:.2} s without a stream",
            slow.as_secs_f64(),
            silent.as_secs_f64()
        );
        for (what, d) in [("no Start", slow), ("no stream", silent)] {
            assert!(
                d >= Duration::from_millis(1500) && d < Duration::from_secs(5),
                "{what}: the 2 s deadline fired after {d:?}"
            );
        }
        // Busy: one session streams, a second client asks.
        let owner = connect(&host, "127.0.0.1").await.unwrap();
        let (mut ocs, m) = ask(&owner.connection, &hello(PROTOCOL_VERSION, small())).await;
        assert!(matches!(m, Message::Welcome(_)), "{m:?}");
        ocs.send(&Message::Start).await.unwrap();
        let c = connect(&host, "127.0.0.1").await.unwrap();
        let (_, m) = ask(&c.connection, &hello(PROTOCOL_VERSION, small())).await;
        assert_eq!(bye_reason(&m), ByeReason::BUSY, "{m:?}");
        drop(ocs);

    });
}

/// Forwards datagrams from quinn client endpoints to the host, each endpoint from its own
/// loopback address, and throws the host's answers away: every connection attempt stays a
/// half-open handshake on the host, as a flood from forged addresses would leave it.
struct BlackHole {
    front: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl BlackHole {
    fn start(to: SocketAddr, sources: usize) -> BlackHole {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        front
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = front.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut outs: std::collections::HashMap<SocketAddr, UdpSocket> = Default::default();
            let mut buf = [0u8; 2048];
            let mut forwarded = 0u64;
            while !s.load(Ordering::Relaxed) {
                let Ok((n, src)) = front.recv_from(&mut buf) else {
                    continue;
                };
                let next = outs.len();
                let out = outs.entry(src).or_insert_with(|| {
                    let ip = format!("127.0.1.{}", 10 + next % sources);
                    UdpSocket::bind(from(&ip)).unwrap()
                });
                if out.send_to(&buf[..n], to).is_ok() {
                    forwarded += 1;
                }
            }
            forwarded
        });
        BlackHole {
            front: addr,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// A quinn client configuration that accepts any server (the flood never gets that far).
fn flood_client_config() -> quinn::ClientConfig {
    #[derive(Debug)]
    struct Any;
    impl rustls::client::danger::ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(Any))
    .with_no_client_auth();
    tls.alpn_protocols = vec![punktfunk_quic::ALPN.to_vec()];
    quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ))
}

#[test]
fn a_handshake_flood_is_bounded_the_owner_is_served_and_memory_returns() {
    const RATE: u32 = 1000;
    const SECONDS: u64 = 6;
    const ENDPOINTS: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path(), &["--allow-unpaired"]);
    std::thread::sleep(Duration::from_millis(500));
    let rss_start = host.rss_kib();
    let mut hole = BlackHole::start(host.addr, ENDPOINTS);
    let rt = runtime();
    let (attempts, owner_served, rss_peak) = rt.block_on(async {
        let cfg = flood_client_config();
        let endpoints: Vec<quinn::Endpoint> = (0..ENDPOINTS)
            .map(|_| {
                let mut e = quinn::Endpoint::client(from("127.0.0.1")).unwrap();
                e.set_default_client_config(cfg.clone());
                e
            })
            .collect();
        let mut pending = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
        let t0 = Instant::now();
        let mut owner = None;
        let mut rss_peak = rss_start;
        let mut n = 0usize;
        while t0.elapsed() < Duration::from_secs(SECONDS) {
            tick.tick().await;
            if let Ok(c) = endpoints[n % ENDPOINTS].connect(hole.front, punktfunk_quic::SERVER_NAME)
            {
                pending.push(c);
            }
            n += 1;
            if n.is_multiple_of(500) {
                rss_peak = rss_peak.max(host.rss_kib());
            }
            // Halfway through, the owner connects (from its own address) and asks for a stream.
            if owner.is_none() && t0.elapsed() >= Duration::from_secs(SECONDS / 2) {
                let fp = host.fingerprint;
                let addr = host.addr;
                owner = Some(tokio::spawn(async move {
                    let me = Identity::generate_client("owner").unwrap();
                    let c = punktfunk_quic::connect_from(
                        from("127.0.0.1"),
                        addr,
                        &Trust::Pinned(fp),
                        &me,
                    )
                    .await?;
                    let (_cs, m) = ask(&c.connection, &hello(PROTOCOL_VERSION, small())).await;
                    Ok::<bool, punktfunk_quic::TransportError>(matches!(m, Message::Welcome(_)))
                }));
            }
        }
        let served = owner.unwrap().await.unwrap();
        rss_peak = rss_peak.max(host.rss_kib());
        drop(pending);
        (n, served, rss_peak)
    });
    let forwarded = hole.stop();
    // The half-open handshakes expire at the handshake deadline (5 s); then the host is idle.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !host.logged("a burst of connections is over") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss_end = host.rss_kib();
    println!(
        "flood: {attempts} handshakes started in {SECONDS} s ({forwarded} datagrams reached the host); \
         host RSS {} MiB at start, {} MiB peak, {} MiB after (start + {} MiB); owner served: {owner_served:?}",
        rss_start / 1024,
        rss_peak / 1024,
        rss_end / 1024,
        rss_end.saturating_sub(rss_start) / 1024
    );
    assert!(
        matches!(owner_served, Ok(true)),
        "the owner was not served during the flood: {owner_served:?}"
    );
    assert!(
        host.logged("a burst of connections is over"),
        "the host never saw the end of the burst"
    );
    assert!(
        rss_peak < rss_start + 64 * 1024,
        "the flood grew the host by {} MiB",
        (rss_peak - rss_start) / 1024
    );
    assert!(
        rss_end < rss_start + 16 * 1024,
        "the host kept {} MiB after the flood",
        rss_end.saturating_sub(rss_start) / 1024
    );
}
