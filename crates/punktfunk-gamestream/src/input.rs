//! Moonlight input packets (the payload of control message 0x0206) decoded into the core input
//! model.
//!
//! A packet is `BE32 size ‖ LE32 magic ‖ body`, where `size` counts everything after itself.
//! Field endianness inside bodies is mixed (mouse fields big-endian, controller fields
//! little-endian) and follows the protocol notes field by field. Keys arrive as Windows
//! virtual-key codes on a US layout and leave as Linux evdev codes ([`vk_to_evdev`]).
//!
//! Every length is checked before a field is read; a packet too short for its type is an error,
//! a type this host has no model for is [`Input::Unmodelled`] so the caller can count it.

use punktfunk_core::input::{GamepadState, InputEvent, Modifiers, MouseButton, TouchPhase};
use thiserror::Error;

/// Event types (`magic`).
pub mod magic {
    /// Key down.
    pub const KEY_DOWN: u32 = 0x03;
    /// Key up.
    pub const KEY_UP: u32 = 0x04;
    /// Absolute mouse position.
    pub const MOUSE_ABS: u32 = 0x05;
    /// Relative mouse motion.
    pub const MOUSE_REL: u32 = 0x07;
    /// Mouse button down.
    pub const BUTTON_DOWN: u32 = 0x08;
    /// Mouse button up.
    pub const BUTTON_UP: u32 = 0x09;
    /// Vertical scroll.
    pub const SCROLL: u32 = 0x0A;
    /// Multi-controller state.
    pub const CONTROLLER: u32 = 0x0C;
    /// Enable haptics.
    pub const HAPTICS: u32 = 0x0D;
    /// UTF-8 text.
    pub const TEXT: u32 = 0x17;
    /// Horizontal scroll.
    pub const HSCROLL: u32 = 0x5500_0001;
    /// Touch.
    pub const TOUCH: u32 = 0x5500_0002;
    /// Pen.
    pub const PEN: u32 = 0x5500_0003;
    /// Controller arrival.
    pub const ARRIVAL: u32 = 0x5500_0004;
    /// Controller touchpad.
    pub const CONTROLLER_TOUCH: u32 = 0x5500_0005;
    /// Controller motion sensor.
    pub const MOTION: u32 = 0x5500_0006;
    /// Controller battery.
    pub const BATTERY: u32 = 0x5500_0007;
}

/// A packet that does not fit its declared type.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum InputError {
    /// Shorter than the header or its type's body.
    #[error("input packet truncated ({have} bytes, type {magic:#x} needs {need})")]
    Truncated {
        /// Event type.
        magic: u32,
        /// Bytes present.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The size field disagrees with the packet.
    #[error("input size field {0} does not match the packet")]
    Size(u32),
    /// A field value outside its range (e.g. mouse button 9).
    #[error("input field out of range: {0}")]
    Field(&'static str),
}

/// One decoded input packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Something the core input model carries.
    Event(InputEvent),
    /// A key whose virtual-key code has no evdev equivalent here.
    UnmappedKey(u8),
    /// Text typed through the client's on-screen keyboard (one code point per packet).
    Text(String),
    /// A known type with no model on this host yet (pen, motion, battery, haptics, …).
    Unmodelled(&'static str),
    /// A type this host does not know.
    Unknown(u32),
}

fn need(p: &[u8], magic: u32, n: usize) -> Result<(), InputError> {
    if p.len() < n {
        Err(InputError::Truncated {
            magic,
            have: p.len(),
            need: n,
        })
    } else {
        Ok(())
    }
}

fn be16(p: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([p[o], p[o + 1]])
}
fn le16(p: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([p[o], p[o + 1]])
}
fn le32(p: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(p[o..o + 4].try_into().expect("4 bytes"))
}
fn f32le(p: &[u8], o: usize) -> f32 {
    f32::from_le_bytes(p[o..o + 4].try_into().expect("4 bytes"))
}
/// 0.0..=1.0 → 0..=65535 (NaN and out-of-range values clamp).
fn unit_to_u16(v: f32) -> u16 {
    if v.is_nan() {
        return 0;
    }
    (v.clamp(0.0, 1.0) * 65535.0).round() as u16
}

/// Decodes one input packet (the 0x0206 payload).
pub fn decode(p: &[u8]) -> Result<Input, InputError> {
    if p.len() < 8 {
        return Err(InputError::Truncated {
            magic: 0,
            have: p.len(),
            need: 8,
        });
    }
    let size = u32::from_be_bytes(p[..4].try_into().expect("4 bytes"));
    if size as usize != p.len() - 4 {
        return Err(InputError::Size(size));
    }
    let m = le32(p, 4);
    let ev = |e| Ok(Input::Event(e));
    match m {
        magic::KEY_DOWN | magic::KEY_UP => {
            need(p, m, 12)?;
            let vk = (le16(p, 9) & 0xFF) as u8;
            match vk_to_evdev(vk) {
                Some(code) => ev(InputEvent::Key {
                    code,
                    down: m == magic::KEY_DOWN,
                    modifiers: Modifiers(p[11] & 0x0F),
                }),
                None => Ok(Input::UnmappedKey(vk)),
            }
        }
        magic::MOUSE_REL => {
            need(p, m, 12)?;
            ev(InputEvent::MouseMove {
                dx: be16(p, 8) as i16,
                dy: be16(p, 10) as i16,
            })
        }
        magic::MOUSE_ABS => {
            need(p, m, 18)?;
            ev(InputEvent::MouseAbsolute {
                x: be16(p, 8),
                y: be16(p, 10),
                width: be16(p, 14),
                height: be16(p, 16),
            })
        }
        magic::BUTTON_DOWN | magic::BUTTON_UP => {
            need(p, m, 9)?;
            if !(1..=5).contains(&p[8]) {
                return Err(InputError::Field("mouse button"));
            }
            ev(InputEvent::MouseButton {
                button: MouseButton(p[8]),
                down: m == magic::BUTTON_DOWN,
            })
        }
        magic::SCROLL => {
            need(p, m, 10)?;
            ev(InputEvent::Scroll {
                dx: 0,
                dy: be16(p, 8) as i16,
            })
        }
        magic::HSCROLL => {
            need(p, m, 10)?;
            ev(InputEvent::Scroll {
                dx: be16(p, 8) as i16,
                dy: 0,
            })
        }
        magic::CONTROLLER => {
            need(p, m, 32)?;
            let pad = le16(p, 10);
            if pad > 15 {
                return Err(InputError::Field("controller number"));
            }
            let mask = le16(p, 12);
            if mask & (1 << pad) == 0 {
                return ev(InputEvent::GamepadPresence {
                    pad: pad as u8,
                    connected: false,
                    kind: 0,
                });
            }
            ev(InputEvent::Gamepad(GamepadState {
                pad: pad as u8,
                buttons: u32::from(le16(p, 16)) | u32::from(le16(p, 30)) << 16,
                left_trigger: p[18],
                right_trigger: p[19],
                left_stick: (le16(p, 20) as i16, le16(p, 22) as i16),
                right_stick: (le16(p, 24) as i16, le16(p, 26) as i16),
            }))
        }
        magic::ARRIVAL => {
            need(p, m, 16)?;
            if p[8] > 15 {
                return Err(InputError::Field("controller number"));
            }
            ev(InputEvent::GamepadPresence {
                pad: p[8],
                connected: true,
                kind: p[9],
            })
        }
        magic::TOUCH => {
            need(p, m, 36)?;
            let phase = match p[8] {
                1 => TouchPhase::DOWN,
                2 => TouchPhase::UP,
                3 => TouchPhase::MOVE,
                4 | 7 => TouchPhase::CANCEL,
                _ => return Ok(Input::Unmodelled("touch hover")),
            };
            let pressure = f32le(p, 24);
            ev(InputEvent::Touch {
                id: le32(p, 12),
                phase,
                x: unit_to_u16(f32le(p, 16)),
                y: unit_to_u16(f32le(p, 20)),
                pressure: (unit_to_u16(pressure) >> 8) as u8,
            })
        }
        magic::TEXT => {
            let text = std::str::from_utf8(&p[8..]).map_err(|_| InputError::Field("text"))?;
            if text.chars().count() != 1 {
                return Err(InputError::Field("text (one code point per packet)"));
            }
            Ok(Input::Text(text.to_string()))
        }
        magic::HAPTICS => Ok(Input::Unmodelled("haptics enable")),
        magic::PEN => Ok(Input::Unmodelled("pen")),
        magic::CONTROLLER_TOUCH => Ok(Input::Unmodelled("controller touchpad")),
        magic::MOTION => Ok(Input::Unmodelled("controller motion")),
        magic::BATTERY => Ok(Input::Unmodelled("controller battery")),
        other => Ok(Input::Unknown(other)),
    }
}

/// A Windows virtual-key code (US layout) as a Linux evdev key code.
pub fn vk_to_evdev(vk: u8) -> Option<u16> {
    // evdev numbers for the letter rows, in keyboard order.
    const LETTERS: [u16; 26] = [
        30, 48, 46, 32, 18, 33, 34, 35, 23, 36, 37, 38, 50, 49, 24, 25, 16, 19, 31, 20, 22, 47, 17,
        45, 21, 44,
    ];
    const KEYPAD: [u16; 10] = [82, 79, 80, 81, 75, 76, 77, 71, 72, 73];
    Some(match vk {
        0x08 => 14,  // Backspace
        0x09 => 15,  // Tab
        0x0C => 355, // Clear
        0x0D => 28,  // Enter
        0x10 => 42,  // Shift
        0x11 => 29,  // Ctrl
        0x12 => 56,  // Alt
        0x13 => 119, // Pause
        0x14 => 58,  // Caps Lock
        0x1B => 1,   // Esc
        0x20 => 57,  // Space
        0x21 => 104, // Page Up
        0x22 => 109, // Page Down
        0x23 => 107, // End
        0x24 => 102, // Home
        0x25 => 105, // Left
        0x26 => 103, // Up
        0x27 => 106, // Right
        0x28 => 108, // Down
        0x29 => 353, // Select
        0x2C => 99,  // Print Screen (SysRq)
        0x2D => 110, // Insert
        0x2E => 111, // Delete
        0x30 => 11,  // 0
        0x31..=0x39 => u16::from(vk - 0x31) + 2,
        0x41..=0x5A => LETTERS[usize::from(vk - 0x41)],
        0x5B => 125, // Left Win
        0x5C => 126, // Right Win
        0x5D => 127, // Menu
        0x5F => 142, // Sleep
        0x60..=0x69 => KEYPAD[usize::from(vk - 0x60)],
        0x6A => 55,                                // Keypad *
        0x6B => 78,                                // Keypad +
        0x6C => 121,                               // Keypad separator
        0x6D => 74,                                // Keypad -
        0x6E => 83,                                // Keypad .
        0x6F => 98,                                // Keypad /
        0x70..=0x79 => u16::from(vk - 0x70) + 59,  // F1–F10
        0x7A => 87,                                // F11
        0x7B => 88,                                // F12
        0x7C..=0x87 => u16::from(vk - 0x7C) + 183, // F13–F24
        0x90 => 69,                                // Num Lock
        0x91 => 70,                                // Scroll Lock
        0xA0 => 42,                                // Left Shift
        0xA1 => 54,                                // Right Shift
        0xA2 => 29,                                // Left Ctrl
        0xA3 => 97,                                // Right Ctrl
        0xA4 => 56,                                // Left Alt
        0xA5 => 100,                               // Right Alt
        0xA6 => 158,                               // Browser back
        0xA7 => 159,                               // Browser forward
        0xA8 => 173,                               // Browser refresh
        0xA9 => 128,                               // Browser stop
        0xAA => 217,                               // Browser search
        0xAB => 156,                               // Browser favourites
        0xAC => 172,                               // Browser home
        0xAD => 113,                               // Mute
        0xAE => 114,                               // Volume down
        0xAF => 115,                               // Volume up
        0xB0 => 163,                               // Next track
        0xB1 => 165,                               // Previous track
        0xB2 => 166,                               // Stop media
        0xB3 => 164,                               // Play/pause
        0xB4 => 155,                               // Mail
        0xBA => 39,                                // ;
        0xBB => 13,                                // =
        0xBC => 51,                                // ,
        0xBD => 12,                                // -
        0xBE => 52,                                // .
        0xBF => 53,                                // /
        0xC0 => 41,                                // `
        0xDB => 26,                                // [
        0xDC => 43,                                // backslash
        0xDD => 27,                                // ]
        0xDE => 40,                                // '
        0xE2 => 86,                                // ISO <>
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a packet the way the client does: BE32 size, LE32 magic, body.
    fn pkt(magic: u32, body: &[u8]) -> Vec<u8> {
        let mut p = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        p.extend_from_slice(&magic.to_le_bytes());
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn keyboard_with_the_high_bit_and_modifiers() {
        // 'A' (VK 0x41) sent as 0x8041 with Shift held.
        let down = pkt(magic::KEY_DOWN, &[0, 0x41, 0x80, 0x01, 0, 0]);
        assert_eq!(down.len(), 14);
        assert_eq!(
            decode(&down).unwrap(),
            Input::Event(InputEvent::Key {
                code: 30,
                down: true,
                modifiers: Modifiers(1)
            })
        );
        let up = pkt(magic::KEY_UP, &[0, 0x0D, 0x80, 0, 0, 0]);
        assert!(matches!(
            decode(&up).unwrap(),
            Input::Event(InputEvent::Key {
                code: 28,
                down: false,
                ..
            })
        ));
        let unmapped = pkt(magic::KEY_DOWN, &[0, 0xFF, 0x80, 0, 0, 0]);
        assert_eq!(decode(&unmapped).unwrap(), Input::UnmappedKey(0xFF));
    }

    #[test]
    fn mouse_packets_use_big_endian_fields() {
        let rel = pkt(magic::MOUSE_REL, &[0xFF, 0xFF, 0x00, 0x05]);
        assert_eq!(
            decode(&rel).unwrap(),
            Input::Event(InputEvent::MouseMove { dx: -1, dy: 5 })
        );
        let abs = pkt(
            magic::MOUSE_ABS,
            &[0x01, 0x00, 0x00, 0x80, 0, 0, 0x07, 0x7F, 0x04, 0x37],
        );
        assert_eq!(
            decode(&abs).unwrap(),
            Input::Event(InputEvent::MouseAbsolute {
                x: 256,
                y: 128,
                width: 1919,
                height: 1079
            })
        );
        assert_eq!(
            decode(&pkt(magic::BUTTON_DOWN, &[3])).unwrap(),
            Input::Event(InputEvent::MouseButton {
                button: MouseButton::RIGHT,
                down: true
            })
        );
        assert_eq!(
            decode(&pkt(magic::BUTTON_UP, &[9])),
            Err(InputError::Field("mouse button"))
        );
        let wheel = pkt(magic::SCROLL, &[0xFF, 0x88, 0xFF, 0x88, 0, 0]);
        assert_eq!(
            decode(&wheel).unwrap(),
            Input::Event(InputEvent::Scroll { dx: 0, dy: -120 })
        );
        let h = pkt(magic::HSCROLL, &[0x00, 0x78]);
        assert_eq!(
            decode(&h).unwrap(),
            Input::Event(InputEvent::Scroll { dx: 120, dy: 0 })
        );
    }

    fn controller(pad: u16, mask: u16, buttons: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0x1Au16.to_le_bytes());
        b.extend_from_slice(&pad.to_le_bytes());
        b.extend_from_slice(&mask.to_le_bytes());
        b.extend_from_slice(&0x14u16.to_le_bytes());
        b.extend_from_slice(&(buttons as u16).to_le_bytes());
        b.extend_from_slice(&[200, 10]);
        for v in [1000i16, -1000, 32767, -32768] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&0x9Cu16.to_le_bytes());
        b.extend_from_slice(&((buttons >> 16) as u16).to_le_bytes());
        b.extend_from_slice(&0x55u16.to_le_bytes());
        pkt(magic::CONTROLLER, &b)
    }

    #[test]
    fn controller_state_arrival_and_removal() {
        let p = controller(1, 0b11, 0x1000 | 0x0100 | 0x10_0000);
        assert_eq!(p.len(), 34);
        assert_eq!(
            decode(&p).unwrap(),
            Input::Event(InputEvent::Gamepad(GamepadState {
                pad: 1,
                buttons: 0x1000 | 0x0100 | 0x10_0000,
                left_trigger: 200,
                right_trigger: 10,
                left_stick: (1000, -1000),
                right_stick: (32767, -32768),
            }))
        );
        assert_eq!(
            decode(&controller(1, 0b01, 0)).unwrap(),
            Input::Event(InputEvent::GamepadPresence {
                pad: 1,
                connected: false,
                kind: 0
            })
        );
        assert_eq!(
            decode(&controller(16, 0xFFFF, 0)),
            Err(InputError::Field("controller number"))
        );
        let arrival = pkt(magic::ARRIVAL, &[2, 1, 0x03, 0, 0xFF, 0xFF, 0x3F, 0]);
        assert_eq!(
            decode(&arrival).unwrap(),
            Input::Event(InputEvent::GamepadPresence {
                pad: 2,
                connected: true,
                kind: 1
            })
        );
    }

    #[test]
    fn touch_text_and_unmodelled_types() {
        let mut b = vec![1, 0, 0xFF, 0xFF];
        b.extend_from_slice(&7u32.to_le_bytes());
        for v in [0.5f32, 1.5, 1.0, 0.0, 0.0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(
            decode(&pkt(magic::TOUCH, &b)).unwrap(),
            Input::Event(InputEvent::Touch {
                id: 7,
                phase: TouchPhase::DOWN,
                x: 32768,
                y: 65535,
                pressure: 255
            })
        );
        assert_eq!(
            decode(&pkt(magic::TEXT, "é".as_bytes())).unwrap(),
            Input::Text("é".into())
        );
        assert!(decode(&pkt(magic::TEXT, &[0xFF])).is_err());
        assert_eq!(
            decode(&pkt(magic::HAPTICS, &[1, 0])).unwrap(),
            Input::Unmodelled("haptics enable")
        );
        assert_eq!(decode(&pkt(0x1234, &[])).unwrap(), Input::Unknown(0x1234));
    }

    #[test]
    fn lengths_are_checked_before_reading() {
        assert!(decode(&[]).is_err());
        // Size field lies.
        let mut p = pkt(magic::MOUSE_REL, &[0, 1, 0, 1]);
        p[3] = 99;
        assert_eq!(decode(&p), Err(InputError::Size(99)));
        // Every type with a body shorter than it needs.
        for m in [
            magic::KEY_DOWN,
            magic::MOUSE_ABS,
            magic::MOUSE_REL,
            magic::BUTTON_DOWN,
            magic::SCROLL,
            magic::HSCROLL,
            magic::CONTROLLER,
            magic::ARRIVAL,
            magic::TOUCH,
        ] {
            assert!(
                matches!(decode(&pkt(m, &[])), Err(InputError::Truncated { .. })),
                "{m:#x}"
            );
        }
    }

    #[test]
    fn every_mapped_virtual_key_is_a_distinct_key_except_aliases() {
        let mut seen = std::collections::HashMap::new();
        for vk in 0..=255u8 {
            if let Some(code) = vk_to_evdev(vk) {
                assert!(code > 0 && code < 0x300, "vk {vk:#x}");
                seen.entry(code).or_insert_with(Vec::new).push(vk);
            }
        }
        // Generic and left-hand modifiers are the same keys.
        for (code, vks) in &seen {
            if vks.len() > 1 {
                assert!(
                    matches!(vks.as_slice(), [0x10, 0xA0] | [0x11, 0xA2] | [0x12, 0xA4]),
                    "evdev {code} from {vks:x?}"
                );
            }
        }
        assert_eq!(vk_to_evdev(0x5A), Some(44)); // Z
        assert_eq!(vk_to_evdev(0x39), Some(10)); // 9
        assert_eq!(vk_to_evdev(0x87), Some(194)); // F24
    }
}
