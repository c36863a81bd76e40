//! The host's local control channel: a Unix socket in the config directory (`control.sock`,
//! mode 0600 inside the 0700 directory), so only the user running the host can use it.
//! One line in, one line out: `pin 1234` → `ok` or `error: why`. `punktfunk-host pin` is its
//! client; the management API will share it.

use crate::net::Acceptor;
use anyhow::{bail, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The socket path in a config directory.
pub fn socket_path(config_dir: &Path) -> PathBuf {
    config_dir.join("control.sock")
}

/// What the channel can do.
pub trait Handler: Send + Sync + 'static {
    /// Handles a PIN typed by the user.
    fn pin(&self, pin: &str) -> Result<(), crate::proto::gamestream::nvhttp::PinError>;
}

/// Binds the socket (replacing a stale one) and serves it on the current runtime.
pub fn start(config_dir: &Path, handler: std::sync::Arc<dyn Handler>) -> Result<PathBuf> {
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
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await;
            let h = handler.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r.take(4096)).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = match line.split_whitespace().collect::<Vec<_>>()[..] {
                        ["pin", p] => match h.pin(p) {
                            Ok(()) => "ok".to_string(),
                            Err(e) => format!("error: {e}"),
                        },
                        _ => "error: unknown command (try: pin NNNN)".to_string(),
                    };
                    if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(path)
}

/// Sends one command to the running host and returns its answer line.
pub async fn send(config_dir: &Path, command: &str) -> Result<String> {
    let path = socket_path(config_dir);
    let sock = UnixStream::connect(&path).await.with_context(|| {
        format!("no running host answers on {} (is `punktfunk-host serve --gamestream` running with this config directory?)", path.display())
    })?;
    let (r, mut w) = sock.into_split();
    w.write_all(format!("{command}\n").as_bytes()).await?;
    let mut lines = BufReader::new(r).lines();
    Ok(lines.next_line().await?.unwrap_or_default())
}
