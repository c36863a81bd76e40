//! TLS for nvhttp's HTTPS port: the host's certificate, and a client certificate required
//! but not judged at the TLS layer.
//!
//! GameStream clients present self-signed certificates that no CA vouches for. The handshake
//! therefore accepts any well-formed client certificate *whose key signed the handshake*
//! (possession is proven here, with the key inside the certificate; the verifier is
//! punktfunk/1's [`punktfunk_quic::ClientVerifier`]), and the request handler
//! then looks the certificate up among the paired clients: unknown ones get the 401 reply for
//! every request, as clients expect.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

/// The HTTPS server configuration: TLS 1.2 and 1.3, the host certificate, a mandatory client
/// certificate.
pub fn server_config(
    cert_der: &[u8],
    key_pkcs8: &[u8],
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The same rule as punktfunk/1's: any certificate whose key signed the handshake (a
    // malformed one fails there, when its key is read).
    let verifier = punktfunk_quic::ClientVerifier::default();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(
            vec![CertificateDer::from(cert_der.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec())),
        )?;
    Ok(Arc::new(cfg))
}
