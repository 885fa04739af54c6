//! A read-only data directory: opening a store there is a typed error and changes
//! nothing on disk.
//!
//! Permissions do not stop root, and CI runs as root; so the opening runs in a child
//! process (this test binary re-invoked on `read_only_child`) with the identity of the
//! unprivileged user `nobody`, through util-linux's `setpriv`. Run as another user, the
//! test opens the directories itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use twinhub::DeviceId;
use twinhub::store::{Store, StoreConfig, StoreError};
use twinhub::twin::{ServiceProperties, ServiceValue, Twin};

const NOBODY: u32 = 65534;

/// What opening each directory gave, one line per case: `RESULT <case> <error kind>`.
fn open_all(base: &Path) -> String {
    let mut out = String::new();
    for case in ["existing", "empty", "missing/inside"] {
        let kind = match Store::open(base.join(case), StoreConfig::default()) {
            Ok(_) => "opened".to_owned(),
            Err(StoreError::ReadOnly { .. }) => "ReadOnly".to_owned(),
            Err(StoreError::Directory { source, .. }) => format!("Directory({:?})", source.kind()),
            Err(e) => format!("other({e})"),
        };
        out.push_str(&format!("RESULT {case} {kind}\n"));
    }
    out
}

/// The child's side: only runs when the parent names the directory.
#[test]
fn read_only_child() {
    let Ok(dir) = std::env::var("TWINHUB_READ_ONLY_DIR") else {
        return;
    };
    print!("{}", open_all(Path::new(&dir)));
}

fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn blob_twin() -> (Twin, ServiceProperties) {
    let mut props = ServiceProperties::default();
    props
        .properties
        .insert("site".into(), ServiceValue::from("north"));
    (Twin::new(DeviceId::new("kept").unwrap()), props)
}

#[test]
fn a_read_only_directory_is_a_typed_error_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let base: PathBuf = root.path().join("data");
    let existing = base.join("existing");
    {
        let (mut store, mut reg) = Store::open(&existing, StoreConfig::default()).unwrap();
        let (twin, props) = blob_twin();
        reg.create(twin).unwrap();
        reg.replace_service_properties("kept", &props, None)
            .unwrap();
        store.commit(&reg).unwrap();
    }
    std::fs::create_dir_all(base.join("empty")).unwrap();
    std::fs::create_dir_all(base.join("missing")).unwrap();
    let file = existing.join(twinhub::store::FILE_NAME);
    let before = std::fs::read(&file).unwrap();
    chmod(root.path(), 0o755);
    chmod(&base, 0o755);
    for d in ["existing", "empty", "missing"] {
        chmod(&base.join(d), 0o555);
    }
    chmod(&file, 0o444);

    let report = if euid() == 0 {
        // The test binary may sit under a directory `nobody` cannot enter (a clone in a
        // 0700 temporary directory): run a copy from the readable temporary directory.
        let exe = root.path().join("child");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        chmod(&exe, 0o755);
        let out = Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
            ])
            .arg(&exe)
            .args([
                "--exact",
                "read_only_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TWINHUB_READ_ONLY_DIR", &base)
            .output();
        match out {
            Ok(out) if out.status.success() => String::from_utf8(out.stdout).unwrap(),
            Ok(out) => panic!(
                "the child failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => {
                let msg = format!("setpriv (util-linux) is needed to drop root: {e}");
                assert!(
                    std::env::var("TWINHUB_REQUIRE_PEERS").as_deref() != Ok("1"),
                    "{msg}"
                );
                eprintln!("SKIPPED: {msg}");
                return;
            }
        }
    } else {
        open_all(&base)
    };
    let lines: Vec<&str> = report
        .lines()
        .filter_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .collect();
    assert_eq!(
        lines,
        [
            "existing ReadOnly",
            "empty ReadOnly",
            "missing/inside Directory(PermissionDenied)"
        ],
        "{report}"
    );

    // Nothing changed: the file is byte for byte what it was, and opens with its twin.
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert!(!base.join("empty").join(twinhub::store::FILE_NAME).exists());
    for d in ["existing", "empty", "missing"] {
        chmod(&base.join(d), 0o755);
    }
    chmod(&file, 0o644);
    let (_store, reg) = Store::open(&existing, StoreConfig::default()).unwrap();
    let twin = reg.get("kept").unwrap();
    assert_eq!(
        twin.service_properties().get("site"),
        Some(&ServiceValue::from("north"))
    );
}
