//! The host's and the client's persistent identities, and certificate fingerprints.
//!
//! A host has one self-signed certificate and key, created on first start in its config
//! directory (`host-cert.der`, `host-key.der`, both mode 0600), and a persistent UUID
//! (`host-uuid`). Every protocol of the host uses them: punktfunk/1 (QUIC) and GameStream
//! (nvhttp's TLS and the pairing signatures). The key is RSA-2048 and the certificate is signed
//! with SHA-256, because stock Moonlight clients require exactly that of a GameStream host.
//! Clients of punktfunk/1 identify the host by the SHA-256 of the certificate (its
//! *fingerprint*), never by a CA: the host is someone's own machine.
//!
//! A punktfunk/1 client has one too (`client-cert.der`, `client-key.der` in its own config
//! directory, [`Identity::load_or_create_client`]), an ECDSA P-256 key, which it presents with
//! TLS client authentication on every connection so the host learns who it is.
//!
//! Files are written atomically (a temporary file, synced, renamed into place). A stored
//! identity that cannot be read, or whose certificate and key do not belong together, is an
//! error naming the files, never a silent new identity: a new identity would unpair the client
//! from every host (or change the host's fingerprint for every client).

use ring::digest::{digest, SHA256};
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use thiserror::Error;

/// SHA-256 of a DER certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(cert_der: &[u8]) -> Fingerprint {
        let d = digest(&SHA256, cert_der);
        Fingerprint(d.as_ref().try_into().expect("SHA-256 is 32 bytes"))
    }
}

impl fmt::Display for Fingerprint {
    /// 64 lower-case hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

/// A pin that is not a SHA-256 fingerprint.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid fingerprint {input:?}: {why} (expected 64 hex digits, optionally with ':' separators or a 'sha256:' prefix)")]
pub struct FingerprintError {
    input: String,
    why: &'static str,
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// Accepts `ab12…` (64 hex digits), `AB:12:…`, and a `sha256:` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| FingerprintError {
            input: s.to_string(),
            why,
        };
        let t = s.trim();
        let t = t
            .strip_prefix("sha256:")
            .or_else(|| t.strip_prefix("SHA256:"))
            .unwrap_or(t);
        let hex: String = t.chars().filter(|c| *c != ':').collect();
        if hex.len() != 64 {
            return Err(err("wrong length"));
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| err("not hexadecimal"))?;
        }
        Ok(Fingerprint(out))
    }
}

/// Failures loading or creating an identity.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// File system trouble, with the path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("generating a certificate: {0}")]
    Generate(String),
    /// The stored files are not a usable certificate and key.
    #[error("{0}")]
    Corrupt(String),
    /// One of the pair exists without the other, or a file is empty.
    #[error("{0}")]
    Inconsistent(String),
}

/// Why a stored certificate and key are not a usable identity.
#[derive(Debug, Error)]
pub enum KeyProblem {
    /// The private key does not parse or is of a kind that cannot sign.
    #[error("the private key is not usable: {0}")]
    Unusable(rustls::Error),
    /// The key parses but the certificate was made for another key.
    #[error("the certificate does not go with the key")]
    Mismatch(rustls::Error),
    /// The certificate file is not a certificate.
    #[error("the certificate is not a readable X.509 certificate")]
    Unreadable(rustls::Error),
}

/// A certificate and its private key.
#[derive(Clone)]
pub struct Identity {
    /// DER certificate.
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER private key.
    pub key_der: Vec<u8>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

const CERT_FILE: &str = "host-cert.der";
const KEY_FILE: &str = "host-key.der";
const CLIENT_CERT_FILE: &str = "client-cert.der";
const CLIENT_KEY_FILE: &str = "client-key.der";

impl Identity {
    /// A fresh self-signed identity: RSA-2048 key, SHA-256-with-RSA certificate valid for 20
    /// years, subject CN `name` (also its DNS name).
    pub fn generate(name: &str) -> Result<Identity, IdentityError> {
        let gen = |e: &dyn fmt::Display| IdentityError::Generate(e.to_string());
        let key_der = rsa_2048_pkcs8().map_err(|e| gen(&e))?;
        let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(key_der.as_slice());
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
            .map_err(|e| gen(&e))?;
        Ok(Identity {
            cert_der: self_signed(name, &key)?,
            key_der,
        })
    }

    /// The certificate's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.cert_der)
    }

    /// A fresh self-signed client identity: ECDSA P-256, SHA-256, valid for 20 years, subject
    /// CN `name`.
    pub fn generate_client(name: &str) -> Result<Identity, IdentityError> {
        let gen = |e: &dyn fmt::Display| IdentityError::Generate(e.to_string());
        let key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| gen(&e))?;
        Ok(Identity {
            cert_der: self_signed(name, &key)?,
            key_der: key.serialize_der(),
        })
    }

    /// Whether the key parses and belongs to the certificate.
    pub fn check(&self) -> Result<(), KeyProblem> {
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into());
        let signer = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(key)
            .map_err(KeyProblem::Unusable)?;
        let cert = rustls::pki_types::CertificateDer::from(self.cert_der.clone());
        rustls::sign::CertifiedKey::new(vec![cert], signer)
            .keys_match()
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding) => {
                    KeyProblem::Unreadable(e)
                }
                e => KeyProblem::Mismatch(e),
            })
    }

    /// Loads the host identity stored in `dir`, or creates and stores one (directory 0700,
    /// files 0600). Returns whether it was created.
    pub fn load_or_create(dir: &Path) -> Result<(Identity, bool), IdentityError> {
        load_or_create_in(dir, CERT_FILE, KEY_FILE, || {
            Identity::generate("punktfunk-host")
        })
    }

    /// Loads the client identity stored in `dir` (`client-cert.der`, `client-key.der`), or
    /// creates and stores one. Returns whether it was created.
    pub fn load_or_create_client(dir: &Path) -> Result<(Identity, bool), IdentityError> {
        load_or_create_in(dir, CLIENT_CERT_FILE, CLIENT_KEY_FILE, || {
            Identity::generate_client("punktfunk-client")
        })
    }
}

/// A self-signed certificate for `key`: subject CN `name` (also its DNS name), valid from a day
/// ago for 20 years.
fn self_signed(name: &str, key: &rcgen::KeyPair) -> Result<Vec<u8>, IdentityError> {
    let gen = |e: &dyn fmt::Display| IdentityError::Generate(e.to_string());
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| gen(&e))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
    params.not_after = (now + std::time::Duration::from_secs(20 * 365 * 86_400)).into();
    let cert = params.self_signed(key).map_err(|e| gen(&e))?;
    Ok(cert.der().to_vec())
}

fn load_or_create_in(
    dir: &Path,
    cert_file: &str,
    key_file: &str,
    generate: impl FnOnce() -> Result<Identity, IdentityError>,
) -> Result<(Identity, bool), IdentityError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IdentityError::Io { path, source }
    };
    let (cert_path, key_path) = (dir.join(cert_file), dir.join(key_file));
    // Temporary files of a creation that never finished.
    for p in [&cert_path, &key_path] {
        let _ = fs::remove_file(p.with_extension("tmp"));
    }
    // The certificate is written last and is what makes an identity exist: a key without one
    // is a creation that was interrupted, which no peer can have seen. It is replaced.
    if key_path.exists() && !cert_path.exists() {
        tracing::warn!(path = %key_path.display(), "replacing an identity whose creation was interrupted (a key without its certificate; no peer can have seen it)");
        fs::remove_file(&key_path).map_err(io(&key_path))?;
    }
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let cert_der = fs::read(&cert_path).map_err(io(&cert_path))?;
            let key_der = fs::read(&key_path).map_err(io(&key_path))?;
            if cert_der.is_empty() || key_der.is_empty() {
                return Err(IdentityError::Inconsistent(format!(
                    "{} or {} is empty; remove both to create a new identity",
                    cert_path.display(),
                    key_path.display()
                )));
            }
            let id = Identity { cert_der, key_der };
            id.check().map_err(|why| {
                IdentityError::Corrupt(format!(
                    "{} and {} are not a usable identity ({why}); restore them from a backup, or \
                     move both away to create a new identity (which needs pairing again)",
                    cert_path.display(),
                    key_path.display()
                ))
            })?;
            let mode = fs::metadata(&key_path).map_err(io(&key_path))?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %key_path.display(), mode = format!("{:o}", mode & 0o777), "private key is readable by others; tightening to 0600");
                fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).map_err(io(&key_path))?;
            }
            Ok((id, false))
        }
        (false, false) => {
            fs::create_dir_all(dir).map_err(io(dir))?;
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
            let id = generate()?;
            write_private(&key_path, &id.key_der).map_err(io(&key_path))?;
            write_private(&cert_path, &id.cert_der).map_err(io(&cert_path))?;
            Ok((id, true))
        }
        _ => Err(IdentityError::Inconsistent(format!(
            "{} exists without its key {}: restore the key from a backup, or remove the certificate \
             to create a new identity (which needs pairing again)",
            cert_path.display(),
            key_path.display()
        ))),
    }
}

/// A new RSA-2048 private key as PKCS#8 DER (ring signs with RSA keys but cannot make them).
fn rsa_2048_pkcs8() -> Result<Vec<u8>, String> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|e| e.to_string())?;
    Ok(key
        .to_pkcs8_der()
        .map_err(|e| e.to_string())?
        .as_bytes()
        .to_vec())
}

const UUID_FILE: &str = "host-uuid";

/// The host's persistent UUID (GameStream's `uniqueid`), created in `dir` on first use.
pub fn load_or_create_uuid(dir: &Path) -> Result<String, IdentityError> {
    let path = dir.join(UUID_FILE);
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    match fs::read_to_string(&path) {
        Ok(s) if is_uuid(s.trim()) => return Ok(s.trim().to_string()),
        Ok(s) => {
            return Err(IdentityError::Inconsistent(format!(
                "{} holds {:?}, not a UUID; remove it to create a new one",
                path.display(),
                s.trim()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    fs::create_dir_all(dir).map_err(io)?;
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| IdentityError::Generate("no system randomness".into()))?;
    b[6] = (b[6] & 0x0F) | 0x40; // version 4
    b[8] = (b[8] & 0x3F) | 0x80; // RFC 4122 variant
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    write_private(&path, uuid.as_bytes()).map_err(io)?;
    Ok(uuid)
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Writes a new file readable by its owner only (created 0600, never briefly wider).
/// Writes `bytes` to `path` atomically, mode 0600: a temporary file beside it, synced, renamed
/// into place, the directory synced.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The default directory for identities and settings: `$XDG_CONFIG_HOME/punktfunk`, else
/// `$HOME/.config/punktfunk`. Only absolute values count (the XDG rule): an empty or relative
/// variable would put the identity wherever the program happened to start. `None` when
/// neither gives an absolute path.
pub fn default_config_dir(
    xdg_config_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<std::path::PathBuf> {
    let absolute =
        |v: Option<std::ffi::OsString>| v.map(std::path::PathBuf::from).filter(|p| p.is_absolute());
    absolute(xdg_config_home)
        .map(|x| x.join("punktfunk"))
        .or_else(|| absolute(home).map(|h| h.join(".config/punktfunk")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_dir_takes_only_absolute_variables() {
        let d = |x: Option<&str>, h: Option<&str>| {
            default_config_dir(x.map(Into::into), h.map(Into::into))
                .map(|p| p.display().to_string())
        };
        assert_eq!(d(Some("/x"), Some("/h")).as_deref(), Some("/x/punktfunk"));
        assert_eq!(
            d(Some(""), Some("/h")).as_deref(),
            Some("/h/.config/punktfunk")
        );
        assert_eq!(
            d(Some("rel"), Some("/h")).as_deref(),
            Some("/h/.config/punktfunk")
        );
        assert_eq!(d(None, Some("")), None);
        assert_eq!(d(Some(""), Some("home")), None);
        assert_eq!(d(None, None), None);
    }

    #[test]
    fn fingerprints_parse_in_every_spelling() {
        let fp = Fingerprint([0xAB; 32]);
        let hex = fp.to_string();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(format!("sha256:{hex}").parse::<Fingerprint>().unwrap(), fp);
        let colons: Vec<String> = fp.0.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(colons.join(":").parse::<Fingerprint>().unwrap(), fp);
        for bad in [
            "",
            "abc",
            &hex[..62],
            &format!("{}zz", &hex[..62]),
            &format!("{hex}00"),
        ] {
            let e = bad.parse::<Fingerprint>().unwrap_err().to_string();
            assert!(e.contains("invalid fingerprint"), "{e}");
        }
    }

    #[test]
    fn identity_is_created_once_with_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("host");
        let (a, created) = Identity::load_or_create(&d).unwrap();
        assert!(created);
        for f in [CERT_FILE, KEY_FILE] {
            let mode = fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let (b, created) = Identity::load_or_create(&d).unwrap();
        assert!(!created);
        assert_eq!(a.fingerprint(), b.fingerprint());
        let u = load_or_create_uuid(&d).unwrap();
        assert!(is_uuid(&u), "{u}");
        assert_eq!(load_or_create_uuid(&d).unwrap(), u, "persistent");
        fs::remove_file(d.join(KEY_FILE)).unwrap();
        let e = Identity::load_or_create(&d).unwrap_err();
        assert!(matches!(e, IdentityError::Inconsistent(_)), "{e}");
        assert!(
            e.to_string().contains("host-key.der"),
            "the error names the file: {e}"
        );
    }

    #[test]
    fn a_broken_identity_is_reported_by_file_and_fault() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("host");
        Identity::load_or_create(&d).unwrap();
        fs::write(d.join(CERT_FILE), b"garbage").unwrap();
        let e = Identity::load_or_create(&d).unwrap_err().to_string();
        assert!(
            e.contains("host-cert.der") && e.contains("not a readable X.509"),
            "{e}"
        );
        let other = Identity::generate_client("other").unwrap();
        fs::write(d.join(CERT_FILE), &other.cert_der).unwrap();
        let e = Identity::load_or_create(&d).unwrap_err().to_string();
        assert!(e.contains("does not go with the key"), "{e}");
        assert!(!e.contains("peer"), "{e}");
    }

    #[test]
    fn an_interrupted_creation_is_replaced_not_a_host_that_cannot_start() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("host");
        let (first, _) = Identity::load_or_create(&d).unwrap();
        // A crash after the key and before the certificate: the key alone, and a temporary
        // certificate half written.
        fs::remove_file(d.join(CERT_FILE)).unwrap();
        fs::write(d.join(CERT_FILE).with_extension("tmp"), b"half").unwrap();
        let (again, created) = Identity::load_or_create(&d).unwrap();
        assert!(created, "a new identity is made");
        assert_ne!(again.fingerprint(), first.fingerprint());
        again.check().unwrap();
        assert!(
            !d.join(CERT_FILE).with_extension("tmp").exists(),
            "stale temporary removed"
        );
        let (kept, created) = Identity::load_or_create(&d).unwrap();
        assert!(!created);
        assert_eq!(kept.fingerprint(), again.fingerprint());
    }
}

#[cfg(test)]
mod client_identity_tests {
    use super::*;

    #[test]
    fn a_client_identity_is_created_private_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = Identity::load_or_create_client(dir.path()).unwrap();
        assert!(created);
        a.check().unwrap();
        for f in [CLIENT_CERT_FILE, CLIENT_KEY_FILE] {
            let mode = fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        assert!(!dir.path().join("client-key.tmp").exists());
        let (b, created) = Identity::load_or_create_client(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(a.fingerprint(), b.fingerprint());
        // The host's identity lives beside it under other names.
        let (h, _) = Identity::load_or_create(dir.path()).unwrap();
        assert_ne!(h.fingerprint(), a.fingerprint());
    }

    #[test]
    fn a_corrupt_or_mismatched_identity_is_an_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create_client(dir.path()).unwrap();
        let key = dir.path().join(CLIENT_KEY_FILE);
        let good = fs::read(&key).unwrap();
        fs::write(&key, b"not a key").unwrap();
        let e = Identity::load_or_create_client(dir.path()).unwrap_err();
        assert!(matches!(e, IdentityError::Corrupt(_)), "{e}");
        assert!(e.to_string().contains("client-key.der"), "{e}");
        assert_eq!(fs::read(&key).unwrap(), b"not a key", "never recreated");
        // Another identity's key: parses, but does not go with the certificate.
        let other = Identity::generate_client("other").unwrap();
        fs::write(&key, &other.key_der).unwrap();
        let e = Identity::load_or_create_client(dir.path()).unwrap_err();
        assert!(e.to_string().contains("does not go with"), "{e}");
        fs::write(&key, &good).unwrap();
        Identity::load_or_create_client(dir.path()).unwrap();
    }
}
