//! siphook: a passive SIP tap that turns call signalling into signed webhooks.
//!
//! Data flows one way: socket ([`ingest`]) → parse ([`sip`]) → call tracker
//! ([`call`]) → event sink. Each module talks to the next through small typed values.

pub mod admin;
pub mod bench;
pub mod call;
pub mod config;
pub mod deliver;
pub mod gateway;
pub mod ingest;
pub mod outbox;
pub mod replay;
pub mod serve;
pub mod sip;
