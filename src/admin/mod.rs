//! Operability: Prometheus metrics, the admin HTTP listener (health, readiness,
//! the operator API) and the systemd notification protocol.

mod api;
pub mod metrics;
pub mod ratelog;
pub mod server;
pub mod systemd;

pub use metrics::Metrics;
pub use ratelog::RateLog;
pub use server::{AdminState, same_secret};
