//! The process's log subscriber. The binary owns it, so the library only ever
//! emits `tracing` events and is handed a [`LogReload`] to change the filter.

use siphook::pipeline::LogReload;

/// Log line format: `text` for people, `json` for journald and log shippers.
// The variants carry no doc comments: clap would print them in `--help`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr so stdout stays pure JSON lines with `--print-events`.
/// `RUST_LOG`, when set, wins over the configured level at start; the returned
/// function swaps the filter on reload. A bare level means siphook's (see `directives`).
pub fn init(format: LogFormat, level: &str) -> LogReload {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt, reload};
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = from_env
        .and_then(|v| filter_for(&v).ok())
        .or_else(|| filter_for(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    // Colour only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
            .init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
    Box::new(move |level: &str| {
        let filter = filter_for(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// The filter for a `RUST_LOG` or `[log] level` value, read by [`directives`].
fn filter_for(spec: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    tracing_subscriber::EnvFilter::try_new(directives(spec)).map_err(|e| e.to_string())
}

/// A bare level is siphook's: `debug` means siphook's debug lines, with the
/// dependencies at `info` (sled and hyper at debug print dozens of lines per
/// call and would drown siphook's own). A level less verbose than `info` applies
/// to all. Anything else (`hyper=debug,siphook=debug`, `warn,siphook::deliver=trace`)
/// is a full tracing filter, used as written.
///
/// The NATS client's own lines are off under a bare level: it logs every failed
/// reconnect (one a second while a server is down or refuses siphook), and
/// siphook reports the connection's state itself, once per change. Ask for them
/// with a filter (`info,async_nats=debug`).
fn directives(spec: &str) -> String {
    let spec = spec.trim();
    let level = spec.to_ascii_lowercase();
    match level.as_str() {
        "debug" | "trace" => format!("info,siphook={level},async_nats=off"),
        "error" | "warn" | "info" => format!("{level},async_nats=off"),
        _ => spec.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn a_bare_level_is_siphooks_and_a_filter_is_used_as_written() {
        assert_eq!(directives("debug"), "info,siphook=debug,async_nats=off");
        assert_eq!(directives(" TRACE "), "info,siphook=trace,async_nats=off");
        assert_eq!(directives("info"), "info,async_nats=off");
        assert_eq!(directives("warn"), "warn,async_nats=off");
        assert_eq!(
            directives("hyper=debug,siphook=debug"),
            "hyper=debug,siphook=debug"
        );
        assert_eq!(directives("debug,sled=warn"), "debug,sled=warn");
    }
}
