//! Peer-chosen text made safe to print: client names, device names, a host's Bye message.
//!
//! A peer picks these strings, and they end up in the operator's log and terminal. Printed raw,
//! a newline or an ANSI escape sequence lets the peer forge whole log lines ("PIN accepted"),
//! move the cursor or retitle the terminal. [`Escaped`] shows every control character
//! (C0, DEL, C1) and the Unicode line and paragraph separators and bidirectional overrides as
//! Rust-style escapes (`\n`, `\u{1b}`), and cuts very long text with an ellipsis, so what is
//! printed is always one line the peer cannot dress up as the host's own.

use std::fmt;

/// Longest text shown before it is cut (in characters).
pub const MAX_SHOWN: usize = 256;

/// Displays its text with control characters escaped and at most [`MAX_SHOWN`] characters.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

/// Characters a terminal or log viewer would act on, or that reorder what follows.
fn is_hazard(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX_SHOWN {
                return f.write_str("…");
            }
            if c == '\\' {
                f.write_str("\\\\")?;
            } else if is_hazard(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// `s` as it is safe to print (see [`Escaped`]).
pub fn escaped(s: &str) -> String {
    Escaped(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_log_line_stays_on_one_line() {
        let name = "tablet\n2026-01-01T00:00:00Z  INFO PIN accepted\r";
        let shown = escaped(name);
        assert_eq!(shown, "tablet\\n2026-01-01T00:00:00Z  INFO PIN accepted\\r");
        assert!(!shown.chars().any(char::is_control));
    }

    #[test]
    fn terminal_escapes_and_bidi_overrides_are_shown_not_obeyed() {
        assert_eq!(escaped("\u{1b}]0;owned\u{7}"), "\\u{1b}]0;owned\\u{7}");
        assert_eq!(
            escaped("a\u{202e}b\u{2028}c\u{9b}"),
            "a\\u{202e}b\\u{2028}c\\u{9b}"
        );
        // A backslash is escaped too, so "\n" typed literally is told apart from a newline.
        assert_eq!(escaped("a\\nb"), "a\\\\nb");
    }

    #[test]
    fn a_peers_bye_message_is_shown_escaped_in_errors() {
        let e = crate::handshake::HandshakeError::Refused {
            reason: crate::control::ByeReason::BUSY,
            message: "busy\nINFO paired".into(),
        };
        assert!(e.to_string().ends_with("busy\\nINFO paired"), "{e}");
    }

    #[test]
    fn ordinary_names_are_unchanged_and_long_ones_cut() {
        assert_eq!(
            escaped("Wohnzimmer-PC (Jörg) 🎮"),
            "Wohnzimmer-PC (Jörg) 🎮"
        );
        let long = "x".repeat(1000);
        let shown = escaped(&long);
        assert_eq!(shown.chars().count(), MAX_SHOWN + 1);
        assert!(shown.ends_with('…'));
    }
}
