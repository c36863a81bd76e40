//! What the client's process tests share: the binaries of other packages in the same target
//! directory.

use std::path::PathBuf;
use std::process::Command;

/// The client binary under test.
pub fn client_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_punktfunk-client"))
}

/// The binary `bin` of `package` from the same target directory. `cargo test --workspace`
/// builds it (the package has integration tests); when only this package is tested it is
/// built here, once per binary.
pub fn sibling_bin(bin: &str, package: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let path = client_bin().with_file_name(bin);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() && !built.iter().any(|b| b == bin) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = client_bin()
            .parent()
            .is_some_and(|d| d.ends_with("release"));
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", package, "--bin", bin]);
        if release {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("running cargo build").success(),
            "building {bin} failed"
        );
        built.push(bin.to_string());
    }
    assert!(path.exists(), "{} missing", path.display());
    path
}
