//! nvhttp: the HTTP (base port) and HTTPS (base − 5) servers of a GameStream host.
//!
//! One request per connection, as GameStream hosts do. Every reply is HTTP 200 with the status
//! inside the XML, except for requests that are not HTTP at all. Over HTTP only `/serverinfo`
//! (unpaired view) and the four pairing phases exist; over HTTPS a client whose certificate is
//! not in the paired-client store gets the 401 reply for every path.
//!
//! Pairing: phase 1 waits until the user types the PIN on the host (`punktfunk-host pin NNNN`
//! or the host's terminal). The policy (one pairing at a time, the PIN timeout, five wrong PINs
//! within a minute lock pairing for a minute) is [`PairingGate`]'s; this file only wakes the
//! waiting request and stores the paired certificate.

use crate::admission::{Admission, Limits};
use crate::apps::{self, Catalog};
use crate::clients::ClientStore;
use crate::logs::RateLimited;
use crate::net::Acceptor;
use crate::session::app::{AppSession, OutputHandle};
use anyhow::{Context, Result};
use punktfunk_core::text::{escaped, Escaped};
use punktfunk_gamestream::http::{self as gshttp, parse_head, Request, RequestError};
use punktfunk_gamestream::launch::{session_url, LaunchRequest};
use punktfunk_gamestream::pairing::{HostCredentials, Message};
use punktfunk_gamestream::pairing_gate::{GateStep, PairingGate, StepFailure, Ticket};
use punktfunk_gamestream::xml::{self, Reply};
use punktfunk_gamestream::{ports, APP_VERSION, GFE_VERSION};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// `ServerCodecModeSupport` bits.
pub mod scm {
    /// H.264.
    pub const H264: u32 = 0x0000_0001;
    /// HEVC Main.
    pub const HEVC: u32 = 0x0000_0100;
    /// AV1 Main 8-bit.
    pub const AV1_MAIN8: u32 = 0x0001_0000;
}

/// How long a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the GameStream side.
#[derive(Debug, Clone)]
pub struct GameStreamConfig {
    /// Config directory (identity, paired clients, apps).
    pub config_dir: PathBuf,
    /// Address to bind (its port is ignored; ports derive from `base_port`).
    pub bind: IpAddr,
    /// HTTP port; HTTPS is base − 5, RTSP base + 21 and so on.
    pub base_port: u16,
    /// Name clients show.
    pub hostname: String,
    /// `ServerCodecModeSupport` bits of the encoders that open here.
    pub codec_modes: u32,
    /// Largest mode served (serverinfo lists the display modes up to it).
    pub max_mode: punktfunk_core::control::Mode,
    /// Also launch for clients that cannot encrypt RTSP (no `corever`).
    pub allow_legacy: bool,
    /// What the host offers and how it chooses (outputs are created from it on `/launch`).
    pub ctx: Arc<crate::session::HostContext>,
}

/// The app session a launch created, for the streaming side to use.
#[derive(Debug, Clone)]
pub struct LaunchSession {
    /// The app.
    pub app_id: u32,
    /// What the client asked for (the latest `/launch` or `/resume`).
    pub request: LaunchRequest,
    /// Fingerprint of the client that launched.
    pub client: String,
    /// The client's name.
    pub client_name: String,
    /// The address the launch (or the latest resume) came from: RTSP, the ENet connection and
    /// the streams' pings are accepted from it only.
    pub client_addr: IpAddr,
    /// The app's title.
    pub app_title: String,
}

/// A launched app: what the client asked for and the app session (process and output).
struct RunningApp {
    launch: LaunchSession,
    app: AppSession,
    /// Tells this launch apart from a later one, for the exit callback.
    generation: u64,
}

struct State {
    pairing: PairingGate,
    /// Wakes the phase-1 request of this ceremony that waits for the PIN.
    pin_tx: Option<(Ticket, oneshot::Sender<()>)>,
    app: Option<RunningApp>,
    generation: u64,
}

struct Inner {
    cfg: GameStreamConfig,
    uuid: String,
    host: HostCredentials,
    store: ClientStore,
    apps: Arc<Catalog>,
    http_port: u16,
    https_port: u16,
    rtsp_port: u16,
    state: Mutex<State>,
    rng: ring::rand::SystemRandom,
    streams: Mutex<Option<Arc<super::stream::StreamHost>>>,
}

/// Ends a phase-1 ceremony whose request was dropped before it finished waiting (its client
/// went away).
struct AbandonOnDrop<'a> {
    gs: &'a GameStream,
    ticket: Option<Ticket>,
    name: String,
}

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket else { return };
        let mut st = self.gs.inner.lock();
        if st.pairing.abandon(Instant::now(), ticket) {
            st.pin_tx = None;
            tracing::warn!(client = %self.name, "the pairing client went away; pairing is free again");
        }
    }
}

/// Resolves once the peer has closed its side (or sent more than a request's worth after it):
/// nothing it sends after its request is read for anything else.
async fn gone<S: AsyncRead + Unpin>(sock: &mut S) {
    let mut buf = [0u8; 1024];
    let mut extra = 0usize;
    loop {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                extra += n;
                if extra > 64 << 10 {
                    return;
                }
            }
        }
    }
}

/// Why a PIN typed on the host did not reach a pairing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// The gate refused it (format, or nothing waiting).
    #[error(transparent)]
    Refused(#[from] punktfunk_gamestream::pairing_gate::PinRefused),
    /// The client that asked for it went away meanwhile.
    #[error("the pairing client went away")]
    ClientGone,
}

/// A running GameStream host (nvhttp).
#[derive(Clone)]
pub struct GameStream {
    inner: Arc<Inner>,
}

impl GameStream {
    /// Binds HTTP and HTTPS and serves them on the current tokio runtime.
    pub async fn start(
        cfg: GameStreamConfig,
        identity: &punktfunk_quic::Identity,
        uuid: String,
    ) -> Result<GameStream> {
        let host = HostCredentials::new(&identity.cert_der, &identity.key_der).context(
            "the host identity cannot serve GameStream (remove host/host-cert.der and host/host-key.der to create an RSA-2048 one)",
        )?;
        let tls = super::tls::server_config(&identity.cert_der, &identity.key_der)?;
        let https_port = ports::derive(cfg.base_port, ports::HTTPS_OFFSET)
            .context("the base port leaves no room for HTTPS (base − 5)")?;
        let rtsp_port = ports::derive(cfg.base_port, ports::RTSP_OFFSET)
            .context("the base port leaves no room for RTSP (base + 21)")?;
        let http = TcpListener::bind((cfg.bind, cfg.base_port))
            .await
            .with_context(|| format!("binding nvhttp on {}:{}", cfg.bind, cfg.base_port))?;
        let https = TcpListener::bind((cfg.bind, https_port))
            .await
            .with_context(|| format!("binding nvhttp (HTTPS) on {}:{https_port}", cfg.bind))?;
        let apps = cfg.ctx.apps.clone();
        tracing::info!(
            http = cfg.base_port,
            https = https_port,
            apps = apps.apps().len(),
            codec_modes = format!("{:#x}", cfg.codec_modes),
            "GameStream (Moonlight) host listening"
        );
        let inner = Arc::new(Inner {
            store: cfg.ctx.clients.clone(),
            uuid,
            host,
            apps,
            http_port: cfg.base_port,
            https_port,
            rtsp_port,
            cfg,
            state: Mutex::new(State {
                pairing: PairingGate::new(),
                pin_tx: None,
                app: None,
                generation: 0,
            }),
            rng: ring::rand::SystemRandom::new(),
            streams: Mutex::new(None),
        });
        let gs = GameStream { inner };
        let g = gs.clone();
        // One gate for both ports: a stranger's open connections are bounded in all and per
        // address, so the owner's client always finds room.
        let gate = Admission::new(Limits::TCP);
        static REFUSED: RateLimited = RateLimited::new(Duration::from_secs(10));
        let admit = move |peer: SocketAddr| match gate.admit(peer.ip()) {
            Ok(p) => Some(p),
            Err(why) => {
                if let Some(suppressed) = REFUSED.check(std::time::Instant::now()) {
                    tracing::warn!(%peer, %why, suppressed, "nvhttp connection refused");
                }
                None
            }
        };
        let admit = Arc::new(admit);
        let admit_https = admit.clone();
        let mut http = Acceptor::new(http, "nvhttp (HTTP)");
        tokio::spawn(async move {
            loop {
                let (sock, peer) = http.accept().await;
                let Some(permit) = admit(peer) else { continue };
                let g = g.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let local = sock.local_addr().unwrap_or(peer);
                    g.connection(sock, peer, local, None, false).await;
                });
            }
        });
        let g = gs.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let mut https = Acceptor::new(https, "nvhttp (HTTPS)");
        tokio::spawn(async move {
            loop {
                let (sock, peer) = https.accept().await;
                let Some(permit) = admit_https(peer) else {
                    continue;
                };
                let (g, acceptor) = (g.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let local = sock.local_addr().unwrap_or(peer);
                    let tls = match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(sock)).await
                    {
                        Ok(Ok(t)) => t,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "nvhttp TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.as_ref().to_vec());
                    g.connection(tls, peer, local, cert, true).await;
                });
            }
        });
        Ok(gs)
    }

    /// The HTTP port.
    pub fn http_port(&self) -> u16 {
        self.inner.http_port
    }

    /// The HTTPS port.
    pub fn https_port(&self) -> u16 {
        self.inner.https_port
    }

    /// The host UUID.
    pub fn uuid(&self) -> &str {
        &self.inner.uuid
    }

    /// The pending or running app session (what `/launch` or `/resume` set up).
    pub fn session(&self) -> Option<LaunchSession> {
        self.inner.lock().app.as_ref().map(|a| a.launch.clone())
    }

    /// The running app's output and launch, for a stream to attach to.
    pub fn app_output(&self) -> Option<(OutputHandle, LaunchSession)> {
        let st = self.inner.lock();
        let a = st.app.as_ref()?;
        Some((a.app.output().clone(), a.launch.clone()))
    }

    /// The streaming side, once started (ended first on shutdown).
    pub fn attach_streams(&self, streams: Arc<super::stream::StreamHost>) {
        *crate::lock(&self.inner.streams) = Some(streams);
    }

    /// Host shutdown: tells a streaming client, ends the stream, then ends the app and removes
    /// its output.
    pub fn shutdown(&self, reason: &str) {
        if let Some(s) = crate::lock(&self.inner.streams).clone() {
            s.shutdown(reason);
        }
        let app = self.inner.lock().app.take();
        if let Some(mut a) = app {
            tracing::info!(app = %a.launch.app_title, "host shutdown: ending the app");
            a.app.end();
        }
    }

    /// Hands the PIN the user typed to the pairing that waits for it.
    pub fn submit_pin(&self, pin: &str) -> Result<(), PinError> {
        let mut st = self.inner.lock();
        let ticket = st.pairing.submit_pin(Instant::now(), pin)?;
        match st.pin_tx.take_if(|(t, _)| *t == ticket) {
            Some((_, tx)) => tx.send(()).map_err(|()| PinError::ClientGone),
            None => Err(PinError::ClientGone),
        }
    }

    async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut sock: S,
        peer: SocketAddr,
        local: SocketAddr,
        cert: Option<Vec<u8>>,
        https: bool,
    ) {
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        // `None`: the peer went away or was too slow; nothing to answer.
        let parsed = tokio::time::timeout(HEAD_TIMEOUT, async {
            loop {
                match parse_head(&buf) {
                    Ok(Some((req, _))) => return Some(Ok(req)),
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .ok()
        .flatten();
        let response = match parsed {
            None => return,
            Some(Err(e)) => {
                tracing::debug!(%peer, error = %e, "bad nvhttp request");
                let status = match e {
                    RequestError::TooLarge(_) => 413,
                    RequestError::Method(_) => 405,
                    _ => 400,
                };
                gshttp::response(
                    status,
                    "application/xml",
                    Reply::error(400, &e.to_string()).render().as_bytes(),
                )
            }
            Some(Ok(req)) => {
                tracing::debug!(%peer, https, path = %Escaped(&req.path), "nvhttp request");
                let route = self.route(&req, peer, local, cert.as_deref(), https);
                // A request that waits (pairing's phase 1 waits for the PIN) ends when its
                // client goes away: the connection closing drops the handler.
                let (ctype, body) = tokio::select! {
                    r = route => r,
                    _ = gone(&mut sock) => {
                        tracing::debug!(%peer, path = %Escaped(&req.path), "nvhttp client went away before its answer");
                        return;
                    }
                };
                gshttp::response(200, ctype, &body)
            }
        };
        // A peer that never reads its answer does not keep the connection either.
        let _ = tokio::time::timeout(HEAD_TIMEOUT, async {
            let _ = sock.write_all(&response).await;
            let _ = sock.shutdown().await;
        })
        .await;
    }

    async fn route(
        &self,
        req: &Request,
        peer: SocketAddr,
        local: SocketAddr,
        cert: Option<&[u8]>,
        https: bool,
    ) -> (&'static str, Vec<u8>) {
        const XML: &str = "application/xml";
        let reply = |r: Reply| (XML, r.render().into_bytes());
        if !https {
            return match req.path.as_str() {
                "/serverinfo" => reply(self.serverinfo(req, local, false)),
                "/pair" => reply(self.pair(req, peer).await),
                "/unpair" => reply(self.unpair(req, peer)),
                _ => reply(Reply::error(404, "Not Found")),
            };
        }
        let client = match cert.map(|c| self.inner.store.find_cert(c)) {
            Some(Ok(Some(c))) => c,
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot read the paired-client store; refusing");
                return reply(Reply::unauthorized(&req.path));
            }
            _ => {
                tracing::info!(%peer, path = %Escaped(&req.path), "HTTPS request from an unpaired certificate: 401");
                return reply(Reply::unauthorized(&req.path));
            }
        };
        match req.path.as_str() {
            "/serverinfo" => reply(self.serverinfo(req, local, true)),
            "/pair" if Message::of(req) == Some(Message::PairChallenge) => {
                tracing::info!(client = %client.name, "pairing confirmed over HTTPS");
                reply(Reply::ok().field("paired", 1))
            }
            "/pair" => reply(self.pair(req, peer).await),
            "/applist" => {
                let mut r = Reply::ok();
                for a in self.inner.apps.apps() {
                    r = r.raw(&xml::app(a.id, &a.title, false));
                }
                reply(r)
            }
            "/appasset" => {
                let app = req
                    .param("appid")
                    .and_then(|v| v.parse().ok())
                    .and_then(|id| self.inner.apps.get(id));
                match app {
                    Some(a) => ("image/png", apps::box_art(a)),
                    None => reply(Reply::error(404, "no such app")),
                }
            }
            "/launch" => reply(self.launch(req, peer, local, &client, false)),
            "/resume" => reply(self.launch(req, peer, local, &client, true)),
            "/cancel" => reply(self.cancel()),
            _ => reply(Reply::error(404, "Not Found")),
        }
    }

    fn serverinfo(&self, req: &Request, local: SocketAddr, paired: bool) -> Reply {
        let st = self.inner.lock();
        let running = st.app.as_ref().map_or(0, |a| a.launch.app_id);
        let local_ip = match local.ip() {
            IpAddr::V6(a) => a
                .to_ipv4_mapped()
                .map_or("127.0.0.1".to_string(), |v| v.to_string()),
            a => a.to_string(),
        };
        let modes = self.inner.cfg.codec_modes;
        Reply::ok()
            .field("hostname", &self.inner.cfg.hostname)
            .field("appversion", APP_VERSION)
            .field("GfeVersion", GFE_VERSION)
            .field("uniqueid", &self.inner.uuid)
            .field("HttpsPort", self.inner.https_port)
            .field("ExternalPort", self.inner.http_port)
            .field(
                "MaxLumaPixelsHEVC",
                if modes & scm::HEVC != 0 {
                    1_869_449_984u64
                } else {
                    0
                },
            )
            .field("mac", "00:00:00:00:00:00")
            .field("LocalIP", local_ip)
            .field("ServerCodecModeSupport", modes)
            .field(
                "PairStatus",
                u8::from(paired && req.param("uniqueid").is_some()),
            )
            .field("currentgame", running)
            .raw(&display_modes(self.inner.cfg.max_mode))
            .field(
                "state",
                if running != 0 {
                    "SUNSHINE_SERVER_BUSY"
                } else {
                    "SUNSHINE_SERVER_FREE"
                },
            )
    }

    fn unpair(&self, req: &Request, peer: SocketAddr) -> Reply {
        // Clients call this after a failed pairing: drop theirs if it is the pending one (and
        // theirs: from the address that started it).
        let mut st = self.inner.lock();
        if let Some(id) = req.param("uniqueid") {
            if st.pairing.unpair(Instant::now(), peer.ip(), id) {
                // Dropping the sender wakes a phase 1 still waiting for the PIN.
                st.pin_tx = None;
            }
        }
        Reply::ok()
    }

    async fn pair(&self, req: &Request, peer: SocketAddr) -> Reply {
        let uniqueid = req.param("uniqueid").unwrap_or_default().to_string();
        match Message::of(req) {
            Some(Message::GetServerCert) => self.pair_begin(req, peer, uniqueid).await,
            Some(Message::PairChallenge) => {
                Reply::error(400, "pairchallenge is sent over HTTPS").field("paired", 0)
            }
            Some(_) => self.pair_step(req, peer, &uniqueid),
            None => Reply::error(404, "Invalid pairing request").field("paired", 0),
        }
    }

    async fn pair_begin(&self, req: &Request, peer: SocketAddr, uniqueid: String) -> Reply {
        let name = req
            .param("clientname")
            .filter(|n| !n.is_empty())
            .map_or_else(|| peer.ip().to_string(), |n| n.chars().take(64).collect());
        let name = escaped(&name);
        let (wait, rx) = {
            let mut st = self.inner.lock();
            let wait = match st
                .pairing
                .begin(Instant::now(), peer.ip(), &uniqueid, &name, req)
            {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "pairing request refused");
                    return e.reply();
                }
            };
            let (tx, rx) = oneshot::channel();
            st.pin_tx = Some((wait.ticket, tx));
            (wait, rx)
        };
        println!("Pairing request from {name} ({peer}): enter the PIN the client shows with `punktfunk-host pin NNNN` (or type it here)");
        tracing::info!(client = %name, %peer, "pairing request; waiting for the PIN");
        // The requester going away (its connection closes) drops this future: the guard ends
        // the ceremony then, so nobody holds the pairing slot by leaving a request open.
        let mut guard = AbandonOnDrop {
            gs: self,
            ticket: Some(wait.ticket),
            name: name.clone(),
        };
        // Ends when the PIN arrives, when the ceremony is dropped (its sender goes with it) or
        // at the deadline; the gate knows which.
        let _ = tokio::time::timeout_at(wait.deadline.into(), rx).await;
        guard.ticket = None;
        let mut st = self.inner.lock();
        st.pin_tx.take_if(|(t, _)| *t == wait.ticket);
        match st
            .pairing
            .finish_pin_wait(Instant::now(), wait.ticket, &self.inner.host)
        {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(client = %name, error = %e, "pairing abandoned");
                e.reply()
            }
        }
    }

    fn pair_step(&self, req: &Request, peer: SocketAddr, uniqueid: &str) -> Reply {
        let step = self.inner.lock().pairing.step(
            Instant::now(),
            peer.ip(),
            uniqueid,
            req,
            &self.inner.host,
            &self.inner.rng,
        );
        match step {
            GateStep::Continue(reply) | GateStep::NotPairing(reply) => reply,
            GateStep::Paired {
                client_name,
                client_cert,
                reply,
            } => match self.inner.store.add_gamestream(&client_name, &client_cert) {
                Ok(c) => {
                    tracing::info!(client = %c.name, id = %c.id, "paired a GameStream client");
                    println!("Paired {} (id {})", c.name, c.id);
                    reply
                }
                Err(e) => {
                    tracing::error!(error = %e, "pairing succeeded but the client could not be stored");
                    Reply::error(500, "The host could not store the pairing").field("paired", 0)
                }
            },
            GateStep::Failed {
                client_name,
                failure,
                reply,
            } => {
                if let StepFailure::WrongPin {
                    locked_until: Some(_),
                } = failure
                {
                    tracing::warn!(
                        "too many wrong PINs within a minute: pairing locked for a minute"
                    );
                }
                tracing::warn!(client = %client_name, ?failure, "pairing failed");
                reply
            }
        }
    }

    fn launch(
        &self,
        req: &Request,
        peer: SocketAddr,
        local: SocketAddr,
        client: &crate::clients::PairedClient,
        resume: bool,
    ) -> Reply {
        let request = match LaunchRequest::parse(req, resume) {
            Ok(r) => r,
            Err(reply) => return reply,
        };
        // Without `corever` the client sets the stream up in plaintext RTSP, which anyone who
        // sees the launch could answer for it: such clients are served only when asked for.
        if request.core_version == 0 {
            if !self.inner.cfg.allow_legacy {
                tracing::warn!(client = %client.name, %peer,
                    "refused a launch without encrypted RTSP (an old client; --gamestream-allow-legacy serves it)");
                return Reply::error(
                    403,
                    "This client is too old to encrypt its stream setup; update Moonlight, or start the host with --gamestream-allow-legacy",
                )
                .field(if resume { "resume" } else { "gamesession" }, 0);
            }
            tracing::warn!(client = %client.name, %peer,
                "launch without encrypted RTSP (--gamestream-allow-legacy): its setup is plaintext, accepted from this address only");
        }
        // A launch or resume is when a GameStream client was last seen.
        if let Err(e) = self.inner.store.touch(
            crate::session::registry::Protocol::GameStream,
            &client.fingerprint,
        ) {
            tracing::warn!(error = %format!("{e:#}"), "cannot record when the client was last seen");
        }
        let url = session_url(request.core_version >= 1, local.ip(), self.inner.rtsp_port);
        let mut st = self.inner.lock();
        if resume {
            let Some(a) = st.app.as_mut() else {
                return Reply::error(503, "Nothing to resume").field("resume", 0);
            };
            tracing::info!(app = %a.launch.app_title, ?request, "resume");
            a.launch.request = request;
            a.launch.client = client.fingerprint.clone();
            a.launch.client_name = client.name.clone();
            a.launch.client_addr = peer.ip();
            return Reply::ok().field("sessionUrl0", url).field("resume", 1);
        }
        if st.app.is_some() {
            return Reply::error(400, "An app is already running on this host").field("resume", 0);
        }
        let Some(app) = self.inner.apps.get(request.app_id).cloned() else {
            return Reply::error(404, "No such app").field("gamesession", 0);
        };
        // The output exists before the app, so the app starts on it.
        let (w, h, fps) = request.mode.unwrap_or((1280, 720, 60));
        let mode = punktfunk_core::control::Mode::new(w, h, fps);
        let output = match self.create_output(mode) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(app = %app.title, %mode, error = %e, "cannot create the app's output");
                return Reply::error(
                    500,
                    &format!("Cannot create a display for {}: {e}", app.title),
                )
                .field("gamesession", 0);
            }
        };
        st.generation += 1;
        let generation = st.generation;
        let weak = Arc::downgrade(&self.inner);
        let on_exit = Box::new(move |_status| {
            // The app ended by itself: its launch ends with it (and the stream, which watches).
            if let Some(inner) = weak.upgrade() {
                let mut st = inner.lock();
                if st.app.as_ref().is_some_and(|a| a.generation == generation) {
                    let gone = st.app.take();
                    drop(st);
                    drop(gone);
                }
            }
        });
        let host_env = crate::session::app::host_env(self.inner.cfg.ctx.epoch);
        let session = match AppSession::launch_with(
            &app.title,
            app.command.as_deref(),
            output,
            &host_env,
            on_exit,
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(app = %app.title, error = %e, "cannot start the app");
                return Reply::error(500, &format!("Cannot start {}: {e}", app.title))
                    .field("gamesession", 0);
            }
        };
        tracing::info!(app = %app.title, ?request, "launch");
        st.app = Some(RunningApp {
            launch: LaunchSession {
                app_id: app.id,
                request,
                client: client.fingerprint.clone(),
                client_name: client.name.clone(),
                client_addr: peer.ip(),
                app_title: app.title.clone(),
            },
            app: session,
            generation,
        });
        Reply::ok()
            .field("sessionUrl0", url)
            .field("gamesession", 1)
    }

    /// An output at `mode` on the display backend the configuration chooses.
    fn create_output(
        &self,
        mode: punktfunk_core::control::Mode,
    ) -> Result<OutputHandle, Box<dyn std::error::Error + Send + Sync>> {
        let ctx = &self.inner.cfg.ctx;
        let chosen = punktfunk_desktop::vdisplay::resolve(&ctx.caps.env, &ctx.prefs.display)?;
        tracing::info!(display = %chosen.reason, %mode, "creating the app's output");
        let opts = punktfunk_desktop::vdisplay::DisplayOptions {
            existing_output: ctx.prefs.existing_output.clone(),
        };
        let mut display = punktfunk_desktop::vdisplay::open(chosen.backend, &ctx.caps.env, &opts)?;
        Ok(Arc::new(Mutex::new(display.create(mode)?)))
    }

    fn cancel(&self) -> Reply {
        let app = self.inner.lock().app.take();
        if let Some(mut a) = app {
            tracing::info!(app = %a.launch.app_title, "session cancelled; ending the app");
            a.app.end();
            tracing::info!(app = a.launch.app_id, "session cancelled; app ended");
        }
        Reply::ok().field("cancel", 1)
    }
}

/// `<SupportedDisplayModes>` for serverinfo: common sizes and refresh rates up to `max`
/// (some clients refuse to launch a mode the host does not list).
pub fn display_modes(max: punktfunk_core::control::Mode) -> String {
    const SIZES: [(u32, u32); 12] = [
        (640, 360),
        (854, 480),
        (1280, 720),
        (1280, 800),
        (1366, 768),
        (1600, 900),
        (1920, 1080),
        (1920, 1200),
        (2560, 1080),
        (2560, 1440),
        (3440, 1440),
        (3840, 2160),
    ];
    const RATES: [u32; 7] = [30, 60, 90, 120, 144, 165, 240];
    let mut out = String::from("<SupportedDisplayModes>");
    for (w, h) in SIZES {
        if w > max.width || h > max.height {
            continue;
        }
        for fps in RATES {
            if fps * 1000 > max.refresh_mhz {
                continue;
            }
            out.push_str(&format!(
                "<DisplayMode><Width>{w}</Width><Height>{h}</Height><RefreshRate>{fps}</RefreshRate></DisplayMode>"
            ));
        }
    }
    out.push_str("</SupportedDisplayModes>");
    out
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::lock(&self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punktfunk_core::control::Mode;

    #[test]
    fn display_modes_stop_at_the_largest_mode_served() {
        let m = display_modes(Mode::new(1920, 1080, 60));
        assert!(
            m.starts_with("<SupportedDisplayModes>") && m.ends_with("</SupportedDisplayModes>")
        );
        let one = "<DisplayMode><Width>1280</Width><Height>720</Height><RefreshRate>60</RefreshRate></DisplayMode>";
        assert!(m.contains(one), "{m}");
        assert!(m.contains("<Width>1920</Width><Height>1080</Height><RefreshRate>30</RefreshRate>"));
        assert!(!m.contains("<RefreshRate>120</RefreshRate>"), "above 60 Hz");
        assert!(!m.contains("<Width>2560</Width>"), "wider than 1920");
        assert_eq!(
            m.matches("<DisplayMode>").count(),
            7 * 2,
            "seven sizes fit, at 30 and 60 Hz"
        );
    }
}
