//! `punktfunk-testenv sway -- COMMAND [ARGS...]`: runs COMMAND inside a private headless sway
//! (as the unprivileged user `punktfunk-sway` when run as root), with the variables a client of
//! that sway needs added to its environment, then stops sway. Exits with COMMAND's status.

use punktfunk_testenv::HeadlessSway;
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: punktfunk-testenv sway [--] COMMAND [ARGS...]

Starts a private headless sway (wlroots headless backend, pixman renderer, one output
HEADLESS-1; as the user punktfunk-sway when run as root), runs COMMAND with XDG_RUNTIME_DIR,
WAYLAND_DISPLAY, SWAYSOCK, XDG_CURRENT_DESKTOP=sway and XDG_SESSION_TYPE=wayland set to that
sway, and stops sway when COMMAND exits. Exits with COMMAND's status.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = match args.first().map(String::as_str) {
        Some("sway") => &args[1..],
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rest = match rest.first().map(String::as_str) {
        Some("--") => &rest[1..],
        _ => rest,
    };
    let Some((program, program_args)) = rest.split_first() else {
        eprintln!("punktfunk-testenv: no COMMAND given\n\n{USAGE}");
        return ExitCode::from(2);
    };
    let sway = match HeadlessSway::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("punktfunk-testenv: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "punktfunk-testenv: headless sway (pid {}) at WAYLAND_DISPLAY={} SWAYSOCK={}",
        sway.pid().unwrap_or(0),
        sway.runtime_dir().join(sway.wayland_display()).display(),
        sway.swaysock().display()
    );
    let status = Command::new(program)
        .args(program_args)
        .envs(sway.env_vars())
        .status();
    drop(sway);
    match status {
        Ok(s) => ExitCode::from(s.code().map_or(1, |c| c.clamp(0, 255) as u8)),
        Err(e) => {
            eprintln!("punktfunk-testenv: cannot run {program}: {e}");
            ExitCode::FAILURE
        }
    }
}
