//! The real `siphook run --print-events` as a child process: its committed events
//! (stdout) and its log (stderr) line by line, for tests that kill, restart or
//! starve the binary itself.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UdpSocket;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{CallSpec, DEADLINE};

/// A running siphook. Killed (SIGKILL) if dropped while running.
pub struct Siphook {
    pub child: Child,
    /// Events as printed after their commit.
    pub committed: mpsc::UnboundedReceiver<Value>,
    /// Log lines not yet looked at by [`Siphook::wait_log`].
    log: mpsc::UnboundedReceiver<String>,
    /// Every log line so far.
    all_log: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Siphook {
    /// Starts `siphook run --config CONFIG --print-events`; nothing from the test's
    /// environment (RUST_LOG, systemd variables) decides what it does.
    pub fn spawn(config: &Path) -> Siphook {
        Siphook::spawn_with(Command::new(env!("CARGO_BIN_EXE_siphook")), config)
    }

    /// Like [`Siphook::spawn`] through a prepared command (a wrapper such as
    /// `unshare` whose arguments end where siphook's begin).
    pub fn spawn_with(mut cmd: Command, config: &Path) -> Siphook {
        cmd.args(["run", "--config"])
            .arg(config)
            .arg("--print-events")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("siphook starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (event_tx, committed) = mpsc::unbounded_channel();
        let (log_tx, log) = mpsc::unbounded_channel();
        let all_log: Arc<Mutex<Vec<String>>> = Arc::default();
        let all = all_log.clone();
        let readers = vec![
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    // A SIGKILL can cut the last line short: only whole JSON counts.
                    if let Ok(v) = serde_json::from_str(&line) {
                        let _ = event_tx.send(v);
                    }
                }
            }),
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    all.lock().unwrap().push(line.clone());
                    let _ = log_tx.send(line);
                }
            }),
        ];
        Siphook {
            child,
            committed,
            log,
            all_log,
            readers,
        }
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        self.all_log.lock().unwrap().join("\n")
    }

    /// The next printed (committed) event; fails at the deadline or if siphook exited.
    pub async fn next_committed(&mut self) -> Value {
        tokio::time::timeout(DEADLINE, self.committed.recv())
            .await
            .unwrap_or_else(|_| panic!("no event committed in time:\n{}", self.log_text()))
            .unwrap_or_else(|| panic!("siphook's stdout closed:\n{}", self.log_text()))
    }

    /// The next log line containing `needle`; fails at the deadline.
    pub async fn wait_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.log.recv()).await {
                Ok(Some(line)) if line.contains(needle) => return line,
                Ok(Some(_)) => {}
                Ok(None) => panic!("log ended without {needle:?}:\n{}", self.log_text()),
                Err(_) => panic!("log never showed {needle:?}:\n{}", self.log_text()),
            }
        }
    }

    /// Retransmits a fresh INVITE named `name` until siphook has committed its
    /// `call.initiated`: proves it listens and commits. Events committed before
    /// the probe's (none on a fresh start) are returned.
    pub async fn wait_ready(&mut self, sock: &UdpSocket, target: &str, name: &str) -> Vec<Value> {
        let probe = CallSpec::new(name);
        let mut before = Vec::new();
        for _ in 0..200 {
            sock.send_to(probe.invite(1).as_bytes(), target)
                .await
                .unwrap();
            while let Ok(Some(v)) =
                tokio::time::timeout(Duration::from_millis(100), self.committed.recv()).await
            {
                if v["call"]["sip_call_id"] == name {
                    return before;
                }
                before.push(v);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("siphook exited ({status}):\n{}", self.log_text());
            }
        }
        panic!("siphook did not start listening:\n{}", self.log_text());
    }

    /// Waits (bounded) for the process to exit, then for its output to be read.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("siphook did not exit in time:\n{}", self.log_text()))
            .expect("wait for siphook");
        for r in std::mem::take(&mut self.readers) {
            tokio::time::timeout(DEADLINE, r)
                .await
                .expect("siphook's output closes after it exits")
                .expect("output reader");
        }
        status
    }

    /// SIGKILL, then waits for the exit and the rest of the output; returns every
    /// event printed (committed) that was not taken yet.
    pub async fn kill9(&mut self) -> Vec<Value> {
        let _ = self.child.start_kill();
        self.wait_exit().await;
        let mut rest = Vec::new();
        while let Ok(v) = self.committed.try_recv() {
            rest.push(v);
        }
        rest
    }
}
