//! Batched UDP for the data plane.
//!
//! A video frame leaves as a run of equal-size datagrams (the packetizer's batch). One system
//! call per datagram is the single largest per-frame cost on a machine with expensive syscalls,
//! so [`UdpSocket::send_batch`] hands the kernel the whole run at once:
//!
//! 1. **UDP GSO** (`UDP_SEGMENT`): one `sendmsg` carries up to 64 segments; the kernel (or the
//!    NIC) cuts them into datagrams.
//! 2. **`sendmmsg`**: one call, one `mmsghdr` per datagram, up to 64 per call.
//! 3. **`send_to`** per datagram.
//!
//! The socket starts on the best path and steps down for good the first time the kernel refuses
//! one (old kernels, devices without segmentation); [`UdpSocket::send_path`] tells which is in use.
//! Receiving uses `recvmmsg` and, where the kernel has it, UDP GRO: several datagrams of one
//! flow arrive as one buffer plus their segment size, which [`RecvBatch`] splits again.
//!
//! Linux only (the syscalls are Linux's); the crate is Linux-first like the host.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// Socket buffer size requested for both directions.
pub const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// Most datagrams per `sendmmsg`/`recvmmsg` call and segments per GSO send (the kernel's GSO
/// limit is 64 segments).
pub const MAX_BATCH: usize = 64;
/// Largest payload of one GSO send (IPv4 limit minus headers, rounded down).
const MAX_GSO_BYTES: usize = 65_000;

/// How [`UdpSocket::send_batch`] talks to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SendPath {
    /// One `send_to` per datagram.
    SendTo = 0,
    /// `sendmmsg`, many datagrams per call.
    Sendmmsg = 1,
    /// UDP generic segmentation offload, one call per up to 64 equal-size datagrams.
    Gso = 2,
}

impl SendPath {
    fn from_u8(v: u8) -> SendPath {
        match v {
            2 => SendPath::Gso,
            1 => SendPath::Sendmmsg,
            _ => SendPath::SendTo,
        }
    }
}

impl std::fmt::Display for SendPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendPath::Gso => "gso",
            SendPath::Sendmmsg => "sendmmsg",
            SendPath::SendTo => "send_to",
        })
    }
}

/// A UDP socket with batched send and receive.
#[derive(Debug)]
pub struct UdpSocket {
    sock: std::net::UdpSocket,
    path: AtomicU8,
    gro: bool,
}

fn setsockopt_int(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` outlives the call and the length matches its type.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn getsockopt_int(fd: i32, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given.
    let rc =
        unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A socket address in the kernel's representation.
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    fn from(addr: SocketAddr) -> RawAddr {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin)
                };
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo().to_be(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6)
                };
                size_of::<libc::sockaddr_in6>()
            }
        };
        RawAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }
}

fn to_socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Errors that mean "this send path is not available here" rather than "this send failed".
fn path_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP | libc::ENOSYS)
    )
}

impl UdpSocket {
    /// Binds `addr` (port 0 picks one), asks for [`SOCKET_BUFFER_BYTES`] of buffer each way
    /// (forcing past the system limit where permitted, as root may) and enables GRO where the
    /// kernel has it.
    pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
        let sock = std::net::UdpSocket::bind(addr)?;
        let fd = sock.as_raw_fd();
        let size = SOCKET_BUFFER_BYTES as i32;
        for (force, plain) in [
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        ] {
            if setsockopt_int(fd, libc::SOL_SOCKET, force, size).is_err() {
                // Without CAP_NET_ADMIN the kernel caps this at net.core.[rw]mem_max.
                let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, size);
            }
        }
        let gro = setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
        let gso = getsockopt_int(fd, libc::SOL_UDP, libc::UDP_SEGMENT).is_ok();
        let path = if gso {
            SendPath::Gso
        } else {
            SendPath::Sendmmsg
        };
        Ok(UdpSocket {
            sock,
            path: AtomicU8::new(path as u8),
            gro,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// The standard-library socket (for options not wrapped here).
    pub fn as_std(&self) -> &std::net::UdpSocket {
        &self.sock
    }

    /// Sets how long a receive waits (`None` = forever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(t)
    }

    /// Switches non-blocking mode (receives then fail with `WouldBlock` instead of waiting).
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.sock.set_nonblocking(on)
    }

    /// Waits until a datagram can be read or `timeout` passes (microsecond resolution, unlike
    /// the jiffy-rounded socket read timeout). Returns whether the socket is readable.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        loop {
            // SAFETY: pfd and ts are valid for the call; one descriptor is passed.
            let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
            if rc >= 0 {
                return Ok(rc > 0);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Effective send buffer size in bytes (the kernel reports twice what it grants as
    /// bookkeeping overhead; this is its figure).
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        getsockopt_int(self.sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF).map(|v| v as usize)
    }

    /// Effective receive buffer size in bytes (the kernel's figure).
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        getsockopt_int(self.sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF).map(|v| v as usize)
    }

    /// Whether received datagrams may arrive GRO-coalesced (size receive buffers for 64 KiB).
    pub fn gro_enabled(&self) -> bool {
        self.gro
    }

    /// The send path in use.
    pub fn send_path(&self) -> SendPath {
        SendPath::from_u8(self.path.load(Ordering::Relaxed))
    }

    /// Caps the send path (benchmarks and tests); never raises it above what was detected.
    pub fn set_send_path(&self, path: SendPath) {
        self.path.fetch_min(path as u8, Ordering::Relaxed);
    }

    /// Sends one datagram.
    pub fn send_to(&self, buf: &[u8], dest: SocketAddr) -> io::Result<usize> {
        self.sock.send_to(buf, dest)
    }

    /// Receives one datagram (with GRO on, possibly several coalesced: prefer
    /// [`UdpSocket::recv_batch`]).
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock.recv_from(buf)
    }

    /// Sends the datagrams packed in `buf`, each `segment_size` bytes (the last may be shorter),
    /// to `dest`. Returns how many datagrams the kernel took; an error only if it took none.
    pub fn send_batch(
        &self,
        dest: SocketAddr,
        buf: &[u8],
        segment_size: usize,
    ) -> io::Result<usize> {
        if segment_size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "segment size 0",
            ));
        }
        let total = buf.len().div_ceil(segment_size);
        let mut sent = 0;
        while sent < total {
            let rest = &buf[sent * segment_size..];
            let r = match self.send_path() {
                SendPath::Gso if segment_size <= MAX_GSO_BYTES => {
                    self.send_gso(dest, rest, segment_size)
                }
                SendPath::Gso | SendPath::Sendmmsg => self.send_mmsg(dest, rest, segment_size),
                SendPath::SendTo => {
                    let end = segment_size.min(rest.len());
                    self.sock.send_to(&rest[..end], dest).map(|_| 1)
                }
            };
            match r {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.send_path() != SendPath::SendTo && path_unsupported(&e) => {
                    let lower = match self.send_path() {
                        SendPath::Gso => SendPath::Sendmmsg,
                        _ => SendPath::SendTo,
                    };
                    self.set_send_path(lower);
                }
                Err(e) if sent > 0 => {
                    let _ = e;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    /// One GSO send of up to [`MAX_BATCH`] segments from the front of `buf`.
    fn send_gso(&self, dest: SocketAddr, buf: &[u8], seg: usize) -> io::Result<usize> {
        let per_call = (MAX_GSO_BYTES / seg).clamp(1, MAX_BATCH);
        let n = buf.len().div_ceil(seg).min(per_call);
        let bytes = (n * seg).min(buf.len());
        let addr = RawAddr::from(dest);
        let mut iov = libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: bytes,
        };
        // Control buffer for one u16 UDP_SEGMENT option, u64-aligned.
        let mut control = [0u64; 4];
        // SAFETY: all-zero is a valid msghdr.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&addr.storage as *const libc::sockaddr_storage) as *mut libc::c_void;
        msg.msg_namelen = addr.len;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if n > 1 {
            // SAFETY: CMSG_SPACE is a pure size computation.
            let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space;
            // SAFETY: msg_control points at `control` (32 bytes >= space), so the first header
            // and its data fit; CMSG_* only compute addresses within it.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), seg as u16);
            }
        }
        // SAFETY: msg and everything it points to (addr, iov, buf, control) live across the call.
        let rc = unsafe { libc::sendmsg(self.sock.as_raw_fd(), &msg, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n)
    }

    /// One `sendmmsg` of up to [`MAX_BATCH`] datagrams from the front of `buf`.
    fn send_mmsg(&self, dest: SocketAddr, buf: &[u8], seg: usize) -> io::Result<usize> {
        let addr = RawAddr::from(dest);
        let chunks: Vec<&[u8]> = buf.chunks(seg).take(MAX_BATCH).collect();
        let mut iovs: Vec<libc::iovec> = chunks
            .iter()
            .map(|c| libc::iovec {
                iov_base: c.as_ptr() as *mut libc::c_void,
                iov_len: c.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: all-zero is a valid mmsghdr.
                let mut m: libc::mmsghdr = unsafe { zeroed() };
                m.msg_hdr.msg_name =
                    (&addr.storage as *const libc::sockaddr_storage) as *mut libc::c_void;
                m.msg_hdr.msg_namelen = addr.len;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: msgs, iovs, addr and buf outlive the call; the count matches the vector.
        let rc = unsafe {
            libc::sendmmsg(
                self.sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as u32,
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }

    /// Receives into `batch`: waits (up to the read timeout) for the first datagram, then takes
    /// whatever else is already queued, up to the batch's capacity. Returns the number of
    /// datagrams (after splitting GRO buffers), also available as `batch.len()`.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.clear();
        let n = batch.capacity;
        let mut iovs: Vec<libc::iovec> = batch
            .data
            .chunks_mut(batch.buf_size)
            .map(|c| libc::iovec {
                iov_base: c.as_mut_ptr().cast(),
                iov_len: c.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = (0..n)
            .map(|i| {
                // SAFETY: all-zero is a valid mmsghdr.
                let mut m: libc::mmsghdr = unsafe { zeroed() };
                m.msg_hdr.msg_name = (&mut batch.names[i] as *mut libc::sockaddr_storage).cast();
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                m.msg_hdr.msg_iov = &mut iovs[i];
                m.msg_hdr.msg_iovlen = 1;
                m.msg_hdr.msg_control = batch.control[i].as_mut_ptr().cast();
                m.msg_hdr.msg_controllen = size_of::<[u64; CONTROL_WORDS]>();
                m
            })
            .collect();
        let got = loop {
            // SAFETY: every pointer in msgs refers to batch storage or iovs, alive for the call;
            // the count matches the vector.
            let rc = unsafe {
                libc::recvmmsg(
                    self.sock.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    n as u32,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        for (i, m) in msgs.iter().enumerate().take(got) {
            let len = m.msg_len as usize;
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                batch.truncated += 1;
                continue;
            }
            let Some(from) = to_socket_addr(&batch.names[i]) else {
                continue;
            };
            let mut seg = len;
            // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_* walk within them.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&m.msg_hdr);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                        let s = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>());
                        if s > 0 {
                            seg = s as usize;
                        }
                    }
                    c = libc::CMSG_NXTHDR(&m.msg_hdr, c);
                }
            }
            let base = i * batch.buf_size;
            let mut off = 0;
            while off < len {
                let l = seg.min(len - off);
                batch.items.push((from, base + off, l));
                off += l;
            }
            if len == 0 {
                batch.items.push((from, base, 0));
            }
        }
        Ok(batch.items.len())
    }
}

const CONTROL_WORDS: usize = 8;

/// Caller-owned storage for [`UdpSocket::recv_batch`].
pub struct RecvBatch {
    capacity: usize,
    buf_size: usize,
    data: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    control: Vec<[u64; CONTROL_WORDS]>,
    /// (source, offset into `data`, length) per datagram.
    items: Vec<(SocketAddr, usize, usize)>,
    truncated: u64,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.capacity)
            .field("buf_size", &self.buf_size)
            .field("datagrams", &self.items.len())
            .finish()
    }
}

impl RecvBatch {
    /// Room for `messages` receive buffers of `buf_size` bytes each. With GRO on, use 65536 so a
    /// coalesced buffer fits (it is then split into its datagrams).
    pub fn new(messages: usize, buf_size: usize) -> RecvBatch {
        let messages = messages.clamp(1, 1024);
        let buf_size = buf_size.clamp(1, 65_536);
        RecvBatch {
            capacity: messages,
            buf_size,
            data: vec![0; messages * buf_size],
            // SAFETY: all-zero is a valid sockaddr_storage.
            names: vec![unsafe { zeroed() }; messages],
            control: vec![[0; CONTROL_WORDS]; messages],
            items: Vec::with_capacity(messages),
            truncated: 0,
        }
    }

    fn clear(&mut self) {
        self.items.clear();
    }

    /// Datagrams received by the last call.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the last call received nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Datagrams dropped because they did not fit a buffer (since creation).
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// The datagrams of the last call with their sources.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        self.items
            .iter()
            .map(|&(a, off, len)| (a, &self.data[off..off + len]))
    }

    /// The datagrams of the last call, mutable (for in-place decryption).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (SocketAddr, &mut [u8])> + '_ {
        // Datagrams never overlap and `items` is in ascending offset order, so carving the
        // buffer front to back hands out disjoint slices.
        let mut rest: &mut [u8] = &mut self.data;
        let mut consumed = 0;
        self.items.iter().map(move |&(a, off, len)| {
            let skip = off - consumed;
            let taken = std::mem::take(&mut rest);
            let (_, tail) = taken.split_at_mut(skip);
            let (d, tail) = tail.split_at_mut(len);
            rest = tail;
            consumed = off + len;
            (a, d)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UdpSocket, UdpSocket, SocketAddr) {
        let tx = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let dest = rx.local_addr().unwrap();
        (tx, rx, dest)
    }

    /// `n` datagrams of `seg` bytes (last `last` bytes), each starting with its index.
    fn frame(n: usize, seg: usize, last: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n {
            let len = if i + 1 == n { last } else { seg };
            v.extend((0..len).map(|k| {
                if k < 2 {
                    (i as u16).to_le_bytes()[k]
                } else {
                    (k * 7 + i) as u8
                }
            }));
        }
        v
    }

    fn receive_all(rx: &UdpSocket, want: usize) -> Vec<Vec<u8>> {
        let mut batch = RecvBatch::new(64, 65_536);
        let mut got = Vec::new();
        while got.len() < want {
            rx.recv_batch(&mut batch)
                .expect("datagrams arrive within the timeout");
            got.extend(batch.iter().map(|(_, d)| d.to_vec()));
        }
        got
    }

    #[test]
    fn every_send_path_delivers_every_datagram_intact() {
        for path in [SendPath::SendTo, SendPath::Sendmmsg, SendPath::Gso] {
            let (tx, rx, dest) = pair();
            tx.set_send_path(path);
            let buf = frame(150, 1200, 333);
            let sent = tx.send_batch(dest, &buf, 1200).unwrap();
            assert_eq!(sent, 150, "{path}");
            let got = receive_all(&rx, 150);
            let want: Vec<Vec<u8>> = buf.chunks(1200).map(<[u8]>::to_vec).collect();
            assert_eq!(got, want, "{path} (in use: {})", tx.send_path());
            eprintln!(
                "asked {path}, used {}, gro {}",
                tx.send_path(),
                rx.gro_enabled()
            );
        }
    }

    #[test]
    fn gso_is_detected_on_this_kernel_or_the_socket_falls_back() {
        let (tx, rx, dest) = pair();
        let detected = tx.send_path();
        let buf = frame(10, 1000, 1000);
        assert_eq!(tx.send_batch(dest, &buf, 1000).unwrap(), 10);
        assert_eq!(receive_all(&rx, 10).len(), 10);
        // Whatever was detected either still works or was replaced by a lower path.
        assert!(tx.send_path() <= detected);
    }

    #[test]
    fn iter_mut_hands_out_each_datagram() {
        let (tx, rx, dest) = pair();
        let buf = frame(20, 500, 100);
        tx.send_batch(dest, &buf, 500).unwrap();
        let mut batch = RecvBatch::new(64, 65_536);
        let mut seen = 0;
        while seen < 20 {
            rx.recv_batch(&mut batch).unwrap();
            for (from, d) in batch.iter_mut() {
                assert_eq!(from, tx.local_addr().unwrap());
                assert_eq!(u16::from_le_bytes([d[0], d[1]]) as usize, seen);
                d[0] ^= 0xFF; // writable
                seen += 1;
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let (tx, _rx, dest) = pair();
        let e = tx.send_batch(dest, &[1, 2, 3], 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(tx.send_batch(dest, &[], 100).unwrap(), 0);
    }

    #[test]
    fn receive_times_out_cleanly() {
        let (_tx, rx, _) = pair();
        rx.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut batch = RecvBatch::new(8, 2048);
        let e = rx.recv_batch(&mut batch).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{e}"
        );
        assert!(batch.is_empty());
    }

    #[test]
    fn socket_buffers_are_large() {
        let (tx, rx, _) = pair();
        // As root the FORCE options apply; otherwise the kernel caps at rmem/wmem_max.
        eprintln!(
            "sndbuf {} rcvbuf {}",
            tx.send_buffer_size().unwrap(),
            rx.recv_buffer_size().unwrap()
        );
        assert!(tx.send_buffer_size().unwrap() >= 200 * 1024);
    }
}
