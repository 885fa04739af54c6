//! NDJSON twins (one twin a line, in the preview's JSON shape) loaded the way a service
//! restoring an export would: lines are parsed into borrowed fields (strings point into
//! the text read) and handed to a `BulkLoad` as `NewDevice` rows; no `Twin` is built.
//! Shared by the `bulk_load` example and the `query_file` bench.
//!
//! Parsing runs on every core: one thread reads the input in chunks of whole lines,
//! parser threads (one per core) turn each chunk into a [`Block`] (the chunk's text and
//! its rows as ranges of it), and the calling thread adds the blocks' rows to the load in
//! input order, while the load indexes earlier batches on its own threads. At most
//! `2 * IN_FLIGHT` chunks per parser are read ahead (bounded channels), so memory stays
//! bounded by a few chunks per core whatever the input's size.

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::mpsc::{SyncSender, sync_channel};
use twinhub::Timestamp;
use twinhub::registry::{BulkLoad, NewDevice, Registry};
use twinhub::twin::{ConnectionState, DeviceStatus, Number, ScalarRef};

/// Lines longer than this are refused (an export line is a few KiB).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// How many bytes of whole lines a chunk holds (more when one line is longer).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Chunks queued for each parser, and blocks queued from each parser.
const IN_FLIGHT: usize = 2;

/// Loads every line of `reader` into `registry` (empty lines skipped); returns how many
/// devices were loaded. The first bad line ends the load with its number; the lines
/// before it stay loaded.
pub fn load(reader: impl Read + Send, registry: &mut Registry) -> Result<usize, String> {
    let parsers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    load_with(reader, registry, parsers, CHUNK_BYTES)
}

/// [`load`] with `parsers` parser threads and chunks of `chunk_bytes` (tests use small
/// chunks to put many lines across chunk boundaries).
pub fn load_with(
    reader: impl Read + Send,
    registry: &mut Registry,
    parsers: usize,
    chunk_bytes: usize,
) -> Result<usize, String> {
    let parsers = parsers.max(1);
    std::thread::scope(|scope| {
        let mut to_parsers = Vec::with_capacity(parsers);
        let mut from_parsers = Vec::with_capacity(parsers);
        for _ in 0..parsers {
            let (chunk_tx, chunk_rx) = sync_channel::<Chunk>(IN_FLIGHT);
            let (block_tx, block_rx) = sync_channel::<Block>(IN_FLIGHT);
            scope.spawn(move || {
                for chunk in chunk_rx {
                    if block_tx.send(Block::parse(chunk)).is_err() {
                        break;
                    }
                }
            });
            to_parsers.push(chunk_tx);
            from_parsers.push(block_rx);
        }
        scope.spawn(move || read_chunks(reader, &to_parsers, chunk_bytes.max(1)));
        // Chunk i went to parser i % parsers: taking blocks round-robin keeps input order.
        // Returning early drops the receivers, which ends the parsers, then the reader.
        let mut bulk = registry.bulk_load();
        let mut lines_before = 0u64;
        for receiver in from_parsers.iter().cycle() {
            let Ok(block) = receiver.recv() else { break };
            block.add_to(&mut bulk, lines_before)?;
            lines_before += block.lines;
        }
        Ok(bulk.finish())
    })
}

/// Whole lines read from the input, or why reading stopped after them.
struct Chunk {
    bytes: Vec<u8>,
    error: Option<String>,
}

/// Reads `reader` into chunks of whole lines, dealt round-robin to the parsers; ends at
/// the end of the input, at an error (sent after the lines before it), or when the
/// parsers are gone.
fn read_chunks(mut reader: impl Read, parsers: &[SyncSender<Chunk>], chunk_bytes: usize) {
    let mut carry: Vec<u8> = Vec::new();
    for to in parsers.iter().cycle() {
        // The carried part of a line has no line end: look for one in what is read next.
        let mut bytes = std::mem::take(&mut carry);
        let mut searched = bytes.len();
        let mut want = bytes.len() + chunk_bytes;
        let mut error = None;
        let mut eof;
        loop {
            match (&mut reader)
                .take((want - bytes.len()) as u64)
                .read_to_end(&mut bytes)
            {
                Ok(_) => eof = bytes.len() < want,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error = Some(e.to_string());
                    eof = true;
                }
            }
            if let Some(last) = bytes[searched..].iter().rposition(|&b| b == b'\n') {
                if !eof {
                    carry = bytes.split_off(searched + last + 1);
                }
                break;
            }
            if eof {
                break;
            }
            if bytes.len() > MAX_LINE_BYTES {
                // No line end yet: this line is too long (the lines before were sent).
                bytes.clear();
                error = Some(format!("longer than {MAX_LINE_BYTES} bytes"));
                eof = true;
                break;
            }
            // A line longer than a chunk: read as much again.
            searched = bytes.len();
            want = 2 * bytes.len();
        }
        let stop = eof || error.is_some();
        if (!bytes.is_empty() || error.is_some()) && to.send(Chunk { bytes, error }).is_err() {
            return;
        }
        if stop {
            return;
        }
    }
}

/// A text range of a [`Block`].
type Span = (u32, u32);

/// A scalar of a [`Block`]: a string is a range of its text.
#[derive(Clone, Copy)]
enum Value {
    Bool(bool),
    Number(Number),
    String(Span),
}

/// One twin of a [`Block`]: its fields, and its members as ranges of the block's tables.
struct Row {
    /// The line within the block (0-based).
    line: u32,
    device_id: Span,
    status: DeviceStatus,
    status_reason: Option<Span>,
    status_updated_time: Option<Timestamp>,
    connection_state: ConnectionState,
    connection_state_updated_time: Option<Timestamp>,
    last_activity_time: Option<Timestamp>,
    is_managed: bool,
    device: Range<u32>,
    service: Range<u32>,
    tags: Range<u32>,
}

/// A chunk parsed: its text (then any unescaped strings), its rows, and the rows' members.
struct Block {
    text: String,
    rows: Vec<Row>,
    device: Vec<(Span, Value, Timestamp)>,
    service: Vec<(Span, Value)>,
    tags: Vec<Span>,
    /// How many input lines the block covers.
    lines: u64,
    /// The first bad line (0-based in the block) and why; the block's rows precede it.
    error: Option<(u64, String)>,
}

impl Block {
    fn parse(chunk: Chunk) -> Block {
        let mut block = Block {
            text: String::new(),
            rows: Vec::new(),
            device: Vec::new(),
            service: Vec::new(),
            tags: Vec::new(),
            lines: 0,
            error: None,
        };
        let text = match String::from_utf8(chunk.bytes) {
            Ok(text) => text,
            Err(e) => {
                // Keep the whole lines before the first invalid byte.
                let valid = e.utf8_error().valid_up_to();
                let mut bytes = e.into_bytes();
                let cut = bytes[..valid]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
                bytes.truncate(cut);
                let lines = bytecount(&bytes);
                block.error = Some((lines, "not UTF-8".to_owned()));
                String::from_utf8(bytes).expect("cut at a line end before the invalid byte")
            }
        };
        let mut extra = String::new();
        let base = text.as_ptr() as usize;
        let mut lines = 0u64;
        for line in text.split_inclusive('\n') {
            let at = lines;
            lines += 1;
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if line.len() > MAX_LINE_BYTES {
                block.error = Some((at, format!("longer than {MAX_LINE_BYTES} bytes")));
                break;
            }
            match serde_json::from_str::<Line>(line) {
                Ok(parsed) => {
                    let mut spans = Spans {
                        base,
                        len: text.len(),
                        extra: &mut extra,
                    };
                    block.push(at, &parsed, &mut spans);
                }
                Err(e) => {
                    block.error = Some((at, e.to_string()));
                    break;
                }
            }
        }
        block.lines = match (&block.error, chunk.error) {
            (Some((line, _)), _) => *line,
            (None, Some(e)) => {
                block.error = Some((lines, e));
                lines
            }
            (None, None) => lines,
        };
        block.text = text;
        block.text.push_str(&extra);
        block
    }

    /// Appends a parsed line's row and members.
    fn push(&mut self, line: u64, parsed: &Line<'_>, spans: &mut Spans<'_>) {
        let device_start = self.device.len() as u32;
        for (name, p) in &parsed.device_properties {
            let entry = (spans.span(name), spans.value(&p.value), p.at);
            self.device.push(entry);
        }
        let service_start = self.service.len() as u32;
        for (name, v) in &parsed.service_properties.properties {
            let entry = (spans.span(name), spans.value(v));
            self.service.push(entry);
        }
        let tags_start = self.tags.len() as u32;
        for tag in &parsed.service_properties.tags {
            self.tags.push(spans.span(tag));
        }
        self.rows.push(Row {
            line: line as u32,
            device_id: spans.span(&parsed.device_id),
            status: parsed.status,
            status_reason: parsed.status_reason.as_ref().map(|r| spans.span(r)),
            status_updated_time: parsed.status_updated_time,
            connection_state: parsed.connection_state,
            connection_state_updated_time: parsed.connection_state_updated_time,
            last_activity_time: parsed.last_activity_time,
            is_managed: parsed.is_managed,
            device: device_start..self.device.len() as u32,
            service: service_start..self.service.len() as u32,
            tags: tags_start..self.tags.len() as u32,
        });
    }

    fn str(&self, (start, len): Span) -> &str {
        &self.text[start as usize..(start + len) as usize]
    }

    fn scalar(&self, v: Value) -> ScalarRef<'_> {
        match v {
            Value::Bool(b) => ScalarRef::Bool(b),
            Value::Number(n) => ScalarRef::Number(n),
            Value::String(s) => ScalarRef::String(self.str(s)),
        }
    }

    /// Adds the block's rows to the load, then reports its error; `lines_before` is the
    /// number of input lines before the block.
    fn add_to(&self, bulk: &mut BulkLoad<'_>, lines_before: u64) -> Result<(), String> {
        let mut device = Vec::new();
        let mut service = Vec::new();
        let mut tags = Vec::new();
        for row in &self.rows {
            device.clear();
            device.extend(
                self.device[row.device.start as usize..row.device.end as usize]
                    .iter()
                    .map(|&(name, v, at)| (self.str(name), self.scalar(v), at)),
            );
            service.clear();
            service.extend(
                self.service[row.service.start as usize..row.service.end as usize]
                    .iter()
                    .map(|&(name, v)| (self.str(name), self.scalar(v))),
            );
            tags.clear();
            tags.extend(
                self.tags[row.tags.start as usize..row.tags.end as usize]
                    .iter()
                    .map(|&t| self.str(t)),
            );
            bulk.add(&NewDevice {
                status: row.status,
                status_reason: row.status_reason.map(|r| self.str(r)),
                status_updated_time: row.status_updated_time,
                connection_state: row.connection_state,
                connection_state_updated_time: row.connection_state_updated_time,
                last_activity_time: row.last_activity_time,
                is_managed: row.is_managed,
                device_properties: &device,
                service_properties: &service,
                tags: &tags,
                ..NewDevice::new(self.str(row.device_id))
            })
            .map_err(|e| format!("line {}: {e}", lines_before + u64::from(row.line) + 1))?;
        }
        match &self.error {
            Some((line, e)) => Err(format!("line {}: {e}", lines_before + line + 1)),
            None => Ok(()),
        }
    }
}

/// Turns a line's strings into ranges of its block's text: a borrowed string is where it
/// is in the chunk, an unescaped one is appended after the chunk.
struct Spans<'e> {
    /// The chunk's address and length.
    base: usize,
    len: usize,
    /// Unescaped strings, to follow the chunk's text.
    extra: &'e mut String,
}

impl Spans<'_> {
    fn span(&mut self, s: &Text<'_>) -> Span {
        match &s.0 {
            Cow::Borrowed(b) => ((b.as_ptr() as usize - self.base) as u32, b.len() as u32),
            Cow::Owned(o) => {
                let start = self.len + self.extra.len();
                self.extra.push_str(o);
                (start as u32, o.len() as u32)
            }
        }
    }

    fn value(&mut self, v: &Raw<'_>) -> Value {
        match v {
            Raw::Bool(b) => Value::Bool(*b),
            Raw::Number(n) => Value::Number(*n),
            Raw::Str(s) => Value::String(self.span(s)),
        }
    }
}

/// How many line ends `bytes` holds.
fn bytecount(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// One NDJSON line, borrowed from the line's text where it can be.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    #[serde(borrow)]
    device_id: Text<'a>,
    #[serde(default)]
    status: DeviceStatus,
    #[serde(borrow, default)]
    status_reason: Option<Text<'a>>,
    #[serde(default)]
    status_updated_time: Option<Timestamp>,
    #[serde(default)]
    connection_state: ConnectionState,
    #[serde(default)]
    connection_state_updated_time: Option<Timestamp>,
    #[serde(default)]
    last_activity_time: Option<Timestamp>,
    #[serde(default)]
    is_managed: bool,
    #[serde(borrow, default, deserialize_with = "pairs")]
    device_properties: Vec<(Text<'a>, Reported<'a>)>,
    #[serde(borrow, default)]
    service_properties: Service<'a>,
}

#[derive(Deserialize)]
struct Reported<'a> {
    #[serde(borrow)]
    value: Raw<'a>,
    #[serde(rename = "lastUpdatedTime")]
    at: Timestamp,
}

#[derive(Deserialize, Default)]
struct Service<'a> {
    #[serde(borrow, default, deserialize_with = "pairs")]
    properties: Vec<(Text<'a>, Raw<'a>)>,
    #[serde(borrow, default)]
    tags: Vec<Text<'a>>,
}

/// A JSON string, borrowed unless it has escapes (serde's own `Cow` impl always copies
/// unless the field says `borrow`, which cannot reach inside a `Vec` or a tuple).
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(TextVisitor(PhantomData))
    }
}

/// A JSON scalar, a string borrowed unless it has escapes.
enum Raw<'a> {
    Bool(bool),
    Number(Number),
    Str(Text<'a>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RawVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for RawVisitor<'a> {
            type Value = Raw<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a boolean, number or string")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Raw<'a>, E> {
                Ok(Raw::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Raw<'a>, E> {
                Ok(Raw::Number(Number::from(i)))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Raw<'a>, E> {
                Ok(Raw::Number(Number::from(u)))
            }
            fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Raw<'a>, E> {
                Number::from_f64(f)
                    .map(Raw::Number)
                    .ok_or_else(|| E::custom("a number out of range"))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Raw<'a>, E> {
                Ok(Raw::Str(Text(Cow::Borrowed(s))))
            }
            fn visit_str<E>(self, s: &str) -> Result<Raw<'a>, E> {
                Ok(Raw::Str(Text(Cow::Owned(s.to_string()))))
            }
        }
        d.deserialize_any(RawVisitor(PhantomData))
    }
}

/// A JSON object as a list of its members, in order (no map built per line).
fn pairs<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
    d: D,
) -> Result<Vec<(Text<'de>, V)>, D::Error> {
    struct Pairs<V>(PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for Pairs<V> {
        type Value = Vec<(Text<'de>, V)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
            while let Some((k, v)) = map.next_entry::<Text<'de>, V>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Pairs(PhantomData))
}

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
