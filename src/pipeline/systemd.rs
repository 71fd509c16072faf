//! The systemd notification protocol (`Type=notify`): READY once siphook can take
//! traffic, WATCHDOG while its pipeline answers, RELOADING/STOPPING around those
//! transitions. Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    // The manager may be gone (a test harness, systemd restarting): nothing to do.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Listeners are bound and the outbox is open.
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("running")]);
}

/// A configuration reload begins; systemd wants the monotonic time with it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown begins.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The pipeline answered: systemd's watchdog timer starts over.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to prove liveness (half the watchdog timeout), when the service
/// manager asked for a watchdog: `WATCHDOG_USEC` set and `WATCHDOG_PID`, if set,
/// naming this process, as sd_watchdog_enabled(3) reads them (sd-notify 0.4
/// insists on `WATCHDOG_PID`, so this reads the variables itself).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC")
        .ok()?
        .parse()
        .ok()
        .filter(|&u| u > 0)?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}
