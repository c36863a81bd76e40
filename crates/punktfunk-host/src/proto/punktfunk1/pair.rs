//! The pairing ceremony on a punktfunk/1 connection: a thin driver around the core's sans-IO
//! [`punktfunk_core::pairing`] machines, with the host's armed PIN and approval queue
//! ([`crate::pairing`]) and the paired-client store ([`crate::clients`]).
//!
//! A pairing connection carries nothing else: it ends after the ceremony, and the client
//! connects again to stream.

use crate::pairing::{Outcome, PendingView, APPROVAL_TIMEOUT};
use crate::session::registry::Protocol;
use crate::session::HostContext;
use anyhow::{bail, Context, Result};
use punktfunk_core::control::{ByeReason, Message};
use punktfunk_core::pairing::{Fingerprints, HostPairing, HostRequest, PairError};
use punktfunk_quic::{ControlStream, Fingerprint};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the host waits for the client's confirmation after its challenge.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// A name fit for logs and `clients list`: at most 64 characters, control characters shown
/// escaped ([`punktfunk_core::text::Escaped`]), or the address when empty.
fn display_name(name: &str, remote: SocketAddr) -> String {
    let clean: String = name.chars().take(64).collect::<String>().trim().to_string();
    if clean.is_empty() {
        remote.ip().to_string()
    } else {
        punktfunk_core::text::escaped(&clean)
    }
}

async fn store(ctx: &HostContext, name: &str, fingerprint: &Fingerprint) -> Result<String> {
    let store = ctx.clients.clone();
    let (name, fp) = (name.to_string(), fingerprint.to_string());
    let entry =
        tokio::task::spawn_blocking(move || store.add(Protocol::Punktfunk1, &name, &fp, None))
            .await??;
    Ok(entry.id)
}

/// Serves a connection whose first message was a `PairStart`.
pub(crate) async fn ceremony(
    cs: &mut ControlStream,
    first: Message,
    client: Fingerprint,
    host: Fingerprint,
    ctx: &HostContext,
    remote: SocketAddr,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let fps = Fingerprints {
        client: client.0,
        host: host.0,
    };
    let request = match HostPairing::new(fps).handle(first) {
        Ok(r) => r,
        Err(e) => {
            let _ = cs.send(&e.bye()).await;
            bail!("pairing with {remote}: {e}");
        }
    };
    match request {
        HostRequest::Pin(req) => {
            let now = Instant::now();
            let name = display_name(req.client_name(), remote);
            let pin = match ctx.pairing.take(now) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(%remote, client = %name, reason = %e, "refused a pairing attempt");
                    let _ = cs.send(&PairError::from(e).bye()).await;
                    return Ok(());
                }
            };
            tracing::info!(%remote, client = %name, client_fingerprint = %client, "pairing with the armed PIN");
            let result = pin_steps(cs, req, &pin).await;
            match result {
                Ok(()) => {}
                Err(Failure::Pair(e)) => {
                    tracing::warn!(%remote, client = %name, error = %e, "pairing failed");
                    ctx.pairing
                        .finished(Instant::now(), Outcome::Failed(e.to_string()));
                    let _ = cs.send(&e.bye()).await;
                    return Ok(());
                }
                Err(Failure::Transport(e)) => {
                    ctx.pairing.finished(
                        Instant::now(),
                        Outcome::Failed(format!("the client went away during pairing: {e}")),
                    );
                    return Err(e);
                }
            }
            let id = match store(ctx, &name, &client).await {
                Ok(id) => id,
                Err(e) => {
                    ctx.pairing.finished(
                        Instant::now(),
                        Outcome::Failed(format!("cannot store the client: {e:#}")),
                    );
                    let _ = cs
                        .send(&Message::Bye {
                            reason: ByeReason::INTERNAL,
                            message: "the host could not store the pairing".into(),
                        })
                        .await;
                    return Err(e.context("storing a paired client"));
                }
            };
            tracing::info!(%remote, client = %name, %id, "paired a punktfunk/1 client");
            ctx.pairing.finished(
                Instant::now(),
                Outcome::Paired {
                    id: id.clone(),
                    name,
                },
            );
            cs.send(&Message::PairDone { id }).await?;
            Ok(())
        }
        HostRequest::Approval { client_name } => {
            let name = display_name(&client_name, remote);
            approval(cs, name, client, ctx, remote, stop).await
        }
    }
}

enum Failure {
    Pair(PairError),
    Transport(anyhow::Error),
}

impl From<PairError> for Failure {
    fn from(e: PairError) -> Failure {
        Failure::Pair(e)
    }
}

async fn pin_steps(
    cs: &mut ControlStream,
    req: punktfunk_core::pairing::PinRequest,
    pin: &punktfunk_core::pairing::Pin,
) -> Result<(), Failure> {
    let (state, challenge) = req.answer(pin, &mut crate::fill_random)?;
    cs.send(&challenge)
        .await
        .map_err(|e| Failure::Transport(e.into()))?;
    let msg = match tokio::time::timeout(CONFIRM_TIMEOUT, cs.recv()).await {
        Err(_) => {
            return Err(Failure::Pair(PairError::Refused {
                reason: ByeReason::TIMEOUT,
                message: "the client did not confirm in time".into(),
            }))
        }
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => {
            return Err(Failure::Transport(anyhow::anyhow!(
                "the client closed the stream"
            )))
        }
        Ok(Err(e)) => return Err(Failure::Transport(e.into())),
    };
    state.handle(msg)?;
    Ok(())
}

async fn approval(
    cs: &mut ControlStream,
    name: String,
    client: Fingerprint,
    ctx: &HostContext,
    remote: SocketAddr,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let fingerprint = client.to_string();
    let id = fingerprint[..12].to_string();
    let view = PendingView {
        id: id.clone(),
        name: name.clone(),
        remote: remote.to_string(),
        fingerprint: fingerprint.clone(),
        waiting_secs: 0,
    };
    let decision = match ctx.pairing.request_approval(view, Instant::now()) {
        Ok(rx) => rx,
        Err(e) => {
            let _ = cs
                .send(&Message::Bye {
                    reason: ByeReason::PAIRING_FAILED,
                    message: e.to_string(),
                })
                .await;
            return Ok(());
        }
    };
    tracing::warn!(%remote, client = %name, %id, client_fingerprint = %fingerprint,
        "a client asks to pair without a PIN: `punktfunk-host clients approve {id}` (or refuse)");
    cs.send(&Message::PairPending { id: id.clone() }).await?;
    let outcome = tokio::select! {
        d = tokio::time::timeout(APPROVAL_TIMEOUT, decision) => match d {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err((ByeReason::PAIRING_FAILED, "the host's owner refused this client".to_string())),
            Ok(Err(_)) => Err((ByeReason::PAIRING_FAILED, "the request was dropped".to_string())),
            Err(_) => Err((ByeReason::TIMEOUT, format!("nobody approved the request within {} s", APPROVAL_TIMEOUT.as_secs()))),
        },
        _ = cs.recv() => {
            ctx.pairing.withdraw(&fingerprint);
            tracing::info!(%remote, client = %name, "the client withdrew its pairing request");
            return Ok(());
        }
        _ = stop.changed() => Err((ByeReason::SHUTDOWN, "the host is shutting down".to_string())),
    };
    ctx.pairing.withdraw(&fingerprint);
    match outcome {
        Ok(()) => {
            let id = store(ctx, &name, &client)
                .await
                .context("storing an approved client")?;
            tracing::info!(%remote, client = %name, %id, "paired a punktfunk/1 client by approval");
            cs.send(&Message::PairDone { id }).await?;
        }
        Err((reason, message)) => {
            tracing::info!(%remote, client = %name, %message, "pairing request ended");
            cs.send(&Message::Bye { reason, message }).await?;
        }
    }
    Ok(())
}
