//! Delivery to webhook endpoints: signing, the HTTP attempt, and the per-endpoint
//! dispatcher with its retry policy, ordering and dead letters.

pub mod client;
pub mod dispatch;
pub mod format;
pub mod sign;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::Metrics;
use crate::call::Event;
use crate::config::Config;
use crate::outbox::writer::{self, Sinks};
use crate::outbox::{Outbox, OutboxError};

/// Why delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The outbox could not be opened.
    #[error("cannot open outbox {path}: {source}")]
    Outbox {
        /// Configured path.
        path: String,
        /// The storage error.
        source: OutboxError,
    },
    /// An endpoint's TLS material is unusable.
    #[error(transparent)]
    Client(#[from] client::ClientError),
}

/// Opens the configured outbox.
pub fn open_outbox(config: &Config) -> Result<Arc<Outbox>, DeliveryError> {
    Outbox::open(&config.outbox.path, config.outbox.max_bytes)
        .map(Arc::new)
        .map_err(|source| DeliveryError::Outbox {
            path: config.outbox.path.display().to_string(),
            source,
        })
}

/// The running outbox writer and endpoint dispatchers.
pub struct Delivery {
    /// The store, shared with the admin API and the CLI.
    pub outbox: Arc<Outbox>,
    writer: tokio::task::JoinHandle<Result<(), OutboxError>>,
    dispatchers: JoinSet<()>,
    shutdown: CancellationToken,
}

impl Delivery {
    /// Resumes every endpoint's pending deliveries from `outbox` and starts
    /// committing `events`. `echo` sees each event's JSON after its commit.
    pub fn start(
        config: &Config,
        outbox: Arc<Outbox>,
        events: mpsc::Receiver<Event>,
        echo: Option<crate::outbox::writer::Echo>,
        metrics: Metrics,
    ) -> Result<Delivery, DeliveryError> {
        // Deliveries kept for an endpoint that was removed or renamed wait, with
        // their events, until it is configured again: say so rather than hide it.
        match outbox.pending_by_endpoint() {
            Ok(by_name) => {
                for (name, n) in by_name {
                    if !config.endpoints.iter().any(|e| e.name == name) {
                        tracing::warn!(endpoint = %name, pending = n, "pending deliveries for an endpoint that is not configured; they are kept until it is");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot scan pending deliveries"),
        }
        let shutdown = CancellationToken::new();
        let mut dispatchers = JoinSet::new();
        let mut senders = HashMap::new();
        let mut prepared = Vec::new();
        for ep in &config.endpoints {
            let client = client::HttpClient::new(ep)?;
            let d = dispatch::prepare(ep.clone(), client, outbox.clone(), metrics.clone())
                .map_err(|source| DeliveryError::Outbox {
                    path: config.outbox.path.display().to_string(),
                    source,
                })?;
            prepared.push((ep.name.clone(), d));
        }
        // Only now may the writer add events: every dispatcher has its backlog.
        for (name, d) in prepared {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.insert(name, tx);
            dispatchers.spawn(dispatch::run(d, rx, shutdown.clone()));
        }
        let endpoints: Arc<[_]> = config.endpoints.clone().into();
        let writer = tokio::spawn(writer::run(
            outbox.clone(),
            endpoints,
            events,
            Sinks {
                endpoints: senders,
                echo,
            },
            metrics,
        ));
        Ok(Delivery {
            outbox,
            writer,
            dispatchers,
            shutdown,
        })
    }

    /// Resolves only if the outbox writer stops on a storage error it cannot get
    /// past (a disk that keeps failing); the process should then exit.
    pub async fn failed(&mut self) -> OutboxError {
        match (&mut self.writer).await {
            Ok(Err(e)) => e,
            // Input closed (shutdown) or the task ended otherwise: not a failure.
            _ => std::future::pending().await,
        }
    }

    /// Waits for the writer to commit everything its input held (the input must be
    /// closed first), then stops the dispatchers. Unfinished deliveries stay pending.
    pub async fn shutdown(mut self) {
        let _ = (&mut self.writer).await;
        self.shutdown.cancel();
        while self.dispatchers.join_next().await.is_some() {}
    }
}
