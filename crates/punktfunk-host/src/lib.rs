//! punktfunk-host: the streaming host.
//!
//! - [`serve`]: the punktfunk/1 listener (QUIC control plane, per-session handshake and control).
//! - [`pipeline`]: one session's video on native threads (source, conversion, encoder, send).
//! - [`dataplane`]: the shared data-plane UDP socket and its probe authentication.
//! - [`inject`]: the input injector edge.

pub mod dataplane;
pub mod inject;
pub mod pipeline;
pub mod serve;
