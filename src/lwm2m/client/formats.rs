//! The client's glue to the crate's payload formats ([`crate::lwm2m::content`]): which
//! format answers a read, the client's own limits, and the type resolver built from the
//! object tree's definitions. Encoding and decoding themselves are `lwm2m::content`'s.

use crate::lwm2m::content::{self, ContentError, ContentFormat};
use crate::lwm2m::{Content, Lwm2mPath, ResourceType};

/// The most values one write or create payload may decode to (a larger one is 4.13).
pub(crate) const MAX_VALUES: usize = 1024;

/// Encodes a read of `base` in `format`. Text and opaque also carry a lone resource
/// instance read at its resource (`/3/0/11` holding only `/3/0/11/0`), as the client
/// always has.
pub(crate) fn encode(
    format: ContentFormat,
    base: &Lwm2mPath,
    read: &Content,
) -> Result<Vec<u8>, ContentError> {
    let base = match (format.canonical(), read.values.as_slice()) {
        (ContentFormat::Text | ContentFormat::Opaque, [(p, _)])
            if base.depth() >= 3 && base.contains(p) =>
        {
            p
        }
        _ => base,
    };
    content::encode(format, base, read)
}

/// Decodes a write or create payload addressed to `base`, typing values by `types`
/// (see [`write_types`]). A TLV create at an object path may carry the new instance's
/// resources bare, without an object-instance entry: they decode under instance 0 and the
/// tree re-homes them.
pub(crate) fn decode(
    format: ContentFormat,
    payload: &[u8],
    base: &Lwm2mPath,
    types: &dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
) -> Result<Content, ContentError> {
    let bare_instance = base.depth() == 1
        && format.canonical() == ContentFormat::Tlv
        && payload.first().is_some_and(|b| b >> 6 != 0);
    let base = match (bare_instance, base.object_id()) {
        (true, Some(oid)) => Lwm2mPath::instance(oid, 0),
        _ => *base,
    };
    let c = content::decode(format, payload, &base, types)?;
    if c.values.len() > MAX_VALUES {
        return Err(ContentError::TooManyValues { max: MAX_VALUES });
    }
    Ok(c)
}

/// The type a written value decodes as: the declared type from the tree's definitions
/// (none for an executable resource, which holds no value). So every format hands the
/// tree the same value for the same resource: an opaque resource's bytes are base64 in
/// text (LWM2M 1.1 Appendix C, as Leshan reads them) and `vd` in SenML, a SenML `vs` there
/// is a string, not bytes, and refused. The tree then coerces every value to its declared
/// type ([`coerce`](super::coerce)).
pub(crate) fn write_types(declared: Option<ResourceType>) -> Option<ResourceType> {
    declared.filter(|t| *t != ResourceType::None)
}

/// Whether a payload in `format` may be written to a resource declared `declared`: the
/// opaque format (42, and the pre-standard 1544) carries the bytes of an Opaque resource
/// only (LWM2M 1.1 §7.4.2; Leshan refuses it elsewhere too), since its bytes say nothing
/// of a number's width or a string's encoding. An unknown resource is for the tree to
/// refuse.
pub(crate) fn fits(format: ContentFormat, declared: Option<ResourceType>) -> bool {
    format.canonical() != ContentFormat::Opaque
        || declared.is_none_or(|t| t == ResourceType::Opaque)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lwm2m::ResourceValue as V;

    fn untyped(_: &Lwm2mPath) -> Option<ResourceType> {
        None
    }

    #[test]
    fn lone_resource_instance_reads_as_text_or_opaque() {
        let base = Lwm2mPath::resource(3, 0, 11);
        let one = Content::single(Lwm2mPath::resource_instance(3, 0, 11, 0), V::Integer(7));
        assert_eq!(encode(ContentFormat::Text, &base, &one).unwrap(), b"7");
        let bytes = Content::single(
            Lwm2mPath::resource_instance(3, 0, 11, 0),
            V::Opaque(vec![9]),
        );
        assert_eq!(
            encode(ContentFormat::OldOpaque, &base, &bytes).unwrap(),
            [9]
        );
        // Two values are no text; an instance path is no single resource.
        let two = Content {
            values: vec![
                (Lwm2mPath::resource_instance(3, 0, 11, 0), V::Integer(7)),
                (Lwm2mPath::resource_instance(3, 0, 11, 1), V::Integer(8)),
            ],
        };
        assert!(encode(ContentFormat::Text, &base, &two).is_err());
        let inst = Lwm2mPath::instance(3, 0);
        let r9 = Content::single(Lwm2mPath::resource(3, 0, 9), V::Integer(7));
        assert!(encode(ContentFormat::Text, &inst, &r9).is_err());
        assert!(encode(ContentFormat::Tlv, &inst, &r9).is_ok());
    }

    #[test]
    fn create_at_object_level_takes_bare_resources_and_instances() {
        let object = Lwm2mPath::object(3303);
        // Resource 5701 = "Cel", bare and wrapped in object instance 4.
        let bare = [0xE3, 0x16, 0x45, b'C', b'e', b'l'];
        let c = decode(ContentFormat::Tlv, &bare, &object, &untyped).unwrap();
        assert_eq!(c.values[0].0, Lwm2mPath::resource(3303, 0, 5701));
        let mut wrapped = vec![0x06, 0x04];
        wrapped.extend_from_slice(&bare);
        let c = decode(ContentFormat::OldTlv, &wrapped, &object, &untyped).unwrap();
        assert_eq!(c.values[0].0, Lwm2mPath::resource(3303, 4, 5701));
        assert_eq!(c.values[0].1, V::Opaque(b"Cel".to_vec()));
    }

    #[test]
    fn writes_are_bounded_and_typed_alike_in_every_format() {
        let base = Lwm2mPath::instance(3, 0);
        let many: Vec<u8> = (0..=MAX_VALUES as u16)
            .flat_map(|rid| [0xE1, (rid >> 8) as u8, rid as u8, 0])
            .collect();
        assert_eq!(
            decode(ContentFormat::Tlv, &many, &base, &untyped),
            Err(ContentError::TooManyValues { max: MAX_VALUES })
        );
        assert_eq!(
            write_types(Some(ResourceType::Opaque)),
            Some(ResourceType::Opaque)
        );
        assert_eq!(write_types(Some(ResourceType::None)), None);
        assert_eq!(
            write_types(Some(ResourceType::Time)),
            Some(ResourceType::Time)
        );
        // Text to an opaque resource is base64 (LWM2M 1.1 Appendix C).
        let p = Lwm2mPath::resource(5, 0, 0);
        let typed =
            |q: &Lwm2mPath| write_types(Some(crate::lwm2m::content::standard_resource_type(q)?));
        let c = decode(ContentFormat::Text, b"AP8H", &p, &typed).unwrap();
        assert_eq!(c.values[0].1, V::Opaque(vec![0, 0xff, 7]));
        assert!(decode(ContentFormat::Text, b"not base64!", &p, &typed).is_err());
        // The opaque format is for opaque resources only.
        assert!(fits(ContentFormat::Opaque, Some(ResourceType::Opaque)));
        assert!(fits(ContentFormat::OldOpaque, None));
        assert!(!fits(ContentFormat::Opaque, Some(ResourceType::Integer)));
        assert!(!fits(ContentFormat::OldOpaque, Some(ResourceType::String)));
        assert!(fits(ContentFormat::Text, Some(ResourceType::Integer)));
    }
}
