//! The control port's UDP socket as the ENet host sees it: every datagram passes the
//! [`Screen`] first, so only the launched client's connection request can take a peer slot.
//!
//! The control thread tells the screen who may connect ([`ScreenedSocket::expect`]) whenever
//! the session changes. Dropped datagrams are counted; a flood is read and dropped in bounded
//! batches, so the ENet host's service loop always gets back to its peers.

use punktfunk_gamestream::enet_gate::{Expected, Screen, Screened};
use rusty_enet as enet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

/// Most datagrams dropped in one receive call before it reports "nothing more" to ENet.
const DROP_BUDGET: usize = 256;

/// A UDP socket whose receive side is screened.
pub struct ScreenedSocket {
    sock: UdpSocket,
    screen: Arc<Mutex<Screen>>,
}

/// The control thread's handle on the screen.
#[derive(Clone)]
pub struct ScreenHandle(Arc<Mutex<Screen>>);

impl ScreenHandle {
    /// Who may connect now (None: nobody, between sessions).
    pub fn expect(&self, expected: Option<Expected>) {
        crate::lock(&self.0).expect(expected);
    }

    /// What the screen dropped so far.
    pub fn dropped(&self) -> Screened {
        crate::lock(&self.0).dropped()
    }
}

impl ScreenedSocket {
    /// Screens `sock`; the handle sets who may connect.
    pub fn new(sock: UdpSocket) -> (ScreenedSocket, ScreenHandle) {
        let screen = Arc::new(Mutex::new(Screen::new()));
        (
            ScreenedSocket {
                sock,
                screen: screen.clone(),
            },
            ScreenHandle(screen),
        )
    }
}

impl enet::Socket for ScreenedSocket {
    type Address = SocketAddr;
    type Error = std::io::Error;

    fn init(&mut self, options: enet::SocketOptions) -> Result<(), Self::Error> {
        self.sock.init(options)
    }

    fn send(&mut self, address: SocketAddr, buffer: &[u8]) -> Result<usize, Self::Error> {
        enet::Socket::send(&mut self.sock, address, buffer)
    }

    fn receive(
        &mut self,
        buffer: &mut [u8; enet::MTU_MAX],
    ) -> Result<Option<(SocketAddr, enet::PacketReceived)>, Self::Error> {
        for _ in 0..DROP_BUDGET {
            let Some((from, got)) = enet::Socket::receive(&mut self.sock, buffer)? else {
                return Ok(None);
            };
            let enet::PacketReceived::Complete(n) = got else {
                continue;
            };
            if crate::lock(&self.screen).admit(from.ip(), &buffer[..n]) {
                return Ok(Some((from, enet::PacketReceived::Complete(n))));
            }
        }
        Ok(None)
    }
}
