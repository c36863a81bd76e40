//! punktfunk-net: the network drivers around the sans-IO core.
//!
//! - [`udp`]: a UDP socket that sends a frame's datagrams in as few system calls as the kernel
//!   allows (UDP GSO, else `sendmmsg`, else one `send_to` each) and receives in batches
//!   (`recvmmsg`, splitting GRO-coalesced buffers), with large socket buffers.
//! - [`impair`]: a seeded, sans-IO network impairment model (loss, bursts, reorder,
//!   duplication, delay, jitter, bandwidth cap).
//! - [`proxy`]: that model between two UDP sockets on native threads, for tests and the
//!   `punktfunk-impair` tool.
//!
//! This crate makes no protocol decisions and does not depend on the core.

pub mod impair;
pub mod proxy;
pub mod udp;

pub use impair::{GilbertElliott, ImpairConfig, ImpairError, ImpairStats, Impairment};

pub use proxy::{ImpairProxy, ProxyStats};
pub use udp::{RecvBatch, SendPath, UdpSocket};
