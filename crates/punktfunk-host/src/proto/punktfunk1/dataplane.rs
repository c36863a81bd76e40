//! The host's data-plane socket, shared by all sessions.
//!
//! Video leaves from this socket; what arrives on it are client probes
//! (`punktfunk_core::probe`). A receive thread authenticates each probe with its session's
//! client→host key and records the source address as the session's destination. Anything else
//! is counted and dropped: an unauthenticated sender never gets a stream pointed at it.

use punktfunk_core::crypto::Opener;
use punktfunk_core::probe;
use punktfunk_net::{RecvBatch, UdpSocket};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where a session's video goes, set by authentic probes.
pub type Destination = Arc<Mutex<Option<SocketAddr>>>;

struct Route {
    opener: Opener,
    dest: Destination,
}

/// The shared data socket and its probe receiver.
pub struct DataPlane {
    sock: Arc<UdpSocket>,
    routes: Arc<Mutex<HashMap<u64, Route>>>,
    stop: Arc<AtomicBool>,
    rejected: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl DataPlane {
    /// Binds the data socket and starts the probe receiver.
    pub fn bind(addr: SocketAddr) -> std::io::Result<DataPlane> {
        let sock = Arc::new(UdpSocket::bind(addr)?);
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        tracing::info!(
            addr = %sock.local_addr()?,
            send_path = %sock.send_path(),
            gro = sock.gro_enabled(),
            sndbuf = sock.send_buffer_size().unwrap_or(0),
            "data plane socket bound"
        );
        let routes: Arc<Mutex<HashMap<u64, Route>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let rejected = Arc::new(AtomicU64::new(0));
        let (s, r, st, rej) = (sock.clone(), routes.clone(), stop.clone(), rejected.clone());
        let thread = std::thread::Builder::new()
            .name("data-rx".into())
            .spawn(move || receive(&s, &r, &st, &rej))?;
        Ok(DataPlane {
            sock,
            routes,
            stop,
            rejected,
            thread: Some(thread),
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.sock.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The socket video is sent from.
    pub fn socket(&self) -> Arc<UdpSocket> {
        self.sock.clone()
    }

    /// Starts accepting probes for `session_id`; returns its destination handle.
    pub fn register(&self, session_id: u64, opener: Opener) -> Destination {
        let dest: Destination = Arc::default();
        crate::lock(&self.routes).insert(
            session_id,
            Route {
                opener,
                dest: dest.clone(),
            },
        );
        dest
    }

    /// Stops routing for `session_id`.
    pub fn unregister(&self, session_id: u64) {
        crate::lock(&self.routes).remove(&session_id);
    }

    /// Datagrams dropped because they were not authentic probes of a live session.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn receive(
    sock: &UdpSocket,
    routes: &Mutex<HashMap<u64, Route>>,
    stop: &AtomicBool,
    rejected: &AtomicU64,
) {
    let mut batch = RecvBatch::new(16, 65_536);
    while !stop.load(Ordering::Relaxed) {
        if sock.recv_batch(&mut batch).is_err() {
            continue;
        }
        let mut routes = crate::lock(routes);
        for (from, d) in batch.iter_mut() {
            let route = probe::session_id(d).and_then(|id| routes.get_mut(&id));
            let authentic =
                route.and_then(|r| probe::verify(&mut r.opener, d).is_ok().then_some(r));
            match authentic {
                Some(r) => {
                    let mut dest = crate::lock(&r.dest);
                    if *dest != Some(from) {
                        tracing::info!(%from, "client data address confirmed by probe");
                        *dest = Some(from);
                    }
                }
                _ => {
                    rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
