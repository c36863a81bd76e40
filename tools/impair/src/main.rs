//! `punktfunk-impair`: a UDP proxy that impairs traffic in user space (no tc/netem needed).

use anyhow::{Context, Result};
use clap::Parser;
use punktfunk_net::{ImpairConfig, ImpairProxy, ImpairStats};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SPEC_HELP: &str = "\
SPEC is a comma-separated list of key=value (\"none\" = a perfect network):
  loss=P            independent random loss (5% or 0.05)
  burst=GB/BG       Gilbert-Elliott burst loss: P(good->bad)/P(bad->good), every packet in the
                    bad state lost; mean burst = 1/BG packets, mean loss = GB/(GB+BG)
  burst=GB/BG/LG/LB the same with loss probabilities LG in the good and LB in the bad state
  reorder=P[@D]     hold a packet back by D (default 5ms) so later ones overtake it
  dup=P             deliver a packet twice
  delay=D           fixed one-way delay (us, ms, s)
  jitter=D          uniform extra delay 0..=D (keeps order)
  rate=R            bottleneck bit rate (e.g. 20mbit, 500k)
  queue=B           bytes queued at the bottleneck before tail drop (e.g. 256kb)
  blackout=S+N      drop packets number S..S+N (0-based, in arrival order): a deterministic outage
  seed=N            PRNG seed (same seed + same traffic = same result)

Examples:
  punktfunk-impair --listen 127.0.0.1:9000 --upstream 127.0.0.1:9001 --forward loss=10%
  punktfunk-impair --upstream 10.0.0.2:47998 --forward 'burst=1%/25%,delay=10ms,jitter=2ms' \\
                   --backward 'delay=10ms' --stats-interval 1";

/// A UDP proxy that loses, delays, reorders, duplicates and rate-limits datagrams.
///
/// Clients send to --listen; datagrams go through the forward impairment to --upstream.
/// Replies from upstream go through the backward impairment to the last client that sent.
#[derive(Debug, Parser)]
#[command(name = "punktfunk-impair", version, after_help = SPEC_HELP)]
struct Args {
    /// Address clients send to (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address datagrams are forwarded to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Impairment client -> upstream (see SPEC below).
    #[arg(long, default_value = "none", value_name = "SPEC")]
    forward: ImpairConfig,
    /// Impairment upstream -> client (see SPEC below).
    #[arg(long, default_value = "none", value_name = "SPEC")]
    backward: ImpairConfig,
    /// Print counters every this many seconds (0 = only at exit).
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    stats_interval: f64,
    /// Stop after this many seconds (default: run until killed).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
}

fn line(name: &str, s: &ImpairStats) -> String {
    format!(
        "{name}: in {} out {} lost {} (random {}, burst {}, queue {}, blackout {}) dup {} reordered {} bytes {}->{}",
        s.pushed,
        s.delivered,
        s.dropped_random + s.dropped_burst + s.dropped_queue + s.dropped_blackout,
        s.dropped_random,
        s.dropped_burst,
        s.dropped_queue,
        s.dropped_blackout,
        s.duplicated,
        s.reordered,
        s.bytes_in,
        s.bytes_out
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    for (name, v) in [
        ("stats-interval", args.stats_interval),
        ("duration", args.duration.unwrap_or(0.0)),
    ] {
        anyhow::ensure!(
            v.is_finite() && v >= 0.0,
            "--{name} must be a non-negative number of seconds"
        );
    }
    let proxy = ImpairProxy::spawn(
        args.listen,
        args.upstream,
        args.forward.clone(),
        args.backward.clone(),
    )
    .with_context(|| format!("starting the proxy on {}", args.listen))?;
    println!("listening on {} -> {}", proxy.local_addr(), args.upstream);
    println!("forward: {:?}", args.forward);
    println!("backward: {:?}", args.backward);
    let start = Instant::now();
    let end = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let tick = if args.stats_interval > 0.0 {
        Duration::from_secs_f64(args.stats_interval)
    } else {
        Duration::from_millis(200)
    };
    let mut next_report = start + tick;
    loop {
        let now = Instant::now();
        if end.is_some_and(|e| now >= e) {
            break;
        }
        if args.stats_interval > 0.0 && now >= next_report {
            let s = proxy.stats();
            println!(
                "[{:.1}s] {} | {}",
                now.duration_since(start).as_secs_f64(),
                line("fwd", &s.forward),
                line("back", &s.backward)
            );
            next_report += tick;
        }
        let wake = [Some(next_report), end]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + tick);
        std::thread::sleep(wake.saturating_duration_since(now).min(tick));
    }
    let s = proxy.stats();
    println!("{}", line("fwd", &s.forward));
    println!("{}", line("back", &s.backward));
    Ok(())
}
