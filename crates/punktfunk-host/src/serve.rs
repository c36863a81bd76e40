//! `punktfunk-host serve`: the persistent punktfunk/1 listener.
//!
//! Accepts QUIC connections back to back (at most `max_sessions` at once), runs the sans-IO
//! handshake on the control stream under a deadline, then starts the session's video pipeline
//! on native threads and serves its control messages (keyframe requests, reconfiguration,
//! clock probes, receiver stats, Bye) and input datagrams until either side ends it.

use crate::dataplane::DataPlane;
use crate::inject::{InputInjector, LogInjector};
use crate::pipeline::{Command, Pipeline, PipelineConfig};
use crate::stats::Histogram;
use anyhow::{Context, Result};
use punktfunk_core::control::{datagram, ByeReason, ClockReply, Codec, Message, Mode};
use punktfunk_core::crypto::{packet_key, CipherSuite, Opener};
use punktfunk_core::handshake::{HostHandshake, HostPolicy};
use punktfunk_core::input::InputEvent;
use punktfunk_quic::{server_endpoint, ControlStream, Identity};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything `serve` needs, resolved from flags once.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// Data-plane UDP address (port 0 = any free port).
    pub data: SocketAddr,
    /// Directory holding the host identity.
    pub config_dir: PathBuf,
    /// Most concurrent sessions.
    pub max_sessions: usize,
    /// Stop after this many sessions (None = forever).
    pub session_limit: Option<usize>,
    /// Time a client has to complete the handshake.
    pub handshake_timeout: Duration,
    /// Codecs offered, in the host's preference order.
    pub codecs: Vec<Codec>,
    /// Largest mode served.
    pub max_mode: Mode,
    /// Default and range of the video bitrate, kbit/s.
    pub default_bitrate_kbps: u32,
    /// Accepted bitrate range, kbit/s.
    pub bitrate_range_kbps: (u32, u32),
    /// Default FEC percentage.
    pub fec_percent: u16,
    /// Largest shard payload.
    pub shard_len: u16,
    /// Packet cipher.
    pub suite: CipherSuite,
    /// Try hardware encoders first.
    pub prefer_hardware: bool,
    /// Write each ended session's per-stage figures here as JSON.
    pub stats_json: Option<PathBuf>,
    /// Serve GameStream (Moonlight) clients too.
    pub gamestream: Option<GameStreamOptions>,
    /// Advertise the services over mDNS.
    pub mdns: bool,
}

/// GameStream settings of `serve`.
#[derive(Debug, Clone)]
pub struct GameStreamOptions {
    /// nvhttp HTTP port (the base of every GameStream port).
    pub base_port: u16,
    /// Name Moonlight shows.
    pub hostname: String,
    /// FEC percentage for GameStream video blocks.
    pub fec_percent: u32,
    /// Testing aid: drop these fractions of outgoing GameStream video and audio datagrams.
    pub aids: crate::gamestream::stream::TestAids,
}

/// `ServerCodecModeSupport` bits for the codecs whose encoders open on this machine (logged).
pub fn probe_codec_modes(prefer_hardware: bool) -> u32 {
    use crate::gamestream::nvhttp::scm;
    let mut bits = 0;
    for (codec, bit) in [
        (Codec::H264, scm::H264),
        (Codec::HEVC, scm::HEVC),
        (Codec::AV1, scm::AV1_MAIN8),
    ] {
        let cfg = punktfunk_media::EncoderConfig {
            codec,
            width: 320,
            height: 240,
            fps: 30,
            bitrate_kbps: 1000,
            prefer_hardware,
            slices: 1,
            colour: Default::default(),
        };
        match punktfunk_media::open_encoder(&cfg) {
            Ok(e) => {
                tracing::info!(
                    codec = codec.name(),
                    encoder = e.name(),
                    "GameStream: codec available"
                );
                bits |= bit;
            }
            Err(e) => {
                tracing::info!(codec = codec.name(), reason = %e, "GameStream: codec not offered")
            }
        }
    }
    bits
}

struct PinHandler(crate::gamestream::GameStream);

impl crate::control::Handler for PinHandler {
    fn pin(&self, pin: &str) -> Result<(), String> {
        self.0.submit_pin(pin)
    }
}

/// Starts the GameStream host, its control channel and (when the terminal is interactive) a
/// reader for PINs typed into it.
async fn start_gamestream(
    cfg: &ServeConfig,
    o: &GameStreamOptions,
    identity: &Identity,
    bind: std::net::IpAddr,
) -> Result<crate::gamestream::GameStream> {
    let uuid = punktfunk_quic::identity::load_or_create_uuid(&cfg.config_dir.join("host"))?;
    let codec_modes = tokio::task::spawn_blocking({
        let hw = cfg.prefer_hardware;
        move || probe_codec_modes(hw)
    })
    .await?;
    let gs = crate::gamestream::GameStream::start(
        crate::gamestream::GameStreamConfig {
            config_dir: cfg.config_dir.clone(),
            bind,
            base_port: o.base_port,
            hostname: o.hostname.clone(),
            codec_modes,
        },
        identity,
        uuid,
    )
    .await?;
    start_gamestream_streams(&gs, cfg, o, codec_modes, bind).await?;
    let sock = crate::control::start(&cfg.config_dir, Arc::new(PinHandler(gs.clone())))?;
    tracing::info!(socket = %sock.display(), "control channel ready (punktfunk-host pin NNNN)");
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(0) } == 1 {
        let g = gs.clone();
        std::thread::Builder::new()
            .name("pin-stdin".into())
            .spawn(move || {
                for line in std::io::stdin().lines() {
                    let Ok(line) = line else { break };
                    let pin = line.trim();
                    if pin.is_empty() {
                        continue;
                    }
                    match g.submit_pin(pin) {
                        Ok(()) => println!("PIN accepted"),
                        Err(e) => println!("{e}"),
                    }
                }
            })?;
    }
    Ok(gs)
}

/// Binds the GameStream streaming ports (RTSP, video, control, audio) and starts serving them.
async fn start_gamestream_streams(
    gs: &crate::gamestream::GameStream,
    cfg: &ServeConfig,
    o: &GameStreamOptions,
    codec_modes: u32,
    bind: std::net::IpAddr,
) -> Result<()> {
    use crate::gamestream::nvhttp::scm;
    use punktfunk_gamestream::ports;
    let port = |offset, what: &str| {
        ports::derive(o.base_port, offset)
            .with_context(|| format!("the base port leaves no room for {what}"))
    };
    let (video, control, audio, rtsp) = (
        port(ports::VIDEO_OFFSET, "video")?,
        port(ports::CONTROL_OFFSET, "control")?,
        port(ports::AUDIO_OFFSET, "audio")?,
        port(ports::RTSP_OFFSET, "RTSP")?,
    );
    let streams = crate::gamestream::stream::StreamHost::start(
        &crate::gamestream::stream::StreamPorts {
            video: (bind, video).into(),
            control: (bind, control).into(),
            audio: (bind, audio).into(),
        },
        gs.clone(),
        cfg.prefer_hardware,
        o.aids,
    )?;
    if o.aids.drop_video > 0.0 || o.aids.drop_audio > 0.0 {
        tracing::warn!(
            video = o.aids.drop_video,
            audio = o.aids.drop_audio,
            "GameStream: dropping video/audio datagrams on purpose (testing aid)"
        );
    }
    if o.aids.rumble_echo {
        tracing::warn!("GameStream: answering gamepad triggers with rumble (testing aid)");
    }
    let listener = tokio::net::TcpListener::bind((bind, rtsp))
        .await
        .with_context(|| format!("binding RTSP on {bind}:{rtsp}"))?;
    tracing::info!(
        port = rtsp,
        fec_percent = o.fec_percent,
        "GameStream RTSP listening"
    );
    crate::gamestream::rtsp::serve(
        listener,
        gs.clone(),
        streams,
        punktfunk_gamestream::plan::HostAbilities {
            hevc: codec_modes & scm::HEVC != 0,
            av1: codec_modes & scm::AV1_MAIN8 != 0,
            fec_percent: o.fec_percent,
        },
        crate::gamestream::rtsp::AdvertisedPorts {
            video,
            control,
            audio,
        },
    );
    Ok(())
}

/// CPU time (user + system) this process has used so far, µs.
fn process_cpu_us() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

fn stage_json(v: &Histogram) -> serde_json::Value {
    let ms = |p| f64::from(v.percentile(p)) / 1000.0;
    serde_json::json!({ "p50": ms(50.0), "p95": ms(95.0), "p99": ms(99.0) })
}

/// Fills `buf` from the system's secure random source.
fn fill_random(buf: &mut [u8]) {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .expect("the system random source works");
}

/// Runs the listener until `session_limit` sessions have ended (or forever).
pub async fn serve(cfg: ServeConfig) -> Result<()> {
    let (identity, created) = Identity::load_or_create(&cfg.config_dir.join("host"))
        .context("loading the host identity")?;
    if created {
        tracing::info!(dir = %cfg.config_dir.display(), "created a new host identity");
    }
    let fingerprint = identity.fingerprint();
    tracing::info!(%fingerprint, "host certificate fingerprint (clients pin this with --pin)");
    let endpoint = server_endpoint(cfg.listen, &identity).context("binding the QUIC endpoint")?;
    let listen = endpoint.local_addr()?;
    let _gamestream = match &cfg.gamestream {
        Some(o) => Some(start_gamestream(&cfg, o, &identity, listen.ip()).await?),
        None => None,
    };
    let _mdns = if cfg.mdns {
        let host = cfg
            .gamestream
            .as_ref()
            .map_or_else(|| "punktfunk".to_string(), |o| o.hostname.clone());
        let addrs: Vec<std::net::IpAddr> = if listen.ip().is_unspecified() {
            vec![]
        } else {
            vec![listen.ip()]
        };
        match crate::mdns::Advertiser::start(
            &host,
            &addrs,
            cfg.gamestream.as_ref().map(|o| o.base_port),
            Some((listen.port(), fingerprint.to_string())),
        ) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "mDNS advertisement unavailable; clients need the address");
                None
            }
        }
    } else {
        None
    };
    let data_addr = cfg.data;
    let data = Arc::new(
        DataPlane::bind(data_addr)
            .with_context(|| format!("binding the data plane on {data_addr}"))?,
    );
    // One line a script can wait for.
    println!(
        "punktfunk-host listening on {listen} (data {}), fingerprint {fingerprint}",
        data.port()
    );
    tracing::info!(%listen, data_port = data.port(), max_sessions = cfg.max_sessions, "listening");

    let active = Arc::new(AtomicUsize::new(0));
    let epoch = Instant::now();
    // Sessions that got past the QUIC handshake count towards `session_limit`; a client
    // refused by TLS (wrong pin) does not.
    let established = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let cfg = Arc::new(cfg);
    loop {
        if cfg
            .session_limit
            .is_some_and(|n| established.load(Ordering::SeqCst) >= n)
        {
            break;
        }
        let incoming = tokio::select! {
            i = endpoint.accept() => match i { Some(i) => i, None => break },
            _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted; shutting down"); break }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let remote = incoming.remote_address();
        let (cfg, data, active, established) = (
            cfg.clone(),
            data.clone(),
            active.clone(),
            established.clone(),
        );
        tasks.spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%remote, error = %e, "QUIC handshake failed");
                    return;
                }
            };
            established.fetch_add(1, Ordering::SeqCst);
            let busy = active.fetch_add(1, Ordering::SeqCst) >= cfg.max_sessions;
            if let Err(e) = session(conn.clone(), &cfg, &data, epoch, busy).await {
                tracing::warn!(%remote, error = %e, "session ended with an error");
            }
            active.fetch_sub(1, Ordering::SeqCst);
            conn.close(0u32.into(), b"bye");
        });
    }
    while tasks.join_next().await.is_some() {}
    endpoint.close(0u32.into(), b"shutdown");
    endpoint.wait_idle().await;
    Ok(())
}

async fn session(
    conn: punktfunk_quic::quinn::Connection,
    cfg: &ServeConfig,
    data: &DataPlane,
    epoch: Instant,
    busy: bool,
) -> Result<()> {
    let remote = conn.remote_address();
    let mut cs = tokio::time::timeout(cfg.handshake_timeout, ControlStream::accept(&conn))
        .await
        .context("client opened no control stream in time")??;
    let policy = HostPolicy {
        codecs: cfg.codecs.clone(),
        max_mode: cfg.max_mode,
        default_bitrate_kbps: cfg.default_bitrate_kbps,
        bitrate_range_kbps: cfg.bitrate_range_kbps,
        default_fec_percent: cfg.fec_percent,
        fec_parity_range: (2, 1024),
        shard_len: cfg.shard_len,
        suite: cfg.suite,
        data_port: data.port(),
    };
    let mut hs = HostHandshake::new(policy);
    if busy {
        hs.refuse(
            ByeReason::BUSY,
            &format!("the host is at its limit of {} sessions", cfg.max_sessions),
        );
    }
    let deadline = tokio::time::Instant::now() + cfg.handshake_timeout;
    let (welcome, hello) = loop {
        while let Some(m) = hs.poll_message() {
            cs.send(&m).await?;
        }
        if let Some(e) = hs.error() {
            anyhow::bail!("handshake with {remote} failed: {e}");
        }
        if let Some((w, h)) = hs.established() {
            break (w.clone(), h.clone());
        }
        match tokio::time::timeout_at(deadline, cs.recv()).await {
            Err(_) => {
                let _ = cs
                    .send(&Message::Bye {
                        reason: ByeReason::TIMEOUT,
                        message: "handshake took too long".into(),
                    })
                    .await;
                anyhow::bail!("handshake with {remote} timed out");
            }
            Ok(Ok(Some(m))) => hs.handle(m, &mut fill_random),
            Ok(Ok(None)) => {
                anyhow::bail!("{remote} closed the control stream during the handshake")
            }
            Ok(Err(punktfunk_quic::TransportError::Malformed(e))) => hs.malformed(&e.to_string()),
            Ok(Err(e)) => return Err(e.into()),
        }
    };
    tracing::info!(
        %remote, client = %hello.client_name, session = welcome.session_id, codec = %welcome.codec,
        mode = %welcome.mode, bitrate_kbps = welcome.bitrate_kbps, fec_percent = welcome.fec_percent,
        "session established"
    );

    let c2h = packet_key(
        welcome.suite,
        &welcome.client_to_host.key,
        welcome.client_to_host.salt,
    )?;
    let dest = data.register(welcome.session_id, Opener::new(c2h));
    let pcfg = PipelineConfig {
        welcome: welcome.clone(),
        prefer_hardware: cfg.prefer_hardware,
        epoch,
    };
    let mut pipeline = match Pipeline::start(pcfg, dest, data.socket()) {
        Ok(p) => p,
        Err(e) => {
            data.unregister(welcome.session_id);
            let _ = cs
                .send(&Message::Bye {
                    reason: ByeReason::INTERNAL,
                    message: format!("cannot start video: {e}"),
                })
                .await;
            anyhow::bail!("pipeline: {e}");
        }
    };

    let cpu_start = process_cpu_us();
    let mut injector: Box<dyn InputInjector> = Box::new(LogInjector::default());
    let mut input_events = 0u64;
    let result = loop {
        tokio::select! {
            m = cs.recv() => match m {
                Ok(Some(Message::RequestKeyframe { frame })) => {
                    tracing::debug!(frame, "keyframe requested");
                    pipeline.command(Command::Keyframe);
                }
                Ok(Some(Message::Reconfigure { mode, bitrate_kbps })) => {
                    if let Err(e) = mode.validate().map_err(|e| e.to_string()).and_then(|_| {
                        if mode.width > cfg.max_mode.width || mode.height > cfg.max_mode.height { Err(format!("{mode} exceeds {}", cfg.max_mode)) } else { Ok(()) }
                    }) {
                        let _ = cs.send(&Message::Bye { reason: ByeReason::UNSUPPORTED, message: format!("reconfigure refused: {e}") }).await;
                        break Err(anyhow::anyhow!("reconfigure refused: {e}"));
                    }
                    let rate = if bitrate_kbps == 0 { 0 } else { bitrate_kbps.clamp(cfg.bitrate_range_kbps.0, cfg.bitrate_range_kbps.1) };
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    pipeline.command(Command::Reconfigure { mode, bitrate_kbps: rate, reply: tx });
                    match rx.await {
                        Ok(Ok((first_frame, rate))) => {
                            tracing::info!(%mode, first_frame, "reconfigured");
                            cs.send(&Message::Reconfigured { mode, bitrate_kbps: rate, first_frame }).await?;
                        }
                        other => {
                            let e = match other { Ok(Err(e)) => e, _ => "the pipeline stopped".to_string() };
                            let _ = cs.send(&Message::Bye { reason: ByeReason::INTERNAL, message: format!("reconfigure failed: {e}") }).await;
                            break Err(anyhow::anyhow!("reconfigure failed: {e}"));
                        }
                    }
                }
                Ok(Some(Message::ClockProbe(p))) => {
                    let t1 = epoch.elapsed().as_micros() as u64;
                    let reply = ClockReply { id: p.id, t0_us: p.t0_us, t1_us: t1, t2_us: epoch.elapsed().as_micros() as u64 };
                    cs.send(&Message::ClockReply(reply)).await?;
                }
                Ok(Some(Message::Stats(s))) => tracing::debug!(?s, "receiver stats"),
                Ok(Some(Message::Bye { reason, message })) => {
                    tracing::info!(%reason, %message, "client ended the session");
                    break Ok(());
                }
                Ok(Some(Message::Unknown { ty })) => tracing::debug!(ty, "ignoring unknown control message"),
                Ok(Some(other)) => {
                    let _ = cs.send(&Message::Bye { reason: ByeReason::PROTOCOL_ERROR, message: "unexpected message".into() }).await;
                    break Err(anyhow::anyhow!("unexpected control message {other:?}"));
                }
                Ok(None) => break Ok(()),
                Err(punktfunk_quic::TransportError::Malformed(e)) => {
                    let _ = cs.send(&Message::Bye { reason: ByeReason::PROTOCOL_ERROR, message: e.to_string() }).await;
                    break Err(anyhow::anyhow!("malformed control message: {e}"));
                }
                Err(e) => break Err(e.into()),
            },
            d = conn.read_datagram() => match d {
                Ok(bytes) if bytes.first() == Some(&datagram::INPUT) => match InputEvent::decode_batch(&bytes[1..]) {
                    Ok(events) => {
                        input_events += events.len() as u64;
                        events.iter().for_each(|e| injector.inject(e));
                    }
                    Err(e) => tracing::debug!(error = %e, "dropping a malformed input datagram"),
                },
                Ok(_) => tracing::debug!("dropping a datagram with an unknown code"),
                Err(e) => break Err(e.into()),
            },
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if let Some(e) = pipeline.failure() {
                    let _ = cs.send(&Message::Bye { reason: ByeReason::INTERNAL, message: e.clone() }).await;
                    break Err(anyhow::anyhow!("pipeline failed: {e}"));
                }
            }
        }
    };
    pipeline.stop();
    data.unregister(welcome.session_id);
    let t = pipeline.times();
    let cpu_us = process_cpu_us().saturating_sub(cpu_start);
    if let Some(path) = &cfg.stats_json {
        let j = serde_json::json!({
            "session": welcome.session_id,
            "mode": welcome.mode.to_string(),
            "codec": welcome.codec.to_string(),
            "bitrate_kbps": welcome.bitrate_kbps,
            "frames": t.frames,
            "keyframes": t.keyframes,
            "bytes": t.bytes,
            "render_ms": stage_json(&t.render_us),
            "convert_ms": stage_json(&t.convert_us),
            "encode_ms": stage_json(&t.encode_us),
            "send_path_ms": stage_json(&t.send_us),
            "send_path_cpu_ms": stage_json(&t.send_cpu_us),
            "host_cpu_ms_per_frame": cpu_us as f64 / 1000.0 / t.frames.max(1) as f64,
        });
        if let Err(e) = std::fs::write(path, serde_json::to_vec_pretty(&j).unwrap_or_default()) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the stats file");
        }
    }
    tracing::info!(
        session = welcome.session_id,
        frames = t.frames,
        keyframes = t.keyframes,
        bytes = t.bytes,
        input_events,
        injector = injector.name(),
        encode_p50_us = t.encode_us.percentile(50.0),
        send_p99_us = t.send_us.percentile(99.0),
        "session ended"
    );
    result
}
