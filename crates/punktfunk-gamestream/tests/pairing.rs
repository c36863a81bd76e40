//! The whole pairing ceremony between the host state machine and the client side, both written
//! from the protocol description: success, a wrong PIN, messages out of order, a client that
//! does not hold its certificate's key, and garbage in every field.

use punktfunk_gamestream::http::Request;
use punktfunk_gamestream::pairing::*;
use punktfunk_gamestream::xml::{status_of, text_of};
use punktfunk_quic::Identity;
use ring::rand::SystemRandom;
use std::sync::OnceLock;

/// RSA key generation is slow: one host and two client identities for the whole file.
fn ids() -> &'static (Identity, Identity, Identity) {
    static IDS: OnceLock<(Identity, Identity, Identity)> = OnceLock::new();
    IDS.get_or_init(|| {
        (
            Identity::generate("punktfunk-host").unwrap(),
            Identity::generate("NVIDIA GameStream Client").unwrap(),
            Identity::generate("NVIDIA GameStream Client").unwrap(),
        )
    })
}

fn host() -> HostCredentials {
    let (h, _, _) = ids();
    HostCredentials::new(&h.cert_der, &h.key_der).unwrap()
}

fn req(q: &str) -> Request {
    Request::from_target(&format!("/pair?uniqueid=0123456789ABCDEF&uuid=1&{q}")).unwrap()
}

/// Runs phases 1–4 with `host_pin` typed on the host and `client` pairing with `client_pin`.
fn run(client: &mut ClientPairing, host_pin: &str) -> Result<Outcome, String> {
    let rng = SystemRandom::new();
    let h = host();
    let waiting = AwaitingPin::begin(&req(&client.phase1_query())).map_err(|e| e.to_string())?;
    let (s, reply) = waiting.enter_pin(host_pin, &h);
    let xml = reply.render();
    assert_eq!(text_of(&xml, "paired"), Some("1"));
    let mut p = Pairing::AwaitingClientChallenge(s);
    let q2 = client.phase2_query(&xml).map_err(|e| e.to_string())?;
    let xml = match p.step(&req(&q2), &h, &rng) {
        Step::Continue(n, r) => {
            p = n;
            r.render()
        }
        other => return Err(format!("phase 2: {other:?}")),
    };
    let q3 = client.phase3_query(&xml).map_err(|e| e.to_string())?;
    let xml = match p.step(&req(&q3), &h, &rng) {
        Step::Continue(n, r) => {
            p = n;
            r.render()
        }
        other => return Err(format!("phase 3: {other:?}")),
    };
    // A client detects a wrong PIN here, before sending phase 4; to see the host's verdict
    // too, a wrong-PIN client is driven on regardless by the caller via `force_phase4`.
    let q4 = client.phase4_query(&xml).map_err(|e| e.to_string())?;
    match p.step(&req(&q4), &h, &rng) {
        Step::Done(o, r) => {
            let xml = r.render();
            assert_eq!(status_of(&xml), Some(200));
            let paired = matches!(o, Outcome::Paired { .. });
            assert_eq!(
                text_of(&xml, "paired"),
                Some(if paired { "1" } else { "0" })
            );
            Ok(o)
        }
        other => Err(format!("phase 4: {other:?}")),
    }
}

#[test]
fn a_complete_pairing_authorises_the_client_certificate() {
    let (_, c, _) = ids();
    let mut client =
        ClientPairing::new(&c.cert_der, &c.key_der, "4721", &SystemRandom::new()).unwrap();
    match run(&mut client, "4721").unwrap() {
        Outcome::Paired { client_cert } => assert_eq!(client_cert, c.cert_der),
        o => panic!("{o:?}"),
    }
}

#[test]
fn a_wrong_pin_is_detected_by_the_client() {
    let (_, c, _) = ids();
    let mut client =
        ClientPairing::new(&c.cert_der, &c.key_der, "1111", &SystemRandom::new()).unwrap();
    let e = run(&mut client, "2222").unwrap_err();
    assert!(e.contains("wrong PIN"), "{e}");
}

#[test]
fn a_wrong_pin_is_refused_by_the_host() {
    // A client that skips its own PIN check (as a hostile one would) still gets paired=0:
    // the host recomputes the client's hash and it does not match.
    let (h, c, _) = ids();
    let rng = SystemRandom::new();
    let creds = HostCredentials::new(&h.cert_der, &h.key_der).unwrap();
    let mut honest = ClientPairing::new(&c.cert_der, &c.key_der, "1111", &rng).unwrap();
    let (s, _) = AwaitingPin::begin(&req(&honest.phase1_query()))
        .unwrap()
        .enter_pin("9999", &creds);
    // The client used K from PIN 1111, the host K from 9999: the host decrypts garbage.
    let plain = punktfunk_gamestream::xml::Reply::ok()
        .field(
            "plaincert",
            punktfunk_gamestream::hex_encode(creds.cert_pem.as_bytes()),
        )
        .render();
    let q2 = honest.phase2_query(&plain).unwrap();
    let Step::Continue(p, r) = Pairing::AwaitingClientChallenge(s).step(&req(&q2), &creds, &rng)
    else {
        panic!()
    };
    let q3 = honest.phase3_query(&r.render()).unwrap();
    let Step::Continue(p, _) = p.step(&req(&q3), &creds, &rng) else {
        panic!()
    };
    // Forge phase 4 with a real signature but the hash made under the wrong key.
    let secret = [7u8; 16];
    let sig = punktfunk_gamestream::crypto::Signer::from_pkcs8(&c.key_der)
        .unwrap()
        .sign(&secret);
    let mut body = secret.to_vec();
    body.extend_from_slice(&sig);
    let q4 = format!(
        "clientpairingsecret={}",
        punktfunk_gamestream::hex_encode(&body)
    );
    match p.step(&req(&q4), &creds, &rng) {
        Step::Done(Outcome::WrongPin, r) => assert_eq!(text_of(&r.render(), "paired"), Some("0")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_client_without_its_certificates_key_is_refused() {
    // Certificate of client 1, key of client 2.
    let (_, c1, c2) = ids();
    let mut client =
        ClientPairing::new(&c1.cert_der, &c2.key_der, "5555", &SystemRandom::new()).unwrap();
    assert_eq!(run(&mut client, "5555").unwrap(), Outcome::BadSignature);
}

#[test]
fn messages_out_of_order_end_the_pairing() {
    let (_, c, _) = ids();
    let rng = SystemRandom::new();
    let h = host();
    let mut client = ClientPairing::new(&c.cert_der, &c.key_der, "1234", &rng).unwrap();
    let (s, reply) = AwaitingPin::begin(&req(&client.phase1_query()))
        .unwrap()
        .enter_pin("1234", &h);
    let q2 = client.phase2_query(&reply.render()).unwrap();
    let _ = q2;
    // Phase 3 where phase 2 is expected.
    let fake3 = format!("serverchallengeresp={}", "00".repeat(32));
    match Pairing::AwaitingClientChallenge(s).step(&req(&fake3), &h, &rng) {
        Step::Failed(PairError::OutOfOrder { expected, got }, r) => {
            assert_eq!((expected, got), ("clientchallenge", "serverchallengeresp"));
            let xml = r.render();
            assert_eq!(status_of(&xml), Some(400));
            assert_eq!(text_of(&xml, "paired"), Some("0"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_requests_are_errors_not_panics() {
    let (_, c, _) = ids();
    let client = ClientPairing::new(&c.cert_der, &c.key_der, "1234", &SystemRandom::new()).unwrap();
    let good = client.phase1_query();
    for q in [
        "phrase=getservercert".to_string(),
        "phrase=getservercert&salt=00&clientcert=00".to_string(),
        good.replace("&salt=", "&salt=zz"),
        good[..good.len() - 200].to_string(),
        "phrase=getservercert&salt=00112233445566778899AABBCCDDEEFF&clientcert=41414141".into(),
    ] {
        assert!(AwaitingPin::begin(&req(&q)).is_err(), "{q}");
    }
    let rng = SystemRandom::new();
    let h = host();
    for q in [
        "clientchallenge=",
        "clientchallenge=00",
        "clientchallenge=xyz",
        "clientchallenge=00112233445566778899AABBCCDDEEFF00",
    ] {
        let (s, _) = AwaitingPin::begin(&req(&good))
            .unwrap()
            .enter_pin("1234", &h);
        assert!(
            matches!(
                Pairing::AwaitingClientChallenge(s).step(&req(q), &h, &rng),
                Step::Failed(..)
            ),
            "{q}"
        );
    }
}
