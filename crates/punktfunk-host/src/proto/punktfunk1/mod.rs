//! The punktfunk/1 front-end: per connection, the sans-IO handshake on the control stream
//! under a deadline, then the session's plan, its [`Session`], and a thin driver around the
//! sans-IO [`HostControl`] serving control messages and input datagrams until either side ends
//! it.
//!
//! Trust: the client's certificate fingerprint (its key proven by the TLS handshake) decides.
//! A connection whose first message is `PairStart` runs the pairing ceremony ([`pair`]) and
//! nothing else; a `Hello` from a client that is not paired is refused before any handshake
//! state, session slot, stream or input exists (unless `allow_unpaired`); a paired client's
//! session ends when its pairing is removed.
//!
//! - [`dataplane`]: the shared data-plane UDP socket and its probe authentication.
//! - [`pair`]: the pairing ceremony's driver.

pub mod dataplane;
pub mod pair;

use crate::plan::{self, StreamRequest};
use crate::serve::ServeConfig;
use crate::session::app::{AppSession, OutputHandle};
use crate::session::registry::Protocol;
use crate::session::video::{
    thread_cpu_us, EncodeSettings, Encoded, FrameSink, SinkTimes, VideoError,
};
use crate::session::{self, Counters, HostContext, Session, Sinks};
use anyhow::{Context, Result};
use dataplane::{DataPlane, Destination};
use punktfunk_core::control::{ByeReason, Codec, Hello, HostAction, HostControl, Message, Welcome};
use punktfunk_core::crypto::{packet_key, Opener};
use punktfunk_core::fec::FecPolicy;
use punktfunk_core::handshake::{HostHandshake, HostPolicy};
use punktfunk_core::packetizer::{
    FrameMeta, PacketBatch, PacketizerConfig, STREAM_MIN_DATA_SHARDS, STREAM_MIN_SHARD_LEN,
};
use punktfunk_core::session::SendSession;
use punktfunk_desktop::vdisplay;
use punktfunk_net::UdpSocket;
use punktfunk_quic::ControlStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the host waits, after a session's last message, for the client to close the
/// connection.
const LINGER: Duration = Duration::from_secs(2);

/// What an unpaired client is told (its `punktfunk-client` names the host it was given).
pub const PAIRING_REQUIRED: &str = "this host requires pairing: run punktfunk-client pair HOST";

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

/// Tells a client that it missed the handshake's deadline.
async fn too_slow(cs: &mut ControlStream) {
    let _ = cs
        .send(&Message::Bye {
            reason: ByeReason::TIMEOUT,
            message: TOO_SLOW.into(),
        })
        .await;
}

const TOO_SLOW: &str = "handshake took too long";

/// A connection the admission gate let in: its place there (held until it is a session, a
/// pairing ceremony or over) and its handshake deadline, counted from its first packet.
pub(crate) struct Peer {
    /// The admission gate's permit.
    pub permit: crate::admission::Permit,
    /// When the handshake must be complete.
    pub deadline: tokio::time::Instant,
}

/// Serves one QUIC connection (handshake, session, control, teardown), then gives the client
/// a moment to read the host's last message before the connection is closed.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn connection(
    conn: punktfunk_quic::quinn::Connection,
    peer: Peer,
    cfg: &ServeConfig,
    ctx: &Arc<HostContext>,
    offered: &[Codec],
    data: &DataPlane,
    stop: tokio::sync::watch::Receiver<bool>,
    sessions: &std::sync::atomic::AtomicUsize,
) -> Result<()> {
    let r = serve_connection(conn.clone(), peer, cfg, ctx, offered, data, stop, sessions).await;
    // The client closes the connection once it has read the session's last message (a Bye:
    // shutdown, busy, a refused stream, a handshake timeout); closing first would discard it
    // while in flight or unread.
    let _ = tokio::time::timeout(LINGER, conn.closed()).await;
    r
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    conn: punktfunk_quic::quinn::Connection,
    peer: Peer,
    cfg: &ServeConfig,
    ctx: &Arc<HostContext>,
    offered: &[Codec],
    data: &DataPlane,
    mut stop: tokio::sync::watch::Receiver<bool>,
    sessions: &std::sync::atomic::AtomicUsize,
) -> Result<()> {
    let remote = conn.remote_address();
    let Peer { permit, deadline } = peer;
    // The TLS handshake proved the client holds this certificate's key (the host requires a
    // client certificate, so there always is one).
    let client =
        punktfunk_quic::peer_fingerprint(&conn).context("the client presented no certificate")?;
    let client_fp = client.to_string();
    let mut cs = match tokio::time::timeout_at(deadline, ControlStream::accept(&conn)).await {
        Ok(cs) => cs?,
        Err(_) => {
            // No stream to say it on: the connection's close carries the reason.
            conn.close(ByeReason::TIMEOUT.0.into(), TOO_SLOW.as_bytes());
            anyhow::bail!("{remote} opened no control stream in time");
        }
    };
    let first = match tokio::time::timeout_at(deadline, cs.recv()).await {
        Err(_) => {
            too_slow(&mut cs).await;
            anyhow::bail!("{remote} sent nothing in time");
        }
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => anyhow::bail!("{remote} closed the control stream before a message"),
        Ok(Err(punktfunk_quic::TransportError::Malformed(e))) => {
            let _ = cs
                .send(&Message::Bye {
                    reason: ByeReason::PROTOCOL_ERROR,
                    message: format!("malformed message: {e}"),
                })
                .await;
            anyhow::bail!("{remote} sent a malformed first message: {e}");
        }
        Ok(Err(e)) => return Err(e.into()),
    };
    // From here the connection is a pairing ceremony (bounded by the pairing gate) or a
    // client's session request: it leaves the admission gate.
    drop(permit);
    if let Message::PairStart(_) = first {
        return pair::ceremony(
            &mut cs,
            first,
            client,
            ctx.fingerprint,
            ctx,
            remote,
            &mut stop,
        )
        .await;
    }
    let paired = ctx
        .clients
        .find(Protocol::Punktfunk1, &client_fp)
        .map_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "cannot read the paired-client store; refusing");
            e
        });
    let paired = match paired {
        Ok(Some(c)) => Some(c),
        Ok(None) if cfg.allow_unpaired => None,
        Ok(None) | Err(_) => {
            tracing::warn!(%remote, client_fingerprint = %client_fp,
                "refused an unpaired punktfunk/1 client (pair it: punktfunk-host pair)");
            let _ = cs
                .send(&Message::Bye {
                    reason: ByeReason::PAIRING_REQUIRED,
                    message: PAIRING_REQUIRED.into(),
                })
                .await;
            return Ok(());
        }
    };
    // Counted when it ends, however it ends (the host's `--sessions` limit counts ended ones).
    struct Ended<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Ended<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let _ended = Ended(sessions);
    let ticket = ctx
        .registry
        .admit(Protocol::Punktfunk1, &remote.to_string());
    let mut hs = HostHandshake::new(policy(cfg, offered, data));
    if let Err(busy) = &ticket {
        hs.refuse(ByeReason::BUSY, &busy.to_string());
    } else {
        hs.handle(first, &mut crate::fill_random);
    }
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
                too_slow(&mut cs).await;
                anyhow::bail!("handshake with {remote} timed out");
            }
            Ok(Ok(Some(m))) => hs.handle(m, &mut crate::fill_random),
            Ok(Ok(None)) => {
                anyhow::bail!("{remote} closed the control stream during the handshake")
            }
            Ok(Err(punktfunk_quic::TransportError::Malformed(e))) => hs.malformed(&e.to_string()),
            Ok(Err(e)) => return Err(e.into()),
        }
    };
    let ticket = ticket.expect("a refused handshake never completes");
    // The client chose its name: from here on it is printed escaped (logs, plans, status).
    let hello = Hello {
        client_name: punktfunk_core::text::escaped(&hello.client_name),
        ..hello
    };
    tracing::info!(
        %remote, client = %hello.client_name, client_fingerprint = %client_fp, session = format!("{:016x}", welcome.session_id), codec = %welcome.codec,
        mode = %welcome.mode, bitrate_kbps = welcome.bitrate_kbps, fec_percent = welcome.fec_percent,
        "session established"
    );
    if paired.is_some() {
        let store = ctx.clients.clone();
        let fp = client_fp.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.touch(Protocol::Punktfunk1, &fp) {
                tracing::warn!(error = %format!("{e:#}"), "cannot record when the client was last seen");
            }
        });
    }

    let c2h = packet_key(
        welcome.suite,
        &welcome.client_to_host.key,
        welcome.client_to_host.salt,
    )?;
    let dest = data.register(welcome.session_id, Opener::new(c2h));
    let started = start_session(ctx, &welcome, &hello, dest, data.socket());
    let (session, app) = match started {
        Ok((s, app)) => (Arc::new(s), app),
        Err(e) => {
            data.unregister(welcome.session_id);
            let (reason, message) = match &e {
                StartError::Plan(r) => (
                    ByeReason::UNSUPPORTED,
                    format!("cannot serve this stream: {r}"),
                ),
                StartError::Session(e) => (ByeReason::INTERNAL, format!("cannot start video: {e}")),
                StartError::NoApp(_) => (ByeReason::UNSUPPORTED, e.to_string()),
                StartError::Display(_) | StartError::Launch(_) => {
                    (ByeReason::INTERNAL, e.to_string())
                }
            };
            let _ = cs.send(&Message::Bye { reason, message }).await;
            anyhow::bail!("{e}");
        }
    };
    session.register(ticket);
    let hc = HostControl::new(&welcome, hs.policy().clone(), ctx.epoch, Instant::now());
    // A paired client's session lasts as long as its pairing.
    let still_paired = || {
        paired.is_none() || !matches!(ctx.clients.find(Protocol::Punktfunk1, &client_fp), Ok(None))
    };
    let result = control_loop(
        &conn,
        &mut cs,
        &session,
        app.as_ref(),
        hc,
        &mut stop,
        &still_paired,
    )
    .await;
    data.unregister(welcome.session_id);
    let stats = session.stats();
    // The stream first, then the app, then (with the last handle) its output.
    drop(session);
    if let Some(mut a) = app {
        a.app.end();
    }
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
    #[error("the host has no app {0}")]
    NoApp(String),
    #[error("cannot create the app's output: {0}")]
    Display(String),
    #[error("cannot start the app: {0}")]
    Launch(#[from] session::app::LaunchError),
}

/// The app a punktfunk/1 stream runs, and whether it has exited by itself.
struct StreamApp {
    app: AppSession,
    exited: Arc<AtomicBool>,
}

/// Resolves the plan of a punktfunk/1 stream and starts its session, and the app the client
/// named on the stream's output.
fn start_session(
    ctx: &HostContext,
    w: &Welcome,
    hello: &Hello,
    dest: Destination,
    sock: Arc<UdpSocket>,
) -> Result<(Session, Option<StreamApp>), StartError> {
    let app = match hello.app.trim() {
        "" => None,
        name => Some(ctx.apps.find(name).cloned().ok_or_else(|| {
            StartError::NoApp(format!("{name:?} (it has {})", ctx.apps.titles()))
        })?),
    };
    let request = StreamRequest {
        protocol: Protocol::Punktfunk1,
        client: hello.client_name.clone(),
        session: format!("{:016x}", w.session_id),
        mode: w.mode,
        codec: w.codec,
        bitrate_kbps: w.bitrate_kbps,
        colour: punktfunk_media::Colour::default(),
        slices: 1,
        audio: None,
        app: app.as_ref().map(|a| a.title.clone()),
    };
    let plan = plan::resolve(request, &ctx.caps, &ctx.prefs)?;
    plan.log();
    // An app gets the output first and starts on it before capture does, so the stream opens
    // on the app's first pictures.
    let stream_app = match &app {
        None => None,
        Some(a) => {
            let mut display =
                vdisplay::open(plan.display.backend, &ctx.caps.env, &plan.display_options)
                    .map_err(|e| StartError::Display(e.to_string()))?;
            let output: OutputHandle = Arc::new(Mutex::new(
                display
                    .create(plan.request.mode)
                    .map_err(|e| StartError::Display(e.to_string()))?,
            ));
            let exited = Arc::new(AtomicBool::new(false));
            let flag = exited.clone();
            let app = AppSession::launch_with(
                &a.title,
                a.command.as_deref(),
                output,
                &session::app::host_env(ctx.epoch),
                Box::new(move |status| {
                    tracing::info!(%status, "the stream's app exited");
                    flag.store(true, Ordering::Relaxed);
                }),
            )?;
            Some(StreamApp { app, exited })
        }
    };
    let output = stream_app.as_ref().map(|a| a.app.output().clone());
    let parts = session::open_parts(&plan, &ctx.caps.env, output, ctx.epoch)?;
    let sink = DataPlaneSink::new(w, sock, dest.clone()).map_err(session::SessionError::Video)?;
    let settings = EncodeSettings {
        codec: w.codec,
        prefer_hardware: ctx.prefer_hardware,
        slices: 1,
        colour: punktfunk_media::Colour::default(),
        epoch: ctx.epoch,
        min_interval: plan.min_frame_interval,
    };
    let session = Session::start(
        plan,
        parts,
        Sinks {
            video: Box::new(sink),
            dest,
            audio: None,
        },
        settings,
        Arc::new(Counters::default()),
    )?;
    Ok((session, stream_app))
}

/// Serves one established session: a thin driver around the sans-IO [`HostControl`], which
/// decides everything (mode changes go through the same policy as the handshake). The `Ok`
/// value says how it ended.
async fn control_loop(
    conn: &punktfunk_quic::quinn::Connection,
    cs: &mut ControlStream,
    session: &Session,
    app: Option<&StreamApp>,
    mut hc: HostControl,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    still_paired: &(dyn Fn() -> bool + Sync),
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
                } else if !still_paired() {
                    tracing::warn!("the client's pairing was removed: ending its session");
                    hc.shutdown(Instant::now(), ByeReason::REVOKED, "the host's owner removed this client's pairing");
                } else if app.is_some_and(|a| a.exited.load(Ordering::Relaxed)) {
                    hc.shutdown(Instant::now(), ByeReason::NORMAL, "the app exited");
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
    let how = format!(
        "{} ended it: {}",
        end.by,
        punktfunk_core::text::Escaped(&end.message)
    );
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
