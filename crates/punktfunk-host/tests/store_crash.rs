//! The paired-client store survives its writer being killed at any moment: after each SIGKILL
//! the file parses and holds every client whose write had returned.
//!
//! The writer is this test binary run again (with `PUNKTFUNK_STORE_WRITER` set), adding
//! clients through the host's own store code and printing each one's id once `add` returned.

use punktfunk_host::clients::ClientStore;
use punktfunk_host::session::registry::Protocol;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const WRITER: &str = "PUNKTFUNK_STORE_WRITER";

#[test]
fn a_writer_killed_at_any_point_leaves_a_whole_store() {
    if let Some(dir) = std::env::var_os(WRITER) {
        // The child: add clients until killed.
        let store = ClientStore::new(std::path::Path::new(&dir));
        for i in 0u64.. {
            let fp = format!("{i:064x}");
            store
                .add(Protocol::Punktfunk1, "writer", &fp, None)
                .unwrap();
            println!("{fp}");
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut done: Vec<String> = Vec::new();
    for round in 0..30u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_writer_killed_at_any_point_leaves_a_whole_store",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(WRITER, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a different moment each round, mid-write more often than not.
        std::thread::sleep(Duration::from_millis(20 + (round * 7) % 60));
        child.kill().unwrap();
        child.wait().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        done.extend(out.lines().map_while(Result::ok).filter(|l| l.len() == 64));
        let list = ClientStore::new(dir.path())
            .list()
            .unwrap_or_else(|e| panic!("round {round}: the store does not parse: {e:#}"));
        let stored: std::collections::HashSet<&str> =
            list.iter().map(|c| c.fingerprint.as_str()).collect();
        for fp in &done {
            assert!(stored.contains(fp.as_str()), "round {round}: {fp} was lost");
        }
    }
    assert!(
        done.len() > 30,
        "the writer got writes done: {}",
        done.len()
    );
}
