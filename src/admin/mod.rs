//! Operability: Prometheus metrics now; the admin HTTP API and health endpoints
//! build on this module.

pub mod metrics;
pub mod ratelog;

pub use metrics::Metrics;
pub use ratelog::RateLog;
