//! The GameStream host: what stock Moonlight clients talk to.
//!
//! - [`nvhttp`]: HTTP and HTTPS servers for discovery info, pairing and app control;
//! - [`tls`]: the HTTPS configuration (client certificate required, judged by the store);
//! - paired clients live in the host's one store, [`crate::clients`];
//! - [`apps`]: the app catalog;
//! - [`rtsp`]: the RTSP server that sets up a streaming session;
//! - [`stream`]: the streaming session itself (video, audio, the ENet control stream, input).
//!
//! Trust: GameStream pairing authenticates the client by a 4-digit PIN typed on the host and
//! pins certificates on both sides afterwards, but the PIN exchange itself can be brute-forced
//! offline by someone who records it, and the protocol's streams use keys handed over inside
//! nvhttp. That is weaker than punktfunk/1, which is why it is off unless asked for
//! (`serve --gamestream`).

pub mod nvhttp;
pub mod rtsp;
pub mod screened;
pub mod stream;
pub mod tls;

pub use nvhttp::{GameStream, GameStreamConfig};

use crate::caps::HostCaps;
use crate::serve::{GameStreamOptions, ServeConfig};
use crate::session::HostContext;
use anyhow::{Context, Result};
use punktfunk_core::control::Codec;
use punktfunk_quic::Identity;
use std::sync::Arc;

/// `ServerCodecModeSupport` bits for the codecs whose encoders opened at start.
pub fn codec_modes(caps: &HostCaps) -> u32 {
    use crate::proto::gamestream::nvhttp::scm;
    [
        (Codec::H264, scm::H264),
        (Codec::HEVC, scm::HEVC),
        (Codec::AV1, scm::AV1_MAIN8),
    ]
    .into_iter()
    .filter(|(c, _)| caps.encoder(*c).is_some())
    .fold(0, |bits, (_, b)| bits | b)
}

/// Starts the GameStream host and (when the terminal is interactive) a reader for PINs typed
/// into it. The control channel's `pin` command reaches it through `serve`.
pub(crate) async fn start(
    cfg: &ServeConfig,
    ctx: &Arc<HostContext>,
    o: &GameStreamOptions,
    identity: &Identity,
    bind: std::net::IpAddr,
) -> Result<crate::proto::gamestream::GameStream> {
    let uuid = punktfunk_quic::identity::load_or_create_uuid(&cfg.config_dir.join("host"))?;
    let codec_modes = codec_modes(&ctx.caps);
    let gs = crate::proto::gamestream::GameStream::start(
        crate::proto::gamestream::GameStreamConfig {
            config_dir: cfg.config_dir.clone(),
            bind,
            base_port: o.base_port,
            hostname: o.hostname.clone(),
            codec_modes,
            max_mode: cfg.max_mode,
            allow_legacy: o.allow_legacy,
            ctx: ctx.clone(),
        },
        identity,
        uuid,
    )
    .await?;
    start_gamestream_streams(&gs, ctx, o, codec_modes, bind).await?;
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
    gs: &crate::proto::gamestream::GameStream,
    ctx: &Arc<HostContext>,
    o: &GameStreamOptions,
    codec_modes: u32,
    bind: std::net::IpAddr,
) -> Result<()> {
    use crate::proto::gamestream::nvhttp::scm;
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
    let streams = crate::proto::gamestream::stream::StreamHost::start(
        &crate::proto::gamestream::stream::StreamPorts {
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
    crate::proto::gamestream::rtsp::serve(
        listener,
        gs.clone(),
        streams,
        punktfunk_gamestream::plan::HostAbilities {
            hevc: codec_modes & scm::HEVC != 0,
            av1: codec_modes & scm::AV1_MAIN8 != 0,
            fec_percent: o.fec_percent,
        },
        crate::proto::gamestream::rtsp::AdvertisedPorts {
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
