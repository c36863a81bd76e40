//! A seeded, user-space network impairment model: random and burst loss, reordering,
//! duplication, delay with jitter, and a bandwidth cap with a bounded queue.
//!
//! [`Impairment`] is sans-IO: packets go in with the time they enter the network
//! ([`Impairment::push`]) and come out when their delivery time has come ([`Impairment::poll`]).
//! The same seed and the same pushes give the same output, so tests can run it on virtual time
//! and assert exact results; [`crate::proxy::ImpairProxy`] runs it on real time between sockets.
//!
//! Per packet, in order: the bottleneck (if `rate_bps` is set) queues it behind earlier packets
//! and tail-drops it when more than `queue_limit` bytes wait; random loss (`loss`) and the
//! Gilbert-Elliott burst model (`burst`) may drop it; it is then delayed by `delay` plus a
//! uniform `0..=jitter`, never overtaking the packet before it; with probability `reorder` it is
//! held back a further `reorder_delay` (so later packets overtake it); with probability
//! `duplicate` a copy is delivered as well.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::str::FromStr;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Two-state Markov loss model. In the good state packets are lost with `loss_in_good`, in the
/// bad state with `loss_in_bad`; before each packet the state flips with the given
/// probabilities. Mean time in the bad state is `1 / p_bad_to_good` packets; the share of packets
/// sent in the bad state is `p_good_to_bad / (p_good_to_bad + p_bad_to_good)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from good to bad before a packet.
    pub p_good_to_bad: f64,
    /// Probability of moving from bad to good before a packet.
    pub p_bad_to_good: f64,
    /// Loss probability in the good state.
    pub loss_in_good: f64,
    /// Loss probability in the bad state.
    pub loss_in_bad: f64,
}

impl GilbertElliott {
    /// The long-run loss rate of the model.
    pub fn mean_loss(&self) -> f64 {
        let total = self.p_good_to_bad + self.p_bad_to_good;
        if total == 0.0 {
            return self.loss_in_good;
        }
        let bad = self.p_good_to_bad / total;
        bad * self.loss_in_bad + (1.0 - bad) * self.loss_in_good
    }
}

/// What the network does to packets. `Default` is a perfect network.
///
/// # Spec strings
///
/// [`FromStr`] parses a comma-separated list of `key=value` (the CLI's `--forward` and
/// `--backward`); `""` or `none` is a perfect network:
///
/// | key | value | example |
/// |---|---|---|
/// | `loss` | probability, `%` or fraction | `loss=5%`, `loss=0.05` |
/// | `burst` | `P_GB/P_BG` (lose every packet in the bad state) or `P_GB/P_BG/LOSS_GOOD/LOSS_BAD` | `burst=1%/25%` |
/// | `reorder` | probability, optionally `@DELAY` (default 5ms) | `reorder=2%@3ms` |
/// | `dup` | probability | `dup=0.5%` |
/// | `delay` | duration (`us`, `ms`, `s`) | `delay=20ms` |
/// | `jitter` | duration | `jitter=4ms` |
/// | `rate` | bits per second (`k`/`m`/`g` suffix, optional `bit`/`bps`) | `rate=20mbit` |
/// | `queue` | bytes (`b`/`kb`/`mb`) queued at the bottleneck before tail drop | `queue=256kb` |
/// | `blackout` | `START+COUNT`: drop packets number START..START+COUNT (0-based) | `blackout=300+40` |
/// | `seed` | integer | `seed=7` |
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImpairConfig {
    /// Independent random loss probability.
    pub loss: f64,
    /// Burst loss model, applied in addition to `loss`.
    pub burst: Option<GilbertElliott>,
    /// Probability that a packet is held back by `reorder_delay`.
    pub reorder: f64,
    /// Extra delay of a reordered packet.
    pub reorder_delay: Duration,
    /// Probability that a packet is delivered twice.
    pub duplicate: f64,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Uniform extra delay `0..=jitter` (does not reorder by itself).
    pub jitter: Duration,
    /// Bottleneck rate in bit/s.
    pub rate_bps: Option<u64>,
    /// Bytes waiting at the bottleneck before tail drop (0 = unlimited).
    pub queue_limit: usize,
    /// Deterministic outage: packets `start..start + count` (by push order, from 0) are dropped.
    pub blackout: Option<(u64, u64)>,
    /// PRNG seed.
    pub seed: u64,
}

/// A bad spec string or configuration.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct ImpairError(pub String);

impl ImpairConfig {
    /// Checks every probability is within `[0, 1]` and the rate is not zero.
    pub fn validate(&self) -> Result<(), ImpairError> {
        let mut probs = vec![
            ("loss", self.loss),
            ("reorder", self.reorder),
            ("dup", self.duplicate),
        ];
        if let Some(b) = &self.burst {
            probs.extend([
                ("burst p_good_to_bad", b.p_good_to_bad),
                ("burst p_bad_to_good", b.p_bad_to_good),
                ("burst loss_in_good", b.loss_in_good),
                ("burst loss_in_bad", b.loss_in_bad),
            ]);
        }
        for (name, p) in probs {
            if !(0.0..=1.0).contains(&p) {
                return Err(ImpairError(format!(
                    "{name} = {p} is not a probability in 0..=1"
                )));
            }
        }
        if self.rate_bps == Some(0) {
            return Err(ImpairError("rate must be above 0 bit/s".into()));
        }
        Ok(())
    }

    /// Whether this configuration changes nothing.
    pub fn is_perfect(&self) -> bool {
        *self
            == ImpairConfig {
                seed: self.seed,
                ..ImpairConfig::default()
            }
    }
}

fn parse_prob(key: &str, v: &str) -> Result<f64, ImpairError> {
    let bad = || {
        ImpairError(format!(
            "{key}: {v:?} is not a probability (e.g. 5% or 0.05)"
        ))
    };
    let p = match v.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => v.trim().parse::<f64>().map_err(|_| bad())?,
    };
    if !(0.0..=1.0).contains(&p) || p.is_nan() {
        return Err(ImpairError(format!("{key}: {v} is outside 0%..=100%")));
    }
    Ok(p)
}

fn parse_duration(key: &str, v: &str) -> Result<Duration, ImpairError> {
    let v = v.trim();
    let bad = || {
        ImpairError(format!(
            "{key}: {v:?} is not a duration (e.g. 20ms, 500us, 1s)"
        ))
    };
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    if !(n >= 0.0 && n.is_finite()) {
        return Err(bad());
    }
    let secs = match unit {
        "us" | "µs" => n / 1e6,
        "ms" | "" => n / 1e3,
        "s" => n,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse_scaled(key: &str, v: &str, units: &[(&str, f64)]) -> Result<f64, ImpairError> {
    let v = v.trim().to_ascii_lowercase();
    let bad = || ImpairError(format!("{key}: {v:?} is not a valid amount"));
    let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let scale = units
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, s)| *s)
        .ok_or_else(bad)?;
    if !(n >= 0.0 && n.is_finite()) {
        return Err(bad());
    }
    Ok(n * scale)
}

impl FromStr for ImpairConfig {
    type Err = ImpairError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut cfg = ImpairConfig::default();
        let spec = spec.trim();
        if spec.is_empty() || spec.eq_ignore_ascii_case("none") {
            return Ok(cfg);
        }
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, v) = item
                .split_once('=')
                .ok_or_else(|| ImpairError(format!("{item:?}: expected key=value")))?;
            let key = key.trim();
            match key {
                "loss" => cfg.loss = parse_prob(key, v)?,
                "burst" => {
                    let parts: Vec<&str> = v.split('/').collect();
                    let (gb, bg, lg, lb) = match parts.as_slice() {
                        [gb, bg] => (*gb, *bg, "0", "1"),
                        [gb, bg, lg, lb] => (*gb, *bg, *lg, *lb),
                        _ => {
                            return Err(ImpairError(format!(
                                "burst: {v:?} must be P_GB/P_BG or P_GB/P_BG/LOSS_GOOD/LOSS_BAD"
                            )))
                        }
                    };
                    cfg.burst = Some(GilbertElliott {
                        p_good_to_bad: parse_prob("burst P_GB", gb)?,
                        p_bad_to_good: parse_prob("burst P_BG", bg)?,
                        loss_in_good: parse_prob("burst LOSS_GOOD", lg)?,
                        loss_in_bad: parse_prob("burst LOSS_BAD", lb)?,
                    });
                }
                "reorder" => {
                    let (p, d) = v.split_once('@').unwrap_or((v, "5ms"));
                    cfg.reorder = parse_prob(key, p)?;
                    cfg.reorder_delay = parse_duration(key, d)?;
                }
                "dup" | "duplicate" => cfg.duplicate = parse_prob(key, v)?,
                "delay" => cfg.delay = parse_duration(key, v)?,
                "jitter" => cfg.jitter = parse_duration(key, v)?,
                "rate" => {
                    let units = [
                        ("", 1.0),
                        ("bit", 1.0),
                        ("bps", 1.0),
                        ("k", 1e3),
                        ("kbit", 1e3),
                        ("kbps", 1e3),
                        ("m", 1e6),
                        ("mbit", 1e6),
                        ("mbps", 1e6),
                        ("g", 1e9),
                        ("gbit", 1e9),
                        ("gbps", 1e9),
                    ];
                    let bps = parse_scaled(key, v, &units)?;
                    if bps < 1.0 {
                        return Err(ImpairError(format!("rate: {v} is below 1 bit/s")));
                    }
                    cfg.rate_bps = Some(bps as u64);
                }
                "queue" => {
                    let units = [("", 1.0), ("b", 1.0), ("kb", 1024.0), ("k", 1024.0), ("mb", 1048576.0), ("m", 1048576.0)];
                    cfg.queue_limit = parse_scaled(key, v, &units)? as usize;
                }
                "blackout" => {
                    let bad = || ImpairError(format!("blackout: {v:?} must be START+COUNT, e.g. 300+40"));
                    let (a, b) = v.split_once('+').ok_or_else(bad)?;
                    let start = a.trim().parse().map_err(|_| bad())?;
                    let count = b.trim().parse().map_err(|_| bad())?;
                    cfg.blackout = Some((start, count));
                }
                "seed" => {
                    cfg.seed = v
                        .trim()
                        .parse()
                        .map_err(|_| ImpairError(format!("seed: {v:?} is not an unsigned integer")))?
                }
                other => {
                    return Err(ImpairError(format!(
                        "unknown key {other:?} (known: loss, burst, reorder, dup, delay, jitter, rate, queue, blackout, seed)"
                    )))
                }
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Counters of an [`Impairment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImpairStats {
    /// Packets pushed in.
    pub pushed: u64,
    /// Packets handed out (duplicates included).
    pub delivered: u64,
    /// Dropped by random loss.
    pub dropped_random: u64,
    /// Dropped by the burst model.
    pub dropped_burst: u64,
    /// Tail-dropped at the bottleneck queue.
    pub dropped_queue: u64,
    /// Dropped by the blackout window.
    pub dropped_blackout: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Packets held back to be overtaken.
    pub reordered: u64,
    /// Bytes pushed in.
    pub bytes_in: u64,
    /// Bytes handed out.
    pub bytes_out: u64,
}

/// SplitMix64: small, fast, and plenty for simulating a network (not for cryptography).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// The impairment model. See the module documentation for what happens to each packet.
#[derive(Debug)]
pub struct Impairment {
    cfg: ImpairConfig,
    rng: Rng,
    bad_state: bool,
    /// When the bottleneck finishes sending what it holds.
    link_free_at: Option<Instant>,
    /// Delivery time of the last packet not held back (keeps jitter from reordering).
    last_delivery: Option<Instant>,
    /// Packets in flight, earliest delivery first (ties in push order).
    heap: BinaryHeap<Reverse<(Instant, u64, Packet)>>,
    next_id: u64,
    stats: ImpairStats,
}

/// A packet in flight; compared only by the heap key before it.
#[derive(Debug)]
struct Packet(Vec<u8>);

impl PartialEq for Packet {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Packet {}
impl PartialOrd for Packet {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Packet {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Impairment {
    /// A model with the given configuration (assumed valid; see [`ImpairConfig::validate`]).
    pub fn new(cfg: ImpairConfig) -> Self {
        Impairment {
            rng: Rng(cfg.seed ^ 0x005E_ED0F_1A7E),
            cfg,
            bad_state: false,
            link_free_at: None,
            last_delivery: None,
            heap: BinaryHeap::new(),
            next_id: 0,
            stats: ImpairStats::default(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ImpairConfig {
        &self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> ImpairStats {
        self.stats
    }

    /// Packets in flight.
    pub fn in_flight(&self) -> usize {
        self.heap.len()
    }

    /// Bytes waiting at the bottleneck at `now` (the queue a rate cap builds).
    fn queued_bytes(&self, now: Instant) -> usize {
        match (self.link_free_at, self.cfg.rate_bps) {
            (Some(free), Some(bps)) if free > now => {
                ((free - now).as_secs_f64() * bps as f64 / 8.0) as usize
            }
            _ => 0,
        }
    }

    /// A packet enters the network at `now`.
    pub fn push(&mut self, now: Instant, packet: Vec<u8>) {
        let len = packet.len();
        let number = self.stats.pushed;
        self.stats.pushed += 1;
        self.stats.bytes_in += len as u64;
        if self
            .cfg
            .blackout
            .is_some_and(|(start, count)| number >= start && number - start < count)
        {
            self.stats.dropped_blackout += 1;
            return;
        }

        // Bottleneck: serialise behind what is queued, tail-drop past the limit.
        let mut depart = now;
        if let Some(bps) = self.cfg.rate_bps {
            if self.cfg.queue_limit > 0 && self.queued_bytes(now) + len > self.cfg.queue_limit {
                self.stats.dropped_queue += 1;
                return;
            }
            let start = self.link_free_at.map_or(now, |t| t.max(now));
            depart = start + Duration::from_secs_f64(len as f64 * 8.0 / bps as f64);
            self.link_free_at = Some(depart);
        }

        // Burst model state step, then the loss draws (always both, to keep the random
        // sequence independent of outcomes).
        let mut burst_lost = false;
        if let Some(ge) = self.cfg.burst {
            let flip = if self.bad_state {
                ge.p_bad_to_good
            } else {
                ge.p_good_to_bad
            };
            if self.rng.chance(flip) {
                self.bad_state = !self.bad_state;
            }
            let p = if self.bad_state {
                ge.loss_in_bad
            } else {
                ge.loss_in_good
            };
            burst_lost = self.rng.chance(p);
        }
        let random_lost = self.rng.chance(self.cfg.loss);
        if random_lost {
            self.stats.dropped_random += 1;
            return;
        }
        if burst_lost {
            self.stats.dropped_burst += 1;
            return;
        }

        let jitter = if self.cfg.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.cfg.jitter.mul_f64(self.rng.unit())
        };
        let mut at = depart + self.cfg.delay + jitter;
        if let Some(last) = self.last_delivery {
            at = at.max(last);
        }
        let held = self.rng.chance(self.cfg.reorder);
        let dup = self.rng.chance(self.cfg.duplicate);
        if held {
            self.stats.reordered += 1;
            at += self.cfg.reorder_delay;
        } else {
            self.last_delivery = Some(at);
        }
        let copy = dup.then(|| packet.clone());
        self.enqueue(at, copy, packet);
    }

    fn enqueue(&mut self, at: Instant, copy: Option<Vec<u8>>, packet: Vec<u8>) {
        self.heap.push(Reverse((at, self.next_id, Packet(packet))));
        self.next_id += 1;
        if let Some(c) = copy {
            self.stats.duplicated += 1;
            self.heap.push(Reverse((at, self.next_id, Packet(c))));
            self.next_id += 1;
        }
    }

    /// The next packet due at or before `now`, in delivery order.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<u8>> {
        let Reverse((at, _, _)) = self.heap.peek()?;
        if *at > now {
            return None;
        }
        let Reverse((_, _, Packet(p))) = self.heap.pop()?;
        self.stats.delivered += 1;
        self.stats.bytes_out += p.len() as u64;
        Some(p)
    }

    /// When the next packet is due, if any is in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_all(m: &mut Impairment) -> Vec<(Instant, Vec<u8>)> {
        let mut out = vec![];
        while let Some(t) = m.next_deadline() {
            out.push((t, m.poll(t).unwrap()));
        }
        out
    }

    fn pkt(i: u32) -> Vec<u8> {
        i.to_le_bytes().to_vec()
    }

    #[test]
    fn perfect_network_delivers_in_order_after_the_delay() {
        let t0 = Instant::now();
        let mut m = Impairment::new(ImpairConfig {
            delay: Duration::from_millis(5),
            ..Default::default()
        });
        for i in 0..100 {
            m.push(t0 + Duration::from_micros(i as u64), pkt(i));
        }
        assert_eq!(m.poll(t0 + Duration::from_millis(4)), None);
        let out = drain_all(&mut m);
        assert_eq!(out.len(), 100);
        for (i, (t, p)) in out.iter().enumerate() {
            assert_eq!(*p, pkt(i as u32));
            assert_eq!(
                *t,
                t0 + Duration::from_micros(i as u64) + Duration::from_millis(5)
            );
        }
    }

    #[test]
    fn random_loss_rate_matches() {
        let t0 = Instant::now();
        let mut m = Impairment::new(ImpairConfig {
            loss: 0.1,
            seed: 3,
            ..Default::default()
        });
        for i in 0..100_000 {
            m.push(t0, pkt(i));
        }
        let lost = m.stats().dropped_random as f64 / 100_000.0;
        assert!((lost - 0.1).abs() < 0.01, "lost {lost}");
        assert_eq!(
            drain_all(&mut m).len() as u64,
            100_000 - m.stats().dropped_random
        );
    }

    #[test]
    fn gilbert_elliott_bursts_have_the_configured_shape() {
        let ge = GilbertElliott {
            p_good_to_bad: 0.01,
            p_bad_to_good: 0.25,
            loss_in_good: 0.0,
            loss_in_bad: 1.0,
        };
        let t0 = Instant::now();
        let mut m = Impairment::new(ImpairConfig {
            burst: Some(ge),
            seed: 11,
            ..Default::default()
        });
        let n = 200_000u32;
        for i in 0..n {
            m.push(t0, pkt(i));
        }
        let got: Vec<u32> = drain_all(&mut m)
            .iter()
            .map(|(_, p)| u32::from_le_bytes(p[..4].try_into().unwrap()))
            .collect();
        let mut delivered = vec![false; n as usize];
        for i in got {
            delivered[i as usize] = true;
        }
        let lost = delivered.iter().filter(|d| !**d).count() as f64 / n as f64;
        assert!(
            (lost - ge.mean_loss()).abs() < 0.01,
            "loss {lost} vs {}",
            ge.mean_loss()
        );
        let mut runs = vec![];
        let mut run = 0;
        for d in &delivered {
            if !d {
                run += 1;
            } else if run > 0 {
                runs.push(run);
                run = 0;
            }
        }
        let mean = runs.iter().sum::<u32>() as f64 / runs.len() as f64;
        assert!((mean - 4.0).abs() < 0.4, "mean burst {mean}");
    }

    #[test]
    fn duplication_and_reordering_happen() {
        let t0 = Instant::now();
        let cfg = ImpairConfig {
            duplicate: 0.1,
            reorder: 0.1,
            reorder_delay: Duration::from_millis(2),
            seed: 5,
            ..Default::default()
        };
        let mut m = Impairment::new(cfg);
        for i in 0..1000 {
            m.push(t0 + Duration::from_micros(100 * i as u64), pkt(i));
        }
        let out: Vec<u32> = drain_all(&mut m)
            .iter()
            .map(|(_, p)| u32::from_le_bytes(p[..4].try_into().unwrap()))
            .collect();
        let s = m.stats();
        assert!(s.duplicated > 50 && s.reordered > 50, "{s:?}");
        assert_eq!(out.len() as u64, 1000 + s.duplicated);
        let inversions = out.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(inversions > 50, "{inversions}");
    }

    #[test]
    fn jitter_alone_never_reorders() {
        let t0 = Instant::now();
        let cfg = ImpairConfig {
            jitter: Duration::from_millis(10),
            seed: 9,
            ..Default::default()
        };
        let mut m = Impairment::new(cfg);
        for i in 0..1000 {
            m.push(t0 + Duration::from_micros(50 * i as u64), pkt(i));
        }
        let out: Vec<u32> = drain_all(&mut m)
            .iter()
            .map(|(_, p)| u32::from_le_bytes(p[..4].try_into().unwrap()))
            .collect();
        assert_eq!(out, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn rate_cap_spaces_packets_and_queue_tail_drops() {
        let t0 = Instant::now();
        // 1000-byte packets at 8 Mbit/s: 1 ms each.
        let cfg = ImpairConfig {
            rate_bps: Some(8_000_000),
            queue_limit: 5_000,
            ..Default::default()
        };
        let mut m = Impairment::new(cfg);
        for _ in 0..20 {
            m.push(t0, vec![0; 1000]);
        }
        let out = drain_all(&mut m);
        assert_eq!(m.stats().dropped_queue, 15);
        assert_eq!(out.len(), 5);
        for (k, (t, _)) in out.iter().enumerate() {
            assert_eq!(*t, t0 + Duration::from_millis(k as u64 + 1));
        }
    }

    #[test]
    fn blackout_drops_exactly_its_window() {
        let t0 = Instant::now();
        let mut m = Impairment::new("blackout=10+5".parse().unwrap());
        for i in 0..30 {
            m.push(t0, pkt(i));
        }
        let got: Vec<u32> = drain_all(&mut m)
            .iter()
            .map(|(_, p)| u32::from_le_bytes(p[..4].try_into().unwrap()))
            .collect();
        let want: Vec<u32> = (0..10).chain(15..30).collect();
        assert_eq!(got, want);
        assert_eq!(m.stats().dropped_blackout, 5);
        assert!("blackout=10".parse::<ImpairConfig>().is_err());
    }

    #[test]
    fn same_seed_same_output() {
        let run = |seed| {
            let t0 = Instant::now();
            let cfg: ImpairConfig =
                format!("loss=10%,burst=2%/30%,reorder=5%@1ms,dup=3%,jitter=1ms,seed={seed}")
                    .parse()
                    .unwrap();
            let mut m = Impairment::new(cfg);
            for i in 0..2000 {
                m.push(t0 + Duration::from_micros(20 * i as u64), pkt(i));
            }
            drain_all(&mut m)
                .into_iter()
                .map(|(t, p)| (t - t0, p))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn spec_strings_parse_and_errors_name_the_problem() {
        let cfg: ImpairConfig = "loss=10%,burst=2%/30%,reorder=1%@5ms,dup=0.5%,delay=20ms,jitter=5ms,rate=20mbit,queue=256kb,seed=7"
            .parse()
            .unwrap();
        assert_eq!(cfg.loss, 0.1);
        assert_eq!(cfg.burst.unwrap().p_bad_to_good, 0.3);
        assert_eq!(cfg.burst.unwrap().loss_in_bad, 1.0);
        assert_eq!(cfg.reorder_delay, Duration::from_millis(5));
        assert_eq!(cfg.delay, Duration::from_millis(20));
        assert_eq!(cfg.rate_bps, Some(20_000_000));
        assert_eq!(cfg.queue_limit, 256 * 1024);
        assert_eq!(cfg.seed, 7);
        assert!("none".parse::<ImpairConfig>().unwrap().is_perfect());
        assert!("".parse::<ImpairConfig>().unwrap().is_perfect());
        for (bad, needle) in [
            ("loss=120%", "loss"),
            ("loss=abc", "loss"),
            ("foo=1", "unknown key \"foo\""),
            ("burst=1%", "burst"),
            ("delay=3 parsecs", "delay"),
            ("rate=0", "rate"),
            ("loss", "key=value"),
        ] {
            let e = bad.parse::<ImpairConfig>().unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
