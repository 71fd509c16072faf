//! A real `nats-server -js` for one test: a free loopback port, JetStream on a
//! temporary store directory, stopped and started again on the same port and
//! store to stage an outage. Skips where nats-server is missing, and fails when
//! CI demands the tools.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use tokio::process::{Child, Command};

use super::DEADLINE;
use super::stage::can_stage;

/// A running nats-server (killed when dropped).
pub struct NatsServer {
    pub port: u16,
    store: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts nats-server with JetStream under `dir`, plus `extra` arguments
    /// (`--user`, `--pass`); `None` when nats-server is not installed here.
    pub async fn start(dir: &Path, extra: &[&str]) -> Option<NatsServer> {
        let found = std::process::Command::new("nats-server")
            .arg("--version")
            .output();
        let problem = match found {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!("nats-server --version exited {}", o.status)),
            Err(e) => Some(format!(
                "nats-server not runnable ({e}); apt-get install nats-server"
            )),
        };
        if !can_stage("NATS JetStream", problem) {
            return None;
        }
        let mut s = NatsServer {
            port: super::free_port(false),
            store: dir.join("jetstream"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        s.restart().await;
        Some(s)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: an outage, not a goodbye) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts the server (again) on the same port and store, and waits until it
    /// accepts connections.
    pub async fn restart(&mut self) {
        self.stop().await;
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .args(&self.extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let started = tokio::time::Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(started.elapsed() < DEADLINE, "nats-server did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A JetStream context of a plain client (with `user`/`pass` when given).
    pub async fn jetstream(&self, auth: Option<(&str, &str)>) -> jetstream::Context {
        let mut opts = async_nats::ConnectOptions::new();
        if let Some((u, p)) = auth {
            opts = opts.user_and_password(u.into(), p.into());
        }
        self.jetstream_with(opts).await
    }

    /// A JetStream context of a client with these options (its credentials).
    pub async fn jetstream_with(&self, opts: async_nats::ConnectOptions) -> jetstream::Context {
        let started = tokio::time::Instant::now();
        loop {
            match opts.clone().connect(self.url()).await {
                Ok(c) => return jetstream::new(c),
                Err(e) => assert!(started.elapsed() < DEADLINE, "cannot connect: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Creates stream `name` capturing `subjects`, with a two-minute duplicate
/// window (JetStream's default, stated so the test says what it relies on).
pub async fn create_stream(js: &jetstream::Context, name: &str, subjects: &[&str]) {
    js.create_stream(jetstream::stream::Config {
        name: name.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .expect("stream created");
}

/// Every message of stream `name`, in stream order.
pub async fn messages(
    js: &jetstream::Context,
    name: &str,
) -> Vec<jetstream::message::StreamMessage> {
    let mut stream = js.get_stream(name).await.expect("stream exists");
    let last = stream
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        out.push(stream.get_raw_message(seq).await.expect("message"));
    }
    out
}

/// Polls stream `name` until it holds `n` messages, then returns them all.
pub async fn wait_messages(
    js: &jetstream::Context,
    name: &str,
    n: usize,
) -> Vec<jetstream::message::StreamMessage> {
    let started = tokio::time::Instant::now();
    loop {
        let mut stream = js.get_stream(name).await.expect("stream exists");
        let have = stream.info().await.expect("stream info").state.messages;
        if have as usize >= n {
            return messages(js, name).await;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "stream {name} holds {have} messages, wanted {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
