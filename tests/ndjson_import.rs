//! `Registry::import_ndjson`: lines parsed on parser threads, in chunks, and added in
//! input order. Checked against `Registry::load` of the same twins, across chunk
//! boundaries of every size, and on bad input (the first bad line ends the load with its
//! number, the lines before it stay loaded).

use twinhub::registry::Registry;
use twinhub::registry::ndjson::{ImportErrorKind, ImportOptions, MAX_LINE_BYTES};
use twinhub::twin::{ConnectionState, DeviceStatus, Scalar, Twin};
use twinhub::{DeviceId, Timestamp};

/// Twins using everything a line can carry: escapes, big and float numbers, missing
/// fields, tags.
fn twins(n: usize) -> Vec<Twin> {
    (0..n)
        .map(|i| {
            let at = Timestamp::from_millis(1_700_000_000_000 + i as u64 * 1_001);
            let mut t = Twin::new(DeviceId::new(&format!("dev-{i:04}")).unwrap())
                .with_device_property("FirmwareVersion", format!("1.{}", i % 3), at)
                .with_device_property("/3303/0/5700", (i as f64) / 4.0, at)
                .with_device_property("/10/0/1", (1u64 << 63) + i as u64, at)
                .with_service_property("region", ["eu", "us", "quote\"d\\\u{e9}"][i % 3])
                .with_service_property("level", i as i64 - 7);
            if i % 4 == 0 {
                t = t.with_device_property("/3442/0/1", "tab\there\n", at);
            }
            for tag in ["a", "b\"", "\u{1F600}"].iter().take(i % 4) {
                t = t.with_tag(*tag);
            }
            if i % 5 == 1 {
                t.status = DeviceStatus::Disabled;
                t.status_reason = Some(format!("lost \"{i}\""));
                t.status_updated_time = Some(at);
            }
            if i % 3 == 2 {
                t.connection_state = ConnectionState::Connected;
                t.connection_state_updated_time = Some(at);
                t.last_activity_time = Some(at);
                t.is_managed = true;
            }
            t
        })
        .collect()
}

/// The twins as NDJSON, with an empty line and a CRLF line end here and there.
fn export(twins: &[Twin]) -> String {
    let mut text = String::new();
    for (i, t) in twins.iter().enumerate() {
        text.push_str(&serde_json::to_string(t).unwrap());
        text.push_str(if i % 7 == 3 { "\r\n" } else { "\n" });
        if i % 11 == 5 {
            text.push('\n');
        }
    }
    text
}

fn all(reg: &Registry) -> Vec<Twin> {
    let mut v: Vec<Twin> = reg.iter().map(|t| t.to_twin()).collect();
    v.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    v
}

#[test]
fn every_chunking_loads_what_registry_load_loads() {
    let twins = twins(120);
    let text = export(&twins);
    let mut expected = Registry::new();
    expected.load(twins.iter().cloned()).unwrap();
    let expected = all(&expected);
    for (parsers, chunk) in [(1, 1), (3, 1), (2, 7), (3, 200), (2, 4096), (1, 1 << 20)] {
        let mut reg = Registry::new();
        let options = ImportOptions {
            parsers,
            chunk_bytes: chunk,
        };
        let loaded = reg.import_ndjson_with(text.as_bytes(), options).unwrap();
        assert_eq!(
            loaded,
            twins.len(),
            "{parsers} parsers, {chunk}-byte chunks"
        );
        reg.validate().unwrap();
        assert_eq!(
            all(&reg),
            expected,
            "{parsers} parsers, {chunk}-byte chunks"
        );
    }
    let back = Scalar::from((1u64 << 63) + 5);
    let reg = {
        let mut r = Registry::new();
        r.import_ndjson(text.as_bytes()).unwrap();
        r
    };
    assert_eq!(
        reg.get("dev-0005").unwrap().to_twin().device_properties["/10/0/1"].value,
        back
    );
}

/// Loads `text` with several chunkings; each must stop with the same error, having
/// loaded the same devices.
fn load_err(text: &[u8]) -> (String, Vec<String>) {
    let mut seen: Option<(String, Vec<String>)> = None;
    for (parsers, chunk) in [(1, 1 << 20), (2, 1), (3, 100), (2, 5000)] {
        let mut reg = Registry::new();
        let options = ImportOptions {
            parsers,
            chunk_bytes: chunk,
        };
        let err = reg
            .import_ndjson_with(text, options)
            .unwrap_err()
            .to_string();
        let ids: Vec<String> = all(&reg).iter().map(|t| t.device_id.to_string()).collect();
        match &seen {
            None => seen = Some((err, ids)),
            Some(first) => assert_eq!(first, &(err, ids), "{parsers} parsers, {chunk}-byte chunks"),
        }
    }
    seen.unwrap()
}

#[test]
fn the_first_bad_line_ends_the_load_with_its_number() {
    let twins = twins(30);
    let lines: Vec<String> = twins
        .iter()
        .map(|t| serde_json::to_string(t).unwrap())
        .collect();
    let with = |k: usize, bad: &[u8]| -> Vec<u8> {
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            if i == k {
                out.extend_from_slice(bad);
                out.push(b'\n');
            }
            out.extend_from_slice(l.as_bytes());
            out.push(b'\n');
        }
        if k == lines.len() {
            out.extend_from_slice(bad);
        }
        out
    };
    let loaded_before =
        |k: usize| -> Vec<String> { (0..k).map(|i| format!("dev-{i:04}")).collect() };
    // Not JSON; a value of the wrong type; not UTF-8; an id already loaded; a whole twin
    // followed by more text (found by cargo-fuzz: the row stayed, its members did not).
    let mut trailing = lines[0].clone().into_bytes();
    trailing.extend_from_slice(b" x");
    let kind = |text: &[u8]| Registry::new().import_ndjson(text).unwrap_err().kind;
    for (k, bad) in [
        (0, b"{\"deviceId\": ".to_vec()),
        (17, b"{\"deviceId\": 5}".to_vec()),
        (9, b"{\"deviceId\": \"x\xff\"}".to_vec()),
        (29, lines[3].clone().into_bytes()),
        (12, trailing),
    ] {
        let text = with(k, &bad);
        let (err, ids) = load_err(&text);
        assert!(err.starts_with(&format!("line {}: ", k + 1)), "{err}");
        assert_eq!(ids, loaded_before(k), "{err}");
        let expected = match k {
            9 => matches!(kind(&text), ImportErrorKind::NotUtf8),
            29 => matches!(kind(&text), ImportErrorKind::Device(_)),
            _ => matches!(kind(&text), ImportErrorKind::Json(_)),
        };
        assert!(expected, "{err}");
    }
    // A line longer than the bound, last or not.
    let long = format!("{{\"deviceId\": \"{}\"}}", "x".repeat(MAX_LINE_BYTES));
    for k in [4, 30] {
        let (err, ids) = load_err(&with(k, long.as_bytes()));
        assert_eq!(
            err,
            format!("line {}: longer than {} bytes", k + 1, MAX_LINE_BYTES)
        );
        assert_eq!(ids, loaded_before(k));
    }
}

/// A reader that fails after `left` bytes.
struct Failing<'a> {
    text: &'a [u8],
    left: usize,
}

impl std::io::Read for Failing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("disk gone"));
        }
        let n = buf.len().min(self.left).min(self.text.len());
        buf[..n].copy_from_slice(&self.text[..n]);
        self.text = &self.text[n..];
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn a_failing_reader_ends_the_import_after_the_whole_lines_read() {
    let twins = twins(20);
    let text = export(&twins);
    // Stop in the middle of the ninth twin's line.
    let ninth = text.find("dev-0008").unwrap();
    for chunk in [1, 64, 1 << 20] {
        let mut reg = Registry::new();
        let options = ImportOptions {
            parsers: 2,
            chunk_bytes: chunk,
        };
        let reader = Failing {
            text: text.as_bytes(),
            left: ninth,
        };
        let err = reg.import_ndjson_with(reader, options).unwrap_err();
        assert!(matches!(err.kind, ImportErrorKind::Read(_)), "{err}");
        assert!(err.to_string().contains("disk gone"), "{err}");
        let lines_before = text[..ninth].matches('\n').count() as u64;
        assert_eq!(err.line, lines_before + 1, "{err}");
        assert_eq!(reg.len(), 8, "{err}");
    }
}

/// Found in review: an empty report time matched the parser thread's empty cache of the
/// last time parsed (and loaded as the epoch); members given twice; the line bound
/// measured after trimming.
#[test]
fn empty_times_repeated_members_and_padded_long_lines_are_refused() {
    let empty_time =
        r#"{"deviceId": "d", "deviceProperties": {"p": {"value": 1, "lastUpdatedTime": ""}}}"#;
    let twice = r#"{"deviceId": "a", "deviceId": "b"}"#;
    let twice_service = r#"{"deviceId": "a", "serviceProperties": {"tags": ["x"], "tags": ["y"]}}"#;
    let twice_name = concat!(
        r#"{"deviceId": "a", "deviceProperties": {"p": {"value": 1, "lastUpdatedTime": "#,
        r#""2016-04-29T12:00:00Z"}, "p": {"value": 2, "lastUpdatedTime": "2016-04-29T12:00:00Z"}}}"#
    );
    for (line, kind) in [
        (empty_time, "json"),
        (twice, "json"),
        (twice_service, "json"),
        (twice_name, "device"),
    ] {
        for chunk in [1, 1 << 20] {
            let mut reg = Registry::new();
            let options = ImportOptions {
                parsers: 2,
                chunk_bytes: chunk,
            };
            let err = reg
                .import_ndjson_with(line.as_bytes(), options)
                .unwrap_err();
            assert_eq!(err.line, 1, "{line}");
            match kind {
                "json" => assert!(matches!(err.kind, ImportErrorKind::Json(_)), "{err}"),
                _ => assert!(matches!(err.kind, ImportErrorKind::Device(_)), "{err}"),
            }
            assert_eq!(reg.len(), 0);
        }
    }
    // A twin padded with spaces past the bound is too long whatever the chunk size.
    let padded = format!("{{\"deviceId\": \"d\"}}{}\n", " ".repeat(MAX_LINE_BYTES));
    for chunk in [1 << 20, (1 << 20) + 1, 4096] {
        let options = ImportOptions {
            parsers: 1,
            chunk_bytes: chunk,
        };
        let err = Registry::new()
            .import_ndjson_with(padded.as_bytes(), options)
            .unwrap_err();
        assert!(matches!(err.kind, ImportErrorKind::LineTooLong), "{err}");
    }
}

/// `chunk_bytes` above `MAX_CHUNK_BYTES` is taken as that bound (block text ranges are
/// `u32`): the largest setting loads what the default loads.
#[test]
fn chunk_sizes_above_the_bound_are_capped() {
    let twins = twins(40);
    let text = export(&twins);
    let mut expected = Registry::new();
    expected.import_ndjson(text.as_bytes()).unwrap();
    for chunk in [twinhub::registry::ndjson::MAX_CHUNK_BYTES, usize::MAX] {
        let mut reg = Registry::new();
        let options = ImportOptions {
            parsers: 2,
            chunk_bytes: chunk,
        };
        assert_eq!(
            reg.import_ndjson_with(text.as_bytes(), options).unwrap(),
            40
        );
        assert_eq!(all(&reg), all(&expected));
    }
}

/// An endless input: `good` twins, one bad line, then twins forever; counts what it gave.
struct Endless {
    line: u64,
    bad_at: u64,
    pending: Vec<u8>,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::io::Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pending.is_empty() {
            self.line += 1;
            self.pending = if self.line == self.bad_at {
                b"{\"deviceId\": 7}\n".to_vec()
            } else {
                format!("{{\"deviceId\": \"d{}\"}}\n", self.line).into_bytes()
            };
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

#[test]
fn the_reader_stays_a_bounded_number_of_chunks_ahead() {
    // Each parser has 2 chunks queued to it, 1 in hand and 2 parsed blocks queued from it;
    // the reader holds one more, and the caller the block it is adding.
    const PARSERS: u64 = 2;
    const CHUNK: u64 = 4096;
    const BAD_AT: u64 = 5_000;
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let input = Endless {
        line: 0,
        bad_at: BAD_AT,
        pending: Vec::new(),
        read: read.clone(),
    };
    let mut reg = Registry::new();
    let options = ImportOptions {
        parsers: PARSERS as usize,
        chunk_bytes: CHUNK as usize,
    };
    // The endless input ends only by the bad line: the import returns once the reader
    // found the parsers gone.
    let err = reg.import_ndjson_with(input, options).unwrap_err();
    assert_eq!(err.line, BAD_AT);
    assert_eq!(reg.len() as u64, BAD_AT - 1);
    let before_bad: u64 = (1..BAD_AT)
        .map(|i| format!("{{\"deviceId\": \"d{i}\"}}\n").len() as u64)
        .sum();
    let ahead = read.load(std::sync::atomic::Ordering::Relaxed) - before_bad;
    let bound = (PARSERS * 5 + 3) * (CHUNK + 64);
    assert!(
        ahead <= bound,
        "read {ahead} bytes past the bad line, more than {bound}"
    );
}
