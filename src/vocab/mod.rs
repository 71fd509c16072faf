//! The shared vocabulary, at the ground floor: when something was seen
//! ([`Timestamp`]), how a message travelled ([`Transport`], [`Meta`]), and the
//! secrets that never reach a log ([`Secret`], [`Redacted`]). Every room speaks
//! these terms; this room imports no other, so using it pulls in no layer above.

mod secret;
mod time;
mod transport;

pub use secret::{Redacted, Secret, SecretError, same_secret};
pub use time::Timestamp;
pub use transport::{Meta, Transport};
