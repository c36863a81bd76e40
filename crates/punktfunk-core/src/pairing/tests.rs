use super::*;

/// A deterministic stand-in for the system random source: a counter run through SHA-256.
fn rng(seed: u8) -> impl FnMut(&mut [u8]) {
    let mut n = 0u64;
    move |buf: &mut [u8]| {
        for chunk in buf.chunks_mut(32) {
            n += 1;
            let d = digest::digest(&digest::SHA256, &[&[seed][..], &n.to_le_bytes()].concat());
            chunk.copy_from_slice(&d.as_ref()[..chunk.len()]);
        }
    }
}

const CLIENT: [u8; 32] = [0xC1; 32];
const HOST: [u8; 32] = [0x40; 32];
const MITM: [u8; 32] = [0x66; 32];

fn fps(client: [u8; 32], host: [u8; 32]) -> Fingerprints {
    Fingerprints { client, host }
}

fn pin(s: &str) -> Pin {
    Pin::parse(s).unwrap()
}

/// The host's answer to a PairStart with `host_pin`.
fn host_answer(
    start: Message,
    seen: Fingerprints,
    host_pin: &Pin,
    seed: u8,
) -> Result<(HostAwaitConfirm, Message), PairError> {
    match HostPairing::new(seen).handle(start)? {
        HostRequest::Pin(req) => req.answer(host_pin, &mut rng(seed)),
        HostRequest::Approval { .. } => panic!("a PIN start"),
    }
}

#[test]
fn a_ceremony_with_the_right_pin_pairs_both_sides() {
    let f = fps(CLIENT, HOST);
    let (client, start) = ClientPairing::with_pin(&pin("0427"), "laptop", f, &mut rng(1));
    let (host, challenge) = host_answer(start, f, &pin("0427"), 2).unwrap();
    let (client, confirm) = client.handle(challenge).unwrap();
    let paired = host.handle(confirm).unwrap();
    assert_eq!(
        paired,
        PairedClient {
            client_name: "laptop".into(),
            fingerprint: CLIENT
        }
    );
    let done = client
        .handle(Message::PairDone {
            id: "c1c1c1c1c1c1".into(),
        })
        .unwrap();
    assert_eq!(done.fingerprint, HOST);
    assert_eq!(done.id, "c1c1c1c1c1c1");
}

#[test]
fn a_wrong_pin_fails_the_check_on_the_client_and_on_the_host() {
    let f = fps(CLIENT, HOST);
    // The client checks the host's MAC first and stops.
    let (client, start) = ClientPairing::with_pin(&pin("1243"), "laptop", f, &mut rng(1));
    let (host, challenge) = host_answer(start, f, &pin("1234"), 2).unwrap();
    assert_eq!(
        client.handle(challenge).unwrap_err(),
        PairError::PinCheckFailed
    );
    // A client that ignores that and confirms anyway (with the key its wrong PIN gave) is
    // caught by the host.
    let (client, start) = ClientPairing::with_pin(&pin("1243"), "laptop", f, &mut rng(3));
    let (host2, challenge) = host_answer(start, f, &pin("1234"), 4).unwrap();
    let Message::PairChallenge { spake, .. } = challenge else {
        panic!("a challenge")
    };
    let shared = client.state.finish(&spake).unwrap();
    let c = Confirmation::derive(&shared, &f, &client.msg_client, &spake);
    assert_eq!(
        host2
            .handle(Message::PairConfirm {
                confirm: c.client_mac()
            })
            .unwrap_err(),
        PairError::PinCheckFailed
    );
    // And a made-up MAC, of course.
    assert_eq!(
        host.handle(Message::PairConfirm { confirm: [0; 32] })
            .unwrap_err(),
        PairError::PinCheckFailed
    );
}

#[test]
fn a_relay_with_its_own_certificate_fails_even_with_the_right_pin() {
    // The relay terminates TLS on both sides: the client sees the relay's certificate as the
    // host's, the host sees the relay's certificate as the client's. It passes every pairing
    // byte along unchanged.
    let client_view = fps(CLIENT, MITM);
    let host_view = fps(MITM, HOST);
    let (client, start) = ClientPairing::with_pin(&pin("0427"), "laptop", client_view, &mut rng(1));
    let (host, challenge) = host_answer(start, host_view, &pin("0427"), 2).unwrap();
    let err = client.handle(challenge).unwrap_err();
    assert_eq!(err, PairError::PinCheckFailed);
    // The honest side does not claim the PIN was wrong: it says either may be the cause.
    let text = err.to_string();
    assert!(
        text.contains("PIN was wrong, or something between"),
        "{text}"
    );
    // The client sends no confirmation; a relay that forges one fails on the host too.
    assert_eq!(
        host.handle(Message::PairConfirm { confirm: [1; 32] })
            .unwrap_err(),
        PairError::PinCheckFailed
    );
    // The relay running its own ceremony with the host instead (it knows no PIN) gets one
    // guess per ceremony.
    let (relay, start) = ClientPairing::with_pin(&pin("0000"), "relay", host_view, &mut rng(5));
    let (_, challenge) = host_answer(start, host_view, &pin("0427"), 6).unwrap();
    assert_eq!(
        relay.handle(challenge).unwrap_err(),
        PairError::PinCheckFailed
    );
}

#[test]
fn messages_out_of_order_end_the_ceremony() {
    let f = fps(CLIENT, HOST);
    assert_eq!(
        HostPairing::new(f)
            .handle(Message::PairConfirm { confirm: [0; 32] })
            .unwrap_err(),
        PairError::OutOfOrder {
            expected: "PairStart",
            got: "PairConfirm"
        }
    );
    let (client, start) = ClientPairing::with_pin(&pin("0427"), "laptop", f, &mut rng(1));
    let (host, challenge) = host_answer(start.clone(), f, &pin("0427"), 2).unwrap();
    // The host's state wants a confirmation, not a second start.
    assert!(matches!(
        host.handle(start).unwrap_err(),
        PairError::OutOfOrder {
            expected: "PairConfirm",
            ..
        }
    ));
    // The client's state wants the challenge, not a PairDone.
    assert!(matches!(
        client
            .handle(Message::PairDone { id: "x".into() })
            .unwrap_err(),
        PairError::OutOfOrder {
            expected: "PairChallenge",
            ..
        }
    ));
    let (client, _) = ClientPairing::with_pin(&pin("0427"), "laptop", f, &mut rng(1));
    let (client, _) = client.handle(challenge).unwrap();
    assert!(matches!(
        client.handle(Message::Start).unwrap_err(),
        PairError::OutOfOrder { got: "Start", .. }
    ));
}

#[test]
fn a_replayed_ceremony_does_not_pair() {
    let f = fps(CLIENT, HOST);
    let (client, start) = ClientPairing::with_pin(&pin("0427"), "laptop", f, &mut rng(1));
    let (host, challenge) = host_answer(start.clone(), f, &pin("0427"), 2).unwrap();
    let (_, confirm) = client.handle(challenge).unwrap();
    assert!(host.handle(confirm.clone()).is_ok());
    // An eavesdropper replays the client's recorded messages against a fresh ceremony with the
    // same PIN (and the same fingerprints, as if it also held the client's key): the host's
    // SPAKE2 secret is fresh, so the old confirmation is worthless.
    let (replayed, _) = host_answer(start, f, &pin("0427"), 9).unwrap();
    assert_eq!(
        replayed.handle(confirm).unwrap_err(),
        PairError::PinCheckFailed
    );
}

#[test]
fn bad_spake_messages_versions_and_methods_are_refused() {
    let f = fps(CLIENT, HOST);
    let start = |version, method, spake: Vec<u8>| {
        Message::PairStart(PairStart {
            version,
            method,
            client_name: "x".into(),
            spake,
        })
    };
    assert!(matches!(
        host_answer(
            start(PROTOCOL_VERSION, PairMethod::PIN, vec![1; 10]),
            f,
            &pin("0427"),
            1
        )
        .unwrap_err(),
        PairError::Malformed(_)
    ));
    assert_eq!(
        HostPairing::new(f)
            .handle(start(9, PairMethod::PIN, vec![]))
            .unwrap_err(),
        PairError::Version {
            ours: PROTOCOL_VERSION,
            theirs: 9
        }
    );
    assert_eq!(
        HostPairing::new(f)
            .handle(start(PROTOCOL_VERSION, PairMethod(77), vec![]))
            .unwrap_err(),
        PairError::UnknownMethod(PairMethod(77))
    );
    let (client, _) = ClientPairing::with_pin(&pin("0427"), "laptop", f, &mut rng(1));
    assert!(matches!(
        client
            .handle(Message::PairChallenge {
                spake: vec![0; 33],
                confirm: [0; 32]
            })
            .unwrap_err(),
        PairError::Malformed(_) | PairError::PinCheckFailed
    ));
}

#[test]
fn a_bye_from_the_host_is_the_hosts_reason() {
    let f = fps(CLIENT, HOST);
    let (client, _) = ClientPairing::with_pin(&pin("0427"), "laptop", f, &mut rng(1));
    let bye = PairError::from(GateRefused::NotArmed.clone()).bye();
    let err = client.handle(bye).unwrap_err();
    let PairError::Refused { reason, message } = err else {
        panic!("refused")
    };
    assert_eq!(reason, ByeReason::PAIRING_FAILED);
    assert!(message.contains("no pairing PIN is armed"), "{message}");
    // The host's Bye for a failed check carries the check's explanation.
    let Message::Bye { reason, message } = PairError::PinCheckFailed.bye() else {
        panic!("a bye")
    };
    assert_eq!(reason, ByeReason::PAIRING_FAILED);
    assert!(message.starts_with("the PIN check failed"));
}

#[test]
fn approval_waits_for_the_owner_then_pairs_or_is_refused() {
    let (waiting, start) = ClientPairing::with_approval("tv");
    match HostPairing::new(fps(CLIENT, HOST)).handle(start).unwrap() {
        HostRequest::Approval { client_name } => assert_eq!(client_name, "tv"),
        HostRequest::Pin(_) => panic!("approval"),
    }
    let ApprovalStep::Waiting(waiting) = waiting
        .handle(Message::PairPending { id: "c1c1".into() }, HOST)
        .unwrap()
    else {
        panic!("waiting")
    };
    assert_eq!(waiting.id(), Some("c1c1"));
    let ApprovalStep::Paired(p) = waiting
        .handle(Message::PairDone { id: "c1c1".into() }, HOST)
        .unwrap()
    else {
        panic!("paired")
    };
    assert_eq!(p.fingerprint, HOST);
    let (waiting, _) = ClientPairing::with_approval("tv");
    let refused = waiting
        .handle(
            Message::Bye {
                reason: ByeReason::PAIRING_FAILED,
                message: "the owner refused".into(),
            },
            HOST,
        )
        .unwrap_err();
    assert!(matches!(refused, PairError::Refused { .. }));
}

#[test]
fn pins_are_four_digits_and_generated_uniformly_enough() {
    assert!(Pin::parse("0427").is_ok());
    assert!(Pin::parse(" 0427\n").is_ok());
    for bad in ["", "427", "04270", "04a7", "٠٤٢٧"] {
        assert_eq!(Pin::parse(bad), Err(PinFormatError), "{bad:?}");
    }
    let mut r = rng(7);
    let mut first_digit = [0u32; 10];
    for _ in 0..5000 {
        let p = Pin::generate(&mut r);
        assert_eq!(p.digits().len(), 4);
        first_digit[(p.digits().as_bytes()[0] - b'0') as usize] += 1;
    }
    // Each leading digit about 500 times.
    assert!(
        first_digit.iter().all(|&n| (400..600).contains(&n)),
        "{first_digit:?}"
    );
    assert_eq!(format!("{:?}", pin("0427")), "Pin(redacted)");
}

#[test]
fn an_armed_pin_serves_one_ceremony_and_expires() {
    let t0 = Instant::now();
    let mut g = PinGate::new();
    assert_eq!(g.take(t0), Err(GateRefused::NotArmed));
    let armed = g.arm(t0, &mut rng(1)).unwrap();
    assert_eq!(armed.expires, t0 + PIN_VALIDITY);
    assert!(g.is_armed(t0));
    assert_eq!(g.take(t0 + Duration::from_secs(1)), Ok(armed.pin.clone()));
    // One ceremony per PIN: a second one finds nothing armed.
    assert_eq!(
        g.take(t0 + Duration::from_secs(2)),
        Err(GateRefused::NotArmed)
    );
    g.arm(t0, &mut rng(2)).unwrap();
    assert!(!g.is_armed(t0 + PIN_VALIDITY));
    assert_eq!(g.take(t0 + PIN_VALIDITY), Err(GateRefused::Expired));
    // Re-arming replaces the PIN.
    let a = g.arm(t0, &mut rng(3)).unwrap();
    let b = g.arm(t0, &mut rng(4)).unwrap();
    assert_ne!(a.pin, b.pin);
    assert_eq!(g.take(t0), Ok(b.pin));
}

#[test]
fn repeated_failures_lock_pairing_for_a_while() {
    let t0 = Instant::now();
    let mut g = PinGate::new();
    for i in 0..MAX_FAILURES as u64 {
        let t = t0 + Duration::from_secs(i * 10);
        g.arm(t, &mut rng(i as u8)).unwrap();
        g.take(t).unwrap();
        g.failed(t);
    }
    let t_last = t0 + Duration::from_secs((MAX_FAILURES as u64 - 1) * 10);
    let locked = g.arm(t_last + Duration::from_secs(1), &mut rng(9));
    let Err(GateRefused::Locked { remaining }) = locked else {
        panic!("locked: {locked:?}")
    };
    assert_eq!(remaining, LOCKOUT - Duration::from_secs(1));
    assert!(GateRefused::Locked { remaining }
        .to_string()
        .contains("locked for 299s"));
    assert!(matches!(
        g.take(t_last + Duration::from_secs(2)),
        Err(GateRefused::Locked { .. })
    ));
    // After the lockout pairing works again, with a clean count.
    let later = t_last + LOCKOUT;
    g.arm(later, &mut rng(10)).unwrap();
    g.take(later).unwrap();
    g.failed(later);
    assert!(g.arm(later, &mut rng(11)).is_ok());
}

#[test]
fn failures_spread_beyond_the_window_do_not_lock() {
    let t0 = Instant::now();
    let mut g = PinGate::new();
    for i in 0..10u64 {
        let t = t0 + FAILURE_WINDOW / 2 * (i as u32);
        g.arm(t, &mut rng(i as u8)).unwrap();
        g.take(t).unwrap();
        g.failed(t);
    }
    assert!(g.arm(t0 + FAILURE_WINDOW * 5, &mut rng(99)).is_ok());
}
