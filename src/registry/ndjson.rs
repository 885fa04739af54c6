//! Importing an NDJSON export: one twin a line, in the preview's JSON shape (what
//! `serde_json` writes for a [`Twin`](crate::twin::Twin)), loaded through a
//! [`BulkLoad`] as borrowed rows: no `Twin` is built per line.
//!
//! [`Registry::import_ndjson`] parses on every core: one thread reads the input in chunks
//! of whole lines ([`ImportOptions::chunk_bytes`]), parser threads (one per core by
//! default) parse each chunk straight into a block of row tables (the chunk's text, and
//! each row's names, values and tags as ranges of it), and the calling thread adds the
//! blocks' rows to the load in input order while the load indexes earlier batches on its
//! own threads.
//!
//! What a line may carry: `deviceId` (required), `status`, `statusReason`,
//! `statusUpdatedTime`, `connectionState`, `connectionStateUpdatedTime`,
//! `lastActivityTime`, `isManaged`, `deviceProperties` (name -> `{value,
//! lastUpdatedTime}`) and `serviceProperties` (`properties`: name -> scalar; `tags`).
//! Other members (etags, generation ids, authentication, registration, configuration)
//! are skipped: the import creates devices afresh. A service property whose value is an
//! object is refused (load such twins with [`Registry::load`]).
//!
//! Bounds, each a count, and what happens at them:
//!
//! | bound | value | at it |
//! |---|---|---|
//! | [`MAX_LINE_BYTES`] | 1 MiB | a longer line ends the import with [`ImportErrorKind::LineTooLong`] |
//! | chunks read ahead | 2 queued to each parser, 2 parsed blocks queued from each | the reader waits: at most 5 chunks a parser, plus 3, are read past the line being loaded, whatever the input's size (`tests/ndjson_import.rs` reads an endless input) |
//! | loaded blocks kept for reuse | 4 | a block loaded while 4 wait for the reader is freed |
//!
//! The first bad line ends the import with its number ([`ImportError::line`], from 1);
//! the lines before it stay loaded, the registry stays consistent. A member given twice
//! in a line is refused, and so is a property name given twice (where deserialising a
//! `Twin` keeps the last). The import returns once its threads have exited (joined, so
//! nothing of theirs outlives it): after an error, that waits for a read already in
//! progress (from a pipe or socket, until it returns).

use super::{BulkLoad, NewDevice, Registry, RegistryError};
use crate::Timestamp;
use crate::twin::{ConnectionState, DeviceStatus, Etag, Number, ScalarRef};
use serde::Deserialize;
use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Lines longer than this are refused (an export line is a few KiB).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The largest chunk size [`ImportOptions::chunk_bytes`] takes (256 MiB): a block's text
/// ranges are `u32`s, and a block holds at most a chunk and one line, plus its unescaped
/// strings (no longer than their escaped text).
pub const MAX_CHUNK_BYTES: usize = 1 << 28;

/// Chunks queued for each parser, and blocks queued from each parser.
const IN_FLIGHT: usize = 2;

/// Loaded blocks kept for the reader to read into again (their text buffers and row
/// tables), so that a long import stops allocating (and the kernel zeroing pages for)
/// a chunk's buffers once the first few are in use. A block loaded while this many wait
/// is freed instead.
const SPARE_BLOCKS: usize = 4;

/// How an import runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportOptions {
    /// Parser threads; 0 (the default) means one per core, at most 8.
    pub parsers: usize,
    /// Bytes of whole lines a chunk holds (more when one line is longer; default 1 MiB, at
    /// most [`MAX_CHUNK_BYTES`]).
    pub chunk_bytes: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            parsers: 0,
            chunk_bytes: 1 << 20,
        }
    }
}

/// Why an import stopped: the line (from 1) and what was wrong with it. The lines
/// before it are loaded.
#[derive(Debug)]
pub struct ImportError {
    /// The line's number, from 1.
    pub line: u64,
    /// What was wrong.
    pub kind: ImportErrorKind,
}

/// What was wrong with a line.
#[derive(Debug)]
#[non_exhaustive]
pub enum ImportErrorKind {
    /// Reading the input failed before this line.
    Read(std::io::Error),
    /// The line is longer than [`MAX_LINE_BYTES`].
    LineTooLong,
    /// The line is not UTF-8.
    NotUtf8,
    /// The line is not a twin in JSON (the parser's message).
    Json(String),
    /// The registry refused the device (an invalid name or value, an id it holds).
    Device(RegistryError),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        match &self.kind {
            ImportErrorKind::Read(e) => write!(f, "reading failed: {e}"),
            ImportErrorKind::LineTooLong => write!(f, "longer than {MAX_LINE_BYTES} bytes"),
            ImportErrorKind::NotUtf8 => f.write_str("not UTF-8"),
            ImportErrorKind::Json(e) => f.write_str(e),
            ImportErrorKind::Device(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ImportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ImportErrorKind::Read(e) => Some(e),
            ImportErrorKind::Device(e) => Some(e),
            _ => None,
        }
    }
}

impl Registry {
    /// Imports an NDJSON export (one twin a line; see [the module](self)), parsing on
    /// every core; returns how many devices were added. Empty lines are skipped. The
    /// first bad line ends the import with its number; the lines before it stay loaded.
    ///
    /// ```
    /// use twinhub::registry::Registry;
    /// let export = concat!(
    ///     r#"{"deviceId": "d1", "deviceProperties": {"FirmwareVersion": {"value": "1.2", "#,
    ///     r#""lastUpdatedTime": "2016-04-29T12:00:00.000Z"}}, "serviceProperties": "#,
    ///     r#"{"properties": {"region": "eu"}, "tags": ["pilot"]}}"#,
    ///     "\n",
    ///     r#"{"deviceId": "d2"}"#,
    ///     "\n",
    /// );
    /// let mut registry = Registry::new();
    /// assert_eq!(registry.import_ndjson(export.as_bytes()).unwrap(), 2);
    /// assert_eq!(registry.tag_bitmap("pilot").unwrap().len(), 1);
    /// let err = registry.import_ndjson("\n{\"deviceId\": 7}".as_bytes()).unwrap_err();
    /// assert_eq!(err.line, 2);
    /// ```
    pub fn import_ndjson(&mut self, reader: impl Read + Send) -> Result<usize, ImportError> {
        self.import_ndjson_with(reader, ImportOptions::default())
    }

    /// [`Registry::import_ndjson`] with explicit threads and chunk size.
    pub fn import_ndjson_with(
        &mut self,
        reader: impl Read + Send,
        options: ImportOptions,
    ) -> Result<usize, ImportError> {
        let parsers = match options.parsers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
            n => n,
        };
        let chunk_bytes = options.chunk_bytes.clamp(1, MAX_CHUNK_BYTES);
        std::thread::scope(|scope| {
            let (spare_tx, spare_rx) = sync_channel::<Block>(SPARE_BLOCKS);
            let mut to_parsers = Vec::with_capacity(parsers);
            let mut from_parsers = Vec::with_capacity(parsers);
            let mut threads = Vec::with_capacity(parsers + 1);
            for i in 0..parsers {
                let (chunk_tx, chunk_rx) = sync_channel::<Chunk>(IN_FLIGHT);
                let (block_tx, block_rx) = sync_channel::<Block>(IN_FLIGHT);
                let parser = std::thread::Builder::new()
                    .name(format!("twinhub-import-{i}"))
                    .spawn_scoped(scope, move || {
                        for chunk in chunk_rx {
                            if block_tx.send(Block::parse(chunk)).is_err() {
                                break;
                            }
                        }
                    })
                    .expect("a parser thread starts");
                threads.push(parser);
                to_parsers.push(chunk_tx);
                from_parsers.push(block_rx);
            }
            let reader = std::thread::Builder::new()
                .name("twinhub-import-read".into())
                .spawn_scoped(scope, move || {
                    read_chunks(reader, &to_parsers, &spare_rx, chunk_bytes)
                })
                .expect("the reader thread starts");
            threads.push(reader);
            // Dropping the receivers (when the blocks are loaded, or at the first bad
            // line) ends the parsers, then the reader.
            let loaded = self.load_blocks(from_parsers, spare_tx);
            // Joined, not only left behind in the scope: leaving it waits for the threads'
            // closures, not for the threads to exit, and their thread-local storage would
            // outlive the import for a moment.
            for thread in threads {
                if let Err(panic) = thread.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            loaded
        })
    }

    /// Adds the parsers' blocks to a bulk load in input order, giving each loaded block
    /// back to the reader through `spares`.
    fn load_blocks(
        &mut self,
        from_parsers: Vec<Receiver<Block>>,
        spares: SyncSender<Block>,
    ) -> Result<usize, ImportError> {
        // Chunk i went to parser i % parsers: taking blocks round-robin keeps input order.
        let mut bulk = self.bulk_load();
        let mut lines_before = 0u64;
        for receiver in from_parsers.iter().cycle() {
            let Ok(mut block) = receiver.recv() else {
                break;
            };
            let lines = block.lines;
            block.add_to(&mut bulk, lines_before)?;
            lines_before += lines;
            block.clear();
            // The reader takes it back when it next reads; if enough wait, it goes.
            let _ = spares.try_send(block);
        }
        Ok(bulk.finish())
    }
}

/// Whole lines read from the input, or why reading stopped after them; and, when one
/// came back, an emptied block to parse them into.
struct Chunk {
    bytes: Vec<u8>,
    error: Option<ImportErrorKind>,
    spare: Option<Block>,
}

/// Reads `reader` into chunks of whole lines, dealt round-robin to the parsers; ends at
/// the end of the input, at an error (sent after the lines before it), or when the
/// parsers are gone. A chunk is read into the text buffer of a loaded block from
/// `spares` when one is there, and goes with the rest of that block.
fn read_chunks(
    mut reader: impl Read,
    parsers: &[SyncSender<Chunk>],
    spares: &Receiver<Block>,
    chunk_bytes: usize,
) {
    let mut carry: Vec<u8> = Vec::new();
    for to in parsers.iter().cycle() {
        let mut spare = spares.try_recv().ok();
        let mut bytes = spare
            .as_mut()
            .map(|block| std::mem::take(&mut block.text).into_bytes())
            .unwrap_or_default();
        bytes.clear();
        // The carried part of a line has no line end: look for one in what is read next.
        bytes.extend_from_slice(&carry);
        carry.clear();
        let mut searched = bytes.len();
        let mut want = bytes.len() + chunk_bytes;
        let mut error = None;
        let mut eof;
        loop {
            // Room for the whole read up front: growing while reading would copy the chunk.
            bytes.reserve_exact(want - bytes.len());
            match (&mut reader)
                .take((want - bytes.len()) as u64)
                .read_to_end(&mut bytes)
            {
                Ok(_) => eof = bytes.len() < want,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error = Some(ImportErrorKind::Read(e));
                    eof = true;
                }
            }
            if let Some(last) = bytes[searched..].iter().rposition(|&b| b == b'\n') {
                if !eof {
                    carry.extend_from_slice(&bytes[searched + last + 1..]);
                    bytes.truncate(searched + last + 1);
                }
                break;
            }
            if eof {
                break;
            }
            if bytes.len() > MAX_LINE_BYTES {
                // No line end yet: this line is too long (the lines before were sent).
                bytes.clear();
                error = Some(ImportErrorKind::LineTooLong);
                eof = true;
                break;
            }
            // A line longer than a chunk: read as much again.
            searched = bytes.len();
            want = 2 * bytes.len();
        }
        if matches!(error, Some(ImportErrorKind::Read(_))) {
            // Reading failed: a line cut short is not a line.
            let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            bytes.truncate(whole);
        }
        let stop = eof || error.is_some();
        if !bytes.is_empty() || error.is_some() {
            let chunk = Chunk {
                bytes,
                error,
                spare,
            };
            if to.send(chunk).is_err() {
                return;
            }
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
    error: Option<(u64, ImportErrorKind)>,
    /// Whether lines are stored twins' heads (see [`StoredRows`]): then each row also
    /// has its versions and rare fields in `stored`, and `scratch` collects them.
    stored_mode: bool,
    stored: Vec<StoredFields>,
    scratch: StoredFields,
}

/// What a stored twin's head carries beyond an export line's members.
#[derive(Default)]
struct StoredFields {
    generation: u64,
    etag: u64,
    service_etag: u64,
    extra: super::Extra,
    /// The head's sealed PSK key (hex), for the store to open.
    sealed_psk: Option<String>,
    /// Whether the head holds its PSK key as plain hex.
    plain_psk: bool,
    /// Whether its sealed PSK key opened with a retired key.
    retired_psk: bool,
}

impl Block {
    fn empty() -> Block {
        Block {
            text: String::new(),
            rows: Vec::new(),
            device: Vec::new(),
            service: Vec::new(),
            tags: Vec::new(),
            lines: 0,
            error: None,
            stored_mode: false,
            stored: Vec::new(),
            scratch: StoredFields::default(),
        }
    }

    /// Empties the block, keeping its buffers (for [`Chunk::spare`]).
    fn clear(&mut self) {
        self.text.clear();
        self.rows.clear();
        self.device.clear();
        self.service.clear();
        self.tags.clear();
        self.lines = 0;
        self.error = None;
        self.stored.clear();
        self.scratch = StoredFields::default();
    }

    fn parse(chunk: Chunk) -> Block {
        let mut block = chunk.spare.unwrap_or_else(Block::empty);
        debug_assert!(block.rows.is_empty() && block.text.is_empty() && !block.stored_mode);
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
                block.error = Some((lines, ImportErrorKind::NotUtf8));
                String::from_utf8(bytes).expect("cut at a line end before the invalid byte")
            }
        };
        let mut extra = String::new();
        let base = text.as_ptr() as usize;
        let mut lines = 0u64;
        for line in text.split_inclusive('\n') {
            let at = lines;
            lines += 1;
            // The reader's measure: the line's bytes up to its `\n`, any `\r` included.
            if line.strip_suffix('\n').unwrap_or(line).len() > MAX_LINE_BYTES {
                block.error = Some((at, ImportErrorKind::LineTooLong));
                break;
            }
            // JSON's own whitespace only: a line ending in another space character stays invalid.
            let line = line.trim_end_matches([' ', '\t', '\r', '\n']);
            if line.is_empty() {
                continue;
            }
            let mut spans = Spans {
                base,
                len: text.len(),
                extra: &mut extra,
            };
            if let Err(e) = block.push(at, line, &mut spans) {
                block.error = Some((at, ImportErrorKind::Json(e.to_string())));
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
        let lens = (
            self.rows.len(),
            self.device.len(),
            self.service.len(),
            self.tags.len(),
        );
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed = LineSeed {
            block: self,
            spans,
            line,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end());
        if parsed.is_err() {
            // Also when the row was whole and only trailing text was wrong.
            self.rows.truncate(lens.0);
            self.device.truncate(lens.1);
            self.service.truncate(lens.2);
            self.tags.truncate(lens.3);
            self.stored.truncate(lens.0);
            self.scratch = StoredFields::default();
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

    /// A row's device properties, service properties and tags, borrowed.
    #[allow(clippy::type_complexity)]
    fn row_members<'s>(
        &'s self,
        row: &Row,
        device: &mut Vec<(&'s str, ScalarRef<'s>, Timestamp)>,
        service: &mut Vec<(&'s str, ScalarRef<'s>)>,
        tags: &mut Vec<&'s str>,
    ) {
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
    }

    /// Adds the block's rows to the load, then reports its error; `lines_before` is the
    /// number of input lines before the block.
    fn add_to(&mut self, bulk: &mut BulkLoad<'_>, lines_before: u64) -> Result<(), ImportError> {
        let mut device = Vec::new();
        let mut service = Vec::new();
        let mut tags = Vec::new();
        for row in &self.rows {
            self.row_members(row, &mut device, &mut service, &mut tags);
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
            .map_err(|e| ImportError {
                line: lines_before + u64::from(row.line) + 1,
                kind: ImportErrorKind::Device(e),
            })?;
        }
        match self.error.take() {
            Some((line, kind)) => Err(ImportError {
                line: lines_before + line + 1,
                kind,
            }),
            None => Ok(()),
        }
    }
}

/// Stored twins parsed into rows for a bulk load: what the store's reopening does
/// instead of building a [`crate::twin::Twin`] per head (the twin's JSON without its
/// device properties, as `{"twin": .., "psk": ..}`). A batch is filled in two steps: the
/// heads' texts ([`StoredRows::push_head`]), then, in order, each head parsed into a
/// row ([`StoredRows::parse_head`]) followed by its device properties. A head the rows
/// cannot hold (a service property whose value is an object) is the caller's to decode
/// and add as a twin ([`StoredRows::push_twin`]), in its place.
pub(crate) struct StoredRows {
    block: Block,
    /// The heads' ranges of `text`.
    heads: Vec<Range<u32>>,
    text: String,
    /// Strings that are not in `text` (unescaped, or from elsewhere), to follow it.
    extra: String,
    /// Twins added whole, each with its etag, before the row at their position.
    twins: Vec<(u32, Box<crate::twin::Twin>, u64)>,
}

impl StoredRows {
    pub(crate) fn new() -> Self {
        let mut block = Block::empty();
        block.stored_mode = true;
        StoredRows {
            block,
            heads: Vec::new(),
            text: String::new(),
            extra: String::new(),
            twins: Vec::new(),
        }
    }

    /// Bytes of head text held (heads are added until a batch holds enough).
    pub(crate) fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Bytes of strings held after the heads' text (unescaped, or copied in).
    pub(crate) fn extra_len(&self) -> usize {
        self.extra.len()
    }

    /// Keeps a head's text for [`StoredRows::parse_head`] (its index is the count of
    /// heads before it). Fails past `u32::MAX` bytes of text (its rows' strings are
    /// `u32` offsets): a batch ends long before, but one head may be larger than an
    /// import's chunk (a twin's service objects, their strings escaped, reach ~400 MB).
    pub(crate) fn push_head(&mut self, head: &str) -> Result<(), &'static str> {
        let start = self.text.len();
        if !self.block.rows.is_empty() || !self.extra.is_empty() {
            return Err("a head pushed after parsing began");
        }
        if start + head.len() > u32::MAX as usize {
            return Err("a batch of heads past its size");
        }
        self.text.push_str(head);
        self.heads.push(start as u32..self.text.len() as u32);
        Ok(())
    }

    /// Parses head `i` into the next row; on an error the rows are as they were.
    /// Returns the row's device id.
    pub(crate) fn parse_head(&mut self, i: usize) -> Result<&str, String> {
        let range = self.heads[i].clone();
        let head = &self.text[range.start as usize..range.end as usize];
        let mut spans = Spans {
            base: self.text.as_ptr() as usize,
            len: self.text.len(),
            extra: &mut self.extra,
        };
        let b = &self.block;
        let lens = (b.rows.len(), b.device.len(), b.service.len(), b.tags.len());
        let rows = lens.0;
        let mut de = serde_json::Deserializer::from_str(head);
        let parsed = HeadSeed {
            block: &mut self.block,
            spans: &mut spans,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end());
        if let Err(e) = parsed {
            // Also what a head cut short left in the tables before its row.
            let b = &mut self.block;
            b.rows.truncate(lens.0);
            b.stored.truncate(lens.0);
            b.device.truncate(lens.1);
            b.service.truncate(lens.2);
            b.tags.truncate(lens.3);
            b.scratch = StoredFields::default();
            return Err(e.to_string());
        }
        // A head holds no device properties (the store keeps them apart).
        let b = &mut self.block;
        let row = &mut b.rows[rows];
        b.device.truncate(row.device.start as usize);
        row.device.end = row.device.start;
        let id = row.device_id;
        Ok(self.str(id))
    }

    /// Takes the last row out again (its twin is then added another way).
    pub(crate) fn pop_row(&mut self) {
        let b = &mut self.block;
        if let Some(row) = b.rows.pop() {
            b.device.truncate(row.device.start as usize);
            b.service.truncate(row.service.start as usize);
            b.tags.truncate(row.tags.start as usize);
            b.stored.pop();
        }
    }

    /// Whether the last row's service properties and tags are in strictly rising order,
    /// as a head written from a twin's maps holds them. A head that repeats one is
    /// read whole instead (its map or set keeps one), not refused as a row.
    pub(crate) fn members_sorted(&self) -> bool {
        let Some(row) = self.block.rows.last() else {
            return true;
        };
        let b = &self.block;
        let service = b.service[row.service.start as usize..row.service.end as usize].iter();
        let tags = b.tags[row.tags.start as usize..row.tags.end as usize].iter();
        let rising = |mut names: Box<dyn Iterator<Item = &str> + '_>| {
            let Some(mut last) = names.next() else {
                return true;
            };
            names.all(|n| std::mem::replace(&mut last, n) < n)
        };
        rising(Box::new(service.map(|&(name, _)| self.str(name))))
            && rising(Box::new(tags.map(|&t| self.str(t))))
    }

    /// The name of the last row's last device property, if it has one.
    pub(crate) fn last_device_name(&self) -> Option<&str> {
        let row = self.block.rows.last()?;
        (row.device.end > row.device.start)
            .then(|| self.str(self.block.device[row.device.end as usize - 1].0))
    }

    /// Head `i`'s text.
    pub(crate) fn head(&self, i: usize) -> &str {
        let r = &self.heads[i];
        &self.text[r.start as usize..r.end as usize]
    }

    /// A span's text while the batch is being filled.
    fn str(&self, (start, len): Span) -> &str {
        let (start, len) = (start as usize, len as usize);
        match start.checked_sub(self.text.len()) {
            None => &self.text[start..start + len],
            Some(at) => &self.extra[at..at + len],
        }
    }

    fn copy(&mut self, s: &str) -> Span {
        let start = self.text.len() + self.extra.len();
        self.extra.push_str(s);
        (start as u32, s.len() as u32)
    }

    fn copy_value(&mut self, v: ScalarRef<'_>) -> Value {
        match v {
            ScalarRef::Bool(b) => Value::Bool(b),
            ScalarRef::Number(n) => Value::Number(n),
            ScalarRef::String(s) => Value::String(self.copy(s)),
        }
    }

    /// Adds a device property to the last row (its value as JSON text).
    pub(crate) fn push_device_json(
        &mut self,
        name: &str,
        value: &[u8],
        at: Timestamp,
    ) -> serde_json::Result<()> {
        let raw: Raw<'_> = serde_json::from_slice(value)?;
        let value = match &raw {
            Raw::Bool(b) => Value::Bool(*b),
            Raw::Number(n) => Value::Number(*n),
            Raw::Str(t) => Value::String(self.copy(&t.0)),
        };
        let name = self.copy(name);
        self.push_device(name, value, at);
        Ok(())
    }

    fn push_device(&mut self, name: Span, value: Value, at: Timestamp) {
        self.block.device.push((name, value, at));
        let end = self.block.device.len() as u32;
        if let Some(row) = self.block.rows.last_mut() {
            row.device.end = end;
        }
    }

    /// Sets (`Some`) or removes (`None`) a device property of the last row.
    pub(crate) fn set_device(&mut self, name: &str, value: Option<(ScalarRef<'_>, Timestamp)>) {
        let Some(row) = self.block.rows.last() else {
            return;
        };
        let range = row.device.start as usize..row.device.end as usize;
        let at = range
            .clone()
            .find(|&i| self.str(self.block.device[i].0) == name);
        match (at, value) {
            (Some(i), Some((v, ts))) => {
                let v = self.copy_value(v);
                self.block.device[i].1 = v;
                self.block.device[i].2 = ts;
            }
            (None, Some((v, ts))) => {
                let (name, v) = (self.copy(name), self.copy_value(v));
                self.push_device(name, v, ts);
            }
            (Some(i), None) => {
                self.block.device.remove(i);
                if let Some(row) = self.block.rows.last_mut() {
                    row.device.end -= 1;
                }
            }
            (None, None) => {}
        }
    }

    /// Takes the last row's sealed PSK key (hex), if its head has one.
    pub(crate) fn take_sealed_psk(&mut self) -> Option<String> {
        self.block.stored.last_mut()?.sealed_psk.take()
    }

    /// Gives the last row its PSK key, opened from its sealed one (with a retired key:
    /// `retired`).
    pub(crate) fn set_psk(&mut self, key: crate::twin::PskKey, retired: bool) {
        if let Some(s) = self.block.stored.last_mut() {
            s.extra.authentication.psk_key = Some(key);
            s.retired_psk = retired;
        }
    }

    /// Whether the last row's head holds its PSK key as plain hex.
    pub(crate) fn plain_psk(&self) -> bool {
        self.block.stored.last().is_some_and(|s| s.plain_psk)
    }

    /// Whether the last row's head is to be rewritten: its PSK key is plain hex and
    /// `sealing` (the store seals keys), or it was sealed under a retired key.
    pub(crate) fn psk_stale(&self, sealing: bool) -> bool {
        self.block
            .stored
            .last()
            .is_some_and(|s| (s.plain_psk && sealing) || s.retired_psk)
    }

    /// The last row's etag: its head's, raised to `etag`.
    pub(crate) fn raise_etag(&mut self, etag: u64) {
        if let Some(s) = self.block.stored.last_mut() {
            s.etag = s.etag.max(etag);
        }
    }

    /// Adds a twin whole, with its etag, after the rows so far.
    pub(crate) fn push_twin(&mut self, twin: crate::twin::Twin, etag: u64) {
        self.twins
            .push((self.block.rows.len() as u32, Box::new(twin), etag));
    }

    /// Adds the batch to `bulk` in order; `each` gets every device's slot, generation
    /// id, etag and service etag.
    pub(crate) fn load(
        self,
        bulk: &mut BulkLoad<'_>,
        mut each: impl FnMut(super::Slot, u64, u64, u64),
    ) -> Result<(), RegistryError> {
        let StoredRows {
            mut block,
            text,
            extra,
            twins,
            ..
        } = self;
        block.text = text;
        block.text.push_str(&extra);
        let mut twins = twins.into_iter().peekable();
        let mut device = Vec::new();
        let mut service = Vec::new();
        let mut tags = Vec::new();
        let stored = std::mem::take(&mut block.stored);
        for (i, (row, fields)) in block.rows.iter().zip(stored).enumerate() {
            while let Some((_, twin, etag)) = twins.next_if(|t| t.0 as usize <= i) {
                let (generation, service) = (twin.generation_id.0, twin.service_properties.etag.0);
                each(bulk.add_twin(*twin)?, generation, etag, service);
            }
            block.row_members(row, &mut device, &mut service, &mut tags);
            let slot = bulk.add_stored(
                &NewDevice {
                    status: row.status,
                    status_reason: row.status_reason.map(|r| block.str(r)),
                    status_updated_time: row.status_updated_time,
                    connection_state: row.connection_state,
                    connection_state_updated_time: row.connection_state_updated_time,
                    last_activity_time: row.last_activity_time,
                    is_managed: row.is_managed,
                    device_properties: &device,
                    service_properties: &service,
                    tags: &tags,
                    ..NewDevice::new(block.str(row.device_id))
                },
                fields.extra,
            )?;
            each(slot, fields.generation, fields.etag, fields.service_etag);
        }
        for (_, twin, etag) in twins {
            let (generation, service) = (twin.generation_id.0, twin.service_properties.etag.0);
            each(bulk.add_twin(*twin)?, generation, etag, service);
        }
        Ok(())
    }
}

/// A stored head: `{"twin": <a twin in JSON, parsed as a line>, "psk": <hex>}`, or with
/// `"sealedPsk"` (the key sealed, see `store::seal`) in place of `"psk"`.
struct HeadSeed<'b, 'e> {
    block: &'b mut Block,
    spans: &'b mut Spans<'e>,
}

impl<'de> DeserializeSeed<'de> for HeadSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeadSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a stored twin")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let HeadSeed { block, spans } = self;
        let rows = block.rows.len();
        let mut psk: Option<crate::twin::PskKey> = None;
        let mut sealed: Option<String> = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match &*key.0 {
                "twin" if block.rows.len() == rows => map.next_value_seed(LineSeed {
                    block: &mut *block,
                    spans: &mut *spans,
                    line: 0,
                })?,
                "psk" if psk.is_none() && sealed.is_none() => {
                    let hex = map.next_value::<Text<'de>>()?;
                    let key = crate::twin::PskKey::from_hex_digits(&hex.0)
                        .ok_or_else(|| A::Error::custom("psk is not hex"))?;
                    psk = Some(key);
                }
                "sealedPsk" if psk.is_none() && sealed.is_none() => {
                    sealed = Some(map.next_value::<Text<'de>>()?.0.into_owned());
                }
                other => return Err(A::Error::custom(format!("unexpected `{other}`"))),
            }
        }
        if block.rows.len() == rows {
            return Err(A::Error::missing_field("twin"));
        }
        if let Some(s) = block.stored.last_mut() {
            s.plain_psk = psk.is_some();
            s.extra.authentication.psk_key = psk;
            s.sealed_psk = sealed;
        }
        Ok(())
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
        let mut seen = 0u16;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            // A stored head's own members are taken once each too, as its `Twin` is.
            let stored = if block.stored_mode {
                &STORED_FIELDS[..]
            } else {
                &[]
            };
            let mut fields = LINE_FIELDS.iter().chain(stored).enumerate();
            if let Some((i, &name)) = fields.find(|(_, f)| **f == &*key.0) {
                if seen & (1 << i) != 0 {
                    return Err(A::Error::duplicate_field(name));
                }
                seen |= 1 << i;
            }
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
                "generationId" if block.stored_mode => {
                    block.scratch.generation = map.next_value::<Etag>()?.0
                }
                "etag" if block.stored_mode => block.scratch.etag = map.next_value::<Etag>()?.0,
                "authentication" if block.stored_mode => {
                    block.scratch.extra.authentication = map.next_value()?
                }
                "registration" if block.stored_mode => {
                    block.scratch.extra.registration = map.next_value()?
                }
                "configuration" if block.stored_mode => {
                    block.scratch.extra.configuration = map.next_value()?
                }
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
        if block.stored_mode {
            let fields = std::mem::take(&mut block.scratch);
            block.stored.push(fields);
        }
        Ok(())
    }
}

/// The members of a line this import takes; each may appear once.
const LINE_FIELDS: [&str; 10] = [
    "deviceId",
    "status",
    "statusReason",
    "statusUpdatedTime",
    "connectionState",
    "connectionStateUpdatedTime",
    "lastActivityTime",
    "isManaged",
    "deviceProperties",
    "serviceProperties",
];

/// The members a stored head has beyond [`LINE_FIELDS`] (bits 10 on of `seen`).
const STORED_FIELDS: [&str; 5] = [
    "generationId",
    "etag",
    "authentication",
    "registration",
    "configuration",
];

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
        // `properties` and `tags` of `serviceProperties`, once each.
        let mut seen = 0u8;
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
                        "properties" if seen & 1 == 0 => MemberKind::ServiceScalars,
                        "tags" if seen & 2 == 0 => MemberKind::Tags,
                        "properties" | "tags" => {
                            return Err(A::Error::custom(format!("duplicate field `{}`", key.0)));
                        }
                        "etag" if block.stored_mode => {
                            if seen & 4 != 0 {
                                return Err(A::Error::duplicate_field("etag"));
                            }
                            seen |= 4;
                            block.scratch.service_etag = map.next_value::<Etag>()?.0;
                            continue;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    seen |= if matches!(kind, MemberKind::Tags) {
                        2
                    } else {
                        1
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
    /// The text this thread parsed last and its time (none yet: an empty text must
    /// not match an empty cache).
    static LAST_AT: std::cell::RefCell<(String, Option<Timestamp>)> =
        const { std::cell::RefCell::new((String::new(), None)) };
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
                LAST_AT.with_borrow_mut(|(text, last)| match last {
                    Some(at) if text.as_str() == s => Ok(At(*at)),
                    _ => {
                        let at = s.parse().map_err(E::custom)?;
                        text.clear();
                        text.push_str(s);
                        *last = Some(at);
                        Ok(At(at))
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, spare: Option<Block>) -> Block {
        Block::parse(Chunk {
            bytes: text.as_bytes().to_vec(),
            error: None,
            spare,
        })
    }

    /// What a block holds, to compare two: its text, table lengths, lines and error line.
    fn contents(b: &Block) -> (String, [usize; 4], u64, Option<u64>) {
        let tables = [b.rows.len(), b.device.len(), b.service.len(), b.tags.len()];
        let error = b.error.as_ref().map(|(line, _)| *line);
        (b.text.clone(), tables, b.lines, error)
    }

    /// A block parsed into a loaded one's buffers holds what a new block would: nothing
    /// of the first chunk stays in its tables.
    #[test]
    fn a_reused_block_holds_only_its_own_chunk() {
        let first = concat!(
            r#"{"deviceId": "a", "deviceProperties": {"x": {"value": "\u0041", "#,
            r#""lastUpdatedTime": "2016-04-29T12:00:00.000Z"}}, "#,
            r#""serviceProperties": {"properties": {"p": 1}, "tags": ["t"]}}"#,
            "\n{\"deviceId\": 7}\n",
        );
        let second = concat!(
            r#"{"deviceId": "b", "deviceProperties": {"y": {"value": 2, "#,
            r#""lastUpdatedTime": "2016-04-29T12:00:00.000Z"}}}"#,
            "\n",
        );
        let mut used = parse(first, None);
        // One row, one of each member, the unescaped string after the text, a bad line.
        let (text, tables, lines, error) = contents(&used);
        assert!(text.ends_with('A'));
        assert_eq!((tables, lines, error), ([1, 1, 1, 1], 1, Some(1)));
        used.clear();
        assert_eq!(
            contents(&parse(second, Some(used))),
            contents(&parse(second, None))
        );
    }
}
