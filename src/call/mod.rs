//! Calls: the dialog state machine, the events it emits (the public contract),
//! and the questions the tracker task answers about its table.

mod dialog;
pub mod event;
mod hangup;
pub mod query;
mod reorder;
mod reuse;
mod settings;
pub mod tracker;

pub use event::{
    CallInfo, CallSnapshot, Disposition, EndedBy, Event, EventData, EventType, Signaling,
    TransferKind,
};
pub use query::{CallsPage, TrackerQuery};
pub use reorder::HeldCounts;
pub use settings::TrackerConfig;
pub use tracker::{Ignored, Tracker};
