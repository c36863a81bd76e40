//! Private headless desktops for punktfunk's tests and demo.
//!
//! [`HeadlessSway`] starts sway with wlroots' headless backend and the pixman renderer (no GPU,
//! no input devices) in a runtime directory of its own, and kills it by PID when dropped. sway
//! refuses to run as root, so as root it runs as the unprivileged user `punktfunk-sway`, created
//! on first use; root clients (the tests, the host) still reach its sockets.
//!
//! The IPC socket path is fixed (`SWAYSOCK` is handed to sway, which then creates exactly that
//! socket), so a sway that is killed and started again ([`HeadlessSway::restart`]) is found
//! where the old one was: a host that read the environment once reaches the new compositor.
//!
//! A missing `sway` binary is an error, not a skip: the tests that need it fail and say to run
//! `scripts/install-deps.sh`.
//!
//! [`ProbeLog`] reads the desktop probe app's log of the input it received.
//!
//! [`collect_lines`] keeps what a child process writes (its log) for a test to read later.
//!
//! [`sibling_bin`] finds (and if need be builds) another package's binary in the caller's
//! target directory, for process tests that run the host, the client and the probe app together.

#![forbid(unsafe_code)]

mod probe_log;
pub use probe_log::ProbeLog;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The user sway runs as when the caller is root.
pub const SWAY_USER: &str = "punktfunk-sway";

/// How long sway may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// The sway configuration: no borders (surface coordinates equal output coordinates), focus
/// moves only on clicks, no Xwayland, no bar.
const CONFIG: &str = "\
default_border none
default_floating_border none
focus_follows_mouse no
xwayland disable
";

/// A headless sway of the caller's own.
#[derive(Debug)]
pub struct HeadlessSway {
    child: Option<Child>,
    runtime_dir: PathBuf,
    swaysock: PathBuf,
    wayland_display: String,
    run_as: Option<(u32, u32)>,
}

impl HeadlessSway {
    /// Starts sway and waits until both its IPC socket and its Wayland socket answer.
    pub fn start() -> Result<HeadlessSway, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let run_as = if is_root() {
            Some(ensure_user(SWAY_USER)?)
        } else {
            None
        };
        let runtime_dir = std::env::temp_dir().join(format!(
            "punktfunk-sway-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&runtime_dir);
        fs::create_dir_all(&runtime_dir).map_err(|e| format!("{}: {e}", runtime_dir.display()))?;
        fs::set_permissions(&runtime_dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", runtime_dir.display()))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&runtime_dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", runtime_dir.display()))?;
        }
        let config = runtime_dir.join("sway.conf");
        fs::write(&config, CONFIG).map_err(|e| format!("{}: {e}", config.display()))?;
        let mut sway = HeadlessSway {
            child: None,
            swaysock: runtime_dir.join("sway-ipc.sock"),
            wayland_display: String::new(),
            runtime_dir,
            run_as,
        };
        sway.launch()?;
        Ok(sway)
    }

    fn launch(&mut self) -> Result<(), String> {
        // A socket left by a killed sway would make the new one pick another name.
        let _ = fs::remove_file(&self.swaysock);
        for entry in fs::read_dir(&self.runtime_dir)
            .map_err(|e| format!("{}: {e}", self.runtime_dir.display()))?
            .flatten()
        {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("wayland-") {
                let _ = fs::remove_file(entry.path());
            }
        }
        let log_path = self.runtime_dir.join("sway.log");
        let log =
            fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut cmd = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg("sway");
                c
            }
            None => Command::new("sway"),
        };
        cmd.arg("--config")
            .arg(self.runtime_dir.join("sway.conf"))
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", &self.runtime_dir)
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .env("SWAYSOCK", &self.swaysock)
            .env("WLR_BACKENDS", "headless")
            .env("WLR_RENDERER", "pixman")
            .env("WLR_LIBINPUT_NO_DEVICES", "1")
            .env("WLR_HEADLESS_OUTPUTS", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        if which("sway").is_none() {
            return Err("sway is not installed (run scripts/install-deps.sh)".into());
        }
        let child = cmd.spawn().map_err(|e| format!("starting sway: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "sway exited at start ({status}): {}",
                    self.log_tail()
                ));
            }
            if let Some(display) = self.find_wayland_socket() {
                if UnixStream::connect(&self.swaysock).is_ok()
                    && UnixStream::connect(self.runtime_dir.join(&display)).is_ok()
                {
                    self.wayland_display = display;
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "sway did not come up within {READY_TIMEOUT:?}: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn find_wayland_socket(&self) -> Option<String> {
        let mut names: Vec<String> = fs::read_dir(&self.runtime_dir)
            .ok()?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("wayland-") && !n.ends_with(".lock"))
            .collect();
        names.sort();
        names.into_iter().next()
    }

    /// The last lines sway logged.
    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.runtime_dir.join("sway.log")) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// sway's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Its runtime directory (`XDG_RUNTIME_DIR`).
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// Its IPC socket (`SWAYSOCK`).
    pub fn swaysock(&self) -> &Path {
        &self.swaysock
    }

    /// Its Wayland socket name (`WAYLAND_DISPLAY`).
    pub fn wayland_display(&self) -> &str {
        &self.wayland_display
    }

    /// The variables a client of this sway needs.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        vec![
            (
                "XDG_RUNTIME_DIR".into(),
                self.runtime_dir.display().to_string(),
            ),
            ("WAYLAND_DISPLAY".into(), self.wayland_display.clone()),
            ("SWAYSOCK".into(), self.swaysock.display().to_string()),
            ("XDG_CURRENT_DESKTOP".into(), "sway".into()),
            ("XDG_SESSION_TYPE".into(), "wayland".into()),
        ]
    }

    /// The desktop environment a host in this sway would read.
    pub fn desktop_env(&self) -> punktfunk_desktop::DesktopEnv {
        punktfunk_desktop::DesktopEnv::from_vars(self.env_vars())
    }

    /// Kills sway (SIGKILL, by PID) and reaps it; a no-op when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts sway again in the same runtime directory, with the same socket paths.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.launch()
    }
}

impl Drop for HeadlessSway {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.runtime_dir);
    }
}

fn is_root() -> bool {
    // The effective uid, as the kernel reports it for this process.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|v| v == "0"))
        })
        .unwrap_or(false)
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|f| f.is_file())
    })
}

/// The uid and gid of `user`, creating it (no home, no login shell) if it does not exist.
fn ensure_user(user: &str) -> Result<(u32, u32), String> {
    if let Some(ids) = lookup_user(user) {
        return Ok(ids);
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            user,
        ])
        .output()
        .map_err(|e| format!("useradd {user}: {e}"))?;
    // Another test may have created it at the same moment: look again before failing.
    lookup_user(user).ok_or_else(|| {
        format!(
            "useradd {user} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

fn lookup_user(user: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// Reads `from` (a child's stderr, say) line by line on a thread of its own, into the returned
/// list, so the child never blocks on a full pipe and the test can look at what it said so far.
pub fn collect_lines(
    from: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<Mutex<Vec<String>>> {
    use std::io::BufRead;
    let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            l.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
    lines
}

/// The binary `bin` of `package` in the directory of `next_to` (a binary of the same target
/// directory and profile, e.g. the test's own `CARGO_BIN_EXE_*`). `cargo test --workspace`
/// builds it already (every such package has integration tests); when only one package is
/// tested it is built here, once per binary and process.
///
/// # Panics
/// When the build fails or the binary is still missing after it (a test helper: the test
/// cannot go on).
pub fn sibling_bin(next_to: &Path, bin: &str, package: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let path = next_to.with_file_name(bin);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() && !built.iter().any(|b| b == bin) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = next_to.parent().is_some_and(|d| d.ends_with("release"));
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", package, "--bin", bin]);
        if release {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("running cargo build").success(),
            "building {bin} failed"
        );
        built.push(bin.to_string());
    }
    assert!(path.exists(), "{} missing", path.display());
    path
}
