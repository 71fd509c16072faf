//! SIP: framing a stream into messages, normalizing what rsip cannot read, and the
//! small typed view of a message that the call tracker consumes.

pub mod addr;
pub mod framer;
pub mod hep;
pub mod message;
pub mod normalize;
mod parse;
pub mod stir;
pub mod stream;
mod view;

pub use addr::{NameAddr, Reason, ReferTo, Replaces};
pub use framer::{FrameError, Framer};
pub use message::{Method, ParseError, ParseOptions, SipMessage, Siptrace, StartLine};
pub use parse::{parse, sniff_call_id};
pub use stir::StirShaken;
