//! The file layer: `host.toml` as read (every value with its place in the file) and as printed.
//!
//! Reading keeps each value's byte span, so a value that fails validation later is reported at
//! its line; unknown keys are refused (a misspelt key would otherwise be a silent default).
//! Numbers are read as `i64` and range-checked by the validation the flags share, so `fec = 300`
//! and `--fec 300` get the same message.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub name: Option<Spanned<String>>,
    pub mdns: Option<Spanned<bool>>,
    pub hardware: Option<Spanned<bool>>,
    pub max_sessions: Option<Spanned<i64>>,
    pub sessions: Option<Spanned<i64>>,
    pub max_mode: Option<Spanned<String>>,
    pub stats_json: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub punktfunk1: RawPunktfunk1,
    #[serde(default)]
    pub gamestream: RawGameStream,
    #[serde(default)]
    pub desktop: RawDesktop,
}

/// `[punktfunk1]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPunktfunk1 {
    pub listen: Option<Spanned<SocketAddr>>,
    pub data_port: Option<Spanned<i64>>,
    pub handshake_timeout: Option<Spanned<f64>>,
    pub allow_unpaired: Option<Spanned<bool>>,
    pub codecs: Option<Spanned<Names>>,
    pub bitrate: Option<Spanned<i64>>,
    pub max_bitrate: Option<Spanned<i64>>,
    pub fec: Option<Spanned<i64>>,
    pub shard: Option<Spanned<i64>>,
    pub cipher: Option<Spanned<String>>,
}

/// `[gamestream]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGameStream {
    pub enabled: Option<Spanned<bool>>,
    pub port: Option<Spanned<i64>>,
    pub fec: Option<Spanned<i64>>,
    pub allow_legacy: Option<Spanned<bool>>,
}

/// `[desktop]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDesktop {
    pub display: Option<Spanned<Names>>,
    pub capture: Option<Spanned<Names>>,
    pub input: Option<Spanned<Names>>,
    pub audio: Option<Spanned<Names>>,
    pub min_frame_interval: Option<Spanned<i64>>,
}

/// A list of names, written either as one string (`"auto"`, `"sway,existing"`, the flags' form)
/// or as a TOML array (`["sway", "existing"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Names {
    /// One string, split at commas.
    Text(String),
    /// An array.
    List(Vec<String>),
}

impl Names {
    /// The names, in order (`None` for the word `auto`, which stands for "the default order").
    pub fn items(&self) -> Vec<String> {
        match self {
            Names::Text(t) => t
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            Names::List(l) => l.iter().map(|s| s.trim().to_string()).collect(),
        }
    }

    /// Whether this is the word `auto` (or an empty string, which the flags have always read so).
    pub fn is_auto(&self) -> bool {
        matches!(self, Names::Text(t) if t.trim().is_empty() || t.trim().eq_ignore_ascii_case("auto"))
    }
}

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Names;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Names, E> {
                Ok(Names::Text(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Names, A::Error> {
                let mut list = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    list.push(s);
                }
                Ok(Names::List(list))
            }
        }
        d.deserialize_any(V)
    }
}

/// A file that was read: its path, its text (for line numbers) and its values.
#[derive(Debug)]
pub struct FileLayer {
    pub(crate) path: PathBuf,
    text: String,
    pub(crate) raw: RawFile,
}

impl FileLayer {
    /// Parses `text` as the contents of `path`. Syntax errors, values of the wrong type and
    /// unknown keys are reported with the file, the line and the key.
    pub fn parse(path: &Path, text: String) -> Result<FileLayer, ConfigError> {
        match toml::from_str::<RawFile>(&text) {
            Ok(raw) => Ok(FileLayer {
                path: path.to_path_buf(),
                text,
                raw,
            }),
            Err(e) => Err(parse_error(path, &text, &e)),
        }
    }

    /// Reads and parses `path`. A file that does not exist is `Ok(None)` unless `required`
    /// (it was named on the command line); any other failure to read it is an error.
    pub fn read(path: &Path, required: bool) -> Result<Option<FileLayer>, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => FileLayer::parse(path, text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(None),
            Err(error) => Err(ConfigError::Unreadable {
                path: path.to_path_buf(),
                error,
            }),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The 1-based line of a byte offset.
    pub(crate) fn line<T>(&self, value: &Spanned<T>) -> usize {
        line_of(&self.text, value.span().start)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map(|s| s.start);
    let line = offset.map(|o| line_of(text, o));
    let key = offset.and_then(|o| key_at(text, o));
    let message = e.message().trim().to_string();
    // serde words it "unknown field `x`, expected one of …"; the key is named by the location.
    if let (Some(line), Some(key), Some(rest)) =
        (line, key.clone(), message.strip_prefix("unknown field `"))
    {
        let expected = rest
            .split_once("`, ")
            .map(|(_, e)| e.strip_prefix("expected ").unwrap_or(e).to_string())
            .unwrap_or_default();
        return ConfigError::UnknownKey {
            path: path.to_path_buf(),
            line,
            key,
            expected,
        };
    }
    ConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        key,
        message,
    }
}

/// The dotted key whose name or value covers byte `offset` (the innermost one), if the text
/// parses as TOML at all.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let doc = toml_edit::ImDocument::parse(text.to_string()).ok()?;
    let mut path = Vec::new();
    find_key(doc.as_table(), offset, &mut path).then(|| path.join("."))
}

fn find_key(table: &dyn toml_edit::TableLike, offset: usize, path: &mut Vec<String>) -> bool {
    let covers = |span: Option<std::ops::Range<usize>>| span.is_some_and(|s| s.contains(&offset));
    for (name, item) in table.iter() {
        path.push(name.to_string());
        if let Some(inner) = item.as_table_like() {
            if find_key(inner, offset, path) {
                return true;
            }
        }
        let key_span = table.key(name).and_then(|k| k.span());
        if covers(key_span) || (item.is_value() && covers(item.span())) {
            return true;
        }
        path.pop();
    }
    false
}

/// The effective configuration in the file's own format (what `serve --print-config` prints).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Printed {
    pub name: String,
    pub mdns: bool,
    pub hardware: bool,
    pub max_sessions: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<usize>,
    pub max_mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats_json: Option<PathBuf>,
    pub punktfunk1: PrintedPunktfunk1,
    pub gamestream: PrintedGameStream,
    pub desktop: PrintedDesktop,
}

/// `[punktfunk1]` as printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct PrintedPunktfunk1 {
    pub listen: SocketAddr,
    pub data_port: u16,
    pub handshake_timeout: f64,
    pub allow_unpaired: bool,
    pub codecs: Vec<&'static str>,
    pub bitrate: u32,
    pub max_bitrate: u32,
    pub fec: u16,
    pub shard: u16,
    pub cipher: &'static str,
}

/// `[gamestream]` as printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct PrintedGameStream {
    pub enabled: bool,
    pub port: u16,
    pub fec: u32,
    pub allow_legacy: bool,
}

/// `[desktop]` as printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct PrintedDesktop {
    pub display: PrintedNames,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing_output: Option<String>,
    pub capture: PrintedNames,
    pub input: PrintedNames,
    pub audio: PrintedNames,
    pub min_frame_interval: u64,
}

/// A backend preference as printed: `"auto"` or a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub(crate) enum PrintedNames {
    Auto(&'static str),
    List(Vec<&'static str>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileLayer, ConfigError> {
        FileLayer::parse(Path::new("host.toml"), text.to_string())
    }

    #[test]
    fn values_keep_their_lines() {
        let f = parse("name = \"x\"\n\n[gamestream]\nfec = 300\n").unwrap();
        assert_eq!(f.line(f.raw.gamestream.fec.as_ref().unwrap()), 4);
        assert_eq!(f.line(f.raw.name.as_ref().unwrap()), 1);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let e = parse("name = \"x\"\n[punktfunk1]\nlisen = \"0.0.0.0:1\"\n").unwrap_err();
        let ConfigError::UnknownKey { line, key, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!((*line, key.as_str()), (3, "punktfunk1.lisen"));
        assert!(
            e.to_string().starts_with(
                "host.toml:3: punktfunk1.lisen: unknown key, expected one of `listen`"
            ),
            "{e}"
        );
        // A misspelt section is an unknown key of the top level.
        let e = parse("\n[gamestreem]\nport = 1\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("host.toml:2: gamestreem: unknown key"),
            "{e}"
        );
        // Dotted keys and inline tables are found too.
        let e = parse("desktop.displya = \"auto\"\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("host.toml:1: desktop.displya: unknown key"),
            "{e}"
        );
        let e = parse("mdns = true\ngamestream = { enabled = true, prot = 1 }\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("host.toml:2: gamestream.prot: unknown key"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_and_bad_syntax_name_the_line() {
        let e = parse("[punktfunk1]\n\nfec = \"lots\"\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("host.toml:3: punktfunk1.fec: invalid type: string"),
            "{e}"
        );
        let e = parse("[desktop]\ncapture = 3\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("host.toml:2: desktop.capture: invalid type: integer"),
            "{e}"
        );
        let e = parse("[punktfunk1]\nlisten = \"here\"\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("host.toml:2: punktfunk1.listen: invalid socket address"),
            "{e}"
        );
        let e = parse("name = \"x\"\nmdns = \n").unwrap_err();
        assert!(
            matches!(e, ConfigError::Syntax { line: Some(2), .. }),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("host.toml:2: "), "{e}");
    }

    #[test]
    fn names_read_as_a_string_or_a_list() {
        let f = parse("[desktop]\ndisplay = \"sway, existing\"\ncapture = [\"testpattern\"]\ninput = \"auto\"\n")
            .unwrap();
        let d = &f.raw.desktop;
        assert_eq!(
            d.display.as_ref().unwrap().get_ref().items(),
            ["sway", "existing"]
        );
        assert_eq!(
            d.capture.as_ref().unwrap().get_ref(),
            &Names::List(vec!["testpattern".into()])
        );
        assert!(d.input.as_ref().unwrap().get_ref().is_auto());
        assert!(!d.capture.as_ref().unwrap().get_ref().is_auto());
    }
}
