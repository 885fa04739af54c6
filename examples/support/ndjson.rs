//! What the `bulk_load` example and the `query_file` bench share besides the import
//! itself (`Registry::import_ndjson`).

/// A line of `/proc/self/status` in MiB (`VmRSS:` resident now, `VmHWM:` its peak; 0
/// where there is no such file: Linux only).
pub fn status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
