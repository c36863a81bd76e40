//! Loss harness: sweeps loss rate × burstiness × FEC percentage over the real data plane.
//!
//! For every combination, a stream of frames goes through the real `SendSession` (packetizer,
//! FEC, AES-128-GCM), a seeded impairment model, and the real `RecvSession` (open, replay window,
//! reassembly, FEC recovery), in virtual time. Nothing is mocked but the network and the clock,
//! so a row is what a client would see on such a network. The same seed gives the same table.

use anyhow::{bail, Context, Result};
use clap::Parser;
use punktfunk_core::crypto::{packet_key, CipherSuite};
use punktfunk_core::fec::FecPolicy;
use punktfunk_core::packetizer::{
    FrameMeta, PacketBatch, PacketizerConfig, STREAM_MIN_DATA_SHARDS, STREAM_MIN_SHARD_LEN,
};
use punktfunk_core::reassembler::{Event, ReassemblyLimits};
use punktfunk_core::session::{RecvSession, SendSession};
use punktfunk_net::impair::{GilbertElliott, ImpairConfig, Impairment};
use std::time::{Duration, Instant};

/// Sweep packet loss × burst length × FEC percentage over punktfunk's data plane and print
/// frames delivered, recovered by FEC and lost, with the bandwidth overhead.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Frames per row (600 = 10 s at 60 fps).
    #[arg(long, default_value_t = 600)]
    frames: u32,
    /// Bytes per frame (42 000 ≈ 1080p60 at 20 Mbit/s).
    #[arg(long, default_value_t = 42_000)]
    frame_bytes: usize,
    /// Frames per second (spacing of frames in virtual time).
    #[arg(long, default_value_t = 60)]
    fps: u32,
    /// Largest shard payload in bytes.
    #[arg(long, default_value_t = 1400)]
    shard: u16,
    /// Fewest data shards per frame (shards shrink down to 256 bytes to reach it), as the host
    /// does with FEC on; 1 keeps every shard at `--shard` bytes.
    #[arg(long, default_value_t = STREAM_MIN_DATA_SHARDS)]
    min_shards: u16,
    /// Packet loss rates to sweep, in percent, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,5,10,20")]
    loss: Vec<f64>,
    /// Mean loss-burst lengths in packets to sweep (1 = independent losses; larger values use a
    /// Gilbert-Elliott model with the same average loss).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    burst: Vec<f64>,
    /// FEC percentages to sweep.
    #[arg(long, value_delimiter = ',', default_value = "0,10,20,30,50")]
    fec: Vec<u16>,
    /// Seed of the impairment model.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

struct Row {
    loss: f64,
    burst: f64,
    fec: u16,
    delivered: u64,
    recovered: u64,
    lost: u64,
    observed_loss: f64,
    overhead: f64,
}

fn impairment(loss: f64, burst: f64, seed: u64) -> ImpairConfig {
    let p = loss / 100.0;
    let mut cfg = ImpairConfig {
        seed,
        ..ImpairConfig::default()
    };
    if p <= 0.0 {
        return cfg;
    }
    if burst <= 1.0 {
        cfg.loss = p;
    } else {
        // Two-state Gilbert-Elliott: every packet in the bad state is lost, none in the good one.
        // Mean bad run = 1 / p_bad_to_good = `burst`; stationary bad share = p.
        let p_bg = 1.0 / burst;
        cfg.burst = Some(GilbertElliott {
            p_good_to_bad: p * p_bg / (1.0 - p),
            p_bad_to_good: p_bg,
            loss_in_good: 0.0,
            loss_in_bad: 1.0,
        });
    }
    cfg
}

fn run(args: &Args, loss: f64, burst: f64, fec: u16) -> Result<Row> {
    let key = || packet_key(CipherSuite::AES_128_GCM, &[0x11; 16], [0x22; 12]);
    let cfg = PacketizerConfig {
        max_shard_len: args.shard,
        fec: if fec == 0 {
            FecPolicy::NONE
        } else {
            FecPolicy {
                percent: fec,
                min_parity: 1,
                max_parity: 4096,
            }
        },
        min_data_shards: if fec == 0 { 1 } else { args.min_shards.max(1) },
        min_shard_len: STREAM_MIN_SHARD_LEN,
        ..PacketizerConfig::default()
    };
    let mut tx = SendSession::new(cfg, key()?);
    let mut rx = RecvSession::new(ReassemblyLimits::default(), key()?);
    let mut net = Impairment::new(impairment(loss, burst, args.seed));
    let mut batch = PacketBatch::new();
    let frame: Vec<u8> = (0..args.frame_bytes)
        .map(|i| ((i * 131) >> 3) as u8)
        .collect();
    let start = Instant::now();
    let interval = Duration::from_secs(1) / args.fps.max(1);
    let (mut sent_packets, mut wire_bytes, mut received_packets) = (0u64, 0u64, 0u64);
    let (mut delivered, mut lost) = (0u64, 0u64);

    let drain = |rx: &mut RecvSession, delivered: &mut u64, lost: &mut u64| -> Result<()> {
        while let Some(ev) = rx.poll_event() {
            match ev {
                Event::Frame(f) => {
                    if f.data != frame {
                        bail!("frame {} corrupted", f.index);
                    }
                    *delivered += 1;
                    rx.recycle(f.data);
                }
                Event::Lost { count, .. } => *lost += count as u64,
            }
        }
        Ok(())
    };

    for i in 0..args.frames {
        let now = start + interval * i;
        let meta = FrameMeta {
            timestamp_us: now.duration_since(start).as_micros() as u64,
            keyframe: i == 0,
        };
        tx.send_frame(&frame, meta, &mut batch)
            .context("packetize")?;
        for d in batch.iter() {
            sent_packets += 1;
            wire_bytes += d.len() as u64;
            net.push(now, d.to_vec());
        }
        // Deliver everything due before the next frame is sent.
        let until = now + interval;
        while let Some(mut d) = net.poll(until) {
            received_packets += 1;
            let _ = rx.handle_datagram(until, &mut d);
        }
        rx.handle_timeout(until);
        drain(&mut rx, &mut delivered, &mut lost)?;
    }
    // Let the last frames complete or time out.
    let end = start + interval * args.frames + Duration::from_secs(1);
    while let Some(mut d) = net.poll(end) {
        received_packets += 1;
        let _ = rx.handle_datagram(end, &mut d);
    }
    rx.handle_timeout(end);
    drain(&mut rx, &mut delivered, &mut lost)?;
    // A frame sent after the last one that arrived is neither delivered nor reported.
    let unaccounted = args.frames as u64 - delivered - lost;

    let stats = rx.stats();
    let payload = args.frame_bytes as u64 * args.frames as u64;
    Ok(Row {
        loss,
        burst,
        fec,
        delivered,
        recovered: stats.reassembly.frames_recovered,
        lost: lost + unaccounted,
        observed_loss: 100.0 * (1.0 - received_packets as f64 / sent_packets.max(1) as f64),
        overhead: 100.0 * (wire_bytes as f64 / payload as f64 - 1.0),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.frames == 0 || args.frame_bytes == 0 {
        bail!("--frames and --frame-bytes must be at least 1");
    }
    for &l in &args.loss {
        if !(0.0..100.0).contains(&l) {
            bail!("--loss {l}: must be in [0, 100)");
        }
    }
    for &b in &args.burst {
        if b < 1.0 {
            bail!("--burst {b}: mean burst length must be at least 1");
        }
    }
    println!(
        "punktfunk loss harness: {} frames of {} B at {} fps per row, shards ≤ {} B (at least {} per frame when FEC is on), AES-128-GCM, seed {}",
        args.frames, args.frame_bytes, args.fps, args.shard, args.min_shards, args.seed
    );
    println!(
        "{:>7} {:>6} {:>5} {:>9} {:>9} {:>9} {:>7} {:>9} {:>10}",
        "loss%",
        "burst",
        "fec%",
        "delivered",
        "recovered",
        "lost",
        "lost%",
        "obs.loss%",
        "overhead%"
    );
    for &loss in &args.loss {
        for &burst in &args.burst {
            if loss == 0.0 && burst > 1.0 {
                continue;
            }
            for &fec in &args.fec {
                let r = run(&args, loss, burst, fec)?;
                println!(
                    "{:>7.1} {:>6.1} {:>5} {:>9} {:>9} {:>9} {:>7.2} {:>9.2} {:>10.1}",
                    r.loss,
                    r.burst,
                    r.fec,
                    r.delivered,
                    r.recovered,
                    r.lost,
                    100.0 * r.lost as f64 / args.frames as f64,
                    r.observed_loss,
                    r.overhead
                );
            }
        }
    }
    Ok(())
}
