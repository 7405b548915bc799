//! The `orderwatch` command: parses the CLI, loads the config, installs signal handlers and
//! calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Catches orders stuck in a status or lost between systems; exports metrics; alerts on-call.
#[derive(Parser)]
#[command(name = "orderwatch", version, about)]
struct Cli {
    /// Config file (default: $ORDERWATCH_CONFIG, else /etc/orderwatch/orderwatch.yaml).
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run,
    /// Validate the config and rules; unless --offline, also reach every source and prepare
    /// every rule's SQL.
    Check {
        /// Do not connect to the databases.
        #[arg(long)]
        offline: bool,
    },
    /// Evaluate the rules once and print the findings. Exit code: 0 none, 1 found, 2 error.
    Once {
        /// Only this rule (repeatable).
        #[arg(long = "rule")]
        rules: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Run the whole daemon on an embedded throwaway PostgreSQL with realistic orders.
    Demo {
        /// HTTP listen address of the demo daemon.
        #[arg(long, default_value = "127.0.0.1:9187")]
        listen: String,
        /// Number of orders to generate.
        #[arg(long, default_value_t = 100_000)]
        orders: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORDERWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn load(cli: Option<PathBuf>) -> Result<orderwatch::config::Loaded, ExitCode> {
    let path = orderwatch::config::default_config_path(cli);
    let loaded = orderwatch::config::load(&path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    Ok(loaded)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Run => {
            let loaded = match load(cli.config) {
                Ok(l) => l,
                Err(c) => return c,
            };
            match orderwatch::engine::run(loaded, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("orderwatch: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Check { offline } => {
            let loaded = match load(cli.config) {
                Ok(l) => l,
                Err(c) => return c,
            };
            let n_rules = loaded.rules.len();
            if offline {
                println!(
                    "{}: OK ({} sources, {n_rules} rules; databases not contacted)",
                    loaded.path.display(),
                    loaded.config.sources.len()
                );
                return ExitCode::SUCCESS;
            }
            match orderwatch::engine::check_online(&loaded).await {
                Ok(lines) => {
                    let mut failed = false;
                    for (ok, line) in lines {
                        failed |= !ok;
                        println!("{} {line}", if ok { "ok  " } else { "FAIL" });
                    }
                    if failed {
                        ExitCode::from(2)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("orderwatch: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Once { rules, format } => {
            let loaded = match load(cli.config) {
                Ok(l) => l,
                Err(c) => return c,
            };
            let unknown: Vec<&String> = rules
                .iter()
                .filter(|r| !loaded.rules.iter().any(|(_, c)| &c.name.value == *r))
                .collect();
            if !unknown.is_empty() {
                eprintln!(
                    "orderwatch: unknown rule(s): {}",
                    unknown
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return ExitCode::from(2);
            }
            let results = match orderwatch::engine::evaluate_once(&loaded, &rules).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("orderwatch: {e}");
                    return ExitCode::from(2);
                }
            };
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&orderwatch::report::build(&results))
                        .expect("serializable")
                ),
                Format::Table => print!("{}", orderwatch::report::table(&results)),
            }
            ExitCode::from(orderwatch::report::exit_code(&results) as u8)
        }
        Command::Demo { listen, orders } => {
            match orderwatch::demo::run(&listen, orders, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("orderwatch demo: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
