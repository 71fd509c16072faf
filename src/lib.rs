//! siphook: a passive SIP tap that turns call signalling into signed webhooks.
//!
//! The rooms follow the data path, socket → [`ingest`] → [`sip`] → [`call`] →
//! [`outbox`] → [`deliver`], on a ground of [`vocab`] (time, transport, secrets),
//! [`config`] and [`metrics`]. [`admin`] serves what the others own; [`pipeline`]
//! wires them and runs the process; [`bench`](mod@bench) and [`replay`] are
//! commands built on them. They are declared below in ARCHITECTURE.md's order: a
//! room imports only the rooms declared before it, and `tests/architecture/`
//! enforces that.

pub mod vocab;

pub mod config;
pub mod metrics;

pub mod sip;

pub mod ingest;

pub mod call;

pub mod outbox;

pub mod deliver;

pub mod admin;

pub mod pipeline;

pub mod bench;
pub mod replay;
