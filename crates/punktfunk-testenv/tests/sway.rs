//! The headless sway fixture starts, answers on both sockets, survives a restart at the same
//! paths, and leaves no process behind.

use punktfunk_testenv::HeadlessSway;
use std::os::unix::net::UnixStream;
use std::path::Path;

#[test]
fn starts_restarts_at_the_same_paths_and_is_killed_on_drop() {
    let mut sway = HeadlessSway::start().expect("headless sway");
    let pid = sway.pid().unwrap();
    let sock = sway.swaysock().to_path_buf();
    let wl = sway.runtime_dir().join(sway.wayland_display());
    UnixStream::connect(&sock).expect("IPC socket");
    UnixStream::connect(&wl).expect("Wayland socket");
    let env = sway.desktop_env();
    assert!(env.desktop_is("sway"));
    assert_eq!(env.swaysock.as_deref(), Some(sock.as_path()));

    sway.kill();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "sway is reaped"
    );
    assert!(
        UnixStream::connect(&sock).is_err(),
        "a killed sway does not answer"
    );

    sway.restart().expect("sway again");
    let pid2 = sway.pid().unwrap();
    assert_ne!(pid, pid2);
    assert_eq!(sway.swaysock(), sock.as_path());
    UnixStream::connect(&sock).expect("IPC socket after restart");
    let dir = sway.runtime_dir().to_path_buf();
    drop(sway);
    assert!(!Path::new(&format!("/proc/{pid2}")).exists());
    assert!(!dir.exists());
}
