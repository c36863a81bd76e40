//! The RTSP server (TCP, one request per connection) that sets up a GameStream session.
//!
//! A client runs OPTIONS, DESCRIBE, SETUP audio/video/control, ANNOUNCE and PLAY, each on its
//! own connection; the host answers and closes. When the launch asked for encrypted RTSP
//! (`rtspenc://`, `corever ≥ 1`) every request and reply is an AES-GCM envelope under the launch
//! key and a plaintext request is refused. SETUP hands out the ping payload and connect data
//! that tie the UDP pings and the ENet connection to this launch; ANNOUNCE resolves the session
//! plan and starts the session, or refuses with the reason.
//!
//! A connection has [`REQUEST_TIMEOUT`] for its request and the reply, and the server holds at
//! most [`Limits::TCP`] connections (in all and per address) at once. While a launch is live,
//! only the address it came from is answered (403 otherwise).

use super::nvhttp::GameStream;
use super::stream::StreamHost;
use crate::admission::{Admission, Limits};
use crate::logs::RateLimited;
use crate::net::Acceptor;
use punktfunk_core::text::Escaped;
use punktfunk_gamestream::plan::{HostAbilities, SessionPlan};
use punktfunk_gamestream::rtsp::{
    self, describe_body, enc, parse_request, Capabilities, Origin, Reply, Request, StreamConfig,
    ENVELOPE_HEADER, MAX_REQUEST,
};
use punktfunk_gamestream::setup::RtspSetup;
use ring::rand::SecureRandom;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a client has to send its whole request, and then to take the reply: a peer
/// dripping a byte at a time is cut off here, however slowly it drips.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Ports SETUP replies name.
#[derive(Debug, Clone, Copy)]
pub struct AdvertisedPorts {
    /// Video UDP.
    pub video: u16,
    /// Control (ENet) UDP.
    pub control: u16,
    /// Audio UDP.
    pub audio: u16,
}

struct Inner {
    gs: GameStream,
    streams: Arc<StreamHost>,
    abilities: HostAbilities,
    ports: AdvertisedPorts,
    feature_flags: u32,
    /// The session ids and reply numbering shared by the launch's RTSP connections.
    setup: Mutex<RtspSetup>,
    rng: ring::rand::SystemRandom,
}

impl Inner {
    fn setup(&self) -> std::sync::MutexGuard<'_, RtspSetup> {
        crate::lock(&self.setup)
    }
}

/// Serves RTSP on `listener` until the runtime ends.
pub fn serve(
    listener: TcpListener,
    gs: GameStream,
    streams: Arc<StreamHost>,
    abilities: HostAbilities,
    ports: AdvertisedPorts,
    input: punktfunk_desktop::InjectCaps,
) {
    let feature_flags = feature_flags(input);
    tracing::info!(
        feature_flags,
        ?input,
        "GameStream: input kinds advertised from what the injector delivers"
    );
    let inner = Arc::new(Inner {
        gs,
        streams,
        abilities,
        ports,
        feature_flags,
        setup: Mutex::new(RtspSetup::new()),
        rng: ring::rand::SystemRandom::new(),
    });
    let mut listener = Acceptor::new(listener, "RTSP");
    let gate = Admission::new(Limits::TCP);
    static REFUSED: RateLimited = RateLimited::new(Duration::from_secs(10));
    tokio::spawn(async move {
        loop {
            let (sock, peer) = listener.accept().await;
            let permit = match gate.admit(peer.ip()) {
                Ok(p) => p,
                Err(why) => {
                    if let Some(suppressed) = REFUSED.check(std::time::Instant::now()) {
                        tracing::warn!(%peer, %why, suppressed, "RTSP connection refused");
                    }
                    continue;
                }
            };
            let inner = inner.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
                match tokio::time::timeout_at(deadline, connection(&inner, sock, peer)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "RTSP connection ended with an error")
                    }
                    Err(_) => tracing::debug!(
                        %peer,
                        "RTSP request not complete within {} s: closed",
                        REQUEST_TIMEOUT.as_secs()
                    ),
                }
            });
        }
    });
}

/// DESCRIBE's `x-ss-general.featureFlags`: a kind of input is advertised only when the
/// injector can deliver it (a client told "touch supported" stops emulating the mouse).
pub fn feature_flags(input: punktfunk_desktop::InjectCaps) -> u32 {
    /// Pen and touch events.
    const PEN_TOUCH: u32 = 0x01;
    /// Controller touchpad and motion events.
    const CONTROLLER_TOUCH_MOTION: u32 = 0x02;
    let mut f = 0;
    if input.touch || input.pen {
        f |= PEN_TOUCH;
    }
    if input.gamepad_touchpad || input.gamepad_motion {
        f |= CONTROLLER_TOUCH_MOTION;
    }
    f
}

async fn connection(
    inner: &Arc<Inner>,
    mut sock: TcpStream,
    peer: std::net::SocketAddr,
) -> std::io::Result<()> {
    let launch = inner.gs.session();
    // The stream is set up by the client that launched it, from where it launched.
    if let Some(l) = &launch {
        if peer.ip().to_canonical() != l.client_addr.to_canonical() {
            static OTHER: RateLimited = RateLimited::new(Duration::from_secs(10));
            if let Some(suppressed) = OTHER.check(std::time::Instant::now()) {
                tracing::warn!(%peer, launched_from = %l.client_addr, suppressed,
                    "RTSP request from another address than the launch's refused");
            }
            return reply(inner, &mut sock, None, Reply::new(403, None)).await;
        }
    }
    let encrypted = launch.as_ref().is_some_and(|l| l.request.core_version >= 1);
    let key = launch.as_ref().map(|l| l.request.rikey);
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let req = loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST + ENVELOPE_HEADER {
            return reply(inner, &mut sock, None, Reply::new(413, None)).await;
        }
        let is_envelope = buf[0] & 0x80 != 0;
        if encrypted != is_envelope {
            // Plain request where the launch asked for encryption (or the reverse).
            tracing::warn!(
                encrypted,
                "RTSP request in the wrong encryption mode refused"
            );
            return reply(inner, &mut sock, None, Reply::new(400, None)).await;
        }
        let plain = if encrypted {
            let k = key.expect("encrypted implies a launch");
            match rtsp::open(&k, Origin::Client, &buf) {
                Ok(None) => continue,
                Ok(Some((pt, _, used))) if used == buf.len() => pt,
                Ok(Some(_)) => {
                    return reply(inner, &mut sock, None, Reply::new(400, None)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "encrypted RTSP request refused");
                    return Ok(());
                }
            }
        } else {
            buf.clone()
        };
        match parse_request(&plain) {
            Ok(Some(r)) => break r,
            Ok(None) if !encrypted => continue,
            Ok(None) => {
                return reply(
                    inner,
                    &mut sock,
                    key.filter(|_| encrypted),
                    Reply::new(400, None),
                )
                .await
            }
            Err(e) => {
                tracing::debug!(error = %e, "bad RTSP request");
                return reply(
                    inner,
                    &mut sock,
                    key.filter(|_| encrypted),
                    Reply::new(400, None),
                )
                .await;
            }
        }
    };
    tracing::debug!(method = %Escaped(&req.method), target = %Escaped(&req.target), "RTSP request");
    let out = handle(inner, &req).await;
    if out.status() != 200 {
        tracing::info!(method = %Escaped(&req.method), status = out.status(), "RTSP request refused");
    }
    reply(inner, &mut sock, key.filter(|_| encrypted), out).await
}

/// Writes the reply (sealed with the host's next sequence number when `key` is given) and
/// closes: one request per connection.
async fn reply(
    inner: &Inner,
    sock: &mut TcpStream,
    key: Option<[u8; 16]>,
    r: Reply,
) -> std::io::Result<()> {
    let bytes = match key {
        Some(k) => inner.setup().seal_reply(&k, &r.to_bytes()),
        None => r.to_bytes(),
    };
    sock.write_all(&bytes).await?;
    sock.shutdown().await
}

async fn handle(inner: &Arc<Inner>, req: &Request) -> Reply {
    let cseq = req.cseq();
    let Some(launch) = inner.gs.session() else {
        return Reply::new(503, cseq);
    };
    match req.method.as_str() {
        "OPTIONS" => Reply::new(200, cseq),
        "DESCRIBE" => {
            // Everything is offered; control v2 and audio are required, video encryption
            // too: the streams are then sealed with the key only the paired client knows.
            let caps = Capabilities {
                hevc: inner.abilities.hevc,
                av1: inner.abilities.av1,
                rfi: false,
                encryption_supported: enc::CONTROL_V2 | enc::VIDEO | enc::AUDIO,
                encryption_requested: enc::CONTROL_V2 | enc::VIDEO | enc::AUDIO,
                feature_flags: inner.feature_flags,
            };
            Reply::new(200, cseq).body(describe_body(&caps))
        }
        "SETUP" => {
            let mut fill = |b: &mut [u8]| inner.rng.fill(b).expect("system randomness");
            let ids = inner
                .setup()
                .setup(&launch.request.rikey, &mut fill)
                .clone();
            let r =
                Reply::new(200, cseq).header("Session", format!("{};timeout = 90", ids.session_id));
            let payload = String::from_utf8_lossy(&ids.ping_payload).into_owned();
            match req.stream_id() {
                Some("audio") => r
                    .header("Transport", format!("server_port={}", inner.ports.audio))
                    .header("X-SS-Ping-Payload", payload),
                Some("video") => r
                    .header("Transport", format!("server_port={}", inner.ports.video))
                    .header("X-SS-Ping-Payload", payload),
                Some("control") => r
                    .header("Transport", format!("server_port={}", inner.ports.control))
                    .header("X-SS-Connect-Data", ids.connect_data),
                _ => Reply::new(404, cseq),
            }
        }
        "ANNOUNCE" => {
            let ids = match inner.setup().announce(&launch.request.rikey) {
                Ok(ids) => ids.clone(),
                Err(e) => {
                    tracing::warn!(error = %e, "ANNOUNCE refused");
                    return Reply::new(400, cseq);
                }
            };
            let cfg = match StreamConfig::from_announce(&req.body) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "ANNOUNCE refused");
                    return Reply::new(400, cseq);
                }
            };
            let hq_audio = req.header("Host").is_some_and(|h| !h.contains("0.0.0.0"));
            let plan = match SessionPlan::resolve(&cfg, &inner.abilities, hq_audio) {
                Ok(p) => p,
                Err(r) => {
                    tracing::warn!(status = r.status, reason = %r.reason, "stream request refused");
                    return Reply::new(r.status, cseq);
                }
            };
            let streams = inner.streams.clone();
            let gs = inner.gs.clone();
            let key = launch.request.rikey;
            let key_id = launch.request.rikey_id as u32;
            let started = tokio::task::spawn_blocking(move || {
                streams.start_session(&gs, plan, ids, key, key_id)
            })
            .await;
            match started {
                Ok(Ok(_)) => Reply::new(200, cseq),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot start the stream");
                    Reply::new(500, cseq)
                }
                Err(_) => Reply::new(500, cseq),
            }
        }
        "PLAY" => Reply::new(200, cseq),
        other => {
            tracing::debug!(method = %Escaped(other), "RTSP method not implemented");
            Reply::new(501, cseq)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_desktop::InjectCaps;

    #[test]
    fn feature_flags_follow_what_the_injector_delivers() {
        assert_eq!(feature_flags(InjectCaps::default()), 0);
        let touch = InjectCaps {
            touch: true,
            ..Default::default()
        };
        assert_eq!(feature_flags(touch), 1);
        let motion = InjectCaps {
            gamepad_motion: true,
            ..Default::default()
        };
        assert_eq!(feature_flags(motion), 2);
        let log = punktfunk_desktop::inject::capabilities(punktfunk_desktop::InjectorBackend::Log);
        assert_eq!(feature_flags(log), 1);
    }
}
