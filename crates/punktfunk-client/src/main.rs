//! `punktfunk-client`: parses flags into a validated configuration and runs a subcommand.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use punktfunk_client::pair::{pair, PairConfig, PairWith};
use punktfunk_client::{run, ClientConfig};
use punktfunk_core::control::{Codec, Mode};
use punktfunk_core::pairing::Pin;
use punktfunk_quic::{Fingerprint, Identity, KnownHosts, Trust, DEFAULT_PORT};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// punktfunk reference client: connects to a punktfunk host, decodes the stream, verifies every
/// frame and reports loss, recovery and latency.
#[derive(Debug, Parser)]
#[command(name = "punktfunk-client", version)]
struct Cli {
    /// Directory for this client's identity and the fingerprints of known hosts (default:
    /// $XDG_CONFIG_HOME/punktfunk or ~/.config/punktfunk).
    #[arg(long, global = true, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Log filter (e.g. info, debug). Also read from RUST_LOG.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream from a host for a while and report what arrived.
    Connect(Box<ConnectArgs>),
    /// Pair with a host: type the PIN `punktfunk-host pair` shows there (or give it with
    /// --pin-code), or ask the host's owner to approve this client (--no-pin). The host's
    /// fingerprint is stored, and later connections require it.
    Pair(PairArgs),
}

#[derive(Debug, clap::Args)]
struct PairArgs {
    /// Host to pair with, HOST[:PORT] (default port 47800).
    host: String,
    /// The PIN the host shows (without it, it is asked for on the terminal).
    #[arg(long, value_name = "PIN", conflicts_with = "no_pin")]
    pin_code: Option<String>,
    /// Pair without a PIN: wait until the host's owner runs `punktfunk-host clients approve
    /// ID` with the id printed here.
    #[arg(long)]
    no_pin: bool,
    /// Name the host stores for this client.
    #[arg(long, default_value = "punktfunk-client")]
    name: String,
}

#[derive(Debug, clap::Args)]
struct ConnectArgs {
    /// Host to connect to, HOST[:PORT] (default port 47800).
    host: String,
    /// Requested mode, WIDTHxHEIGHT[@FPS] or WIDTHxHEIGHTxFPS.
    #[arg(long, default_value = "1280x720@60")]
    mode: String,
    /// Codecs to accept, preferred first (h264, hevc, av1).
    #[arg(long, value_delimiter = ',', default_value = "h264")]
    codec: Vec<String>,
    /// Requested video bitrate, kbit/s (0 = the host's default).
    #[arg(long, default_value_t = 0)]
    bitrate: u32,
    /// Requested FEC parity percentage (default: the host's).
    #[arg(long)]
    fec: Option<u8>,
    /// Seconds to stream.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Write the received video as a playable elementary stream (.h264 / .hevc / .obu).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write the last decoded frame as a PNG.
    #[arg(long, value_name = "FILE")]
    png: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Trust only this host certificate fingerprint (SHA-256, 64 hex digits). Without it the
    /// first connection stores the host's fingerprint and later ones require it.
    #[arg(long, value_name = "SHA256")]
    pin: Option<String>,
    /// Send the data plane through this address (a relay or an impairment proxy) instead of
    /// the host's data port.
    #[arg(long, value_name = "ADDR")]
    data_via: Option<SocketAddr>,
    /// Ask the host for another mode mid-stream: SECS:MODE, e.g. 3:640x360@30.
    #[arg(long, value_name = "SECS:MODE")]
    reconfigure: Option<String>,
    /// Name the host shows in its logs.
    #[arg(long, default_value = "punktfunk-client")]
    name: String,
    /// Send the input events in FILE while streaming: one per line, `MS EVENT ARGS` with MS
    /// after streaming starts, e.g. `500 move 10 -5`, `600 abs 320 240 640 480`,
    /// `700 button left down`, `800 scroll 0 -120`, `900 key 30 down shift`, `1000 text hello`.
    #[arg(long, value_name = "FILE")]
    input_script: Option<PathBuf>,
    /// Run this app of the host's catalog (apps.toml) on the stream's output, by title or id;
    /// it ends with the stream. Without it the stream shows the desktop as it is.
    #[arg(long, value_name = "TITLE")]
    app: Option<String>,
    /// The pictures carry the stamps of an app drawing them (punktfunk-desktop-probe), not the
    /// host's test pattern: check that they only move forward and time each new one from when
    /// the app drew it (app render -> decoded).
    #[arg(long)]
    app_stamps: bool,
}

fn config_dir(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = explicit {
        return Ok(d);
    }
    punktfunk_quic::identity::default_config_dir(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
    .context("no config directory: give --config-dir, or set XDG_CONFIG_HOME or HOME to an absolute path")
}

fn resolve(host: &str) -> Result<(SocketAddr, String)> {
    let with_port = if host.parse::<SocketAddr>().is_ok()
        || host
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok() && !h.contains(':'))
    {
        host.to_string()
    } else if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{DEFAULT_PORT}")
    } else {
        format!("{host}:{DEFAULT_PORT}")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {host:?}"))?
        .next()
        .with_context(|| format!("{host:?} resolves to no address"))?;
    Ok((addr, with_port))
}

fn connect_config(a: ConnectArgs, dir: PathBuf) -> Result<(ClientConfig, bool)> {
    let (host, host_key) = resolve(&a.host)?;
    let trust = match &a.pin {
        Some(p) => Trust::Pinned(p.parse::<Fingerprint>().context("--pin")?),
        None => Trust::Tofu {
            known_hosts: KnownHosts::new(dir.join("client/known_hosts")),
            host_key,
        },
    };
    let (identity, created) = load_identity(&dir)?;
    if created {
        tracing::info!(fingerprint = %identity.fingerprint(), dir = %dir.join("client").display(), "created this client's identity");
    }
    let mode = Mode::parse(&a.mode).map_err(anyhow::Error::msg)?;
    let codecs = a
        .codec
        .iter()
        .map(|c| {
            Codec::from_name(c).with_context(|| format!("unknown codec {c:?} (h264, hevc, av1)"))
        })
        .collect::<Result<Vec<_>>>()?;
    if codecs.is_empty() {
        bail!("--codec lists no codec");
    }
    if !(a.seconds.is_finite() && a.seconds > 0.0 && a.seconds < 86_400.0) {
        bail!("--seconds must be between 0 and 86400");
    }
    let reconfigure = match &a.reconfigure {
        None => None,
        Some(s) => {
            let (secs, m) = s
                .split_once(':')
                .context("--reconfigure takes SECS:MODE, e.g. 3:640x360@30")?;
            let secs: f64 = secs
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .context("--reconfigure: bad seconds")?;
            Some((
                Duration::from_secs_f64(secs),
                Mode::parse(m).map_err(anyhow::Error::msg)?,
            ))
        }
    };
    let input = match &a.input_script {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--input-script {}", path.display()))?;
            punktfunk_client::input_script::parse(&text)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--input-script {}", path.display()))?
        }
    };
    let cfg = ClientConfig {
        host,
        host_label: a.host.clone(),
        trust,
        identity,
        mode,
        codecs,
        bitrate_kbps: a.bitrate,
        fec_percent: a.fec,
        duration: Duration::from_secs_f64(a.seconds),
        out: a.out,
        png: a.png,
        data_via: a.data_via,
        reconfigure,
        name: a.name,
        app: a.app,
        app_stamps: a.app_stamps,
        input,
    };
    Ok((cfg, a.json))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files or pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match main_result(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("punktfunk-client: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main_result(cli: Cli) -> Result<()> {
    let dir = config_dir(cli.config_dir)?;
    match cli.command {
        Command::Connect(a) => {
            let (cfg, json) = connect_config(*a, dir)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let report = rt.block_on(run(cfg))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
        Command::Pair(a) => {
            let (host, host_key) = resolve(&a.host)?;
            let with = if a.no_pin {
                PairWith::Approval
            } else {
                let typed = match a.pin_code {
                    Some(p) => p,
                    None => {
                        eprint!("PIN shown by punktfunk-host pair on {}: ", a.host);
                        let mut line = String::new();
                        std::io::stdin()
                            .read_line(&mut line)
                            .context("reading the PIN")?;
                        line
                    }
                };
                PairWith::Pin(Pin::parse(&typed).context("the PIN")?)
            };
            let (identity, created) = load_identity(&dir)?;
            if created {
                tracing::info!(fingerprint = %identity.fingerprint(), "created this client's identity");
            }
            let cfg = PairConfig {
                host,
                host_key,
                known_hosts: KnownHosts::new(dir.join("client/known_hosts")),
                identity,
                name: a.name,
                with,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let paired = rt.block_on(pair(cfg, |id| {
                eprintln!(
                    "Waiting for approval on the host: punktfunk-host clients approve {id} \
                     (check that the id matches there)"
                )
            }))?;
            println!(
                "Paired with {} (host fingerprint {}); this client is {} there",
                a.host, paired.host_fingerprint, paired.id
            );
            Ok(())
        }
    }
}

fn load_identity(dir: &std::path::Path) -> Result<(Identity, bool)> {
    let identity_dir = dir.join("client");
    Identity::load_or_create_client(&identity_dir)
        .with_context(|| format!("this client's identity in {}", identity_dir.display()))
}
