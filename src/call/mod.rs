//! Calls: the dialog state machine and the events it emits.

mod dialog;
pub mod event;
pub mod tracker;

pub use event::{
    CallInfo, CallSnapshot, Disposition, EndedBy, Event, EventData, EventType, Signaling,
    Timestamp, TransferKind, Transport,
};
pub use tracker::{Ignored, Meta, Tracker, TrackerConfig};
