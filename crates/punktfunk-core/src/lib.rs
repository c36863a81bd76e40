//! punktfunk-core: the sans-IO heart of punktfunk's data plane.
//!
//! Everything here takes bytes and `now: Instant` in and gives packets, events and deadlines
//! out. There are no sockets, threads, clocks or async runtimes in this crate (a clippy
//! `disallowed-methods` list enforces the clock and thread part); drivers live in
//! `punktfunk-net` and the binaries.

pub mod control;
pub mod crypto;
pub mod fec;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod input;
pub mod packetizer;
pub mod pairing;
pub mod probe;
pub mod reassembler;
pub mod session;
pub mod text;
pub mod wire;
