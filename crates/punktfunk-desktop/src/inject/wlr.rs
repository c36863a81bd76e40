//! wlroots virtual pointer and virtual keyboard (`zwlr_virtual_pointer_manager_v1`,
//! `zwp_virtual_keyboard_manager_v1`): what sway and other wlroots compositors offer clients
//! that synthesise input.
//!
//! The injector owns its own Wayland connection and runs on the caller's thread: every event
//! becomes a few requests and a flush, and whatever the compositor sent back (seat and output
//! updates) is read without blocking and dispatched on the way, so the socket never fills.
//!
//! The pointer is bound to the capture target's output when the compositor offers version 2 of
//! the manager, so absolute positions map onto that output; the output is found by the name its
//! `zxdg_output_v1` reports (sway 1.7's `wl_output` predates names). The keyboard carries a
//! keymap compiled here (evdev rules, `us` layout unless told otherwise) and keeps an xkb state
//! beside it, sending the modifiers that state computes after every key; a client's modifier
//! flags are honoured through [`ModifierSync`] (Shift pressed for "a with Shift"). Text is typed with
//! the key and shift level that produce the character; a character the layout lacks is bound
//! to a spare keycode in an extended keymap, which is uploaded before typing it and kept.

use super::{Held, InjectCaps, InjectError, InjectorBackend, InputInjector, ModifierSync};
use crate::env::DesktopEnv;
use crate::vdisplay::CaptureTarget;
use punktfunk_core::input::InputEvent;
use smithay_client_toolkit::reexports::client::{
    globals::{registry_queue_init, GlobalListContents},
    protocol::{wl_keyboard, wl_output, wl_pointer, wl_registry, wl_seat},
    Connection, Dispatch, EventQueue, Proxy, QueueHandle, WEnum,
};
use smithay_client_toolkit::reexports::protocols::xdg::xdg_output::zv1::client::{
    zxdg_output_manager_v1::ZxdgOutputManagerV1, zxdg_output_v1,
};
use smithay_client_toolkit::reexports::protocols_misc::zwp_virtual_keyboard_v1::client::{
    zwp_virtual_keyboard_manager_v1::ZwpVirtualKeyboardManagerV1,
    zwp_virtual_keyboard_v1::ZwpVirtualKeyboardV1,
};
use smithay_client_toolkit::reexports::protocols_wlr::virtual_pointer::v1::client::{
    zwlr_virtual_pointer_manager_v1::ZwlrVirtualPointerManagerV1,
    zwlr_virtual_pointer_v1::ZwlrVirtualPointerV1,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use xkbcommon::xkb;

/// How long the opener waits for the seat to show both new devices.
const SEAT_TIMEOUT: Duration = Duration::from_secs(2);

/// After the seat shows the devices, sway still configures them (keymap, libinput-style
/// settings, cursor) in steps of its own; events sent in the first few hundred milliseconds
/// after creation are sometimes dropped. A short fixed wait after the seat settles makes the
/// first events land; it is paid once per session.
const SETTLE: Duration = Duration::from_millis(300);

/// Pixels per wheel notch in Wayland's continuous axis values (what libinput reports for a
/// wheel click).
const PX_PER_NOTCH: f64 = 15.0;

/// The client's high-resolution scroll unit: 120 per notch.
const HIRES_PER_NOTCH: i32 = 120;

/// evdev button codes for the input model's buttons 1..=5.
fn evdev_button(button: u8) -> Option<u32> {
    match button {
        1 => Some(0x110), // BTN_LEFT
        2 => Some(0x112), // BTN_MIDDLE
        3 => Some(0x111), // BTN_RIGHT
        4 => Some(0x113), // BTN_SIDE (back)
        5 => Some(0x114), // BTN_EXTRA (forward)
        _ => None,
    }
}

/// What the event queue collects while the injector opens (and keeps reading afterwards).
#[derive(Debug, Default)]
struct State {
    seat_caps: Option<wl_seat::Capability>,
    /// `wl_output` by registry name, with the name its xdg-output (or v4 `wl_output`) reported.
    output_names: BTreeMap<u32, String>,
}

impl Dispatch<wl_registry::WlRegistry, GlobalListContents> for State {
    fn event(
        _: &mut Self,
        _: &wl_registry::WlRegistry,
        _: wl_registry::Event,
        _: &GlobalListContents,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<wl_seat::WlSeat, ()> for State {
    fn event(
        state: &mut Self,
        _: &wl_seat::WlSeat,
        event: wl_seat::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_seat::Event::Capabilities {
            capabilities: WEnum::Value(caps),
        } = event
        {
            state.seat_caps = Some(caps);
        }
    }
}

impl Dispatch<wl_output::WlOutput, u32> for State {
    fn event(
        state: &mut Self,
        _: &wl_output::WlOutput,
        event: wl_output::Event,
        global: &u32,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_output::Event::Name { name } = event {
            state.output_names.insert(*global, name);
        }
    }
}

impl Dispatch<ZxdgOutputManagerV1, ()> for State {
    fn event(
        _: &mut Self,
        _: &ZxdgOutputManagerV1,
        _: <ZxdgOutputManagerV1 as Proxy>::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<zxdg_output_v1::ZxdgOutputV1, u32> for State {
    fn event(
        state: &mut Self,
        _: &zxdg_output_v1::ZxdgOutputV1,
        event: zxdg_output_v1::Event,
        global: &u32,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let zxdg_output_v1::Event::Name { name } = event {
            state.output_names.insert(*global, name);
        }
    }
}

macro_rules! no_events {
    ($($proxy:ty),*) => {$(
        impl Dispatch<$proxy, ()> for State {
            fn event(
                _: &mut Self,
                _: &$proxy,
                _: <$proxy as Proxy>::Event,
                _: &(),
                _: &Connection,
                _: &QueueHandle<Self>,
            ) {
            }
        }
    )*};
}

no_events!(
    ZwlrVirtualPointerManagerV1,
    ZwlrVirtualPointerV1,
    ZwpVirtualKeyboardManagerV1,
    ZwpVirtualKeyboardV1
);

/// A keymap as uploaded, with what typing text needs from it.
struct Keymap {
    keymap: xkb::Keymap,
    state: xkb::State,
    shift_mask: u32,
    /// Keysyms the base layout lacks, bound to spare keycodes (xkb codes).
    extra: BTreeMap<u32, u32>,
}

/// Compiles the keymap for `layout`, with `extra` keysyms bound to spare keycodes.
fn compile(
    ctx: &xkb::Context,
    layout: &str,
    extra: &BTreeMap<u32, u32>,
) -> Result<(xkb::Keymap, String), String> {
    let base = xkb::Keymap::new_from_names(
        ctx,
        "evdev",
        "",
        layout,
        "",
        None,
        xkb::KEYMAP_COMPILE_NO_FLAGS,
    )
    .ok_or_else(|| format!("the xkb keymap for layout {layout:?} does not compile"))?;
    let mut text = base.get_as_string(xkb::KEYMAP_FORMAT_TEXT_V1);
    if extra.is_empty() {
        return Ok((base, text));
    }
    // The spare keycodes have names in the keycodes section but no symbols: add a symbols
    // line for each at the end of the symbols section.
    let mut lines = String::new();
    for (&sym, &code) in extra {
        let name = base
            .key_get_name(xkb::Keycode::new(code))
            .ok_or("a spare keycode has no name")?;
        let sym_name = xkb::keysym_get_name(xkb::Keysym::new(sym));
        lines.push_str(&format!("\tkey <{name}> {{ [ {sym_name} ] }};\n"));
    }
    let symbols = text
        .find("xkb_symbols")
        .ok_or("the keymap has no symbols section")?;
    let end = text[symbols..]
        .find("\n};")
        .map(|i| symbols + i + 1)
        .ok_or("the keymap's symbols section does not end")?;
    text.insert_str(end, &lines);
    let keymap = xkb::Keymap::new_from_string(
        ctx,
        text.clone(),
        xkb::KEYMAP_FORMAT_TEXT_V1,
        xkb::KEYMAP_COMPILE_NO_FLAGS,
    )
    .ok_or("the extended keymap does not compile")?;
    Ok((keymap, text))
}

/// Writes `text` (with its trailing NUL) into a memfd and hands it to the virtual keyboard.
fn upload(keyboard: &ZwpVirtualKeyboardV1, text: &str) -> Result<(), InjectError> {
    let fd = rustix::fs::memfd_create(
        "punktfunk-keymap",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| InjectError::Backend(format!("memfd for the keymap: {e}")))?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    file.write_all(&bytes)
        .map_err(|e| InjectError::Backend(format!("writing the keymap: {e}")))?;
    // The compositor maps it read-only; sealing says it will not change under it.
    let _ = rustix::fs::fcntl_add_seals(
        &file,
        rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW | rustix::fs::SealFlags::WRITE,
    );
    keyboard.keymap(
        wl_keyboard::KeymapFormat::XkbV1 as u32,
        file.as_fd(),
        bytes.len() as u32,
    );
    Ok(())
}

/// The connection, the devices and the keymap state; lives on the injector's thread (the xkb
/// objects may not move between threads).
struct Worker {
    conn: Connection,
    queue: EventQueue<State>,
    state: State,
    pointer: ZwlrVirtualPointerV1,
    keyboard: ZwpVirtualKeyboardV1,
    ctx: xkb::Context,
    layout: String,
    keys: Keymap,
    held: Held,
    /// Modifier keys pressed for clients that send only the flags.
    modifiers: ModifierSync,
    start: Instant,
    /// Hi-res scroll not yet a whole notch, per axis (vertical, horizontal), Wayland sign.
    scroll_rest: [i32; 2],
}

/// Opens the injector on the compositor `env` names, the pointer bound to `target`'s output.
pub fn open(
    env: &DesktopEnv,
    target: &CaptureTarget,
) -> Result<Box<dyn InputInjector>, InjectError> {
    Ok(Box::new(WlrInjector::open(env, target, "us")?))
}

enum Command {
    Inject(InputEvent),
    ReleaseAll,
}

/// The wlr injector: a handle on the thread that owns the connection. Each call waits for the
/// thread's answer, so a failed request surfaces as that call's error.
pub struct WlrInjector {
    commands: Option<mpsc::Sender<Command>>,
    answers: mpsc::Receiver<Result<(), InjectError>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WlrInjector {
    /// Connects, creates the virtual pointer and keyboard (keyboard layout `layout`, an xkb
    /// layout name such as `us` or `de`) and waits until the seat has taken them.
    pub fn open(
        env: &DesktopEnv,
        target: &CaptureTarget,
        layout: &str,
    ) -> Result<WlrInjector, InjectError> {
        let (commands, command_rx) = mpsc::channel::<Command>();
        let (answer_tx, answers) = mpsc::channel();
        let (env, target, layout) = (env.clone(), target.clone(), layout.to_string());
        let thread = std::thread::Builder::new()
            .name("wlr-inject".into())
            .spawn(move || {
                let mut worker = match Worker::open(&env, &target, &layout) {
                    Ok(w) => {
                        let _ = answer_tx.send(Ok(()));
                        w
                    }
                    Err(e) => {
                        let _ = answer_tx.send(Err(e));
                        return;
                    }
                };
                for command in command_rx {
                    let answer = match command {
                        Command::Inject(event) => worker.inject(&event),
                        Command::ReleaseAll => {
                            worker.release_all();
                            Ok(())
                        }
                    };
                    if answer_tx.send(answer).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| InjectError::Backend(format!("starting the injector thread: {e}")))?;
        let mut inj = WlrInjector {
            commands: Some(commands),
            answers,
            thread: Some(thread),
        };
        match inj.answers.recv() {
            Ok(Ok(())) => Ok(inj),
            Ok(Err(e)) => {
                inj.stop();
                Err(e)
            }
            Err(_) => {
                inj.stop();
                Err(InjectError::Backend("the injector thread failed".into()))
            }
        }
    }

    fn call(&mut self, command: Command) -> Result<(), InjectError> {
        let tx = self.commands.as_ref().ok_or(InjectError::Disconnected)?;
        tx.send(command).map_err(|_| InjectError::Disconnected)?;
        self.answers.recv().map_err(|_| InjectError::Disconnected)?
    }

    fn stop(&mut self) {
        self.commands = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WlrInjector {
    fn drop(&mut self) {
        self.stop();
    }
}

impl InputInjector for WlrInjector {
    fn backend(&self) -> InjectorBackend {
        InjectorBackend::Wlr
    }

    fn capabilities(&self) -> InjectCaps {
        super::capabilities(InjectorBackend::Wlr)
    }

    fn inject(&mut self, event: &InputEvent) -> Result<(), InjectError> {
        self.call(Command::Inject(*event))
    }

    fn release_all(&mut self) {
        if let Err(e) = self.call(Command::ReleaseAll) {
            tracing::debug!(error = %e, "releasing held input");
        }
    }
}

impl Worker {
    fn open(env: &DesktopEnv, target: &CaptureTarget, layout: &str) -> Result<Worker, InjectError> {
        let conn = crate::wayland::connect(env).map_err(InjectError::Backend)?;
        let (globals, mut queue) = registry_queue_init::<State>(&conn)
            .map_err(|e| InjectError::Backend(format!("Wayland registry: {e}")))?;
        let qh = queue.handle();
        let pointer_manager: ZwlrVirtualPointerManagerV1 =
            globals.bind(&qh, 1..=2, ()).map_err(|_| {
                InjectError::Unsupported(
                    "the compositor offers no wlr virtual pointer (zwlr_virtual_pointer_manager_v1)",
                )
            })?;
        let keyboard_manager: ZwpVirtualKeyboardManagerV1 =
            globals.bind(&qh, 1..=1, ()).map_err(|_| {
                InjectError::Unsupported(
                    "the compositor offers no virtual keyboard (zwp_virtual_keyboard_manager_v1)",
                )
            })?;
        let seat: wl_seat::WlSeat = globals
            .bind(&qh, 1..=7, ())
            .map_err(|_| InjectError::Unsupported("the compositor has no seat (wl_seat)"))?;
        let mut state = State::default();

        let output = match target {
            CaptureTarget::Desktop => None,
            CaptureTarget::WaylandOutput(name) => {
                if pointer_manager.version() < 2 {
                    tracing::warn!(
                        output = %name,
                        "the compositor's virtual pointer cannot bind to an output (manager \
                         version 1): absolute positions span the whole desktop"
                    );
                    None
                } else {
                    Some(find_output(&globals, &mut queue, &mut state, name)?)
                }
            }
        };

        let pointer = match &output {
            Some(o) => {
                pointer_manager.create_virtual_pointer_with_output(Some(&seat), Some(o), &qh, ())
            }
            None => pointer_manager.create_virtual_pointer(Some(&seat), &qh, ()),
        };
        let keyboard = keyboard_manager.create_virtual_keyboard(&seat, &qh, ());

        let ctx = xkb::Context::new(xkb::CONTEXT_NO_FLAGS);
        let (keymap, text) =
            compile(&ctx, layout, &BTreeMap::new()).map_err(InjectError::Backend)?;
        upload(&keyboard, &text)?;
        let keys = Keymap::new(keymap, BTreeMap::new());

        let mut inj = Worker {
            conn,
            queue,
            state,
            pointer,
            keyboard,
            ctx,
            layout: layout.to_string(),
            keys,
            held: Held::default(),
            modifiers: ModifierSync::default(),
            start: Instant::now(),
            scroll_rest: [0; 2],
        };
        inj.send_modifiers();
        inj.settle()?;
        tracing::info!(
            ?target,
            on_output = output.is_some(),
            layout,
            "wlr virtual pointer and keyboard ready"
        );
        Ok(inj)
    }

    /// Waits until the seat lists a pointer and a keyboard (the compositor has added the new
    /// devices), then the fixed settle time.
    fn settle(&mut self) -> Result<(), InjectError> {
        let deadline = Instant::now() + SEAT_TIMEOUT;
        let want = wl_seat::Capability::Pointer | wl_seat::Capability::Keyboard;
        loop {
            self.queue
                .roundtrip(&mut self.state)
                .map_err(|_| InjectError::Disconnected)?;
            if self.state.seat_caps.is_some_and(|c| c.contains(want)) {
                break;
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    caps = ?self.state.seat_caps,
                    "the seat does not list the virtual devices; injecting anyway"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(SETTLE);
        Ok(())
    }

    fn time_ms(&self) -> u32 {
        self.start.elapsed().as_millis() as u32
    }

    /// Sends what is queued and dispatches whatever the compositor sent, without blocking.
    fn flush(&mut self) -> Result<(), InjectError> {
        self.conn.flush().map_err(|_| InjectError::Disconnected)?;
        if let Some(guard) = self.queue.prepare_read() {
            match guard.read() {
                Ok(_) => {}
                Err(smithay_client_toolkit::reexports::client::backend::WaylandError::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Err(InjectError::Disconnected),
            }
        }
        self.queue
            .dispatch_pending(&mut self.state)
            .map_err(|_| InjectError::Disconnected)?;
        Ok(())
    }

    fn send_modifiers(&self) {
        let s = &self.keys.state;
        self.keyboard.modifiers(
            s.serialize_mods(xkb::STATE_MODS_DEPRESSED),
            s.serialize_mods(xkb::STATE_MODS_LATCHED),
            s.serialize_mods(xkb::STATE_MODS_LOCKED),
            s.serialize_layout(xkb::STATE_LAYOUT_EFFECTIVE),
        );
    }

    /// Presses or releases evdev key `code`, then sends the modifiers that leaves.
    fn key(&mut self, code: u32, down: bool) {
        let (dir, wl) = if down {
            (xkb::KeyDirection::Down, 1)
        } else {
            (xkb::KeyDirection::Up, 0)
        };
        self.keyboard.key(self.time_ms(), code, wl);
        self.keys.state.update_key(xkb::Keycode::new(code + 8), dir);
        self.send_modifiers();
    }

    /// Types `ch` with whatever key and shift level produce it.
    fn text(&mut self, ch: char) -> Result<(), InjectError> {
        // A line break is the Return key (its own keysym, Linefeed, is on no layout).
        let sym = match ch {
            '\n' | '\r' => xkb::Keysym::new(0xff0d),
            _ => xkb::utf32_to_keysym(ch as u32),
        };
        if sym.raw() == 0 {
            return Err(InjectError::Unsupported("a character with no keysym"));
        }
        let (code, shifted) = match self.keys.find(sym) {
            Some(found) => found,
            None => (self.bind_spare(sym)?, false),
        };
        // The level is chosen with the modifiers alone (locks cleared, so Caps Lock does not
        // invert it), as if only Shift were held; the real state is restored afterwards.
        let group = self
            .keys
            .state
            .serialize_layout(xkb::STATE_LAYOUT_EFFECTIVE);
        let mods = if shifted { self.keys.shift_mask } else { 0 };
        self.keyboard.modifiers(mods, 0, 0, group);
        let t = self.time_ms();
        self.keyboard.key(t, code - 8, 1);
        self.keyboard.key(t, code - 8, 0);
        self.send_modifiers();
        Ok(())
    }

    /// Binds `sym` to a spare keycode and uploads the extended keymap; returns the xkb code.
    fn bind_spare(&mut self, sym: xkb::Keysym) -> Result<u32, InjectError> {
        let mut extra = self.keys.extra.clone();
        let code = match self.keys.spare_code() {
            Some(c) => c,
            None => {
                // Every spare code is taken: start over with only this character.
                extra.clear();
                let fresh =
                    compile(&self.ctx, &self.layout, &extra).map_err(InjectError::Backend)?;
                Keymap::new(fresh.0, BTreeMap::new()).spare_code().ok_or(
                    InjectError::Unsupported("character not on the keyboard layout"),
                )?
            }
        };
        extra.insert(sym.raw(), code);
        let (keymap, text) =
            compile(&self.ctx, &self.layout, &extra).map_err(InjectError::Backend)?;
        upload(&self.keyboard, &text)?;
        let mut keys = Keymap::new(keymap, extra);
        // Keys still held stay held in the new state.
        for code in self.held.keys() {
            keys.state.update_key(
                xkb::Keycode::new(u32::from(code) + 8),
                xkb::KeyDirection::Down,
            );
        }
        self.keys = keys;
        self.send_modifiers();
        Ok(code)
    }

    fn axis(&mut self, t: u32, axis: wl_pointer::Axis, index: usize, hires: i32) {
        if hires == 0 {
            return;
        }
        let value = f64::from(hires) * PX_PER_NOTCH / f64::from(HIRES_PER_NOTCH);
        let rest = self.scroll_rest[index] + hires;
        let notches = rest / HIRES_PER_NOTCH;
        self.scroll_rest[index] = rest - notches * HIRES_PER_NOTCH;
        if notches != 0 {
            self.pointer.axis_discrete(t, axis, value, notches);
        } else {
            self.pointer.axis(t, axis, value);
        }
    }
}

impl Keymap {
    fn new(keymap: xkb::Keymap, extra: BTreeMap<u32, u32>) -> Keymap {
        let state = xkb::State::new(&keymap);
        let shift = keymap.mod_get_index(xkb::MOD_NAME_SHIFT);
        let shift_mask = if shift == xkb::MOD_INVALID {
            0
        } else {
            1 << shift
        };
        Keymap {
            keymap,
            state,
            shift_mask,
            extra,
        }
    }

    /// The xkb keycode and whether Shift is needed for `sym` on the first layout's first two
    /// levels (what a plain or shifted key press gives).
    fn find(&self, sym: xkb::Keysym) -> Option<(u32, bool)> {
        if let Some(&code) = self.extra.get(&sym.raw()) {
            return Some((code, false));
        }
        let (min, max) = (
            self.keymap.min_keycode().raw(),
            self.keymap.max_keycode().raw(),
        );
        for level in 0..2 {
            for code in min..=max {
                let kc = xkb::Keycode::new(code);
                if self.keymap.num_levels_for_key(kc, 0) <= level {
                    continue;
                }
                if !self
                    .keymap
                    .key_get_syms_by_level(kc, 0, level)
                    .contains(&sym)
                {
                    continue;
                }
                // The second level must really be what Shift selects on this key.
                if level == 0 || self.shift_gives_level_two(kc) {
                    return Some((code, level == 1));
                }
            }
        }
        None
    }

    fn shift_gives_level_two(&self, kc: xkb::Keycode) -> bool {
        let mut s = xkb::State::new(&self.keymap);
        s.update_mask(self.shift_mask, 0, 0, 0, 0, 0);
        s.key_get_level(kc, 0) == 1
    }

    /// A keycode with a name but no symbols, above the ones real keyboards use.
    fn spare_code(&self) -> Option<u32> {
        let max = self.keymap.max_keycode().raw();
        let used: Vec<u32> = self.extra.values().copied().collect();
        // From the top down: evdev's high codes are rarely bound.
        (self.keymap.min_keycode().raw()..=max).rev().find(|&code| {
            let kc = xkb::Keycode::new(code);
            code > 8 + 255 / 2
                && !used.contains(&code)
                && self.keymap.key_get_name(kc).is_some()
                && self.keymap.num_layouts_for_key(kc) == 0
        })
    }
}

impl Worker {
    fn inject(&mut self, event: &InputEvent) -> Result<(), InjectError> {
        let t = self.time_ms();
        match *event {
            InputEvent::Key { .. } => {
                for ev in self.modifiers.expand(event, &self.held) {
                    if let InputEvent::Key { code, down, .. } = ev {
                        self.key(u32::from(code), down);
                    }
                    self.held.track(&ev);
                }
                return self.flush();
            }
            InputEvent::MouseMove { dx, dy } => {
                self.pointer.motion(t, f64::from(dx), f64::from(dy));
                self.pointer.frame();
            }
            InputEvent::MouseAbsolute {
                x,
                y,
                width,
                height,
            } => {
                if width == 0 || height == 0 {
                    return Err(InjectError::Backend(
                        "an absolute position on an empty reference surface".into(),
                    ));
                }
                self.pointer.motion_absolute(
                    t,
                    u32::from(x.min(width - 1)),
                    u32::from(y.min(height - 1)),
                    u32::from(width),
                    u32::from(height),
                );
                self.pointer.frame();
            }
            InputEvent::MouseButton { button, down } => {
                let code = evdev_button(button.0)
                    .ok_or(InjectError::Unsupported("mouse buttons beyond the fifth"))?;
                let state = if down {
                    wl_pointer::ButtonState::Pressed
                } else {
                    wl_pointer::ButtonState::Released
                };
                self.pointer.button(t, code, state);
                self.pointer.frame();
            }
            InputEvent::Scroll { dx, dy } => {
                if dx == 0 && dy == 0 {
                    return Ok(());
                }
                self.pointer.axis_source(wl_pointer::AxisSource::Wheel);
                // Wayland's vertical axis is down-positive, the input model's up-positive.
                self.axis(t, wl_pointer::Axis::VerticalScroll, 0, -i32::from(dy));
                self.axis(t, wl_pointer::Axis::HorizontalScroll, 1, i32::from(dx));
                self.pointer.frame();
            }
            InputEvent::Text { ch } => self.text(ch)?,
            InputEvent::Gamepad(_) | InputEvent::GamepadPresence { .. } => {
                return Err(InjectError::Unsupported(
                    "gamepads (the wlr injector has a pointer and a keyboard only)",
                ));
            }
            InputEvent::Touch { .. } => {
                return Err(InjectError::Unsupported(
                    "touch (the wlr injector has a pointer and a keyboard only)",
                ));
            }
        }
        self.held.track(event);
        self.flush()
    }

    fn release_all(&mut self) {
        let t = self.time_ms();
        for event in self.held.take_releases() {
            match event {
                InputEvent::Key { code, .. } => {
                    self.keyboard.key(t, u32::from(code), 0);
                }
                InputEvent::MouseButton { button, .. } => {
                    if let Some(code) = evdev_button(button.0) {
                        self.pointer
                            .button(t, code, wl_pointer::ButtonState::Released);
                        self.pointer.frame();
                    }
                }
                _ => {}
            }
        }
        self.modifiers.reset();
        // A fresh state: nothing depressed, no latches or locks.
        self.keys.state = xkb::State::new(&self.keys.keymap);
        self.send_modifiers();
        if let Err(e) = self.flush() {
            tracing::debug!(error = %e, "releasing held input");
        }
    }
}

/// Binds every `wl_output` and finds the one named `name`.
fn find_output(
    globals: &smithay_client_toolkit::reexports::client::globals::GlobalList,
    queue: &mut EventQueue<State>,
    state: &mut State,
    name: &str,
) -> Result<wl_output::WlOutput, InjectError> {
    let qh = queue.handle();
    let xdg: Option<ZxdgOutputManagerV1> = globals.bind(&qh, 1..=3, ()).ok();
    let outputs: Vec<(u32, wl_output::WlOutput)> = globals.contents().with_list(|list| {
        list.iter()
            .filter(|g| g.interface == wl_output::WlOutput::interface().name)
            .map(|g| {
                let version = g.version.min(4);
                let o: wl_output::WlOutput = globals.registry().bind(g.name, version, &qh, g.name);
                (g.name, o)
            })
            .collect()
    });
    let _xdg_outputs: Vec<zxdg_output_v1::ZxdgOutputV1> = match &xdg {
        Some(m) => outputs
            .iter()
            .map(|(global, o)| m.get_xdg_output(o, &qh, *global))
            .collect(),
        None => Vec::new(),
    };
    queue
        .roundtrip(state)
        .map_err(|e| InjectError::Backend(format!("listing outputs: {e}")))?;
    let found = outputs
        .iter()
        .find(|(global, _)| state.output_names.get(global).map(String::as_str) == Some(name));
    match found {
        Some((_, o)) => Ok(o.clone()),
        None => Err(InjectError::Backend(format!(
            "no output named {name} (the compositor has {})",
            if state.output_names.is_empty() {
                "no named outputs".to_string()
            } else {
                state
                    .output_names
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))),
    }
}
