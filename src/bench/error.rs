//! Why a bench run could not be made (a run that was made but lost events is a
//! [`super::Report`] that did not pass, not an error).

use std::net::SocketAddr;

use super::Transport;

/// Why a run could not be made (a run that was made but lost events is a
/// [`Report`] that did not pass, not an error).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option is out of range or missing.
    #[error("{0}")]
    Option(String),
    /// Traffic stays on 127.0.0.0/8.
    #[error("{0} is not a 127.0.0.0/8 address: siphook bench only talks to loopback")]
    NotLoopback(SocketAddr),
    /// The verification secret is not `whsec_` + base64.
    #[error("the secret must be \"whsec_\" followed by base64")]
    Secret,
    /// A socket could not be bound.
    #[error("binding the {what} on {addr}: {source}")]
    Bind {
        /// Which socket.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TCP connection to siphook could not be made.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A TCP write failed mid-run.
    #[error("sending to {addr}: {source}")]
    Send {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// `--plot` could not draw or write its file.
    #[error("writing the plot {path}: {reason}")]
    Plot {
        /// Which file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The temporary directory for the spawned siphook's outbox.
    #[error("creating {path}: {source}")]
    TempDir {
        /// Which.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The spawned siphook's configuration did not validate.
    #[error("the spawned siphook's configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The spawned siphook's thread or runtime could not start.
    #[error("starting siphook's runtime: {0}")]
    Runtime(std::io::Error),
    /// The spawned siphook stopped with an error.
    #[error("siphook: {0}")]
    Serve(#[from] crate::pipeline::ServeError),
    /// The spawned siphook's thread panicked.
    #[error("siphook's thread panicked")]
    Panicked,
    /// Something did not happen in time.
    #[error("timed out waiting for {what}")]
    Timeout {
        /// What.
        what: &'static str,
    },
    /// The spawned siphook does not listen on the transport asked for.
    #[error("siphook has no {0} listener")]
    NoListener(Transport),
    /// The JSON report could not be written.
    #[error("writing {path}: {source}")]
    WriteJson {
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The JSON report could not be encoded.
    #[error("encoding the JSON report: {0}")]
    Json(#[from] serde_json::Error),
}
