#![no_main]
//! Any bytes as video and audio datagrams (plain and encrypted receivers, several packet
//! sizes): no panic, and a completed frame never exceeds what its shards can carry.
use libfuzzer_sys::fuzz_target;
use punktfunk_gamestream::audio::AudioReceiver;
use punktfunk_gamestream::video::{Reassembled, VideoReassembler};

fuzz_target!(|data: &[u8]| {
    let mut plain = VideoReassembler::new(64, None);
    let mut sealed = VideoReassembler::new(64, Some(&[1u8; 16]));
    let mut audio = AudioReceiver::new(None, 0, 5);
    let mut audio_enc = AudioReceiver::new(Some([1u8; 16]), 7, 5);
    // The input is a sequence of datagrams, each prefixed by one length byte.
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (dg, next) = tail.split_at(n);
        rest = next;
        // Pad to the exact video datagram size so the header is parsed.
        let mut v = dg.to_vec();
        v.resize(80, 0);
        if let Reassembled::Frame(f) = plain.push(&v) {
            assert!(f.data.len() <= 4 * 1023 * 48);
        }
        let _ = sealed.push(dg);
        let _ = audio.push(dg);
        let _ = audio_enc.push(dg);
    }
});
