//! Shards → complete frames, in order, recovering losses with FEC.
//!
//! The reassembler is fed authenticated shards ([`Reassembler::handle_shard`]) and the passage of
//! time ([`Reassembler::handle_timeout`]); it produces [`Event`]s in frame order through
//! [`Reassembler::poll_event`]. Call order: feed input, then drain `poll_event` until `None`, then
//! ask `poll_timeout` when to call `handle_timeout` next.
//!
//! # Limits
//! Every length and count in a header is checked against [`ReassemblyLimits`] before a frame
//! buffer is allocated, so memory is bounded by `max_frames_in_flight × 2 × max_frame_bytes`
//! whatever arrives. Shards that break a limit, contradict their frame's geometry, repeat, or
//! arrive for a frame already delivered or given up are counted and dropped.
//!
//! # When a frame is given up
//! Frames are delivered strictly in order, so an incomplete frame holds back the ones after it
//! until it is declared lost, which happens when
//! - a frame at least `reorder_frames` newer is complete (its shards were sent later, so the
//!   missing ones are not merely late), or
//! - `max_frame_age` has passed since the first shard of it (or, if none arrived, of any newer
//!   frame) was seen, or
//! - a shard arrives for a frame `max_frames_in_flight` or more ahead.
//!
//! A lost frame is reported as [`Event::Lost`] so the caller can ask for a keyframe.

use crate::fec::{FecCode, FecEngine, ShardsMut};
use crate::wire::{Header, StreamKind};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Bounds on what the reassembler will hold. Checked before any allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Largest frame accepted.
    pub max_frame_bytes: usize,
    /// Largest shard payload accepted.
    pub max_shard_len: usize,
    /// Most shards (data + parity) in one frame.
    pub max_shards_per_frame: usize,
    /// Frames held at once (being assembled or waiting for an older frame).
    pub max_frames_in_flight: usize,
    /// A frame is lost once a frame this many indices newer is complete (≥ 1).
    pub reorder_frames: u32,
    /// A frame is lost this long after its first shard (or a newer frame's) was seen.
    pub max_frame_age: Duration,
}

impl Default for ReassemblyLimits {
    /// 8 MiB frames, 2048-byte shards, 16384 shards, 8 frames in flight, loss declared as soon
    /// as a newer frame completes or after 100 ms.
    fn default() -> Self {
        ReassemblyLimits {
            max_frame_bytes: 8 << 20,
            max_shard_len: 2048,
            max_shards_per_frame: 16_384,
            max_frames_in_flight: 8,
            reorder_frames: 1,
            max_frame_age: Duration::from_millis(100),
        }
    }
}

/// A complete frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Frame index.
    pub index: u32,
    /// Stream kind.
    pub stream: StreamKind,
    /// Whether the sender marked it as a keyframe.
    pub keyframe: bool,
    /// Sender's capture timestamp (µs since the session epoch).
    pub timestamp_us: u64,
    /// The frame bytes. Hand the vector back with [`Reassembler::recycle`] to reuse it.
    pub data: Vec<u8>,
    /// FEC code of the block.
    pub fec: FecCode,
    /// Data shards of the block.
    pub data_shards: usize,
    /// Parity shards of the block.
    pub parity_shards: usize,
    /// Shards received (data + parity) when the frame completed.
    pub shards_received: usize,
    /// Data shards rebuilt by FEC (0 = arrived whole).
    pub recovered: usize,
    /// When the first shard of the frame arrived.
    pub first_seen: Instant,
    /// When the frame became complete.
    pub completed: Instant,
}

/// Output of the reassembler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The next frame in order.
    Frame(Frame),
    /// `count` consecutive frames starting at `first` will never be delivered.
    Lost {
        /// First lost frame index.
        first: u32,
        /// Number of consecutive lost frames.
        count: u32,
    },
}

/// Running counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Shards stored.
    pub shards_accepted: u64,
    /// Shards already held.
    pub shards_duplicate: u64,
    /// Shards for frames already given up as lost (or too old to tell).
    pub shards_late: u64,
    /// Shards for frames already complete or delivered (usually parity not needed).
    pub shards_redundant: u64,
    /// Shards breaking a limit or contradicting their frame's geometry.
    pub shards_rejected: u64,
    /// Frames delivered.
    pub frames_delivered: u64,
    /// Delivered frames that needed FEC.
    pub frames_recovered: u64,
    /// Data shards rebuilt by FEC.
    pub shards_recovered: u64,
    /// Frames declared lost.
    pub frames_lost: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Geometry {
    stream: StreamKind,
    keyframe: bool,
    fec: FecCode,
    frame_len: usize,
    timestamp_us: u64,
    data: usize,
    parity: usize,
    shard_len: usize,
}

impl Geometry {
    fn of(h: &Header) -> Self {
        Geometry {
            stream: h.stream,
            keyframe: h.flags.keyframe(),
            fec: h.fec,
            frame_len: h.frame_len as usize,
            timestamp_us: h.timestamp_us,
            data: h.data as usize,
            parity: h.parity as usize,
            shard_len: h.shard_len as usize,
        }
    }
    fn total(&self) -> usize {
        self.data + self.parity
    }
}

struct Slot {
    index: u32,
    geo: Geometry,
    buf: Vec<u8>,
    present: Vec<bool>,
    received: usize,
    data_received: usize,
    first_seen: Instant,
    /// `Some(recovered)` once complete.
    complete: Option<(usize, Instant)>,
}

/// Reassembles frames. See the module docs for the contract.
pub struct Reassembler {
    limits: ReassemblyLimits,
    fec: FecEngine,
    /// Next frame index to deliver; `None` until the first shard arrives.
    next: Option<u32>,
    slots: Vec<Slot>,
    pool: Vec<Vec<u8>>,
    events: VecDeque<Event>,
    stats: ReassemblyStats,
    /// Outcomes of the 64 frames before `next`: bit k set = frame `next - 1 - k` was delivered.
    history: u64,
}

impl Reassembler {
    /// A reassembler with the given limits (`reorder_frames` and `max_frames_in_flight` are
    /// raised to at least 1).
    pub fn new(mut limits: ReassemblyLimits) -> Self {
        limits.reorder_frames = limits.reorder_frames.max(1);
        limits.max_frames_in_flight = limits.max_frames_in_flight.max(1);
        Reassembler {
            limits,
            fec: FecEngine::new(),
            next: None,
            slots: Vec::new(),
            pool: Vec::new(),
            events: VecDeque::new(),
            stats: ReassemblyStats::default(),
            history: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &ReassemblyLimits {
        &self.limits
    }

    /// Counters so far.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Bytes of frame buffers currently held (in-flight frames plus the reuse pool). Bounded by
    /// `(2 × max_frames_in_flight) × 2 × max_frame_bytes`.
    pub fn held_bytes(&self) -> usize {
        let slots: usize = self
            .slots
            .iter()
            .map(|s| s.buf.capacity() + s.present.capacity())
            .sum();
        slots + self.pool.iter().map(Vec::capacity).sum::<usize>()
    }

    /// Frames currently held (being assembled or waiting for an older one).
    pub fn frames_in_flight(&self) -> usize {
        self.slots.len()
    }

    /// Index of the next frame to be delivered, once known.
    pub fn next_frame(&self) -> Option<u32> {
        self.next
    }

    /// Returns a delivered frame's buffer for reuse.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.pool.len() < self.limits.max_frames_in_flight {
            buf.clear();
            self.pool.push(buf);
        }
    }

    /// Next output, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Reassembler::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .map(|s| s.first_seen)
            .min()
            .map(|t| t + self.limits.max_frame_age)
    }

    /// Lets time pass: gives up frames that are too old.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    fn within_limits(&self, h: &Header) -> bool {
        let l = &self.limits;
        let total = h.total_shards();
        // `Header::decode` checked the geometry, but a header built by hand reaches here
        // too, and the shard index and counts below index the frame buffer.
        h.geometry_is_consistent()
            && (h.frame_len as usize) <= l.max_frame_bytes
            && (h.shard_len as usize) <= l.max_shard_len
            && total <= l.max_shards_per_frame
            && total.saturating_mul(h.shard_len as usize) <= l.max_frame_bytes.saturating_mul(2)
    }

    /// Feeds one authenticated shard. `shard` must be exactly `header.shard_len` bytes; anything
    /// else is counted as rejected.
    pub fn handle_shard(&mut self, now: Instant, header: &Header, shard: &[u8]) {
        if shard.len() != header.shard_len as usize || !self.within_limits(header) {
            self.stats.shards_rejected += 1;
            return;
        }
        let next = *self.next.get_or_insert(header.frame);
        let ahead = header.frame.wrapping_sub(next);
        if ahead > u32::MAX / 2 {
            let behind = next.wrapping_sub(header.frame);
            if behind <= 64 && self.history & (1 << (behind - 1)) != 0 {
                self.stats.shards_redundant += 1;
            } else {
                self.stats.shards_late += 1;
            }
            return;
        }
        let window = u32::try_from(self.limits.max_frames_in_flight).unwrap_or(u32::MAX);
        if ahead >= window {
            // Far ahead: give up everything that no longer fits in the window.
            self.skip_to(header.frame.wrapping_sub(window - 1));
        }

        let geo = Geometry::of(header);
        let pos = match self.slots.iter().position(|s| s.index == header.frame) {
            Some(p) => p,
            None => {
                let mut buf = self.pool.pop().unwrap_or_default();
                buf.resize(geo.total() * geo.shard_len, 0);
                self.slots.push(Slot {
                    index: header.frame,
                    geo,
                    buf,
                    present: vec![false; geo.total()],
                    received: 0,
                    data_received: 0,
                    first_seen: now,
                    complete: None,
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[pos];
        if slot.geo != geo {
            self.stats.shards_rejected += 1;
            return;
        }
        if slot.complete.is_some() {
            self.stats.shards_redundant += 1;
            return;
        }
        let k = header.shard as usize;
        if slot.present[k] {
            self.stats.shards_duplicate += 1;
            return;
        }
        let len = geo.shard_len;
        slot.buf[k * len..(k + 1) * len].copy_from_slice(shard);
        slot.present[k] = true;
        slot.received += 1;
        if k < geo.data {
            slot.data_received += 1;
        }
        self.stats.shards_accepted += 1;

        if slot.data_received == geo.data {
            slot.complete = Some((0, now));
        } else if slot.received >= geo.data {
            let missing = geo.data - slot.data_received;
            let mut shards = ShardsMut::contiguous(&mut slot.buf, len, geo.total())
                .expect("slot sized for its geometry");
            let rebuilt = self
                .fec
                .get(geo.fec)
                .map(|code| code.reconstruct(&mut shards, geo.data, geo.parity, &slot.present));
            match rebuilt {
                Some(Ok(_)) => {
                    slot.complete = Some((missing, now));
                    self.stats.shards_recovered += missing as u64;
                }
                // Cannot happen for a well-formed block; treat the frame as undecodable and
                // let the loss rules give it up.
                _ => self.stats.shards_rejected += 1,
            }
        }
        self.advance(now);
    }

    /// Delivers complete frames in order and gives up the ones the rules say are lost.
    fn advance(&mut self, now: Instant) {
        let Some(mut next) = self.next else { return };
        loop {
            let pos = self.slots.iter().position(|s| s.index == next);
            if let Some(p) = pos.filter(|&p| self.slots[p].complete.is_some()) {
                let slot = self.slots.swap_remove(p);
                self.deliver(slot);
            } else if self.is_lost(next, now) {
                if let Some(p) = pos {
                    let slot = self.slots.swap_remove(p);
                    self.recycle(slot.buf);
                }
                self.lose(next);
            } else {
                break;
            }
            next = next.wrapping_add(1);
            self.next = Some(next);
        }
    }

    fn is_lost(&self, index: u32, now: Instant) -> bool {
        let mut oldest: Option<Instant> = None;
        for s in &self.slots {
            let ahead = s.index.wrapping_sub(index);
            if ahead > u32::MAX / 2 {
                continue;
            }
            if s.complete.is_some() && ahead >= self.limits.reorder_frames {
                return true;
            }
            oldest = Some(oldest.map_or(s.first_seen, |o| o.min(s.first_seen)));
        }
        oldest.is_some_and(|t| now.saturating_duration_since(t) >= self.limits.max_frame_age)
    }

    /// Moves `next` to `target`, delivering complete frames and losing the rest on the way.
    fn skip_to(&mut self, target: u32) {
        let Some(mut next) = self.next else { return };
        while next != target {
            match self.slots.iter().position(|s| s.index == next) {
                Some(p) if self.slots[p].complete.is_some() => {
                    let slot = self.slots.swap_remove(p);
                    self.deliver(slot);
                }
                Some(p) => {
                    let slot = self.slots.swap_remove(p);
                    self.recycle(slot.buf);
                    self.lose(next);
                }
                None => {
                    // Nothing held below the target any more: lose the rest in one event.
                    if self
                        .slots
                        .iter()
                        .all(|s| s.index.wrapping_sub(next) >= target.wrapping_sub(next))
                    {
                        self.lose_range(next, target.wrapping_sub(next));
                        next = target;
                        break;
                    }
                    self.lose(next);
                }
            }
            next = next.wrapping_add(1);
        }
        self.next = Some(next);
    }

    fn deliver(&mut self, slot: Slot) {
        let (recovered, completed) = slot.complete.expect("only complete slots are delivered");
        let mut data = slot.buf;
        data.truncate(slot.geo.frame_len);
        self.stats.frames_delivered += 1;
        self.history = (self.history << 1) | 1;
        if recovered > 0 {
            self.stats.frames_recovered += 1;
        }
        self.events.push_back(Event::Frame(Frame {
            index: slot.index,
            stream: slot.geo.stream,
            keyframe: slot.geo.keyframe,
            timestamp_us: slot.geo.timestamp_us,
            data,
            fec: slot.geo.fec,
            data_shards: slot.geo.data,
            parity_shards: slot.geo.parity,
            shards_received: slot.received,
            recovered,
            first_seen: slot.first_seen,
            completed,
        }));
    }

    fn lose(&mut self, index: u32) {
        self.lose_range(index, 1);
    }

    fn lose_range(&mut self, first: u32, count: u32) {
        if count == 0 {
            return;
        }
        self.stats.frames_lost += count as u64;
        self.history = self.history.checked_shl(count).unwrap_or(0);
        if let Some(Event::Lost { first: f, count: c }) = self.events.back_mut() {
            // Runs merge while they fit a `u32`; a longer one (far jumps nobody drained in
            // between) continues in a new event.
            if let Some(merged) = c.checked_add(count).filter(|_| f.wrapping_add(*c) == first) {
                *c = merged;
                return;
            }
        }
        self.events.push_back(Event::Lost { first, count });
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary time origin
mod tests {
    use super::*;
    use crate::crypto::{dangerous_no_protection, Sealer};
    use crate::packetizer::{FrameMeta, PacketBatch, Packetizer, PacketizerConfig};
    use crate::wire::HEADER_LEN;

    /// Packetizes `frames` frames (no crypto) and returns each frame's datagrams.
    fn frames(n: usize, len: usize) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
        let mut p = Packetizer::new(PacketizerConfig::default());
        let mut s = Sealer::new(dangerous_no_protection());
        let mut out = PacketBatch::new();
        (0..n)
            .map(|i| {
                let frame: Vec<u8> = (0..len).map(|b| (b * 7 + i * 13) as u8).collect();
                p.packetize(
                    &frame,
                    FrameMeta {
                        timestamp_us: i as u64,
                        keyframe: i == 0,
                    },
                    &mut s,
                    &mut out,
                )
                .unwrap();
                (frame, out.iter().map(<[u8]>::to_vec).collect())
            })
            .collect()
    }

    fn feed(r: &mut Reassembler, now: Instant, d: &[u8]) {
        let h = Header::decode(d).unwrap();
        r.handle_shard(now, &h, &d[HEADER_LEN..]);
    }

    fn drain(r: &mut Reassembler) -> Vec<Event> {
        std::iter::from_fn(|| r.poll_event()).collect()
    }

    #[test]
    fn whole_frames_come_out_in_order() {
        let t = Instant::now();
        let fs = frames(3, 5000);
        let mut r = Reassembler::new(ReassemblyLimits::default());
        for (_, ds) in &fs {
            for d in ds {
                feed(&mut r, t, d);
            }
        }
        let ev = drain(&mut r);
        assert_eq!(ev.len(), 3);
        for (i, e) in ev.iter().enumerate() {
            let Event::Frame(f) = e else { panic!("{e:?}") };
            assert_eq!((f.index, &f.data, f.recovered), (i as u32, &fs[i].0, 0));
        }
        assert_eq!(
            r.stats().shards_redundant,
            3 * 2,
            "parity after completion is redundant"
        );
    }

    #[test]
    fn fec_recovers_lost_data_shards() {
        let t = Instant::now();
        let fs = frames(1, 14_000); // 10 data + 2 parity
        let mut r = Reassembler::new(ReassemblyLimits::default());
        for d in fs[0].1.iter().skip(2) {
            feed(&mut r, t, d);
        }
        let ev = drain(&mut r);
        let [Event::Frame(f)] = &ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!((&f.data, f.recovered), (&fs[0].0, 2));
        assert_eq!(r.stats().frames_recovered, 1);
    }

    #[test]
    fn an_incomplete_frame_is_lost_when_a_newer_one_completes() {
        let t = Instant::now();
        let fs = frames(2, 14_000);
        let mut r = Reassembler::new(ReassemblyLimits::default());
        for d in fs[0].1.iter().skip(3) {
            feed(&mut r, t, d);
        }
        assert!(drain(&mut r).is_empty());
        for d in &fs[1].1 {
            feed(&mut r, t, d);
        }
        let ev = drain(&mut r);
        assert_eq!(ev[0], Event::Lost { first: 0, count: 1 });
        assert!(matches!(&ev[1], Event::Frame(f) if f.index == 1));
    }

    #[test]
    fn an_incomplete_frame_times_out() {
        let t = Instant::now();
        let fs = frames(1, 14_000);
        let mut r = Reassembler::new(ReassemblyLimits::default());
        feed(&mut r, t, &fs[0].1[0]);
        let deadline = r.poll_timeout().unwrap();
        assert_eq!(deadline, t + Duration::from_millis(100));
        r.handle_timeout(deadline - Duration::from_millis(1));
        assert!(drain(&mut r).is_empty());
        r.handle_timeout(deadline);
        assert_eq!(drain(&mut r), vec![Event::Lost { first: 0, count: 1 }]);
        assert_eq!(r.poll_timeout(), None);
        feed(&mut r, t, &fs[0].1[1]);
        assert_eq!(r.stats().shards_late, 1);
    }

    #[test]
    fn a_far_jump_skips_with_one_loss_event() {
        let t = Instant::now();
        let fs = frames(20, 100);
        let mut r = Reassembler::new(ReassemblyLimits::default());
        for d in &fs[0].1 {
            feed(&mut r, t, d);
        }
        for d in &fs[19].1 {
            feed(&mut r, t, d);
        }
        let ev = drain(&mut r);
        assert!(matches!(&ev[0], Event::Frame(f) if f.index == 0));
        assert_eq!(
            ev[1],
            Event::Lost {
                first: 1,
                count: 18
            }
        );
        assert!(matches!(&ev[2], Event::Frame(f) if f.index == 19));
    }

    #[test]
    fn limits_reject_before_allocating() {
        let t = Instant::now();
        let fs = frames(1, 14_000);
        let mut r = Reassembler::new(ReassemblyLimits {
            max_frame_bytes: 10_000,
            ..Default::default()
        });
        for d in &fs[0].1 {
            feed(&mut r, t, d);
        }
        assert_eq!(r.stats().shards_rejected, fs[0].1.len() as u64);
        assert!(r.slots.is_empty() && r.next_frame().is_none());
    }

    /// The first shard of a two-shard frame `index` (the frame stays incomplete).
    fn half_frame(index: u32) -> (Header, Vec<u8>) {
        let h = Header {
            stream: StreamKind::VIDEO,
            flags: crate::wire::Flags::default(),
            fec: FecCode::NONE,
            seq: u64::from(index),
            frame: index,
            frame_len: 8,
            timestamp_us: 0,
            shard: 0,
            data: 2,
            parity: 0,
            shard_len: 4,
        };
        (h, vec![7; 4])
    }

    #[test]
    fn far_jumps_without_draining_never_overflow_the_loss_count() {
        let t = Instant::now();
        let mut r = Reassembler::new(ReassemblyLimits::default());
        // Each frame is nearly half the index space past the last and never completes, so
        // the frames given up on the way add to one run of losses: after three jumps it is
        // longer than `u32::MAX` frames, before anyone drains events.
        let mut frame = 0u32;
        for _ in 0..4 {
            let (h, body) = half_frame(frame);
            r.handle_shard(t, &h, &body);
            frame = frame.wrapping_add(u32::MAX / 2 - 8);
        }
        let lost: Vec<u64> = drain(&mut r)
            .iter()
            .map(|e| match e {
                Event::Lost { count, .. } => u64::from(*count),
                Event::Frame(f) => panic!("frame {} is incomplete", f.index),
            })
            .collect();
        assert!(lost.len() >= 2, "{lost:?}");
        assert_eq!(lost.iter().sum::<u64>(), r.stats().frames_lost);
        assert!(r.stats().frames_lost > u64::from(u32::MAX));
    }

    #[test]
    fn a_hand_built_header_with_the_shard_index_past_the_block_is_rejected() {
        let t = Instant::now();
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let (good, body) = half_frame(3);
        for bad in [
            Header { shard: 2, ..good },
            Header {
                shard: u16::MAX,
                ..good
            },
            Header { data: 1, ..good },
            Header {
                frame_len: 9,
                ..good
            },
        ] {
            r.handle_shard(t, &bad, &body);
        }
        assert_eq!(r.stats().shards_rejected, 4);
        assert_eq!(r.frames_in_flight(), 0);
        r.handle_shard(t, &good, &body);
        assert_eq!(r.stats().shards_accepted, 1);
    }
}
