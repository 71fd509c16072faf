//! One endpoint's NATS connection as attempts see it: the client once connected,
//! and what is wrong when it is not, or when the server refuses this endpoint.
//! siphook connects (and, when async-nats gives up reconnecting, connects again)
//! in its own loop, which ends with the publisher: a reload that replaces an
//! endpoint leaves no connection retrying behind it. While connected, a watch
//! checks every few seconds that a stream captures the endpoint's subject, so an
//! idle endpoint with no stream shows as misconfigured before its first event.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::{ClientError, ConnectOptions, Event, ServerError, jetstream};

use crate::deliver::transport::Unavailable;

/// What an attempt says while the server refuses the configured credentials.
pub(super) const REFUSED: &str =
    "the NATS server refused siphook's credentials (authorization violation)";

/// The longest pause between two connection attempts: a broker that comes back
/// is found within this.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// Reconnections async-nats makes before it gives up and siphook's own loop
/// takes over (about a minute at [`MAX_RECONNECT_DELAY`]).
pub(super) const MAX_RECONNECTS: usize = 30;

/// How often a connected endpoint checks that a stream captures its subject.
const STREAM_CHECK: Duration = Duration::from_secs(5);

/// A problem, and why, in siphook's terms.
pub(super) type Problem = (Unavailable, String);

/// What starting over takes: the options, the servers, the JetStream timeout.
/// Set once the options (which hold the callback that restarts) are built.
pub(super) type Restart =
    Arc<Mutex<Option<(ConnectOptions, Vec<async_nats::ServerAddr>, Duration)>>>;

/// The connection's state shared by the publisher, its attempts and the tasks
/// below (which hold it weakly).
pub(super) struct Shared {
    pub(super) endpoint: String,
    /// Every subject the endpoint publishes on (one per event type it wants),
    /// for the stream check.
    subjects: Vec<String>,
    /// The servers, as configured, for error messages.
    servers: String,
    client: Mutex<Option<(async_nats::Client, jetstream::Context)>>,
    problem: Mutex<Option<Problem>>,
}

impl Shared {
    pub(super) fn new(endpoint: &str, subjects: Vec<String>, servers: &[String]) -> Shared {
        Shared {
            endpoint: endpoint.to_owned(),
            subjects,
            servers: servers.join(","),
            client: Mutex::new(None),
            problem: Mutex::new(Some((
                Unavailable::Disconnected,
                "not connected to NATS yet".into(),
            ))),
        }
    }

    /// The client and its JetStream context, once connected.
    pub(super) fn client(&self) -> Option<(async_nats::Client, jetstream::Context)> {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What is wrong now, if anything is known to be.
    pub(super) fn problem(&self) -> Option<Problem> {
        self.problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records a change, logging it once (not once per attempt).
    pub(super) fn set_problem(&self, p: Option<Problem>) {
        let mut slot = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        if *slot != p {
            match &p {
                None => {
                    tracing::info!(endpoint = %self.endpoint, "NATS: connected, and a stream captures every subject: events go out")
                }
                Some((_, why)) => tracing::warn!(endpoint = %self.endpoint, %why, "NATS"),
            }
        }
        *slot = p;
    }

    /// A publish was acknowledged: whatever stood in the way is gone.
    pub(super) fn acknowledged(&self) {
        if self.problem().is_some() {
            self.set_problem(None);
        }
    }
}

/// The event callback's view: what a connection event says about publishing.
pub(super) fn on_event(shared: &Weak<Shared>, event: &Event) {
    let Some(s) = shared.upgrade() else { return };
    let next = problem_of(event, s.problem());
    s.set_problem(next);
}

/// What a connection event says; `previous` is kept when it says nothing new.
pub(super) fn problem_of(event: &Event, previous: Option<Problem>) -> Option<Problem> {
    let refused = || Some((Unavailable::Auth, REFUSED.into()));
    match event {
        // Connected again: whether a stream is there is the watch's to say.
        Event::Connected => previous.filter(|(r, _)| *r == Unavailable::NoStream),
        Event::Disconnected => Some((Unavailable::Disconnected, "disconnected from NATS".into())),
        Event::Closed => Some((Unavailable::Disconnected, "the NATS client closed".into())),
        Event::ServerError(ServerError::AuthorizationViolation) => refused(),
        Event::ServerError(ServerError::Other(text))
            if text.to_ascii_lowercase().contains("permissions violation") =>
        {
            Some((
                Unavailable::Auth,
                format!("the NATS server refuses siphook permission: {text}"),
            ))
        }
        Event::ClientError(e) => {
            let text = match e {
                ClientError::Other(t) => t.clone(),
                other => other.to_string(),
            };
            if text.contains("authorization violation") || text.contains("signing nonce") {
                refused()
            } else {
                Some((
                    Unavailable::Disconnected,
                    format!("cannot connect to NATS: {text}"),
                ))
            }
        }
        _ => previous,
    }
}

/// Connects until it succeeds or the publisher is gone, noting each failure
/// where attempts read it, then watches the stream while connected. Run again
/// when async-nats gives up reconnecting ([`MAX_RECONNECTS`]).
pub(super) async fn run(
    options: ConnectOptions,
    servers: Vec<async_nats::ServerAddr>,
    timeout: Duration,
    shared: Weak<Shared>,
) {
    for attempt in 0usize.. {
        match options.clone().connect(servers.clone()).await {
            Ok(client) => {
                let js = jetstream::context::ContextBuilder::new()
                    .timeout(timeout)
                    .build(client.clone());
                let Some(s) = shared.upgrade() else { return };
                *s.client.lock().unwrap_or_else(|e| e.into_inner()) = Some((client, js));
                drop(s);
                // The watch's first check says whether events can go out.
                watch(&shared).await;
                return;
            }
            Err(e) => {
                let Some(s) = shared.upgrade() else { return };
                s.set_problem(Some(connect_problem(&e, &s.servers)));
            }
        }
        tokio::time::sleep(reconnect_delay(attempt)).await;
    }
}

/// While the publisher lives and its client is connected: checks every
/// [`STREAM_CHECK`] that a stream captures the subject. Returns when the
/// publisher is gone, or its client was dropped because async-nats gave up
/// reconnecting ([`restart`] starts over).
async fn watch(shared: &Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let Some((client, js)) = s.client() else {
            return;
        };
        match client.connection_state() {
            async_nats::connection::State::Connected => match streams_cover(&s, &js).await {
                // Connected, and every subject captured: a connection problem or
                // a missing stream is over (a refused publish permission is
                // cleared by the next acknowledgement).
                Some(None) if s.problem().is_some_and(|(r, _)| r != Unavailable::Auth) => {
                    s.set_problem(None);
                }
                Some(Some(subject)) => s.set_problem(Some(no_stream(&subject))),
                // Fine already, or unknown this time: an attempt, or the next
                // check, will say.
                _ => {}
            },
            async_nats::connection::State::Disconnected
            | async_nats::connection::State::Pending => {}
        }
        drop((s, client, js));
        tokio::time::sleep(STREAM_CHECK).await;
    }
}

/// Whether a stream captures each of the endpoint's subjects: `Some(None)` if
/// all are, `Some(Some(subject))` for the first that is not, `None` when the
/// server could not say.
async fn streams_cover(s: &Shared, js: &jetstream::Context) -> Option<Option<String>> {
    use async_nats::jetstream::context::GetStreamByNameErrorKind as K;
    for subject in &s.subjects {
        let found = tokio::time::timeout(STREAM_CHECK, js.stream_by_subject(subject.clone())).await;
        match found {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if matches!(e.kind(), K::NotFound) => return Some(Some(subject.clone())),
            _ => return None,
        }
    }
    Some(None)
}

/// The error of a subject no stream captures.
pub(super) fn no_stream(subject: &str) -> Problem {
    (
        Unavailable::NoStream,
        format!(
            "no JetStream stream captures the subject \"{subject}\"; siphook does not create streams: add one (nats stream add) whose subjects include it"
        ),
    )
}

/// Why a connection attempt failed, in siphook's terms, with the servers tried
/// and the client's reason ("Connection refused"); never a credential, which
/// async-nats' connect errors do not carry.
fn connect_problem(e: &async_nats::ConnectError, servers: &str) -> Problem {
    use async_nats::ConnectErrorKind as K;
    match e.kind() {
        K::AuthorizationViolation | K::Authentication => (Unavailable::Auth, REFUSED.into()),
        _ => (
            Unavailable::Disconnected,
            format!("cannot connect to NATS at {servers}: {e}"),
        ),
    }
}

/// 100 ms, doubling, at most [`MAX_RECONNECT_DELAY`].
pub(super) fn reconnect_delay(attempts: usize) -> Duration {
    let shift = u32::try_from(attempts.min(8)).unwrap_or(8);
    Duration::from_millis(100u64 << shift).min(MAX_RECONNECT_DELAY)
}

/// Starts [`run`] again when async-nats has given up: the event callback sees
/// `MaxReconnects` and calls this with what it needs to start over.
pub(super) fn restart(shared: &Weak<Shared>, options: &Restart) {
    let Some(s) = shared.upgrade() else { return };
    *s.client.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let Some((o, servers, timeout)) = options.lock().unwrap_or_else(|e| e.into_inner()).clone()
    else {
        return;
    };
    tokio::spawn(run(o, servers, timeout, shared.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_to_two_seconds() {
        assert_eq!(reconnect_delay(0), Duration::from_millis(100));
        assert_eq!(reconnect_delay(3), Duration::from_millis(800));
        assert_eq!(reconnect_delay(50), MAX_RECONNECT_DELAY);
    }

    #[test]
    fn refused_credentials_are_told_apart_from_an_unreachable_server() {
        let auth = problem_of(
            &Event::ClientError(ClientError::Other("authorization violation".into())),
            None,
        );
        assert_eq!(auth.map(|p| p.0), Some(Unavailable::Auth));
        let io = problem_of(
            &Event::ClientError(ClientError::Other("IO error".into())),
            None,
        );
        assert_eq!(
            io,
            Some((
                Unavailable::Disconnected,
                "cannot connect to NATS: IO error".into()
            ))
        );
        assert_eq!(problem_of(&Event::Connected, io.clone()), None);
        assert_eq!(problem_of(&Event::SlowConsumer(1), io.clone()), io);
        let denied = problem_of(
            &Event::ServerError(ServerError::Other(
                "Permissions Violation for Publish to \"siphook.call.answered\"".into(),
            )),
            None,
        );
        assert_eq!(denied.map(|p| p.0), Some(Unavailable::Auth));
        // A missing stream outlives a reconnect: the watch clears it.
        let missing = Some(no_stream("s"));
        assert_eq!(problem_of(&Event::Connected, missing.clone()), missing);
    }
}
