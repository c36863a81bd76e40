//! The protocol front-ends. Each negotiates at the wire level, hands a protocol-neutral
//! [`crate::plan::StreamRequest`] to [`crate::plan::resolve`] and streams through a
//! [`crate::session::Session`]; neither knows a platform.
//!
//! - [`punktfunk1`]: punktfunk/1 (QUIC control plane, the encrypted FEC data plane);
//! - [`gamestream`]: GameStream for stock Moonlight clients (nvhttp, RTSP, ENet, RTP).

pub mod gamestream;
pub mod punktfunk1;
