//! `punktfunk-host doctor`: what this machine offers and whether a stream could start here.
//!
//! It reads the same configuration as `serve` and reports, without starting anything: the
//! desktop environment found, every backend of every desktop edge with its probe outcome, the
//! backend each edge would get under the configured preferences (the same resolvers a session
//! plan uses), every encoder tried per codec with why the others do not open
//! ([`HostCaps::probe`]), and whether each port the configuration would bind is free (bound and
//! released at once). The [`Report`] is plain data: `render` for people, serde for `--json`.
//!
//! What it does not do: hold a port, create an identity, or open a compositor connection
//! beyond what the probes do.

use crate::caps::HostCaps;
use crate::serve::ServeConfig;
use punktfunk_desktop::probe::{BackendId, Preference};
use punktfunk_desktop::{audio, capture, inject, vdisplay, Candidate, Chosen, NoBackend};
use serde::Serialize;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

/// What `doctor` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The configuration file read (none: defaults and flags only).
    pub config_file: Option<PathBuf>,
    /// One line on the desktop environment.
    pub desktop: String,
    /// Whether hardware encoders were tried before software ones.
    pub hardware_first: bool,
    /// Encoders per codec and every desktop backend's probe.
    pub caps: HostCaps,
    /// The backend each edge would get under the configuration.
    pub chosen: Choices,
    /// The configured punktfunk/1 codecs that have an encoder here, in the configured order.
    pub offered: Vec<&'static str>,
    /// Every port the configuration binds.
    pub ports: Vec<PortCheck>,
    /// Why a stream could not start (empty when one could).
    pub problems: Vec<String>,
    /// What would make `serve` fail although a stream is possible (ports in use).
    pub warnings: Vec<String>,
    /// Whether `serve` could start and stream: no problems and no warnings.
    pub ready: bool,
}

/// The choice of every edge.
#[derive(Debug, Clone, Serialize)]
pub struct Choices {
    /// Virtual display.
    pub display: EdgeChoice,
    /// Capture.
    pub capture: EdgeChoice,
    /// Input injection.
    pub input: EdgeChoice,
    /// Audio.
    pub audio: EdgeChoice,
}

/// One edge's choice under the configured preference.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeChoice {
    /// The configured preference: `auto` or the list, comma-separated.
    pub preference: String,
    /// The backend chosen, if any can be used.
    pub backend: Option<&'static str>,
    /// Why this one, or why none.
    pub reason: String,
    /// The candidates considered, in the order tried.
    pub candidates: Vec<Candidate>,
}

impl EdgeChoice {
    fn new<B: BackendId>(preference: &Preference<B>, chosen: Result<Chosen<B>, NoBackend>) -> Self {
        let preference = match preference {
            Preference::Auto => "auto".to_string(),
            Preference::Only(list) => list.iter().map(|b| b.name()).collect::<Vec<_>>().join(","),
        };
        match chosen {
            Ok(c) => EdgeChoice {
                preference,
                backend: Some(c.backend.name()),
                reason: c.reason,
                candidates: c.candidates,
            },
            Err(e) => EdgeChoice {
                preference,
                backend: None,
                reason: e.to_string(),
                candidates: e.candidates,
            },
        }
    }
}

/// UDP or TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Whether a port can be bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum PortStatus {
    /// Bound and released: free now.
    Free,
    /// Port 0: the system picks a free one at start, nothing to check.
    Any,
    /// Something else holds it.
    InUse(String),
    /// It cannot be bound for another reason (a privileged port, an address not on this
    /// machine).
    Unusable(String),
}

/// One port the configuration binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortCheck {
    /// What it is for.
    pub what: &'static str,
    /// UDP or TCP.
    pub transport: Transport,
    /// The address `serve` binds.
    pub address: SocketAddr,
    /// What binding it now gave.
    pub status: PortStatus,
}

/// The ports `serve` binds under `cfg`: punktfunk/1's QUIC and data-plane UDP ports, and with
/// GameStream its HTTP, HTTPS and RTSP TCP ports and video, control and audio UDP ports (on the
/// QUIC address, as `serve` binds them).
pub fn ports(cfg: &ServeConfig) -> Vec<(&'static str, Transport, SocketAddr)> {
    let mut v = vec![
        ("punktfunk/1 QUIC", Transport::Udp, cfg.listen),
        ("punktfunk/1 data plane", Transport::Udp, cfg.data),
    ];
    if let Some(gs) = &cfg.gamestream {
        use punktfunk_gamestream::ports as p;
        let ip = cfg.listen.ip();
        for (what, transport, offset) in [
            ("GameStream HTTP", Transport::Tcp, 0),
            ("GameStream HTTPS", Transport::Tcp, p::HTTPS_OFFSET),
            ("GameStream RTSP", Transport::Tcp, p::RTSP_OFFSET),
            ("GameStream video", Transport::Udp, p::VIDEO_OFFSET),
            ("GameStream control", Transport::Udp, p::CONTROL_OFFSET),
            ("GameStream audio", Transport::Udp, p::AUDIO_OFFSET),
        ] {
            // The configuration keeps the base port where every offset fits.
            if let Some(port) = p::derive(gs.base_port, offset) {
                v.push((what, transport, SocketAddr::new(ip, port)));
            }
        }
    }
    v
}

/// Binds `address` and lets it go again.
pub fn check_port(transport: Transport, address: SocketAddr) -> PortStatus {
    if address.port() == 0 {
        return PortStatus::Any;
    }
    // std's TcpListener sets SO_REUSEADDR as tokio's does, so a port that only has connections
    // in TIME_WAIT reads as free here just as serve would find it.
    let bound = match transport {
        Transport::Udp => std::net::UdpSocket::bind(address).map(drop),
        Transport::Tcp => std::net::TcpListener::bind(address).map(drop),
    };
    match bound {
        Ok(()) => PortStatus::Free,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => PortStatus::InUse(e.to_string()),
        Err(e) => PortStatus::Unusable(e.to_string()),
    }
}

/// Probes this machine (encoders and desktop backends) and checks the configuration against it.
pub fn examine(
    cfg: &ServeConfig,
    config_file: Option<PathBuf>,
    env: punktfunk_desktop::DesktopEnv,
) -> Report {
    let caps = HostCaps::probe(env, cfg.prefer_hardware);
    let ports = ports(cfg)
        .into_iter()
        .map(|(what, transport, address)| PortCheck {
            what,
            transport,
            address,
            status: check_port(transport, address),
        })
        .collect();
    report(cfg, config_file, caps, ports)
}

/// Judges probed capabilities and port checks against the configuration.
pub fn report(
    cfg: &ServeConfig,
    config_file: Option<PathBuf>,
    caps: HostCaps,
    ports: Vec<PortCheck>,
) -> Report {
    let env = &caps.env;
    let prefs = &cfg.desktop;
    let chosen = Choices {
        display: EdgeChoice::new(&prefs.display, vdisplay::resolve(env, &prefs.display)),
        capture: EdgeChoice::new(&prefs.capture, capture::resolve(env, &prefs.capture)),
        input: EdgeChoice::new(&prefs.input, inject::resolve(env, &prefs.input)),
        audio: EdgeChoice::new(&prefs.audio, audio::resolve(env, &prefs.audio)),
    };
    let offered: Vec<&'static str> = caps
        .available(&cfg.codecs)
        .into_iter()
        .map(|c| c.name())
        .collect();
    let mut problems = Vec::new();
    if offered.is_empty() {
        problems.push(format!(
            "none of the codecs offered ({}) has an encoder that opens here",
            cfg.codecs
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for edge in [
        &chosen.display,
        &chosen.capture,
        &chosen.input,
        &chosen.audio,
    ] {
        if edge.backend.is_none() {
            problems.push(edge.reason.clone());
        }
    }
    let mut warnings: Vec<String> = Vec::new();
    // Two servers on one port: each binds alone, but serve would fail on the second.
    for (i, a) in ports.iter().enumerate() {
        if let Some(b) = ports[..i].iter().find(|b| {
            b.transport == a.transport
                && b.address.port() == a.address.port()
                && a.address.port() != 0
        }) {
            warnings.push(format!(
                "{} port {} is configured twice ({} and {})",
                a.transport.name(),
                a.address.port(),
                b.what,
                a.what
            ));
        }
    }
    warnings.extend(ports.iter().filter_map(|p| {
        let (how, why) = match &p.status {
            PortStatus::InUse(why) => ("is in use", why),
            PortStatus::Unusable(why) => ("cannot be bound", why),
            PortStatus::Free | PortStatus::Any => return None,
        };
        Some(format!(
            "{} port {} ({}, {}) {how}: {why}",
            p.transport.name(),
            p.address.port(),
            p.what,
            p.address
        ))
    }));
    Report {
        config_file,
        desktop: caps.env.summary(),
        ready: problems.is_empty() && warnings.is_empty(),
        hardware_first: cfg.prefer_hardware,
        caps,
        chosen,
        offered,
        ports,
        problems,
        warnings,
    }
}

impl Report {
    /// The report for a person.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "configuration: {}",
            match &self.config_file {
                Some(p) => p.display().to_string(),
                None => "no file read (defaults and flags)".into(),
            }
        );
        let _ = writeln!(s, "desktop: {}", self.desktop);
        let edges = &self.caps.edges;
        for (title, all, choice) in [
            ("virtual display", &edges.display, &self.chosen.display),
            ("capture", &edges.capture, &self.chosen.capture),
            ("input", &edges.inject, &self.chosen.input),
            ("audio", &edges.audio, &self.chosen.audio),
        ] {
            let _ = writeln!(s, "\n{title} (preference: {}):", choice.preference);
            for c in all {
                let _ = match &c.probe {
                    punktfunk_desktop::Probe::Available => {
                        writeln!(s, "  {:<12} available", c.backend)
                    }
                    punktfunk_desktop::Probe::Unavailable(why) => {
                        writeln!(s, "  {:<12} unavailable: {why}", c.backend)
                    }
                };
            }
            let _ = match choice.backend {
                Some(b) => writeln!(s, "  -> {b}"),
                None => writeln!(s, "  -> none: {}", choice.reason),
            };
        }
        let _ = writeln!(
            s,
            "\nvideo encoders (tried in order; hardware first: {}):",
            if self.hardware_first { "yes" } else { "no" }
        );
        for c in &self.caps.codecs {
            let _ = writeln!(s, "  {} -> {}", c.codec, c.encoder.unwrap_or("none opens"));
            for (name, why) in &c.tried {
                let _ = match why {
                    None => writeln!(s, "    {name:<16} opens"),
                    Some(why) => writeln!(s, "    {name:<16} does not open: {why}"),
                };
            }
        }
        let _ = writeln!(s, "\nports:");
        for p in &self.ports {
            let status = match &p.status {
                PortStatus::Free => "free".to_string(),
                PortStatus::Any => "any free port, picked at start".to_string(),
                PortStatus::InUse(why) => format!("IN USE: {why}"),
                PortStatus::Unusable(why) => format!("cannot be bound: {why}"),
            };
            let _ = writeln!(
                s,
                "  {} {:<22} {:<24} {status}",
                p.transport.name(),
                p.address,
                p.what
            );
        }
        let _ = writeln!(s);
        if self.ready {
            let _ = writeln!(
                s,
                "ready: a stream can start (punktfunk/1 offers {}; display {}, capture {}, input {}, audio {})",
                self.offered.join(", "),
                self.chosen.display.backend.unwrap_or("-"),
                self.chosen.capture.backend.unwrap_or("-"),
                self.chosen.input.backend.unwrap_or("-"),
                self.chosen.audio.backend.unwrap_or("-"),
            );
        } else {
            let _ = writeln!(s, "not ready:");
            for p in &self.problems {
                let _ = writeln!(s, "  problem: {p}");
            }
            for w in &self.warnings {
                let _ = writeln!(s, "  warning: {w}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{resolve, ServeFlags};
    use punktfunk_core::control::Codec;
    use punktfunk_desktop::DesktopEnv;

    fn cfg(flags: ServeFlags) -> ServeConfig {
        resolve(None, &flags, "/nonexistent".into()).unwrap().serve
    }

    #[test]
    fn ports_follow_the_configuration() {
        let c = cfg(ServeFlags {
            listen: Some("127.0.0.1:5000".parse().unwrap()),
            ..Default::default()
        });
        let p: Vec<_> = ports(&c)
            .into_iter()
            .map(|(_, t, a)| (t, a.port()))
            .collect();
        assert_eq!(p, [(Transport::Udp, 5000), (Transport::Udp, 5001)]);
        let c = cfg(ServeFlags {
            gamestream: true,
            gamestream_port: Some(47989),
            data_port: Some(6000),
            ..Default::default()
        });
        let p: Vec<_> = ports(&c)
            .into_iter()
            .map(|(_, t, a)| (t, a.port()))
            .collect();
        assert_eq!(
            p,
            [
                (Transport::Udp, 47800),
                (Transport::Udp, 6000),
                (Transport::Tcp, 47989),
                (Transport::Tcp, 47984),
                (Transport::Tcp, 48010),
                (Transport::Udp, 47998),
                (Transport::Udp, 47999),
                (Transport::Udp, 48000),
            ]
        );
    }

    #[test]
    fn a_taken_port_is_in_use_and_a_released_one_free() {
        let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        assert!(matches!(
            check_port(Transport::Udp, addr),
            PortStatus::InUse(_)
        ));
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taddr = tcp.local_addr().unwrap();
        assert!(matches!(
            check_port(Transport::Tcp, taddr),
            PortStatus::InUse(_)
        ));
        drop((held, tcp));
        assert_eq!(check_port(Transport::Udp, addr), PortStatus::Free);
        assert_eq!(check_port(Transport::Tcp, taddr), PortStatus::Free);
        assert_eq!(
            check_port(Transport::Udp, "127.0.0.1:0".parse().unwrap()),
            PortStatus::Any
        );
    }

    #[test]
    fn ready_needs_an_encoder_a_backend_per_edge_and_free_ports() {
        let env = DesktopEnv::default();
        let c = cfg(ServeFlags::default());
        let good = report(
            &c,
            None,
            HostCaps::assumed(env.clone(), &[(Codec::H264, "libx264")]),
            vec![],
        );
        assert!(good.ready, "{good:?}");
        assert_eq!(good.offered, ["h264"]);
        assert_eq!(good.chosen.capture.backend, Some("testpattern"));
        assert!(good.render().contains("ready: a stream can start"));

        let no_encoder = report(&c, None, HostCaps::assumed(env.clone(), &[]), vec![]);
        assert!(!no_encoder.ready);
        assert!(no_encoder.problems[0].starts_with("none of the codecs offered"));

        let only_pipewire = cfg(ServeFlags {
            capture: Some("pipewire".into()),
            ..Default::default()
        });
        let r = report(
            &only_pipewire,
            None,
            HostCaps::assumed(env.clone(), &[(Codec::H264, "libx264")]),
            vec![],
        );
        assert!(!r.ready);
        assert_eq!(r.chosen.capture.backend, None);
        assert_eq!(r.chosen.capture.preference, "pipewire");
        assert!(
            r.problems[0].starts_with("no capture backend can be used here"),
            "{:?}",
            r.problems
        );

        let taken = PortCheck {
            what: "punktfunk/1 QUIC",
            transport: Transport::Udp,
            address: "0.0.0.0:47800".parse().unwrap(),
            status: PortStatus::InUse("Address already in use (os error 98)".into()),
        };
        let r = report(
            &c,
            None,
            HostCaps::assumed(env, &[(Codec::H264, "libx264")]),
            vec![taken],
        );
        assert!(!r.ready && r.problems.is_empty());
        assert_eq!(
            r.warnings,
            ["udp port 47800 (punktfunk/1 QUIC, 0.0.0.0:47800) is in use: Address already in use (os error 98)"]
        );
        assert!(r.render().contains("warning: udp port 47800"));

        let same = cfg(ServeFlags {
            data_port: Some(47800),
            ..Default::default()
        });
        let free = |(what, transport, address)| PortCheck {
            what,
            transport,
            address,
            status: PortStatus::Free,
        };
        let r = report(
            &same,
            None,
            HostCaps::assumed(DesktopEnv::default(), &[(Codec::H264, "libx264")]),
            ports(&same).into_iter().map(free).collect(),
        );
        assert!(!r.ready);
        assert_eq!(
            r.warnings,
            ["udp port 47800 is configured twice (punktfunk/1 QUIC and punktfunk/1 data plane)"]
        );
    }
}
