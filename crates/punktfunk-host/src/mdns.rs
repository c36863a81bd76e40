//! DNS-SD over mDNS: `_nvstream._tcp` on the nvhttp port, so Moonlight lists the host without
//! an address typed in, and `_punktfunk._udp` for the native protocol with its port and the
//! certificate fingerprint in TXT records (a client can pin what it discovered).

use anyhow::{Context, Result};
use mdns_sd::{ServiceDaemon, ServiceInfo};
use std::net::IpAddr;

/// Service type of GameStream hosts.
pub const NVSTREAM: &str = "_nvstream._tcp.local.";
/// Service type of punktfunk/1 hosts.
pub const PUNKTFUNK: &str = "_punktfunk._udp.local.";

/// A running advertisement; dropping it withdraws the services.
pub struct Advertiser {
    daemon: ServiceDaemon,
    names: Vec<String>,
}

/// The DNS-SD instance name for a host name: letters, digits and `-` (spaces become `-`),
/// at most 63 bytes.
pub fn instance_name(host: &str) -> String {
    let s: String = host
        .chars()
        .map(|c| if c == ' ' { '-' } else { c })
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(63)
        .collect();
    if s.is_empty() {
        "punktfunk".into()
    } else {
        s
    }
}

impl Advertiser {
    /// Advertises the given services. `addrs` empty: every address of the machine.
    pub fn start(
        host: &str,
        addrs: &[IpAddr],
        gamestream_port: Option<u16>,
        punktfunk: Option<(u16, String)>,
    ) -> Result<Advertiser> {
        let daemon = ServiceDaemon::new().context("starting the mDNS responder")?;
        if addrs.iter().any(|a| a.is_loopback()) {
            // Answer on loopback too when bound there (a host on 127.0.0.1 is only reachable
            // from this machine, so that is where its clients browse).
            let _ = daemon.enable_interface(mdns_sd::IfKind::LoopbackV4);
        }
        let name = instance_name(host);
        let hostname = format!("{name}.local.");
        let mut names = Vec::new();
        let mut register = |ty: &str, port: u16, props: &[(&str, &str)]| -> Result<()> {
            let info = ServiceInfo::new(ty, &name, &hostname, addrs, port, props)
                .context("building the mDNS record")?;
            let info = if addrs.is_empty() {
                info.enable_addr_auto()
            } else {
                info
            };
            names.push(info.get_fullname().to_string());
            daemon
                .register(info)
                .context("registering the mDNS service")?;
            tracing::info!(service = ty, instance = %name, port, "advertised over mDNS");
            Ok(())
        };
        if let Some(p) = gamestream_port {
            register(NVSTREAM, p, &[])?;
        }
        if let Some((p, fp)) = &punktfunk {
            register(
                PUNKTFUNK,
                *p,
                &[("proto", "punktfunk/1"), ("fp", fp.as_str())],
            )?;
        }
        Ok(Advertiser { daemon, names })
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.daemon.unregister(n);
        }
        let _ = self.daemon.shutdown();
    }
}
