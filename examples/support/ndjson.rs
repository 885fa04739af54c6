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
use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
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
            let mut spans = Spans {
                base,
                len: text.len(),
                extra: &mut extra,
            };
            if let Err(e) = block.push(at, line, &mut spans) {
                block.error = Some((at, e.to_string()));
                break;
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

    /// Parses a line straight into the block's tables (nothing allocated per line); on
    /// an error the tables are as they were.
    fn push(&mut self, line: u64, text: &str, spans: &mut Spans<'_>) -> serde_json::Result<()> {
        let lens = (self.device.len(), self.service.len(), self.tags.len());
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed = LineSeed {
            block: self,
            spans,
            line,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end());
        if parsed.is_err() {
            self.device.truncate(lens.0);
            self.service.truncate(lens.1);
            self.tags.truncate(lens.2);
        }
        parsed
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

/// One NDJSON line (a twin in the preview's JSON shape), parsed into a [`Block`]: the
/// row, its device properties, service properties and tags. Members this import does
/// not take (etags, authentication, nested service objects...) are skipped.
struct LineSeed<'b, 'e> {
    block: &'b mut Block,
    spans: &'b mut Spans<'e>,
    line: u64,
}

impl<'de> DeserializeSeed<'de> for LineSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LineSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a twin")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let LineSeed { block, spans, line } = self;
        let (device, service, tags) = (
            block.device.len() as u32,
            block.service.len() as u32,
            block.tags.len() as u32,
        );
        let mut device_id = None;
        let mut row = Row {
            line: line as u32,
            device_id: (0, 0),
            status: DeviceStatus::default(),
            status_reason: None,
            status_updated_time: None,
            connection_state: ConnectionState::default(),
            connection_state_updated_time: None,
            last_activity_time: None,
            is_managed: false,
            device: device..device,
            service: service..service,
            tags: tags..tags,
        };
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match &*key.0 {
                "deviceId" => device_id = Some(spans.span(&map.next_value::<Text<'de>>()?)),
                "status" => row.status = map.next_value()?,
                "statusReason" => {
                    row.status_reason = map
                        .next_value::<Option<Text<'de>>>()?
                        .map(|r| spans.span(&r))
                }
                "statusUpdatedTime" => row.status_updated_time = map.next_value()?,
                "connectionState" => row.connection_state = map.next_value()?,
                "connectionStateUpdatedTime" => {
                    row.connection_state_updated_time = map.next_value()?
                }
                "lastActivityTime" => row.last_activity_time = map.next_value()?,
                "isManaged" => row.is_managed = map.next_value()?,
                "deviceProperties" => map.next_value_seed(Members {
                    block: &mut *block,
                    spans: &mut *spans,
                    kind: MemberKind::Device,
                })?,
                "serviceProperties" => map.next_value_seed(Members {
                    block: &mut *block,
                    spans: &mut *spans,
                    kind: MemberKind::Service,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        row.device_id = device_id.ok_or_else(|| A::Error::missing_field("deviceId"))?;
        row.device.end = block.device.len() as u32;
        row.service.end = block.service.len() as u32;
        row.tags.end = block.tags.len() as u32;
        block.rows.push(row);
        Ok(())
    }
}

/// Which members a [`Members`] seed parses.
#[derive(Clone, Copy)]
enum MemberKind {
    /// `deviceProperties`: name -> `{value, lastUpdatedTime}`.
    Device,
    /// `serviceProperties`: `{properties: {name -> scalar}, tags: [..]}` (an object value
    /// nested in `properties` is refused: this import takes scalars).
    Service,
    /// `serviceProperties.properties`.
    ServiceScalars,
    /// `serviceProperties.tags`.
    Tags,
}

/// Parses members of a line straight into the block's tables.
struct Members<'b, 'e> {
    block: &'b mut Block,
    spans: &'b mut Spans<'e>,
    kind: MemberKind,
}

impl<'de> DeserializeSeed<'de> for Members<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.kind {
            MemberKind::Tags => d.deserialize_seq(self),
            _ => d.deserialize_map(self),
        }
    }
}

impl<'de> Visitor<'de> for Members<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self.kind {
            MemberKind::Tags => "an array of tags",
            _ => "an object",
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Members { block, spans, kind } = self;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match kind {
                MemberKind::Device => {
                    let reported = map.next_value::<Reported<'de>>()?;
                    let entry = (
                        spans.span(&key),
                        spans.value(&reported.value),
                        reported.at.0,
                    );
                    block.device.push(entry);
                }
                MemberKind::ServiceScalars => {
                    let value = map.next_value::<Raw<'de>>()?;
                    let entry = (spans.span(&key), spans.value(&value));
                    block.service.push(entry);
                }
                MemberKind::Service => {
                    let kind = match &*key.0 {
                        "properties" => MemberKind::ServiceScalars,
                        "tags" => MemberKind::Tags,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    map.next_value_seed(Members {
                        block: &mut *block,
                        spans: &mut *spans,
                        kind,
                    })?;
                }
                MemberKind::Tags => return Err(A::Error::custom("tags are an array")),
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(tag) = seq.next_element::<Text<'de>>()? {
            let span = self.spans.span(&tag);
            self.block.tags.push(span);
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Reported<'a> {
    #[serde(borrow)]
    value: Raw<'a>,
    #[serde(rename = "lastUpdatedTime")]
    at: At,
}

/// A report time. The properties of a twin are often reported together, so the text
/// is first compared with the one this thread parsed last (24 bytes) before parsing it.
struct At(Timestamp);

thread_local! {
    static LAST_AT: std::cell::RefCell<(String, Timestamp)> =
        const { std::cell::RefCell::new((String::new(), Timestamp::EPOCH)) };
}

impl<'de> Deserialize<'de> for At {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AtVisitor;
        impl Visitor<'_> for AtVisitor {
            type Value = At;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 date-time")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<At, E> {
                LAST_AT.with_borrow_mut(|(text, at)| {
                    if text.as_str() != s {
                        *at = s.parse().map_err(E::custom)?;
                        text.clear();
                        text.push_str(s);
                    }
                    Ok(At(*at))
                })
            }
        }
        d.deserialize_str(AtVisitor)
    }
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
