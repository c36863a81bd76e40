//! The input event model carried from client to host, with a compact wire encoding.
//!
//! Events travel in batches. Each event is `type (1 byte) ‖ length (1 byte) ‖ body`, all integers
//! little-endian, so a receiver skips event types it does not know instead of failing (a newer
//! client can talk to an older host). A batch is events back to back; see
//! `docs/protocol/data-plane.md` for the body layouts.
//!
//! Keys are Linux evdev key codes (`KEY_A` = 30, …): the host is Linux-first and injects evdev
//! codes, so clients on other platforms translate once on their side. Absolute positions are
//! given against a reference surface (`x`, `y` within `width` × `height`) so the host can map them
//! onto whatever output the stream shows; touch positions are normalised to 0..=65535.

use thiserror::Error;

/// Mouse button (open newtype).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MouseButton(pub u8);

impl MouseButton {
    /// Primary button.
    pub const LEFT: MouseButton = MouseButton(1);
    /// Middle button / wheel click.
    pub const MIDDLE: MouseButton = MouseButton(2);
    /// Secondary button.
    pub const RIGHT: MouseButton = MouseButton(3);
    /// Back side button.
    pub const X1: MouseButton = MouseButton(4);
    /// Forward side button.
    pub const X2: MouseButton = MouseButton(5);
}

/// Keyboard modifier bits held when a key event was generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Modifiers(pub u8);

impl Modifiers {
    /// Shift.
    pub const SHIFT: u8 = 0x01;
    /// Control.
    pub const CTRL: u8 = 0x02;
    /// Alt.
    pub const ALT: u8 = 0x04;
    /// Super / Windows / Command.
    pub const META: u8 = 0x08;
}

/// Gamepad button bits (`GamepadState::buttons`).
pub mod pad {
    /// D-pad up.
    pub const DPAD_UP: u32 = 1 << 0;
    /// D-pad down.
    pub const DPAD_DOWN: u32 = 1 << 1;
    /// D-pad left.
    pub const DPAD_LEFT: u32 = 1 << 2;
    /// D-pad right.
    pub const DPAD_RIGHT: u32 = 1 << 3;
    /// Start / Menu / Options.
    pub const START: u32 = 1 << 4;
    /// Back / View / Share.
    pub const BACK: u32 = 1 << 5;
    /// Left stick click.
    pub const LEFT_STICK: u32 = 1 << 6;
    /// Right stick click.
    pub const RIGHT_STICK: u32 = 1 << 7;
    /// Left shoulder.
    pub const LEFT_SHOULDER: u32 = 1 << 8;
    /// Right shoulder.
    pub const RIGHT_SHOULDER: u32 = 1 << 9;
    /// Guide / Home / PS.
    pub const GUIDE: u32 = 1 << 10;
    /// South face button (A / Cross).
    pub const A: u32 = 1 << 12;
    /// East face button (B / Circle).
    pub const B: u32 = 1 << 13;
    /// West face button (X / Square).
    pub const X: u32 = 1 << 14;
    /// North face button (Y / Triangle).
    pub const Y: u32 = 1 << 15;
    /// Paddles 1–4.
    pub const PADDLE1: u32 = 1 << 16;
    /// Paddle 2.
    pub const PADDLE2: u32 = 1 << 17;
    /// Paddle 3.
    pub const PADDLE3: u32 = 1 << 18;
    /// Paddle 4.
    pub const PADDLE4: u32 = 1 << 19;
    /// Touchpad click.
    pub const TOUCHPAD: u32 = 1 << 20;
    /// Misc (Share / capture / mic).
    pub const MISC: u32 = 1 << 21;
}

/// Full state of one gamepad (sent whenever it changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GamepadState {
    /// Pad slot (0-based).
    pub pad: u8,
    /// Pressed buttons ([`pad`] bits).
    pub buttons: u32,
    /// Left trigger, 0..=255.
    pub left_trigger: u8,
    /// Right trigger, 0..=255.
    pub right_trigger: u8,
    /// Left stick, x right-positive, y up-positive.
    pub left_stick: (i16, i16),
    /// Right stick.
    pub right_stick: (i16, i16),
}

/// Touch contact phase (open newtype).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TouchPhase(pub u8);

impl TouchPhase {
    /// Contact begins.
    pub const DOWN: TouchPhase = TouchPhase(0);
    /// Contact moves.
    pub const MOVE: TouchPhase = TouchPhase(1);
    /// Contact ends.
    pub const UP: TouchPhase = TouchPhase(2);
    /// Contact cancelled.
    pub const CANCEL: TouchPhase = TouchPhase(3);
}

/// One input event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputEvent {
    /// Key press or release (evdev key code).
    Key {
        /// evdev key code.
        code: u16,
        /// Pressed (true) or released.
        down: bool,
        /// Modifiers held.
        modifiers: Modifiers,
    },
    /// Relative pointer motion.
    MouseMove {
        /// Right-positive.
        dx: i16,
        /// Down-positive.
        dy: i16,
    },
    /// Absolute pointer position on a reference surface.
    MouseAbsolute {
        /// X within `width`.
        x: u16,
        /// Y within `height`.
        y: u16,
        /// Reference width.
        width: u16,
        /// Reference height.
        height: u16,
    },
    /// Mouse button press or release.
    MouseButton {
        /// Which button.
        button: MouseButton,
        /// Pressed (true) or released.
        down: bool,
    },
    /// Scroll in 1/120 of a notch (high resolution wheels send fractions).
    Scroll {
        /// Horizontal, right-positive.
        dx: i16,
        /// Vertical, up-positive.
        dy: i16,
    },
    /// Gamepad state.
    Gamepad(GamepadState),
    /// A gamepad appeared or went away.
    GamepadPresence {
        /// Pad slot.
        pad: u8,
        /// Connected (true) or removed.
        connected: bool,
        /// Controller type hint (0 unknown, 1 Xbox, 2 PlayStation, 3 Nintendo).
        kind: u8,
    },
    /// Touch contact.
    Touch {
        /// Contact id.
        id: u32,
        /// Phase.
        phase: TouchPhase,
        /// X normalised to 0..=65535.
        x: u16,
        /// Y normalised to 0..=65535.
        y: u16,
        /// Pressure 0..=255 (0 unknown).
        pressure: u8,
    },
    /// One character of text (a client's on-screen keyboard, a paste): the host types it with
    /// whatever keys its keyboard layout needs.
    Text {
        /// The character.
        ch: char,
    },
}

impl InputEvent {
    /// A short name for the event's kind, for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            InputEvent::Key { .. } => "key",
            InputEvent::MouseMove { .. } => "mouse-move",
            InputEvent::MouseAbsolute { .. } => "mouse-abs",
            InputEvent::MouseButton { .. } => "mouse-button",
            InputEvent::Scroll { .. } => "scroll",
            InputEvent::Gamepad(_) => "gamepad",
            InputEvent::GamepadPresence { .. } => "gamepad-presence",
            InputEvent::Touch { .. } => "touch",
            InputEvent::Text { .. } => "text",
        }
    }
}

/// Feedback from the host's desktop back to a client's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Force feedback on a gamepad: motor strengths, 0 = off.
    Rumble {
        /// Pad slot (0-based).
        pad: u8,
        /// Low-frequency (large) motor, 0..=65535.
        low: u16,
        /// High-frequency (small) motor, 0..=65535.
        high: u16,
    },
}

/// Why a batch could not be decoded. Always the sender's fault.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputError {
    /// The batch ended inside an event.
    #[error("input batch truncated")]
    Truncated,
    /// A known event type with a body of the wrong length.
    #[error("input event type {kind:#04x} has a body of {len} bytes")]
    BadLength {
        /// Event type.
        kind: u8,
        /// Length given.
        len: u8,
    },
    /// A known event with a field out of range (e.g. a boolean that is neither 0 nor 1).
    #[error("input event type {0:#04x} has an invalid field")]
    BadField(u8),
}

mod kind {
    pub const KEY: u8 = 0x01;
    pub const MOUSE_MOVE: u8 = 0x02;
    pub const MOUSE_ABS: u8 = 0x03;
    pub const MOUSE_BUTTON: u8 = 0x04;
    pub const SCROLL: u8 = 0x05;
    pub const GAMEPAD: u8 = 0x06;
    pub const GAMEPAD_PRESENCE: u8 = 0x07;
    pub const TOUCH: u8 = 0x08;
    pub const TEXT: u8 = 0x09;
}

impl InputEvent {
    /// Largest encoded event, in bytes.
    pub const MAX_ENCODED: usize = 2 + 15;

    /// Appends the event's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0, 0]);
        let k = match *self {
            InputEvent::Key {
                code,
                down,
                modifiers,
            } => {
                out.extend_from_slice(&code.to_le_bytes());
                out.extend_from_slice(&[down as u8, modifiers.0]);
                kind::KEY
            }
            InputEvent::MouseMove { dx, dy } => {
                out.extend_from_slice(&dx.to_le_bytes());
                out.extend_from_slice(&dy.to_le_bytes());
                kind::MOUSE_MOVE
            }
            InputEvent::MouseAbsolute {
                x,
                y,
                width,
                height,
            } => {
                for v in [x, y, width, height] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                kind::MOUSE_ABS
            }
            InputEvent::MouseButton { button, down } => {
                out.extend_from_slice(&[button.0, down as u8]);
                kind::MOUSE_BUTTON
            }
            InputEvent::Scroll { dx, dy } => {
                out.extend_from_slice(&dx.to_le_bytes());
                out.extend_from_slice(&dy.to_le_bytes());
                kind::SCROLL
            }
            InputEvent::Gamepad(g) => {
                out.push(g.pad);
                out.extend_from_slice(&g.buttons.to_le_bytes());
                out.extend_from_slice(&[g.left_trigger, g.right_trigger]);
                for v in [
                    g.left_stick.0,
                    g.left_stick.1,
                    g.right_stick.0,
                    g.right_stick.1,
                ] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                kind::GAMEPAD
            }
            InputEvent::GamepadPresence {
                pad,
                connected,
                kind,
            } => {
                out.extend_from_slice(&[pad, connected as u8, kind]);
                kind::GAMEPAD_PRESENCE
            }
            InputEvent::Touch {
                id,
                phase,
                x,
                y,
                pressure,
            } => {
                out.extend_from_slice(&id.to_le_bytes());
                out.push(phase.0);
                out.extend_from_slice(&x.to_le_bytes());
                out.extend_from_slice(&y.to_le_bytes());
                out.push(pressure);
                kind::TOUCH
            }
            InputEvent::Text { ch } => {
                out.extend_from_slice(&u32::from(ch).to_le_bytes());
                kind::TEXT
            }
        };
        out[start] = k;
        out[start + 1] = (out.len() - start - 2) as u8;
    }

    /// Encodes a batch of events.
    pub fn encode_batch(events: &[InputEvent]) -> Vec<u8> {
        let mut out = Vec::with_capacity(events.len() * Self::MAX_ENCODED);
        for e in events {
            e.encode(&mut out);
        }
        out
    }

    /// Decodes one event body of type `k`; `Ok(None)` for an unknown type.
    fn decode_body(k: u8, b: &[u8]) -> Result<Option<InputEvent>, InputError> {
        let expect = match k {
            kind::KEY => 4,
            kind::MOUSE_MOVE | kind::SCROLL => 4,
            kind::MOUSE_ABS => 8,
            kind::MOUSE_BUTTON => 2,
            kind::GAMEPAD => 15,
            kind::GAMEPAD_PRESENCE => 3,
            kind::TOUCH => 10,
            kind::TEXT => 4,
            _ => return Ok(None),
        };
        if b.len() != expect {
            return Err(InputError::BadLength {
                kind: k,
                len: b.len() as u8,
            });
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let i16_at = |o: usize| i16::from_le_bytes([b[o], b[o + 1]]);
        let flag = |v: u8| match v {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(InputError::BadField(k)),
        };
        Ok(Some(match k {
            kind::KEY => InputEvent::Key {
                code: u16_at(0),
                down: flag(b[2])?,
                modifiers: Modifiers(b[3]),
            },
            kind::MOUSE_MOVE => InputEvent::MouseMove {
                dx: i16_at(0),
                dy: i16_at(2),
            },
            kind::SCROLL => InputEvent::Scroll {
                dx: i16_at(0),
                dy: i16_at(2),
            },
            kind::MOUSE_ABS => InputEvent::MouseAbsolute {
                x: u16_at(0),
                y: u16_at(2),
                width: u16_at(4),
                height: u16_at(6),
            },
            kind::MOUSE_BUTTON => InputEvent::MouseButton {
                button: MouseButton(b[0]),
                down: flag(b[1])?,
            },
            kind::GAMEPAD => InputEvent::Gamepad(GamepadState {
                pad: b[0],
                buttons: u32::from_le_bytes([b[1], b[2], b[3], b[4]]),
                left_trigger: b[5],
                right_trigger: b[6],
                left_stick: (i16_at(7), i16_at(9)),
                right_stick: (i16_at(11), i16_at(13)),
            }),
            kind::GAMEPAD_PRESENCE => InputEvent::GamepadPresence {
                pad: b[0],
                connected: flag(b[1])?,
                kind: b[2],
            },
            kind::TEXT => InputEvent::Text {
                ch: char::from_u32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or(InputError::BadField(k))?,
            },
            _ => InputEvent::Touch {
                id: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                phase: TouchPhase(b[4]),
                x: u16_at(5),
                y: u16_at(7),
                pressure: b[9],
            },
        }))
    }

    /// Decodes a batch. Unknown event types are skipped; a malformed known event or a
    /// truncated batch is an error (the whole batch is then dropped by the caller). Never
    /// allocates more than one event per two input bytes.
    pub fn decode_batch(mut buf: &[u8]) -> Result<Vec<InputEvent>, InputError> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let [k, len, rest @ ..] = buf else {
                return Err(InputError::Truncated);
            };
            let len = *len as usize;
            if rest.len() < len {
                return Err(InputError::Truncated);
            }
            if let Some(e) = Self::decode_body(*k, &rest[..len])? {
                out.push(e);
            }
            buf = &rest[len..];
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<InputEvent> {
        vec![
            InputEvent::Key {
                code: 30,
                down: true,
                modifiers: Modifiers(Modifiers::SHIFT),
            },
            InputEvent::MouseMove { dx: -5, dy: 300 },
            InputEvent::MouseAbsolute {
                x: 10,
                y: 20,
                width: 1920,
                height: 1080,
            },
            InputEvent::MouseButton {
                button: MouseButton::RIGHT,
                down: false,
            },
            InputEvent::Scroll { dx: 0, dy: -120 },
            InputEvent::Gamepad(GamepadState {
                pad: 1,
                buttons: pad::A | pad::DPAD_LEFT,
                left_trigger: 255,
                right_trigger: 3,
                left_stick: (-32768, 32767),
                right_stick: (1, -1),
            }),
            InputEvent::GamepadPresence {
                pad: 2,
                connected: true,
                kind: 2,
            },
            InputEvent::Touch {
                id: 9,
                phase: TouchPhase::MOVE,
                x: 65535,
                y: 0,
                pressure: 80,
            },
            InputEvent::Text { ch: 'é' },
        ]
    }

    #[test]
    fn batch_round_trip() {
        let b = InputEvent::encode_batch(&all());
        assert_eq!(InputEvent::decode_batch(&b), Ok(all()));
    }

    #[test]
    fn key_layout_is_as_documented() {
        let mut v = Vec::new();
        InputEvent::Key {
            code: 0x011E,
            down: true,
            modifiers: Modifiers(6),
        }
        .encode(&mut v);
        assert_eq!(v, [0x01, 4, 0x1E, 0x01, 1, 6]);
    }

    #[test]
    fn unknown_types_are_skipped() {
        let mut b = vec![0x7F, 3, 1, 2, 3];
        InputEvent::MouseMove { dx: 1, dy: 2 }.encode(&mut b);
        assert_eq!(
            InputEvent::decode_batch(&b),
            Ok(vec![InputEvent::MouseMove { dx: 1, dy: 2 }])
        );
    }

    #[test]
    fn malformed_batches_are_errors() {
        assert_eq!(
            InputEvent::decode_batch(&[0x01]),
            Err(InputError::Truncated)
        );
        assert_eq!(
            InputEvent::decode_batch(&[0x01, 4, 0]),
            Err(InputError::Truncated)
        );
        assert_eq!(
            InputEvent::decode_batch(&[0x01, 3, 0, 0, 0]),
            Err(InputError::BadLength { kind: 1, len: 3 })
        );
        assert_eq!(
            InputEvent::decode_batch(&[0x04, 2, 1, 7]),
            Err(InputError::BadField(4))
        );
        // A surrogate is not a character.
        assert_eq!(
            InputEvent::decode_batch(&[0x09, 4, 0x00, 0xD8, 0, 0]),
            Err(InputError::BadField(9))
        );
    }
}
