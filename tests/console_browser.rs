//! Issue #18: the console example in a real browser. Starts `examples/console` with a
//! small fleet over UDP, and drives it with headless Chromium through Playwright for
//! Python (`tests/console/browser.py`): every device connected, a query and its error
//! case, a firmware-update job watched to completion, the chart following it.
//!
//! Chromium (Debian `chromium`) and Playwright (PyPI `playwright`) are peers: missing,
//! the test skips loudly, or fails when `TWINHUB_REQUIRE_PEERS=1`.
//! `TWINHUB_CONSOLE_SCREENSHOT=path.png` keeps the screenshot (the README's).

mod peers;

use peers::{have, peer_available, run};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The example's binary next to this test's, brought up to date first (a filtered
/// `cargo test` does not build examples) with the test profile, which `cargo test`
/// built everything else with: nothing is compiled twice.
fn console_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--profile",
            "test",
            "--example",
            "console",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "building the console example");
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    dir.join("examples").join("console")
}

#[test]
fn the_console_shows_the_fleet_runs_a_query_and_a_job_and_the_chart_follows() {
    let playwright = Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .status()
        .is_ok_and(|s| s.success());
    if !peer_available("playwright (PyPI)", playwright)
        || !peer_available("chromium (Debian)", have("chromium"))
    {
        return;
    }
    let devices = 20;
    let mut console = Command::new(console_binary())
        .args(["--devices", &devices.to_string(), "--http", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the console example");
    let mut lines = BufReader::new(console.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = loop {
        assert!(Instant::now() < deadline, "the console printed no URL");
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("console: ") {
                    break url.trim().to_string();
                }
            }
            _ => {
                let _ = console.kill();
                panic!("the console exited before printing its URL");
            }
        }
    };
    let shot = std::env::var("TWINHUB_CONSOLE_SCREENSHOT").unwrap_or_else(|_| {
        std::env::temp_dir()
            .join(format!("twinhub-console-{}.png", std::process::id()))
            .to_string_lossy()
            .into_owned()
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console/browser.py");
    let (out, err) = run(
        "python3",
        &[script.to_str().unwrap(), &url, &devices.to_string(), &shot],
        Duration::from_secs(300),
    );
    // The console runs until killed: end it by its id.
    let _ = console.kill();
    let _ = console.wait();
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains("console ok"),
        "the browser test failed:\n{out}\n{err}"
    );
}
