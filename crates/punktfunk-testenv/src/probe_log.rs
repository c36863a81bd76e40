//! The desktop probe app's JSON-lines log, read back by the desktop tests: what input the app
//! received, with the checks several tests make.

use serde_json::Value;
use std::path::Path;

/// The lines of one probe log.
#[derive(Debug, Clone, Default)]
pub struct ProbeLog {
    /// Every line that parsed, in order.
    pub lines: Vec<Value>,
}

fn is(v: &Value, event: &str) -> bool {
    v["event"] == event
}

fn near(v: &Value, key: &str, want: f64) -> bool {
    v[key].as_f64().is_some_and(|x| (x - want).abs() < 2.0)
}

impl ProbeLog {
    /// Reads `path` (a missing or partly written file gives what parsed so far).
    pub fn read(path: &Path) -> ProbeLog {
        ProbeLog {
            lines: std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
        }
    }

    /// Whether any line satisfies `f`.
    pub fn any(&self, f: impl Fn(&Value) -> bool) -> bool {
        self.lines.iter().any(f)
    }

    /// Whether evdev key `code` was pressed (`true`) or released (`false`).
    pub fn key(&self, code: u64, pressed: bool) -> bool {
        let state = if pressed { "pressed" } else { "released" };
        self.any(|v| is(v, "key") && v["key"] == code && v["state"] == state)
    }

    /// The text of every key press, in order (keys without text left out).
    pub fn typed(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|v| is(v, "key") && v["state"] == "pressed")
            .filter_map(|v| v["utf8"].as_str())
            .collect()
    }

    /// Asserts the pointer input of the desktop tests' scripts arrived: the pointer at
    /// `middle` (surface coordinates), a relative move of (+10, +5) from there, the left and
    /// right buttons each pressed and released, a wheel notch up and one to the right.
    ///
    /// # Panics
    /// On the first that is missing, with the whole log.
    pub fn assert_pointer_script(&self, middle: (f64, f64)) {
        let has =
            |what: &str, ok: bool| assert!(ok, "no {what} in the probe's log: {:?}", self.lines);
        has(
            "pointer at the middle",
            self.any(|v| {
                (is(v, "motion") || is(v, "enter"))
                    && near(v, "x", middle.0)
                    && near(v, "y", middle.1)
            }),
        );
        has(
            "relative motion",
            self.any(|v| {
                is(v, "motion") && near(v, "x", middle.0 + 10.0) && near(v, "y", middle.1 + 5.0)
            }),
        );
        for button in [0x110, 0x111] {
            for state in ["pressed", "released"] {
                has(
                    &format!("button {button:#x} {state}"),
                    self.any(|v| is(v, "button") && v["button"] == button && v["state"] == state),
                );
            }
        }
        let axis = |name: &str, up: bool| {
            self.any(|v| {
                is(v, "axis")
                    && v["axis"] == name
                    && v["value"]
                        .as_f64()
                        .is_some_and(|x| (x < 0.0) == up && x != 0.0)
            })
        };
        has("scroll up", axis("vertical", true));
        has("scroll right", axis("horizontal", false));
    }
}
