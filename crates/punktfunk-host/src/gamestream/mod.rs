//! The GameStream host: what stock Moonlight clients talk to.
//!
//! - [`nvhttp`]: HTTP and HTTPS servers for discovery info, pairing and app control;
//! - [`tls`]: the HTTPS configuration (client certificate required, judged by the store);
//! - [`clients`]: the paired-client store;
//! - [`apps`]: the app catalog;
//! - [`rtsp`]: the RTSP server that sets up a streaming session;
//! - [`stream`]: the streaming session itself (video, audio, the ENet control stream, input).
//!
//! Trust: GameStream pairing authenticates the client by a 4-digit PIN typed on the host and
//! pins certificates on both sides afterwards, but the PIN exchange itself can be brute-forced
//! offline by someone who records it, and the protocol's streams use keys handed over inside
//! nvhttp. That is weaker than punktfunk/1, which is why it is off unless asked for
//! (`serve --gamestream`).

pub mod apps;
pub mod clients;
pub mod nvhttp;
pub mod rtsp;
pub mod stream;
pub mod tls;

pub use nvhttp::{GameStream, GameStreamConfig};
