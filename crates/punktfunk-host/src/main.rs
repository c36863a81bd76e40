//! `punktfunk-host`: parses flags into a validated configuration and runs a subcommand.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use punktfunk_host::config::{self, ConfigPaths, ServeFlags};
use punktfunk_host::proto::gamestream::clients::ClientStore;
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
    /// Manage paired GameStream (Moonlight) clients.
    Clients {
        #[command(subcommand)]
        action: ClientsAction,
    },
}

#[derive(Debug, Subcommand)]
enum ClientsAction {
    /// List paired clients.
    List,
    /// Revoke a client (by the id `list` shows); it gets "not paired" from its next request on.
    Remove {
        /// Client id (or at least 6 leading digits of its fingerprint).
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
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let answer = rt.block_on(punktfunk_host::control::send(&dir, &format!("pin {pin}")))?;
            match answer.strip_prefix("error: ") {
                None if answer == "ok" => println!("PIN sent; the client finishes pairing now"),
                Some(e) => bail!("{e}"),
                None => bail!("unexpected answer from the host: {answer:?}"),
            }
        }
        Command::Clients { action } => {
            let store = ClientStore::new(&dir);
            match action {
                ClientsAction::List => {
                    let list = store.list()?;
                    if list.is_empty() {
                        println!("no paired clients");
                    }
                    for c in list {
                        println!(
                            "{}  {}  paired {}  sha256:{}",
                            c.id, c.name, c.paired_at, c.fingerprint
                        );
                    }
                }
                ClientsAction::Remove { id } => match store.remove(&id)? {
                    Some(c) => println!("removed {} ({})", c.id, c.name),
                    None => {
                        bail!("no paired client with id {id:?} (see `punktfunk-host clients list`)")
                    }
                },
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
