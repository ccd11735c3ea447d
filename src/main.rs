//! The `courant` binary: the server (`dev`, `serve`), the provider sandbox, and the ops CLI. The
//! pieces live in the library (`src/lib.rs`); this file is the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: measurably faster than the system allocator for courant's many small, short-lived
/// allocations (the simulator runs about 1.3× faster with it; see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use courant::{Role, cli, config, wiring};

/// courant: a durable notification orchestrator.
#[derive(Debug, Parser)]
#[command(name = "courant", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: cli::Client,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process with no external service: API, workers, the provider
    /// sandbox, an in-memory store. Not durable: for trying courant out.
    Dev {
        /// The API address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The templates directory.
        #[arg(long, default_value = "templates")]
        templates: PathBuf,
        /// Do not submit the demo notifications at start-up.
        #[arg(long)]
        no_demo: bool,
    },
    /// Run the API and/or workers against Redis (production).
    Serve {
        /// A TOML configuration file.
        #[arg(long, env = "COURANT_CONFIG")]
        config: Option<PathBuf>,
        /// The Redis URL (overrides the configuration file).
        #[arg(long, env = "COURANT_REDIS_URL", hide_env_values = true)]
        redis: Option<String>,
        /// What this process runs.
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
        /// The API address (overrides the configuration file).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run the provider sandbox: local SendGrid, Amazon SES, Twilio, Vonage, FCM, APNs and Slack
    /// look-alikes and a receiver that verifies signed webhooks.
    Sandbox {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        /// A TOML file with the sandbox's latency and failure settings.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Submit one notification.
    Send(cli::Send),
    /// Show a notification's state.
    Status {
        /// The notification id.
        id: String,
    },
    /// Show a notification's history as a timeline.
    History {
        /// The notification id.
        id: String,
    },
    /// Explain why a notification is where it is: not sent, late, sent by another channel,
    /// possibly sent twice, dead-lettered; from its recorded decisions and their data.
    Explain {
        /// The notification id.
        id: String,
    },
    /// Search notifications, most recently updated first: by state, channel, provider,
    /// category, recipient and last-update time, a page at a time.
    List(cli::ListArgs),
    /// The dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: cli::DlqCommand,
    },
    /// The provider circuit breakers of every live worker: state, since when, the failure rate
    /// of the latest calls, failures in a row (as each worker's latest heartbeat reported them).
    Breakers,
    /// The shared wake-up queue (ready, due, scheduled, in flight, parked, overdue,
    /// dead-lettered, lag) and the workers heartbeating into it.
    Queues,
    /// Your tenant's delivery statistics over a window, by channel and provider, with latency
    /// percentiles.
    Stats(cli::StatsArgs),
    /// Follow transitions live as they are committed, one line each (`--json`: one JSON object
    /// per line), until Ctrl-C or `--count` of them. Reconnects when the connection drops.
    Tail(cli::TailArgs),
    /// Try a notification again now: a dead-lettered one is replayed (as `dlq replay --id ID
    /// --yes`), one waiting on a retry backoff, a circuit breaker or a rate wait goes now. Quiet
    /// hours and opt-outs still hold. Exit code 1 when it cannot be retried (the reason is
    /// printed), 3 when there is no such notification.
    Retry {
        /// The notification's id.
        id: String,
    },
    /// Cancel a notification that has not reached a provider yet.
    Cancel {
        /// The notification id.
        id: String,
    },
    /// Run the deterministic simulator: the real lifecycle under injected faults, on virtual
    /// time, from a seed. Exits 1 when an invariant is violated.
    Simulate {
        /// The seed to run.
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// A range of seeds to run, `A..B` (B excluded).
        #[arg(long)]
        seeds: Option<String>,
        /// Notifications per run.
        #[arg(long, default_value_t = 1_000)]
        notifications: usize,
        /// Fault profile: none, swarm (each seed turns a different subset on) or all.
        #[arg(long, default_value = "swarm")]
        faults: String,
        /// Run a scenario instead of the random workload: `outage` (the only email provider
        /// fails every call for 60 s under a steady 40 notifications a second).
        #[arg(long)]
        scenario: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an API key for a tenant in Redis and print it (shown once).
    Create {
        /// The tenant the key acts for.
        #[arg(long)]
        tenant: String,
        /// The Redis URL.
        #[arg(long, env = "COURANT_REDIS_URL", hide_env_values = true)]
        redis: Option<String>,
        /// A TOML configuration file (for the Redis URL).
        #[arg(long, env = "COURANT_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a configuration file and explain what is wrong.
    Check {
        /// The file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve`'s file is read first: its `[telemetry]` section sets up logging.
    let serve_config = match &cli.command {
        Command::Serve { config: Some(path), .. } => match config::Config::load(path) {
            Ok(config) => Some(config),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    // Before the runtime: the span exporter's blocking HTTP client may not be built on one.
    let telemetry = match start_logging(&cli, serve_config.as_ref()) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli, serve_config));
    // The runtime first, so that the spans of tasks it cancels close and leave with the rest.
    drop(runtime);
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    code
}

/// Logs for the server commands (the CLI commands print their own messages), with span export
/// for `dev` and `serve` when configured (never for the sandbox, which stands in for providers).
fn start_logging(
    cli: &Cli,
    serve_config: Option<&config::Config>,
) -> anyhow::Result<Option<courant::telemetry::Telemetry>> {
    let json = matches!(cli.log_format, LogFormat::Json);
    let file = serve_config.map(|c| c.telemetry.clone()).unwrap_or_default();
    let export = match &cli.command {
        Command::Dev { .. } | Command::Serve { .. } => Some(&file),
        Command::Sandbox { .. } => None,
        _ => return Ok(None),
    };
    courant::telemetry::init(json, export).map(Some)
}

async fn run(cli: Cli, serve_config: Option<config::Config>) -> ExitCode {
    let client = cli.client.clone();
    let outcome: Result<(), cli::Failure> = match cli.command {
        Command::Dev { listen, templates, no_demo } => {
            server(wiring::dev(listen, templates, !no_demo).await)
        }
        Command::Serve { config: _, redis, role, listen } => {
            let config = serve_config.unwrap_or_default();
            server(wiring::serve(config, redis, role, listen).await)
        }
        Command::Sandbox { listen, config } => server(wiring::sandbox(listen, config).await),
        Command::Keys { command: KeysCommand::Create { tenant, redis, config } } => {
            match wiring::create_key(&tenant, redis, config).await {
                Ok(key) => cli::key_created(&client, &tenant, &key),
                Err(e) => server(Err(e)),
            }
        }
        Command::Config { command: ConfigCommand::Check { file } } => {
            cli::config_check(&client, &file)
        }
        Command::Send(send) => cli::send(&client, &send).await,
        Command::Status { id } => cli::status(&client, &id).await,
        Command::History { id } => cli::history(&client, &id).await,
        Command::Explain { id } => cli::explain(&client, &id).await,
        Command::List(args) => cli::list(&client, &args).await,
        Command::Dlq { command } => cli::dlq(&client, &command).await,
        Command::Cancel { id } => cli::cancel(&client, &id).await,
        Command::Retry { id } => cli::retry(&client, &id).await,
        Command::Breakers => cli::breakers(&client).await,
        Command::Queues => cli::queues(&client).await,
        Command::Stats(args) => cli::stats(&client, &args).await,
        Command::Tail(args) => cli::tail(&client, &args).await,
        Command::Simulate { seed, seeds, notifications, faults, scenario } => {
            courant::simulate::command(
                seed,
                seeds.as_deref(),
                notifications,
                &faults,
                scenario.as_deref(),
                client.json,
            )
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if client.json {
                let error = serde_json::json!({
                    "error": { "exit_code": failure.code, "message": failure.message }
                });
                eprintln!("{error}");
            } else {
                eprintln!("error: {}", failure.message);
            }
            ExitCode::from(u8::try_from(failure.code).unwrap_or(1))
        }
    }
}

fn server(result: anyhow::Result<()>) -> Result<(), cli::Failure> {
    result.map_err(|e| cli::Failure { code: 1, message: format!("{e:#}") })
}
