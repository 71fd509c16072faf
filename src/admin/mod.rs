//! The admin HTTP listener: `/metrics` (rendering the ground room's registry),
//! `/healthz` and `/readyz` for machines, and the token-protected `/v1` API for the
//! operator on call. It owns no state of its own; every answer comes from the room
//! that owns it (the tracker, the dispatchers, the outbox), through [`AdminState`].

mod api;
mod conns;
mod events;
mod reply;
mod server;
mod state;
mod stream;
mod ui;

pub use server::{bind, serve};
pub use state::AdminState;
pub use stream::stream_slots;
