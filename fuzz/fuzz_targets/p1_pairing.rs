#![no_main]
//! Any bytes as the pairing messages of punktfunk/1, into both sides of the ceremony at every
//! state: no panic, and no ceremony succeeds without the right key confirmation.
use libfuzzer_sys::fuzz_target;
use punktfunk_core::control::Message;
use punktfunk_core::pairing::{
    ApprovalStep, ClientPairing, Fingerprints, HostPairing, HostRequest, Pin,
};

fn fill(buf: &mut [u8]) {
    buf.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8 ^ 0x5a);
}

fuzz_target!(|data: &[u8]| {
    let fps = Fingerprints {
        client: [1; 32],
        host: [2; 32],
    };
    let pin = Pin::parse("0427").unwrap();
    let mut msgs = Vec::new();
    let mut rest = data;
    while let [len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        if let Ok(m) = Message::decode_body(body) {
            msgs.push(m);
        }
    }
    let mut it = msgs.into_iter();
    // Host: start, then a confirmation.
    if let Some(first) = it.next() {
        if let Ok(HostRequest::Pin(req)) = HostPairing::new(fps).handle(first) {
            if let Ok((state, _challenge)) = req.answer(&pin, &mut fill) {
                if let Some(m) = it.next() {
                    // A fuzzed confirmation cannot be the MAC of a fresh SPAKE2 run.
                    assert!(state.handle(m).is_err());
                }
            }
        }
    }
    // Client: a fuzzed challenge and answer.
    let (state, _) = ClientPairing::with_pin(&pin, "fuzz", fps, &mut fill);
    if let Some(m) = it.next() {
        if let Ok((done, _)) = state.handle(m) {
            if let Some(m) = it.next() {
                let _ = done.handle(m);
            }
        }
    }
    let (mut waiting, _) = ClientPairing::with_approval("fuzz");
    for m in it {
        match waiting.handle(m, fps.host) {
            Ok(ApprovalStep::Waiting(w)) => waiting = w,
            _ => break,
        }
    }
});
