//! punktfunk-desktop-probe: a fullscreen Wayland window for the desktop tests and the demo.
//!
//! It shows the media crate's stamped test pattern (one new frame per frame callback, each
//! stamped with its number and its render time on the host's clock) and logs every pointer and
//! keyboard event it receives as one JSON line, so a test can check what an injector delivered
//! and a capture can check which frame it saw.

#![forbid(unsafe_code)]

use clap::Parser;
use punktfunk_media::{draw_stamp_bgra, BgraFrame, Stamp, TestPattern};
use serde_json::{json, Map, Value};
use smithay_client_toolkit::reexports::client::{
    globals::registry_queue_init,
    protocol::{wl_keyboard, wl_output, wl_pointer, wl_seat, wl_shm, wl_surface},
    Connection, QueueHandle,
};
use smithay_client_toolkit::{
    compositor::{CompositorHandler, CompositorState, FrameCallbackData},
    delegate_registry,
    output::{OutputHandler, OutputState},
    registry::{ProvidesRegistryState, RegistryState},
    registry_handlers,
    seat::{
        keyboard::{KeyEvent, KeyboardHandler, Keysym, Modifiers, RawModifiers},
        pointer::{AxisScroll, PointerEvent, PointerEventKind, PointerHandler},
        Capability, SeatHandler, SeatState,
    },
    shell::{
        xdg::{
            window::{Window, WindowConfigure, WindowDecorations, WindowHandler},
            XdgShell,
        },
        WaylandSurface,
    },
    shm::{
        slot::{Buffer, SlotPool},
        Shm, ShmHandler,
    },
};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// The variable that names the host clock's zero, as CLOCK_MONOTONIC nanoseconds.
const EPOCH_VAR: &str = "PUNKTFUNK_EPOCH_MONOTONIC_NS";

/// At most this many buffers in flight; more would mean the compositor keeps none released.
const MAX_BUFFERS: usize = 4;

/// A fullscreen Wayland window that shows the stamped test pattern and logs its input.
///
/// Every frame callback draws the next test-pattern frame with its number and render time
/// stamped in (the render time on the host clock: CLOCK_MONOTONIC minus
/// PUNKTFUNK_EPOCH_MONOTONIC_NS when that is set, else minus the probe's own start).
///
/// Every line of the log is one JSON object with "event" and "t_us" (same clock): configure,
/// frame (the first and every 60th), closed, capability (the seat gained or lost a pointer or
/// keyboard), pointer enter/leave/motion/button/axis, keyboard_enter/keyboard_leave/key/
/// modifiers. The probe exits 0 when the compositor closes the window or goes
/// away.
#[derive(Debug, Parser)]
#[command(name = "punktfunk-desktop-probe", version)]
struct Args {
    /// Draw one frame, then redraw only when the window is configured (for idle tests).
    #[arg(long = "static")]
    static_frame: bool,
    /// The buffer size before the compositor configures the window, WIDTHxHEIGHT.
    #[arg(long, value_parser = parse_size, default_value = "640x480")]
    size: (u32, u32),
    /// Write the JSON lines to this file instead of stdout.
    #[arg(long)]
    log: Option<PathBuf>,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s}: expected WIDTHxHEIGHT"))?;
    let parse = |v: &str| {
        v.parse::<u32>()
            .ok()
            .filter(|n| (1..=16384).contains(n))
            .ok_or_else(|| format!("{s}: {v} is not a size between 1 and 16384"))
    };
    Ok((parse(w)?, parse(h)?))
}

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The JSON-lines log, timed on the host clock.
struct Log {
    out: Box<dyn Write>,
    epoch_ns: u64,
}

impl Log {
    fn now_us(&self) -> u64 {
        monotonic_ns().saturating_sub(self.epoch_ns) / 1000
    }

    /// Writes `{"event": event, "t_us": now, ...fields}` and flushes it.
    fn line(&mut self, event: &str, fields: Value) {
        let mut obj = Map::new();
        obj.insert("event".into(), event.into());
        obj.insert("t_us".into(), self.now_us().into());
        if let Value::Object(extra) = fields {
            obj.extend(extra);
        }
        // A reader that went away is no reason to stop showing the window.
        let _ = writeln!(self.out, "{}", Value::Object(obj));
        let _ = self.out.flush();
    }
}

struct Probe {
    registry: RegistryState,
    seat: SeatState,
    outputs: OutputState,
    shm: Shm,
    /// Kept for the probe's lifetime: the surface was made from it.
    _compositor: CompositorState,
    window: Window,
    pool: SlotPool,
    buffers: Vec<Buffer>,
    size: (u32, u32),
    pattern: TestPattern,
    frame: BgraFrame,
    next_frame: u32,
    configured: bool,
    frame_pending: bool,
    static_frame: bool,
    keyboard: Option<wl_keyboard::WlKeyboard>,
    pointer: Option<wl_pointer::WlPointer>,
    log: Log,
    exit: bool,
}

impl Probe {
    /// Draws the next frame and, unless static, asks for the callback that draws the one after.
    fn draw(&mut self, qh: &QueueHandle<Self>) {
        let (w, h) = self.size;
        let n = self.next_frame;
        self.next_frame = n.wrapping_add(1);
        self.pattern.render(n, 0, &mut self.frame);

        let stride = w as i32 * 4;
        let idle = self
            .buffers
            .iter()
            .position(|b| self.pool.canvas(b).is_some());
        let index = match idle {
            Some(i) => i,
            None => {
                if self.buffers.len() >= MAX_BUFFERS {
                    // Every buffer is still the compositor's: drop the oldest, its memory comes
                    // back to the pool once the compositor releases it.
                    self.buffers.remove(0);
                }
                match self
                    .pool
                    .create_buffer(w as i32, h as i32, stride, wl_shm::Format::Xrgb8888)
                {
                    Ok((buffer, _)) => {
                        self.buffers.push(buffer);
                        self.buffers.len() - 1
                    }
                    Err(e) => {
                        eprintln!("punktfunk-desktop-probe: shm buffer: {e}");
                        self.exit = true;
                        return;
                    }
                }
            }
        };

        let surface = self.window.wl_surface().clone();
        let capture_us = self.log.now_us();
        draw_stamp_bgra(
            &mut self.frame,
            Stamp {
                frame: n,
                capture_us,
            },
        );
        let buffer = &self.buffers[index];
        if let Some(canvas) = self.pool.canvas(buffer) {
            canvas.copy_from_slice(&self.frame.data);
        }
        surface.damage_buffer(0, 0, w as i32, h as i32);
        if !self.static_frame {
            surface.frame(qh, FrameCallbackData(surface.clone()));
            self.frame_pending = true;
        }
        if let Err(e) = buffer.attach_to(&surface) {
            eprintln!("punktfunk-desktop-probe: attaching a buffer: {e}");
            self.exit = true;
            return;
        }
        surface.commit();
        if n.is_multiple_of(60) {
            self.log
                .line("frame", json!({ "n": n, "capture_us": capture_us }));
        }
    }

    fn resize(&mut self, size: (u32, u32)) {
        if size == self.size && self.configured {
            return;
        }
        self.size = size;
        self.pattern = TestPattern::new(size.0, size.1);
        self.frame = BgraFrame::new(size.0, size.1);
        // Buffers of the old size go; their slots return to the pool when released.
        self.buffers.clear();
    }
}

impl CompositorHandler for Probe {
    fn scale_factor_changed(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_surface::WlSurface,
        _: i32,
    ) {
    }

    fn transform_changed(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_surface::WlSurface,
        _: wl_output::Transform,
    ) {
    }

    fn frame(&mut self, _: &Connection, qh: &QueueHandle<Self>, _: &wl_surface::WlSurface, _: u32) {
        self.frame_pending = false;
        self.draw(qh);
    }

    fn surface_enter(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_surface::WlSurface,
        _: &wl_output::WlOutput,
    ) {
    }

    fn surface_leave(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_surface::WlSurface,
        _: &wl_output::WlOutput,
    ) {
    }
}

impl WindowHandler for Probe {
    fn request_close(&mut self, _: &Connection, _: &QueueHandle<Self>, _: &Window) {
        self.exit = true;
    }

    fn configure(
        &mut self,
        _: &Connection,
        qh: &QueueHandle<Self>,
        _: &Window,
        configure: WindowConfigure,
        _: u32,
    ) {
        let size = (
            configure.new_size.0.map_or(self.size.0, |v| v.get()),
            configure.new_size.1.map_or(self.size.1, |v| v.get()),
        );
        self.resize(size);
        self.configured = true;
        self.log
            .line("configure", json!({ "width": size.0, "height": size.1 }));
        // A running frame loop picks the new size up at its next callback.
        if !self.frame_pending {
            self.draw(qh);
        }
    }
}

impl SeatHandler for Probe {
    fn seat_state(&mut self) -> &mut SeatState {
        &mut self.seat
    }

    fn new_seat(&mut self, _: &Connection, _: &QueueHandle<Self>, _: wl_seat::WlSeat) {}

    fn new_capability(
        &mut self,
        _: &Connection,
        qh: &QueueHandle<Self>,
        seat: wl_seat::WlSeat,
        capability: Capability,
    ) {
        // Virtual devices appear after the probe starts: the seat gains its capabilities late.
        if capability == Capability::Keyboard && self.keyboard.is_none() {
            match self.seat.get_keyboard(qh, &seat, None) {
                Ok(k) => self.keyboard = Some(k),
                Err(e) => eprintln!("punktfunk-desktop-probe: keyboard: {e}"),
            }
        }
        if capability == Capability::Pointer && self.pointer.is_none() {
            match self.seat.get_pointer(qh, &seat) {
                Ok(p) => self.pointer = Some(p),
                Err(e) => eprintln!("punktfunk-desktop-probe: pointer: {e}"),
            }
        }
        self.log
            .line("capability", json!({ "added": format!("{capability}") }));
    }

    fn remove_capability(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: wl_seat::WlSeat,
        capability: Capability,
    ) {
        if capability == Capability::Keyboard {
            if let Some(k) = self.keyboard.take() {
                k.release();
            }
        }
        if capability == Capability::Pointer {
            if let Some(p) = self.pointer.take() {
                p.release();
            }
        }
        self.log
            .line("capability", json!({ "removed": format!("{capability}") }));
    }

    fn remove_seat(&mut self, _: &Connection, _: &QueueHandle<Self>, _: wl_seat::WlSeat) {}
}

fn keysym_name(sym: Keysym) -> String {
    xkbcommon::xkb::keysym_get_name(sym)
}

impl Probe {
    fn key(&mut self, event: &KeyEvent, state: &str) {
        self.log.line(
            "key",
            json!({
                "key": event.raw_code,
                "state": state,
                "keysym": keysym_name(event.keysym),
                "utf8": event.utf8,
            }),
        );
    }
}

impl KeyboardHandler for Probe {
    fn enter(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_keyboard::WlKeyboard,
        _: &wl_surface::WlSurface,
        _: u32,
        raw: &[u32],
        _: &[Keysym],
    ) {
        self.log.line("keyboard_enter", json!({ "pressed": raw }));
    }

    fn leave(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_keyboard::WlKeyboard,
        _: &wl_surface::WlSurface,
        _: u32,
    ) {
        self.log.line("keyboard_leave", json!({}));
    }

    fn press_key(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_keyboard::WlKeyboard,
        _: u32,
        event: KeyEvent,
    ) {
        self.key(&event, "pressed");
    }

    fn repeat_key(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_keyboard::WlKeyboard,
        _: u32,
        event: KeyEvent,
    ) {
        self.key(&event, "repeated");
    }

    fn release_key(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_keyboard::WlKeyboard,
        _: u32,
        event: KeyEvent,
    ) {
        self.key(&event, "released");
    }

    fn update_modifiers(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_keyboard::WlKeyboard,
        _: u32,
        modifiers: Modifiers,
        raw: RawModifiers,
        layout: u32,
    ) {
        let names: Vec<&str> = [
            (modifiers.shift, "Shift"),
            (modifiers.ctrl, "Control"),
            (modifiers.alt, "Alt"),
            (modifiers.logo, "Logo"),
            (modifiers.caps_lock, "CapsLock"),
            (modifiers.num_lock, "NumLock"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        self.log.line(
            "modifiers",
            json!({
                "depressed": raw.depressed,
                "latched": raw.latched,
                "locked": raw.locked,
                "group": layout,
                "active": names,
            }),
        );
    }
}

fn axis_fields(axis: &str, scroll: &AxisScroll) -> Value {
    json!({
        "axis": axis,
        "value": scroll.absolute,
        "discrete": scroll.discrete,
        "value120": scroll.value120,
        "stop": scroll.stop,
    })
}

impl PointerHandler for Probe {
    fn pointer_frame(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_pointer::WlPointer,
        events: &[PointerEvent],
    ) {
        for event in events {
            let (x, y) = event.position;
            match &event.kind {
                PointerEventKind::Enter { .. } => {
                    self.log.line("enter", json!({ "x": x, "y": y }));
                }
                PointerEventKind::Leave { .. } => self.log.line("leave", json!({})),
                PointerEventKind::Motion { .. } => {
                    self.log.line("motion", json!({ "x": x, "y": y }));
                }
                PointerEventKind::Press { button, .. }
                | PointerEventKind::Release { button, .. } => {
                    let state = if matches!(event.kind, PointerEventKind::Press { .. }) {
                        "pressed"
                    } else {
                        "released"
                    };
                    self.log.line(
                        "button",
                        json!({ "button": button, "state": state, "x": x, "y": y }),
                    );
                }
                PointerEventKind::Axis {
                    horizontal,
                    vertical,
                    source,
                    ..
                } => {
                    let source = source.map(|s| format!("{s:?}").to_lowercase());
                    for (name, scroll) in [("vertical", vertical), ("horizontal", horizontal)] {
                        if scroll.is_none() {
                            continue;
                        }
                        let mut fields = axis_fields(name, scroll);
                        fields["source"] = json!(source);
                        self.log.line("axis", fields);
                    }
                }
            }
        }
    }
}

impl OutputHandler for Probe {
    fn output_state(&mut self) -> &mut OutputState {
        &mut self.outputs
    }
    fn new_output(&mut self, _: &Connection, _: &QueueHandle<Self>, _: wl_output::WlOutput) {}
    fn update_output(&mut self, _: &Connection, _: &QueueHandle<Self>, _: wl_output::WlOutput) {}
    fn output_destroyed(&mut self, _: &Connection, _: &QueueHandle<Self>, _: wl_output::WlOutput) {}
}

impl ShmHandler for Probe {
    fn shm_state(&mut self) -> &mut Shm {
        &mut self.shm
    }
}

delegate_registry!(Probe);

impl ProvidesRegistryState for Probe {
    fn registry(&mut self) -> &mut RegistryState {
        &mut self.registry
    }
    registry_handlers![OutputState, SeatState];
}

smithay_client_toolkit::delegate_dispatch2!(Probe);

fn run(args: Args) -> Result<(), String> {
    let epoch_ns = match std::env::var(EPOCH_VAR) {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|e| format!("{EPOCH_VAR}={v}: {e}"))?,
        Err(_) => monotonic_ns(),
    };
    let out: Box<dyn Write> = match &args.log {
        Some(path) => {
            Box::new(std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => Box::new(std::io::stdout()),
    };
    let log = Log { out, epoch_ns };

    let conn = Connection::connect_to_env()
        .map_err(|e| format!("cannot connect to a Wayland compositor: {e}"))?;
    let (globals, mut queue) =
        registry_queue_init::<Probe>(&conn).map_err(|e| format!("Wayland registry: {e}"))?;
    let qh = queue.handle();
    let compositor =
        CompositorState::bind(&globals, &qh).map_err(|e| format!("wl_compositor: {e}"))?;
    let xdg = XdgShell::bind(&globals, &qh).map_err(|e| format!("xdg_wm_base: {e}"))?;
    let shm = Shm::bind(&globals, &qh).map_err(|e| format!("wl_shm: {e}"))?;

    let surface = compositor.create_surface(&qh);
    let window = xdg.create_window(surface, WindowDecorations::None, &qh);
    window.set_title("punktfunk desktop probe");
    window.set_app_id("punktfunk-desktop-probe");
    window.set_fullscreen(None);
    window.commit();

    let (w, h) = args.size;
    let pool = SlotPool::new(w as usize * h as usize * 4 * 2, &shm)
        .map_err(|e| format!("shm pool: {e}"))?;
    let mut probe = Probe {
        registry: RegistryState::new(&globals),
        seat: SeatState::new(&globals, &qh),
        outputs: OutputState::new(&globals, &qh),
        shm,
        _compositor: compositor,
        window,
        pool,
        buffers: Vec::new(),
        size: args.size,
        pattern: TestPattern::new(w, h),
        frame: BgraFrame::new(w, h),
        next_frame: 0,
        configured: false,
        frame_pending: false,
        static_frame: args.static_frame,
        keyboard: None,
        pointer: None,
        log,
        exit: false,
    };

    while !probe.exit {
        if let Err(e) = queue.blocking_dispatch(&mut probe) {
            // The compositor went away (or hung up on us): the window is gone either way.
            probe.log.line("closed", json!({ "reason": e.to_string() }));
            return Ok(());
        }
    }
    probe
        .log
        .line("closed", json!({ "reason": "close requested" }));
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("punktfunk-desktop-probe: {e}");
            ExitCode::from(2)
        }
    }
}
