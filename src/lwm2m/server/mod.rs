//! The bundled LWM2M server endpoint: the registration interface, device management and
//! observation, as the hub's [`Transport`](crate::transport::Transport).

mod registration;

pub use registration::{
    DEFAULT_LIFETIME, MAX_ENDPOINT, MAX_LINK_PAYLOAD, MAX_OBJECTS, MAX_QUERIES, RdMessage,
    RdMethod, RegistrationError, RegistrationRequest, UpdateRequest, queries_as_str,
};
