//! How a client decides to trust a host: an explicit pin, or trust on first use (TOFU).
//!
//! Both are enforced inside the TLS handshake by [`HostVerifier`]: the presented certificate's
//! SHA-256 must equal the expected fingerprint, and the handshake signature must verify against
//! that certificate's key, so a replayed certificate without its key fails. With TOFU and no
//! stored fingerprint any certificate is accepted (its signature is still verified), and the
//! caller stores what was seen in [`KnownHosts`].
//!
//! The other way round, [`ClientVerifier`] makes the host ask every client for its certificate
//! and check the client's handshake signature against it (possession of the key, not just a
//! copy of a certificate); which clients are allowed is decided after the handshake, by the
//! fingerprint ([`peer_fingerprint`]).

use crate::identity::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Checks the host certificate against an expected fingerprint (or records any, for TOFU).
#[derive(Debug)]
pub struct HostVerifier {
    expected: Option<Fingerprint>,
    seen: Arc<Mutex<Option<Fingerprint>>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl HostVerifier {
    /// A verifier requiring `expected` (`None`: accept any certificate and record it).
    pub fn new(expected: Option<Fingerprint>) -> HostVerifier {
        HostVerifier {
            expected,
            seen: Arc::new(Mutex::new(None)),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }

    /// Where the fingerprint of the presented certificate is recorded (also on mismatch, so the
    /// caller can say what the host presented).
    pub fn seen(&self) -> Arc<Mutex<Option<Fingerprint>>> {
        self.seen.clone()
    }
}

/// The message a fingerprint mismatch fails the handshake with.
pub const MISMATCH: &str = "host certificate fingerprint does not match the trusted one";

impl ServerCertVerifier for HostVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = Fingerprint::of(end_entity);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(fp);
        match self.expected {
            Some(want) if want != fp => Err(rustls::Error::General(MISMATCH.into())),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The host's side of client authentication: every client must present a certificate (any
/// self-signed one) and prove it holds its key.
#[derive(Debug)]
pub struct ClientVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl Default for ClientVerifier {
    fn default() -> ClientVerifier {
        ClientVerifier {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl rustls::server::danger::ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        // Any certificate: a client is trusted by its fingerprint once paired, not by a CA.
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The fingerprint of the certificate the peer of `connection` authenticated with (for a host:
/// the client's), if it presented one.
pub fn peer_fingerprint(connection: &quinn::Connection) -> Option<Fingerprint> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().map(|c| Fingerprint::of(c))
}

/// The client's store of host fingerprints seen before: one `host fingerprint` line each.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
}

impl KnownHosts {
    /// The store at `path` (created on the first [`KnownHosts::remember`]).
    pub fn new(path: impl Into<PathBuf>) -> KnownHosts {
        KnownHosts { path: path.into() }
    }

    /// The file backing the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fingerprint stored for `host` (as given by the user, e.g. `box:47800`).
    pub fn lookup(&self, host: &str) -> std::io::Result<Option<Fingerprint>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            if let (Some(h), Some(fp)) = (parts.next(), parts.next()) {
                if h == host {
                    return fp.parse().map(Some).map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{}: {e}", self.path.display()),
                        )
                    });
                }
            }
        }
        Ok(None)
    }

    /// Stores `fp` for `host` (appends; an existing entry for the host is replaced).
    pub fn remember(&self, host: &str, fp: Fingerprint) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let old = fs::read_to_string(&self.path).unwrap_or_default();
        let mut out: Vec<String> = old
            .lines()
            .filter(|l| l.split_whitespace().next() != Some(host))
            .map(str::to_string)
            .collect();
        out.push(format!("{host} {fp}"));
        self.replace(&(out.join("\n") + "\n"))
    }

    /// Replaces the file atomically: a temporary file of this process, fsynced, renamed over
    /// the store, then the directory fsynced (a crash leaves the old list or the new one).
    fn replace(&self, text: &str) -> std::io::Result<()> {
        self.remove_orphaned_temporaries();
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        match self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => fs::File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    }

    /// Removes temporary files of processes that died before renaming theirs (a live
    /// process's is left alone: its name carries its pid).
    fn remove_orphaned_temporaries(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_stem()) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let prefix = format!("{}.tmp", name.to_string_lossy());
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = file
                .strip_prefix(&prefix)
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Removes the entry for `host`, if any.
    pub fn forget(&self, host: &str) -> std::io::Result<()> {
        let Ok(old) = fs::read_to_string(&self.path) else {
            return Ok(());
        };
        let out: Vec<&str> = old
            .lines()
            .filter(|l| l.split_whitespace().next() != Some(host))
            .collect();
        self.replace(&(out.join("\n") + "\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_store_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let kh = KnownHosts::new(dir.path().join("sub/known_hosts"));
        assert_eq!(kh.lookup("a:1").unwrap(), None);
        kh.remember("a:1", Fingerprint([1; 32])).unwrap();
        kh.remember("b:2", Fingerprint([2; 32])).unwrap();
        kh.remember("a:1", Fingerprint([3; 32])).unwrap();
        assert_eq!(kh.lookup("a:1").unwrap(), Some(Fingerprint([3; 32])));
        assert_eq!(kh.lookup("b:2").unwrap(), Some(Fingerprint([2; 32])));
        kh.forget("a:1").unwrap();
        assert_eq!(kh.lookup("a:1").unwrap(), None);
        fs::write(kh.path(), "c:3 nonsense\n").unwrap();
        assert!(kh.lookup("c:3").is_err());
    }

    #[test]
    fn temporaries_of_dead_writers_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let kh = KnownHosts::new(dir.path().join("known_hosts"));
        let dead = dir.path().join("known_hosts.tmp4000000000");
        let live = dir.path().join("known_hosts.tmp1");
        fs::write(&dead, "half").unwrap();
        fs::write(&live, "busy").unwrap();
        kh.remember("a:1", Fingerprint([1; 32])).unwrap();
        assert!(!dead.exists(), "a dead writer's temporary is removed");
        assert!(live.exists(), "a live process's temporary is left alone");
        assert_eq!(kh.lookup("a:1").unwrap(), Some(Fingerprint([1; 32])));
    }
}
