//! The app catalog clients list and launch: GameStream's app list, and the app a punktfunk/1
//! client names in its Hello. An app runs on the stream's own output (its display
//! variables) for as long as the client wants it.
//!
//! Read once at start from `apps.toml` in the config directory:
//!
//! ```toml
//! [[app]]
//! id = 1
//! title = "Desktop"
//!
//! [[app]]
//! id = 2
//! title = "Steam Big Picture"
//! command = ["steam", "-gamepadui"]
//! image = "/home/me/.config/punktfunk/steam.png"
//! ```
//!
//! Without the file the catalog holds one app, "Desktop" (id 1, no command: the stream shows
//! the desktop as it is).

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The file name in the config directory.
pub const FILE: &str = "apps.toml";

/// One app.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// Id clients launch by (non-zero, unique).
    pub id: u32,
    /// Title clients show.
    pub title: String,
    /// Program and arguments started on launch and ended on quit; none for the desktop.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Box art (PNG) clients show; a generated picture when absent.
    #[serde(default)]
    pub image: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    app: Vec<App>,
}

/// The catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    apps: Vec<App>,
}

impl Catalog {
    /// The built-in catalog: the desktop.
    pub fn builtin() -> Catalog {
        Catalog {
            apps: vec![App {
                id: 1,
                title: "Desktop".into(),
                command: None,
                image: None,
            }],
        }
    }

    /// Loads `dir/apps.toml`, or the built-in catalog when it does not exist.
    pub fn load(dir: &Path) -> Result<Catalog> {
        let path = dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Catalog::parse(&text).with_context(|| format!("in {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Catalog::builtin()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Parses and checks catalog text.
    pub fn parse(text: &str) -> Result<Catalog> {
        let f: File = toml::from_str(text)?;
        if f.app.is_empty() {
            bail!("no [[app]] entries");
        }
        let mut seen = std::collections::HashSet::new();
        for a in &f.app {
            if a.id == 0 || a.id > i32::MAX as u32 {
                bail!("app {:?}: id must be between 1 and {}", a.title, i32::MAX);
            }
            if !seen.insert(a.id) {
                bail!("app id {} is used twice", a.id);
            }
            if a.title.trim().is_empty() {
                bail!("app {}: empty title", a.id);
            }
            if a.command.as_ref().is_some_and(|c| c.is_empty()) {
                bail!(
                    "app {}: command is an empty list (leave it out for none)",
                    a.id
                );
            }
        }
        Ok(Catalog { apps: f.app })
    }

    /// Every app.
    pub fn apps(&self) -> &[App] {
        &self.apps
    }

    /// The app with this id.
    pub fn get(&self, id: u32) -> Option<&App> {
        self.apps.iter().find(|a| a.id == id)
    }

    /// The app a client names: its title (case-insensitive) or its id.
    pub fn find(&self, name: &str) -> Option<&App> {
        let name = name.trim();
        self.apps
            .iter()
            .find(|a| a.title.eq_ignore_ascii_case(name))
            .or_else(|| name.parse().ok().and_then(|id| self.get(id)))
    }

    /// Every title, for messages.
    pub fn titles(&self) -> String {
        self.apps
            .iter()
            .map(|a| format!("{:?}", a.title))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The PNG for an app: its image file, or a generated picture (box-art proportions, a colour
/// derived from the id) when it has none or the file cannot be read.
pub fn box_art(app: &App) -> Vec<u8> {
    if let Some(p) = &app.image {
        match std::fs::read(p) {
            Ok(b) if b.starts_with(b"\x89PNG") => return b,
            Ok(_) => {
                tracing::warn!(path = %p.display(), "box art is not a PNG; using a generated one")
            }
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "cannot read box art; using a generated one")
            }
        }
    }
    generated_png(app.id)
}

fn generated_png(id: u32) -> Vec<u8> {
    let (w, h) = (130u32, 180u32);
    let hue = id.wrapping_mul(2_654_435_761);
    let base = [
        (hue >> 24) as u8 / 2 + 40,
        (hue >> 16) as u8 / 2 + 40,
        (hue >> 8) as u8 / 2 + 60,
    ];
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for _ in 0..w {
            let shade = (y * 60 / h) as u8;
            px.extend(base.iter().map(|c| c.saturating_add(shade)));
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().expect("writing to a Vec cannot fail");
        wr.write_image_data(&px)
            .expect("writing to a Vec cannot fail");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_checks_and_defaults() {
        let c = Catalog::parse(
            "[[app]]\nid = 1\ntitle = \"Desktop\"\n[[app]]\nid = 7\ntitle = \"Steam\"\ncommand = [\"steam\", \"-gamepadui\"]\n",
        )
        .unwrap();
        assert_eq!(c.apps().len(), 2);
        assert_eq!(c.get(7).unwrap().command.as_ref().unwrap()[0], "steam");
        assert_eq!(c.find("steam").unwrap().id, 7);
        assert_eq!(c.find("1").unwrap().title, "Desktop");
        assert!(c.find("Minesweeper").is_none());
        assert_eq!(c.titles(), "\"Desktop\", \"Steam\"");
        for bad in [
            "",
            "[[app]]\nid = 0\ntitle = \"x\"",
            "[[app]]\nid = 1\ntitle = \"a\"\n[[app]]\nid = 1\ntitle = \"b\"",
            "[[app]]\nid = 1\ntitle = \" \"",
            "[[app]]\nid = 1\ntitle = \"a\"\ncommand = []",
            "[[app]]\nid = 1\ntitle = \"a\"\ncolour = 3",
            "not toml",
        ] {
            assert!(Catalog::parse(bad).is_err(), "{bad}");
        }
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            Catalog::load(d.path()).unwrap().get(1).unwrap().title,
            "Desktop"
        );
        let png = box_art(&Catalog::builtin().apps()[0]);
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    }
}
