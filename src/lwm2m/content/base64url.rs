//! base64 for opaque values: SenML's `vd` is base64url without padding (RFC 8428 §4.3);
//! LWM2M text carries opaque as standard base64. Decoding accepts either alphabet, with
//! or without padding, since clients differ.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Decoding is lenient about padding: some clients pad SenML's `vd`, some do not pad text.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const URL_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);

/// base64url without padding.
pub(crate) fn encode(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// Decodes base64 or base64url (one alphabet per value), padded or not. `None` when not
/// base64.
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    URL_LENIENT
        .decode(text)
        .or_else(|_| STANDARD_LENIENT.decode(text))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_both_alphabets() {
        for (plain, url) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), url);
            assert_eq!(decode(url).unwrap(), plain.as_bytes());
            let padded = crate::lwm2m::base64_encode(plain.as_bytes());
            assert_eq!(decode(&padded).unwrap(), plain.as_bytes());
        }
        assert_eq!(decode("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode("+/8=").unwrap(), vec![0xfb, 0xff]);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode("a"), None);
        assert_eq!(decode("ab!c"), None);
        assert_eq!(decode("ab==="), None);
    }
}
