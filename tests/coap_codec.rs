//! Codec properties: encode/decode round trips of arbitrary messages (proptest), and the
//! LWM2M registration vector.

#![cfg(feature = "lwm2m")]

use proptest::prelude::*;
use twinhub::coap::{BlockOption, Code, ContentFormat, Message, MessageType, OptionNumber};

fn arb_message() -> impl Strategy<Value = Message> {
    let opts = prop::collection::vec(
        (
            prop_oneof![
                Just(1u16),
                Just(4),
                Just(6),
                Just(11),
                Just(12),
                Just(15),
                Just(23),
                Just(27),
                Just(60),
                0u16..2000,
                0u16..=u16::MAX
            ],
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..4),
                prop::collection::vec(any::<u8>(), 0..300),
                prop::collection::vec(any::<u8>(), 260..700)
            ],
        ),
        0..10,
    );
    (
        0u8..4,
        1u8..=255,
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..=8),
        opts,
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(t, code, mid, token, opts, payload)| {
            let mut m = Message::new(MessageType::from_bits(t), Code(code), mid);
            m.set_token(&token).unwrap();
            for (n, v) in opts {
                m.add_option(OptionNumber(n), &v);
            }
            m.payload = payload;
            m
        })
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(m in arb_message()) {
        let bytes = m.to_bytes().unwrap();
        prop_assert_eq!(bytes.len(), m.encoded_len());
        let back = Message::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn decode_never_panics_and_is_canonical(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(m) = Message::decode(&bytes) {
            prop_assert_eq!(m.to_bytes().unwrap(), bytes);
        }
    }

    #[test]
    fn block_option_uint_round_trip(num in 0u32..=BlockOption::MAX_NUM, more: bool, szx in 0u8..=6) {
        let b = BlockOption::new(num, more, szx).unwrap();
        let mut m = Message::request(Code::PUT, "/5/0/0");
        m.set_block1(b);
        m.set_block2(b);
        let back = Message::decode(&m.to_bytes().unwrap()).unwrap();
        prop_assert_eq!(back.block1(), Some(b));
        prop_assert_eq!(back.block2(), Some(b));
    }
}

#[test]
fn lwm2m_register_vector() {
    // CON POST /rd?ep=dev1&lt=300&lwm2m=1.1, Content-Format 40, token deadbeef, MID 7.
    let wire = b"\x44\x02\x00\x07\xde\xad\xbe\xef\xb2rd\x11\x28\x37ep=dev1\x06lt=300\x09lwm2m=1.1\xff</1/0>,</3/0>";
    let m = Message::decode(wire).unwrap();
    assert_eq!(m.code, Code::POST);
    assert_eq!(m.message_id, 7);
    assert_eq!(m.token().as_bytes(), [0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(m.uri_path_string(), "rd");
    assert_eq!(
        m.uri_query().collect::<Vec<_>>(),
        ["ep=dev1", "lt=300", "lwm2m=1.1"]
    );
    assert_eq!(m.content_format(), Some(ContentFormat::LINK_FORMAT));
    assert_eq!(m.payload, b"</1/0>,</3/0>");
    assert_eq!(m.to_bytes().unwrap(), wire);
}
