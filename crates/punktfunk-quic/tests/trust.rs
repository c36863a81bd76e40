//! Trust over real QUIC on loopback: pinning, trust on first use, a changed host identity, a
//! host certificate presented without its private key; and the other way round, the host
//! learning the client's fingerprint and refusing a client certificate without its key.

use punktfunk_core::control::Message;
use punktfunk_quic::{
    connect, server_endpoint, ControlStream, Fingerprint, Identity, KnownHosts, TransportError,
    Trust,
};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// The test client's identity.
fn me() -> &'static Identity {
    static ME: OnceLock<Identity> = OnceLock::new();
    ME.get_or_init(|| Identity::generate_client("test client").unwrap())
}

/// A host that answers one control message per connection with Start, forever.
fn host(identity: &Identity) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let ep = server_endpoint("127.0.0.1:0".parse().unwrap(), identity).unwrap();
    let addr = ep.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Some(inc) = ep.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                let Ok(mut cs) = ControlStream::accept(&conn).await else {
                    return;
                };
                if let Ok(Some(_)) = cs.recv().await {
                    let _ = cs.send(&Message::Start).await;
                }
                let _ = conn.closed().await;
            });
        }
    });
    (addr, task)
}

async fn talk(addr: SocketAddr, trust: &Trust) -> Result<Fingerprint, TransportError> {
    let c = connect(addr, trust, me()).await?;
    let mut cs = ControlStream::open(&c.connection).await?;
    cs.send(&Message::RequestKeyframe { frame: 1 }).await?;
    assert_eq!(cs.recv().await?, Some(Message::Start));
    Ok(c.fingerprint)
}

#[tokio::test]
async fn pinned_fingerprint_is_enforced() {
    let id = Identity::generate("punktfunk-host").unwrap();
    let (addr, _h) = host(&id);
    assert_eq!(
        talk(addr, &Trust::Pinned(id.fingerprint())).await.unwrap(),
        id.fingerprint()
    );
    let e = talk(addr, &Trust::Pinned(Fingerprint([7; 32])))
        .await
        .unwrap_err();
    let TransportError::Untrusted(msg) = e else {
        panic!("{e}")
    };
    assert!(
        msg.contains(&id.fingerprint().to_string()) && msg.contains("not the pinned"),
        "{msg}"
    );
}

#[tokio::test]
async fn tofu_stores_then_refuses_a_changed_identity() {
    let dir = tempfile::tempdir().unwrap();
    let kh = KnownHosts::new(dir.path().join("known_hosts"));
    let id = Identity::generate("punktfunk-host").unwrap();
    let (addr, _h) = host(&id);
    let trust = Trust::Tofu {
        known_hosts: kh.clone(),
        host_key: "myhost:47800".into(),
    };
    let c = connect(addr, &trust, me()).await.unwrap();
    assert!(c.first_use);
    assert_eq!(kh.lookup("myhost:47800").unwrap(), Some(id.fingerprint()));
    // Second time: known, not first use.
    let c = connect(addr, &trust, me()).await.unwrap();
    assert!(!c.first_use);

    // The host's identity changes (a different key at the same name): refused, with advice.
    let other = Identity::generate("punktfunk-host").unwrap();
    let (addr2, _h2) = host(&other);
    let e = connect(addr2, &trust, me()).await.unwrap_err();
    let TransportError::Untrusted(msg) = e else {
        panic!("{e}")
    };
    assert!(
        msg.contains("CHANGED")
            && msg.contains("--pin")
            && msg.contains(&other.fingerprint().to_string()),
        "{msg}"
    );
    // The stored fingerprint was not replaced.
    assert_eq!(kh.lookup("myhost:47800").unwrap(), Some(id.fingerprint()));
}

/// A host presenting someone else's certificate without that certificate's key: the handshake
/// signature cannot verify, so a client pinning the real certificate refuses it.
#[tokio::test]
async fn certificate_without_its_key_fails_the_handshake() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let real = Identity::generate("punktfunk-host").unwrap();
    let thief = Identity::generate("punktfunk-host").unwrap();

    #[derive(Debug)]
    struct Replay(Arc<rustls::sign::CertifiedKey>);
    impl rustls::server::ResolvesServerCert for Replay {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }
    let provider = rustls::crypto::ring::default_provider();
    let thief_key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(thief.key_der.clone().into()))
        .unwrap();
    let ck = rustls::sign::CertifiedKey::new(
        vec![CertificateDer::from(real.cert_der.clone())],
        thief_key,
    );
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Replay(Arc::new(ck))));
    tls.alpn_protocols = vec![punktfunk_quic::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let ep = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(crypto)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = ep.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(inc) = ep.accept().await {
            let _ = inc.await;
        }
    });
    let e = connect(addr, &Trust::Pinned(real.fingerprint()), me())
        .await
        .unwrap_err();
    assert!(
        !matches!(e, TransportError::Untrusted(_)),
        "fingerprint matched; the signature must fail: {e}"
    );
    assert!(
        e.to_string().to_lowercase().contains("signature")
            || e.to_string().contains("crypto")
            || e.to_string().contains("TLS"),
        "{e}"
    );
}

#[tokio::test]
async fn the_host_learns_the_clients_fingerprint() {
    let id = Identity::generate("punktfunk-host").unwrap();
    let ep = server_endpoint("127.0.0.1:0".parse().unwrap(), &id).unwrap();
    let addr = ep.local_addr().unwrap();
    let seen = tokio::spawn(async move {
        let conn = ep.accept().await.unwrap().await.unwrap();
        punktfunk_quic::peer_fingerprint(&conn)
    });
    let c = connect(addr, &Trust::Pinned(id.fingerprint()), me())
        .await
        .unwrap();
    assert_eq!(seen.await.unwrap(), Some(me().fingerprint()));
    drop(c);
}

/// A client presenting another client's certificate without its key: the host checks the
/// client's handshake signature, so the connection fails and the host sees no client.
#[tokio::test]
async fn a_client_certificate_without_its_key_is_refused() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let host_id = Identity::generate("punktfunk-host").unwrap();
    let ep = server_endpoint("127.0.0.1:0".parse().unwrap(), &host_id).unwrap();
    let addr = ep.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let inc = ep.accept().await.unwrap();
        inc.await.map(|c| punktfunk_quic::peer_fingerprint(&c))
    });

    #[derive(Debug)]
    struct Replay(Arc<rustls::sign::CertifiedKey>);
    impl rustls::client::ResolvesClientCert for Replay {
        fn resolve(
            &self,
            _: &[&[u8]],
            _: &[rustls::SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
        fn has_certs(&self) -> bool {
            true
        }
    }
    let thief = Identity::generate_client("thief").unwrap();
    let provider = rustls::crypto::ring::default_provider();
    let thief_key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(thief.key_der.clone().into()))
        .unwrap();
    let ck = rustls::sign::CertifiedKey::new(
        vec![CertificateDer::from(me().cert_der.clone())],
        thief_key,
    );
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(punktfunk_quic::HostVerifier::new(Some(
            host_id.fingerprint(),
        ))))
        .with_client_cert_resolver(Arc::new(Replay(Arc::new(ck))));
    tls.alpn_protocols = vec![punktfunk_quic::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = client
        .connect(addr, punktfunk_quic::SERVER_NAME)
        .unwrap()
        .await;
    // TLS 1.3: the client may finish its side before the host has checked its signature; the
    // host's refusal then closes the connection.
    if let Ok(c) = conn {
        let mut cs = ControlStream::open(&c).await.unwrap();
        let _ = cs.send(&Message::RequestKeyframe { frame: 1 }).await;
        assert!(
            cs.recv().await.is_err(),
            "nothing is answered on a refused connection"
        );
    }
    let host_side = tokio::time::timeout(std::time::Duration::from_secs(10), accepted)
        .await
        .expect("the host decided")
        .unwrap();
    let e = host_side.expect_err("the host refuses the handshake");
    assert!(
        e.to_string().to_lowercase().contains("signature")
            || e.to_string().to_lowercase().contains("crypto")
            || e.to_string().to_lowercase().contains("tls"),
        "{e}"
    );
}
