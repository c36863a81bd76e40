//! What the client's process tests share: the binaries of other packages in the same target
//! directory.

use std::path::PathBuf;

/// The client binary under test.
pub fn client_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_punktfunk-client"))
}

/// The binary `bin` of `package` from the same target directory.
pub fn sibling_bin(bin: &str, package: &str) -> PathBuf {
    punktfunk_testenv::sibling_bin(&client_bin(), bin, package)
}
