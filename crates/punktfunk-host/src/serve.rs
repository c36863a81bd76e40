//! `punktfunk-host serve`: the host's front door.
//!
//! Probes what the machine offers once ([`HostCaps`]), then serves punktfunk/1 on QUIC and,
//! when asked, GameStream; both hand their sessions to the same [`Registry`] (one limit for
//! all) and build them as protocol-neutral [`Session`]s from a resolved plan.
//!
//! punktfunk/1: QUIC connections are accepted back to back, the sans-IO handshake runs on the
//! control stream under a deadline, then the session's plan is resolved, its session started,
//! and the control messages (keyframe requests, reconfiguration, clock probes, receiver stats,
//! Bye) and input datagrams are served until either side ends it. On SIGINT/SIGTERM every
//! session is told with a Bye (shutdown) and the host exits once they have ended.

use crate::caps::HostCaps;
use crate::dataplane::{DataPlane, Destination};
use crate::plan::{self, StreamRequest};
use crate::session::registry::{Protocol, Registry};
use crate::session::video::{
    thread_cpu_us, EncodeSettings, Encoded, FrameSink, SinkTimes, VideoError,
};
use crate::session::{self, Counters, HostContext, Session, Sinks};
use anyhow::{Context, Result};
use punktfunk_core::control::{ByeReason, Codec, HostAction, HostControl, Message, Mode, Welcome};
use punktfunk_core::crypto::{packet_key, CipherSuite, Opener};
use punktfunk_core::fec::FecPolicy;
use punktfunk_core::handshake::{HostHandshake, HostPolicy};
use punktfunk_core::packetizer::{
    FrameMeta, PacketBatch, PacketizerConfig, STREAM_MIN_DATA_SHARDS, STREAM_MIN_SHARD_LEN,
};
use punktfunk_core::session::SendSession;
use punktfunk_net::UdpSocket;
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
    /// Desktop backend preferences.
    pub desktop: crate::plan::DesktopPrefs,
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
    /// Largest mode served (serverinfo lists display modes up to it).
    pub max_mode: Mode,
}

/// `ServerCodecModeSupport` bits for the codecs whose encoders opened at start.
pub fn codec_modes(caps: &HostCaps) -> u32 {
    use crate::gamestream::nvhttp::scm;
    [
        (Codec::H264, scm::H264),
        (Codec::HEVC, scm::HEVC),
        (Codec::AV1, scm::AV1_MAIN8),
    ]
    .into_iter()
    .filter(|(c, _)| caps.encoder(*c).is_some())
    .fold(0, |bits, (_, b)| bits | b)
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
    ctx: &Arc<HostContext>,
    o: &GameStreamOptions,
    identity: &Identity,
    bind: std::net::IpAddr,
) -> Result<crate::gamestream::GameStream> {
    let uuid = punktfunk_quic::identity::load_or_create_uuid(&cfg.config_dir.join("host"))?;
    let codec_modes = codec_modes(&ctx.caps);
    let gs = crate::gamestream::GameStream::start(
        crate::gamestream::GameStreamConfig {
            config_dir: cfg.config_dir.clone(),
            bind,
            base_port: o.base_port,
            hostname: o.hostname.clone(),
            codec_modes,
            max_mode: o.max_mode,
            ctx: ctx.clone(),
        },
        identity,
        uuid,
    )
    .await?;
    start_gamestream_streams(&gs, ctx, o, codec_modes, bind).await?;
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
    ctx: &Arc<HostContext>,
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
        ctx.clone(),
        o.aids,
    )?;
    gs.attach_streams(streams.clone());
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
        input_caps(ctx),
    );
    Ok(())
}

/// What the injector a stream would get can deliver (no injector usable: nothing).
fn input_caps(ctx: &HostContext) -> punktfunk_desktop::InjectCaps {
    use punktfunk_desktop::inject;
    inject::resolve(&ctx.caps.env, &ctx.prefs.input)
        .map(|c| inject::capabilities(c.backend))
        .unwrap_or_default()
}

/// Fills `buf` from the system's secure random source.
fn fill_random(buf: &mut [u8]) {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .expect("the system random source works");
}

/// Resolves when the host is asked to stop (SIGINT or SIGTERM).
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the host");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Runs the listener until `session_limit` sessions have ended, or until SIGINT/SIGTERM.
pub async fn serve(cfg: ServeConfig) -> Result<()> {
    let (identity, created) = Identity::load_or_create(&cfg.config_dir.join("host"))
        .context("loading the host identity")?;
    if created {
        tracing::info!(dir = %cfg.config_dir.display(), "created a new host identity");
    }
    let fingerprint = identity.fingerprint();
    tracing::info!(%fingerprint, "host certificate fingerprint (clients pin this with --pin)");
    let caps = tokio::task::spawn_blocking({
        let hw = cfg.prefer_hardware;
        move || HostCaps::probe(punktfunk_desktop::DesktopEnv::from_env(), hw)
    })
    .await?;
    let offered = caps.available(&cfg.codecs);
    if offered.is_empty() {
        anyhow::bail!(
            "none of the codecs offered ({}) has an encoder that opens on this machine (see `punktfunk-host doctor`)",
            cfg.codecs.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
        );
    }
    tracing::info!(
        codecs = %offered.iter().map(|c| c.name()).collect::<Vec<_>>().join(","),
        "punktfunk/1 offers the codecs whose encoder opens"
    );
    let ctx = Arc::new(HostContext {
        caps,
        prefs: cfg.desktop.clone(),
        registry: Registry::new(cfg.max_sessions),
        prefer_hardware: cfg.prefer_hardware,
        stats_json: cfg.stats_json.clone(),
        epoch: Instant::now(),
    });
    let endpoint = server_endpoint(cfg.listen, &identity).context("binding the QUIC endpoint")?;
    let listen = endpoint.local_addr()?;
    let gamestream = match &cfg.gamestream {
        Some(o) => Some(start_gamestream(&cfg, &ctx, o, &identity, listen.ip()).await?),
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

    // Sessions that got past the QUIC handshake count towards `session_limit`; a client
    // refused by TLS (wrong pin) does not.
    let established = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let cfg = Arc::new(cfg);
    let offered = Arc::new(offered);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut interrupted = false;
    loop {
        if cfg
            .session_limit
            .is_some_and(|n| established.load(Ordering::SeqCst) >= n)
        {
            break;
        }
        let incoming = tokio::select! {
            i = endpoint.accept() => match i { Some(i) => i, None => break },
            _ = &mut signal => { interrupted = true; break }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let remote = incoming.remote_address();
        let (cfg, ctx, data, established, offered, stop) = (
            cfg.clone(),
            ctx.clone(),
            data.clone(),
            established.clone(),
            offered.clone(),
            stop_rx.clone(),
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
            if let Err(e) = connection(conn.clone(), &cfg, &ctx, &offered, &data, stop).await {
                tracing::warn!(%remote, error = %e, "session ended with an error");
            }
            conn.close(0u32.into(), b"bye");
        });
    }
    // Tell every punktfunk/1 session (each sends its client a Bye), end GameStream's stream
    // and app, then wait for the sessions to finish tearing down.
    let _ = stop_tx.send(true);
    if let Some(gs) = &gamestream {
        let gs = gs.clone();
        let why = if interrupted {
            "the host is shutting down"
        } else {
            "the host is done"
        };
        let _ = tokio::task::spawn_blocking(move || gs.shutdown(why)).await;
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("sessions did not end within 10 s; exiting anyway");
    }
    endpoint.close(0u32.into(), b"shutdown");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    if gamestream.is_some() {
        let _ = std::fs::remove_file(crate::control::socket_path(&cfg.config_dir));
    }
    tracing::info!("stopped");
    Ok(())
}

/// The host's policy for punktfunk/1 handshakes (and mode changes).
fn policy(cfg: &ServeConfig, offered: &[Codec], data: &DataPlane) -> HostPolicy {
    HostPolicy {
        codecs: offered.to_vec(),
        max_mode: cfg.max_mode,
        default_bitrate_kbps: cfg.default_bitrate_kbps,
        bitrate_range_kbps: cfg.bitrate_range_kbps,
        default_fec_percent: cfg.fec_percent,
        fec_parity_range: (2, 1024),
        shard_len: cfg.shard_len,
        suite: cfg.suite,
        data_port: data.port(),
    }
}

async fn connection(
    conn: punktfunk_quic::quinn::Connection,
    cfg: &ServeConfig,
    ctx: &Arc<HostContext>,
    offered: &[Codec],
    data: &DataPlane,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let remote = conn.remote_address();
    let ticket = ctx
        .registry
        .admit(Protocol::Punktfunk1, &remote.to_string());
    let mut cs = tokio::time::timeout(cfg.handshake_timeout, ControlStream::accept(&conn))
        .await
        .context("client opened no control stream in time")??;
    let mut hs = HostHandshake::new(policy(cfg, offered, data));
    if let Err(busy) = &ticket {
        hs.refuse(ByeReason::BUSY, &busy.to_string());
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
    let ticket = ticket.expect("a refused handshake never completes");
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
    let started = start_session(ctx, &welcome, &hello.client_name, dest, data.socket());
    let session = match started {
        Ok(s) => Arc::new(s),
        Err(e) => {
            data.unregister(welcome.session_id);
            let (reason, message) = match &e {
                StartError::Plan(r) => (
                    ByeReason::UNSUPPORTED,
                    format!("cannot serve this stream: {r}"),
                ),
                StartError::Session(e) => (ByeReason::INTERNAL, format!("cannot start video: {e}")),
            };
            let _ = cs.send(&Message::Bye { reason, message }).await;
            anyhow::bail!("{e}");
        }
    };
    session.register(ticket);
    let hc = HostControl::new(&welcome, hs.policy().clone(), ctx.epoch, Instant::now());
    let result = control_loop(&conn, &mut cs, &session, hc, &mut stop).await;
    data.unregister(welcome.session_id);
    let stats = session.stats();
    drop(session);
    stats.log_end(match &result {
        Ok(r) => r.as_str(),
        Err(_) => "error",
    });

    if let Some(path) = &ctx.stats_json {
        session::write_stats_json(path, &stats);
    }
    result.map(|_| ())
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("{0}")]
    Plan(#[from] plan::Refusal),
    #[error("{0}")]
    Session(#[from] session::SessionError),
}

/// Resolves the plan of a punktfunk/1 stream and starts its session.
fn start_session(
    ctx: &HostContext,
    w: &Welcome,
    client: &str,
    dest: Destination,
    sock: Arc<UdpSocket>,
) -> Result<Session, StartError> {
    let request = StreamRequest {
        protocol: Protocol::Punktfunk1,
        client: client.to_string(),
        session: format!("{:016x}", w.session_id),
        mode: w.mode,
        codec: w.codec,
        bitrate_kbps: w.bitrate_kbps,
        colour: punktfunk_media::Colour::default(),
        slices: 1,
        audio: None,
        app: None,
    };
    let plan = plan::resolve(request, &ctx.caps, &ctx.prefs)?;
    plan.log();
    let parts = session::open_parts(&plan, &ctx.caps.env, None, ctx.epoch)?;
    let sink = DataPlaneSink::new(w, sock, dest.clone()).map_err(session::SessionError::Video)?;
    let settings = EncodeSettings {
        codec: w.codec,
        prefer_hardware: ctx.prefer_hardware,
        slices: 1,
        colour: punktfunk_media::Colour::default(),
        epoch: ctx.epoch,
        min_interval: plan.min_frame_interval,
    };
    Ok(Session::start(
        plan,
        parts,
        Sinks {
            video: Box::new(sink),
            dest,
            audio: None,
        },
        settings,
        Arc::new(Counters::default()),
    )?)
}

/// Serves one established session: a thin driver around the sans-IO [`HostControl`], which
/// decides everything (mode changes go through the same policy as the handshake). The `Ok`
/// value says how it ended.
async fn control_loop(
    conn: &punktfunk_quic::quinn::Connection,
    cs: &mut ControlStream,
    session: &Session,
    mut hc: HostControl,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<String> {
    let mut reply: Option<tokio::sync::oneshot::Receiver<Result<(u32, u32), VideoError>>> = None;
    let mut watch = tokio::time::interval(Duration::from_millis(250));
    let end = 'session: loop {
        while let Some(action) = hc.poll_action() {
            match action {
                HostAction::Send(m) => cs.send(&m).await?,
                HostAction::Keyframe { frame } => {
                    tracing::debug!(frame, "keyframe requested");
                    session.keyframe();
                }
                HostAction::Reconfigure { mode, bitrate_kbps } => {
                    reply = Some(session.reconfigure(mode, bitrate_kbps));
                }
                HostAction::Input(events) => {
                    events.into_iter().for_each(|e| session.input().inject(e))
                }
                HostAction::End(end) => break 'session end,
            }
        }
        let timer = hc.poll_timeout();
        let sleep = async move {
            match timer {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            m = cs.recv() => match m {
                Ok(Some(m)) => hc.handle_message(Instant::now(), m),
                Ok(None) => hc.handle_closed(Instant::now()),
                Err(punktfunk_quic::TransportError::Malformed(e)) => hc.handle_malformed(Instant::now(), &e.to_string()),
                Err(e) => return Err(e.into()),
            },
            d = conn.read_datagram() => hc.handle_datagram(Instant::now(), &d?),
            r = async { reply.as_mut().expect("guarded").await }, if reply.is_some() => {
                reply = None;
                let now = Instant::now();
                let _ = match r {
                    Ok(Ok((first, rate))) => {
                        tracing::info!(mode = %hc.reconfigure_in_flight().map_or_else(String::new, |a| a.mode.to_string()), first_frame = first, "reconfigured");
                        hc.handle_reconfigured(now, first, rate)
                    }
                    Ok(Err(e)) => hc.handle_reconfigure_failed(now, &e.to_string()),
                    Err(_) => hc.handle_reconfigure_failed(now, "the pipeline stopped"),
                };
            }
            _ = sleep => hc.handle_timeout(Instant::now()),
            _ = watch.tick() => {
                if let Some(e) = session.failure() {
                    hc.handle_pipeline_failed(Instant::now(), &e);
                }
            }
            _ = stop.changed() => hc.shutdown(Instant::now(), ByeReason::SHUTDOWN, "the host is shutting down"),
        }
    };
    let st = hc.stats();
    let c = session.counters();
    c.add("control_messages", st.messages);
    c.add("keyframe_requests", st.keyframe_requests);
    c.add("clock_probes", st.clock_probes);
    c.add("reconfigures", st.reconfigures_done);
    c.add("input_datagrams", st.input_datagrams);
    c.add("input_malformed", st.input_malformed);
    let how = format!("{} ended it: {}", end.by, end.message);
    match end.outcome {
        Ok(()) => Ok(how),
        Err(e) => Err(anyhow::anyhow!("{how} ({e})")),
    }
}

/// punktfunk/1's data plane: the core's packetizer, FEC and sealing, then one batched send.
pub struct DataPlaneSink {
    session: SendSession,
    batch: PacketBatch,
    sock: Arc<UdpSocket>,
    dest: Destination,
}

impl DataPlaneSink {
    /// A sink for the data plane `welcome` agreed on, sending from `sock` to `dest` once set.
    pub fn new(
        w: &Welcome,
        sock: Arc<UdpSocket>,
        dest: Destination,
    ) -> Result<DataPlaneSink, VideoError> {
        let key = packet_key(w.suite, &w.host_to_client.key, w.host_to_client.salt)
            .map_err(|e| VideoError::Send(e.to_string()))?;
        let pcfg = PacketizerConfig {
            max_shard_len: w.shard_len,
            fec: FecPolicy {
                percent: w.fec_percent,
                min_parity: w.fec_min_parity,
                max_parity: w.fec_max_parity,
            },
            min_data_shards: if w.fec_percent > 0 {
                STREAM_MIN_DATA_SHARDS
            } else {
                1
            },
            min_shard_len: STREAM_MIN_SHARD_LEN,
            ..PacketizerConfig::default()
        };
        Ok(DataPlaneSink {
            session: SendSession::new(pcfg, key),
            batch: PacketBatch::new(),
            sock,
            dest,
        })
    }
}

impl FrameSink for DataPlaneSink {
    fn deliver(&mut self, f: Encoded, times: &mut SinkTimes) -> Result<bool, VideoError> {
        let Some(to) = *crate::lock(&self.dest) else {
            return Ok(true);
        };
        let t = Instant::now();
        let cpu = thread_cpu_us();
        self.session
            .send_frame(
                &f.data,
                FrameMeta {
                    timestamp_us: f.capture_us,
                    keyframe: f.keyframe,
                },
                &mut self.batch,
            )
            .map_err(|e| VideoError::Send(e.to_string()))?;
        // A full socket buffer drops datagrams like a congested link would; FEC and keyframe
        // requests deal with it, so the error is not fatal.
        let _ = self
            .sock
            .send_batch(to, self.batch.as_bytes(), self.batch.segment_size());
        times.send_us = t.elapsed().as_micros() as u32;
        times.send_cpu_us = thread_cpu_us().saturating_sub(cpu) as u32;
        Ok(true)
    }
}
