//! The configuration file as the binary reads it: `serve --print-config` with a file and flags,
//! errors for bad files with their exit status, and `--help`'s defaults.

use std::path::Path;
use std::process::{Command, Output};

fn host(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_punktfunk-host"));
    c.arg("--config-dir").arg(dir).env_remove("RUST_LOG");
    c
}

fn print_config(dir: &Path, extra: &[&str]) -> Output {
    host(dir)
        .args(["serve", "--print-config"])
        .args(extra)
        .output()
        .unwrap()
}

fn stdout_toml(out: &Output) -> toml::Table {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("--print-config prints TOML")
}

fn get<'a>(t: &'a toml::Table, key: &str) -> &'a toml::Value {
    let (section, name) = key.split_once('.').unwrap_or(("", key));
    let table = if section.is_empty() {
        t
    } else {
        t[section].as_table().unwrap()
    };
    table
        .get(name)
        .unwrap_or_else(|| panic!("{key} missing from the printed configuration"))
}

#[test]
fn print_config_folds_a_flag_over_the_file_and_binds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("host.toml"),
        "name = \"Attic\"\n\n[punktfunk1]\nfec = 50\nshard = 1000\n\n[gamestream]\nenabled = true\nport = 50000\n\n[desktop]\ncapture = [\"testpattern\"]\n",
    )
    .unwrap();
    // The port serve would bind is taken: printing must not try to bind it.
    let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    let out = print_config(dir.path(), &["--fec", "60", "--listen", &taken]);
    let t = stdout_toml(&out);
    assert_eq!(
        get(&t, "punktfunk1.fec").as_integer(),
        Some(60),
        "flag over file"
    );
    assert_eq!(
        get(&t, "punktfunk1.shard").as_integer(),
        Some(1000),
        "file over default"
    );
    assert_eq!(
        get(&t, "punktfunk1.cipher").as_str(),
        Some("aes128"),
        "default"
    );
    assert_eq!(get(&t, "punktfunk1.listen").as_str(), Some(taken.as_str()));
    assert_eq!(get(&t, "gamestream.enabled").as_bool(), Some(true));
    assert_eq!(get(&t, "gamestream.port").as_integer(), Some(50000));
    assert_eq!(get(&t, "name").as_str(), Some("Attic"));
    assert_eq!(
        get(&t, "desktop.capture").as_array().unwrap()[0].as_str(),
        Some("testpattern")
    );
    assert!(
        !dir.path().join("host").exists(),
        "no identity is created just to print the configuration"
    );

    // What it printed, saved as the file, gives the same again.
    std::fs::write(dir.path().join("host.toml"), &out.stdout).unwrap();
    let again = print_config(dir.path(), &[]);
    assert_eq!(stdout_toml(&again), t);
}

#[test]
fn config_names_another_file_which_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "max_sessions = 9\n").unwrap();
    // A host.toml in the directory is not read when --config names another file.
    std::fs::write(dir.path().join("host.toml"), "max_sessions = 2\n").unwrap();
    let out = print_config(dir.path(), &["--config", other.to_str().unwrap()]);
    assert_eq!(
        get(&stdout_toml(&out), "max_sessions").as_integer(),
        Some(9)
    );

    let missing = dir.path().join("missing.toml");
    let out = print_config(dir.path(), &["--config", missing.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{}: No such file", missing.display())),
        "{err}"
    );

    // Without a file in the directory, the defaults.
    let empty = tempfile::tempdir().unwrap();
    let t = stdout_toml(&print_config(empty.path(), &[]));
    assert_eq!(get(&t, "max_sessions").as_integer(), Some(4));
}

#[test]
fn a_bad_file_stops_serve_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("host.toml");
    for (text, want) in [
        (
            "name = \"x\"\n\n[gamestream]\nenabled = true\n\n# more video protection\nfec = 300\n",
            ":7: gamestream.fec: 300 is above 255 %",
        ),
        (
            "[punktfunk1]\nlisten = \"0.0.0.0:47800\"\nlisen = \"0.0.0.0:1\"\n",
            ":3: punktfunk1.lisen: unknown key, expected one of `listen`",
        ),
        ("max_mode = 3\n", ":1: max_mode: invalid type: integer"),
        ("[desktop\n", ":1: "),
    ] {
        std::fs::write(&file, text).unwrap();
        // serve itself, not only --print-config: it must stop before binding or probing.
        let out = host(dir.path())
            // `--sessions 0` makes a serve that wrongly accepted the file end at once, not hang.
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--no-mdns",
                "--sessions",
                "0",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text:?}: {err}");
        let line = format!("punktfunk-host: {}{want}", file.display());
        assert!(err.contains(&line), "{text:?}:\n{err}\nwant {line}");
        assert!(out.stdout.is_empty(), "nothing started: {text:?}");
    }
}

#[test]
fn help_states_the_defaults_print_config_applies() {
    let dir = tempfile::tempdir().unwrap();
    let out = host(dir.path()).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let t = stdout_toml(&print_config(dir.path(), &[]));
    let text = |v: &toml::Value| match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
            .join(","),
        toml::Value::Float(f) if f.fract() == 0.0 => format!("{f:.0}"),
        other => other.to_string(),
    };
    let mut checked = 0;
    for (flag, key) in [
        ("--listen", "punktfunk1.listen"),
        ("--max-sessions", "max_sessions"),
        ("--handshake-timeout", "punktfunk1.handshake_timeout"),
        ("--codecs", "punktfunk1.codecs"),
        ("--max-mode", "max_mode"),
        ("--bitrate", "punktfunk1.bitrate"),
        ("--max-bitrate", "punktfunk1.max_bitrate"),
        ("--fec", "punktfunk1.fec"),
        ("--shard", "punktfunk1.shard"),
        ("--cipher", "punktfunk1.cipher"),
        ("--gamestream-port", "gamestream.port"),
        ("--gamestream-fec", "gamestream.fec"),
        ("--display", "desktop.display"),
        ("--capture", "desktop.capture"),
        ("--input", "desktop.input"),
        ("--audio", "desktop.audio"),
        ("--min-frame-interval", "desktop.min_frame_interval"),
    ] {
        // The flag's entry runs from its name to the next flag.
        let start = help
            .find(&format!("{flag} <"))
            .unwrap_or_else(|| panic!("{flag} missing from --help"));
        let entry = &help[start..];
        let entry = &entry[..entry[2..].find("\n      -").map_or(entry.len(), |e| e + 2)];
        let stated = entry
            .split("[default: ")
            .nth(1)
            .and_then(|s| s.split(']').next())
            .unwrap_or_else(|| panic!("{flag} states no default: {entry}"));
        assert_eq!(stated, text(get(&t, key)), "{flag} vs {key}");
        checked += 1;
    }
    assert_eq!(checked, 17);
}

#[test]
fn the_readme_example_is_a_valid_host_toml() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = &readme[readme
        .find("## Configuration")
        .expect("README has a Configuration section")..];
    let example = section
        .split("```toml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the section has a TOML example");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("host.toml"), example).unwrap();
    let t = stdout_toml(&print_config(dir.path(), &[]));
    assert_eq!(get(&t, "name").as_str(), Some("Living room"));
    assert_eq!(get(&t, "gamestream.enabled").as_bool(), Some(true));
}
