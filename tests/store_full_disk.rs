//! A full disk: a child process (this test binary re-invoked on `full_disk_child`) runs
//! under a file-size limit (`ulimit -f`, with SIGXFSZ ignored so a write past the limit
//! fails with EFBIG as on a full disk) and commits ever more twins until a commit fails.
//! The failure must be the typed `StoreError::Full`; the registry rebuilt after it must
//! hold exactly the acknowledged twins; and the directory, reopened without the limit,
//! must hold them too.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use twinhub::DeviceId;
use twinhub::store::{Store, StoreConfig, StoreError};
use twinhub::twin::{ServiceProperties, ServiceValue, Twin};

/// The child's side: only runs when the parent sets the directory.
#[test]
fn full_disk_child() {
    let Ok(dir) = std::env::var("TWINHUB_FULL_DIR") else {
        return;
    };
    let (mut store, mut reg) = Store::open(&dir, StoreConfig::default()).unwrap();
    let mut acked = 0u64;
    for i in 0..100_000u64 {
        let mut props = ServiceProperties::default();
        props
            .properties
            .insert("blob".into(), ServiceValue::from("x".repeat(2048).as_str()));
        let twin = Twin::new(DeviceId::new(&format!("d{i}")).unwrap());
        reg.create(twin).unwrap();
        reg.replace_service_properties(&format!("d{i}"), &props, None)
            .unwrap();
        match store.commit(&reg) {
            Ok(_) => {
                acked += 1;
                println!("ACK {acked}");
            }
            Err(e) => {
                let full = matches!(e, StoreError::Full { .. });
                println!("ERR full={full} {e}");
                // A poisoned store refuses commits until reloaded.
                assert!(matches!(store.commit(&reg), Err(StoreError::Poisoned)));
                let back = store.reload().unwrap();
                back.validate().unwrap();
                println!("AFTER {}", back.len());
                return;
            }
        }
    }
    println!("NEVER FULL");
}

#[test]
fn a_full_disk_is_a_typed_error_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // 4 MiB: redb's file starts small and grows in steps as twins are added.
    let script = "trap '' XFSZ; ulimit -f 4096; exec \"$0\" --exact full_disk_child --nocapture --test-threads=1";
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(&exe)
        .env("TWINHUB_FULL_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut acked = 0u64;
    let mut err = None;
    let mut after = None;
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ACK ") {
            acked = n.parse().unwrap();
        } else if let Some(e) = line.strip_prefix("ERR ") {
            err = Some(e.to_string());
        } else if let Some(n) = line.strip_prefix("AFTER ") {
            after = Some(n.parse::<u64>().unwrap());
        } else if line.starts_with("NEVER FULL") {
            panic!("the file-size limit was never reached");
        }
    }
    assert!(child.wait().unwrap().success(), "the child failed");
    let err = err.expect("the child saw a failed commit");
    assert!(
        err.starts_with("full=true"),
        "not a typed Full error: {err}"
    );
    assert!(acked > 0, "nothing was acknowledged before the disk filled");
    assert_eq!(
        after,
        Some(acked),
        "the registry rebuilt after the failure must hold exactly the acknowledged twins"
    );
    let (_store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    reg.validate().unwrap();
    assert_eq!(reg.len() as u64, acked);
    for i in 0..acked {
        assert!(
            reg.contains(&format!("d{i}")),
            "acknowledged twin d{i} lost"
        );
    }
}
