//! punktfunk-quic: the punktfunk/1 control plane's transport.
//!
//! - [`identity`]: the host's and the client's persistent self-signed certificates and SHA-256
//!   fingerprints.
//! - [`trust`]: pinning and trust on first use, enforced inside the TLS handshake; the host
//!   requires a client certificate and checks the client holds its key.
//! - QUIC endpoints (quinn over rustls with the ring provider, TLS 1.3 only, ALPN
//!   `punktfunk/1`): [`server_endpoint`], [`connect`].
//! - [`ControlStream`]: the control messages of `punktfunk_core::control` over one
//!   bidirectional QUIC stream; side planes travel as QUIC datagrams tagged by their first byte
//!   (`punktfunk_core::control::datagram`).

pub mod identity;
pub mod trust;

pub use identity::{Fingerprint, Identity};
pub use quinn;
pub use trust::{peer_fingerprint, ClientVerifier, HostVerifier, KnownHosts};

use punktfunk_core::control::{DecodeError, Message, MessageReader};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// ALPN protocol id.
pub const ALPN: &[u8] = b"punktfunk/1";
/// TLS server name clients ask for (the certificate is pinned, not matched by name).
pub const SERVER_NAME: &str = "punktfunk";
/// Default QUIC port of a host.
pub const DEFAULT_PORT: u16 = 47800;
/// Most new connections a server endpoint holds before the host has decided on them.
pub const MAX_INCOMING: usize = 256;

/// Transport failures.
#[derive(Debug, Error)]
pub enum TransportError {
    /// Socket or file trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// TLS configuration failure.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The QUIC connection could not be made or was lost.
    #[error("QUIC: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// quinn refused to start the connection (bad address etc.).
    #[error("QUIC connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// Writing to a stream failed.
    #[error("QUIC stream write: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from a stream failed.
    #[error("QUIC stream read: {0}")]
    Read(#[from] quinn::ReadError),
    /// The peer sent bytes that are not a control message.
    #[error("malformed control message: {0}")]
    Malformed(#[from] DecodeError),
    /// The host presented a certificate other than the trusted one.
    #[error("{0}")]
    Untrusted(String),
    /// Nothing arrived in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        Duration::from_secs(10)
            .try_into()
            .expect("10 s is a valid idle timeout"),
    ));
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    t.datagram_receive_buffer_size(Some(1 << 20));
    t.max_concurrent_uni_streams(8u32.into());
    t.max_concurrent_bidi_streams(4u32.into());
    t
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A QUIC server endpoint on `addr` presenting `identity`.
pub fn server_endpoint(
    addr: SocketAddr,
    identity: &Identity,
) -> Result<quinn::Endpoint, TransportError> {
    let cert = rustls::pki_types::CertificateDer::from(identity.cert_der.clone());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(identity.key_der.clone().into());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(ClientVerifier::default()))
        .with_single_cert(vec![cert], key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TransportError::Untrusted(format!("QUIC TLS config: {e}")))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    // New connections wait for the host's admission decision (accept, retry or refuse) in a
    // bounded queue holding little data each: a flood of Initials cannot buffer megabytes.
    cfg.max_incoming(MAX_INCOMING)
        .incoming_buffer_size(64 << 10)
        .incoming_buffer_size_total(4 << 20);
    Ok(quinn::Endpoint::server(cfg, addr)?)
}

/// How the client trusts the host.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Only this fingerprint.
    Pinned(Fingerprint),
    /// Trust on first use: the fingerprint stored for `host_key` in the store, or (none stored)
    /// whatever the host presents, which is then stored.
    Tofu {
        /// The store.
        known_hosts: KnownHosts,
        /// The key the host is stored under (what the user typed, e.g. `box:47800`).
        host_key: String,
    },
    /// Any certificate (its handshake signature still verified), nothing stored: for a pairing
    /// ceremony, which authenticates the host by the PIN and binds the fingerprint seen here.
    Pairing,
}

/// A connected client: the connection and how the host's certificate was trusted.
#[derive(Debug)]
pub struct Connected {
    /// The QUIC connection.
    pub connection: quinn::Connection,
    /// The client endpoint (keep it alive as long as the connection).
    pub endpoint: quinn::Endpoint,
    /// The host's fingerprint.
    pub fingerprint: Fingerprint,
    /// Whether this connection stored the fingerprint for the first time (TOFU).
    pub first_use: bool,
}

/// Connects to a host at `addr`, enforcing `trust`, authenticating as `identity`.
pub async fn connect(
    addr: SocketAddr,
    trust: &Trust,
    identity: &Identity,
) -> Result<Connected, TransportError> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("valid");
    connect_from(bind, addr, trust, identity).await
}

/// [`connect`] from a local address of the caller's choice (a source address on a host
/// with several).
pub async fn connect_from(
    bind: SocketAddr,
    addr: SocketAddr,
    trust: &Trust,
    identity: &Identity,
) -> Result<Connected, TransportError> {
    let expected = match trust {
        Trust::Pinned(fp) => Some(*fp),
        Trust::Tofu {
            known_hosts,
            host_key,
        } => known_hosts.lookup(host_key)?,
        Trust::Pairing => None,
    };
    let verifier = Arc::new(HostVerifier::new(expected));
    let seen = verifier.seen();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(
            vec![rustls::pki_types::CertificateDer::from(
                identity.cert_der.clone(),
            )],
            rustls::pki_types::PrivateKeyDer::Pkcs8(identity.key_der.clone().into()),
        )?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TransportError::Untrusted(format!("QUIC TLS config: {e}")))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    let mut endpoint = quinn::Endpoint::client(bind)?;
    endpoint.set_default_client_config(cfg);
    let connecting = endpoint.connect(addr, SERVER_NAME)?;
    let connection = match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Err(_) => return Err(TransportError::Timeout("QUIC handshake")),
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let presented = *seen.lock().unwrap_or_else(|e| e.into_inner());
            return Err(match (expected, presented) {
                (Some(want), Some(got)) if want != got => {
                    TransportError::Untrusted(untrusted_message(trust, want, got))
                }
                _ => e.into(),
            });
        }
    };
    let fingerprint = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ok_or_else(|| TransportError::Untrusted("the host presented no certificate".into()))?;
    let mut first_use = false;
    if let (
        Trust::Tofu {
            known_hosts,
            host_key,
        },
        None,
    ) = (trust, expected)
    {
        known_hosts.remember(host_key, fingerprint)?;
        first_use = true;
    }
    Ok(Connected {
        connection,
        endpoint,
        fingerprint,
        first_use,
    })
}

fn untrusted_message(trust: &Trust, want: Fingerprint, got: Fingerprint) -> String {
    match trust {
        Trust::Pinned(_) | Trust::Pairing => format!(
            "the host's certificate fingerprint is {got}, not the pinned {want}; refusing to connect"
        ),
        Trust::Tofu { known_hosts, host_key } => format!(
            "the host's certificate fingerprint CHANGED: stored {want}, presented {got}. This may be an attack, \
             or the host's identity was recreated. If you trust the new one, connect with --pin {got}, \
             or remove the line for {host_key} from {}",
            known_hosts.path().display()
        ),
    }
}

/// Control messages over one bidirectional QUIC stream.
#[derive(Debug)]
pub struct ControlStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    reader: MessageReader,
    buf: Vec<u8>,
}

impl ControlStream {
    /// Opens the control stream (client side).
    pub async fn open(conn: &quinn::Connection) -> Result<ControlStream, TransportError> {
        let (send, recv) = conn.open_bi().await?;
        Ok(ControlStream::new(send, recv))
    }

    /// Accepts the control stream (host side).
    pub async fn accept(conn: &quinn::Connection) -> Result<ControlStream, TransportError> {
        let (send, recv) = conn.accept_bi().await?;
        Ok(ControlStream::new(send, recv))
    }

    fn new(send: quinn::SendStream, recv: quinn::RecvStream) -> ControlStream {
        ControlStream {
            send,
            recv,
            reader: MessageReader::new(),
            buf: vec![0; 4096],
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), TransportError> {
        self.send.write_all(&msg.to_bytes()).await?;
        Ok(())
    }

    /// Receives the next message; `Ok(None)` when the peer finished the stream.
    pub async fn recv(&mut self) -> Result<Option<Message>, TransportError> {
        loop {
            if let Some(m) = self.reader.next_message()? {
                return Ok(Some(m));
            }
            let want = self.reader.bytes_wanted().min(self.buf.len());
            match self.recv.read(&mut self.buf[..want]).await? {
                Some(n) => self.reader.push(&self.buf[..n]),
                None => return Ok(None),
            }
        }
    }

    /// Finishes the sending side and waits (at most `within`) until the peer has acknowledged
    /// everything sent, so closing the connection next does not discard a last message.
    pub async fn finish_delivered(&mut self, within: Duration) {
        if self.send.finish().is_ok() {
            let _ = tokio::time::timeout(within, self.send.stopped()).await;
        }
    }

    /// Splits into a sending and a receiving half for separate tasks.
    pub fn split(self) -> (ControlSender, ControlReceiver) {
        (
            ControlSender { send: self.send },
            ControlReceiver {
                recv: self.recv,
                reader: self.reader,
                buf: self.buf,
            },
        )
    }
}

/// The sending half of a [`ControlStream`].
#[derive(Debug)]
pub struct ControlSender {
    send: quinn::SendStream,
}

impl ControlSender {
    /// Sends one message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), TransportError> {
        self.send.write_all(&msg.to_bytes()).await?;
        Ok(())
    }

    /// Finishes the stream (after a Bye).
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }
}

/// The receiving half of a [`ControlStream`].
#[derive(Debug)]
pub struct ControlReceiver {
    recv: quinn::RecvStream,
    reader: MessageReader,
    buf: Vec<u8>,
}

impl ControlReceiver {
    /// Receives the next message; `Ok(None)` when the peer finished the stream.
    pub async fn recv(&mut self) -> Result<Option<Message>, TransportError> {
        loop {
            if let Some(m) = self.reader.next_message()? {
                return Ok(Some(m));
            }
            let want = self.reader.bytes_wanted().min(self.buf.len());
            match self.recv.read(&mut self.buf[..want]).await? {
                Some(n) => self.reader.push(&self.buf[..n]),
                None => return Ok(None),
            }
        }
    }
}
