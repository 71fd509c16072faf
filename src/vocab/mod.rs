//! The shared vocabulary, at the ground floor: when something was seen
//! ([`Timestamp`]), how a message travelled ([`Transport`], [`Meta`]), and the
//! secrets that never reach a log ([`Secret`], [`Redacted`]), and the names of the
//! event types ([`EVENT_TYPES`]). Every room speaks
//! these terms; this room imports no other, so using it pulls in no layer above.

mod event_types;
mod secret;
mod time;
mod transport;

pub use event_types::EVENT_TYPES;
pub use secret::{Redacted, Secret, SecretError, same_secret};
pub use time::Timestamp;
pub use transport::{Meta, Transport};
