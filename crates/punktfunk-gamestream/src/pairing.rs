//! The GameStream pairing ceremony.
//!
//! The client proves it knows the PIN shown on its screen and typed on the host, both sides
//! prove they hold the private keys of their certificates, and at the end the host stores the
//! client's certificate as authorised. Four messages over plain HTTP, then one over HTTPS that
//! only a now-trusted certificate can make:
//!
//! 1. `phrase=getservercert&salt&clientcert` — the host waits for the PIN, derives
//!    `K = SHA-256(salt ‖ PIN)[..16]` and answers with its certificate (`plaincert`).
//! 2. `clientchallenge = AES_K(cc)` — the host answers
//!    `AES_K(SHA-256(cc ‖ sig(host cert) ‖ serverSecret) ‖ serverChallenge)`.
//! 3. `serverchallengeresp = AES_K(hc)` with
//!    `hc = SHA-256(serverChallenge ‖ sig(client cert) ‖ clientSecret)` — the host keeps `hc`
//!    and answers `serverSecret ‖ RSA-sign(serverSecret)`.
//! 4. `clientpairingsecret = clientSecret ‖ RSA-sign(clientSecret)` — the host recomputes `hc`
//!    (a wrong PIN gives a different one) and checks the signature with the client
//!    certificate's key; both right ⇒ paired.
//!
//! The host side is a typed state machine: one state per expected message, each consuming
//! itself, so a message out of order cannot be applied to the wrong state. [`ClientPairing`]
//! is the client side, written from the same description, for tests and tools.

use crate::crypto::{self, CertInfo, CryptoError, Signer};
use crate::http::Request;
use crate::xml::Reply;
use crate::{hex_decode, hex_encode};
use ring::rand::SecureRandom;
use thiserror::Error;

/// Why a pairing step failed. Every failure ends the pairing (the client must start again).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PairError {
    /// A parameter is missing or malformed.
    #[error("{0}")]
    BadRequest(String),
    /// A message that is not the one this state expects.
    #[error("pairing message out of order: expected {expected}, got {got}")]
    OutOfOrder {
        /// The message this state waits for.
        expected: &'static str,
        /// What arrived.
        got: &'static str,
    },
    /// A cryptographic failure (bad certificate, bad block length).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl PairError {
    /// The XML the client gets (status 400, `paired=0`).
    pub fn reply(&self) -> Reply {
        Reply::error(400, &self.to_string()).field("paired", 0)
    }
}

/// Which pairing message a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// Phase 1: `phrase=getservercert`.
    GetServerCert,
    /// Phase 2: `clientchallenge=…`.
    ClientChallenge,
    /// Phase 3: `serverchallengeresp=…`.
    ServerChallengeResp,
    /// Phase 4: `clientpairingsecret=…`.
    ClientPairingSecret,
    /// Phase 5 (HTTPS): `phrase=pairchallenge`.
    PairChallenge,
}

impl Message {
    /// Classifies a `/pair` request; `None` for an unknown phase.
    pub fn of(req: &Request) -> Option<Message> {
        match req.param("phrase") {
            Some("getservercert") => return Some(Message::GetServerCert),
            Some("pairchallenge") => return Some(Message::PairChallenge),
            _ => {}
        }
        if req.param("clientchallenge").is_some() {
            Some(Message::ClientChallenge)
        } else if req.param("serverchallengeresp").is_some() {
            Some(Message::ServerChallengeResp)
        } else if req.param("clientpairingsecret").is_some() {
            Some(Message::ClientPairingSecret)
        } else {
            None
        }
    }

    /// A name for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Message::GetServerCert => "getservercert",
            Message::ClientChallenge => "clientchallenge",
            Message::ServerChallengeResp => "serverchallengeresp",
            Message::ClientPairingSecret => "clientpairingsecret",
            Message::PairChallenge => "pairchallenge",
        }
    }
}

/// The host's side of the key material.
pub struct HostCredentials {
    /// The host certificate as PEM (sent as `plaincert`).
    pub cert_pem: String,
    /// The certificate's signature bytes (hashed into phase 2).
    pub cert_signature: Vec<u8>,
    /// The host key.
    pub signer: Signer,
}

impl HostCredentials {
    /// From the host's DER certificate and PKCS#8 RSA key.
    pub fn new(cert_der: &[u8], key_pkcs8: &[u8]) -> Result<HostCredentials, CryptoError> {
        let info = CertInfo::parse(cert_der)?;
        if !info.is_rsa {
            return Err(CryptoError::Key(
                "GameStream needs an RSA host key; this identity has another kind".into(),
            ));
        }
        let signer = Signer::from_pkcs8(key_pkcs8)?;
        if signer.bits() != 2048 {
            return Err(CryptoError::Key(format!(
                "GameStream clients need an RSA-2048 host key, this one has {} bits",
                signer.bits()
            )));
        }
        Ok(HostCredentials {
            cert_pem: crypto::cert_to_pem(cert_der),
            cert_signature: info.signature,
            signer,
        })
    }
}

/// Largest client certificate accepted (PEM bytes).
pub const MAX_CLIENT_CERT: usize = 8 * 1024;

fn hex_param(req: &Request, name: &str, len: Option<usize>) -> Result<Vec<u8>, PairError> {
    let v = req
        .param(name)
        .ok_or_else(|| PairError::BadRequest(format!("missing {name}")))?;
    let b = hex_decode(v).ok_or_else(|| PairError::BadRequest(format!("{name} is not hex")))?;
    match len {
        Some(n) if b.len() != n => Err(PairError::BadRequest(format!(
            "{name} has {} bytes, expected {n}",
            b.len()
        ))),
        _ => Ok(b),
    }
}

fn random<const N: usize>(rng: &dyn SecureRandom) -> [u8; N] {
    let mut b = [0u8; N];
    rng.fill(&mut b).expect("system randomness");
    b
}

/// Phase 1 received; the host waits for the user to type the PIN.
#[derive(Debug)]
pub struct AwaitingPin {
    salt: [u8; 16],
    client_cert: Vec<u8>,
    client: CertInfo,
}

/// Phase 1 answered; waiting for `clientchallenge`.
#[derive(Debug)]
pub struct AwaitingClientChallenge {
    key: [u8; 16],
    client_cert: Vec<u8>,
    client: CertInfo,
}

/// Phase 2 answered; waiting for `serverchallengeresp`.
#[derive(Debug)]
pub struct AwaitingServerChallengeResp {
    key: [u8; 16],
    client_cert: Vec<u8>,
    client: CertInfo,
    server_secret: [u8; 16],
    server_challenge: [u8; 16],
}

/// Phase 3 answered; waiting for `clientpairingsecret`.
#[derive(Debug)]
pub struct AwaitingClientPairingSecret {
    client_cert: Vec<u8>,
    client: CertInfo,
    server_challenge: [u8; 16],
    client_hash: [u8; 32],
}

impl AwaitingPin {
    /// Starts a pairing from a `getservercert` request.
    pub fn begin(req: &Request) -> Result<AwaitingPin, PairError> {
        if Message::of(req) != Some(Message::GetServerCert) {
            return Err(PairError::BadRequest("not a getservercert request".into()));
        }
        let salt: [u8; 16] = hex_param(req, "salt", Some(16))?
            .try_into()
            .expect("length checked");
        let pem = req
            .param("clientcert")
            .ok_or_else(|| PairError::BadRequest("missing clientcert".into()))?;
        if pem.len() > 2 * MAX_CLIENT_CERT {
            return Err(PairError::BadRequest("clientcert too large".into()));
        }
        let pem =
            hex_decode(pem).ok_or_else(|| PairError::BadRequest("clientcert is not hex".into()))?;
        let client_cert = crypto::cert_from_pem(&pem)?;
        let client = CertInfo::parse(&client_cert)?;
        if !client.is_rsa {
            return Err(PairError::BadRequest(
                "client certificate key is not RSA".into(),
            ));
        }
        Ok(AwaitingPin {
            salt,
            client_cert,
            client,
        })
    }

    /// The PIN was entered: answer phase 1 with the host certificate.
    pub fn enter_pin(self, pin: &str, host: &HostCredentials) -> (AwaitingClientChallenge, Reply) {
        let key = crypto::pin_key(&self.salt, pin);
        let reply = Reply::ok()
            .field("paired", 1)
            .field("plaincert", hex_encode(host.cert_pem.as_bytes()));
        (
            AwaitingClientChallenge {
                key,
                client_cert: self.client_cert,
                client: self.client,
            },
            reply,
        )
    }

    /// The client certificate (DER) of this pairing.
    pub fn client_cert(&self) -> &[u8] {
        &self.client_cert
    }
}

impl AwaitingClientChallenge {
    /// Phase 2.
    pub fn client_challenge(
        self,
        req: &Request,
        host: &HostCredentials,
        rng: &dyn SecureRandom,
    ) -> Result<(AwaitingServerChallengeResp, Reply), PairError> {
        let mut cc = hex_param(req, "clientchallenge", Some(16))?;
        crypto::ecb_decrypt(&self.key, &mut cc)?;
        let server_secret = random::<16>(rng);
        let server_challenge = random::<16>(rng);
        let h = crypto::sha256(&[&cc, &host.cert_signature, &server_secret]);
        let mut blob = h.to_vec();
        blob.extend_from_slice(&server_challenge);
        crypto::ecb_encrypt(&self.key, &mut blob)?;
        Ok((
            AwaitingServerChallengeResp {
                key: self.key,
                client_cert: self.client_cert,
                client: self.client,
                server_secret,
                server_challenge,
            },
            Reply::ok()
                .field("paired", 1)
                .field("challengeresponse", hex_encode(&blob)),
        ))
    }
}

impl AwaitingServerChallengeResp {
    /// Phase 3.
    pub fn server_challenge_resp(
        self,
        req: &Request,
        host: &HostCredentials,
    ) -> Result<(AwaitingClientPairingSecret, Reply), PairError> {
        let mut hc = hex_param(req, "serverchallengeresp", Some(32))?;
        crypto::ecb_decrypt(&self.key, &mut hc)?;
        let mut secret = self.server_secret.to_vec();
        secret.extend_from_slice(&host.signer.sign(&self.server_secret));
        Ok((
            AwaitingClientPairingSecret {
                client_cert: self.client_cert,
                client: self.client,
                server_challenge: self.server_challenge,
                client_hash: hc.try_into().expect("length checked"),
            },
            Reply::ok()
                .field("paired", 1)
                .field("pairingsecret", hex_encode(&secret)),
        ))
    }
}

/// How a completed ceremony ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Both proofs hold: store this client certificate (DER) as authorised.
    Paired {
        /// The client's certificate.
        client_cert: Vec<u8>,
    },
    /// The client's hash does not match: it derived another key, i.e. the PIN was wrong.
    WrongPin,
    /// The client's secret is not signed by its certificate's key.
    BadSignature,
}

impl AwaitingClientPairingSecret {
    /// Phase 4: the verdict.
    pub fn client_pairing_secret(self, req: &Request) -> Result<(Outcome, Reply), PairError> {
        let data = hex_param(req, "clientpairingsecret", None)?;
        if data.len() < 16 + 64 || data.len() > 16 + 1024 {
            return Err(PairError::BadRequest(format!(
                "clientpairingsecret has {} bytes",
                data.len()
            )));
        }
        let (client_secret, sig) = data.split_at(16);
        let expect = crypto::sha256(&[
            &self.server_challenge,
            &self.client.signature,
            client_secret,
        ]);
        let outcome = if !ct_eq(&expect, &self.client_hash) {
            Outcome::WrongPin
        } else if !self.client.verify(client_secret, sig) {
            Outcome::BadSignature
        } else {
            Outcome::Paired {
                client_cert: self.client_cert,
            }
        };
        let paired = matches!(outcome, Outcome::Paired { .. });
        Ok((outcome, Reply::ok().field("paired", u8::from(paired))))
    }
}

/// Constant-time equality of two hashes.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A pairing in progress, in whichever state it is.
#[derive(Debug)]
pub enum Pairing {
    /// Waiting for the PIN on the host.
    AwaitingPin(AwaitingPin),
    /// Waiting for phase 2.
    AwaitingClientChallenge(AwaitingClientChallenge),
    /// Waiting for phase 3.
    AwaitingServerChallengeResp(AwaitingServerChallengeResp),
    /// Waiting for phase 4.
    AwaitingClientPairingSecret(AwaitingClientPairingSecret),
}

/// The result of feeding a phase 2–4 message to a [`Pairing`].
#[derive(Debug)]
pub enum Step {
    /// Answer with the reply and keep the new state.
    Continue(Pairing, Reply),
    /// The ceremony ended (successfully or not); answer with the reply.
    Done(Outcome, Reply),
    /// The ceremony failed and is discarded; answer with the reply.
    Failed(PairError, Reply),
}

impl Pairing {
    /// The message this state expects next.
    pub fn expects(&self) -> &'static str {
        match self {
            Pairing::AwaitingPin(_) => "the PIN on the host",
            Pairing::AwaitingClientChallenge(_) => Message::ClientChallenge.name(),
            Pairing::AwaitingServerChallengeResp(_) => Message::ServerChallengeResp.name(),
            Pairing::AwaitingClientPairingSecret(_) => Message::ClientPairingSecret.name(),
        }
    }

    /// Applies a phase 2, 3 or 4 request.
    pub fn step(self, req: &Request, host: &HostCredentials, rng: &dyn SecureRandom) -> Step {
        let got = Message::of(req).map_or("an unknown message", Message::name);
        let fail = |e: PairError| {
            let r = e.reply();
            Step::Failed(e, r)
        };
        let expected = self.expects();
        match (self, Message::of(req)) {
            (Pairing::AwaitingClientChallenge(s), Some(Message::ClientChallenge)) => {
                match s.client_challenge(req, host, rng) {
                    Ok((n, r)) => Step::Continue(Pairing::AwaitingServerChallengeResp(n), r),
                    Err(e) => fail(e),
                }
            }
            (Pairing::AwaitingServerChallengeResp(s), Some(Message::ServerChallengeResp)) => {
                match s.server_challenge_resp(req, host) {
                    Ok((n, r)) => Step::Continue(Pairing::AwaitingClientPairingSecret(n), r),
                    Err(e) => fail(e),
                }
            }
            (Pairing::AwaitingClientPairingSecret(s), Some(Message::ClientPairingSecret)) => {
                match s.client_pairing_secret(req) {
                    Ok((o, r)) => Step::Done(o, r),
                    Err(e) => fail(e),
                }
            }
            _ => fail(PairError::OutOfOrder { expected, got }),
        }
    }
}

/// The client side of the ceremony, written from the protocol description.
pub struct ClientPairing {
    cert_pem: String,
    cert_signature: Vec<u8>,
    signer: Signer,
    pin: String,
    salt: [u8; 16],
    key: [u8; 16],
    client_challenge: [u8; 16],
    client_secret: [u8; 16],
    host_cert: Option<CertInfo>,
    host_reply_hash: Vec<u8>,
}

/// Why the client side gave up.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClientPairError {
    /// A reply lacks a field or is malformed.
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
    /// The host's reply was not made with the PIN we showed.
    #[error("wrong PIN")]
    WrongPin,
    /// The host's signature does not verify with its certificate.
    #[error("host signature does not verify (man in the middle?)")]
    BadHostSignature,
    /// Crypto trouble.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl ClientPairing {
    /// A client with this certificate and key, pairing with `pin`.
    pub fn new(
        cert_der: &[u8],
        key_pkcs8: &[u8],
        pin: &str,
        rng: &dyn SecureRandom,
    ) -> Result<ClientPairing, CryptoError> {
        let salt = random::<16>(rng);
        Ok(ClientPairing {
            cert_pem: crypto::cert_to_pem(cert_der),
            cert_signature: CertInfo::parse(cert_der)?.signature,
            signer: Signer::from_pkcs8(key_pkcs8)?,
            pin: pin.to_string(),
            salt,
            key: crypto::pin_key(&salt, pin),
            client_challenge: random::<16>(rng),
            client_secret: random::<16>(rng),
            host_cert: None,
            host_reply_hash: Vec::new(),
        })
    }

    /// Query of phase 1 (without the common `uniqueid`/`uuid` parameters).
    pub fn phase1_query(&self) -> String {
        format!(
            "devicename=roth&updateState=1&phrase=getservercert&salt={}&clientcert={}",
            hex_encode(&self.salt),
            hex_encode(self.cert_pem.as_bytes())
        )
    }

    /// Reads the phase 1 reply; returns the phase 2 query.
    pub fn phase2_query(&mut self, reply_xml: &str) -> Result<String, ClientPairError> {
        let pem = crate::xml::text_of(reply_xml, "plaincert")
            .and_then(hex_decode)
            .ok_or(ClientPairError::Malformed("plaincert"))?;
        let der = crypto::cert_from_pem(&pem)?;
        self.host_cert = Some(CertInfo::parse(&der)?);
        let mut cc = self.client_challenge;
        crypto::ecb_encrypt(&self.key, &mut cc)?;
        Ok(format!(
            "devicename=roth&updateState=1&clientchallenge={}",
            hex_encode(&cc)
        ))
    }

    /// Reads the phase 2 reply; returns the phase 3 query.
    pub fn phase3_query(&mut self, reply_xml: &str) -> Result<String, ClientPairError> {
        let mut blob = crate::xml::text_of(reply_xml, "challengeresponse")
            .and_then(hex_decode)
            .filter(|b| b.len() == 48)
            .ok_or(ClientPairError::Malformed("challengeresponse"))?;
        crypto::ecb_decrypt(&self.key, &mut blob)?;
        self.host_reply_hash = blob[..32].to_vec();
        let server_challenge = &blob[32..48];
        let mut hc = crypto::sha256(&[server_challenge, &self.cert_signature, &self.client_secret]);
        crypto::ecb_encrypt(&self.key, &mut hc)?;
        Ok(format!(
            "devicename=roth&updateState=1&serverchallengeresp={}",
            hex_encode(&hc)
        ))
    }

    /// Reads the phase 3 reply, checks the host's signature and the PIN; returns the phase 4
    /// query.
    pub fn phase4_query(&mut self, reply_xml: &str) -> Result<String, ClientPairError> {
        let secret = crate::xml::text_of(reply_xml, "pairingsecret")
            .and_then(hex_decode)
            .filter(|b| b.len() > 16)
            .ok_or(ClientPairError::Malformed("pairingsecret"))?;
        let (server_secret, sig) = secret.split_at(16);
        let host = self
            .host_cert
            .as_ref()
            .ok_or(ClientPairError::Malformed("no plaincert yet"))?;
        if !host.verify(server_secret, sig) {
            return Err(ClientPairError::BadHostSignature);
        }
        let expect = crypto::sha256(&[&self.client_challenge, &host.signature, server_secret]);
        if !ct_eq(&expect, &self.host_reply_hash) {
            return Err(ClientPairError::WrongPin);
        }
        Ok(self.phase4_query_without_pin_check())
    }

    /// Like [`ClientPairing::phase4_query`] but without the client's own PIN check: what a
    /// hostile or careless client would send. For testing that the host refuses it.
    pub fn phase4_query_without_pin_check(&mut self) -> String {
        let mut out = self.client_secret.to_vec();
        out.extend_from_slice(&self.signer.sign(&self.client_secret));
        format!(
            "devicename=roth&updateState=1&clientpairingsecret={}",
            hex_encode(&out)
        )
    }

    /// The PIN this client shows.
    pub fn pin(&self) -> &str {
        &self.pin
    }
}
