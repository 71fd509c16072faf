//! SIGHUP: what a reload can change at run time (endpoints, the admin token, the
//! log filter), and what it leaves for the next restart.

use tokio::sync::watch;

use super::LogReload;
use crate::config::{Config, ConfigError};
use crate::deliver::{Delivery, ReloadError};
use crate::metrics::Metrics;
use crate::vocab::Redacted;

/// Applies what a reload can change at run time: endpoints, the admin token and
/// the log filter. A file that does not load changes nothing; only a reload that
/// broke halfway is returned, for the process to exit on.
pub(super) async fn reload(
    current: &mut Config,
    new: Result<Config, ConfigError>,
    delivery: &mut Delivery,
    token: &watch::Sender<Option<Redacted>>,
    log: Option<&LogReload>,
    metrics: &Metrics,
) -> Result<(), ReloadError> {
    let fail = |why: &str| {
        metrics.config_reloads.with_label_values(&["failure"]).inc();
        tracing::error!(
            "configuration reload rejected, the running configuration stays in force: {why}"
        );
    };
    let new = match new {
        Ok(c) => c,
        // Problems name keys and never echo values, so they are safe to log.
        Err(e) => {
            fail(&e.to_string().replace('\n', "; "));
            return Ok(());
        }
    };
    // Delivery first: it is the part that can still refuse (an unreadable TLS
    // file); the filter was validated with the file and cannot.
    let summary = match delivery.reload(&new).await {
        Ok(s) => s,
        Err(ReloadError::Rejected(e)) => {
            fail(&e.to_string());
            return Ok(());
        }
        Err(e) => {
            metrics.config_reloads.with_label_values(&["failure"]).inc();
            return Err(e);
        }
    };
    if new.log.level != current.log.level
        && let Some(log) = log
        && let Err(e) = log(&new.log.level)
    {
        tracing::error!("log.level not applied: {e}");
    }
    token.send_replace(new.admin.token.clone());
    let restart_needed: Vec<&str> = [
        ("sip", current.sip != new.sip),
        ("hep", current.hep != new.hep),
        ("outbox", current.outbox != new.outbox),
        ("admin.listen", current.admin.listen != new.admin.listen),
    ]
    .into_iter()
    .filter_map(|(k, changed)| changed.then_some(k))
    .collect();
    if !restart_needed.is_empty() {
        tracing::warn!(
            sections = ?restart_needed,
            "these settings changed and take effect at the next restart (listeners and the outbox stay as they are)"
        );
    }
    metrics.config_reloads.with_label_values(&["success"]).inc();
    // Whether, never what: the operator who rotated the token sees it took.
    let admin_token = match (&current.admin.token, &new.admin.token) {
        (a, b) if a == b => "unchanged",
        (None, Some(_)) => "set",
        (Some(_), None) => "removed",
        _ => "changed",
    };
    tracing::info!(
        added = ?summary.added,
        removed = ?summary.removed,
        changed = ?summary.changed,
        log_level = %new.log.level,
        admin_token,
        "configuration reloaded"
    );
    // What needs a restart keeps its running value, so the next reload still
    // compares against what actually runs.
    let mut applied = new;
    applied.sip = current.sip.clone();
    applied.hep = current.hep.clone();
    applied.outbox = current.outbox.clone();
    applied.admin.listen = current.admin.listen;
    *current = applied;
    Ok(())
}
