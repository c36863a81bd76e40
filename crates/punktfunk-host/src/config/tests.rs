use super::*;
use punktfunk_desktop::{CaptureBackend, DisplayBackend};
use std::path::Path;

fn file(text: &str) -> FileLayer {
    FileLayer::parse(Path::new("/etc/pf/host.toml"), text.to_string()).unwrap()
}

fn ok(file: Option<&FileLayer>, flags: ServeFlags) -> HostConfig {
    resolve(file, &flags, "/cfg".into()).unwrap()
}

fn err(file: Option<&FileLayer>, flags: ServeFlags) -> String {
    resolve(file, &flags, "/cfg".into())
        .unwrap_err()
        .to_string()
}

#[test]
fn nothing_given_is_the_defaults() {
    let c = ok(None, ServeFlags::default()).serve;
    assert_eq!(c.listen, "0.0.0.0:47800".parse().unwrap());
    assert_eq!(c.data, "0.0.0.0:47801".parse().unwrap());
    assert_eq!(c.max_sessions, 4);
    assert_eq!(c.session_limit, None);
    assert_eq!(c.handshake_timeout, Duration::from_secs(5));
    assert_eq!(c.codecs, [Codec::H264, Codec::HEVC, Codec::AV1]);
    assert_eq!(c.max_mode, Mode::new(3840, 2160, 240));
    assert_eq!(c.default_bitrate_kbps, 10_000);
    assert_eq!(c.bitrate_range_kbps, (250, 150_000));
    assert_eq!((c.fec_percent, c.shard_len), (20, 1400));
    assert_eq!(c.suite, CipherSuite::AES_128_GCM);
    assert!(c.prefer_hardware && c.mdns);
    assert!(c.gamestream.is_none());
    assert_eq!(c.desktop.display, Preference::Auto);
    assert_eq!(c.desktop.min_frame_interval, Duration::from_millis(100));
    assert_eq!(c.config_dir, Path::new("/cfg"));
}

#[test]
fn a_file_alone_sets_every_section() {
    let f = file(
        r#"
name = "Living room"
mdns = false
hardware = false
max_sessions = 2
sessions = 3
max_mode = "1920x1080@60"
stats_json = "/tmp/s.json"

[punktfunk1]
listen = "127.0.0.1:9000"
handshake_timeout = 2
codecs = ["hevc", "h264"]
bitrate = 5000
max_bitrate = 20000
fec = 10
shard = 1200
cipher = "aes256"

[gamestream]
enabled = true
port = 50000
fec = 30

[desktop]
display = ["sway", "existing"]
capture = "testpattern"
min_frame_interval = 50
"#,
    );
    let c = ok(Some(&f), ServeFlags::default()).serve;
    assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(c.data, "127.0.0.1:9001".parse().unwrap());
    assert_eq!((c.max_sessions, c.session_limit), (2, Some(3)));
    assert_eq!(c.handshake_timeout, Duration::from_secs(2));
    assert_eq!(c.codecs, [Codec::HEVC, Codec::H264]);
    assert_eq!(c.max_mode, Mode::new(1920, 1080, 60));
    assert_eq!(c.default_bitrate_kbps, 5000);
    assert_eq!(c.bitrate_range_kbps, (250, 20_000));
    assert_eq!((c.fec_percent, c.shard_len), (10, 1200));
    assert_eq!(c.suite, CipherSuite::AES_256_GCM);
    assert!(!c.prefer_hardware && !c.mdns);
    assert_eq!(c.stats_json.as_deref(), Some(Path::new("/tmp/s.json")));
    let gs = c.gamestream.unwrap();
    assert_eq!((gs.base_port, gs.fec_percent), (50000, 30));
    assert_eq!(gs.hostname, "Living room");
    assert_eq!(
        c.desktop.display,
        Preference::Only(vec![DisplayBackend::Sway, DisplayBackend::Existing])
    );
    assert_eq!(
        c.desktop.capture,
        Preference::Only(vec![CaptureBackend::TestPattern])
    );
    assert_eq!(c.desktop.input, Preference::Auto);
    assert_eq!(c.desktop.min_frame_interval, Duration::from_millis(50));
}

#[test]
fn flags_alone_behave_as_they_always_have() {
    let c = ok(
        None,
        ServeFlags {
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            data_port: Some(0),
            codecs: Some(vec!["av1".into()]),
            bitrate: Some(500_000),
            max_bitrate: Some(300),
            gamestream: true,
            gamestream_drop_video: Some(0.25),
            gamestream_rumble_echo: true,
            no_mdns: true,
            capture: Some("testpattern, testpattern".into()),
            ..Default::default()
        },
    )
    .serve;
    assert_eq!(c.data, "127.0.0.1:0".parse().unwrap());
    assert_eq!(c.codecs, [Codec::AV1]);
    // The default moves inside the range.
    assert_eq!(c.bitrate_range_kbps, (250, 300));
    assert_eq!(c.default_bitrate_kbps, 300);
    assert!(!c.mdns);
    let gs = c.gamestream.unwrap();
    assert_eq!(gs.base_port, 47989);
    assert_eq!(gs.aids.drop_video, 0.25);
    assert!(gs.aids.rumble_echo);
    assert_eq!(
        c.desktop.capture,
        Preference::Only(vec![CaptureBackend::TestPattern])
    );
    // Port 0 for QUIC means any port for the data plane too.
    let c = ok(
        None,
        ServeFlags {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        },
    )
    .serve;
    assert_eq!(c.data.port(), 0);
}

#[test]
fn a_flag_overrides_the_file_and_the_file_the_default() {
    let f = file(
        "mdns = false\nhardware = false\n[punktfunk1]\nfec = 50\nshard = 1000\n[gamestream]\nenabled = true\nfec = 30\n[desktop]\ncapture = \"testpattern\"\n",
    );
    let c = ok(
        Some(&f),
        ServeFlags {
            fec: Some(60),
            gamestream_fec: Some(0),
            mdns: true,
            capture: Some("auto".into()),
            ..Default::default()
        },
    )
    .serve;
    assert_eq!(c.fec_percent, 60, "flag over file");
    assert_eq!(c.shard_len, 1000, "file over default");
    assert_eq!(c.max_sessions, 4, "default where neither speaks");
    assert!(c.mdns, "--mdns over mdns = false");
    assert!(!c.prefer_hardware);
    assert_eq!(c.gamestream.as_ref().unwrap().fec_percent, 0);
    assert_eq!(c.desktop.capture, Preference::Auto);
    let off = ok(
        Some(&f),
        ServeFlags {
            no_gamestream: true,
            hardware: true,
            ..Default::default()
        },
    )
    .serve;
    assert!(
        off.gamestream.is_none(),
        "--no-gamestream over enabled = true"
    );
    assert!(off.prefer_hardware);
}

#[test]
fn an_existing_output_is_named_after_a_colon_in_the_display_list() {
    let c = ok(
        None,
        ServeFlags {
            display: Some("existing:HEADLESS-1".into()),
            ..Default::default()
        },
    )
    .serve;
    assert_eq!(
        c.desktop.display,
        Preference::Only(vec![DisplayBackend::Existing])
    );
    assert_eq!(c.desktop.existing_output.as_deref(), Some("HEADLESS-1"));
    let f = file("[desktop]\ndisplay = [\"sway\", \"existing: DP-1\"]\n");
    let c = ok(Some(&f), ServeFlags::default()).serve;
    assert_eq!(
        c.desktop.display,
        Preference::Only(vec![DisplayBackend::Sway, DisplayBackend::Existing])
    );
    assert_eq!(c.desktop.existing_output.as_deref(), Some("DP-1"));
    let plain = ok(None, ServeFlags::default()).serve;
    assert_eq!(plain.desktop.existing_output, None);
    for (given, says) in [
        ("existing:", "existing: names no output"),
        ("existing:A,existing:B", "two existing outputs (A and B)"),
        ("sway:X", "unknown display backend \"sway:X\""),
    ] {
        let e = err(
            None,
            ServeFlags {
                display: Some(given.into()),
                ..Default::default()
            },
        );
        assert!(e.contains(says), "{given}: {e}");
        assert!(e.contains("--display"), "{given}: {e}");
    }
}

#[test]
fn file_errors_name_the_file_the_line_and_the_key() {
    let at = |text: &str| err(Some(&file(text)), ServeFlags::default());
    for (text, want) in [
        (
            "name = \"x\"\n\n[gamestream]\nenabled = true\n\n\nfec = 300\n",
            "/etc/pf/host.toml:7: gamestream.fec: 300 is above 255 %",
        ),
        (
            "[punktfunk1]\nfec = 201\n",
            "/etc/pf/host.toml:2: punktfunk1.fec: 201 is above 200 %",
        ),
        (
            "[punktfunk1]\nshard = 100\n",
            "/etc/pf/host.toml:2: punktfunk1.shard: 100 is outside 256..=8900 bytes",
        ),
        (
            "[punktfunk1]\nshard = 99999999\n",
            "/etc/pf/host.toml:2: punktfunk1.shard: 99999999 is outside 256..=8900 bytes",
        ),
        (
            "max_sessions = 0\n",
            "/etc/pf/host.toml:1: max_sessions: 0 is below 1",
        ),
        (
            "sessions = -1\n",
            "/etc/pf/host.toml:1: sessions: -1 is below 0",
        ),
        (
            "max_mode = \"12x\"\n",
            "/etc/pf/host.toml:1: max_mode: invalid mode \"12x\"",
        ),
        (
            "[punktfunk1]\ncodecs = [\"h264\", \"mpeg2\"]\n",
            "/etc/pf/host.toml:2: punktfunk1.codecs: unknown codec \"mpeg2\" (h264, hevc, av1)",
        ),
        (
            "[punktfunk1]\ncodecs = []\n",
            "/etc/pf/host.toml:2: punktfunk1.codecs: the list names no codec",
        ),
        (
            "[punktfunk1]\ncipher = \"rot13\"\n",
            "/etc/pf/host.toml:2: punktfunk1.cipher: unknown cipher \"rot13\" (aes128, aes256)",
        ),
        (
            "[punktfunk1]\nhandshake_timeout = 0\n",
            "/etc/pf/host.toml:2: punktfunk1.handshake_timeout: 0 is not a number of seconds in 0 < s <= 86400",
        ),
        (
            "[punktfunk1]\ndata_port = 70000\n",
            "/etc/pf/host.toml:2: punktfunk1.data_port: 70000 is above 65535",
        ),
        (
            "[punktfunk1]\nlisten = \"0.0.0.0:65535\"\n",
            "/etc/pf/host.toml:2: punktfunk1.listen: port 65535 leaves no room",
        ),
        (
            "[punktfunk1]\nbitrate = 0\n",
            "/etc/pf/host.toml:2: punktfunk1.bitrate: 0 is outside 250..=1000000 kbit/s",
        ),
        (
            "[gamestream]\nenabled = true\nport = 80\n",
            "/etc/pf/host.toml:3: gamestream.port: 80 is outside 1019..=65514",
        ),
        (
            "[desktop]\n\ndisplay = [\"sway\", \"weston\"]\n",
            "/etc/pf/host.toml:3: desktop.display: unknown display backend \"weston\" (auto, sway, mutter, xorg, existing)",
        ),
        (
            "[desktop]\ninput = []\n",
            "/etc/pf/host.toml:2: desktop.input: the list names no backend",
        ),
        (
            "[desktop]\nmin_frame_interval = 0\n",
            "/etc/pf/host.toml:2: desktop.min_frame_interval: 0 is outside 1..=10000 ms",
        ),
        (
            "name = \"  \"\n",
            "/etc/pf/host.toml:1: name: the name is empty",
        ),
    ] {
        let e = at(text);
        assert!(e.starts_with(want), "{text:?}:\n  got  {e}\n  want {want}");
    }
}

#[test]
fn a_bad_port_is_only_an_error_when_gamestream_runs() {
    let f = file("[gamestream]\nport = 80\n");
    assert_eq!(
        ok(Some(&f), ServeFlags::default()).printed.gamestream.port,
        80
    );
    let e = err(
        Some(&f),
        ServeFlags {
            gamestream: true,
            ..Default::default()
        },
    );
    assert!(
        e.starts_with("/etc/pf/host.toml:2: gamestream.port: 80"),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_errors_with_their_line() {
    let e = FileLayer::parse(
        Path::new("host.toml"),
        "max_sessions = 2\n\n[gamestream]\nenabled = true\ndrop_video = 0.5\n".into(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, ConfigError::UnknownKey { line: 5, key, .. } if key == "gamestream.drop_video"),
        "{e:?}"
    );
    // The testing aids have no key: a saved file never turns them on.
    assert!(e
        .to_string()
        .starts_with("host.toml:5: gamestream.drop_video: unknown key"));
}

#[test]
fn flag_errors_name_the_flag_with_the_same_words() {
    for (flags, want) in [
        (
            ServeFlags {
                gamestream_fec: Some(300),
                ..Default::default()
            },
            "--gamestream-fec: 300 is above 255 %",
        ),
        (
            ServeFlags {
                max_sessions: Some(0),
                ..Default::default()
            },
            "--max-sessions: 0 is below 1",
        ),
        (
            ServeFlags {
                shard: Some(100),
                ..Default::default()
            },
            "--shard: 100 is outside 256..=8900 bytes",
        ),
        (
            ServeFlags {
                codecs: Some(vec!["mpeg2".into()]),
                ..Default::default()
            },
            "--codecs: unknown codec \"mpeg2\"",
        ),
        (
            ServeFlags {
                gamestream_drop_audio: Some(1.0),
                ..Default::default()
            },
            "--gamestream-drop-audio: 1 is not in 0..1",
        ),
        (
            ServeFlags {
                handshake_timeout: Some(f64::NAN),
                ..Default::default()
            },
            "--handshake-timeout: NaN is not a number of seconds in 0 < s <= 86400",
        ),
        (
            ServeFlags {
                handshake_timeout: Some(1e300),
                ..Default::default()
            },
            "--handshake-timeout: 1e300 is not a number of seconds in 0 < s <= 86400",
        ),
        (
            ServeFlags {
                max_bitrate: Some(0),
                ..Default::default()
            },
            "--max-bitrate: 0 is outside 250..=1000000 kbit/s",
        ),
        (
            ServeFlags {
                bitrate: Some(4_000_000),
                ..Default::default()
            },
            "--bitrate: 4000000 is outside 250..=1000000 kbit/s",
        ),
        (
            ServeFlags {
                gamestream: true,
                gamestream_port: Some(65515),
                ..Default::default()
            },
            "--gamestream-port: 65515 is outside 1019..=65514",
        ),
        (
            ServeFlags {
                listen: Some("0.0.0.0:65535".parse().unwrap()),
                ..Default::default()
            },
            "--listen: port 65535 leaves no room",
        ),
        (
            ServeFlags {
                audio: Some("tone,alsa".into()),
                ..Default::default()
            },
            "--audio: unknown audio backend \"alsa\" (auto, pipewire, tone)",
        ),
    ] {
        let e = err(None, flags);
        assert!(e.starts_with(want), "got {e}, want {want}");
    }
}

#[test]
fn a_flag_that_fixes_a_bad_file_value_wins() {
    let f = file("[punktfunk1]\nfec = 900\n");
    assert!(err(Some(&f), ServeFlags::default()).contains("punktfunk1.fec"));
    let c = ok(
        Some(&f),
        ServeFlags {
            fec: Some(5),
            ..Default::default()
        },
    );
    assert_eq!(c.serve.fec_percent, 5);
}

#[test]
fn the_printed_configuration_reads_back_to_the_same_host() {
    let f = file(
        "name = \"Box\"\nsessions = 2\n[punktfunk1]\nlisten = \"127.0.0.1:6000\"\ncodecs = \"hevc,h264\"\n[desktop]\ncapture = [\"testpattern\"]\n",
    );
    let first = ok(
        Some(&f),
        ServeFlags {
            gamestream: true,
            cipher: Some("aes256".into()),
            ..Default::default()
        },
    );
    let text = first.to_toml();
    assert!(text.starts_with(
        "# Effective punktfunk-host configuration: defaults, then /etc/pf/host.toml, then flags."
    ));
    assert!(text.contains("name = \"Box\""), "{text}");
    assert!(
        text.contains("[punktfunk1]\nlisten = \"127.0.0.1:6000\"\ndata_port = 6001\n"),
        "{text}"
    );
    assert!(text.contains("codecs = [\"hevc\", \"h264\"]"), "{text}");
    assert!(text.contains("cipher = \"aes256\""), "{text}");
    assert!(text.contains("[gamestream]\nenabled = true\n"), "{text}");
    assert!(text.contains("capture = [\"testpattern\"]"), "{text}");
    assert!(text.contains("display = \"auto\""), "{text}");
    assert!(
        !text.contains("stats_json"),
        "unset settings are left out: {text}"
    );
    let again = ok(Some(&file(&text)), ServeFlags::default());
    assert_eq!(again.printed, first.printed);
    assert_eq!(format!("{:?}", again.serve), format!("{:?}", first.serve));
}

#[test]
fn config_paths_follow_xdg_then_home_and_a_named_file_must_exist() {
    let p = ConfigPaths::from_vars(None, None, Some("/x".into()), Some("/h".into())).unwrap();
    assert_eq!(p.dir, Path::new("/x/punktfunk"));
    assert_eq!(p.file, Path::new("/x/punktfunk/host.toml"));
    assert!(!p.file_required);
    let p = ConfigPaths::from_vars(None, None, Some("".into()), Some("/h".into())).unwrap();
    assert_eq!(p.dir, Path::new("/h/.config/punktfunk"));
    let p = ConfigPaths::from_vars(
        Some("/d".into()),
        Some("/elsewhere.toml".into()),
        None,
        None,
    )
    .unwrap();
    assert_eq!(p.dir, Path::new("/d"));
    assert_eq!(p.file, Path::new("/elsewhere.toml"));
    assert!(p.file_required);
    assert!(matches!(
        ConfigPaths::from_vars(None, None, None, None),
        Err(ConfigError::NoConfigDir)
    ));
    // An empty or relative HOME would put the identity in whatever directory the host
    // started in.
    for (xdg, home) in [(None, ""), (Some(""), "relative"), (Some("x"), "")] {
        assert!(matches!(
            ConfigPaths::from_vars(None, None, xdg.map(Into::into), Some(home.into())),
            Err(ConfigError::NoConfigDir)
        ));
    }

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("host.toml");
    assert!(FileLayer::read(&missing, false).unwrap().is_none());
    let e = FileLayer::read(&missing, true).unwrap_err();
    assert!(matches!(e, ConfigError::Unreadable { .. }), "{e:?}");
    // A directory where the file should be cannot be read: an error, not defaults.
    std::fs::create_dir(&missing).unwrap();
    assert!(matches!(
        FileLayer::read(&missing, false),
        Err(ConfigError::Unreadable { .. })
    ));
}
