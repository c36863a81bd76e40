//! Pairing with a host: the client's half of the punktfunk/1 ceremony
//! ([`punktfunk_core::pairing`]) over one QUIC connection, then the host's fingerprint stored
//! as trusted.
//!
//! The connection accepts whatever certificate the host presents (its handshake signature is
//! still verified): the ceremony binds that certificate's fingerprint, so only a host that knew
//! the PIN *and* holds that certificate passes, and only then is it stored.

use anyhow::{bail, Context, Result};
use punktfunk_core::control::Message;
use punktfunk_core::pairing::{ApprovalStep, ClientPairing, Fingerprints, PairError, Pin};
use punktfunk_quic::{connect, ControlStream, Fingerprint, Identity, KnownHosts, Trust};
use std::net::SocketAddr;
use std::time::Duration;

/// How to prove this client to the host.
#[derive(Debug, Clone)]
pub enum PairWith {
    /// The PIN the host's owner armed (`punktfunk-host pair`).
    Pin(Pin),
    /// No PIN: wait until the owner approves this client on the host.
    Approval,
}

/// A pairing run, resolved from flags.
#[derive(Debug, Clone)]
pub struct PairConfig {
    /// Host QUIC address.
    pub host: SocketAddr,
    /// The key the host's fingerprint is stored under (what the user typed, e.g. `box:47800`).
    pub host_key: String,
    /// Where it is stored.
    pub known_hosts: KnownHosts,
    /// This client's identity.
    pub identity: Identity,
    /// The name the host stores for this client.
    pub name: String,
    /// PIN or approval.
    pub with: PairWith,
}

/// A completed pairing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paired {
    /// The host's fingerprint, now trusted for `host_key`.
    pub host_fingerprint: Fingerprint,
    /// The id the host stored this client under.
    pub id: String,
}

fn fill_random(buf: &mut [u8]) {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .expect("the system random source works");
}

/// How long an approval may take on the client's side (the host gives up after 2 minutes).
const APPROVAL_WAIT: Duration = Duration::from_secs(150);
/// How long each step of the PIN ceremony may take.
const STEP_WAIT: Duration = Duration::from_secs(15);

async fn recv(cs: &mut ControlStream, wait: Duration) -> Result<Message> {
    match tokio::time::timeout(wait, cs.recv()).await {
        Err(_) => bail!("the host did not answer in time"),
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => bail!("the host closed the connection during pairing"),
        Ok(Err(e)) => Err(e.into()),
    }
}

/// Pairs with the host; `waiting` is told the request's id while an approval waits.
pub async fn pair(cfg: PairConfig, mut waiting: impl FnMut(&str)) -> Result<Paired> {
    let connected = connect(cfg.host, &Trust::Pairing, &cfg.identity)
        .await
        .with_context(|| format!("connecting to {}", cfg.host))?;
    let conn = connected.connection.clone();
    let fps = Fingerprints {
        client: cfg.identity.fingerprint().0,
        host: connected.fingerprint.0,
    };
    let mut cs = ControlStream::open(&conn).await?;
    let result: Result<Paired> = async {
        match &cfg.with {
            PairWith::Pin(pin) => {
                let (state, start) = ClientPairing::with_pin(pin, &cfg.name, fps, &mut fill_random);
                cs.send(&start).await?;
                let challenge = recv(&mut cs, STEP_WAIT).await?;
                let (state, confirm) = match state.handle(challenge) {
                    Ok(s) => s,
                    Err(e) => {
                        // Tell the host why (a failed check, a protocol error); a host's own
                        // refusal needs no answer.
                        if !matches!(e, PairError::Refused { .. }) {
                            let _ = cs.send(&e.bye()).await;
                        }
                        return Err(e.into());
                    }
                };
                cs.send(&confirm).await?;
                let done = state.handle(recv(&mut cs, STEP_WAIT).await?)?;
                Ok(Paired {
                    host_fingerprint: Fingerprint(done.fingerprint),
                    id: done.id,
                })
            }
            PairWith::Approval => {
                let (mut state, start) = ClientPairing::with_approval(&cfg.name);
                cs.send(&start).await?;
                loop {
                    match state.handle(recv(&mut cs, APPROVAL_WAIT).await?, fps.host)? {
                        ApprovalStep::Waiting(s) => {
                            if let Some(id) = s.id() {
                                waiting(id);
                            }
                            state = s;
                        }
                        ApprovalStep::Paired(p) => {
                            break Ok(Paired {
                                host_fingerprint: Fingerprint(p.fingerprint),
                                id: p.id,
                            })
                        }
                    }
                }
            }
        }
    }
    .await;
    // A last message (the confirmation's Bye after a failed check) reaches the host before the
    // connection closes.
    cs.finish_delivered(Duration::from_secs(2)).await;
    conn.close(0u32.into(), b"paired");
    let paired = result.context("pairing failed")?;
    cfg.known_hosts
        .remember(&cfg.host_key, paired.host_fingerprint)
        .with_context(|| format!("storing the host in {}", cfg.known_hosts.path().display()))?;
    Ok(paired)
}
