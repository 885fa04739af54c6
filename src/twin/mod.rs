//! The device twin: device fields, device properties, service properties and tags.

mod device_id;

pub use device_id::{DEVICE_ID_PUNCTUATION, DeviceId, DeviceIdError, MAX_DEVICE_ID_LEN};
