//! The host binary's command line: help, identity, and clear errors for bad flags.

use std::process::Command;

fn host() -> Command {
    Command::new(env!("CARGO_BIN_EXE_punktfunk-host"))
}

#[test]
fn help_explains_the_subcommands() {
    let out = host().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("serve") && text.contains("fingerprint") && text.contains("doctor"),
        "{text}"
    );
    let out = host().args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--data-port",
        "--max-sessions",
        "--handshake-timeout",
        "--codecs",
        "--bitrate",
        "--fec",
        "--print-config",
        "--config",
        "--no-gamestream",
    ] {
        assert!(text.contains(flag), "{flag} missing from serve --help");
    }
}

#[test]
fn fingerprint_creates_a_private_identity_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let out = host()
            .args(["--config-dir", dir.path().to_str().unwrap(), "fingerprint"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let a = run();
    assert_eq!(a.len(), 64);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(run(), a, "the identity persists");
    let mode = std::fs::metadata(dir.path().join("host/host-key.der"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn bad_flags_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["serve", "--max-mode", "12x"], "invalid mode"),
        (vec!["serve", "--codecs", "mpeg2"], "unknown codec"),
        (vec!["serve", "--cipher", "rot13"], "unknown cipher"),
        (vec!["serve", "--max-sessions", "0"], "--max-sessions"),
        (vec!["serve", "--shard", "100"], "--shard"),
        (
            vec!["serve", "--gamestream-fec", "300"],
            "--gamestream-fec: 300 is above 255 %",
        ),
        (
            vec!["doctor", "--display", "weston"],
            "--display: unknown display backend \"weston\"",
        ),
    ] {
        let out = host()
            .args(["--config-dir", dir.path().to_str().unwrap()])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
