//! Paired GameStream clients, stored in the host's config directory.
//!
//! One JSON file (`gamestream-clients.json`, mode 0600) lists every client that completed
//! pairing: a short id, its name, its certificate (PEM), the certificate's SHA-256 and when it
//! paired. Writes are atomic (temporary file, fsync, rename), so a crash never leaves a half
//! list. The running host reads the file on every HTTPS request, so `punktfunk-host clients
//! remove` takes effect on the client's next request without talking to the host.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The file name in the config directory.
pub const FILE: &str = "gamestream-clients.json";

/// One paired client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairedClient {
    /// Short id for `clients remove` (first 12 hex digits of the fingerprint).
    pub id: String,
    /// The name the client gave, or its address.
    pub name: String,
    /// SHA-256 of the DER certificate, hex.
    pub fingerprint: String,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Seconds since the Unix epoch when pairing completed.
    pub paired_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    clients: Vec<PairedClient>,
}

/// The store at `dir/gamestream-clients.json`.
#[derive(Debug, Clone)]
pub struct ClientStore {
    path: PathBuf,
}

/// Hex SHA-256 of a DER certificate.
pub fn fingerprint(cert_der: &[u8]) -> String {
    punktfunk_quic::Fingerprint::of(cert_der).to_string()
}

impl ClientStore {
    /// The store in `dir` (the file need not exist).
    pub fn new(dir: &Path) -> ClientStore {
        ClientStore {
            path: dir.join(FILE),
        }
    }

    /// Every paired client; an absent file is an empty list.
    pub fn list(&self) -> Result<Vec<PairedClient>> {
        match std::fs::read(&self.path) {
            Ok(b) => {
                let f: File = serde_json::from_slice(&b).with_context(|| {
                    format!("{} is not a valid client list", self.path.display())
                })?;
                Ok(f.clients)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// The paired client with this DER certificate, if any.
    pub fn find(&self, cert_der: &[u8]) -> Result<Option<PairedClient>> {
        let fp = fingerprint(cert_der);
        Ok(self.list()?.into_iter().find(|c| c.fingerprint == fp))
    }

    /// Adds (or renames) a client; returns its entry.
    pub fn add(&self, name: &str, cert_der: &[u8]) -> Result<PairedClient> {
        let fp = fingerprint(cert_der);
        let entry = PairedClient {
            id: fp[..12].to_string(),
            name: name.to_string(),
            cert_pem: punktfunk_gamestream::crypto::cert_to_pem(cert_der),
            fingerprint: fp.clone(),
            paired_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let mut clients = self.list()?;
        clients.retain(|c| c.fingerprint != fp);
        clients.push(entry.clone());
        self.write(clients)?;
        Ok(entry)
    }

    /// Removes the client whose id (or fingerprint prefix of at least 6 digits) is `id`;
    /// returns it, or `None` when nothing matched. An ambiguous prefix is an error.
    pub fn remove(&self, id: &str) -> Result<Option<PairedClient>> {
        let id = id.to_ascii_lowercase();
        let mut clients = self.list()?;
        let matches: Vec<usize> = clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.id == id || (id.len() >= 6 && c.fingerprint.starts_with(&id)))
            .map(|(i, _)| i)
            .collect();
        match matches[..] {
            [] => Ok(None),
            [i] => {
                let c = clients.remove(i);
                self.write(clients)?;
                Ok(Some(c))
            }
            _ => anyhow::bail!("{id:?} matches {} clients; give more digits", matches.len()),
        }
    }

    fn write(&self, clients: Vec<PairedClient>) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = self
            .path
            .with_extension(format!("json.tmp{}", std::process::id()));
        let body = serde_json::to_vec_pretty(&File { clients })?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            // The rename is durable once the directory is.
            std::fs::File::open(dir)?.sync_all()
        };
        write().with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_find_remove_persist() {
        let d = tempfile::tempdir().unwrap();
        let s = ClientStore::new(d.path());
        assert!(s.list().unwrap().is_empty());
        let a = s.add("phone", b"cert-a").unwrap();
        s.add("tv", b"cert-b").unwrap();
        s.add("phone-renamed", b"cert-a").unwrap();
        let again = ClientStore::new(d.path());
        let l = again.list().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            again.find(b"cert-a").unwrap().unwrap().name,
            "phone-renamed"
        );
        assert!(again.find(b"cert-c").unwrap().is_none());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(s.remove(&a.id).unwrap().unwrap().fingerprint, a.fingerprint);
        assert!(s.find(b"cert-a").unwrap().is_none());
        assert!(s.remove("ffffffffffff").unwrap().is_none());
        std::fs::write(d.path().join(FILE), b"{garbage").unwrap();
        assert!(s.list().is_err());
    }
}
