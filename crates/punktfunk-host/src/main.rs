//! punktfunk-host: the streaming host.
//!
//! The data-plane core and network drivers it will run on exist (`punktfunk-core`,
//! `punktfunk-net`); the host itself (QUIC control plane, capture, encoding, sessions) is not
//! built yet, so this binary only explains that and exits non-zero.

use clap::Parser;

/// punktfunk streaming host (not yet functional: the streaming host is the next milestone).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {}

fn main() -> std::process::ExitCode {
    let _ = Args::parse();
    eprintln!("punktfunk-host: streaming is not implemented yet; see README.md (Status)");
    std::process::ExitCode::from(2)
}
