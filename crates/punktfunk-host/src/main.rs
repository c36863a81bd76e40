//! `punktfunk-host`: parses flags into a validated configuration and runs a subcommand.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use punktfunk_host::clients::{ClientStore, PairedClient};
use punktfunk_host::config::{self, ConfigPaths, ServeFlags};
use punktfunk_host::pairing::PendingView;
use punktfunk_host::serve::serve;
use std::path::PathBuf;
use std::process::ExitCode;

/// punktfunk streaming host: serves punktfunk/1 clients over QUIC with encoded video on an
/// encrypted, FEC-protected UDP data plane.
#[derive(Debug, Parser)]
#[command(name = "punktfunk-host", version)]
struct Cli {
    /// Directory for the host identity, paired clients, apps.toml and host.toml (default:
    /// $XDG_CONFIG_HOME/punktfunk or ~/.config/punktfunk).
    #[arg(long, global = true, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Configuration file to read instead of host.toml in the config directory (it must exist).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log filter (e.g. info, debug, punktfunk_host=debug). Also read from RUST_LOG.
    /// [default: info; warn for doctor, whose report says the same]
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Listen for clients and stream to each (sessions back to back or concurrently). Settings
    /// come from host.toml in the config directory; a flag given here overrides the file.
    Serve(Box<ServeArgs>),
    /// Report what this machine offers (desktop, capture, input and audio backends, encoders)
    /// and whether the configured ports are free; exits 0 when `serve` could stream, 2 when not.
    Doctor(Box<DoctorArgs>),
    /// Print the host certificate's SHA-256 fingerprint (creating the identity if needed), for
    /// clients to pin with `--pin`.
    Fingerprint,
    /// Enter the PIN a Moonlight client shows, completing its pairing with the running host.
    Pin {
        /// The 4 digits the client shows.
        pin: String,
    },
    /// Arm pairing for one punktfunk/1 client: prints a fresh PIN (valid 2 minutes, for one
    /// attempt) to type into `punktfunk-client pair HOST` and waits for the outcome.
    Pair,
    /// Manage paired clients of both protocols and pairing requests waiting for approval.
    Clients {
        #[command(subcommand)]
        action: ClientsAction,
    },
}

#[derive(Debug, Subcommand)]
enum ClientsAction {
    /// List paired clients (GameStream and punktfunk/1) and, when the host runs, pairing
    /// requests waiting for approval.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a client (by the id `list` shows): a GameStream client gets "not paired" from its
    /// next request on; a punktfunk/1 client's running session ends and it is refused from then
    /// on.
    Remove {
        /// Client id (or at least 6 leading digits of its fingerprint).
        id: String,
    },
    /// Approve a punktfunk/1 client waiting to pair without a PIN (`punktfunk-client pair
    /// --no-pin`); compare the id with the one the client prints.
    Approve {
        /// The request's id (as `list` shows it).
        id: String,
    },
    /// Refuse a punktfunk/1 client waiting to pair without a PIN.
    Refuse {
        /// The request's id.
        id: String,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    flags: ServeFlags,
    /// Print the effective configuration (defaults, then the file, then these flags) as a
    /// host.toml and exit without binding anything.
    #[arg(long)]
    print_config: bool,
}

#[derive(Debug, clap::Args)]
struct DoctorArgs {
    #[command(flatten)]
    flags: ServeFlags,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Doctor(_) => "warn",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| {
            tracing_subscriber::EnvFilter::try_new(cli.log.as_deref().unwrap_or(default_log))
        })
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files or pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("punktfunk-host: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `doctor`'s status when a stream could not start (1 stays "the command failed").
const NOT_READY: u8 = 2;

fn run(cli: Cli) -> Result<ExitCode> {
    let paths = ConfigPaths::resolve(cli.config_dir, cli.config)?;
    let dir = paths.dir.clone();
    match cli.command {
        Command::Fingerprint => {
            let (id, _) = punktfunk_quic::Identity::load_or_create(&dir.join("host"))?;
            println!("{}", id.fingerprint());
        }
        Command::Pin { pin } => {
            let answer = local_runtime()?
                .block_on(punktfunk_host::control::send(&dir, &format!("pin {pin}")))?;
            match answer.strip_prefix("error: ") {
                None if answer == "ok" => println!("PIN sent; the client finishes pairing now"),
                Some(e) => bail!("{e}"),
                None => bail!("unexpected answer from the host: {answer:?}"),
            }
        }
        Command::Pair => {
            local_runtime()?.block_on(pair(&dir))?;
        }
        Command::Clients { action } => {
            let store = ClientStore::new(&dir);
            match action {
                ClientsAction::List { json } => {
                    let list = store.list()?;
                    let pending = pending_requests(&dir);
                    if json {
                        let v = serde_json::json!({ "clients": *list, "pending": pending });
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        print!("{}", clients_table(&list, &pending));
                    }
                }
                ClientsAction::Remove { id } => match store.remove(&id)? {
                    Some(c) => println!(
                        "removed {} ({}, {})",
                        c.id,
                        punktfunk_core::text::Escaped(&c.name),
                        c.protocol.name()
                    ),
                    None => {
                        bail!("no paired client with id {id:?} (see `punktfunk-host clients list`)")
                    }
                },
                ClientsAction::Approve { id } => decide(&dir, "approve", &id)?,
                ClientsAction::Refuse { id } => decide(&dir, "refuse", &id)?,
            }
        }
        Command::Serve(a) => {
            let cfg = config::load(&paths, &a.flags)?;
            if a.print_config {
                print!("{}", cfg.to_toml());
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(f) = &cfg.file {
                tracing::info!(file = %f.display(), "configuration read");
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the runtime")?;
            rt.block_on(serve(cfg.serve))?;
        }
        Command::Doctor(a) => {
            let cfg = config::load(&paths, &a.flags)?;
            let report = punktfunk_host::doctor::examine(
                &cfg.serve,
                cfg.file.clone(),
                punktfunk_desktop::DesktopEnv::from_env(),
            );
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            if !report.ready {
                return Ok(ExitCode::from(NOT_READY));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A single-threaded runtime for a command that talks to the running host's control socket.
fn local_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// `punktfunk-host pair`: arms a PIN on the running host and reports its ceremony.
async fn pair(dir: &std::path::Path) -> Result<()> {
    let mut lines = punktfunk_host::control::send_lines(dir, "pair").await?;
    let first = lines.next_line().await?.unwrap_or_default();
    if let Some(e) = first.strip_prefix("error: ") {
        bail!("{e}");
    }
    let mut words = first.split_whitespace();
    let (Some("pin"), Some(pin), Some(secs)) = (words.next(), words.next(), words.next()) else {
        bail!("unexpected answer from the host: {first:?}");
    };
    println!("PIN {pin}");
    eprintln!(
        "Type it into the client within {secs} s: punktfunk-client pair THIS-HOST (it is good for one attempt)"
    );
    let last = lines.next_line().await?.unwrap_or_default();
    if let Some(e) = last.strip_prefix("error: ") {
        bail!("pairing did not complete: {e}");
    }
    match last.strip_prefix("paired ").and_then(|r| r.split_once(' ')) {
        Some((id, name)) => println!("Paired {name} (id {id})"),
        None => bail!("the host ended without a result ({last:?})"),
    }
    Ok(())
}

/// Approval requests waiting on the running host (none when no host runs).
fn pending_requests(dir: &std::path::Path) -> Vec<PendingView> {
    let Ok(rt) = local_runtime() else {
        return Vec::new();
    };
    rt.block_on(punktfunk_host::control::send(dir, "pending"))
        .ok()
        .and_then(|a| a.strip_prefix("pending ").map(str::to_string))
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default()
}

fn decide(dir: &std::path::Path, verb: &str, id: &str) -> Result<()> {
    let answer =
        local_runtime()?.block_on(punktfunk_host::control::send(dir, &format!("{verb} {id}")))?;
    if let Some(e) = answer.strip_prefix("error: ") {
        bail!("{e}");
    }
    match answer.strip_prefix("ok ").and_then(|r| r.split_once(' ')) {
        Some((id, name)) if verb == "approve" => {
            println!("approved {name} (id {id}); it pairs now")
        }
        Some((id, name)) => println!("refused {name} (id {id})"),
        None => bail!("unexpected answer from the host: {answer:?}"),
    }
    Ok(())
}

/// A Unix time as `YYYY-MM-DD HH:MM` UTC.
fn utc(secs: u64) -> String {
    // Days to a civil date (the proleptic Gregorian calendar's standard conversion).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn clients_table(list: &[PairedClient], pending: &[PendingView]) -> String {
    let mut out = String::new();
    if list.is_empty() {
        out.push_str("no paired clients\n");
    } else {
        out.push_str(&format!(
            "{:<12}  {:<11}  {:<20}  {:<16}  {:<16}  FINGERPRINT\n",
            "ID", "PROTOCOL", "NAME", "PAIRED (UTC)", "LAST SEEN"
        ));
        for c in list {
            out.push_str(&format!(
                "{:<12}  {:<11}  {:<20}  {:<16}  {:<16}  sha256:{}\n",
                c.id,
                c.protocol.name(),
                punktfunk_core::text::Escaped(&c.name),
                utc(c.paired_at),
                c.last_seen.map_or_else(|| "never".to_string(), utc),
                c.fingerprint
            ));
        }
    }
    if !pending.is_empty() {
        out.push_str("\nwaiting for approval (punktfunk-host clients approve ID):\n");
        for p in pending {
            out.push_str(&format!(
                "{:<12}  {:<20}  from {}  waiting {} s  sha256:{}\n",
                p.id,
                punktfunk_core::text::Escaped(&p.name),
                p.remote,
                p.waiting_secs,
                p.fingerprint
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn unix_times_print_as_utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(super::utc(1_796_515_200 + 3_723), "2026-12-06 01:02");
    }
}
