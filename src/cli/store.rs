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
        } => (config.clone(), endpoint.clone()),
    };
    let endpoint = endpoint.as_deref();
    let config = Config::load(&config)?;
    let replaying = matches!(action, Deadletters::Replay { .. });
    // A list may name an endpoint since removed from the file (its dead letters
    // stay in the outbox); a replay to one could never be sent.
    if replaying && let Some(name) = endpoint {
        configured(&config, name)?;
    }
    let outbox = open_outbox(&config)?;
    let dead = outbox.dead_letters(endpoint)?;
    match action {
        Deadletters::List { .. } => {
            for d in dead {
                println!("{}", serde_json::to_string(&d)?);
            }
        }
        Deadletters::Replay { mut ids, all, .. } => {
            anyhow::ensure!(
                all || !ids.is_empty(),
                "say which: --id ID (repeatable) or --all"
            );
            ids.sort_unstable();
            ids.dedup();
            let is_configured = |name: &str| config.endpoints.iter().any(|e| e.name == name);
            // Every id is checked before anything changes: a typo in one of
            // several must not leave the others half done and unreported.
            let unknown: Vec<String> = ids
                .iter()
                .filter(|id| !dead.iter().any(|d| d.offset == **id))
                .map(u64::to_string)
                .collect();
            anyhow::ensure!(
                unknown.is_empty(),
                "no such dead letter{}: {}; nothing was replayed (`siphook deadletters list` \
                 shows the ids)",
                endpoint
                    .map(|e| format!(" of endpoint {e}"))
                    .unwrap_or_default(),
                unknown.join(", ")
            );
            let chosen: Vec<_> = dead
                .iter()
                .filter(|d| all || ids.binary_search(&d.offset).is_ok())
                .collect();
            let unsendable: Vec<String> = chosen
                .iter()
                .filter(|d| !is_configured(&d.endpoint))
                .map(|d| format!("{} (endpoint {})", d.offset, d.endpoint))
                .collect();
            // Asked for by id, it is an error; under --all, those are left and said so.
            anyhow::ensure!(
                all || unsendable.is_empty(),
                "dead letters for endpoints that are not configured cannot be replayed: {}; \
                 nothing was replayed",
                unsendable.join(", ")
            );
            let now = Timestamp::now().millis();
            let mut replayed = Vec::new();
            for d in chosen.iter().filter(|d| is_configured(&d.endpoint)) {
                if outbox.replay(&d.endpoint, d.offset, now)? {
                    replayed.push(format!("{} ({})", d.offset, d.endpoint));
                }
            }
            flush(&outbox)?;
            if !unsendable.is_empty() {
                eprintln!(
                    "left {} dead letter(s) of endpoints that are not configured: {}",
                    unsendable.len(),
                    unsendable.join(", ")
                );
            }
            if replayed.is_empty() {
                println!("replayed 0 dead letters");
            } else {
                println!(
                    "replayed {} dead letter(s): {}; they are delivered on the next start",
                    replayed.len(),
                    replayed.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// Lifts a 410 pause.
pub fn endpoints(action: Endpoints) -> anyhow::Result<()> {
    let Endpoints::Resume { config, endpoint } = action;
    let config = Config::load(&config)?;
    // Checked first: "not paused" about a name that does not exist (a typo)
    // would send the operator looking in the wrong place.
    configured(&config, &endpoint)?;
    let outbox = open_outbox(&config)?;
    anyhow::ensure!(
        outbox.is_paused(&endpoint),
        "endpoint {endpoint} is not paused"
    );
    outbox.set_paused(&endpoint, false)?;
    flush(&outbox)?;
    println!("endpoint {endpoint} resumed; it is sent to again on the next start");
    Ok(())
}

/// An endpoint name the configuration has, or "no such endpoint" naming those it has.
fn configured(config: &Config, name: &str) -> anyhow::Result<()> {
    if config.endpoints.iter().any(|e| e.name == name) {
        return Ok(());
    }
    let names: Vec<&str> = config.endpoints.iter().map(|e| e.name.as_str()).collect();
    anyhow::bail!(
        "no such endpoint: {name} (configured: {})",
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    )
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
