//! The host's local control channel: a Unix socket in the config directory (`control.sock`,
//! mode 0600 inside the 0700 directory), so only the user running the host can use it.
//! One line in, one line out, except `pair`, which answers twice:
//!
//! - `pin 1234` (GameStream) → `ok` | `error: why`
//! - `pair` → `pin 0427 120` (the PIN and its seconds of validity), then, when its one
//!   ceremony ends, `paired ID NAME` | `error: why`
//! - `pending` → `pending [JSON list of approval requests]`
//! - `approve ID` / `refuse ID` → `ok ID NAME` | `error: why`
//!
//! `punktfunk-host pin`, `pair` and `clients` are its clients; the management API will share
//! it.

use crate::net::Acceptor;
use crate::pairing::{Outcome, Pairing};
use anyhow::{bail, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};

/// The socket path in a config directory.
pub fn socket_path(config_dir: &Path) -> PathBuf {
    config_dir.join("control.sock")
}

/// GameStream's PIN entry: the PIN typed, or why it was not taken.
pub type PinEntry = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the channel serves.
pub struct Commands {
    /// GameStream's PIN entry, when GameStream runs.
    pub gamestream_pin: Option<PinEntry>,
    /// punktfunk/1 pairing.
    pub pairing: Arc<Pairing>,
}

const USAGE: &str = "error: unknown command (try: pin NNNN, pair, pending, approve ID, refuse ID)";

/// Binds the socket (replacing a stale one) and serves it on the current runtime.
pub fn start(config_dir: &Path, commands: Commands) -> Result<PathBuf> {
    let path = socket_path(config_dir);
    std::fs::create_dir_all(config_dir)?;
    let _ = std::fs::set_permissions(config_dir, std::fs::Permissions::from_mode(0o700));
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            bail!(
                "another host is running with this config directory ({} answers)",
                path.display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let mut listener = Acceptor::new(listener, "control socket");
    let commands = Arc::new(commands);
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await;
            let c = commands.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r.take(4096)).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if serve_line(&c, &line, &mut w).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(path)
}

async fn answer(w: &mut OwnedWriteHalf, line: &str) -> std::io::Result<()> {
    w.write_all(format!("{line}\n").as_bytes()).await
}

async fn serve_line(c: &Commands, line: &str, w: &mut OwnedWriteHalf) -> std::io::Result<()> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let now = Instant::now();
    let reply = match words[..] {
        ["pin", p] => match &c.gamestream_pin {
            None => "error: GameStream is not running on this host (serve --gamestream)".into(),
            Some(f) => match f(p) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("error: {e}"),
            },
        },
        ["pair"] => {
            let (armed, outcome) = match c.pairing.arm(now) {
                Ok(a) => a,
                Err(e) => return answer(w, &format!("error: {e}")).await,
            };
            let secs = armed.expires.saturating_duration_since(now).as_secs();
            tracing::info!(
                valid_secs = secs,
                "pairing PIN armed for one punktfunk/1 client"
            );
            answer(w, &format!("pin {} {secs}", armed.pin.digits())).await?;
            // The ceremony runs on its connection; this waits for its end (or the PIN's).
            let wait = armed.expires.saturating_duration_since(Instant::now())
                + std::time::Duration::from_secs(30);
            match tokio::time::timeout(wait, outcome).await {
                Ok(Ok(Outcome::Paired { id, name })) => format!("paired {id} {name}"),
                Ok(Ok(Outcome::Failed(why))) => format!("error: {why}"),
                Ok(Err(_)) | Err(_) => "error: the PIN expired before a client used it".to_string(),
            }
        }
        ["pending"] => match serde_json::to_string(&c.pairing.pending(now)) {
            Ok(j) => format!("pending {j}"),
            Err(e) => format!("error: {e}"),
        },
        [verb @ ("approve" | "refuse"), id] => match c.pairing.decide(id, verb == "approve") {
            Ok(v) => format!("ok {} {}", v.id, v.name),
            Err(e) => format!("error: {e}"),
        },
        _ => USAGE.to_string(),
    };
    answer(w, &reply).await
}

/// Sends one command to the running host and returns its answer line.
pub async fn send(config_dir: &Path, command: &str) -> Result<String> {
    let mut lines = send_lines(config_dir, command).await?;
    Ok(lines.next_line().await?.unwrap_or_default())
}

/// Sends one command and returns the reader of its answer lines (for `pair`).
pub async fn send_lines(
    config_dir: &Path,
    command: &str,
) -> Result<tokio::io::Lines<BufReader<OwnedReadHalf>>> {
    let path = socket_path(config_dir);
    let sock = UnixStream::connect(&path).await.with_context(|| {
        format!(
            "no running host answers on {} (is `punktfunk-host serve` running with this config directory?)",
            path.display()
        )
    })?;
    let (r, mut w) = sock.into_split();
    w.write_all(format!("{command}\n").as_bytes()).await?;
    // Dropping the write half only shuts down our direction; the host still answers.
    drop(w);
    Ok(BufReader::new(r).lines())
}
