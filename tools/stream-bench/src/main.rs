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
//! With `--desktop sway` every mode is measured twice in the same run: once on the test
//! pattern, once on a real desktop: a private headless sway, the host on it (its own output
//! per stream, wlr-screencopy, wlr input), and the desktop probe app drawing stamped frames on
//! that output. The desktop pass reports app render → decoded beside the test pattern's
//! capture → decoded, the difference against one frame interval (the target: at most one
//! frame interval more at p50), and the host's CPU per frame outside encoding.
//!
//! The host's figures come from its `--stats-json` file (the session's stats snapshot, the
//! same one its end-of-session log line is made from); the client's from its `--json` report.
//! A figure missing from either is an error naming it, so a renamed field cannot pass as
//! "NaN".

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::Value;
use std::collections::BTreeMap;
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
    /// `none`: the test pattern only; `sway`: also a real desktop (a private headless sway
    /// with the desktop probe app), measured right after the test pattern in the same run.
    #[arg(long, default_value = "none", value_parser = ["none", "sway"])]
    desktop: String,
}

/// One measured stream: the host's stats and the client's report.
struct Measured {
    host: Value,
    client: Value,
    /// The host's CPU time (ms) by thread name over the session, sampled from /proc.
    threads: BTreeMap<String, f64>,
}

/// CPU time (ns) of every thread of `pid` so far, by thread id: (name, ns).
fn thread_cpu(pid: u32) -> Vec<(u32, String, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            // schedstat: time on CPU (ns), time waiting, timeslices.
            let ns = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((tid, comm.trim().to_string(), ns))
        })
        .collect()
}

/// Samples `pid`'s threads every 100 ms until `stop`; the last reading of every thread (a
/// thread that ended between samples loses at most 100 ms), summed by name, in ms.
fn sample_threads(pid: u32, stop: &std::sync::atomic::AtomicBool) -> BTreeMap<String, f64> {
    let mut last: BTreeMap<u32, (String, u64)> = BTreeMap::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for (tid, name, ns) in thread_cpu(pid) {
            last.insert(tid, (name, ns));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut by_name = BTreeMap::new();
    for (name, ns) in last.into_values() {
        *by_name.entry(name).or_insert(0.0) += ns as f64 / 1e6;
    }
    by_name
}

/// Streams `mode` at `kbps` for `seconds` with a fresh host; in `sway` (when given) with the
/// probe app on the stream's output.
fn measure(
    args: &Args,
    mode: &str,
    kbps: &str,
    seconds: f64,
    sway: Option<&punktfunk_testenv::HeadlessSway>,
) -> Result<Measured> {
    let (host_bin, client_bin) = (bin("punktfunk-host")?, bin("punktfunk-client")?);
    let dir = std::env::temp_dir().join(format!("pf-stream-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let stats = dir.join("host.json");
    let mut host = Command::new(&host_bin);
    host.args([
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
        "--no-mdns",
        // A measurement on loopback: the client does not pair first.
        "--allow-unpaired",
    ])
    .arg("--stats-json")
    .arg(&stats)
    .stdout(Stdio::piped());
    let mut client_extra: Vec<String> = Vec::new();
    match sway {
        Some(sway) => {
            let probe = bin("punktfunk-desktop-probe")?;
            std::fs::write(
                dir.join("apps.toml"),
                format!(
                    "[[app]]\nid = 1\ntitle = \"Probe\"\ncommand = [{:?}]\n",
                    probe.display().to_string()
                ),
            )?;
            host.env_clear()
                .envs(sway.env_vars())
                .env("PATH", std::env::var_os("PATH").unwrap_or_default());
            client_extra.extend(["--app", "Probe", "--app-stamps"].map(String::from));
        }
        None => {
            // The test pattern: no desktop in the host's environment.
            for v in [
                "WAYLAND_DISPLAY",
                "SWAYSOCK",
                "DISPLAY",
                "XDG_CURRENT_DESKTOP",
            ] {
                host.env_remove(v);
            }
        }
    }
    let mut host = host.spawn().context("starting the host")?;
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
    let stop = std::sync::atomic::AtomicBool::new(false);
    let host_pid = host.id();
    let (out, threads) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_threads(host_pid, &stop));
        let out = run_client(
            &client_bin,
            &dir,
            &addr,
            &fp,
            args,
            mode,
            kbps,
            seconds,
            &client_extra,
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (out, sampler.join().unwrap_or_default())
    });
    let out = out?;

    if !out.status.success() {
        let _ = host.kill();
        bail!("client failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let client: Value = serde_json::from_slice(&out.stdout).context("client JSON")?;
    // The host writes its stats when the session ends.
    let status = host.wait()?;
    if !status.success() {
        bail!("host exited with {status}");
    }
    let host: Value = serde_json::from_slice(&std::fs::read(&stats).context("host stats")?)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Measured {
        host,
        client,
        threads,
    })
}

/// Runs the client against the host at `addr` (certificate fingerprint `fp`).
#[allow(clippy::too_many_arguments)]
fn run_client(
    client_bin: &std::path::Path,
    dir: &std::path::Path,
    addr: &str,
    fp: &str,
    args: &Args,
    mode: &str,
    kbps: &str,
    seconds: f64,
    client_extra: &[String],
) -> Result<std::process::Output> {
    Command::new(client_bin)
        .args([
            "--config-dir",
            dir.to_str().unwrap_or("."),
            "--log",
            "warn",
            "connect",
            addr,
            "--json",
            "--pin",
            fp,
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
        .args(client_extra)
        .output()
        .context("running the client")
}

fn bin(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let p = me.with_file_name(name);
    if !p.exists() {
        bail!("{} not found: build it first (cargo build --release -p punktfunk-host -p punktfunk-client -p punktfunk-desktop-probe)", p.display());
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
    let sway = match args.desktop.as_str() {
        "sway" => Some(
            punktfunk_testenv::HeadlessSway::start()
                .map_err(anyhow::Error::msg)
                .context("starting a headless sway")?,
        ),
        _ => None,
    };
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
        let pattern = measure(&args, mode, kbps, seconds, None)?;
        print_stages(&args, mode, kbps, &pattern, "test pattern")?;
        if let Some(sway) = &sway {
            let desk = measure(&args, mode, kbps, seconds, Some(sway))?;
            print_stages(&args, mode, kbps, &desk, "sway desktop, probe app")?;
            let p = |m: &Measured, k: &str, q: &str| f(&m.client, "the client's report", &[k, q]);
            let interval = 1000.0 / fps;
            println!("-- desktop vs test pattern, {mode} (same run) --");
            println!("{:<44} {:>8} {:>8} {:>8}", "(ms)", "p50", "p95", "p99");
            for (name, m, key) in [
                (
                    "test pattern: capture -> decoded",
                    &pattern,
                    "capture_to_decoded_ms",
                ),
                (
                    "desktop: capture -> decoded",
                    &desk,
                    "capture_to_decoded_ms",
                ),
                (
                    "desktop: app render -> decoded",
                    &desk,
                    "app_render_to_decoded_ms",
                ),
            ] {
                println!(
                    "{name:<44} {:>8.2} {:>8.2} {:>8.2}",
                    p(m, key, "p50")?,
                    p(m, key, "p95")?,
                    p(m, key, "p99")?
                );
            }
            let extra = p(&desk, "app_render_to_decoded_ms", "p50")?
                - p(&pattern, "capture_to_decoded_ms", "p50")?;
            println!(
                "app render -> decoded exceeds the test pattern's capture -> decoded by {extra:.2} ms at p50; \
                 one frame interval is {interval:.2} ms ({})",
                if extra <= interval { "within" } else { "over" }
            );
            let h = |k: &[&str]| f(&desk.host, "the host's --stats-json", k);
            let frames = h(&["frames"])?;
            let per_frame = |ms: f64| ms / frames.max(1.0);
            // The encode thread runs capture hand-over, conversion, x264 (whose worker threads
            // carry its name) and the send path; every other thread is outside encoding.
            let others: f64 = desk
                .threads
                .iter()
                .filter(|(name, _)| name.as_str() != "encode")
                .map(|(_, ms)| per_frame(*ms))
                .sum();
            let (capture, convert, send) = (
                h(&["capture_ms", "p50"])?,
                h(&["convert_ms", "p50"])?,
                h(&["send_path_cpu_ms", "p50"])?,
            );
            let outside = others + capture + convert + send;
            let by_thread = desk
                .threads
                .iter()
                .map(|(name, ms)| format!("{name} {:.3}", per_frame(*ms)))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "host CPU per frame: {:.2} ms in all; by thread (ms): {by_thread}",
                h(&["host_cpu_ms_per_frame"])?
            );
            println!(
                "host CPU per frame outside encoding: {outside:.2} ms (target < 2 ms) = threads other \
                 than encode {others:.3} + on the encode thread: capture hand-over {capture:.3}, \
                 conversion {convert:.3}, send CPU {send:.3} (p50s); \
                 {} app pictures, {} frames sent, {} repeated\n",
                desk.client["app_frames"],
                desk.client["frames_sent"],
                desk.host["repeated_frames"],
            );
        }
    }
    Ok(())
}

fn print_stages(args: &Args, mode: &str, kbps: &str, m: &Measured, what: &str) -> Result<()> {
    let (h, c) = (&m.host, &m.client);
    println!(
        "== {mode} {} {kbps} kbit/s, {what}: {} frames ({} decoded, {} lost) ==",
        args.codec, c["frames_sent"], c["frames_decoded"], c["frames_lost"]
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8}",
        "stage (ms)", "p50", "p95", "p99"
    );
    let host = |path: &[&str]| f(h, "the host's --stats-json", path);
    let client = |path: &[&str]| f(c, "the client's report", path);
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
    row("host: capture*", &host, "capture_ms")?;
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
        "(* the test pattern's render, or the screencopy hand-over: the work after the frame's capture time)\n"
    );
    Ok(())
}
