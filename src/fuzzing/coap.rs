//! Fuzz bodies for the CoAP codec and the CoRE link format.

use crate::coap::{DecodeErrorKind, Message, link_format};

/// `coap_decode`: arbitrary bytes never panic; what decodes encodes back to the same bytes
/// and decodes to the same message; a failure's offset lies inside the input.
pub fn coap_decode(data: &[u8]) {
    match Message::decode(data) {
        Ok(m) => {
            let bytes = m.to_bytes().expect("a decoded message must encode");
            let again = Message::decode(&bytes).expect("an encoded message must decode");
            assert_eq!(again, m, "decode(encode(m)) != m");
            // Decoding accepts non-minimal extended option fields only as the encoder
            // writes them, so the bytes match too.
            assert_eq!(bytes, data, "encode(decode(b)) != b");
            let _ = m.unrecognized_critical_option();
            let _ = (m.block1(), m.block2(), m.observe(), m.content_format());
        }
        Err(e) => {
            assert!(e.offset <= data.len(), "error offset past the input");
            if e.kind == DecodeErrorKind::Truncated {
                assert!(!data.is_empty() || e.offset == 0);
            }
        }
    }
}

/// `link_format`: arbitrary text never panics; what parses prints back to a document
/// that parses to the same links.
pub fn link_format(data: &[u8]) {
    match link_format::parse_bytes(data) {
        Ok(links) => {
            let text = link_format::to_string(&links);
            let again = link_format::parse(&text).expect("printed links must parse");
            assert_eq!(again, links);
        }
        Err(e) => assert!(e.offset <= data.len().max(link_format::MAX_INPUT_LEN)),
    }
}
