//! Every metric siphook exports, registered once in one registry, and the
//! rate-limited logger that goes with counting bad input. A ground room: each
//! layer increments its own handles here, and `admin` only renders the registry.
//! Labels are bounded sets (transports, methods, reasons): never Call-IDs,
//! numbers or addresses.

pub mod labels;
mod ratelog;

pub use ratelog::RateLog;

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// The process's metrics; cheap to clone handles, shared by every task.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// SIP messages parsed, by transport, kind (request/response) and method.
    pub sip_messages: IntCounterVec,
    /// Messages or streams that could not be parsed or framed, by reason.
    pub sip_parse_errors: IntCounterVec,
    /// Bytes received on SIP sockets.
    pub sip_received_bytes: IntCounterVec,
    /// SIP messages shed before the tracker, by reason: `queue_full` (parsed, the
    /// tracker's queue was full) or `receive_buffer_full` (the kernel dropped them).
    pub sip_dropped: IntCounterVec,
    /// Messages the tracker took no action on, by reason.
    pub sip_ignored: IntCounterVec,
    /// Open SIP TCP connections.
    pub tcp_connections: IntGauge,
    /// SIP TCP connections closed by siphook, by reason.
    pub tcp_closed: IntCounterVec,
    /// Admin HTTP connections siphook closed or refused, by reason: an idle one
    /// `evicted` for a newcomer, `refused` (every candidate busy, in all or in the
    /// newcomer's source), `header_timeout` (also a keep-alive client that went
    /// quiet: a steady trickle is normal), `body_timeout`.
    pub admin_connections_closed: IntCounterVec,
    /// Messages of no known dialog held for their INVITE (`sip.reorder_window`),
    /// by outcome: `applied` after it, `expired` without it, `shed` (not held,
    /// the bound reached).
    pub sip_held: IntCounterVec,
    /// Clients of `/v1/events/stream` connected now.
    pub admin_stream_clients: IntGauge,
    /// Event-stream clients that left, by reason: `closed` (the client went),
    /// `slow` (fell a buffer behind and was cut off), `shutdown`.
    pub admin_stream_disconnects: IntCounterVec,
    /// Events or delivery outcomes the recent-history index missed because its
    /// queue was full: searches and stream catch-up lack them (delivery does not).
    pub history_dropped: IntCounter,
    /// Calls in the call table.
    pub calls_active: IntGauge,
    /// Completed calls by disposition.
    pub calls_total: IntCounterVec,
    /// Calls never tracked, by reason (`table_full`).
    pub calls_dropped: IntCounterVec,
    /// Events emitted by type.
    pub events_total: IntCounterVec,
    /// Events the outbox could not take, by reason (`outbox_full`, `storage_error`).
    pub events_refused: IntCounterVec,
    /// Outbox size on disk.
    pub outbox_size_bytes: IntGauge,
    /// `[outbox] max_bytes`: an alert compares the size's trend against it.
    pub outbox_max_bytes: IntGauge,
    /// 1 while the outbox takes new events, 0 while it refuses them (past
    /// max_bytes): the process is not ready then.
    pub outbox_accepting: IntGauge,
    /// 1 once a write to the outbox failed (disk full, I/O error): the store then
    /// refuses every later commit, so this lasts until the process restarts;
    /// readiness says why.
    pub outbox_storage_failing: IntGauge,
    /// Time of one group commit (fsync).
    pub outbox_commit_duration: Histogram,
    /// Segments of the outbox's log on disk: steady under steady traffic; growing
    /// means a backlog (or a dead letter pile) holds old segments.
    pub outbox_segments: IntGauge,
    /// Bytes of live records carried out of sparse old segments so those could
    /// be retired: the price of keeping the disk bounded without a copy.
    pub outbox_carried_bytes: IntCounter,
    /// Bytes the last open cut after the newest segment's last whole record (a
    /// commit a crash or power cut interrupted; never an acknowledged one).
    pub outbox_open_cut_bytes: IntGauge,
    /// Bytes the last open found damaged in older segments (a disk fault): the
    /// records after the damage are lost.
    pub outbox_open_damaged_bytes: IntGauge,
    /// Deliveries waiting, per endpoint.
    pub outbox_pending: IntGaugeVec,
    /// Age of each endpoint's oldest waiting event: a stuck endpoint shows here
    /// long before the disk fills.
    pub outbox_oldest_pending_seconds: GaugeVec,
    /// Delivery attempts by endpoint, outcome and status code.
    pub deliveries: IntCounterVec,
    /// Time of one attempt, per endpoint.
    pub delivery_attempt_duration: HistogramVec,
    /// SIP message received → endpoint's 2xx, per endpoint.
    pub event_delivery_latency: HistogramVec,
    /// Dead letters per endpoint.
    pub deadletters: IntGaugeVec,
    /// 1 for the state each endpoint is in (healthy, circuit_open, paused).
    pub endpoint_state: IntGaugeVec,
    /// HEP packets not handed on, by the transport they came over and reason
    /// (malformed, auth_failed, not_sip).
    pub hep_dropped: IntCounterVec,
    /// Messages whose capture time (HEP, or X-Siptrace-Time) was too far from this
    /// host's clock to use: the capture agent's or proxy's clock is off.
    pub capture_clock_skew: IntCounterVec,
    /// Configuration reloads (SIGHUP) by result: a rejected file must be visible
    /// on a dashboard, not only in a log.
    pub config_reloads: IntCounterVec,
}

/// Registers a metric whose name and labels are static, so it cannot fail at run time.
fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    name: &str,
    metric: prometheus::Result<M>,
) -> M {
    let m = metric.unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
    registry
        .register(Box::new(m.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name} registered twice: {e}"));
    m
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        name,
        IntCounterVec::new(Opts::new(name, help), labels),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, name, IntGauge::new(name, help))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        name,
        IntGaugeVec::new(Opts::new(name, help), labels),
    )
}

/// Buckets from 0.5 ms to 60 s: commits, attempts and SIP-to-2xx latency all fit.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
    register(registry, name, HistogramVec::new(opts, labels))
}

impl Metrics {
    /// A fresh registry with every metric registered. Names and labels are static,
    /// so registration cannot fail at run time.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let m = Metrics {
            sip_messages: counter(
                &r,
                "siphook_sip_messages_total",
                "SIP messages parsed.",
                &["transport", "kind", "method"],
            ),
            sip_parse_errors: counter(
                &r,
                "siphook_sip_parse_errors_total",
                "SIP messages or streams that could not be parsed or framed.",
                &["transport", "reason"],
            ),
            sip_received_bytes: counter(
                &r,
                "siphook_sip_received_bytes_total",
                "Bytes received on SIP sockets.",
                &["transport"],
            ),
            sip_dropped: counter(
                &r,
                "siphook_sip_messages_dropped_total",
                "SIP messages shed before the call tracker: queue_full (the tracker's queue), receive_buffer_full (dropped by the kernel on a full UDP receive buffer).",
                &["transport", "reason"],
            ),
            sip_ignored: counter(
                &r,
                "siphook_sip_messages_ignored_total",
                "SIP messages that changed no call.",
                &["reason"],
            ),
            tcp_connections: gauge(&r, "siphook_tcp_connections", "Open SIP TCP connections."),
            tcp_closed: counter(
                &r,
                "siphook_tcp_connections_closed_total",
                "SIP TCP connections closed or refused by siphook.",
                &["reason"],
            ),
            admin_connections_closed: counter(
                &r,
                "siphook_admin_connections_closed_total",
                "Admin HTTP connections closed or refused by siphook: evicted (idle, for a newcomer), refused (all busy), header_timeout, body_timeout.",
                &["reason"],
            ),
            sip_held: counter(
                &r,
                "siphook_sip_messages_held_total",
                "Messages of no known dialog held for their INVITE (sip.reorder_window): applied after it, expired without it, shed (bound reached).",
                &["outcome"],
            ),
            admin_stream_clients: gauge(
                &r,
                "siphook_admin_stream_clients",
                "Clients of the admin event stream (/v1/events/stream) connected now.",
            ),
            admin_stream_disconnects: counter(
                &r,
                "siphook_admin_stream_disconnects_total",
                "Admin event-stream clients that left: closed (by the client), slow (cut off a buffer behind), shutdown.",
                &["reason"],
            ),
            history_dropped: counter(
                &r,
                "siphook_history_dropped_total",
                "Events or delivery outcomes the recent-history index missed on a full queue (searches lack them; delivery does not).",
                &[],
            )
            .with_label_values::<&str>(&[]),
            calls_active: gauge(&r, "siphook_calls_active", "Calls in the call table."),
            calls_total: counter(
                &r,
                "siphook_calls_total",
                "Completed calls.",
                &["disposition"],
            ),
            calls_dropped: counter(
                &r,
                "siphook_calls_dropped_total",
                "Calls not tracked.",
                &["reason"],
            ),
            events_total: counter(
                &r,
                "siphook_events_total",
                "Call events emitted.",
                &["type"],
            ),
            outbox_accepting: {
                let g = gauge(
                    &r,
                    "siphook_outbox_accepting",
                    "1 while the outbox accepts new events.",
                );
                g.set(1);
                g
            },
            outbox_storage_failing: gauge(
                &r,
                "siphook_outbox_storage_failing",
                "1 once a write to the outbox failed; cleared by a restart.",
            ),
            events_refused: counter(
                &r,
                "siphook_events_refused_total",
                "Events the outbox refused.",
                &["reason"],
            ),
            outbox_size_bytes: gauge(&r, "siphook_outbox_size_bytes", "Outbox size on disk."),
            outbox_max_bytes: gauge(
                &r,
                "siphook_outbox_max_bytes",
                "[outbox] max_bytes: past it new events are refused.",
            ),
            outbox_commit_duration: histogram(
                &r,
                "siphook_outbox_commit_duration_seconds",
                "Duration of one outbox group commit (fsync).",
                &[],
            )
            .with_label_values::<&str>(&[]),
            outbox_segments: gauge(
                &r,
                "siphook_outbox_segments",
                "Segments of the outbox log on disk.",
            ),
            outbox_carried_bytes: counter(
                &r,
                "siphook_outbox_carried_bytes_total",
                "Bytes of live outbox records carried out of sparse old segments.",
                &[],
            )
            .with_label_values::<&str>(&[]),
            outbox_open_cut_bytes: gauge(
                &r,
                "siphook_outbox_open_cut_bytes",
                "Bytes cut after the last whole outbox record at the last open (an interrupted commit).",
            ),
            outbox_open_damaged_bytes: gauge(
                &r,
                "siphook_outbox_open_damaged_bytes",
                "Bytes of damaged outbox segments found at the last open (a disk fault).",
            ),
            outbox_pending: gauge_vec(
                &r,
                "siphook_outbox_pending",
                "Deliveries waiting per endpoint.",
                &["endpoint"],
            ),
            deliveries: counter(
                &r,
                "siphook_deliveries_total",
                "Delivery attempts.",
                &["endpoint", "outcome", "code"],
            ),
            delivery_attempt_duration: histogram(
                &r,
                "siphook_delivery_attempt_duration_seconds",
                "Duration of one delivery attempt.",
                &["endpoint"],
            ),
            event_delivery_latency: histogram(
                &r,
                "siphook_event_delivery_latency_seconds",
                "SIP message received to endpoint 2xx.",
                &["endpoint"],
            ),
            deadletters: gauge_vec(
                &r,
                "siphook_deadletters",
                "Dead letters per endpoint.",
                &["endpoint"],
            ),
            endpoint_state: gauge_vec(
                &r,
                "siphook_endpoint_state",
                "1 for the current state of each endpoint.",
                &["endpoint", "state"],
            ),
            outbox_oldest_pending_seconds: register(
                &r,
                "siphook_outbox_oldest_pending_seconds",
                GaugeVec::new(
                    Opts::new(
                        "siphook_outbox_oldest_pending_seconds",
                        "Age of the oldest pending event per endpoint, from its SIP message.",
                    ),
                    &["endpoint"],
                ),
            ),
            hep_dropped: counter(
                &r,
                "siphook_hep_packets_dropped_total",
                "HEP packets dropped: malformed, failed auth, or not SIP.",
                &["transport", "reason"],
            ),
            capture_clock_skew: counter(
                &r,
                "siphook_capture_clock_skew_total",
                "Messages whose capture time was over 10s from this host's clock; the receive time was used.",
                &["source"],
            ),
            config_reloads: counter(
                &r,
                "siphook_config_reloads_total",
                "Configuration reloads by result.",
                &["result"],
            ),
            registry: r,
        };
        gauge_vec(
            &m.registry,
            "siphook_build_info",
            "Always 1; the version label says which build runs.",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        // Children exist from the start, so a dashboard shows 0, not "no data".
        for result in ["success", "failure"] {
            m.config_reloads.with_label_values(&[result]);
        }
        m.zero_known_series();
        #[cfg(target_os = "linux")]
        if let Err(e) = m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            unreachable!("process metrics registered twice: {e}");
        }
        m
    }

    /// Creates every known label set of the labelled counters, at 0 (see
    /// [`labels`]). Per-endpoint series are created by each endpoint's
    /// dispatcher when it starts, since only it knows the names.
    fn zero_known_series(&self) {
        use labels::*;
        let zero = |c: &IntCounterVec, values: &[&str]| {
            c.with_label_values(values);
        };
        for t in PARSE_TRANSPORTS {
            for r in PARSE_REASONS {
                zero(&self.sip_parse_errors, &[t, r]);
            }
        }
        for r in FRAME_REASONS {
            zero(&self.sip_parse_errors, &["tcp", r]);
        }
        for t in HEP_TRANSPORTS {
            for r in HEP_DECODE_REASONS.iter().chain(HEP_DROP_REASONS) {
                zero(&self.hep_dropped, &[t, r]);
            }
        }
        for r in TCP_CLOSE_REASONS
            .iter()
            .chain(FRAME_REASONS)
            .chain(HEP_DECODE_REASONS)
        {
            zero(&self.tcp_closed, &[r]);
        }
        for r in CALL_DROP_REASONS {
            zero(&self.calls_dropped, &[r]);
        }
        for r in REFUSE_REASONS {
            zero(&self.events_refused, &[r]);
        }
        for s in CLOCK_SKEW_SOURCES {
            zero(&self.capture_clock_skew, &[s]);
        }
        for o in HELD_OUTCOMES {
            zero(&self.sip_held, &[o]);
        }
        for r in STREAM_DISCONNECT_REASONS {
            zero(&self.admin_stream_disconnects, &[r]);
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn a_fresh_registry_exports_every_known_series_at_zero() {
        let text = Metrics::new().render();
        for series in [
            r#"siphook_events_refused_total{reason="outbox_full"} 0"#,
            r#"siphook_events_refused_total{reason="storage_error"} 0"#,
            r#"siphook_sip_parse_errors_total{reason="malformed",transport="udp"} 0"#,
            r#"siphook_sip_parse_errors_total{reason="missing_content_length",transport="tcp"} 0"#,
            r#"siphook_sip_parse_errors_total{reason="not_utf8",transport="hep"} 0"#,
            r#"siphook_calls_dropped_total{reason="table_full"} 0"#,
            r#"siphook_tcp_connections_closed_total{reason="idle_timeout"} 0"#,
            r#"siphook_tcp_connections_closed_total{reason="refused_per_source"} 0"#,
            r#"siphook_tcp_connections_closed_total{reason="too_large"} 0"#,
            r#"siphook_hep_packets_dropped_total{reason="auth_failed",transport="udp"} 0"#,
            r#"siphook_hep_packets_dropped_total{reason="hep_bad_magic",transport="tcp"} 0"#,
            r#"siphook_capture_clock_skew_total{source="hep"} 0"#,
            r#"siphook_capture_clock_skew_total{source="siptrace"} 0"#,
        ] {
            assert!(
                text.lines().any(|l| l == series),
                "{series} missing:\n{text}"
            );
        }
        // No sample is anything but 0 in a fresh registry's counters.
        for l in text
            .lines()
            .filter(|l| l.starts_with("siphook_") && l.contains("_total{"))
        {
            assert!(l.ends_with(" 0"), "{l}");
        }
    }
}
