//! punktfunk-client: the reference client.
//!
//! The data-plane core and network drivers it will run on exist (`punktfunk-core`,
//! `punktfunk-net`); the client itself (QUIC control plane, decoding, verification) is not
//! built yet, so this binary only explains that and exits non-zero.

use clap::Parser;

/// punktfunk reference client (not yet functional: the streaming client is the next milestone).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {}

fn main() -> std::process::ExitCode {
    let _ = Args::parse();
    eprintln!("punktfunk-client: streaming is not implemented yet; see README.md (Status)");
    std::process::ExitCode::from(2)
}
