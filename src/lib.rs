//! siphook: a passive SIP tap that turns call signalling into signed webhooks.
//!
//! The rooms follow the data path, socket → [`ingest`] → [`sip`] → [`call`] →
//! [`outbox`] → [`deliver`], standing on a ground of [`vocab`] (time, transport,
//! secrets), [`metrics`] and [`config`]. [`admin`] serves what the others own;
//! [`pipeline`] wires them and runs the process; [`replay`] and [`bench`](mod@bench) are
//! commands built on them. Imports run down that list, never up: the rule is in
//! ARCHITECTURE.md and `tests/architecture.rs` enforces it.

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
