//! The load generator: starts calls at a fixed rate from one loopback socket and
//! records when each message left.
//!
//! Pacing: a tokio interval ticks every `1/rate` (at least every millisecond); at
//! each tick the calls due by then (`elapsed × rate`) are started, so the average
//! rate holds even when ticks are late or shorter than the timer's resolution. A
//! call's first half (up to the ACK, or its whole flow) goes out when it starts; the
//! second half (BYE, or the REFER …) after `hold`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::MissedTickBehavior;

use super::flow::{CallIds, EventType, MAX_STEPS, Profile};
use super::{BenchError, Transport};

/// Send time of a message that was never sent.
pub(crate) const NOT_SENT: u64 = u64::MAX;

/// What to send, where, and how fast.
pub(crate) struct Plan<'a> {
    pub(crate) transport: Transport,
    pub(crate) target: SocketAddr,
    pub(crate) rate: f64,
    pub(crate) calls: usize,
    pub(crate) hold: Duration,
    pub(crate) profile: Profile,
    pub(crate) prefix: &'a str,
    /// The instant all times of the run are measured from.
    pub(crate) base: Instant,
}

/// What the generator did.
#[derive(Debug)]
pub(crate) struct Sent {
    /// Send time of each call's each step, nanoseconds since the base instant,
    /// [`NOT_SENT`] if it was not sent; `MAX_STEPS` per call.
    pub(crate) times: Vec<u64>,
    /// Calls started (their INVITE sent).
    pub(crate) started: usize,
    /// Messages sent.
    pub(crate) messages: usize,
    /// Sends that failed (the message counts as not sent).
    pub(crate) send_errors: u64,
    /// Start of the first call and of the last one, nanoseconds since base.
    pub(crate) first_start: u64,
    pub(crate) last_start: u64,
    /// The generator gave up before starting every call (it could not keep the pace).
    pub(crate) truncated: bool,
}

impl Sent {
    /// When call `call`'s step `step` was sent.
    pub(crate) fn time(&self, call: usize, step: usize) -> Option<u64> {
        self.times
            .get(call * MAX_STEPS + step)
            .copied()
            .filter(|&t| t != NOT_SENT)
    }

    /// Whether call `call` should emit an event of type `t`: its kind emits one, and
    /// the INVITE and the message that causes it (none for a timer's) were sent.
    pub(crate) fn expects(&self, profile: Profile, call: usize, t: EventType) -> bool {
        match profile.kind(call).cause_of(t) {
            Some(cause) => {
                call < self.started
                    && self.time(call, 0).is_some()
                    && cause.is_none_or(|step| self.time(call, step).is_some())
            }
            None => false,
        }
    }

    /// How many events the calls started should emit.
    pub(crate) fn expected_events(&self, profile: Profile) -> usize {
        (0..self.started)
            .map(|c| {
                EventType::ALL
                    .into_iter()
                    .filter(|&t| self.expects(profile, c, t))
                    .count()
            })
            .sum()
    }

    /// Calls started per second, from the first start to the last.
    pub(crate) fn achieved_rate(&self) -> f64 {
        let span = self.last_start.saturating_sub(self.first_start) as f64 / 1e9;
        if self.started < 2 || span <= 0.0 {
            0.0
        } else {
            (self.started - 1) as f64 / span
        }
    }
}

enum Wire {
    Udp(UdpSocket, SocketAddr),
    Hep(UdpSocket, SocketAddr, SocketAddr),
    Tcp(TcpStream),
}

impl Wire {
    async fn open(transport: Transport, target: SocketAddr) -> Result<Wire, BenchError> {
        let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        let bind_err = |source| BenchError::Bind {
            what: "generator",
            addr: any,
            source,
        };
        Ok(match transport {
            Transport::Udp => Wire::Udp(UdpSocket::bind(any).await.map_err(bind_err)?, target),
            Transport::Hep => {
                let socket = UdpSocket::bind(any).await.map_err(bind_err)?;
                let local = socket.local_addr().map_err(bind_err)?;
                Wire::Hep(socket, target, local)
            }
            Transport::Tcp => {
                let stream =
                    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target))
                        .await
                        .map_err(|_| BenchError::Connect {
                            addr: target,
                            source: std::io::ErrorKind::TimedOut.into(),
                        })?
                        .map_err(|source| BenchError::Connect {
                            addr: target,
                            source,
                        })?;
                let _ = stream.set_nodelay(true);
                Wire::Tcp(stream)
            }
        })
    }

    async fn send(&mut self, msg: &[u8]) -> std::io::Result<()> {
        match self {
            Wire::Udp(socket, target) => socket.send_to(msg, *target).await.map(drop),
            Wire::Hep(socket, target, local) => {
                let packet = crate::sip::hep::HepBuilder::new()
                    .sip(17, *local, *target, crate::vocab::Timestamp::now(), msg)
                    .build();
                socket.send_to(&packet, *target).await.map(drop)
            }
            Wire::Tcp(stream) => stream.write_all(msg).await,
        }
    }
}

fn since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(NOT_SENT - 1)
}

/// Sends the steps of one call's first half (`after_hold == false`) or second.
async fn send_half(
    wire: &mut Wire,
    plan: &Plan<'_>,
    sent: &mut Sent,
    call: usize,
    after_hold: bool,
) -> Result<(), BenchError> {
    let ids = CallIds::new(plan.prefix, call);
    let steps = plan.profile.kind(call).steps();
    for (i, step) in steps.iter().enumerate() {
        if step.after_hold != after_hold {
            continue;
        }
        let msg = step.render(&ids);
        let at = since(plan.base);
        match wire.send(msg.as_bytes()).await {
            Ok(()) => {
                sent.times[call * MAX_STEPS + i] = at;
                sent.messages += 1;
            }
            // A broken stream loses everything after it: stop the run.
            Err(source) if matches!(wire, Wire::Tcp(_)) => {
                return Err(BenchError::Send {
                    addr: plan.target,
                    source,
                });
            }
            Err(_) => sent.send_errors += 1,
        }
    }
    Ok(())
}

/// Plays `plan.calls` calls at `plan.rate`, then the held second halves.
pub(crate) async fn run(plan: &Plan<'_>) -> Result<Sent, BenchError> {
    let mut wire = Wire::open(plan.transport, plan.target).await?;
    let mut sent = Sent {
        times: vec![NOT_SENT; plan.calls * MAX_STEPS],
        started: 0,
        messages: 0,
        send_errors: 0,
        first_start: 0,
        last_start: 0,
        truncated: false,
    };
    let period = Duration::from_secs_f64(1.0 / plan.rate).max(Duration::from_millis(1));
    let planned = Duration::from_secs_f64(plan.calls as f64 / plan.rate);
    // However slow the sending, the generator stops by then.
    let give_up = planned + planned / 2 + plan.hold + Duration::from_secs(10);
    let mut held: VecDeque<(u64, usize)> = VecDeque::new();
    let hold_ns = u64::try_from(plan.hold.as_nanos()).unwrap_or(u64::MAX / 2);
    let start = Instant::now();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let elapsed = start.elapsed();
        if elapsed > give_up {
            sent.truncated = sent.started < plan.calls || !held.is_empty();
            break;
        }
        let due = ((elapsed.as_secs_f64() * plan.rate) as usize + 1).min(plan.calls);
        while sent.started < due {
            let call = sent.started;
            let at = since(plan.base);
            if call == 0 {
                sent.first_start = at;
            }
            sent.last_start = at;
            sent.started += 1;
            send_half(&mut wire, plan, &mut sent, call, false).await?;
            if plan.profile.kind(call).steps().iter().any(|s| s.after_hold) {
                held.push_back((at.saturating_add(hold_ns), call));
            }
        }
        let now = since(plan.base);
        while let Some(&(due_at, call)) = held.front() {
            if due_at > now {
                break;
            }
            held.pop_front();
            send_half(&mut wire, plan, &mut sent, call, true).await?;
        }
        if sent.started == plan.calls && held.is_empty() {
            break;
        }
    }
    if let Wire::Tcp(stream) = &mut wire {
        let _ = stream.flush().await;
    }
    Ok(sent)
}
