//! The command-line layer: every setting `serve` (and `doctor`) takes, as flags.
//!
//! Every field is an `Option` (or a pair of opposite switches) so the merge can tell a flag that
//! was given from one that was not: a given flag overrides the file, an absent one leaves the
//! file's value or the default. The defaults live in [`super::defaults`]; the `[default: …]` in
//! each help line is checked against them by the command-line tests.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The settings `serve` takes on the command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeFlags {
    /// QUIC control-plane address. [default: 0.0.0.0:47800]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Data-plane UDP port (default: the QUIC port + 1; 0 = any free port).
    #[arg(long, value_name = "PORT")]
    pub data_port: Option<u16>,
    /// Most sessions at once; further clients are refused as busy. [default: 4]
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Exit after this many sessions have ended (default: serve forever).
    #[arg(long, value_name = "N")]
    pub sessions: Option<usize>,
    /// Seconds a client has to complete the handshake. [default: 5]
    #[arg(long, value_name = "SECS")]
    pub handshake_timeout: Option<f64>,
    /// Codecs offered, in preference order (h264, hevc, av1). [default: h264,hevc,av1]
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub codecs: Option<Vec<String>>,
    /// Serve punktfunk/1 clients that never paired (trust on first use, for a trusted network
    /// only): anyone who reaches the port can watch and control the desktop. Logged as a
    /// warning at start. [default: pairing required]
    #[arg(long, overrides_with = "require_pairing")]
    pub allow_unpaired: bool,
    /// Serve only paired punktfunk/1 clients (the default; overrides the file's
    /// `allow_unpaired`).
    #[arg(long, overrides_with = "allow_unpaired")]
    pub require_pairing: bool,
    /// Largest mode served, WIDTHxHEIGHT@FPS. [default: 3840x2160@240]
    #[arg(long, value_name = "MODE")]
    pub max_mode: Option<String>,
    /// Bitrate when the client asks for none, kbit/s (250 to 1000000). [default: 10000]
    #[arg(long, value_name = "KBPS")]
    pub bitrate: Option<u32>,
    /// Highest bitrate a client may ask for, kbit/s (250 to 1000000; the lowest a client may
    /// ask for is 250). [default: 150000]
    #[arg(long, value_name = "KBPS")]
    pub max_bitrate: Option<u32>,
    /// FEC parity percentage when the client asks for none. [default: 20]
    #[arg(long, value_name = "PERCENT")]
    pub fec: Option<u16>,
    /// Largest shard payload in bytes (datagram = shard + 52 bytes of header and tag).
    /// [default: 1400]
    #[arg(long, value_name = "BYTES")]
    pub shard: Option<u16>,
    /// Packet cipher: aes128 or aes256. [default: aes128]
    #[arg(long, value_name = "CIPHER")]
    pub cipher: Option<String>,
    /// Do not try hardware encoders (NVENC, VAAPI) before software.
    #[arg(long, overrides_with = "hardware")]
    pub no_hardware: bool,
    /// Try hardware encoders before software (the default; overrides the file's `hardware`).
    #[arg(long, overrides_with = "no_hardware")]
    pub hardware: bool,
    /// Write each ended session's per-stage timings (render, convert, encode, send path) and the
    /// host's CPU time per frame to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Also serve stock Moonlight clients (GameStream: nvhttp pairing and app control). Its PIN
    /// pairing is weaker than punktfunk/1's pinned certificates; see the README.
    #[arg(long, overrides_with = "no_gamestream")]
    pub gamestream: bool,
    /// Do not serve GameStream even when the configuration file turns it on.
    #[arg(long, overrides_with = "gamestream")]
    pub no_gamestream: bool,
    /// Also stream to GameStream clients too old for encrypted RTSP (a launch without
    /// `corever`). Their stream is set up in plaintext, so anyone on the network who sees the
    /// launch can take the stream over; the host then only accepts RTSP and control from the
    /// launching client's address. Logged as a warning. [default: refused]
    #[arg(long, overrides_with = "gamestream_refuse_legacy")]
    pub gamestream_allow_legacy: bool,
    /// Refuse GameStream clients that cannot encrypt RTSP (the default; overrides the file's
    /// `allow_legacy`).
    #[arg(long, overrides_with = "gamestream_allow_legacy")]
    pub gamestream_refuse_legacy: bool,
    /// GameStream HTTP port; HTTPS is this − 5, RTSP this + 21, video/control/audio + 9/10/11.
    /// [default: 47989]
    #[arg(long, value_name = "PORT")]
    pub gamestream_port: Option<u16>,
    /// FEC percentage for GameStream video (parity shards per 100 data shards; 0 = none).
    /// [default: 20]
    #[arg(long, value_name = "PERCENT")]
    pub gamestream_fec: Option<u32>,
    /// Testing aid: drop this fraction (0..1) of outgoing GameStream video datagrams, to see a
    /// client recover through FEC. [default: 0]
    #[arg(long, value_name = "FRACTION")]
    pub gamestream_drop_video: Option<f64>,
    /// Testing aid: the same for GameStream audio datagrams (data and FEC packets alike).
    /// [default: 0]
    #[arg(long, value_name = "FRACTION")]
    pub gamestream_drop_audio: Option<f64>,
    /// Testing aid: answer each change of a client gamepad's triggers with rumble on that pad
    /// (left trigger drives the low-frequency motor, right the high), to exercise the rumble
    /// path without a game.
    #[arg(long)]
    pub gamestream_rumble_echo: bool,
    /// Name Moonlight shows for this host (default: the machine's host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Do not advertise the host over mDNS.
    #[arg(long, overrides_with = "mdns")]
    pub no_mdns: bool,
    /// Advertise the host over mDNS (the default; overrides the file's `mdns`).
    #[arg(long, overrides_with = "no_mdns")]
    pub mdns: bool,
    /// Virtual-display backends to try, in order (auto, or a list of sway, mutter, xorg,
    /// existing). `existing:NAME` streams the output NAME as it is (e.g. existing:HDMI-A-1)
    /// instead of creating one per client. [default: auto]
    #[arg(long, value_name = "LIST")]
    pub display: Option<String>,
    /// Capture backends to try (auto, or a list of screencopy, pipewire, xshm, testpattern).
    /// [default: auto]
    #[arg(long, value_name = "LIST")]
    pub capture: Option<String>,
    /// Input injectors to try (auto, or a list of wlr, mutter, xtest, uinput, log).
    /// [default: auto]
    #[arg(long, value_name = "LIST")]
    pub input: Option<String>,
    /// Audio sources to try (auto, or a list of pipewire, tone). [default: auto]
    #[arg(long, value_name = "LIST")]
    pub audio: Option<String>,
    /// On a still desktop, send the last picture again after this many milliseconds without a
    /// new one. [default: 100]
    #[arg(long, value_name = "MS")]
    pub min_frame_interval: Option<u64>,
}

/// A pair of opposite switches as one optional setting: `None` when neither was given.
/// clap's `overrides_with` leaves only the last of the two set.
pub(crate) fn switch(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}
