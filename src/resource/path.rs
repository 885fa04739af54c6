//! LWM2M paths: `/object[/instance[/resource[/resource-instance]]]`.

use std::fmt;

/// An LWM2M path, from the root down to a resource instance.
///
/// `Lwm2mPath` orders by its ids, so a `BTreeMap<Lwm2mPath, _>` iterates an object tree in
/// depth-first order.
///
/// ```
/// use twinhub::Lwm2mPath;
/// let p: Lwm2mPath = "/3/0/9".parse().unwrap();
/// assert_eq!(p, Lwm2mPath::resource(3, 0, 9));
/// assert_eq!(p.to_string(), "/3/0/9");
/// assert!(Lwm2mPath::object(3).contains(&p));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lwm2mPath {
    ids: [u16; 4],
    len: u8,
}

/// Why a string is not an LWM2M path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// More than four segments.
    TooDeep,
    /// A segment is not a number in 0..=65534 (65535 is reserved by LWM2M).
    BadSegment {
        /// The 0-based segment index.
        index: usize,
    },
    /// The path does not start with `/`.
    NoLeadingSlash,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::TooDeep => write!(f, "lwm2m path has more than 4 segments"),
            PathError::BadSegment { index } => {
                write!(f, "lwm2m path segment {index} is not a number in 0..=65534")
            }
            PathError::NoLeadingSlash => write!(f, "lwm2m path must start with '/'"),
        }
    }
}

impl std::error::Error for PathError {}

impl Lwm2mPath {
    /// The root path `/`.
    pub const ROOT: Lwm2mPath = Lwm2mPath {
        ids: [0; 4],
        len: 0,
    };

    /// `/oid`
    pub const fn object(oid: u16) -> Self {
        Lwm2mPath {
            ids: [oid, 0, 0, 0],
            len: 1,
        }
    }

    /// `/oid/iid`
    pub const fn instance(oid: u16, iid: u16) -> Self {
        Lwm2mPath {
            ids: [oid, iid, 0, 0],
            len: 2,
        }
    }

    /// `/oid/iid/rid`
    pub const fn resource(oid: u16, iid: u16, rid: u16) -> Self {
        Lwm2mPath {
            ids: [oid, iid, rid, 0],
            len: 3,
        }
    }

    /// `/oid/iid/rid/riid`
    pub const fn resource_instance(oid: u16, iid: u16, rid: u16, riid: u16) -> Self {
        Lwm2mPath {
            ids: [oid, iid, rid, riid],
            len: 4,
        }
    }

    /// Builds a path from up to four ids.
    pub fn from_ids(ids: &[u16]) -> Result<Self, PathError> {
        if ids.len() > 4 {
            return Err(PathError::TooDeep);
        }
        if let Some(index) = ids.iter().position(|&i| i == u16::MAX) {
            return Err(PathError::BadSegment { index });
        }
        let mut p = Lwm2mPath::ROOT;
        p.ids[..ids.len()].copy_from_slice(ids);
        p.len = ids.len() as u8;
        Ok(p)
    }

    /// The ids, from the object down.
    pub fn ids(&self) -> &[u16] {
        &self.ids[..self.len as usize]
    }

    /// Number of segments (0 for the root, 4 for a resource instance).
    pub fn depth(&self) -> usize {
        self.len as usize
    }

    /// The object id, if any.
    pub fn object_id(&self) -> Option<u16> {
        self.ids().first().copied()
    }

    /// The object instance id, if any.
    pub fn instance_id(&self) -> Option<u16> {
        self.ids().get(1).copied()
    }

    /// The resource id, if any.
    pub fn resource_id(&self) -> Option<u16> {
        self.ids().get(2).copied()
    }

    /// The resource instance id, if any.
    pub fn resource_instance_id(&self) -> Option<u16> {
        self.ids().get(3).copied()
    }

    /// The path one level up, or `None` at the root.
    pub fn parent(&self) -> Option<Lwm2mPath> {
        (self.len > 0).then(|| {
            let mut p = *self;
            p.len -= 1;
            p.ids[p.len as usize] = 0;
            p
        })
    }

    /// This path with `id` appended, or `None` when already four deep or `id` is 65535.
    pub fn child(&self, id: u16) -> Option<Lwm2mPath> {
        (self.len < 4 && id != u16::MAX).then(|| {
            let mut p = *self;
            p.ids[p.len as usize] = id;
            p.len += 1;
            p
        })
    }

    /// Whether `other` is this path or lies below it.
    pub fn contains(&self, other: &Lwm2mPath) -> bool {
        other.len >= self.len && other.ids[..self.len as usize] == self.ids[..self.len as usize]
    }
}

impl fmt::Display for Lwm2mPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 0 {
            return f.write_str("/");
        }
        for id in self.ids() {
            write!(f, "/{id}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Lwm2mPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Lwm2mPath {
    type Err = PathError;

    /// Parses `/`, `/3`, `/3/0`, `/3/0/9`, `/3/0/6/1` (a trailing `/` is allowed).
    fn from_str(s: &str) -> Result<Self, PathError> {
        let rest = s.strip_prefix('/').ok_or(PathError::NoLeadingSlash)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Ok(Lwm2mPath::ROOT);
        }
        let mut ids = [0u16; 4];
        let mut n = 0;
        for (index, seg) in rest.split('/').enumerate() {
            if index >= 4 {
                return Err(PathError::TooDeep);
            }
            if seg.is_empty() || seg.len() > 5 || !seg.bytes().all(|b| b.is_ascii_digit()) {
                return Err(PathError::BadSegment { index });
            }
            let v: u32 = seg.parse().map_err(|_| PathError::BadSegment { index })?;
            if v >= u16::MAX as u32 {
                return Err(PathError::BadSegment { index });
            }
            ids[index] = v as u16;
            n += 1;
        }
        Lwm2mPath::from_ids(&ids[..n])
    }
}

impl serde::Serialize for Lwm2mPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lwm2mPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        for s in ["/", "/3", "/3/0", "/3/0/9", "/3/0/6/1", "/65534/1/2/3"] {
            let p: Lwm2mPath = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        assert_eq!(
            "/3/0/".parse::<Lwm2mPath>().unwrap(),
            Lwm2mPath::instance(3, 0)
        );
    }

    #[test]
    fn rejects() {
        assert_eq!("3/0".parse::<Lwm2mPath>(), Err(PathError::NoLeadingSlash));
        assert_eq!("/1/2/3/4/5".parse::<Lwm2mPath>(), Err(PathError::TooDeep));
        assert_eq!(
            "/3/x".parse::<Lwm2mPath>(),
            Err(PathError::BadSegment { index: 1 })
        );
        assert_eq!(
            "/65535".parse::<Lwm2mPath>(),
            Err(PathError::BadSegment { index: 0 })
        );
        assert_eq!(
            "/3//1".parse::<Lwm2mPath>(),
            Err(PathError::BadSegment { index: 1 })
        );
    }

    #[test]
    fn tree_navigation() {
        let r = Lwm2mPath::resource(3, 0, 9);
        assert_eq!(r.parent(), Some(Lwm2mPath::instance(3, 0)));
        assert_eq!(Lwm2mPath::instance(3, 0).child(9), Some(r));
        assert!(Lwm2mPath::ROOT.contains(&r));
        assert!(!Lwm2mPath::object(5).contains(&r));
        assert!(Lwm2mPath::object(3) < Lwm2mPath::instance(3, 0));
    }
}
