//! What wlr-screencopy capture costs per frame, on a real headless sway, beside a memcpy of the
//! same bytes measured in the same run.
//!
//! For each mode: a private headless sway gets an output at that mode from the sway display
//! backend, the desktop probe app draws stamped frames on it, and the host's own
//! `ScreencopySource` takes `--frames` pictures. Printed per mode:
//! - app render → pixels in our buffer (p50/p95/p99): the probe's stamp (render time on the
//!   bench's clock) read back from the captured pixels, against the time `next_frame` returned
//!   them. It includes the compositor's wait for its next repaint, which is scheduling, not
//!   copying;
//! - `ready` → handed out (the source's `cost_us`): our side of the handoff;
//! - CPU per captured frame: the capture thread (`screencopy`), this whole process, and what
//!   sway spends on top of drawing the same app without a capture (the copy into our buffer is
//!   done by the compositor, on its own CPU time);
//! - the baseline: one memcpy of a frame's bytes (width × height × 4), median of many.
//!
//! Needs the probe built beside this bench:
//! `cargo build --release -p punktfunk-desktop-probe && cargo bench -p punktfunk-desktop --bench screencopy`
//! Arguments after `--`: `--frames N` (default 600), `--modes 1280x720@60,1920x1080@60`.

use punktfunk_core::control::Mode;
use punktfunk_desktop::capture::{self, SourceOptions};
use punktfunk_desktop::vdisplay::{self, DisplayOptions};
use punktfunk_desktop::{CaptureBackend, DisplayBackend, FrameSource};
use punktfunk_media::{read_stamp_luma, FrameRef};
use punktfunk_testenv::HeadlessSway;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let mut frames = 600usize;
    let mut modes = vec![Mode::new(1280, 720, 60), Mode::new(1920, 1080, 60)];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--frames" => {
                frames = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| fail("--frames needs a number"))
            }
            "--modes" => {
                modes = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|m| parse_mode(m).unwrap_or_else(|| fail(&format!("bad mode {m:?}"))))
                    .collect()
            }
            // What `cargo bench` passes to every bench.
            "--bench" => {}
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    let probe = probe_bin();
    let sway = HeadlessSway::start()
        .unwrap_or_else(|e| fail(&format!("headless sway ({e}); run scripts/install-deps.sh")));
    println!(
        "screencopy capture on headless sway (pid {}), {frames} frames per mode",
        sway.pid().unwrap_or(0)
    );
    for mode in modes {
        match measure(&sway, &probe, mode, frames) {
            Ok(m) => m.print(mode),
            Err(e) => fail(&format!("{mode}: {e}")),
        }
    }
}

fn fail(why: &str) -> ! {
    eprintln!("screencopy bench: {why}");
    std::process::exit(1);
}

fn parse_mode(s: &str) -> Option<Mode> {
    let (size, hz) = s.split_once('@')?;
    let (w, h) = size.split_once('x')?;
    Some(Mode::new(
        w.parse().ok()?,
        h.parse().ok()?,
        hz.parse().ok()?,
    ))
}

/// The probe next to this bench's profile directory (target/release/).
fn probe_bin() -> PathBuf {
    let me = std::env::current_exe().unwrap_or_else(|e| fail(&format!("own path: {e}")));
    let dir = me
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| fail("no target directory"));
    let p = dir.join("punktfunk-desktop-probe");
    if !p.exists() {
        fail(&format!(
            "{} not found: cargo build --release -p punktfunk-desktop-probe",
            p.display()
        ));
    }
    p
}

/// CPU time (ns) of every thread of `pid`, or of one thread of it named `only`.
fn cpu_ns(pid: &str, only: Option<&str>) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut sum = 0;
    for t in tasks.flatten() {
        let p = t.path();
        if let Some(name) = only {
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
        }
        // schedstat: time on CPU (ns), time waiting, timeslices.
        let s = std::fs::read_to_string(p.join("schedstat")).unwrap_or_default();
        sum += s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    sum
}

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The stamp in the top-left corner of a BGRx picture (its blue channel is the luma of the
/// black and white cells).
fn stamp_of(f: &FrameRef<'_>) -> Option<punktfunk_media::Stamp> {
    let rows = (punktfunk_media::stamp::cell_size(f.width) * 4).min(f.height);
    let (w, h) = (f.width as usize, rows as usize);
    let mut luma = vec![0u8; w * h];
    for y in 0..h {
        let row = &f.data[y * f.stride..y * f.stride + w * 4];
        for (x, px) in row.chunks_exact(4).enumerate() {
            luma[y * w + x] = px[0];
        }
    }
    read_stamp_luma(&luma, w, f.width, rows)
}

struct Measured {
    frames: usize,
    unstamped: usize,
    render_to_buffer_us: Vec<u64>,
    handoff_us: Vec<u64>,
    thread_ns: u64,
    process_ns: u64,
    sway_ns_capturing: u64,
    sway_ns_idle_capture: u64,
    elapsed: Duration,
    idle_window: Duration,
    memcpy_ns: Vec<u64>,
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

impl Measured {
    fn print(mut self, mode: Mode) {
        let n = self.frames.max(1) as f64;
        let fps = self.frames as f64 / self.elapsed.as_secs_f64();
        let sway_rate = self.sway_ns_capturing as f64 / self.elapsed.as_secs_f64();
        let sway_rate_idle = self.sway_ns_idle_capture as f64 / self.idle_window.as_secs_f64();
        let sway_extra_per_frame = (sway_rate - sway_rate_idle).max(0.0) / fps;
        let mc = pct(&mut self.memcpy_ns, 0.5);
        let mb = f64::from(mode.width) * f64::from(mode.height) * 4.0 / 1e6;
        println!(
            "-- {mode}: {} frames at {fps:.1} fps ({} unstamped) --",
            self.frames, self.unstamped
        );
        println!(
            "app render -> in our buffer   p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms",
            pct(&mut self.render_to_buffer_us, 0.5) as f64 / 1e3,
            pct(&mut self.render_to_buffer_us, 0.95) as f64 / 1e3,
            pct(&mut self.render_to_buffer_us, 0.99) as f64 / 1e3,
        );
        println!(
            "ready -> handed out           p50 {:>7} µs  p99 {:>7} µs",
            pct(&mut self.handoff_us, 0.5),
            pct(&mut self.handoff_us, 0.99),
        );
        println!(
            "CPU per frame: capture thread {:>6.1} µs, this process {:>6.1} µs, sway's extra for the copy {:>6.1} µs",
            self.thread_ns as f64 / n / 1e3,
            self.process_ns as f64 / n / 1e3,
            sway_extra_per_frame / 1e3,
        );
        println!(
            "  (sway: {:.1} % of a core while captured, {:.1} % drawing the same app uncaptured)",
            sway_rate / 1e7,
            sway_rate_idle / 1e7
        );
        println!(
            "baseline: memcpy of one frame ({mb:.1} MB)  {:>6.1} µs ({:.1} GB/s)",
            mc as f64 / 1e3,
            mb * 1e6 / mc.max(1) as f64
        );
    }
}

struct Probe(Child);

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn measure(
    sway: &HeadlessSway,
    probe: &Path,
    mode: Mode,
    frames: usize,
) -> Result<Measured, String> {
    let env = sway.desktop_env();
    let mut display = vdisplay::open(DisplayBackend::Sway, &env, &DisplayOptions::default())
        .map_err(|e| format!("sway display: {e}"))?;
    let output = display.create(mode).map_err(|e| format!("output: {e}"))?;
    let epoch = Instant::now();
    let epoch_ns = monotonic_ns();
    let _probe = Probe(
        Command::new(probe)
            .env_clear()
            .envs(sway.env_vars())
            .envs(output.launch_env())
            .env("PUNKTFUNK_EPOCH_MONOTONIC_NS", epoch_ns.to_string())
            .args(["--log", "/dev/null"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("probe: {e}"))?,
    );
    let sway_pid = sway.pid().unwrap_or(0).to_string();
    let opts = SourceOptions {
        target: output.capture_target(),
        mode,
        epoch,
        env,
    };
    let mut src =
        capture::open(CaptureBackend::Screencopy, &opts).map_err(|e| format!("screencopy: {e}"))?;
    // Wait for the probe's window to fill the output.
    let ready_by = Instant::now() + Duration::from_secs(15);
    loop {
        if Instant::now() > ready_by {
            return Err("the probe's stamped frames never appeared on the output".into());
        }
        if let Some(c) = next(&mut *src)? {
            if c.frame.width == mode.width && stamp_of(&c.frame).is_some() {
                break;
            }
        }
    }
    drop(src);
    // Sway drawing the app with nobody capturing: the compositor's own cost.
    let idle_window = Duration::from_secs(2);
    let s0 = cpu_ns(&sway_pid, None);
    std::thread::sleep(idle_window);
    let sway_ns_idle_capture = cpu_ns(&sway_pid, None) - s0;

    let mut src =
        capture::open(CaptureBackend::Screencopy, &opts).map_err(|e| format!("screencopy: {e}"))?;
    // Settle: the first picture of a new source is a whole-output copy.
    for _ in 0..10 {
        next(&mut *src)?;
    }
    let me = std::process::id().to_string();
    let (t0, p0, s0, start) = (
        cpu_ns(&me, Some("screencopy")),
        cpu_ns(&me, None),
        cpu_ns(&sway_pid, None),
        Instant::now(),
    );
    let mut m = Measured {
        frames: 0,
        unstamped: 0,
        render_to_buffer_us: Vec::with_capacity(frames),
        handoff_us: Vec::with_capacity(frames),
        thread_ns: 0,
        process_ns: 0,
        sway_ns_capturing: 0,
        sway_ns_idle_capture,
        elapsed: Duration::ZERO,
        idle_window,
        memcpy_ns: Vec::new(),
    };
    let give_up = Instant::now() + Duration::from_secs(10 + frames as u64 / 10);
    while m.frames < frames && Instant::now() < give_up {
        let Some(c) = next(&mut *src)? else { continue };
        let now_us = epoch.elapsed().as_micros() as u64;
        m.frames += 1;
        m.handoff_us.push(u64::from(c.cost_us));
        match stamp_of(&c.frame) {
            Some(s) => m
                .render_to_buffer_us
                .push(now_us.saturating_sub(s.capture_us)),
            None => m.unstamped += 1,
        }
    }
    m.elapsed = start.elapsed();
    m.thread_ns = cpu_ns(&me, Some("screencopy")) - t0;
    m.process_ns = cpu_ns(&me, None) - p0;
    m.sway_ns_capturing = cpu_ns(&sway_pid, None) - s0;
    drop(src);
    drop(output);
    if m.frames == 0 {
        return Err("no frames".into());
    }
    // The baseline: the same bytes copied by the CPU, in this run.
    let len = mode.width as usize * mode.height as usize * 4;
    let src_buf = vec![0x5au8; len];
    let mut dst = vec![0u8; len];
    for _ in 0..200 {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src_buf));
        std::hint::black_box(&mut dst);
        m.memcpy_ns.push(t.elapsed().as_nanos() as u64);
    }
    Ok(m)
}

/// The next picture, waiting at most 200 ms.
fn next<'a>(
    src: &'a mut dyn FrameSource,
) -> Result<Option<punktfunk_desktop::Captured<'a>>, String> {
    src.next_frame(Instant::now() + Duration::from_millis(200))
        .map_err(|e| format!("capture: {e}"))
}
