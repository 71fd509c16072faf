//! The label values each labelled counter is known to take, so every series is
//! exported at 0 from the start: an alert on `increase(…[5m]) > 0` cannot see the
//! first burst of a series that appears only at its first increment (Prometheus
//! practice: avoid missing series). The values are the rooms' own labels (sip's
//! `reason()`s, ingest's connection outcomes, the outbox writer's refusals);
//! metrics imports none of them, so each producer's tests check that what it
//! counts is listed here. A value missing from a list still counts: it only
//! appears at its first increment, as before.

/// `transport` of `siphook_sip_parse_errors_total`: the wire, or `hep` for a
/// payload unwrapped from HEP.
pub const PARSE_TRANSPORTS: &[&str] = &["udp", "tcp", "hep"];

/// `sip::ParseError::reason()`: a message that does not parse.
pub const PARSE_REASONS: &[&str] = &[
    "not_utf8",
    "bad_header_line",
    "empty",
    "malformed",
    "missing_call_id",
    "missing_from",
    "missing_to",
    "missing_cseq",
    "missing_header",
    "too_large",
    "field_too_long",
];

/// `sip::FrameError::reason()`: a TCP stream that cannot be cut into messages
/// (a `sip_parse_errors_total{transport="tcp"}` and a connection close reason).
pub const FRAME_REASONS: &[&str] = &[
    "too_large",
    "missing_content_length",
    "bad_content_length",
    "bad_header_section",
];

/// `sip::hep::HepError::reason()`: a HEP packet that does not decode (also a
/// HEP TCP stream's close reason).
pub const HEP_DECODE_REASONS: &[&str] = &[
    "hep_truncated",
    "hep_bad_magic",
    "hep_bad_length",
    "hep_bad_chunk",
    "hep_no_payload",
];

/// `reason` of `siphook_hep_packets_dropped_total` besides the decode errors.
pub const HEP_DROP_REASONS: &[&str] = &["auth_failed", "not_sip"];

/// `transport` of `siphook_hep_packets_dropped_total`: what the HEP packet came over.
pub const HEP_TRANSPORTS: &[&str] = &["udp", "tcp"];

/// How ingest's TCP connections end or are refused, besides framing errors
/// (`siphook_tcp_connections_closed_total{reason}`).
pub const TCP_CLOSE_REASONS: &[&str] = &[
    "peer_closed",
    "idle_timeout",
    "slow_message",
    "auth_timeout",
    "io_error",
    "evicted",
    "shutdown",
    "refused_per_source",
    "refused_max_connections",
];

/// `siphook_calls_dropped_total{reason}`.
pub const CALL_DROP_REASONS: &[&str] = &["table_full"];

/// `siphook_events_refused_total{reason}`.
pub const REFUSE_REASONS: &[&str] = &["outbox_full", "storage_error"];

/// `siphook_capture_clock_skew_total{source}`: whose capture time was off.
pub const CLOCK_SKEW_SOURCES: &[&str] = &["hep", "siptrace"];

/// `siphook_sip_messages_held_total{outcome}`: messages held for their INVITE.
pub const HELD_OUTCOMES: &[&str] = &["applied", "expired", "shed"];

/// `siphook_admin_stream_disconnects_total{reason}`.
pub const STREAM_DISCONNECT_REASONS: &[&str] = &["closed", "slow", "shutdown"];
