//! The host's configuration: defaults, then `host.toml`, then flags, validated once into a
//! [`ServeConfig`] before anything starts.
//!
//! The file lives in the config directory (`--config-dir`, default `$XDG_CONFIG_HOME/punktfunk`
//! or `~/.config/punktfunk`) unless `--config FILE` names another. A missing `host.toml` means
//! defaults; a named file that is missing, an unreadable file, a syntax error, an unknown key or
//! a bad value is an error that names the file, the line and the key. Flags and file share one
//! validation, so a value is refused with the same words wherever it came from:
//!
//! ```text
//! /home/me/.config/punktfunk/host.toml:7: gamestream.fec: 300 is above 255 %
//! --gamestream-fec: 300 is above 255 %
//! ```
//!
//! The file's shape (every key optional):
//!
//! ```toml
//! name = "Living room"        # what Moonlight and mDNS show (default: the machine's name)
//! mdns = true
//! hardware = true             # try NVENC/VAAPI before software encoders
//! max_sessions = 4
//! max_mode = "3840x2160@240"
//! # sessions = 10             # exit after this many (default: serve forever)
//! # stats_json = "/tmp/punktfunk-stats.json"
//!
//! [punktfunk1]
//! listen = "0.0.0.0:47800"
//! data_port = 47801           # default: the QUIC port + 1; 0 = any free port
//! handshake_timeout = 5.0     # seconds
//! allow_unpaired = false      # true: serve clients that never paired (trusted networks only)
//! codecs = ["h264", "hevc", "av1"]
//! bitrate = 10000             # kbit/s when the client asks for none
//! max_bitrate = 150000
//! fec = 20                    # %
//! shard = 1400                # bytes
//! cipher = "aes128"
//!
//! [gamestream]
//! enabled = false
//! port = 47989
//! fec = 20
//! allow_legacy = false        # true: also clients without encrypted RTSP (see --help)
//!
//! [desktop]
//! display = "auto"            # or a list, e.g. ["sway", "existing"]; "existing:NAME" streams
//!                              # the output NAME as it is
//! capture = "auto"
//! input = "auto"
//! audio = "auto"
//! min_frame_interval = 100    # ms
//! ```
//!
//! What this module does not do: start anything. Testing aids (`--gamestream-drop-*`,
//! `--gamestream-rumble-echo`) are flags only, so a saved file never turns them on.
//!
//! ```
//! use punktfunk_host::config::{resolve, FileLayer, ServeFlags};
//! let file = FileLayer::parse("host.toml".as_ref(), "[gamestream]\nenabled = true\nfec = 30\n".into())?;
//! let flags = ServeFlags { gamestream_fec: Some(40), ..Default::default() };
//! let cfg = resolve(Some(&file), &flags, "/tmp/punktfunk".into())?;
//! assert_eq!(cfg.serve.gamestream.unwrap().fec_percent, 40);
//! # Ok::<(), punktfunk_host::config::ConfigError>(())
//! ```

mod file;
mod flags;

pub use file::FileLayer;
pub use flags::ServeFlags;

use crate::plan::DesktopPrefs;
use crate::proto::gamestream::stream::TestAids;
use crate::serve::{GameStreamOptions, ServeConfig};
use file::{Names, Printed, PrintedDesktop, PrintedGameStream, PrintedNames, PrintedPunktfunk1};
use punktfunk_core::control::{Codec, Mode};
use punktfunk_core::crypto::CipherSuite;
use punktfunk_desktop::probe::{BackendId, Preference};
use punktfunk_desktop::DisplayBackend;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// The file's name in the config directory.
pub const FILE: &str = "host.toml";

/// The defaults, where the file and the flags say nothing.
pub mod defaults {
    use std::net::{Ipv4Addr, SocketAddr};

    /// QUIC control-plane address.
    pub const LISTEN: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        punktfunk_quic::DEFAULT_PORT,
    );
    /// Most sessions at once.
    pub const MAX_SESSIONS: usize = 4;
    /// Seconds for the handshake.
    pub const HANDSHAKE_TIMEOUT_SECS: f64 = 5.0;
    /// Codecs offered, in order.
    pub const CODECS: [&str; 3] = ["h264", "hevc", "av1"];
    /// Largest mode served.
    pub const MAX_MODE: &str = "3840x2160@240";
    /// Bitrate when the client asks for none, kbit/s.
    pub const BITRATE_KBPS: u32 = 10_000;
    /// Highest bitrate, kbit/s.
    pub const MAX_BITRATE_KBPS: u32 = 150_000;
    /// Lowest bitrate a client may ask for, kbit/s.
    pub const MIN_BITRATE_KBPS: u32 = 250;
    /// punktfunk/1 FEC percentage.
    pub const FEC_PERCENT: u16 = 20;
    /// Largest shard payload, bytes.
    pub const SHARD: u16 = 1400;
    /// Packet cipher.
    pub const CIPHER: &str = "aes128";
    /// GameStream base (HTTP) port.
    pub const GAMESTREAM_PORT: u16 = punktfunk_gamestream::ports::DEFAULT_BASE;
    /// GameStream video FEC percentage.
    pub const GAMESTREAM_FEC_PERCENT: u32 = 20;
    /// Longest gap between frames on a still desktop, ms.
    pub const MIN_FRAME_INTERVAL_MS: u64 = 100;
}

/// Where a setting's value came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Nothing set it.
    Default {
        /// The key in the file's terms.
        key: &'static str,
    },
    /// The configuration file.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
        /// The dotted key.
        key: &'static str,
    },
    /// A command-line flag.
    Flag {
        /// The flag, with its dashes.
        flag: &'static str,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default { key } => write!(f, "{key} (default)"),
            Origin::File { path, line, key } => write!(f, "{}:{line}: {key}", path.display()),
            Origin::Flag { flag } => f.write_str(flag),
        }
    }
}

/// What is wrong with a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A number above its limit.
    #[error("{value} is above {max}{unit}")]
    Above {
        /// The value.
        value: i64,
        /// The largest allowed.
        max: i64,
        /// The unit, with its leading space.
        unit: &'static str,
    },
    /// A number below its limit.
    #[error("{value} is below {min}{unit}")]
    Below {
        /// The value.
        value: i64,
        /// The smallest allowed.
        min: i64,
        /// The unit, with its leading space.
        unit: &'static str,
    },
    /// A number outside its range.
    #[error("{value} is outside {min}..={max}{unit}")]
    Outside {
        /// The value.
        value: i64,
        /// The smallest allowed.
        min: i64,
        /// The largest allowed.
        max: i64,
        /// The unit, with its leading space.
        unit: &'static str,
    },
    /// A duration outside `0 < seconds <= max`.
    #[error("{} is not a number of seconds in 0 < s <= {max}", short_number(*value))]
    Seconds {
        /// The value.
        value: f64,
        /// The largest allowed.
        max: f64,
    },
    /// A fraction outside 0..1.
    #[error("{0} is not in 0..1")]
    NotAFraction(f64),
    /// A name that is not one of the choices.
    #[error("unknown {what} {value:?} ({choices})")]
    Unknown {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        value: String,
        /// The names allowed.
        choices: String,
    },
    /// A backend name the edge does not have.
    #[error("unknown {edge} backend {value:?} ({choices})")]
    UnknownBackend {
        /// The edge (`display`, `capture`, `input`, `audio`).
        edge: &'static str,
        /// The name given.
        value: String,
        /// The names allowed.
        choices: String,
    },
    /// A list with nothing in it, or an empty text.
    #[error("{0}")]
    Empty(&'static str),
    /// A mode that does not parse or is not streamable.
    #[error("{0}")]
    Mode(String),
    /// The display list names more than one existing output.
    #[error("the list names two existing outputs ({0} and {1}); one can be streamed at a time")]
    TwoOutputs(String, String),
    /// The GameStream base port leaves no room for the ports derived from it.
    #[error("{0} is outside 1019..=65514 (ports from it − 5 to it + 21 are used)")]
    GameStreamPort(i64),
    /// The QUIC port is 65535 and no data port is set.
    #[error("port 65535 leaves no room for the data port (the QUIC port + 1); set the data port")]
    NoDataPort,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No config directory can be found.
    #[error("no config directory: give --config-dir, or set XDG_CONFIG_HOME or HOME to an absolute path")]
    NoConfigDir,
    /// The file exists (or was named) but cannot be read.
    #[error("{}: {error}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type.
    #[error("{}{}: {}{message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line, when the parser knows it.
        line: Option<usize>,
        /// The dotted key there, when there is one.
        key: Option<String>,
        /// The parser's message.
        message: String,
    },
    /// A key the file format does not have.
    #[error("{}:{line}: {key}: unknown key{}", path.display(), if expected.is_empty() { String::new() } else { format!(", expected {expected}") })]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The dotted key.
        key: String,
        /// The keys its table has (as the parser lists them).
        expected: String,
    },
    /// A value is not acceptable.
    #[error("{at}: {problem}")]
    Invalid {
        /// Where it came from.
        at: Origin,
        /// What is wrong.
        problem: Problem,
    },
}

/// Where the configuration is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPaths {
    /// The config directory (identity, paired clients, apps, the control socket).
    pub dir: PathBuf,
    /// The configuration file.
    pub file: PathBuf,
    /// Whether the file was named explicitly (then it must exist).
    pub file_required: bool,
}

impl ConfigPaths {
    /// From the flags and the process environment (`XDG_CONFIG_HOME`, `HOME`).
    pub fn resolve(dir: Option<PathBuf>, file: Option<PathBuf>) -> Result<Self, ConfigError> {
        Self::from_vars(
            dir,
            file,
            std::env::var_os("XDG_CONFIG_HOME"),
            std::env::var_os("HOME"),
        )
    }

    /// From the flags and the given variables.
    pub fn from_vars(
        dir: Option<PathBuf>,
        file: Option<PathBuf>,
        xdg_config_home: Option<OsString>,
        home: Option<OsString>,
    ) -> Result<Self, ConfigError> {
        let dir = match dir {
            Some(d) => d,
            None => punktfunk_quic::identity::default_config_dir(xdg_config_home, home)
                .ok_or(ConfigError::NoConfigDir)?,
        };
        Ok(ConfigPaths {
            file: file.clone().unwrap_or_else(|| dir.join(FILE)),
            file_required: file.is_some(),
            dir,
        })
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// What `serve` runs with.
    pub serve: ServeConfig,
    /// The file that was read, if one was.
    pub file: Option<PathBuf>,
    printed: Printed,
}

impl HostConfig {
    /// The effective configuration as a `host.toml` (flags and defaults folded in; testing aids
    /// left out, as the file has no place for them).
    pub fn to_toml(&self) -> String {
        let source = match &self.file {
            Some(p) => format!("defaults, then {}, then flags", p.display()),
            None => "defaults, then flags (no configuration file was read)".to_string(),
        };
        let body = toml::to_string(&self.printed)
            .expect("the printed configuration has only strings, numbers, lists and tables");
        format!("# Effective punktfunk-host configuration: {source}.\n# Saved as host.toml it gives the same host.\n\n{body}")
    }
}

/// Reads the file the paths name (if it exists) and merges the flags over it.
pub fn load(paths: &ConfigPaths, flags: &ServeFlags) -> Result<HostConfig, ConfigError> {
    let file = FileLayer::read(&paths.file, paths.file_required)?;
    resolve(file.as_ref(), flags, paths.dir.clone())
}

/// One setting's value and where it came from.
struct Picked<T> {
    value: T,
    at: Origin,
}

impl<T> Picked<T> {
    /// Validates the value, reporting a problem at its origin.
    fn check<U>(self, f: impl FnOnce(T) -> Result<U, Problem>) -> Result<U, ConfigError> {
        f(self.value).map_err(|problem| ConfigError::Invalid {
            at: self.at,
            problem,
        })
    }
}

/// The layers below the flags.
struct Layers<'a> {
    file: Option<&'a FileLayer>,
}

impl Layers<'_> {
    /// The flag's value if given, else the file's, else none.
    fn pick_opt<T: Clone>(
        &self,
        flag: Option<T>,
        flag_name: &'static str,
        file: Option<&Spanned<T>>,
        key: &'static str,
    ) -> Option<Picked<T>> {
        if let Some(value) = flag {
            return Some(Picked {
                value,
                at: Origin::Flag { flag: flag_name },
            });
        }
        let (layer, v) = (self.file?, file?);
        Some(Picked {
            value: v.get_ref().clone(),
            at: Origin::File {
                path: layer.path.clone(),
                line: layer.line(v),
                key,
            },
        })
    }

    /// The same, falling back to `default`.
    fn pick<T: Clone>(
        &self,
        flag: Option<T>,
        flag_name: &'static str,
        file: Option<&Spanned<T>>,
        key: &'static str,
        default: T,
    ) -> Picked<T> {
        self.pick_opt(flag, flag_name, file, key).unwrap_or(Picked {
            value: default,
            at: Origin::Default { key },
        })
    }
}

/// A number as a person would write it: huge or tiny ones in exponent form (`1e300`), not
/// hundreds of digits.
fn short_number(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-3..1e9).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

fn within(value: i64, min: i64, max: i64, unit: &'static str) -> Result<i64, Problem> {
    // Name only the bound that means something: "below 1" for a count without a real ceiling,
    // "above 255 %" for a percentage, the range when both ends are real limits.
    let unbounded = max >= i64::from(u32::MAX);
    if value < min && (unbounded || min == 0) {
        Err(Problem::Below { value, min, unit })
    } else if value > max && min <= 1 {
        Err(Problem::Above { value, max, unit })
    } else if !(min..=max).contains(&value) {
        Err(Problem::Outside {
            value,
            min,
            max,
            unit,
        })
    } else {
        Ok(value)
    }
}

/// Narrows a checked number to its type; the ranges given to [`within`] keep it in bounds.
fn narrow<T: TryFrom<i64>>(v: i64) -> T {
    T::try_from(v).ok().expect("range-checked before narrowing")
}

fn int<T: TryFrom<i64>>(
    min: i64,
    max: i64,
    unit: &'static str,
) -> impl FnOnce(i64) -> Result<T, Problem> {
    move |v| within(v, min, max, unit).map(narrow)
}

fn preference<B: BackendId>(names: Names) -> Result<Preference<B>, Problem> {
    if names.is_auto() {
        return Ok(Preference::Auto);
    }
    let items = names.items();
    if items.is_empty() {
        return Err(Problem::Empty(
            "the list names no backend (\"auto\" for the default order)",
        ));
    }
    let mut list = Vec::new();
    for item in items {
        let b = B::from_name(&item).ok_or_else(|| Problem::UnknownBackend {
            edge: B::EDGE,
            value: item.clone(),
            choices: format!("auto, {}", B::names()),
        })?;
        if !list.contains(&b) {
            list.push(b);
        }
    }
    Ok(Preference::Only(list))
}

/// The display list, where `existing:NAME` names the one output to stream as it is.
fn display_preference(
    names: Names,
) -> Result<(Preference<DisplayBackend>, Option<String>), Problem> {
    if names.is_auto() {
        return Ok((Preference::Auto, None));
    }
    let mut output = None;
    let mut plain = Vec::new();
    for item in names.items() {
        match item.split_once(':') {
            Some((b, name)) if b.trim().eq_ignore_ascii_case("existing") => {
                let name = name.trim();
                if name.is_empty() {
                    return Err(Problem::Empty(
                        "existing: names no output (existing:NAME, e.g. existing:HDMI-A-1)",
                    ));
                }
                if let Some(first) = output.replace(name.to_string()) {
                    return Err(Problem::TwoOutputs(first, name.to_string()));
                }
                plain.push("existing".to_string());
            }
            _ => plain.push(item),
        }
    }
    Ok((preference(Names::List(plain))?, output))
}

fn printed_preference<B: BackendId>(p: &Preference<B>) -> PrintedNames {
    match p {
        Preference::Auto => PrintedNames::Auto("auto"),
        Preference::Only(list) => PrintedNames::List(list.iter().map(|b| b.name()).collect()),
    }
}

fn codecs(names: Names) -> Result<Vec<Codec>, Problem> {
    let items = names.items();
    if items.is_empty() {
        return Err(Problem::Empty("the list names no codec"));
    }
    items
        .iter()
        .map(|c| {
            Codec::from_name(c).ok_or_else(|| Problem::Unknown {
                what: "codec",
                value: c.clone(),
                choices: "h264, hevc, av1".into(),
            })
        })
        .collect()
}

fn cipher(name: String) -> Result<(CipherSuite, &'static str), Problem> {
    match name.trim().to_ascii_lowercase().as_str() {
        "aes128" => Ok((CipherSuite::AES_128_GCM, "aes128")),
        "aes256" => Ok((CipherSuite::AES_256_GCM, "aes256")),
        _ => Err(Problem::Unknown {
            what: "cipher",
            value: name,
            choices: "aes128, aes256".into(),
        }),
    }
}

fn wide_count(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn fraction(v: f64) -> Result<f64, Problem> {
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(Problem::NotAFraction(v))
    }
}

/// Merges `flags` over `file` over the defaults and validates the result. `dir` is the config
/// directory the host keeps its identity in.
pub fn resolve(
    file: Option<&FileLayer>,
    flags: &ServeFlags,
    dir: PathBuf,
) -> Result<HostConfig, ConfigError> {
    let layers = Layers { file };
    let raw = file.map(|f| &f.raw);
    let p1 = raw.map(|r| &r.punktfunk1);
    let gs = raw.map(|r| &r.gamestream);
    let desk = raw.map(|r| &r.desktop);
    let wide = |v: Option<u16>| v.map(i64::from);

    let name = layers
        .pick_opt(
            flags.name.clone(),
            "--name",
            raw.and_then(|r| r.name.as_ref()),
            "name",
        )
        .map(|p| {
            p.check(|n| {
                let n = n.trim().to_string();
                if n.is_empty() {
                    Err(Problem::Empty("the name is empty"))
                } else {
                    Ok(n)
                }
            })
        })
        .transpose()?
        .unwrap_or_else(machine_name);
    let mdns = layers
        .pick(
            flags::switch(flags.mdns, flags.no_mdns),
            "--mdns/--no-mdns",
            raw.and_then(|r| r.mdns.as_ref()),
            "mdns",
            true,
        )
        .value;
    let hardware = layers
        .pick(
            flags::switch(flags.hardware, flags.no_hardware),
            "--hardware/--no-hardware",
            raw.and_then(|r| r.hardware.as_ref()),
            "hardware",
            true,
        )
        .value;
    let max_sessions: usize = layers
        .pick(
            flags.max_sessions.map(wide_count),
            "--max-sessions",
            raw.and_then(|r| r.max_sessions.as_ref()),
            "max_sessions",
            defaults::MAX_SESSIONS as i64,
        )
        .check(int(1, i64::from(u32::MAX), ""))?;
    let sessions: Option<usize> = layers
        .pick_opt(
            flags.sessions.map(wide_count),
            "--sessions",
            raw.and_then(|r| r.sessions.as_ref()),
            "sessions",
        )
        .map(|p| p.check(int(0, i64::from(u32::MAX), "")))
        .transpose()?;
    let max_mode = layers
        .pick(
            flags.max_mode.clone(),
            "--max-mode",
            raw.and_then(|r| r.max_mode.as_ref()),
            "max_mode",
            defaults::MAX_MODE.to_string(),
        )
        .check(|m| Mode::parse(m.trim()).map_err(Problem::Mode))?;
    let stats_json = layers
        .pick_opt(
            flags.stats_json.clone(),
            "--stats-json",
            raw.and_then(|r| r.stats_json.as_ref()),
            "stats_json",
        )
        .map(|p| p.value);

    // [punktfunk1]
    let listen = layers.pick(
        flags.listen,
        "--listen",
        p1.and_then(|s| s.listen.as_ref()),
        "punktfunk1.listen",
        defaults::LISTEN,
    );
    let data_port = layers
        .pick_opt(
            wide(flags.data_port),
            "--data-port",
            p1.and_then(|s| s.data_port.as_ref()),
            "punktfunk1.data_port",
        )
        .map(|p| p.check(int::<u16>(0, 65535, "")))
        .transpose()?;
    let listen_at = listen.at;
    let listen: SocketAddr = listen.value;
    let data_port = match data_port {
        Some(p) => p,
        None if listen.port() == 0 => 0,
        None => listen.port().checked_add(1).ok_or(ConfigError::Invalid {
            at: listen_at,
            problem: Problem::NoDataPort,
        })?,
    };
    let handshake_timeout = layers
        .pick(
            flags.handshake_timeout,
            "--handshake-timeout",
            p1.and_then(|s| s.handshake_timeout.as_ref()),
            "punktfunk1.handshake_timeout",
            defaults::HANDSHAKE_TIMEOUT_SECS,
        )
        .check(|s| {
            // Beyond a day is no deadline at all; it also keeps the Duration in range.
            if s.is_finite() && s > 0.0 && s <= 86_400.0 {
                Ok(s)
            } else {
                Err(Problem::Seconds {
                    value: s,
                    max: 86_400.0,
                })
            }
        })?;
    let allow_unpaired = layers
        .pick(
            flags::switch(flags.allow_unpaired, flags.require_pairing),
            "--allow-unpaired/--require-pairing",
            p1.and_then(|s| s.allow_unpaired.as_ref()),
            "punktfunk1.allow_unpaired",
            false,
        )
        .value;
    let codec_list = layers
        .pick(
            flags.codecs.clone().map(Names::List),
            "--codecs",
            p1.and_then(|s| s.codecs.as_ref()),
            "punktfunk1.codecs",
            Names::List(defaults::CODECS.iter().map(|c| c.to_string()).collect()),
        )
        .check(codecs)?;
    let max_bitrate: u32 = layers
        .pick(
            flags.max_bitrate.map(i64::from),
            "--max-bitrate",
            p1.and_then(|s| s.max_bitrate.as_ref()),
            "punktfunk1.max_bitrate",
            i64::from(defaults::MAX_BITRATE_KBPS),
        )
        .check(int(
            i64::from(defaults::MIN_BITRATE_KBPS),
            i64::from(punktfunk_media::encode::MAX_BITRATE_KBPS),
            " kbit/s",
        ))?;
    let bitrate: u32 = layers
        .pick(
            flags.bitrate.map(i64::from),
            "--bitrate",
            p1.and_then(|s| s.bitrate.as_ref()),
            "punktfunk1.bitrate",
            i64::from(defaults::BITRATE_KBPS),
        )
        .check(int(
            i64::from(defaults::MIN_BITRATE_KBPS),
            i64::from(punktfunk_media::encode::MAX_BITRATE_KBPS),
            " kbit/s",
        ))?;
    let fec: u16 = layers
        .pick(
            wide(flags.fec),
            "--fec",
            p1.and_then(|s| s.fec.as_ref()),
            "punktfunk1.fec",
            i64::from(defaults::FEC_PERCENT),
        )
        .check(int(0, 200, " %"))?;
    let shard: u16 = layers
        .pick(
            wide(flags.shard),
            "--shard",
            p1.and_then(|s| s.shard.as_ref()),
            "punktfunk1.shard",
            i64::from(defaults::SHARD),
        )
        .check(int(256, 8900, " bytes"))?;
    let (suite, cipher_name) = layers
        .pick(
            flags.cipher.clone(),
            "--cipher",
            p1.and_then(|s| s.cipher.as_ref()),
            "punktfunk1.cipher",
            defaults::CIPHER.to_string(),
        )
        .check(cipher)?;

    // [gamestream]
    let gamestream_on = layers
        .pick(
            flags::switch(flags.gamestream, flags.no_gamestream),
            "--gamestream/--no-gamestream",
            gs.and_then(|s| s.enabled.as_ref()),
            "gamestream.enabled",
            false,
        )
        .value;
    let gs_port = layers.pick(
        wide(flags.gamestream_port),
        "--gamestream-port",
        gs.and_then(|s| s.port.as_ref()),
        "gamestream.port",
        i64::from(defaults::GAMESTREAM_PORT),
    );
    // The derived ports only matter when GameStream runs; a port out of range is still a
    // port, so it prints as given.
    let gamestream_port: u16 = if gamestream_on {
        gs_port.check(|p| {
            if (1019..=65514).contains(&p) {
                Ok(narrow(p))
            } else {
                Err(Problem::GameStreamPort(p))
            }
        })?
    } else {
        gs_port.check(int(0, 65535, ""))?
    };
    let gamestream_fec: u32 = layers
        .pick(
            flags.gamestream_fec.map(i64::from),
            "--gamestream-fec",
            gs.and_then(|s| s.fec.as_ref()),
            "gamestream.fec",
            i64::from(defaults::GAMESTREAM_FEC_PERCENT),
        )
        .check(int(0, 255, " %"))?;
    let allow_legacy = layers
        .pick(
            flags::switch(
                flags.gamestream_allow_legacy,
                flags.gamestream_refuse_legacy,
            ),
            "--gamestream-allow-legacy/--gamestream-refuse-legacy",
            gs.and_then(|s| s.allow_legacy.as_ref()),
            "gamestream.allow_legacy",
            false,
        )
        .value;
    let aids = TestAids {
        drop_video: fraction(flags.gamestream_drop_video.unwrap_or(0.0)).map_err(|problem| {
            ConfigError::Invalid {
                at: Origin::Flag {
                    flag: "--gamestream-drop-video",
                },
                problem,
            }
        })?,
        drop_audio: fraction(flags.gamestream_drop_audio.unwrap_or(0.0)).map_err(|problem| {
            ConfigError::Invalid {
                at: Origin::Flag {
                    flag: "--gamestream-drop-audio",
                },
                problem,
            }
        })?,
        rumble_echo: flags.gamestream_rumble_echo,
    };

    // [desktop]
    let names = |flag: &Option<String>| flag.clone().map(Names::Text);
    let auto = || Names::Text("auto".into());
    let (display, existing_output) = layers
        .pick(
            names(&flags.display),
            "--display",
            desk.and_then(|s| s.display.as_ref()),
            "desktop.display",
            auto(),
        )
        .check(display_preference)?;
    let desktop = DesktopPrefs {
        display,
        existing_output,
        capture: layers
            .pick(
                names(&flags.capture),
                "--capture",
                desk.and_then(|s| s.capture.as_ref()),
                "desktop.capture",
                auto(),
            )
            .check(preference)?,
        input: layers
            .pick(
                names(&flags.input),
                "--input",
                desk.and_then(|s| s.input.as_ref()),
                "desktop.input",
                auto(),
            )
            .check(preference)?,
        audio: layers
            .pick(
                names(&flags.audio),
                "--audio",
                desk.and_then(|s| s.audio.as_ref()),
                "desktop.audio",
                auto(),
            )
            .check(preference)?,
        min_frame_interval: Duration::from_millis(
            layers
                .pick(
                    flags
                        .min_frame_interval
                        .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
                    "--min-frame-interval",
                    desk.and_then(|s| s.min_frame_interval.as_ref()),
                    "desktop.min_frame_interval",
                    defaults::MIN_FRAME_INTERVAL_MS as i64,
                )
                .check(int::<u64>(1, 10_000, " ms"))?,
        ),
    };

    // The lowest bitrate a client may ask for never exceeds the highest; the default sits
    // inside the range (as it always has, a default outside it is moved in, not refused).
    let min_rate = defaults::MIN_BITRATE_KBPS.min(max_bitrate);
    let default_bitrate = bitrate.clamp(min_rate, max_bitrate);
    let mut data = listen;
    data.set_port(data_port);

    let printed = Printed {
        name: name.clone(),
        mdns,
        hardware,
        max_sessions,
        sessions,
        max_mode: max_mode.to_string(),
        stats_json: stats_json.clone(),
        punktfunk1: PrintedPunktfunk1 {
            listen,
            data_port,
            handshake_timeout,
            allow_unpaired,
            codecs: codec_list.iter().map(|c| c.name()).collect(),
            bitrate: default_bitrate,
            max_bitrate,
            fec,
            shard,
            cipher: cipher_name,
        },
        gamestream: PrintedGameStream {
            enabled: gamestream_on,
            port: gamestream_port,
            fec: gamestream_fec,
            allow_legacy,
        },
        desktop: PrintedDesktop {
            display: printed_preference(&desktop.display),
            existing_output: desktop.existing_output.clone(),
            capture: printed_preference(&desktop.capture),
            input: printed_preference(&desktop.input),
            audio: printed_preference(&desktop.audio),
            min_frame_interval: desktop.min_frame_interval.as_millis() as u64,
        },
    };
    let serve = ServeConfig {
        listen,
        data,
        config_dir: dir,
        max_sessions,
        session_limit: sessions,
        handshake_timeout: Duration::from_secs_f64(handshake_timeout),
        allow_unpaired,
        codecs: codec_list,
        max_mode,
        default_bitrate_kbps: default_bitrate,
        bitrate_range_kbps: (min_rate, max_bitrate),
        fec_percent: fec,
        shard_len: shard,
        suite,
        prefer_hardware: hardware,
        stats_json,
        gamestream: gamestream_on.then_some(GameStreamOptions {
            base_port: gamestream_port,
            hostname: name,
            fec_percent: gamestream_fec,
            allow_legacy,
            aids,
        }),
        mdns,
        desktop,
    };
    Ok(HostConfig {
        serve,
        file: file.map(|f| f.path.clone()),
        printed,
    })
}

/// The machine's host name, or `punktfunk` when it has none.
pub fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "punktfunk".into())
}

#[cfg(test)]
mod tests;
