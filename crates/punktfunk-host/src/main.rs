//! `punktfunk-host`: parses flags into a validated configuration and runs a subcommand.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use punktfunk_core::control::{Codec, Mode};
use punktfunk_core::crypto::CipherSuite;
use punktfunk_host::plan::DesktopPrefs;
use punktfunk_host::proto::gamestream::clients::ClientStore;
use punktfunk_host::serve::{serve, GameStreamOptions, ServeConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// punktfunk streaming host: serves punktfunk/1 clients over QUIC with encoded video on an
/// encrypted, FEC-protected UDP data plane.
#[derive(Debug, Parser)]
#[command(name = "punktfunk-host", version)]
struct Cli {
    /// Directory for the host identity (default: $XDG_CONFIG_HOME/punktfunk or ~/.config/punktfunk).
    #[arg(long, global = true, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Log filter (e.g. info, debug, punktfunk_host=debug). Also read from RUST_LOG.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Listen for clients and stream to each (sessions back to back or concurrently).
    Serve(Box<ServeArgs>),
    /// Print the host certificate's SHA-256 fingerprint (creating the identity if needed), for
    /// clients to pin with `--pin`.
    Fingerprint,
    /// Enter the PIN a Moonlight client shows, completing its pairing with the running host.
    Pin {
        /// The 4 digits the client shows.
        pin: String,
    },
    /// Manage paired GameStream (Moonlight) clients.
    Clients {
        #[command(subcommand)]
        action: ClientsAction,
    },
}

#[derive(Debug, Subcommand)]
enum ClientsAction {
    /// List paired clients.
    List,
    /// Revoke a client (by the id `list` shows); it gets "not paired" from its next request on.
    Remove {
        /// Client id (or at least 6 leading digits of its fingerprint).
        id: String,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// QUIC control-plane address.
    #[arg(long, default_value = "0.0.0.0:47800")]
    listen: SocketAddr,
    /// Data-plane UDP port (default: the QUIC port + 1; 0 = any free port).
    #[arg(long)]
    data_port: Option<u16>,
    /// Most sessions at once; further clients are refused as busy.
    #[arg(long, default_value_t = 4)]
    max_sessions: usize,
    /// Exit after this many sessions have ended (default: serve forever).
    #[arg(long, value_name = "N")]
    sessions: Option<usize>,
    /// Seconds a client has to complete the handshake.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    handshake_timeout: f64,
    /// Codecs offered, in preference order (h264, hevc, av1).
    #[arg(long, value_delimiter = ',', default_value = "h264,hevc,av1")]
    codecs: Vec<String>,
    /// Largest mode served, WIDTHxHEIGHT@FPS.
    #[arg(long, default_value = "3840x2160@240")]
    max_mode: String,
    /// Bitrate when the client asks for none, kbit/s.
    #[arg(long, default_value_t = 10_000)]
    bitrate: u32,
    /// Highest bitrate a client may ask for, kbit/s (the lowest is 250).
    #[arg(long, default_value_t = 150_000)]
    max_bitrate: u32,
    /// FEC parity percentage when the client asks for none.
    #[arg(long, default_value_t = 20)]
    fec: u16,
    /// Largest shard payload in bytes (datagram = shard + 52 bytes of header and tag).
    #[arg(long, default_value_t = 1400)]
    shard: u16,
    /// Packet cipher: aes128 or aes256.
    #[arg(long, default_value = "aes128")]
    cipher: String,
    /// Do not try hardware encoders (NVENC, VAAPI) before software.
    #[arg(long)]
    no_hardware: bool,
    /// Write each ended session's per-stage timings (render, convert, encode, send path) and the
    /// host's CPU time per frame to this JSON file.
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
    /// Also serve stock Moonlight clients (GameStream: nvhttp pairing and app control). Its PIN
    /// pairing is weaker than punktfunk/1's pinned certificates; see the README.
    #[arg(long)]
    gamestream: bool,
    /// GameStream HTTP port; HTTPS is this − 5, RTSP this + 21, video/control/audio + 9/10/11.
    #[arg(long, default_value_t = 47989, value_name = "PORT")]
    gamestream_port: u16,
    /// FEC percentage for GameStream video (parity shards per 100 data shards; 0 = none).
    #[arg(long, default_value_t = 20, value_name = "PERCENT")]
    gamestream_fec: u32,
    /// Testing aid: drop this fraction (0..1) of outgoing GameStream video datagrams, to see a
    /// client recover through FEC.
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    gamestream_drop_video: f64,
    /// Testing aid: the same for GameStream audio datagrams (data and FEC packets alike).
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    gamestream_drop_audio: f64,
    /// Testing aid: answer each change of a client gamepad's triggers with rumble on that pad
    /// (left trigger drives the low-frequency motor, right the high), to exercise the rumble
    /// path without a game.
    #[arg(long)]
    gamestream_rumble_echo: bool,
    /// Name Moonlight shows for this host (default: the machine's host name).
    #[arg(long)]
    name: Option<String>,
    /// Do not advertise the host over mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// Virtual-display backends to try, in order (auto, or a list of sway, mutter, xorg,
    /// existing).
    #[arg(long, default_value = "auto", value_name = "LIST")]
    display: String,
    /// Capture backends to try (auto, or a list of screencopy, pipewire, xshm, testpattern).
    #[arg(long, default_value = "auto", value_name = "LIST")]
    capture: String,
    /// Input injectors to try (auto, or a list of wlr, mutter, xtest, uinput, log).
    #[arg(long, default_value = "auto", value_name = "LIST")]
    input: String,
    /// Audio sources to try (auto, or a list of pipewire, tone).
    #[arg(long, default_value = "auto", value_name = "LIST")]
    audio: String,
    /// On a still desktop, send the last picture again after this many milliseconds without a
    /// new one.
    #[arg(long, default_value_t = 100, value_name = "MS")]
    min_frame_interval: u64,
}

fn config_dir(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = explicit {
        return Ok(d);
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("punktfunk"));
    }
    let home = std::env::var_os("HOME")
        .context("neither --config-dir, XDG_CONFIG_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".config/punktfunk"))
}

fn serve_config(a: ServeArgs, dir: PathBuf) -> Result<ServeConfig> {
    let codecs = a
        .codecs
        .iter()
        .map(|c| {
            Codec::from_name(c).with_context(|| format!("unknown codec {c:?} (h264, hevc, av1)"))
        })
        .collect::<Result<Vec<_>>>()?;
    if codecs.is_empty() {
        bail!("--codecs lists no codec");
    }
    let max_mode = Mode::parse(&a.max_mode).map_err(anyhow::Error::msg)?;
    let suite = match a.cipher.as_str() {
        "aes128" => CipherSuite::AES_128_GCM,
        "aes256" => CipherSuite::AES_256_GCM,
        other => bail!("unknown cipher {other:?} (aes128, aes256)"),
    };
    if !(a.handshake_timeout.is_finite() && a.handshake_timeout > 0.0) {
        bail!("--handshake-timeout must be a positive number of seconds");
    }
    if a.shard < 256 || a.shard > 8900 {
        bail!("--shard {} outside 256..=8900", a.shard);
    }
    if a.fec > 200 {
        bail!("--fec {} above 200%", a.fec);
    }
    if a.gamestream && !(1019..=65514).contains(&a.gamestream_port) {
        bail!(
            "--gamestream-port {} outside 1019..=65514 (ports from it − 5 to it + 21 are used)",
            a.gamestream_port
        );
    }
    if a.gamestream_fec > 255 {
        bail!("--gamestream-fec {} above 255 %", a.gamestream_fec);
    }
    for (name, v) in [
        ("video", a.gamestream_drop_video),
        ("audio", a.gamestream_drop_audio),
    ] {
        if !(0.0..1.0).contains(&v) {
            bail!("--gamestream-drop-{name} must be in 0..1");
        }
    }
    if a.max_sessions == 0 {
        bail!("--max-sessions must be at least 1");
    }
    let min_rate = 250.min(a.max_bitrate);
    let mut data = a.listen;
    data.set_port(match a.data_port {
        Some(p) => p,
        None if a.listen.port() == 0 => 0,
        None => a
            .listen
            .port()
            .checked_add(1)
            .context("--listen port 65535 leaves no room for the data port; give --data-port")?,
    });
    Ok(ServeConfig {
        listen: a.listen,
        data,
        config_dir: dir,
        max_sessions: a.max_sessions,
        session_limit: a.sessions,
        handshake_timeout: Duration::from_secs_f64(a.handshake_timeout),
        codecs,
        max_mode,
        default_bitrate_kbps: a.bitrate.clamp(min_rate, a.max_bitrate),
        bitrate_range_kbps: (min_rate, a.max_bitrate),
        fec_percent: a.fec,
        shard_len: a.shard,
        suite,
        prefer_hardware: !a.no_hardware,
        stats_json: a.stats_json,
        gamestream: a.gamestream.then(|| GameStreamOptions {
            base_port: a.gamestream_port,
            hostname: a.name.clone().unwrap_or_else(machine_name),
            fec_percent: a.gamestream_fec,
            aids: punktfunk_host::proto::gamestream::stream::TestAids {
                drop_video: a.gamestream_drop_video,
                drop_audio: a.gamestream_drop_audio,
                rumble_echo: a.gamestream_rumble_echo,
            },
            max_mode,
        }),
        mdns: !a.no_mdns,
        desktop: desktop_prefs(
            &a.display,
            &a.capture,
            &a.input,
            &a.audio,
            a.min_frame_interval,
        )?,
    })
}

fn desktop_prefs(
    display: &str,
    capture: &str,
    input: &str,
    audio: &str,
    min_frame_interval_ms: u64,
) -> Result<DesktopPrefs> {
    use punktfunk_desktop::probe::parse_preference;
    if !(1..=10_000).contains(&min_frame_interval_ms) {
        bail!("--min-frame-interval {min_frame_interval_ms} outside 1..=10000 ms");
    }
    Ok(DesktopPrefs {
        display: parse_preference(display).map_err(anyhow::Error::msg)?,
        capture: parse_preference(capture).map_err(anyhow::Error::msg)?,
        input: parse_preference(input).map_err(anyhow::Error::msg)?,
        audio: parse_preference(audio).map_err(anyhow::Error::msg)?,
        min_frame_interval: Duration::from_millis(min_frame_interval_ms),
    })
}

fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "punktfunk".into())
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
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("punktfunk-host: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let dir = config_dir(cli.config_dir)?;
    match cli.command {
        Command::Fingerprint => {
            let (id, _) = punktfunk_quic::Identity::load_or_create(&dir.join("host"))?;
            println!("{}", id.fingerprint());
            Ok(())
        }
        Command::Pin { pin } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let answer = rt.block_on(punktfunk_host::control::send(&dir, &format!("pin {pin}")))?;
            match answer.strip_prefix("error: ") {
                None if answer == "ok" => {
                    println!("PIN sent; the client finishes pairing now");
                    Ok(())
                }
                Some(e) => bail!("{e}"),
                None => bail!("unexpected answer from the host: {answer:?}"),
            }
        }
        Command::Clients { action } => {
            let store = ClientStore::new(&dir);
            match action {
                ClientsAction::List => {
                    let list = store.list()?;
                    if list.is_empty() {
                        println!("no paired clients");
                    }
                    for c in list {
                        println!(
                            "{}  {}  paired {}  sha256:{}",
                            c.id, c.name, c.paired_at, c.fingerprint
                        );
                    }
                    Ok(())
                }
                ClientsAction::Remove { id } => match store.remove(&id)? {
                    Some(c) => {
                        println!("removed {} ({})", c.id, c.name);
                        Ok(())
                    }
                    None => {
                        bail!("no paired client with id {id:?} (see `punktfunk-host clients list`)")
                    }
                },
            }
        }
        Command::Serve(a) => {
            let cfg = serve_config(*a, dir)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the runtime")?;
            rt.block_on(serve(cfg))
        }
    }
}
