//! wlr-screencopy capture of one Wayland output.
//!
//! The source opens a connection of its own to the compositor and runs its queue on a thread
//! of its own (`screencopy`). That thread keeps one capture in flight: it asks for the output's
//! next frame (`capture_output`, cursor composited), learns the buffer the compositor wants
//! (`buffer`, `linux_dmabuf`, `buffer_done`), and submits a free buffer with
//! `copy_with_damage`, so the compositor answers only when something on the output changed: an
//! idle desktop produces no frames. (The first frame into newly made buffers is a plain `copy`,
//! answered at once: a new source, or one whose output changed mode, starts with a whole
//! picture.) On `ready` it hands the buffer to the consumer over a
//! channel; [`FrameSource::next_frame`] returns that buffer's pixels in place (no copy) and
//! gives it back on the next call, which is when the thread may submit it again.
//!
//! Buffers: [`BUFFERS`] shared-memory buffers (see [`shm`]), created when the first frame says
//! what it needs and reused; they are made again only when the compositor asks for a different
//! size, stride or format (the output changed mode). XRGB8888 and ARGB8888 are read as BGRx
//! (alpha ignored); other formats are refused. A y-inverted frame is flipped into a scratch
//! buffer.
//!
//! dmabuf: the compositor may offer dmabuf buffers (screencopy v3). Importing them needs a GPU
//! path that this build does not have, so the source records the offer and uses shm; the
//! buffer kind is chosen in one place ([`BufferKind`]) for a dmabuf path to join.
//!
//! Failures: the compositor going away (socket closed, protocol error) or the output's global
//! being removed ends the thread, and `next_frame` says [`CaptureError::Disconnected`]. A frame
//! the compositor reports as failed is tried again, up to [`MAX_FAILURES`] in a row.

#[allow(unsafe_code)]
mod shm;

use super::{CaptureBackend, CaptureError, Captured, FrameSource, SourceOptions};
use crate::vdisplay::CaptureTarget;
use punktfunk_core::control::Mode;
use punktfunk_media::{FrameRef, PixelFormat};
use rustix::event::{PollFd, PollFlags};
use smithay_client_toolkit::reexports::client::{
    backend::WaylandError,
    globals::{registry_queue_init, GlobalListContents},
    protocol::{
        wl_buffer::{self, WlBuffer},
        wl_output::{self, WlOutput},
        wl_registry::{self, WlRegistry},
        wl_shm::{self, WlShm},
        wl_shm_pool::{self, WlShmPool},
    },
    Connection, Dispatch, EventQueue, Proxy, QueueHandle, WEnum,
};
use smithay_client_toolkit::reexports::protocols::xdg::xdg_output::zv1::client::{
    zxdg_output_manager_v1::{self, ZxdgOutputManagerV1},
    zxdg_output_v1::{self, ZxdgOutputV1},
};
use smithay_client_toolkit::reexports::protocols_wlr::screencopy::v1::client::{
    zwlr_screencopy_frame_v1::{self, ZwlrScreencopyFrameV1},
    zwlr_screencopy_manager_v1::{self, ZwlrScreencopyManagerV1},
};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Shared-memory buffers per source: one the consumer holds, one being copied into, one ready
/// and waiting, so the compositor never waits for the consumer.
const BUFFERS: usize = 3;

/// Failed frames in a row before the source gives up.
const MAX_FAILURES: u32 = 5;

/// A presentation time further from now than this is taken to be on another clock.
const MAX_TIMESTAMP_AGE: Duration = Duration::from_secs(1);

/// Opens a screencopy source for `opts.target` on the compositor `opts.env` names.
pub fn open(opts: &SourceOptions) -> Result<Box<dyn FrameSource>, CaptureError> {
    Ok(Box::new(ScreencopySource::open(opts)?))
}

/// A frame source reading one Wayland output through wlr-screencopy.
pub struct ScreencopySource {
    frames: Receiver<ToSource>,
    commands: Sender<ToThread>,
    /// Written to wake the thread after a command.
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
    /// The buffer handed out by the last `next_frame`, given back on the next call.
    held: Option<ReadyFrame>,
    /// An error that arrived behind a frame, reported on the next call.
    pending_error: Option<CaptureError>,
    /// Once the source has failed, every call says so.
    failed: Option<CaptureError>,
    /// Rows of a y-inverted frame, in order.
    scratch: Vec<u8>,
    flip_logged: bool,
}

/// A buffer the compositor has filled.
struct ReadyFrame {
    generation: u64,
    slot: usize,
    map: Arc<shm::Mapping>,
    width: u32,
    height: u32,
    stride: usize,
    y_invert: bool,
    captured_at: Instant,
    /// When `ready` reached the thread.
    ready_at: Instant,
}

enum ToSource {
    Frame(ReadyFrame),
    Failed(CaptureError),
}

enum ToThread {
    /// The consumer is done with this buffer.
    Release {
        generation: u64,
        slot: usize,
    },
    Stop,
}

impl ScreencopySource {
    /// Connects, finds the output and starts the capture thread.
    pub fn open(opts: &SourceOptions) -> Result<ScreencopySource, CaptureError> {
        let conn = crate::wayland::connect(&opts.env).map_err(CaptureError::Backend)?;
        let (mut queue, state) = discover(&conn, &opts.target)?;
        let (frames_tx, frames) = mpsc::channel();
        let (commands, commands_rx) = mpsc::channel();
        let (wake, wake_rx) =
            UnixStream::pair().map_err(|e| CaptureError::Backend(format!("wake socket: {e}")))?;
        for s in [&wake, &wake_rx] {
            s.set_nonblocking(true)
                .map_err(|e| CaptureError::Backend(format!("wake socket: {e}")))?;
        }
        let mut state = state;
        state.to_source = Some(frames_tx);
        // The first frame's buffer offers arrive in one roundtrip: refuse an unusable format
        // here, where the caller can still choose another backend.
        let qh = queue.handle();
        state.start_capture(&qh);
        queue
            .roundtrip(&mut state)
            .map_err(|e| CaptureError::Backend(format!("Wayland roundtrip: {e}")))?;
        state.check_first_offers()?;
        let thread = std::thread::Builder::new()
            .name("screencopy".into())
            .spawn(move || run(conn, queue, state, commands_rx, wake_rx))
            .map_err(|e| CaptureError::Backend(format!("starting the screencopy thread: {e}")))?;
        Ok(ScreencopySource {
            frames,
            commands,
            wake,
            thread: Some(thread),
            held: None,
            pending_error: None,
            failed: None,
            scratch: Vec::new(),
            flip_logged: false,
        })
    }

    fn give_back(&mut self, frame: ReadyFrame) {
        let _ = self.commands.send(ToThread::Release {
            generation: frame.generation,
            slot: frame.slot,
        });
        self.wake_thread();
    }

    fn wake_thread(&self) {
        // Non-blocking: a full socket already has a wake-up pending.
        let _ = (&self.wake).write(&[1]);
    }

    fn fail(&mut self, e: CaptureError) -> CaptureError {
        self.failed = Some(e.clone());
        e
    }
}

impl FrameSource for ScreencopySource {
    fn backend(&self) -> CaptureBackend {
        CaptureBackend::Screencopy
    }

    fn next_frame(&mut self, deadline: Instant) -> Result<Option<Captured<'_>>, CaptureError> {
        if let Some(old) = self.held.take() {
            self.give_back(old);
        }
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if let Some(e) = self.pending_error.take() {
            return Err(self.fail(e));
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        let mut frame = match self.frames.recv_timeout(wait) {
            Ok(ToSource::Frame(f)) => f,
            Ok(ToSource::Failed(e)) => return Err(self.fail(e)),
            Err(RecvTimeoutError::Timeout) => return Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(self.fail(CaptureError::Disconnected))
            }
        };
        // A consumer that fell behind gets the newest picture; older ones go back at once.
        loop {
            match self.frames.try_recv() {
                Ok(ToSource::Frame(newer)) => {
                    let older = std::mem::replace(&mut frame, newer);
                    self.give_back(older);
                }
                Ok(ToSource::Failed(e)) => {
                    self.pending_error = Some(e);
                    break;
                }
                Err(_) => break,
            }
        }
        if frame.y_invert {
            if !self.flip_logged {
                self.flip_logged = true;
                tracing::info!("screencopy frames are y-inverted; flipping rows");
            }
            flip_rows(
                frame.map.bytes(),
                frame.stride,
                frame.height as usize,
                &mut self.scratch,
            );
        }
        let cost_us = frame.ready_at.elapsed().as_micros().min(u32::MAX as u128) as u32;
        let held = self.held.insert(frame);
        let data = if held.y_invert {
            &self.scratch[..]
        } else {
            held.map.bytes()
        };
        Ok(Some(Captured {
            frame: FrameRef {
                width: held.width,
                height: held.height,
                stride: held.stride,
                format: PixelFormat::Bgrx,
                data,
            },
            captured_at: held.captured_at,
            cost_us,
        }))
    }

    fn set_mode(&mut self, _mode: Mode) -> Result<(), CaptureError> {
        // The compositor says each frame's size in its `buffer` event; once the output is in the
        // new mode the buffers are made again at that size.
        Ok(())
    }
}

impl Drop for ScreencopySource {
    fn drop(&mut self) {
        let _ = self.commands.send(ToThread::Stop);
        self.wake_thread();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies `height` rows of `stride` bytes from `src` into `dst` in reverse order.
fn flip_rows(src: &[u8], stride: usize, height: usize, dst: &mut Vec<u8>) {
    dst.resize(stride * height, 0);
    for (row, out) in dst.chunks_exact_mut(stride).enumerate() {
        let from = (height - 1 - row) * stride;
        out.copy_from_slice(&src[from..from + stride]);
    }
}

/// The local time of a presentation stamped `tv_sec.tv_nsec` on CLOCK_MONOTONIC, given that
/// `now` and `mono_now` were read together; `now` when the stamp is in the future or too old
/// to be on that clock.
fn presented_at(tv_sec: u64, tv_nsec: u32, now: Instant, mono_now: (i64, i64)) -> Instant {
    let stamp = i128::from(tv_sec) * 1_000_000_000 + i128::from(tv_nsec);
    let mono = i128::from(mono_now.0) * 1_000_000_000 + i128::from(mono_now.1);
    let age = mono - stamp;
    if age < 0 || age > MAX_TIMESTAMP_AGE.as_nanos() as i128 {
        return now;
    }
    now.checked_sub(Duration::from_nanos(age as u64))
        .unwrap_or(now)
}

fn monotonic_now() -> (i64, i64) {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec, t.tv_nsec)
}

/// The kinds of buffer a frame can be copied into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BufferKind {
    /// Shared memory the CPU reads (`wl_shm`).
    Shm,
}

/// Chooses the buffer kind for a compositor that did or did not offer dmabuf, with the reason.
fn choose_kind(dmabuf_offered: bool) -> (BufferKind, &'static str) {
    if dmabuf_offered {
        (BufferKind::Shm, "dmabuf capture is not built; using shm")
    } else {
        (BufferKind::Shm, "compositor offered no dmabuf; using shm")
    }
}

/// One `buffer` event: a shm buffer the compositor can copy the frame into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ShmOffer {
    format: WEnum<wl_shm::Format>,
    width: u32,
    height: u32,
    stride: u32,
}

impl ShmOffer {
    fn readable(&self) -> bool {
        matches!(
            self.format,
            WEnum::Value(wl_shm::Format::Xrgb8888 | wl_shm::Format::Argb8888)
        )
    }

    fn len(&self) -> usize {
        self.stride as usize * self.height as usize
    }
}

fn format_name(f: WEnum<wl_shm::Format>) -> String {
    match f {
        WEnum::Value(v) => format!("{v:?}"),
        WEnum::Unknown(raw) => format!("{raw:#010x}"),
    }
}

/// Picks the first offer the source can read.
fn choose_offer(offers: &[ShmOffer]) -> Result<ShmOffer, CaptureError> {
    if let Some(o) = offers.iter().find(|o| o.readable()) {
        if o.width == 0
            || o.height == 0
            || (o.stride as usize) < o.width as usize * 4
            || o.len() > i32::MAX as usize
        {
            return Err(CaptureError::Backend(format!(
                "the compositor asked for an unusable buffer: {}x{} stride {}",
                o.width, o.height, o.stride
            )));
        }
        return Ok(*o);
    }
    if offers.is_empty() {
        return Err(CaptureError::Unsupported(
            "the compositor offered no shared-memory buffer for screencopy".into(),
        ));
    }
    let names: Vec<String> = offers.iter().map(|o| format_name(o.format)).collect();
    Err(CaptureError::Unsupported(format!(
        "screencopy offers {} buffers; only XRGB8888 and ARGB8888 are read",
        names.join(", ")
    )))
}

/// An output as the registry and xdg-output describe it.
struct OutputInfo {
    global: u32,
    output: WlOutput,
    name: Option<String>,
}

/// The frame being captured.
struct Capture {
    frame: ZwlrScreencopyFrameV1,
    offers: Vec<ShmOffer>,
    dmabuf_offered: bool,
    /// All buffer offers are in.
    offers_done: bool,
    /// The buffer submitted with `copy_with_damage`.
    slot: Option<usize>,
    y_invert: bool,
    /// The size of the mode the output took while this frame was in flight, if it did.
    new_mode: Option<(u32, u32)>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.frame.destroy();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotUse {
    Free,
    Copying,
    Handed,
}

struct Slot {
    buffer: WlBuffer,
    map: Arc<shm::Mapping>,
    state: SlotUse,
}

/// The buffers for one buffer geometry.
struct Pool {
    generation: u64,
    offer: ShmOffer,
    slots: Vec<Slot>,
}

impl Pool {
    fn new(
        shm: &WlShm,
        offer: ShmOffer,
        generation: u64,
        qh: &QueueHandle<State>,
    ) -> Result<Pool, CaptureError> {
        let WEnum::Value(format) = offer.format else {
            unreachable!("only readable offers are chosen")
        };
        let len = offer.len();
        let mut slots = Vec::with_capacity(BUFFERS);
        for _ in 0..BUFFERS {
            let (fd, map) = shm::create(len)
                .map_err(|e| CaptureError::Backend(format!("shared memory ({len} bytes): {e}")))?;
            let pool = shm.create_pool(fd.as_fd(), len as i32, qh, ());
            let buffer = pool.create_buffer(
                0,
                offer.width as i32,
                offer.height as i32,
                offer.stride as i32,
                format,
                qh,
                (),
            );
            // The buffer keeps the compositor's side of the memory; the pool and our copy of
            // the fd are no longer needed.
            pool.destroy();
            slots.push(Slot {
                buffer,
                map: Arc::new(map),
                state: SlotUse::Free,
            });
        }
        tracing::debug!(
            width = offer.width,
            height = offer.height,
            stride = offer.stride,
            format = %format_name(offer.format),
            "screencopy buffers made"
        );
        Ok(Pool {
            generation,
            offer,
            slots,
        })
    }

    fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(|s| s.state == SlotUse::Free)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // A buffer the consumer still reads keeps its mapping (an Arc); the compositor's side
        // goes now.
        for s in &self.slots {
            s.buffer.destroy();
        }
    }
}

/// The Wayland thread's state.
struct State {
    shm: WlShm,
    manager: ZwlrScreencopyManagerV1,
    outputs: Vec<OutputInfo>,
    /// The captured output's registry name.
    target: Option<u32>,
    kind: BufferKind,
    capture: Option<Capture>,
    pool: Option<Pool>,
    generation: u64,
    failures: u32,
    /// A failure found while dispatching, ending the thread.
    fatal: Option<CaptureError>,
    to_source: Option<Sender<ToSource>>,
}

/// Binds the globals, learns the outputs' names and picks the target.
fn discover(
    conn: &Connection,
    target: &CaptureTarget,
) -> Result<(EventQueue<State>, State), CaptureError> {
    let (globals, mut queue) = registry_queue_init::<State>(conn)
        .map_err(|e| CaptureError::Backend(format!("Wayland registry: {e}")))?;
    let qh = queue.handle();
    let manager: ZwlrScreencopyManagerV1 = globals.bind(&qh, 1..=3, ()).map_err(|_| {
        CaptureError::Unsupported("the compositor has no wlr-screencopy manager".into())
    })?;
    let shm: WlShm = globals
        .bind(&qh, 1..=1, ())
        .map_err(|_| CaptureError::Unsupported("the compositor has no wl_shm".into()))?;
    let xdg: Option<ZxdgOutputManagerV1> = globals.bind(&qh, 2..=3, ()).ok();
    let listed: Vec<(u32, u32)> = globals.contents().with_list(|list| {
        list.iter()
            .filter(|g| g.interface == WlOutput::interface().name)
            .map(|g| (g.name, g.version))
            .collect()
    });
    let mut outputs = Vec::new();
    let mut xdg_outputs = Vec::new();
    for (global, version) in listed {
        let output: WlOutput = globals.registry().bind(global, version.min(4), &qh, global);
        if let Some(m) = &xdg {
            xdg_outputs.push(m.get_xdg_output(&output, &qh, global));
        }
        outputs.push(OutputInfo {
            global,
            output,
            name: None,
        });
    }
    let mut state = State {
        shm,
        manager,
        outputs,
        target: None,
        kind: BufferKind::Shm,
        capture: None,
        pool: None,
        generation: 0,
        failures: 0,
        fatal: None,
        to_source: None,
    };
    queue
        .roundtrip(&mut state)
        .map_err(|e| CaptureError::Backend(format!("Wayland roundtrip: {e}")))?;
    for x in xdg_outputs {
        x.destroy();
    }
    if let Some(m) = xdg {
        m.destroy();
    }
    let chosen = match target {
        CaptureTarget::Desktop => state.outputs.first(),
        CaptureTarget::WaylandOutput(name) => state
            .outputs
            .iter()
            .find(|o| o.name.as_deref() == Some(name.as_str())),
    };
    let Some(chosen) = chosen else {
        let names: Vec<&str> = state
            .outputs
            .iter()
            .map(|o| o.name.as_deref().unwrap_or("(unnamed)"))
            .collect();
        return Err(CaptureError::Unsupported(match target {
            CaptureTarget::Desktop => "the compositor has no outputs".into(),
            CaptureTarget::WaylandOutput(name) => format!(
                "no output named {name}; the compositor has {}",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            ),
        }));
    };
    state.target = Some(chosen.global);
    Ok((queue, state))
}

impl State {
    fn target_output(&self) -> Option<&WlOutput> {
        let t = self.target?;
        self.outputs
            .iter()
            .find(|o| o.global == t)
            .map(|o| &o.output)
    }

    fn start_capture(&mut self, qh: &QueueHandle<State>) {
        let Some(output) = self.target_output() else {
            return;
        };
        let frame = self.manager.capture_output(1, output, qh, ());
        self.capture = Some(Capture {
            frame,
            offers: Vec::new(),
            dmabuf_offered: false,
            offers_done: false,
            slot: None,
            y_invert: false,
            new_mode: None,
        });
    }

    /// Logs the buffer choice and refuses an unreadable format, for the first frame.
    fn check_first_offers(&mut self) -> Result<(), CaptureError> {
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        let Some(cap) = self.capture.as_ref().filter(|c| c.offers_done) else {
            return Ok(());
        };
        let (kind, why) = choose_kind(cap.dmabuf_offered);
        self.kind = kind;
        tracing::info!("screencopy: {why}");
        choose_offer(&cap.offers).map(|_| ())
    }

    /// Starts a capture when none is in flight and a buffer is free, and submits a buffer
    /// once the frame's offers are in.
    fn pump(&mut self, qh: &QueueHandle<State>) -> Result<(), CaptureError> {
        if self.capture.is_none() {
            if self.pool.as_ref().is_some_and(|p| p.free_slot().is_none()) {
                return Ok(());
            }
            self.start_capture(qh);
        }
        let Some(cap) = self.capture.as_mut() else {
            return Ok(());
        };
        if !cap.offers_done || cap.slot.is_some() {
            return Ok(());
        }
        match self.kind {
            BufferKind::Shm => {
                let offer = choose_offer(&cap.offers)?;
                let remade = self.pool.as_ref().is_none_or(|p| p.offer != offer);
                if remade {
                    // No buffer of the old pool is being copied into: the one capture in flight
                    // is this one, not yet submitted.
                    self.generation += 1;
                    self.pool = Some(Pool::new(&self.shm, offer, self.generation, qh)?);
                }
                let pool = self.pool.as_mut().expect("made above");
                let Some(slot) = pool.free_slot() else {
                    return Ok(());
                };
                pool.slots[slot].state = SlotUse::Copying;
                cap.slot = Some(slot);
                let buffer = &pool.slots[slot].buffer;
                // The first frame into new buffers is copied at once, damage or not: after a
                // mode change the damage went to the frame that was copied into the old-sized
                // buffer, and an idle desktop would otherwise never show its new size.
                if remade || cap.frame.version() < 2 {
                    cap.frame.copy(buffer);
                } else {
                    cap.frame.copy_with_damage(buffer);
                }
            }
        }
        Ok(())
    }

    fn output_mode_changed(&mut self, width: i32, height: i32) {
        if let (Some(cap), Ok(w), Ok(h)) = (
            self.capture.as_mut(),
            u32::try_from(width),
            u32::try_from(height),
        ) {
            cap.new_mode = Some((w, h));
        }
    }

    fn release(&mut self, generation: u64, slot: usize) {
        if let Some(pool) = self.pool.as_mut().filter(|p| p.generation == generation) {
            if let Some(s) = pool.slots.get_mut(slot) {
                s.state = SlotUse::Free;
            }
        }
    }

    fn on_ready(&mut self, tv_sec: u64, tv_nsec: u32) {
        let ready_at = Instant::now();
        let mono = monotonic_now();
        let Some(cap) = self.capture.take() else {
            return;
        };
        self.failures = 0;
        let (Some(slot), Some(pool)) = (cap.slot, self.pool.as_mut()) else {
            return;
        };
        if cap
            .new_mode
            .is_some_and(|m| m != (pool.offer.width, pool.offer.height))
        {
            // Copied across a mode change: an old-sized buffer holding (part of) the new
            // picture. The next capture asks for buffers of the new size and is copied at once.
            tracing::debug!("screencopy: dropping a frame copied across a mode change");
            pool.slots[slot].state = SlotUse::Free;
            return;
        }
        let frame = ReadyFrame {
            generation: pool.generation,
            slot,
            map: pool.slots[slot].map.clone(),
            width: pool.offer.width,
            height: pool.offer.height,
            stride: pool.offer.stride as usize,
            y_invert: cap.y_invert,
            captured_at: presented_at(tv_sec, tv_nsec, ready_at, mono),
            ready_at,
        };
        let sent = self
            .to_source
            .as_ref()
            .is_some_and(|tx| tx.send(ToSource::Frame(frame)).is_ok());
        pool.slots[slot].state = if sent { SlotUse::Handed } else { SlotUse::Free };
    }

    fn on_failed(&mut self) {
        let Some(cap) = self.capture.take() else {
            return;
        };
        if let (Some(slot), Some(pool)) = (cap.slot, self.pool.as_mut()) {
            pool.slots[slot].state = SlotUse::Free;
        }
        self.failures += 1;
        tracing::debug!(failures = self.failures, "screencopy frame failed");
        if self.failures >= MAX_FAILURES {
            self.fatal = Some(CaptureError::Backend(format!(
                "the compositor failed {} screencopy frames in a row",
                self.failures
            )));
        }
    }
}

/// The capture thread: dispatches the queue and the consumer's commands until told to stop
/// or the compositor goes away.
fn run(
    conn: Connection,
    mut queue: EventQueue<State>,
    mut state: State,
    commands: Receiver<ToThread>,
    mut wake: UnixStream,
) {
    if let Err(e) = serve(&conn, &mut queue, &mut state, &commands, &mut wake) {
        if let Some(tx) = &state.to_source {
            let _ = tx.send(ToSource::Failed(e));
        }
    }
    // Destroy the frame in flight and the buffers before the connection closes.
    state.capture = None;
    state.pool = None;
    let _ = conn.flush();
}

/// `Ok` when told to stop.
fn serve(
    conn: &Connection,
    queue: &mut EventQueue<State>,
    state: &mut State,
    commands: &Receiver<ToThread>,
    wake: &mut UnixStream,
) -> Result<(), CaptureError> {
    let qh = queue.handle();
    loop {
        queue.dispatch_pending(state).map_err(|e| {
            tracing::warn!("screencopy: Wayland dispatch: {e}");
            CaptureError::Disconnected
        })?;
        loop {
            match commands.try_recv() {
                Ok(ToThread::Release { generation, slot }) => state.release(generation, slot),
                Ok(ToThread::Stop) | Err(TryRecvError::Disconnected) => return Ok(()),
                Err(TryRecvError::Empty) => break,
            }
        }
        if let Some(e) = state.fatal.take() {
            return Err(e);
        }
        state.pump(&qh)?;
        // A full socket: wait until it takes more as well as for events.
        let unsent = match conn.flush() {
            Ok(()) => false,
            Err(WaylandError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(e) => return Err(gone(e)),
        };
        let Some(guard) = queue.prepare_read() else {
            continue;
        };
        let (readable, woken) = {
            let wl_fd = guard.connection_fd();
            let wl_events = if unsent {
                PollFlags::IN | PollFlags::OUT
            } else {
                PollFlags::IN
            };
            let mut fds = [
                PollFd::new(&wl_fd, wl_events),
                PollFd::new(&*wake, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(CaptureError::Backend(format!("poll: {e}"))),
            }
            // Writable alone is no reason to read: the loop flushes again.
            let wl = fds[0].revents();
            (
                wl.intersects(PollFlags::IN | PollFlags::ERR | PollFlags::HUP),
                !fds[1].revents().is_empty(),
            )
        };
        if readable {
            match guard.read() {
                Ok(_) => {}
                Err(WaylandError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(gone(e)),
            }
        } else {
            drop(guard);
        }
        if woken {
            let mut buf = [0u8; 64];
            while matches!(wake.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

fn gone(e: WaylandError) -> CaptureError {
    tracing::info!("screencopy: the compositor connection ended: {e}");
    CaptureError::Disconnected
}

impl Dispatch<WlRegistry, GlobalListContents> for State {
    fn event(
        state: &mut Self,
        _: &WlRegistry,
        event: wl_registry::Event,
        _: &GlobalListContents,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_registry::Event::GlobalRemove { name } = event {
            if state.target == Some(name) {
                tracing::info!("screencopy: the captured output was removed");
                state.fatal = Some(CaptureError::Disconnected);
            }
            state.outputs.retain(|o| o.global != name);
        }
    }
}

impl Dispatch<WlOutput, u32> for State {
    fn event(
        state: &mut Self,
        _: &WlOutput,
        event: wl_output::Event,
        global: &u32,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            // wl_output v4 names its output; xdg-output's name (below) wins when both are there.
            wl_output::Event::Name { name } => {
                if let Some(o) = state.outputs.iter_mut().find(|o| o.global == *global) {
                    o.name.get_or_insert(name);
                }
            }
            wl_output::Event::Mode {
                flags: WEnum::Value(flags),
                width,
                height,
                ..
            } if flags.contains(wl_output::Mode::Current) && state.target == Some(*global) => {
                state.output_mode_changed(width, height);
            }
            _ => {}
        }
    }
}

impl Dispatch<ZxdgOutputV1, u32> for State {
    fn event(
        state: &mut Self,
        _: &ZxdgOutputV1,
        event: zxdg_output_v1::Event,
        global: &u32,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let zxdg_output_v1::Event::Name { name } = event {
            if let Some(o) = state.outputs.iter_mut().find(|o| o.global == *global) {
                o.name = Some(name);
            }
        }
    }
}

impl Dispatch<ZwlrScreencopyFrameV1, ()> for State {
    fn event(
        state: &mut Self,
        frame: &ZwlrScreencopyFrameV1,
        event: zwlr_screencopy_frame_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        use zwlr_screencopy_frame_v1::Event;
        let Some(cap) = state.capture.as_mut().filter(|c| c.frame == *frame) else {
            return;
        };
        match event {
            Event::Buffer {
                format,
                width,
                height,
                stride,
            } => {
                cap.offers.push(ShmOffer {
                    format,
                    width,
                    height,
                    stride,
                });
                // Before v3 there is no buffer_done: the one shm offer is all there is.
                if frame.version() < 3 {
                    cap.offers_done = true;
                }
            }
            Event::LinuxDmabuf { .. } => cap.dmabuf_offered = true,
            Event::BufferDone => cap.offers_done = true,
            Event::Flags { flags } => {
                cap.y_invert = matches!(
                    flags,
                    WEnum::Value(f) if f.contains(zwlr_screencopy_frame_v1::Flags::YInvert)
                );
            }
            Event::Ready {
                tv_sec_hi,
                tv_sec_lo,
                tv_nsec,
            } => state.on_ready((u64::from(tv_sec_hi) << 32) | u64::from(tv_sec_lo), tv_nsec),
            Event::Failed => state.on_failed(),
            _ => {}
        }
    }
}

macro_rules! no_events {
    ($($iface:ty => $event:ty),* $(,)?) => {$(
        impl Dispatch<$iface, ()> for State {
            fn event(
                _: &mut Self,
                _: &$iface,
                _: $event,
                _: &(),
                _: &Connection,
                _: &QueueHandle<Self>,
            ) {
            }
        }
    )*};
}

no_events! {
    WlShm => wl_shm::Event,
    WlShmPool => wl_shm_pool::Event,
    WlBuffer => wl_buffer::Event,
    ZwlrScreencopyManagerV1 => zwlr_screencopy_manager_v1::Event,
    ZxdgOutputManagerV1 => zxdg_output_manager_v1::Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presentation_times_count_back_from_now_on_the_monotonic_clock() {
        let now = Instant::now();
        let t = presented_at(100, 995_000_000, now, (101, 0));
        assert_eq!(now.duration_since(t), Duration::from_millis(5));
        // From the future, or from another clock: now.
        assert_eq!(presented_at(102, 0, now, (101, 0)), now);
        assert_eq!(presented_at(1, 0, now, (101, 0)), now);
    }

    #[test]
    fn rows_flip_whole_strides() {
        let src = [1u8, 1, 2, 2, 3, 3];
        let mut dst = Vec::new();
        flip_rows(&src, 2, 3, &mut dst);
        assert_eq!(dst, [3, 3, 2, 2, 1, 1]);
    }

    #[test]
    fn only_xrgb_and_argb_offers_are_read() {
        let offer = |format| ShmOffer {
            format: WEnum::Value(format),
            width: 4,
            height: 2,
            stride: 16,
        };
        assert!(choose_offer(&[offer(wl_shm::Format::Xrgb8888)]).is_ok());
        assert!(choose_offer(&[offer(wl_shm::Format::Argb8888)]).is_ok());
        let Err(CaptureError::Unsupported(why)) = choose_offer(&[offer(wl_shm::Format::Abgr8888)])
        else {
            panic!("ABGR is not read");
        };
        assert!(why.contains("Abgr8888"), "{why}");
        assert!(matches!(
            choose_offer(&[]),
            Err(CaptureError::Unsupported(_))
        ));
        assert_eq!(choose_kind(true).0, BufferKind::Shm);
        assert!(choose_kind(true).1.contains("not built"));
        assert!(choose_kind(false).1.contains("no dmabuf"));
    }
}
