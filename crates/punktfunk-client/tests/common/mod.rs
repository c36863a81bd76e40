//! What the client's process tests share: the binaries of other packages in the same target
//! directory, and pairing a client with a running host.

use std::path::PathBuf;

/// The client binary under test.
pub fn client_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_punktfunk-client"))
}

/// The binary `bin` of `package` from the same target directory.
pub fn sibling_bin(bin: &str, package: &str) -> PathBuf {
    punktfunk_testenv::sibling_bin(&client_bin(), bin, package)
}

// Not every test binary pairs (the desktop tests run an open host).

/// A PIN armed on a running host (`punktfunk-host pair`): the command, still waiting for the
/// outcome of the PIN's ceremony, and the PIN it printed.
#[allow(dead_code)]
pub struct Armed {
    pub command: std::process::Child,
    pub pin: String,
    rest: std::io::BufReader<std::process::ChildStdout>,
}

#[allow(dead_code)]
impl Armed {
    /// Waits for the command: whether it succeeded, and what it printed after the PIN.
    pub fn finish(mut self) -> (bool, String) {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.rest, &mut rest).unwrap();
        (self.command.wait().unwrap().success(), rest)
    }
}

/// Arms a pairing PIN on the host running with config directory `host_dir`.
#[allow(dead_code)]
pub fn arm(host_dir: &std::path::Path) -> Armed {
    use std::io::BufRead;
    let mut command = std::process::Command::new(sibling_bin("punktfunk-host", "punktfunk-host"))
        .args(["--config-dir", host_dir.to_str().unwrap(), "pair"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut rest = std::io::BufReader::new(command.stdout.take().unwrap());
    let mut line = String::new();
    rest.read_line(&mut line).unwrap();
    let pin = line
        .strip_prefix("PIN ")
        .unwrap_or_else(|| panic!("no PIN line: {line:?}"))
        .trim()
        .to_string();
    Armed { command, pin, rest }
}

/// Pairs the client config `cfg` with the host at `quic` (config directory `host_dir`) the way
/// a person would: the host arms a PIN, the client types it. Panics unless both sides succeed.
#[allow(dead_code)]
pub fn pair(host_dir: &std::path::Path, quic: &str, cfg: &std::path::Path, name: &str) {
    let armed = arm(host_dir);
    let out = std::process::Command::new(client_bin())
        .args(["--config-dir", cfg.to_str().unwrap(), "--log", "warn"])
        .args(["pair", quic, "--pin-code", &armed.pin, "--name", name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client pair: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, rest) = armed.finish();
    assert!(ok && rest.starts_with("Paired"), "host pair: {rest}");
}
