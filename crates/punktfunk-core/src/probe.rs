//! Data-plane probes: how a host learns where to send a session's video.
//!
//! The client sends small authenticated datagrams from its data socket to the host's data port
//! (at the start, then once a second so NAT bindings stay open). The host sends the session's
//! datagrams to the source address of the latest authentic probe, so it never sends video to an
//! address the client did not prove it owns, and a spoofed probe cannot redirect a stream.
//!
//! ```text
//! magic "PFP1" (4) ‖ session id u64 LE (8) ‖ sequence u64 LE (8) ‖ AEAD tag (16)
//! ```
//!
//! The tag seals an empty payload with the session's client→host key, nonce from the sequence
//! and the first 20 bytes as AAD. The session id is in the clear so the host can find the key
//! without trying every session's.

use crate::crypto::{OpenError, Opener, Sealer};

/// Probe magic.
pub const MAGIC: &[u8; 4] = b"PFP1";
/// Bytes before the tag.
const HEAD: usize = 20;

/// Builds the next probe for `session_id`; `None` if the sealer's sequence space is used up.
pub fn encode(sealer: &mut Sealer, session_id: u64) -> Option<Vec<u8>> {
    let seq = sealer.reserve(1).ok()?;
    let mut buf = Vec::with_capacity(HEAD + sealer.tag_len());
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&session_id.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.resize(HEAD + sealer.tag_len(), 0);
    let (aad, body) = buf.split_at_mut(HEAD);
    sealer.seal(seq, aad, body).ok()?;
    Some(buf)
}

/// The session id of something that looks like a probe (not yet authenticated).
pub fn session_id(datagram: &[u8]) -> Option<u64> {
    if datagram.len() < HEAD || &datagram[..4] != MAGIC {
        return None;
    }
    Some(u64::from_le_bytes(
        datagram[4..12].try_into().expect("8 bytes"),
    ))
}

/// Authenticates a probe with the session's opener (which also rejects replays).
pub fn verify(opener: &mut Opener, datagram: &mut [u8]) -> Result<(), OpenError> {
    if datagram.len() != HEAD + opener.tag_len() || &datagram[..4] != MAGIC {
        return Err(OpenError::Forged);
    }
    let seq = u64::from_le_bytes(datagram[12..20].try_into().expect("8 bytes"));
    let (aad, body) = datagram.split_at_mut(HEAD);
    opener.open(seq, aad, body).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{packet_key, CipherSuite};

    fn pair() -> (Sealer, Opener) {
        let k = || packet_key(CipherSuite::AES_128_GCM, &[3; 16], [4; 12]).unwrap();
        (Sealer::new(k()), Opener::new(k()))
    }

    #[test]
    fn probes_authenticate_and_replays_fail() {
        let (mut s, mut o) = pair();
        let p = encode(&mut s, 0xABCD).unwrap();
        assert_eq!(session_id(&p), Some(0xABCD));
        assert!(verify(&mut o, &mut p.clone()).is_ok());
        assert_eq!(verify(&mut o, &mut p.clone()), Err(OpenError::Replayed));
        let mut q = encode(&mut s, 0xABCD).unwrap();
        q[5] ^= 1; // another session id, same tag
        assert_eq!(verify(&mut o, &mut q), Err(OpenError::Forged));
        assert_eq!(session_id(b"nope"), None);
        assert_eq!(verify(&mut o, &mut [0u8; 10]), Err(OpenError::Forged));
    }
}
