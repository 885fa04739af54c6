//! The durable store's record decoders (a corrupted or hostile file's rows).

use crate::store::fuzz_decode;

/// `store_records`: the first byte picks the decoder (twin head, device-property row,
/// feed row), the rest is the row. Every decoder returns a typed error on bad input; a
/// feed row that decodes re-encodes to the same bytes.
pub fn store_records(data: &[u8]) {
    let Some((&which, row)) = data.split_first() else {
        return;
    };
    fuzz_decode(which, row);
}
