//! `siphook deadletters …` and `siphook endpoints resume`: operator commands on
//! a stopped siphook's outbox. What they change is made durable before they exit
//! and goes out on the next start.

use std::path::PathBuf;

use anyhow::Context;
use siphook::config::Config;
use siphook::outbox::Outbox;
use siphook::vocab::Timestamp;

/// `deadletters`' actions.
#[derive(clap::Subcommand)]
pub enum Deadletters {
    /// Print dead letters as JSON lines.
    List {
        /// Configuration file (for the outbox path).
        #[arg(long, short)]
        config: PathBuf,
        /// Only this endpoint's.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Move dead letters back to pending; the next start delivers them.
    Replay {
        /// Configuration file (for the outbox path).
        #[arg(long, short)]
        config: PathBuf,
        /// Only this endpoint's.
        #[arg(long)]
        endpoint: Option<String>,
        /// Dead-letter ids (the `offset` that `list` prints); repeatable.
        #[arg(long = "id", conflicts_with = "all")]
        ids: Vec<u64>,
        /// Every dead letter (of `--endpoint`, if given).
        #[arg(long)]
        all: bool,
    },
}

/// `endpoints`' actions.
#[derive(clap::Subcommand)]
pub enum Endpoints {
    /// Resume an endpoint paused by a 410 Gone.
    Resume {
        /// Configuration file (for the outbox path).
        #[arg(long, short)]
        config: PathBuf,
        /// Endpoint name.
        endpoint: String,
    },
}

/// Lists dead letters, or moves them back to pending.
pub fn deadletters(action: Deadletters) -> anyhow::Result<()> {
    let (config, endpoint) = match &action {
        Deadletters::List { config, endpoint }
        | Deadletters::Replay {
            config, endpoint, ..
        } => (config, endpoint.as_deref()),
    };
    let config = Config::load(config)?;
    let outbox = open_outbox(&config)?;
    let dead = outbox.dead_letters(endpoint)?;
    match action {
        Deadletters::List { .. } => {
            for d in dead {
                println!("{}", serde_json::to_string(&d)?);
            }
        }
        Deadletters::Replay { ids, all, .. } => {
            anyhow::ensure!(
                all || !ids.is_empty(),
                "say which: --id ID (repeatable) or --all"
            );
            let now = Timestamp::now().millis();
            let mut replayed = 0;
            let configured = |name: &str| config.endpoints.iter().any(|e| e.name == name);
            for d in dead.iter().filter(|d| all || ids.contains(&d.offset)) {
                // Nothing would ever send a delivery for an endpoint that is not configured.
                if !configured(&d.endpoint) {
                    eprintln!(
                        "skipped {} (endpoint {} is not configured)",
                        d.offset, d.endpoint
                    );
                    continue;
                }
                if outbox.replay(&d.endpoint, d.offset, now)? {
                    replayed += 1;
                }
            }
            let missing: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| !dead.iter().any(|d| d.offset == *id))
                .collect();
            anyhow::ensure!(missing.is_empty(), "no such dead letter: {missing:?}");
            flush(&outbox)?;
            println!("replayed {replayed} dead letter(s); they are delivered on the next start");
        }
    }
    Ok(())
}

/// Lifts a 410 pause.
pub fn endpoints(action: Endpoints) -> anyhow::Result<()> {
    let Endpoints::Resume { config, endpoint } = action;
    let outbox = open_outbox(&Config::load(&config)?)?;
    anyhow::ensure!(
        outbox.is_paused(&endpoint),
        "endpoint {endpoint} is not paused"
    );
    outbox.set_paused(&endpoint, false)?;
    flush(&outbox)?;
    println!("endpoint {endpoint} resumed; it is sent to again on the next start");
    Ok(())
}

fn open_outbox(config: &Config) -> anyhow::Result<Outbox> {
    Outbox::open(&config.outbox.path, config.outbox.max_bytes).with_context(|| {
        format!(
            "opening the outbox at {} (is siphook still running?)",
            config.outbox.path.display()
        )
    })
}

/// Makes a change durable before the command exits.
fn flush(outbox: &Outbox) -> anyhow::Result<()> {
    outbox.sync()?;
    Ok(())
}
