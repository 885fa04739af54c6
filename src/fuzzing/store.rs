//! The durable store's record decoders (a corrupted or hostile file's rows).

use crate::store::fuzz_decode;

/// `store_records`: the first byte picks the decoder (modulo 6: twin head, format 2
/// device-property row, change, properties record, property log record, feed record),
/// the rest is the value. Every decoder returns a typed error on bad input; a head that
/// the reopening's row parser takes decodes whole too, and both load the same twin (with
/// a properties record and logged changes after NUL bytes, applied alike); a change or
/// record that decodes (all but the head and the format 2 row) is encoded again and
/// decodes to the same value (not always the same bytes: JSON has several spellings of
/// a number).
pub fn store_records(data: &[u8]) {
    let Some((&which, row)) = data.split_first() else {
        return;
    };
    fuzz_decode(which, row);
}

/// `job_rows`: the first byte picks the decoder (even: a child row, odd: a parent row),
/// the rest is the row. Both return a typed error on bad input; a child row that decodes
/// re-encodes to the same head.
pub fn job_rows(data: &[u8]) {
    let Some((&which, row)) = data.split_first() else {
        return;
    };
    crate::job::fuzz_decode_job_row(which, row);
}
