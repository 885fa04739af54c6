//! The interop-peer rule, shared by the tests that drive third-party peers: a missing peer
//! skips the test with a loud message, or fails it when `TWINHUB_REQUIRE_PEERS=1` (CI sets
//! it after `tests/peers/install.sh`).
#![allow(dead_code)] // each test crate uses the part it needs

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the peer scripts and `node_modules` live.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// Whether peers are required: a missing peer then fails the test.
pub fn peers_required() -> bool {
    std::env::var("TWINHUB_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Reports a missing peer: panics when peers are required, else says loudly it skips.
pub fn missing_peer(what: &str) {
    if peers_required() {
        panic!(
            "interop peer {what} is missing and TWINHUB_REQUIRE_PEERS=1 (run bash tests/peers/install.sh)"
        );
    }
    eprintln!(
        "\n*** SKIPPING interop test: peer {what} is missing (run bash tests/peers/install.sh) ***\n"
    );
}

/// `true` when the peer is usable (`ok`); otherwise [`missing_peer`] and `false`.
pub fn peer_available(what: &str, ok: bool) -> bool {
    if !ok {
        missing_peer(what);
    }
    ok
}

/// Whether a command is on the PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts a peer with no input and its output piped (Python unbuffered, so that what it
/// prints arrives as it prints it): the child, its stdout and its stderr.
fn spawn_piped(cmd: &str, args: &[&str]) -> (Child, ChildStdout, ChildStderr) {
    let mut child = Command::new(cmd)
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd}: {e}"));
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    (child, out, err)
}

/// Runs a command for at most `limit`, killing it (by its PID) if it is still running;
/// returns stdout and stderr.
pub fn run(cmd: &str, args: &[&str], limit: Duration) -> (Vec<u8>, String) {
    let (mut child, mut out, mut err) = spawn_piped(cmd, args);
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = String::new();
        let _ = err.read_to_string(&mut v);
        v
    });
    wait_or_kill(&mut child, limit);
    (o.join().unwrap(), e.join().unwrap())
}

/// Runs a command until its stdout so far satisfies `done` (or it ends, or `limit`
/// passes), then kills it (by its PID) if it is still running; returns stdout and stderr.
/// For a peer that runs until stopped (an observer): waiting for what it prints, not a
/// fixed time, which a loaded machine may spend before the peer even started.
pub fn run_until(
    cmd: &str,
    args: &[&str],
    limit: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> (Vec<u8>, String) {
    let (mut child, mut out, mut err) = spawn_piped(cmd, args);
    let (tx, chunks) = std::sync::mpsc::channel::<Vec<u8>>();
    let o = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let e = std::thread::spawn(move || {
        let mut v = String::new();
        let _ = err.read_to_string(&mut v);
        v
    });
    let end = Instant::now() + limit;
    let mut got = Vec::new();
    while !done(&got) && Instant::now() < end {
        match chunks.recv_timeout(Duration::from_millis(20)) {
            Ok(chunk) => got.extend(chunk),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = o.join();
    got.extend(chunks.try_iter().flatten());
    (got, e.join().unwrap())
}

/// Waits for a child at most `limit`, then kills it (by its PID).
pub fn wait_or_kill(child: &mut Child, limit: Duration) {
    let end = Instant::now() + limit;
    loop {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// libcoap ends its output with a newline of its own.
pub fn strip_newline(mut out: Vec<u8>) -> Vec<u8> {
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    out
}
