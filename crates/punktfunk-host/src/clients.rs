//! The one store of paired clients, for both protocols.
//!
//! One JSON file in the config directory (`clients.json`, mode 0600) lists every client that
//! completed pairing: GameStream (Moonlight) clients with their certificate, punktfunk/1
//! clients by fingerprint, each with a short id, a name, when it paired and when it was last
//! seen.
//!
//! - **Crash-safe**: a write goes to a temporary file, is fsynced, renamed over the store and
//!   the directory fsynced; a writer killed at any point leaves the old list or the new one.
//! - **No lost updates**: every read-modify-write (pair, remove, last seen) holds an exclusive
//!   `flock` on `clients.lock` beside it, so the running host and any number of
//!   `punktfunk-host clients` commands serialize, whether or not they are the same process.
//! - **Never silently empty**: a file that does not parse is an error naming it; the host
//!   refuses to start on it rather than forget every pairing.
//! - Readers (the host checks the store on every GameStream request and every second of a
//!   punktfunk/1 session) re-read the file only when its inode, size or mtime changed.
//!
//! A store written before punktfunk/1 clients could pair (`gamestream-clients.json`) is read as
//! GameStream clients and moved into `clients.json` by the first write.

use crate::session::registry::Protocol;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The file name in the config directory.
pub const FILE: &str = "clients.json";
/// The lock file beside it.
pub const LOCK: &str = "clients.lock";
/// The GameStream-only store of earlier versions.
pub const LEGACY_FILE: &str = "gamestream-clients.json";

/// One paired client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairedClient {
    /// Short id for `clients remove` (first 12 hex digits of the fingerprint).
    pub id: String,
    /// Which protocol it pairs for.
    #[serde(default = "legacy_protocol")]
    pub protocol: Protocol,
    /// The name the client gave, or its address.
    pub name: String,
    /// SHA-256 of the client's DER certificate, hex.
    pub fingerprint: String,
    /// The certificate, PEM (GameStream keeps it; punktfunk/1 needs only the fingerprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    /// Seconds since the Unix epoch when pairing completed.
    pub paired_at: u64,
    /// Seconds since the Unix epoch of its last session, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
}

fn legacy_protocol() -> Protocol {
    Protocol::GameStream
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    clients: Vec<PairedClient>,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Hex SHA-256 of a DER certificate.
pub fn fingerprint(cert_der: &[u8]) -> String {
    punktfunk_quic::Fingerprint::of(cert_der).to_string()
}

/// What identifies one version of the file on disk.
type Version = (u64, u64, u64, i64, i64);

/// The list as last read, and the version of the file it was read from.
type Cache = Arc<Mutex<Option<(Version, Arc<Vec<PairedClient>>)>>>;

/// The store in a config directory.
#[derive(Debug, Clone)]
pub struct ClientStore {
    dir: PathBuf,
    path: PathBuf,
    cache: Cache,
}

impl ClientStore {
    /// The store in `dir` (the file need not exist).
    pub fn new(dir: &Path) -> ClientStore {
        ClientStore {
            dir: dir.to_path_buf(),
            path: dir.join(FILE),
            cache: Arc::default(),
        }
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every paired client; no file is an empty list, a corrupt file an error naming it.
    pub fn list(&self) -> Result<Arc<Vec<PairedClient>>> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Arc::new(self.read_legacy()?))
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        let version = (
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
        );
        let mut cache = crate::lock(&self.cache);
        if let Some((v, list)) = cache.as_ref() {
            if *v == version {
                return Ok(list.clone());
            }
        }
        let list = Arc::new(read(&self.path)?.unwrap_or_default());
        *cache = Some((version, list.clone()));
        Ok(list)
    }

    fn read_legacy(&self) -> Result<Vec<PairedClient>> {
        let mut list = read(&self.dir.join(LEGACY_FILE))?.unwrap_or_default();
        for c in &mut list {
            c.protocol = Protocol::GameStream;
        }
        Ok(list)
    }

    /// The client of `protocol` with this fingerprint, if paired.
    pub fn find(&self, protocol: Protocol, fingerprint: &str) -> Result<Option<PairedClient>> {
        Ok(self
            .list()?
            .iter()
            .find(|c| c.protocol == protocol && c.fingerprint == fingerprint)
            .cloned())
    }

    /// The paired GameStream client with this DER certificate, if any.
    pub fn find_cert(&self, cert_der: &[u8]) -> Result<Option<PairedClient>> {
        self.find(Protocol::GameStream, &fingerprint(cert_der))
    }

    /// Adds (or renames) a client; returns its entry.
    pub fn add(
        &self,
        protocol: Protocol,
        name: &str,
        fingerprint: &str,
        cert_pem: Option<String>,
    ) -> Result<PairedClient> {
        let entry = PairedClient {
            id: fingerprint[..12.min(fingerprint.len())].to_string(),
            protocol,
            name: name.to_string(),
            fingerprint: fingerprint.to_string(),
            cert_pem,
            paired_at: unix_now(),
            last_seen: None,
        };
        self.update(|clients| {
            clients.retain(|c| !(c.protocol == protocol && c.fingerprint == fingerprint));
            clients.push(entry.clone());
            Ok(true)
        })?;
        Ok(entry)
    }

    /// Adds a GameStream client by its DER certificate.
    pub fn add_gamestream(&self, name: &str, cert_der: &[u8]) -> Result<PairedClient> {
        self.add(
            Protocol::GameStream,
            name,
            &fingerprint(cert_der),
            Some(punktfunk_gamestream::crypto::cert_to_pem(cert_der)),
        )
    }

    /// Removes the client whose id (or fingerprint prefix of at least 6 digits) is `id`;
    /// returns it, or `None` when nothing matched. An ambiguous prefix is an error.
    pub fn remove(&self, id: &str) -> Result<Option<PairedClient>> {
        let id = id.to_ascii_lowercase();
        let mut removed = None;
        self.update(|clients| {
            let matches: Vec<usize> = clients
                .iter()
                .enumerate()
                .filter(|(_, c)| c.id == id || (id.len() >= 6 && c.fingerprint.starts_with(&id)))
                .map(|(i, _)| i)
                .collect();
            match matches[..] {
                [] => Ok(false),
                [i] => {
                    removed = Some(clients.remove(i));
                    Ok(true)
                }
                _ => bail!("{id:?} matches {} clients; give more digits", matches.len()),
            }
        })?;
        Ok(removed)
    }

    /// Records that a client was just seen (a session started).
    pub fn touch(&self, protocol: Protocol, fingerprint: &str) -> Result<()> {
        let now = unix_now();
        self.update(|clients| {
            let mut changed = false;
            for c in clients
                .iter_mut()
                .filter(|c| c.protocol == protocol && c.fingerprint == fingerprint)
            {
                c.last_seen = Some(now);
                changed = true;
            }
            Ok(changed)
        })
    }

    /// Removes what an interrupted write left behind (the host calls it at start).
    pub fn tidy(&self) -> Result<()> {
        self.update(|_| Ok(false))
    }

    /// Read-modify-write under the store's lock; `f` says whether it changed anything.
    fn update(&self, f: impl FnOnce(&mut Vec<PairedClient>) -> Result<bool>) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let lock_path = self.dir.join(LOCK);
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        // A writer's temporary file exists only while it holds the lock: any found now was
        // left by a process that died mid-write.
        self.remove_stale_temporaries();
        // Under the lock the file is read fresh: another process may have written it.
        let (mut clients, legacy) = match read(&self.path)? {
            Some(l) => (l, false),
            None => (self.read_legacy()?, true),
        };
        let changed = f(&mut clients)?;
        if changed || (legacy && !clients.is_empty()) {
            self.write(clients)?;
            if legacy {
                let _ = std::fs::remove_file(self.dir.join(LEGACY_FILE));
            }
        }
        // Dropping the file releases the lock.
        drop(lock);
        Ok(())
    }

    fn remove_stale_temporaries(&self) {
        let Some(prefix) = self
            .path
            .file_name()
            .map(|n| format!("{}.tmp", n.to_string_lossy()))
        else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                tracing::info!(path = %e.path().display(), "removing a temporary file left by an interrupted write");
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn write(&self, clients: Vec<PairedClient>) -> Result<()> {
        let tmp = self
            .path
            .with_extension(format!("json.tmp{}", std::process::id()));
        let body = serde_json::to_vec_pretty(&StoreFile { clients })?;
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
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Reads a store file: `None` when it does not exist.
fn read(path: &Path) -> Result<Option<Vec<PairedClient>>> {
    match std::fs::read(path) {
        Ok(b) => {
            let f: StoreFile = serde_json::from_slice(&b).with_context(|| {
                format!(
                    "{} is not a valid list of paired clients (fix it or move it away; \
                     nothing is forgotten silently)",
                    path.display()
                )
            })?;
            Ok(Some(f.clients))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_of_an_interrupted_write_are_removed_and_the_store_kept() {
        let d = tempfile::tempdir().unwrap();
        let s = ClientStore::new(d.path());
        s.add_gamestream("phone", b"cert-a").unwrap();
        let stale = d.path().join("clients.json.tmp4242");
        std::fs::write(&stale, b"{\"clients\": [").unwrap();
        s.tidy().unwrap();
        assert!(!stale.exists());
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn add_find_remove_persist_for_both_protocols() {
        let d = tempfile::tempdir().unwrap();
        let s = ClientStore::new(d.path());
        assert!(s.list().unwrap().is_empty());
        let a = s.add_gamestream("phone", b"cert-a").unwrap();
        s.add_gamestream("tv", b"cert-b").unwrap();
        s.add_gamestream("phone-renamed", b"cert-a").unwrap();
        let p1 = s
            .add(Protocol::Punktfunk1, "laptop", &"ab".repeat(32), None)
            .unwrap();
        let again = ClientStore::new(d.path());
        let l = again.list().unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(
            again.find_cert(b"cert-a").unwrap().unwrap().name,
            "phone-renamed"
        );
        assert!(again.find_cert(b"cert-c").unwrap().is_none());
        // A fingerprint pairs for its protocol only.
        assert!(again
            .find(Protocol::GameStream, &p1.fingerprint)
            .unwrap()
            .is_none());
        assert_eq!(
            again
                .find(Protocol::Punktfunk1, &p1.fingerprint)
                .unwrap()
                .unwrap()
                .id,
            "abababababab"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        s.touch(Protocol::Punktfunk1, &p1.fingerprint).unwrap();
        assert!(s
            .find(Protocol::Punktfunk1, &p1.fingerprint)
            .unwrap()
            .unwrap()
            .last_seen
            .is_some());
        assert_eq!(s.remove(&a.id).unwrap().unwrap().fingerprint, a.fingerprint);
        assert!(s.find_cert(b"cert-a").unwrap().is_none());
        assert!(s.remove("ffffffffffff").unwrap().is_none());
        assert_eq!(
            s.remove(&p1.id).unwrap().unwrap().protocol,
            Protocol::Punktfunk1
        );
    }

    #[test]
    fn a_corrupt_store_is_an_error_naming_the_file_and_is_not_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let s = ClientStore::new(d.path());
        std::fs::write(d.path().join(FILE), b"{garbage").unwrap();
        let e = format!("{:#}", s.list().unwrap_err());
        assert!(e.contains("clients.json is not a valid list"), "{e}");
        assert!(s.add_gamestream("x", b"c").is_err());
        assert!(s.remove("abcdef").is_err());
        assert_eq!(std::fs::read(d.path().join(FILE)).unwrap(), b"{garbage");
    }

    #[test]
    fn an_old_gamestream_store_is_read_and_moved_by_the_first_write() {
        let d = tempfile::tempdir().unwrap();
        let old = r#"{"clients":[{"id":"0123456789ab","name":"old phone","fingerprint":"0123456789abcdef","cert_pem":"PEM","paired_at":5}]}"#;
        std::fs::write(d.path().join(LEGACY_FILE), old).unwrap();
        let s = ClientStore::new(d.path());
        let l = s.list().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].protocol, Protocol::GameStream);
        assert_eq!(l[0].cert_pem.as_deref(), Some("PEM"));
        s.add(Protocol::Punktfunk1, "laptop", &"cd".repeat(32), None)
            .unwrap();
        assert!(!d.path().join(LEGACY_FILE).exists());
        let names: Vec<String> = s.list().unwrap().iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["old phone", "laptop"]);
    }

    #[test]
    fn concurrent_writers_in_one_process_lose_nothing() {
        let d = tempfile::tempdir().unwrap();
        let s = ClientStore::new(d.path());
        let fps: Vec<String> = (0..16).map(|i| format!("{i:02x}").repeat(32)).collect();
        for f in &fps {
            s.add(Protocol::Punktfunk1, "c", f, None).unwrap();
        }
        std::thread::scope(|t| {
            for f in &fps[..8] {
                let s = s.clone();
                t.spawn(move || assert!(s.remove(&f[..12]).unwrap().is_some()));
            }
            for i in 0..8 {
                let s = s.clone();
                t.spawn(move || {
                    s.add(
                        Protocol::Punktfunk1,
                        "new",
                        &format!("{:02x}", 0x80 + i).repeat(32),
                        None,
                    )
                    .unwrap()
                });
            }
        });
        let left: Vec<String> = s
            .list()
            .unwrap()
            .iter()
            .map(|c| c.fingerprint.clone())
            .collect();
        assert_eq!(left.len(), 16, "{left:?}");
        assert!(fps[8..].iter().all(|f| left.contains(f)));
        assert!(fps[..8].iter().all(|f| !left.contains(f)));
    }
}
