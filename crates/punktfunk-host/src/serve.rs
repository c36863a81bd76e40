//! `punktfunk-host serve`: the host's front door.
//!
//! Probes what the machine offers once ([`HostCaps`]), then serves punktfunk/1 on QUIC
//! ([`crate::proto::punktfunk1`]) and, when asked, GameStream ([`crate::proto::gamestream`]);
//! both hand their sessions to the same [`Registry`] (one limit for all) and build them as
//! protocol-neutral sessions from a resolved plan. On SIGINT/SIGTERM every client is told the
//! stream is ending (punktfunk/1 Bye, GameStream termination), apps the host started are ended,
//! the control socket is removed, and the host exits.

use crate::admission::{Admission, Decision, Limits};
use crate::caps::HostCaps;
use crate::logs::RateLimited;
use crate::proto::punktfunk1::dataplane::DataPlane;
use crate::session::registry::{Protocol, Registry};
use crate::session::HostContext;
use anyhow::{Context, Result};
use punktfunk_core::control::{Codec, Mode};
use punktfunk_core::crypto::CipherSuite;
use punktfunk_quic::{server_endpoint, Identity};
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
    /// Serve punktfunk/1 clients that never paired.
    pub allow_unpaired: bool,
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
    /// Also stream to clients that cannot encrypt RTSP (a launch without `corever`).
    pub allow_legacy: bool,
    /// Testing aid: drop these fractions of outgoing GameStream video and audio datagrams.
    pub aids: crate::proto::gamestream::stream::TestAids,
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
    // A store that does not parse stops the host here, before any client could be told it is
    // not paired (which would look like every pairing was forgotten).
    let clients = crate::clients::ClientStore::new(&cfg.config_dir);
    clients
        .tidy()
        .context("the paired-client store is unusable; the host will not start without it")?;
    let paired = clients
        .list()
        .context("the paired-client store is unusable; the host will not start without it")?;
    let p1_paired = paired
        .iter()
        .filter(|c| c.protocol == Protocol::Punktfunk1)
        .count();
    if cfg.allow_unpaired {
        tracing::warn!(
            "punktfunk/1 serves unpaired clients (--allow-unpaired): anyone who can reach the \
             port can watch and control this desktop; use it on a trusted network only"
        );
    } else {
        tracing::info!(
            paired = p1_paired,
            "punktfunk/1 serves paired clients only (pair one with `punktfunk-host pair`)"
        );
    }
    let ctx = Arc::new(HostContext {
        caps,
        prefs: cfg.desktop.clone(),
        registry: Registry::new(cfg.max_sessions),
        prefer_hardware: cfg.prefer_hardware,
        stats_json: cfg.stats_json.clone(),
        epoch: Instant::now(),
        apps: Arc::new(crate::apps::Catalog::load(&cfg.config_dir)?),
        fingerprint,
        clients,
        pairing: Arc::new(crate::pairing::Pairing::new()),
    });
    let endpoint = server_endpoint(cfg.listen, &identity).context("binding the QUIC endpoint")?;
    let listen = endpoint.local_addr()?;
    let gamestream = match &cfg.gamestream {
        Some(o) => {
            Some(crate::proto::gamestream::start(&cfg, &ctx, o, &identity, listen.ip()).await?)
        }
        None => None,
    };
    let gs_pin = gamestream.clone().map(|gs| {
        Box::new(move |pin: &str| gs.submit_pin(pin).map_err(|e| e.to_string()))
            as crate::control::PinEntry
    });
    let sock = crate::control::start(
        &cfg.config_dir,
        crate::control::Commands {
            gamestream_pin: gs_pin,
            pairing: ctx.pairing.clone(),
        },
    )?;
    tracing::info!(socket = %sock.display(), "control channel ready (punktfunk-host pair, pin NNNN)");
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

    // Connections that asked for a session count towards `session_limit` once they ended
    // (also when refused as busy or failing later); a client refused by TLS (wrong pin), a
    // pairing connection and an unpaired client's refused Hello do not.
    let ended = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let cfg = Arc::new(cfg);
    let offered = Arc::new(offered);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut interrupted = false;
    let admission = Admission::new(Limits::QUIC);
    static REFUSED: RateLimited = RateLimited::new(Duration::from_secs(10));
    static FAILED: RateLimited = RateLimited::new(Duration::from_secs(10));
    loop {
        if cfg
            .session_limit
            .is_some_and(|n| ended.load(Ordering::SeqCst) >= n)
        {
            break;
        }
        let incoming = tokio::select! {
            i = endpoint.accept() => match i { Some(i) => i, None => break },
            _ = &mut signal => { interrupted = true; break }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let remote = incoming.remote_address();
        // The handshake deadline runs from the connection's first packet.
        let deadline = tokio::time::Instant::now() + cfg.handshake_timeout;
        let permit = match admission.decide(remote.ip(), incoming.remote_address_validated()) {
            Decision::Admit(p) => p,
            Decision::Retry if incoming.may_retry() => {
                let _ = incoming.retry();
                continue;
            }
            Decision::Retry => {
                incoming.refuse();
                continue;
            }
            Decision::Refuse(why) => {
                if let Some(suppressed) = REFUSED.check(Instant::now()) {
                    tracing::warn!(%remote, %why, suppressed, "refused a QUIC handshake");
                }
                incoming.refuse();
                continue;
            }
        };
        let (cfg, ctx, data, ended, offered, stop) = (
            cfg.clone(),
            ctx.clone(),
            data.clone(),
            ended.clone(),
            offered.clone(),
            stop_rx.clone(),
        );
        tasks.spawn(async move {
            let conn = match tokio::time::timeout_at(deadline, async { incoming.accept()?.await })
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    if let Some(suppressed) = FAILED.check(Instant::now()) {
                        tracing::warn!(%remote, error = %e, suppressed, "QUIC handshake failed");
                    }
                    return;
                }
                Err(_) => {
                    if let Some(suppressed) = FAILED.check(Instant::now()) {
                        tracing::warn!(%remote, suppressed, "QUIC handshake not finished within the handshake deadline");
                    }
                    return;
                }
            };
            let peer = crate::proto::punktfunk1::Peer { permit, deadline };
            if let Err(e) = crate::proto::punktfunk1::connection(
                conn.clone(),
                peer,
                &cfg,
                &ctx,
                &offered,
                &data,
                stop,
                &ended,
            )
            .await
            {
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
    let _ = std::fs::remove_file(crate::control::socket_path(&cfg.config_dir));
    tracing::info!("stopped");
    Ok(())
}
