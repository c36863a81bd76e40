//! [`ImpairProxy`]: the impairment model between real UDP sockets.
//!
//! The proxy listens on one address; whatever a client sends there goes through the *forward*
//! [`Impairment`] and on to the upstream address, and whatever upstream answers goes through the
//! *backward* model to the client that last sent something. Each direction runs on its own
//! native thread with real time; delivery times are honoured to within the scheduler's wake-up
//! latency (the thread sleeps in `ppoll` until the next packet is due or one arrives).

use crate::impair::{ImpairConfig, ImpairStats, Impairment};
use crate::udp::{RecvBatch, UdpSocket};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest a direction thread sleeps before looking at its stop flag.
const IDLE_WAIT: Duration = Duration::from_millis(20);

/// Counters of both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyStats {
    /// Client → upstream.
    pub forward: ImpairStats,
    /// Upstream → client.
    pub backward: ImpairStats,
    /// Datagrams the proxy failed to send on (socket errors).
    pub send_errors: u64,
}

/// A running impairment proxy; stops and joins its threads when dropped.
#[derive(Debug)]
pub struct ImpairProxy {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<ProxyStats>>,
    threads: Vec<JoinHandle<()>>,
}

struct Direction {
    from: Arc<UdpSocket>,
    to: Arc<UdpSocket>,
    model: Impairment,
    /// Only datagrams from this address are taken (backward: upstream); `None` takes any and
    /// remembers the sender as the client.
    accept_from: Option<SocketAddr>,
    /// Where due packets go: upstream (fixed) or the last client seen (shared).
    dest: Arc<Mutex<Option<SocketAddr>>>,
    learn_client: bool,
    forward: bool,
}

impl ImpairProxy {
    /// Starts a proxy listening on `listen` (port 0 picks one) and forwarding to `upstream`.
    pub fn spawn(
        listen: SocketAddr,
        upstream: SocketAddr,
        forward: ImpairConfig,
        backward: ImpairConfig,
    ) -> io::Result<ImpairProxy> {
        for cfg in [&forward, &backward] {
            cfg.validate()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        let front = Arc::new(UdpSocket::bind(listen)?);
        let any: IpAddr = match upstream {
            SocketAddr::V4(a) if a.ip().is_loopback() => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(a) if a.ip().is_loopback() => Ipv6Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let back = Arc::new(UdpSocket::bind(SocketAddr::new(any, 0))?);
        for s in [&front, &back] {
            s.set_nonblocking(true)?;
        }
        let local = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(ProxyStats::default()));
        let client = Arc::new(Mutex::new(None));
        let dirs = [
            Direction {
                from: front.clone(),
                to: back.clone(),
                model: Impairment::new(forward),
                accept_from: None,
                dest: Arc::new(Mutex::new(Some(upstream))),
                learn_client: true,
                forward: true,
            },
            Direction {
                from: back,
                to: front,
                model: Impairment::new(backward),
                accept_from: Some(upstream),
                dest: client.clone(),
                learn_client: false,
                forward: false,
            },
        ];
        let mut threads = Vec::new();
        for d in dirs {
            let (stop, stats, client) = (stop.clone(), stats.clone(), client.clone());
            let name = if d.forward {
                "impair-fwd"
            } else {
                "impair-back"
            };
            threads.push(
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || run(d, &stop, &stats, &client))?,
            );
        }
        Ok(ImpairProxy {
            local,
            stop,
            stats,
            threads,
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Counters so far.
    pub fn stats(&self) -> ProxyStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops both threads and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ImpairProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    mut d: Direction,
    stop: &AtomicBool,
    stats: &Mutex<ProxyStats>,
    client: &Mutex<Option<SocketAddr>>,
) {
    let mut batch = RecvBatch::new(64, 65_536);
    let mut send_errors = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let dest = *d.dest.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(p) = d.model.poll(now) {
            match dest {
                Some(to) if d.to.send_to(&p, to).is_ok() => {}
                _ => send_errors += 1,
            }
        }
        let wait = d.model.next_deadline().map_or(IDLE_WAIT, |t| {
            t.saturating_duration_since(now).min(IDLE_WAIT)
        });
        if matches!(d.from.wait_readable(wait), Ok(true)) {
            // Drain what is queued (non-blocking socket: WouldBlock ends the loop).
            while d.from.recv_batch(&mut batch).is_ok() && !batch.is_empty() {
                let at = Instant::now();
                for (from, data) in batch.iter() {
                    if d.accept_from.is_some_and(|a| a != from) {
                        continue;
                    }
                    if d.learn_client {
                        *client.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
                    }
                    d.model.push(at, data.to_vec());
                }
            }
        }
        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
        if d.forward {
            s.forward = d.model.stats();
        } else {
            s.backward = d.model.stats();
        }
        s.send_errors += std::mem::take(&mut send_errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> (SocketAddr, Arc<AtomicBool>, JoinHandle<u64>) {
        let s = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = s.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let h = std::thread::spawn(move || {
            let mut n = 0;
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                if let Ok((len, from)) = s.recv_from(&mut buf) {
                    n += 1;
                    let _ = s.send_to(&buf[..len], from);
                }
            }
            n
        });
        (addr, stop, h)
    }

    fn exchange(proxy: &ImpairProxy, n: u32) -> Vec<u32> {
        let c = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        for i in 0..n {
            c.send_to(&i.to_le_bytes(), proxy.local_addr()).unwrap();
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(1)); // stay within socket buffers
            }
        }
        let mut got = vec![];
        let mut buf = [0u8; 64];
        while let Ok((len, _)) = c.recv_from(&mut buf) {
            assert_eq!(len, 4);
            got.push(u32::from_le_bytes(buf[..4].try_into().unwrap()));
        }
        got
    }

    #[test]
    fn clean_proxy_relays_both_ways() {
        let (up, stop, h) = echo_server();
        let proxy = ImpairProxy::spawn(
            "127.0.0.1:0".parse().unwrap(),
            up,
            ImpairConfig::default(),
            ImpairConfig::default(),
        )
        .unwrap();
        let mut got = exchange(&proxy, 300);
        got.sort_unstable();
        assert_eq!(got, (0..300).collect::<Vec<_>>());
        let s = proxy.stats();
        assert_eq!((s.forward.delivered, s.backward.delivered), (300, 300));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(h.join().unwrap(), 300);
    }

    #[test]
    fn lossy_proxy_loses_what_its_stats_say() {
        let (up, stop, h) = echo_server();
        let fwd: ImpairConfig = "loss=50%,seed=4".parse().unwrap();
        let proxy = ImpairProxy::spawn(
            "127.0.0.1:0".parse().unwrap(),
            up,
            fwd,
            ImpairConfig::default(),
        )
        .unwrap();
        let got = exchange(&proxy, 1000);
        let s = proxy.stats();
        assert_eq!(s.forward.pushed, 1000);
        assert!((400..600).contains(&s.forward.dropped_random), "{s:?}");
        assert_eq!(got.len() as u64, 1000 - s.forward.dropped_random);
        stop.store(true, Ordering::Relaxed);
        assert_eq!(h.join().unwrap(), got.len() as u64);
    }

    #[test]
    fn delay_is_applied() {
        let (up, stop, _h) = echo_server();
        let fwd: ImpairConfig = "delay=30ms".parse().unwrap();
        let proxy = ImpairProxy::spawn(
            "127.0.0.1:0".parse().unwrap(),
            up,
            fwd,
            ImpairConfig::default(),
        )
        .unwrap();
        let c = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let t = Instant::now();
        c.send_to(b"ping", proxy.local_addr()).unwrap();
        let mut buf = [0u8; 8];
        c.recv_from(&mut buf).unwrap();
        // A lower bound only: the packet cannot arrive before its delay.
        assert!(t.elapsed() >= Duration::from_millis(30));
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn invalid_config_is_refused() {
        let bad = ImpairConfig {
            loss: 2.0,
            ..Default::default()
        };
        let e = ImpairProxy::spawn(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:9".parse().unwrap(),
            bad,
            ImpairConfig::default(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
