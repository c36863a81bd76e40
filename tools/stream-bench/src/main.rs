//! `punktfunk-stream-bench`: the end-to-end latency benchmark.
//!
//! For each mode it starts a real `punktfunk-host serve` and `punktfunk-client connect`
//! (the binaries next to this one, so build them with the same profile), streams the test
//! pattern for a fixed number of frames on loopback, and prints per-stage percentiles from both
//! sides: host capture (the test pattern's render), colour conversion, encode, send path
//! (packetize + FEC + seal + batched send); client receive path and decode; and end to end
//! capture → received and capture → decoded, with the host's CPU time per frame. Beside the
//! end-to-end figure it prints the baseline of the latency target measured in the same run:
//! encode p50 + decode p50 + 1.5 ms.
//!
//! The host's figures come from its `--stats-json` file (the session's stats snapshot, the
//! same one its end-of-session log line is made from); the client's from its `--json` report.
//! A figure missing from either is an error naming it, so a renamed field cannot pass as
//! "NaN".

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Stream host → client on loopback and print per-stage latency.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Modes to measure, with their bitrates in kbit/s: MODE:KBPS, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1280x720@60:10000,1920x1080@60:20000"
    )]
    modes: Vec<String>,
    /// Frames per mode.
    #[arg(long, default_value_t = 600)]
    frames: u32,
    /// Codec.
    #[arg(long, default_value = "h264")]
    codec: String,
}

fn bin(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let p = me.with_file_name(name);
    if !p.exists() {
        bail!("{} not found: build it first (cargo build --release -p punktfunk-host -p punktfunk-client)", p.display());
    }
    Ok(p)
}

/// The number at `path` in `v` (`what` names the document in the error).
fn f(v: &Value, what: &str, path: &[&str]) -> Result<f64> {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .with_context(|| format!("{what} has no number at {}", path.join(".")))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (host_bin, client_bin) = (bin("punktfunk-host")?, bin("punktfunk-client")?);
    for spec in &args.modes {
        let (mode, kbps) = spec
            .split_once(':')
            .context("--modes entries are MODE:KBPS")?;
        let fps: f64 = mode
            .rsplit('@')
            .next()
            .and_then(|f| f.parse().ok())
            .context("mode needs @FPS")?;
        let seconds = f64::from(args.frames) / fps;
        let dir = std::env::temp_dir().join(format!("pf-stream-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let stats = dir.join("host.json");
        let mut host = Command::new(&host_bin)
            .args([
                "--config-dir",
                dir.to_str().unwrap_or("."),
                "--log",
                "warn",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-port",
                "0",
                "--sessions",
                "1",
            ])
            .arg("--stats-json")
            .arg(&stats)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the host")?;
        let mut line = String::new();
        BufReader::new(host.stdout.take().context("host stdout")?).read_line(&mut line)?;
        let addr = line
            .split_whitespace()
            .nth(3)
            .context("host did not print its address")?
            .to_string();
        let fp = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        let out = Command::new(&client_bin)
            .args([
                "--config-dir",
                dir.to_str().unwrap_or("."),
                "--log",
                "warn",
                "connect",
                &addr,
                "--json",
                "--pin",
                &fp,
            ])
            .args([
                "--mode",
                mode,
                "--bitrate",
                kbps,
                "--codec",
                &args.codec,
                "--seconds",
                &format!("{seconds:.3}"),
            ])
            .output()
            .context("running the client")?;
        if !out.status.success() {
            bail!("client failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let c: Value = serde_json::from_slice(&out.stdout).context("client JSON")?;
        // The host writes its stats when the session ends.
        let status = host.wait()?;
        if !status.success() {
            bail!("host exited with {status}");
        }
        let h: Value = serde_json::from_slice(&std::fs::read(&stats).context("host stats")?)?;
        let _ = std::fs::remove_dir_all(&dir);

        println!(
            "== {mode} {} {kbps} kbit/s, {} frames ({} decoded, {} lost) ==",
            args.codec, c["frames_sent"], c["frames_decoded"], c["frames_lost"]
        );
        println!(
            "{:<34} {:>8} {:>8} {:>8}",
            "stage (ms)", "p50", "p95", "p99"
        );
        let host = |path: &[&str]| f(&h, "the host's --stats-json", path);
        let client = |path: &[&str]| f(&c, "the client's report", path);
        let row = |name: &str, get: &dyn Fn(&[&str]) -> Result<f64>, key: &str| -> Result<()> {
            println!(
                "{:<34} {:>8.2} {:>8.2} {:>8.2}",
                name,
                get(&[key, "p50"])?,
                get(&[key, "p95"])?,
                get(&[key, "p99"])?
            );
            Ok(())
        };
        row("host: capture (test pattern render)*", &host, "capture_ms")?;
        row("host: colour conversion", &host, "convert_ms")?;
        row("host: encode", &host, "encode_ms")?;
        row("host: send path (pkt+FEC+seal+send)", &host, "send_path_ms")?;
        row(
            "host: send path, thread CPU time",
            &host,
            "send_path_cpu_ms",
        )?;
        row("client: receive path", &client, "receive_path_ms")?;
        row("client: decode", &client, "decode_ms")?;
        row(
            "end to end: capture -> received",
            &client,
            "capture_to_received_ms",
        )?;
        row(
            "end to end: capture -> decoded",
            &client,
            "capture_to_decoded_ms",
        )?;
        let net = client(&["capture_to_received_ms", "p50"])?
            - host(&["convert_ms", "p50"])?
            - host(&["encode_ms", "p50"])?
            - host(&["send_path_ms", "p50"])?;
        println!("{:<34} {:>8.2}", "network + queueing (derived, p50)", net);
        println!(
            "host CPU per frame: {:.2} ms",
            host(&["host_cpu_ms_per_frame"])?
        );
        let target = host(&["encode_ms", "p50"])? + client(&["decode_ms", "p50"])? + 1.5;
        let got = client(&["capture_to_decoded_ms", "p50"])?;
        println!("capture->decoded p50 {got:.2} ms vs baseline encode p50 + decode p50 + 1.5 ms = {target:.2} ms ({})",
            if got <= target { "within" } else { "over" });
        println!(
            "(* before the capture timestamp: stands in for the compositor producing the frame)\n"
        );
    }
    Ok(())
}
