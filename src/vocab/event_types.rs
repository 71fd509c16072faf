//! The names of the event types siphook emits, in one place: the event contract
//! (`call::EventType`) spells its wire names from this list, and the configuration
//! checks an endpoint's `events` globs against it, so a typo such as
//! `call.complete` is caught instead of silently matching nothing. A new family
//! (`registration.*`) is added here, and both follow.

/// Every event type's wire name, in the order a call can emit them.
pub const EVENT_TYPES: [&str; 5] = [
    "call.initiated",
    "call.ringing",
    "call.answered",
    "call.transferred",
    "call.completed",
];
