//! The binary's subcommands, one module each. This is the binary's edge: errors
//! become `anyhow` here, with context, and each command chooses its exit status.

pub mod bench;
pub mod check;
pub mod logging;
pub mod replay;
pub mod run;
pub mod store;
pub mod tail;

use std::process::ExitCode;

/// Exit status 0, or the error on stderr and status 1: what the commands that
/// have no special statuses return.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("siphook: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each said once. The library's errors
/// write their source into their own message ("cannot read F: No such file…")
/// and also return it as `source()`, so anyhow's `{:#}` would print it twice
/// ("…: Address already in use (os error 98): Address already in use (os error
/// 98)"). A cause whose text the message before it already holds is left out;
/// one that adds something (the io::Error under an anyhow context) is kept.
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on udp 127.0.0.1:5060: {source}")]
    struct Embeds {
        source: std::io::Error,
    }

    fn in_use() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::AddrInUse)
    }

    #[test]
    fn a_source_already_in_the_message_is_said_once() {
        let e = anyhow::Error::new(Embeds { source: in_use() });
        let got = describe(&e);
        assert_eq!(got.matches(&in_use().to_string()).count(), 1, "{got}");
        // A context over an error that does not embed its cause keeps both.
        let e = anyhow::Error::new(in_use()).context("starting the async runtime");
        assert_eq!(
            describe(&e),
            format!("starting the async runtime: {}", in_use())
        );
    }
}
