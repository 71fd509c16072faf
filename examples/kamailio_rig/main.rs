//! The helper binary of the Kamailio comparison rig (benches/kamailio-rig/run.sh):
//! `receive` is the one webhook endpoint both systems post to, and `analyse` turns
//! a run's loopback capture, the endpoint's arrival log and SIPp's statistics into
//! the per-system latency, missing/duplicate and call-harm figures.
//!
//! An example rather than a `siphook bench` mode: it needs a Kamailio, SIPp and a
//! capture, which only the rig's script sets up.

mod analyse;
mod calls;
mod receiver;
mod summary;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Receiver and analyser of benches/kamailio-rig")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The webhook endpoint: records when each POST fully arrived (wall clock, the
    /// capture's clock) until SIGTERM/SIGINT.
    Receive(receiver::ReceiveArgs),
    /// One table over several runs' results.
    Summary(summary::SummaryArgs),
    /// Exits 0 once the proxy at `addr` answers an OPTIONS ping within 300 ms
    /// (the rig's readiness probe; Kamailio answers it without tracing it).
    Ping {
        /// The proxy (loopback).
        addr: std::net::SocketAddr,
    },
    /// Matches a run's webhooks to the SIP messages that caused them.
    Analyse(analyse::AnalyseArgs),
}

/// Ports of the rig, shared by both commands' arguments.
#[derive(clap::Args, Clone, Copy)]
struct Ports {
    /// The SIPp caller's port.
    #[arg(long)]
    uac_port: u16,
    /// Kamailio's port.
    #[arg(long)]
    proxy_port: u16,
    /// The SIPp callee's port.
    #[arg(long)]
    uas_port: u16,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Receive(args) => {
            if !args.listen.ip().is_loopback() {
                anyhow::bail!("the rig stays on 127.0.0.0/8");
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(receiver::run(args))
        }
        Cmd::Analyse(args) => analyse::run(&args),
        Cmd::Ping { addr } => ping(addr),
        Cmd::Summary(args) => summary::run(&args),
    }
}

fn ping(proxy: std::net::SocketAddr) -> anyhow::Result<()> {
    if !proxy.ip().is_loopback() {
        anyhow::bail!("the rig stays on 127.0.0.0/8");
    }
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(std::time::Duration::from_millis(300)))?;
    let me = sock.local_addr()?;
    let msg = format!(
        "OPTIONS sip:{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-rigping\r\nFrom: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:{proxy}>\r\nCall-ID: rig-probe-{port}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        port = me.port()
    );
    sock.send_to(msg.as_bytes(), proxy)?;
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf)?;
    if buf[..n].starts_with(b"SIP/2.0 200") {
        Ok(())
    } else {
        anyhow::bail!("the proxy did not answer 200")
    }
}

/// A path argument's display form, for error context.
fn shown(p: &std::path::Path) -> String {
    p.display().to_string()
}
