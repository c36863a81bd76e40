//! punktfunk-host: the streaming host.
//!
//! - [`serve`]: the punktfunk/1 listener (QUIC control plane, per-session handshake and control).
//! - [`pipeline`]: one session's video on native threads (source, conversion, encoder, send).
//! - [`dataplane`]: the shared data-plane UDP socket and its probe authentication.
//! - [`inject`]: the input injector edge.
//! - [`audio`]: the audio source edge.
//! - [`gamestream`]: the GameStream (Moonlight) host: nvhttp, pairing, apps.
//! - [`control`]: the local control channel (`punktfunk-host pin`).
//! - [`net`]: accepting connections with back-off when `accept` fails (out of descriptors).
//! - [`mdns`]: service discovery.

pub mod audio;
pub mod control;
pub mod dataplane;
pub mod gamestream;
pub mod inject;
pub mod mdns;
pub mod net;
pub mod pipeline;
pub mod serve;
pub mod stats;
