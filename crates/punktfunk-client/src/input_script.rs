//! Scripted input: a timed list of input events the client sends during a stream, for tests,
//! demos and latency measurements of the input path.
//!
//! One event per line, `#` starts a comment; times are milliseconds after streaming starts:
//!
//! ```text
//! 500  move 10 -5              # relative motion, dx dy
//! 600  abs 320 240 640 480     # absolute: x y within a width x height reference
//! 700  button left down        # left, middle, right, back, forward, or 1..=255
//! 750  button left up
//! 800  scroll 0 -120           # dx dy in 1/120 notch, up-positive
//! 900  key 30 down shift       # evdev code, down/up, then modifiers (shift ctrl alt meta)
//! 950  key 30 up
//! 1000 text Grüße              # each character one text event
//! ```

use punktfunk_core::input::{InputEvent, Modifiers, MouseButton};
use std::time::Duration;

/// Most events a script may hold.
pub const MAX_EVENTS: usize = 100_000;

/// One event and when it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scripted {
    /// After the start of streaming.
    pub at: Duration,
    /// The event.
    pub event: InputEvent,
}

/// Parses a script; the error names the line.
pub fn parse(text: &str) -> Result<Vec<Scripted>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at_line = |e: String| format!("line {}: {e}: {raw:?}", i + 1);
        let (at, rest) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| at_line("expected TIME_MS EVENT ...".into()))?;
        let at: u64 = at
            .parse()
            .map_err(|_| at_line(format!("{at:?} is not a time in milliseconds")))?;
        let at = Duration::from_millis(at);
        let rest = rest.trim_start();
        let (kind, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if kind == "text" {
            let text = args.trim_start();
            if text.is_empty() {
                return Err(at_line("text needs characters".into()));
            }
            for ch in text.chars() {
                out.push(Scripted {
                    at,
                    event: InputEvent::Text { ch },
                });
            }
        } else {
            let a: Vec<&str> = args.split_whitespace().collect();
            let event = event(kind, &a).map_err(at_line)?;
            out.push(Scripted { at, event });
        }
        if out.len() > MAX_EVENTS {
            return Err(format!("more than {MAX_EVENTS} events"));
        }
    }
    out.sort_by_key(|s| s.at);
    Ok(out)
}

fn num<T: std::str::FromStr>(a: &[&str], i: usize, what: &str) -> Result<T, String> {
    let v = a.get(i).ok_or_else(|| format!("missing {what}"))?;
    v.parse()
        .map_err(|_| format!("{v:?} is not a valid {what}"))
}

fn updown(a: &[&str], i: usize) -> Result<bool, String> {
    match a.get(i).copied() {
        Some("down") => Ok(true),
        Some("up") => Ok(false),
        other => Err(format!("expected down or up, got {other:?}")),
    }
}

fn event(kind: &str, a: &[&str]) -> Result<InputEvent, String> {
    let arity = |n: usize| {
        if a.len() == n {
            Ok(())
        } else {
            Err(format!("{kind} takes {n} values, got {}", a.len()))
        }
    };
    Ok(match kind {
        "move" => {
            arity(2)?;
            InputEvent::MouseMove {
                dx: num(a, 0, "dx")?,
                dy: num(a, 1, "dy")?,
            }
        }
        "abs" => {
            arity(4)?;
            InputEvent::MouseAbsolute {
                x: num(a, 0, "x")?,
                y: num(a, 1, "y")?,
                width: num(a, 2, "width")?,
                height: num(a, 3, "height")?,
            }
        }
        "button" => {
            arity(2)?;
            let button = match a[0] {
                "left" => MouseButton::LEFT,
                "middle" => MouseButton::MIDDLE,
                "right" => MouseButton::RIGHT,
                "back" => MouseButton::X1,
                "forward" => MouseButton::X2,
                n => MouseButton(num(&[n], 0, "button")?),
            };
            InputEvent::MouseButton {
                button,
                down: updown(a, 1)?,
            }
        }
        "scroll" => {
            arity(2)?;
            InputEvent::Scroll {
                dx: num(a, 0, "dx")?,
                dy: num(a, 1, "dy")?,
            }
        }
        "key" => {
            if a.len() < 2 {
                return Err("key takes CODE down|up [MODIFIERS]".into());
            }
            let mut m = 0u8;
            for name in &a[2..] {
                m |= match *name {
                    "shift" => Modifiers::SHIFT,
                    "ctrl" => Modifiers::CTRL,
                    "alt" => Modifiers::ALT,
                    "meta" => Modifiers::META,
                    other => return Err(format!("unknown modifier {other:?}")),
                };
            }
            InputEvent::Key {
                code: num(a, 0, "key code")?,
                down: updown(a, 1)?,
                modifiers: Modifiers(m),
            }
        }
        other => {
            return Err(format!(
                "unknown event {other:?} (move, abs, button, scroll, key, text)"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_in_time_order_and_text_is_one_event_per_character() {
        let s = parse(
            "# a comment\n900 key 30 down shift ctrl\n100 move 10 -5\n200 abs 1 2 640 480\n\
             300 button right up\n400 scroll 0 -120\n1000 text aé\n",
        )
        .unwrap();
        assert_eq!(s.len(), 7);
        assert_eq!(s[0].event, InputEvent::MouseMove { dx: 10, dy: -5 });
        assert_eq!(
            s[2].event,
            InputEvent::MouseButton {
                button: MouseButton::RIGHT,
                down: false
            }
        );
        assert_eq!(
            s[4].event,
            InputEvent::Key {
                code: 30,
                down: true,
                modifiers: Modifiers(Modifiers::SHIFT | Modifiers::CTRL)
            }
        );
        assert_eq!(s[6].event, InputEvent::Text { ch: 'é' });
        assert_eq!(s[6].at, Duration::from_millis(1000));
    }

    #[test]
    fn mistakes_name_their_line() {
        for (text, says) in [
            ("x move 1 2", "line 1: \"x\" is not a time"),
            ("\n10 move 1", "line 2: move takes 2 values"),
            ("10 key 30 sideways", "expected down or up"),
            ("10 jump", "unknown event \"jump\""),
            ("10 scroll 0 99999", "not a valid dy"),
            ("10 key 30 down hyper", "unknown modifier"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
