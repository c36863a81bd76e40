#![no_main]
//! Any sequence of control messages, datagrams, pipeline answers and clock steps into
//! punktfunk/1's host control machine: no panic, at most one end and nothing after it, and no
//! mode past the policy's limit ever reaches the pipeline.
use libfuzzer_sys::fuzz_target;
use punktfunk_core::control::{
    Codec, HostAction, HostControl, Hello, Message, Mode, PROTOCOL_VERSION,
};
use punktfunk_core::crypto::CipherSuite;
use punktfunk_core::handshake::{HostHandshake, HostPolicy};
use std::time::{Duration, Instant};

fn policy() -> HostPolicy {
    HostPolicy {
        codecs: vec![Codec::H264],
        max_mode: Mode::new(1920, 1080, 60),
        default_bitrate_kbps: 10_000,
        bitrate_range_kbps: (500, 50_000),
        default_fec_percent: 20,
        fec_parity_range: (2, 1024),
        shard_len: 1400,
        suite: CipherSuite::AES_128_GCM,
        data_port: 47_801,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut hs = HostHandshake::new(policy());
    hs.handle(
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            mode: Mode::new(640, 360, 30),
            codecs: vec![Codec::H264],
            bitrate_kbps: 0,
            fec_percent: None,
            client_name: "fuzz".into(),
            app: String::new(),
        }),
        &mut |b| b.fill(7),
    );
    hs.handle(Message::Start, &mut |b| b.fill(7));
    let Some((welcome, _)) = hs.established() else {
        return;
    };
    let t0 = Instant::now();
    let mut now = t0;
    let mut hc = HostControl::new(welcome, policy(), t0, now);
    let max = policy().max_mode;
    let mut ended = false;
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (arg, next) = tail.split_at(n);
        rest = next;
        match op % 7 {
            0 => {
                if let Ok(m) = Message::decode_body(arg) {
                    hc.handle_message(now, m);
                } else {
                    hc.handle_malformed(now, "undecodable");
                }
            }
            1 => hc.handle_datagram(now, arg),
            2 => now += Duration::from_millis(u64::from(*len) * 40),
            3 => hc.handle_timeout(now),
            4 => {
                let _ = hc.handle_reconfigured(now, u32::from(*len), 5_000);
            }
            5 => {
                let _ = hc.handle_reconfigure_failed(now, "fuzz");
            }
            _ => hc.handle_pipeline_failed(now, "fuzz"),
        }
        while let Some(a) = hc.poll_action() {
            assert!(!ended, "nothing comes after the end");
            match a {
                HostAction::Reconfigure { mode, .. } => assert!(
                    mode.width <= max.width
                        && mode.height <= max.height
                        && mode.refresh_mhz <= max.refresh_mhz,
                    "{mode} past {max} reached the pipeline"
                ),
                HostAction::End(_) => ended = true,
                _ => {}
            }
        }
        if let Some(t) = hc.poll_timeout() {
            assert!(t >= t0);
        }
    }
});
