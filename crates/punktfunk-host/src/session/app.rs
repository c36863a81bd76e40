//! An app session: the app process a client launched and the output it draws on.
//!
//! GameStream's `/launch` creates one; it outlives a stream (Moonlight's `/resume` attaches a new
//! stream to the same app and output) and ends on `/cancel`, when the app exits by itself, or
//! when the host shuts down. Its owner reaps the process: a watcher thread notices the exit and
//! reports it through the callback given at launch; [`AppSession::end`] (and drop) stops the
//! process group (SIGTERM, then SIGKILL after a grace period), reaps it and removes the output,
//! in that order.

use punktfunk_desktop::Output;
use std::os::unix::process::CommandExt;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An output shared by its owner (an app session or a stream session) and the stream using it.
pub type OutputHandle = Arc<Mutex<Box<dyn Output>>>;

/// The variable that tells an app the host clock's zero, as `CLOCK_MONOTONIC` nanoseconds, so
/// a test app can stamp what it draws on the same clock as capture (the stream's figures then
/// measure from the app's render to the client's decode).
pub const EPOCH_VAR: &str = "PUNKTFUNK_EPOCH_MONOTONIC_NS";

/// `epoch` as `CLOCK_MONOTONIC` nanoseconds (`Instant` counts on that clock on Linux).
pub fn monotonic_ns(epoch: Instant) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    now.saturating_sub(epoch.elapsed().as_nanos() as u64)
}

/// The variables every launched app gets from the host.
pub fn host_env(epoch: Instant) -> Vec<(String, String)> {
    vec![(EPOCH_VAR.to_string(), monotonic_ns(epoch).to_string())]
}

/// How long an app has to exit after SIGTERM before it gets SIGKILL.
pub const GRACE: Duration = Duration::from_secs(3);

/// Why an app could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The app's command is empty.
    #[error("the app has no command")]
    NoCommand,
}

/// A launched app and its output.
pub struct AppSession {
    title: String,
    output: OutputHandle,
    child: Arc<Mutex<Option<Child>>>,
    pid: Option<u32>,
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AppSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSession")
            .field("title", &self.title)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl AppSession {
    /// Starts `command` (none: the desktop itself, nothing to run) with the output's
    /// environment, in its own process group. `on_exit` runs once, on the watcher thread, if
    /// the app exits by itself (not when [`Self::end`] stops it).
    pub fn launch(
        title: &str,
        command: Option<&[String]>,
        output: OutputHandle,
        on_exit: Box<dyn FnOnce(ExitStatus) + Send>,
    ) -> Result<AppSession, LaunchError> {
        Self::launch_with(title, command, output, &[], on_exit)
    }

    /// [`Self::launch`] with `extra` variables set after the output's own.
    pub fn launch_with(
        title: &str,
        command: Option<&[String]>,
        output: OutputHandle,
        extra: &[(String, String)],
        on_exit: Box<dyn FnOnce(ExitStatus) + Send>,
    ) -> Result<AppSession, LaunchError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (child, pid, watcher) = match command {
            None => (Arc::new(Mutex::new(None)), None, None),
            Some([]) => return Err(LaunchError::NoCommand),
            Some([program, args @ ..]) => {
                let env = crate::lock(&output).launch_env();
                let child = std::process::Command::new(program)
                    .args(args)
                    .envs(env)
                    .envs(extra.iter().cloned())
                    .process_group(0)
                    .spawn()
                    .map_err(|source| LaunchError::Spawn {
                        program: program.clone(),
                        source,
                    })?;
                let pid = child.id();
                tracing::info!(
                    app = title,
                    pid,
                    output = crate::lock(&output).name(),
                    "started the app"
                );
                let child = Arc::new(Mutex::new(Some(child)));
                let watcher = {
                    let (child, stop, title) = (child.clone(), stop.clone(), title.to_string());
                    std::thread::Builder::new()
                        .name("app-watch".into())
                        .spawn(move || watch(&title, &child, &stop, on_exit))
                        .map_err(|source| LaunchError::Spawn {
                            program: "the app watcher".into(),
                            source,
                        })?
                };
                (child, Some(pid), Some(watcher))
            }
        };
        Ok(AppSession {
            title: title.to_string(),
            output,
            child,
            pid,
            stop,
            watcher,
        })
    }

    /// The process id, when the app runs a program.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The output the app draws on.
    pub fn output(&self) -> &OutputHandle {
        &self.output
    }

    /// Whether the app's program is still running (true for the desktop, which has none).
    pub fn running(&self) -> bool {
        self.pid.is_none() || crate::lock(&self.child).is_some()
    }

    /// Stops the app's process group, reaps it, and stops the watcher.
    pub fn end(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            // The exit callback may drop the session on the watcher thread itself.
            if w.thread().id() != std::thread::current().id() {
                let _ = w.join();
            }
        }
        let child = crate::lock(&self.child).take();
        if let Some(mut c) = child {
            terminate(&mut c, &self.title);
        }
    }
}

impl Drop for AppSession {
    fn drop(&mut self) {
        self.end();
        // The output goes with the last handle, after the app that used it.
    }
}

fn watch(
    title: &str,
    child: &Mutex<Option<Child>>,
    stop: &AtomicBool,
    on_exit: Box<dyn FnOnce(ExitStatus) + Send>,
) {
    while !stop.load(Ordering::Relaxed) {
        let exited = {
            let mut g = crate::lock(child);
            match g.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => {
                    *g = None;
                    Some(status)
                }
                Some(Ok(None)) => None,
                Some(Err(e)) => {
                    tracing::warn!(app = title, error = %e, "cannot watch the app");
                    return;
                }
                None => return,
            }
        };
        if let Some(status) = exited {
            tracing::info!(app = title, %status, "the app ended");
            on_exit(status);
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM to the process group, SIGKILL after [`GRACE`], then reap.
fn terminate(c: &mut Child, title: &str) {
    let pgid = c.id() as libc::pid_t;
    // SAFETY: kill only sends a signal; the group was created for this child (process_group(0)).
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let deadline = Instant::now() + GRACE;
    loop {
        match c.try_wait() {
            Ok(Some(status)) => {
                tracing::info!(app = title, %status, "the app was stopped");
                break;
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                tracing::warn!(app = title, "the app ignored SIGTERM; killing it");
                // SAFETY: as above.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let _ = c.wait();
                break;
            }
        }
    }
    // Whatever else the app left in its group goes too.
    // SAFETY: as above; the group may already be empty (ESRCH is fine).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_clock_zero_is_told_to_apps_as_monotonic_nanoseconds() {
        let epoch = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let a = monotonic_ns(epoch);
        let b = monotonic_ns(epoch);
        // The same instant however late it is asked (within the clock reads' own jitter).
        assert!(a.abs_diff(b) < 1_000_000, "{a} vs {b}");
        let later = monotonic_ns(Instant::now());
        assert!(
            later >= a + 20_000_000,
            "{later} is at least 20 ms past {a}"
        );
        let env = host_env(epoch);
        assert_eq!(env[0].0, EPOCH_VAR);
        assert!(env[0].1.parse::<u64>().unwrap().abs_diff(a) < 1_000_000);
    }

    use super::*;
    use punktfunk_core::control::Mode;
    use punktfunk_desktop::{vdisplay::existing::Existing, DesktopEnv, VirtualDisplay};

    fn output() -> OutputHandle {
        let mut d = Existing::new(&DesktopEnv::default());
        Arc::new(Mutex::new(d.create(Mode::new(640, 360, 30)).unwrap()))
    }

    fn alive(pid: u32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
    }

    #[test]
    fn ending_stops_and_reaps_the_whole_process_group() {
        let cmd = ["sh".to_string(), "-c".into(), "sleep 30 & sleep 30".into()];
        let mut app =
            AppSession::launch("sleeper", Some(&cmd), output(), Box::new(|_| {})).unwrap();
        let pid = app.pid().unwrap();
        assert!(app.running());
        app.end();
        assert!(
            !alive(pid),
            "the app is gone and reaped (no zombie answers signal 0)"
        );
        assert!(!app.running());
    }

    /// An output that notes, when it is removed, whether the app's process still exists.
    struct Watched {
        pid: Arc<Mutex<Option<u32>>>,
        removed_while_app_alive: Arc<Mutex<Option<bool>>>,
    }

    impl Output for Watched {
        fn backend(&self) -> punktfunk_desktop::DisplayBackend {
            punktfunk_desktop::DisplayBackend::Existing
        }
        fn name(&self) -> &str {
            "watched"
        }
        fn mode(&self) -> Mode {
            Mode::new(640, 360, 30)
        }
        fn set_mode(&mut self, _: Mode) -> Result<(), punktfunk_desktop::DisplayError> {
            Ok(())
        }
        fn capture_target(&self) -> punktfunk_desktop::CaptureTarget {
            punktfunk_desktop::CaptureTarget::Desktop
        }
        fn launch_env(&self) -> Vec<(String, String)> {
            Vec::new()
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            let pid = crate::lock(&self.pid).expect("the app was started");
            *crate::lock(&self.removed_while_app_alive) = Some(alive(pid));
        }
    }

    #[test]
    fn the_output_is_removed_only_after_the_app_is_gone() {
        let pid = Arc::new(Mutex::new(None));
        let seen = Arc::new(Mutex::new(None));
        let out: OutputHandle = Arc::new(Mutex::new(Box::new(Watched {
            pid: pid.clone(),
            removed_while_app_alive: seen.clone(),
        })));
        let cmd = ["sleep".to_string(), "30".into()];
        let app = AppSession::launch("sleeper", Some(&cmd), out, Box::new(|_| {})).unwrap();
        *crate::lock(&pid) = app.pid();
        assert_eq!(
            *crate::lock(&seen),
            None,
            "the output exists while the app runs"
        );
        drop(app);
        assert_eq!(
            *crate::lock(&seen),
            Some(false),
            "removed after the app was reaped"
        );
    }

    #[test]
    fn an_app_that_exits_is_reported_once_by_its_watcher() {
        let (tx, rx) = std::sync::mpsc::channel();
        let cmd = ["sh".to_string(), "-c".into(), "exit 3".into()];
        let app = AppSession::launch(
            "quick",
            Some(&cmd),
            output(),
            Box::new(move |s| tx.send(s.code()).unwrap()),
        )
        .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), Some(3));
        assert!(!app.running());
        drop(app);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn the_app_gets_the_outputs_environment_and_a_missing_program_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        let mut d = Existing::new(&DesktopEnv::from_vars([(
            "WAYLAND_DISPLAY",
            "wayland-test",
        )]));
        let out: OutputHandle = Arc::new(Mutex::new(d.create(Mode::new(640, 360, 30)).unwrap()));
        let cmd = [
            "sh".to_string(),
            "-c".into(),
            format!("echo $WAYLAND_DISPLAY > {}", file.display()),
        ];
        let (tx, rx) = std::sync::mpsc::channel();
        let _app = AppSession::launch(
            "env",
            Some(&cmd),
            out.clone(),
            Box::new(move |_| tx.send(()).unwrap()),
        )
        .unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap().trim(),
            "wayland-test"
        );
        let missing = ["/nonexistent/program".to_string()];
        assert!(matches!(
            AppSession::launch("missing", Some(&missing), out, Box::new(|_| {})),
            Err(LaunchError::Spawn { .. })
        ));
    }
}
