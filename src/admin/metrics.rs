//! Every metric siphook exports, registered once in one registry. Labels are bounded
//! sets (transports, methods, reasons): never Call-IDs, numbers or addresses.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

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
    /// Parsed messages shed before the tracker, by reason (`queue_full`).
    pub sip_dropped: IntCounterVec,
    /// Messages the tracker took no action on, by reason.
    pub sip_ignored: IntCounterVec,
    /// Open SIP TCP connections.
    pub tcp_connections: IntGauge,
    /// SIP TCP connections closed by siphook, by reason.
    pub tcp_closed: IntCounterVec,
    /// Calls in the call table.
    pub calls_active: IntGauge,
    /// Completed calls by disposition.
    pub calls_total: IntCounterVec,
    /// Calls never tracked, by reason (`table_full`).
    pub calls_dropped: IntCounterVec,
    /// Events emitted by type.
    pub events_total: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name} registered twice: {e}"));
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help)
        .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
    registry
        .register(Box::new(g.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name} registered twice: {e}"));
    g
}

impl Metrics {
    /// A fresh registry with every metric registered. Names and labels are static,
    /// so registration cannot fail at run time.
    pub fn new() -> Metrics {
        let r = Registry::new();
        Metrics {
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
                "Parsed SIP messages shed before the call tracker.",
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
            registry: r,
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
