//! The layering rule, checked on the source: the domain modules (`twin`, `registry`,
//! `query`, `job`, `store`, `resource`) never name the protocol modules (`coap`, `dtls`,
//! `lwm2m`, `transport`), in code or in doc links. They speak the device vocabulary of
//! `resource`; the protocol modules depend on the domain, never the other way round. This
//! is what lets the core build and run without the transport features.
//!
//! Doctests are a user's code and may name anything (`twinhub::transport::memory` in an
//! example is fine), so `twinhub::X` is only checked outside doc comments.

use std::path::{Path, PathBuf};

const DOMAIN: [&str; 6] = ["twin", "registry", "query", "job", "store", "resource"];
const PROTOCOL: [&str; 4] = ["coap", "dtls", "lwm2m", "transport"];

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether `text` at `at` starts the identifier `name` as a whole word.
fn word_at(text: &str, at: usize, name: &str) -> bool {
    text[at..].starts_with(name)
        && !text[at + name.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// The places in `source` that name a protocol module, as `(line, why)`.
fn violations(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let line_of = |at: usize| source[..at].matches('\n').count() + 1;
    for (at, _) in source.match_indices("crate::") {
        let rest = at + "crate::".len();
        // `crate::lwm2m`, `crate::transport::DeviceOp`, ...
        for name in PROTOCOL {
            if word_at(source, rest, name) {
                found.push((line_of(at), format!("crate::{name}")));
            }
        }
        // `crate::{lwm2m::Lwm2mPath, twin::DeviceId}`: every top-level name in the group.
        if source[rest..].starts_with('{') {
            let group_end = source[rest..]
                .find('}')
                .map_or(source.len(), |end| rest + end);
            let group = &source[rest + 1..group_end];
            for item in group.split(',') {
                let first = item.trim().split("::").next().unwrap_or("").trim();
                if PROTOCOL.contains(&first) {
                    found.push((line_of(at), format!("crate::{{{first}::..}}")));
                }
            }
        }
    }
    // `super::super::lwm2m` (any depth).
    for (at, _) in source.match_indices("super::") {
        let mut rest = at;
        while source[rest..].starts_with("super::") {
            rest += "super::".len();
        }
        for name in PROTOCOL {
            if rest - at > "super::".len() && word_at(source, rest, name) {
                found.push((line_of(at), format!("super::..::{name}")));
            }
        }
    }
    // `twinhub::lwm2m` outside doc comments (doctests are a user's code).
    for (number, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("///") || trimmed.starts_with("//!") {
            continue;
        }
        for (at, _) in line.match_indices("twinhub::") {
            for name in PROTOCOL {
                if word_at(line, at + "twinhub::".len(), name) {
                    found.push((number + 1, format!("twinhub::{name}")));
                }
            }
        }
    }
    found
}

#[test]
fn the_checker_finds_each_form_of_violation() {
    let cases = [
        "use crate::lwm2m::Lwm2mPath;",
        "use crate::{twin::DeviceId, transport::DeviceOp};",
        "use crate::{\n    coap::Message,\n};",
        "use super::super::dtls::Server;",
        "/// See [`DeviceOp`](crate::transport::DeviceOp).",
        "let x = twinhub::lwm2m::content::encode();",
    ];
    for case in cases {
        assert_eq!(violations(case).len(), 1, "{case}");
    }
    let allowed = [
        "use crate::resource::{Lwm2mPath, DeviceOp};",
        "use crate::{twin::DeviceId, resource::OpId};",
        "use super::super::engine::JobEngine;",
        "/// use twinhub::transport::memory::MemoryTransport;",
        "use crate::lwm2mish::Thing;",
    ];
    for case in allowed {
        assert_eq!(violations(case), [], "{case}");
    }
}

#[test]
fn the_domain_never_names_the_protocol_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for module in DOMAIN {
        let dir = src.join(module);
        assert!(dir.is_dir(), "{} is missing", dir.display());
        rust_files(&dir, &mut files);
        let flat = src.join(format!("{module}.rs"));
        if flat.is_file() {
            files.push(flat);
        }
    }
    assert!(files.len() > 20, "found only {} domain files", files.len());
    let mut report = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        for (line, why) in violations(&source) {
            report.push(format!("{}:{line}: names {why}", file.display()));
        }
    }
    assert!(
        report.is_empty(),
        "the domain names protocol modules:\n{}",
        report.join("\n")
    );
}
