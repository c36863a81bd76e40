//! A real `punktfunk-host serve --gamestream` process when it runs out of file descriptors:
//! its servers must wait, not spin, while `accept` fails, and serve again once descriptors
//! are free.

mod common;
use common::free_base;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The host's descriptor limit: enough to start (it holds about 20 when idle), few enough to
/// run out quickly.
const NOFILE: u64 = 64;

struct Host {
    child: Child,
    base: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Host {
    /// `serve --gamestream` on a free base port with at most `nofile` descriptors.
    fn start(dir: &Path, nofile: u64) -> Host {
        let base = free_base();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_punktfunk-host"));
        cmd.args(["--config-dir", dir.to_str().unwrap(), "--log", "info"])
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--gamestream",
                "--no-mdns",
            ])
            .args(["--gamestream-port", &base.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits; the
        // closure allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: nofile as libc::rlim_t,
                    rlim_max: nofile as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let log = punktfunk_testenv::collect_lines(child.stderr.take().unwrap());
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(
            line.contains("listening"),
            "{line}\n{}",
            log.lock().unwrap().join("\n")
        );
        std::thread::spawn(move || for _ in out.lines() {});
        Host { child, base, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Descriptors the host holds now below the limit, i.e. of those it can allocate (one
    /// it inherited above the limit takes no slot).
    fn open_fds(&self) -> u64 {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .filter(|fd| *fd < NOFILE)
            .count() as u64
    }

    /// CPU time the host has used (user + system), in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the parenthesised command name, which may itself contain spaces:
        // utime and stime are fields 14 and 15 of the line, 12 and 13 of the rest.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        ticks as f64 / hz as f64
    }

    fn log_lines_with(&self, part: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(part))
            .count()
    }

    /// `GET /serverinfo` over HTTP; `None` if no complete answer arrives within `timeout`.
    fn serverinfo(&self, timeout: Duration) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.base)).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        write!(s, "GET /serverinfo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut v = Vec::new();
        s.read_to_end(&mut v).ok()?;
        let text = String::from_utf8_lossy(&v).into_owned();
        text.starts_with("HTTP/1.1 200").then_some(text)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to the host's nvhttp port from the loopback address `ip`.
fn connect_from(ip: &str, port: u16) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{ip}:0").parse().unwrap();
    s.bind(&local.into()).unwrap();
    let to: std::net::SocketAddr = ("127.0.0.1".parse::<std::net::IpAddr>().unwrap(), port).into();
    s.connect(&to.into()).unwrap();
    s.into()
}

#[test]
fn out_of_file_descriptors_the_servers_wait_instead_of_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path(), NOFILE);
    assert!(host.serverinfo(Duration::from_secs(10)).is_some());
    // Connections the host accepts and holds (it waits 10 s for each request head) until it
    // has no descriptor left, from many addresses (the host admits only a few connections
    // per address) …
    let mut conns = Vec::new();
    let mut next = 0u32;
    let mut connect = || {
        next += 1;
        connect_from(&format!("127.0.2.{}", 1 + next % 250), host.base)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while host.open_fds() < NOFILE {
        assert!(
            Instant::now() < deadline,
            "the host never ran out of descriptors ({} open, {} connections)",
            host.open_fds(),
            conns.len()
        );
        for _ in 0..4 {
            conns.push(connect());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // … and some it cannot accept, which keep its listener readable.
    for _ in 0..16 {
        conns.push(connect());
    }
    std::thread::sleep(Duration::from_millis(300));
    let (cpu0, t0) = (host.cpu_seconds(), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let share = (host.cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64();
    eprintln!(
        "host CPU while accept failed: {:.1} % of a core, {} descriptors open",
        share * 100.0,
        host.open_fds()
    );
    assert!(
        share < 0.10,
        "the host used {:.0} % of a core while accept failed",
        share * 100.0
    );
    assert_eq!(
        host.log_lines_with("accept failed"),
        1,
        "one warning per burst of failures:\n{}",
        host.log.lock().unwrap().join("\n")
    );
    // Descriptors free again: the host serves again, within the back-off's longest wait plus
    // the time to work through the queued connections.
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(15);
    let info = loop {
        if let Some(info) = host.serverinfo(Duration::from_secs(3)) {
            break info;
        }
        assert!(
            Instant::now() < deadline,
            "the host does not answer /serverinfo again:\n{}",
            host.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        info.contains("<state>SUNSHINE_SERVER_FREE</state>"),
        "{info}"
    );
}
