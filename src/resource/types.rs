//! The resource types of the standard objects the hub maps (Security 0, Server 1,
//! Device 3, Firmware Update 5) and the preview's vendor Config object 10241: the
//! domain's own table, so a write job's values are checked against it in every build
//! (the LwM2M content formats re-export it as `lwm2m::content::standard_resource_type`).

use super::{Lwm2mPath, ResourceType};

/// The type of a standard resource, from its object and resource id (the instance and any
/// resource-instance id do not matter). `None` for objects and resources not in the table.
///
/// Sources: OMA LWM2M object definitions 0 (v1.1), 1 (v1.1), 3 (v1.2), 5 (v1.1), and the
/// device-management preview's Config object 10241 (1 ConfigName, 2 ConfigValue,
/// 3 ConfigApply).
///
/// ```
/// use twinhub::resource::standard_resource_type;
/// use twinhub::{Lwm2mPath, ResourceType};
/// assert_eq!(standard_resource_type(&Lwm2mPath::resource(3, 0, 9)), Some(ResourceType::Integer));
/// assert_eq!(standard_resource_type(&Lwm2mPath::resource_instance(3, 0, 7, 1)), Some(ResourceType::Integer));
/// assert_eq!(standard_resource_type(&Lwm2mPath::resource(3303, 0, 5700)), None);
/// ```
pub fn standard_resource_type(path: &Lwm2mPath) -> Option<ResourceType> {
    use ResourceType::{
        Boolean as B, Integer as I, None as E, ObjectLink as L, Opaque as O, String as S,
        Time as T, UnsignedInteger as U,
    };
    let (oid, rid) = (path.object_id()?, path.resource_id()?);
    let t = match (oid, rid) {
        (0, 0) => S,
        (0, 1) => B,
        (0, 2) => I,
        (0, 3..=5) => O,
        (0, 6) => I,
        (0, 7 | 8) => O,
        (0, 9) => S,
        (0, 10..=13) => I,
        (0, 14) => S,
        (0, 15 | 16) => I,
        (0, 17) => L,
        (1, 0..=3) => I,
        (1, 4) => E,
        (1, 5) => I,
        (1, 6) => B,
        (1, 7) => S,
        (1, 8 | 9) => E,
        (1, 10) => L,
        (1, 11) => U,
        (1, 12) => T,
        (1, 13 | 14) => U,
        (1, 15 | 16) => B,
        (1, 17..=20) => U,
        (1, 21) => B,
        (1, 22) => S,
        (1, 23) => B,
        (3, 0..=3) => S,
        (3, 4 | 5) => E,
        (3, 6..=11) => I,
        (3, 12) => E,
        (3, 13) => T,
        (3, 14..=19) => S,
        (3, 20 | 21) => I,
        (3, 22) => L,
        (5, 0) => O,
        (5, 1) => S,
        (5, 2) => E,
        (5, 3) => I,
        (5, 4) => B,
        (5, 5) => I,
        (5, 6 | 7) => S,
        (5, 8 | 9) => I,
        (5, 10) => E,
        (5, 11) => I,
        (5, 12) => T,
        (5, 13) => U,
        (10241, 1 | 2) => S,
        (10241, 3) => E,
        _ => return None,
    };
    Some(t)
}
