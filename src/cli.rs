//! Command line: `serve` (the default), `migrate`, `clear-sessions`, `check-config`, the API
//! key helpers and the operator's commands (`pumping-*`, `events`). Each command loads the same
//! configuration the daemon would.

use clap::{Parser, Subcommand};
use std::io::BufRead;
use std::path::PathBuf;

use crate::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "verifyd",
    version,
    about = "Phone verification by SMS with a server-side session store"
)]
pub struct Cli {
    /// Configuration file (default: ./config.toml when it exists).
    #[arg(long, global = true, env = "VERIFYD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Delete expired sessions and finished verifications once, print how many.
    ClearSessions,
    /// Load and validate the configuration, print it with secrets redacted.
    CheckConfig {
        /// Print each effective setting with where it came from: the default, a file, a
        /// systemd credential or an environment variable.
        #[arg(long)]
        explain: bool,
    },
    /// Print the SHA-256 to put in `api.keys` for an API key (read from stdin when not given).
    HashApiKey { key: Option<String> },
    /// Make a new random API key; prints the key and its `api.keys` hash.
    GenApiKey,
    /// Write the API description (OpenAPI 3.1) that `GET /openapi.json` serves.
    Openapi {
        /// Where to write it (default: standard output).
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
    /// Print the SMS-pumping breaker of every country with a current window.
    PumpingStatus,
    /// Close the SMS-pumping breaker of a calling code (e.g. +86) and start a new window.
    PumpingReset {
        country: crate::country::CallingCode,
    },
    /// Webhook events in the outbox: list pending or dead ones, or redrive them.
    #[command(subcommand)]
    Events(EventsCommand),
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum EventsCommand {
    /// Print events waiting for delivery (or, with --dead, given up on), oldest first.
    List {
        #[arg(long)]
        dead: bool,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Deliver again, with a fresh retry period: one event by id, or every dead one.
    Redrive {
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        id: Option<String>,
        #[arg(long)]
        all_dead: bool,
    },
}

/// Parses arguments and runs the command; the error, if any, is for `main` to print.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.clone().unwrap_or(Command::Serve);
    match command {
        Command::HashApiKey { key } => {
            let key = match key {
                Some(k) => k,
                None => std::io::stdin()
                    .lock()
                    .lines()
                    .next()
                    .transpose()?
                    .unwrap_or_default(),
            };
            anyhow::ensure!(!key.trim().is_empty(), "no API key given");
            println!("{}", crate::app::hash_api_key(&key));
            return Ok(());
        }
        Command::GenApiKey => {
            let key = crate::session::SessionKey::generate();
            println!("key:    {}", key.as_str());
            println!("sha256: {}", crate::app::hash_api_key(key.as_str()));
            return Ok(());
        }
        Command::Openapi { output } => {
            let doc = crate::http::openapi::document();
            match output {
                Some(path) => std::fs::write(&path, doc)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                None => print!("{doc}"),
            }
            return Ok(());
        }
        _ => {}
    }
    let (path, explicit) = config_path(&cli);
    let figment = Config::figment(path.as_deref(), explicit)?;
    let config = Config::from_figment(figment.clone())?;
    if let Command::CheckConfig { explain } = command {
        for note in &config.deprecations {
            eprintln!("warning: {note}");
        }
        if explain {
            print!("{}", crate::config::explain(&figment, &config));
        } else {
            print!("{}", toml::to_string_pretty(&config)?);
        }
        eprintln!("configuration OK");
        return Ok(());
    }
    crate::logging::init(&config.log);
    // Once per start: configuration is read once, so each note is logged once.
    for note in &config.deprecations {
        tracing::warn!("{note}");
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match command {
            Command::Serve => serve(config).await,
            Command::Migrate => {
                crate::app::open_store(&config)?.migrate().await?;
                println!("migrations applied");
                Ok(())
            }
            Command::ClearSessions => {
                let store = crate::app::open_store(&config)?;
                let report = crate::sweeper::sweep_once(
                    store.as_ref(),
                    config.sweeper.batch_size,
                    config.events.keep_dead.duration(),
                )
                .await?;
                if report.ran {
                    println!(
                        "deleted {} expired sessions, {} finished verifications and {} dead events",
                        report.sessions, report.verifications, report.dead_events
                    );
                } else {
                    println!("another verifyd is sweeping this database right now; nothing done");
                }
                Ok(())
            }
            Command::PumpingStatus => {
                let store = crate::app::open_store(&config)?;
                for p in store.pumping_states().await? {
                    println!(
                        "{}\tsends={}\tapprovals={}\t{}\twindow ends in {} s",
                        p.country,
                        p.sends,
                        p.approvals,
                        if p.tripped { "TRIPPED" } else { "ok" },
                        crate::time::secs_until(p.window_ends, std::time::SystemTime::now())
                    );
                }
                Ok(())
            }
            Command::PumpingReset { country } => {
                let store = crate::app::open_store(&config)?;
                if store.pumping_reset(&country.to_string()).await? {
                    tracing::warn!(%country, "SMS pumping breaker reset by the operator");
                    println!("breaker for {country} reset");
                } else {
                    println!("no breaker window for {country}; nothing to reset");
                }
                Ok(())
            }
            Command::Events(c) => events(&config, c).await,
            _ => unreachable!("handled above"),
        }
    })
}

async fn events(config: &Config, command: EventsCommand) -> anyhow::Result<()> {
    use crate::store::events::Redrive;
    let store = crate::app::open_store(config)?;
    match command {
        EventsCommand::List { dead, limit } => {
            let now = std::time::SystemTime::now();
            for e in store.list_events(dead, limit).await? {
                let when = match e.dead_at {
                    Some(t) => format!("dead since {}", crate::time::rfc3339(t)),
                    None => format!("next try in {} s", crate::time::secs_until(e.next_at, now)),
                };
                println!(
                    "{}\t{}\t{}\tattempts={}\t{}\t{}",
                    e.id,
                    e.kind,
                    crate::time::rfc3339(e.created_at),
                    e.attempts,
                    when,
                    e.last_error.as_deref().unwrap_or("-")
                );
            }
        }
        EventsCommand::Redrive { id, all_dead } => {
            let which = match id {
                Some(id) if !all_dead => Redrive::Id(id),
                _ => Redrive::AllDead,
            };
            let n = store.redrive_events(&which).await?;
            if let Redrive::Id(id) = &which {
                anyhow::ensure!(n > 0, "no event {id:?} in the outbox");
            }
            tracing::info!(events = n, "events redriven by the operator");
            println!("{n} events will be delivered again");
        }
    }
    Ok(())
}

/// The configuration file to read, and whether it was asked for (then it must exist).
fn config_path(cli: &Cli) -> (Option<PathBuf>, bool) {
    match &cli.config {
        Some(p) => (Some(p.clone()), true),
        None => {
            let default = PathBuf::from("config.toml");
            (default.exists().then_some(default), false)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let notifier = std::sync::Arc::new(crate::systemd::Notifier::from_env());
    notifier.notify("STATUS=starting: opening the store and applying migrations");
    let daemon = match crate::daemon::Daemon::start(config).await {
        Ok(d) => d,
        Err(e) => {
            notifier.notify(&format!("STATUS=failed to start: {e}"));
            return Err(e);
        }
    };
    let stop = daemon.stopper();
    let watchdog = notifier.clone().spawn_watchdog(stop.clone());
    notifier.notify(&format!("READY=1\nSTATUS=serving on {}", daemon.addr));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = stop.cancelled() => {}
    }
    notifier.notify("STOPPING=1\nSTATUS=finishing in-flight requests");
    daemon.stop().await;
    if let Some(w) = watchdog {
        let _ = w.await;
    }
    Ok(())
}
