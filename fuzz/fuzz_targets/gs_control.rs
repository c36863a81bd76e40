#![no_main]
//! Any bytes as an encrypted control packet and as an input packet: no panic. A control packet
//! sealed by the fuzzer's own cipher around arbitrary bytes always opens and classifies.
use libfuzzer_sys::fuzz_target;
use punktfunk_gamestream::control::{ClientMessage, ControlCipher, Message};
use punktfunk_gamestream::input::decode;
use punktfunk_gamestream::rtsp::Origin;

fuzz_target!(|data: &[u8]| {
    let host = ControlCipher::new(&[9u8; 16], Origin::Host);
    let _ = host.open(data);
    let _ = decode(data);
    if data.len() >= 2 && data.len() <= 1024 {
        let kind = u16::from_le_bytes([data[0], data[1]]);
        let mut client = ControlCipher::new(&[9u8; 16], Origin::Client);
        let packet = client.seal(kind, &data[2..]);
        match host.open(&packet) {
            Ok(m) => {
                assert_eq!(m.payload, &data[2..]);
                let _ = ClientMessage::parse(&m);
            }
            Err(_) => assert_eq!(kind, 1, "only a nested envelope is refused"),
        }
        let _ = ClientMessage::parse(&Message {
            kind,
            payload: data[2..].to_vec(),
        });
    }
});
