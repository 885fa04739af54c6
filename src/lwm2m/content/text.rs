//! Plain text (0, 1541) and opaque (42, 1544): one resource (instance) per payload.

use super::{ContentError, base64url, type_key};
use crate::lwm2m::{Content, Lwm2mPath, ResourceType, ResourceValue};

pub(crate) fn single_resource(base: &Lwm2mPath) -> Result<(), ContentError> {
    if base.depth() < 3 {
        return Err(ContentError::NotSingleResource { path: *base });
    }
    Ok(())
}

/// Parses LWM2M text as `ty` (LWM2M 1.1 §7.3.1). `None` when it does not parse.
pub(crate) fn parse_text_value(text: &str, ty: ResourceType) -> Option<ResourceValue> {
    let t = text.trim();
    Some(match ty {
        ResourceType::Integer => ResourceValue::Integer(t.parse().ok()?),
        ResourceType::UnsignedInteger => ResourceValue::UnsignedInteger(t.parse().ok()?),
        ResourceType::Time => ResourceValue::Time(t.parse().ok()?),
        ResourceType::Float => {
            let x: f64 = t.parse().ok()?;
            // Rust's parser also takes "inf" and "NaN"; LWM2M text floats are numbers.
            if !x.is_finite() {
                return None;
            }
            ResourceValue::Float(x)
        }
        ResourceType::Boolean => match t {
            "1" | "true" => ResourceValue::Boolean(true),
            "0" | "false" => ResourceValue::Boolean(false),
            _ => return None,
        },
        ResourceType::ObjectLink => {
            let (o, i) = t.split_once(':')?;
            ResourceValue::ObjectLink(o.parse().ok()?, i.parse().ok()?)
        }
        ResourceType::Opaque => ResourceValue::Opaque(base64url::decode(t)?),
        // Strings keep their exact text (no trimming).
        _ => ResourceValue::String(text.to_owned()),
    })
}

/// Text: the resolver's type, or a string when it does not know the resource.
pub(crate) fn decode_text(
    bytes: &[u8],
    base: &Lwm2mPath,
    types: &dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
) -> Result<Content, ContentError> {
    single_resource(base)?;
    let text = std::str::from_utf8(bytes).map_err(|_| ContentError::InvalidUtf8 { path: *base })?;
    let ty = types(&type_key(base)).unwrap_or(ResourceType::String);
    let value = parse_text_value(text, ty).ok_or(ContentError::BadValue {
        path: *base,
        expected: ty,
    })?;
    Ok(Content::single(*base, value))
}

/// Opaque: the bytes as they are.
pub(crate) fn decode_opaque(bytes: &[u8], base: &Lwm2mPath) -> Result<Content, ContentError> {
    single_resource(base)?;
    Ok(Content::single(
        *base,
        ResourceValue::Opaque(bytes.to_vec()),
    ))
}

pub(crate) fn the_value<'c>(
    base: &Lwm2mPath,
    content: &'c Content,
) -> Result<&'c ResourceValue, ContentError> {
    single_resource(base)?;
    match content.values.as_slice() {
        [(p, v)] if p == base => Ok(v),
        [(p, _)] => Err(ContentError::PathOutsideBase {
            path: *p,
            base: *base,
        }),
        other => Err(ContentError::NeedsSingleValue {
            base: *base,
            count: other.len(),
        }),
    }
}

pub(crate) fn encode_text(base: &Lwm2mPath, content: &Content) -> Result<Vec<u8>, ContentError> {
    let v = the_value(base, content)?;
    if let ResourceValue::Float(x) = v
        && !x.is_finite()
    {
        return Err(ContentError::UnencodableValue { path: *base });
    }
    Ok(v.to_string().into_bytes())
}

pub(crate) fn encode_opaque(base: &Lwm2mPath, content: &Content) -> Result<Vec<u8>, ContentError> {
    match the_value(base, content)? {
        ResourceValue::Opaque(b) => Ok(b.clone()),
        _ => Err(ContentError::UnencodableValue { path: *base }),
    }
}
