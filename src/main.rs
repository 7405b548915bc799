//! The `orderwatch` command: parses the CLI, loads the config, installs signal handlers and
//! calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Catches orders stuck in a status or lost between systems; exports metrics; alerts on-call.
#[derive(Parser)]
#[command(name = "orderwatch", version, about)]
struct Cli {
    /// Before the command (`orderwatch -c FILE run`, as the systemd unit writes it): the
    /// files of every command that reads a config. `demo` writes its own and refuses them.
    #[command(flatten)]
    files: ConfigFiles,
    /// Log lines on stderr: `json` (one object per line, for journald/Filebeat) or `text`.
    /// Default: json when started by systemd, else text. Level: $ORDERWATCH_LOG (default info).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

/// The files a command reads its configuration from. Offered by the commands that read one
/// (after the command: `orderwatch check -c FILE`) and before any command.
#[derive(Args, Clone, Default)]
struct ConfigFiles {
    /// Config file (default: $ORDERWATCH_CONFIG, else /etc/orderwatch/orderwatch.yaml).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Web config file (exporter-toolkit format: TLS, basic auth, headers); overrides the
    /// config's `web_config_file`.
    #[arg(long = "web.config.file")]
    web_config_file: Option<PathBuf>,
}

impl ConfigFiles {
    /// The command's own files, else those given before it.
    fn or(self, before: ConfigFiles) -> ConfigFiles {
        ConfigFiles {
            config: self.config.or(before.config),
            web_config_file: self.web_config_file.or(before.web_config_file),
        }
    }

    fn given(&self) -> bool {
        self.config.is_some() || self.web_config_file.is_some()
    }
}

/// The config file alone: the commands that neither serve nor reach the HTTP server (`once`,
/// `explain`, `notify-test`) take no web config.
#[derive(Args, Clone, Default)]
struct ConfigFile {
    /// Config file (default: $ORDERWATCH_CONFIG, else /etc/orderwatch/orderwatch.yaml).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
}

impl ConfigFile {
    /// The command's config file, else the one given before it; a web config given before it
    /// is refused, not ignored.
    fn or(self, before: ConfigFiles, command: &str) -> Result<ConfigFiles, ExitCode> {
        if before.web_config_file.is_some() {
            eprintln!(
                "orderwatch {command}: --web.config.file is for the commands that serve or reach \
                 the HTTP server (run, check, silence, order)"
            );
            return Err(ExitCode::from(2));
        }
        Ok(ConfigFiles {
            config: self.config.or(before.config),
            web_config_file: None,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[command(flatten)]
        files: ConfigFiles,
    },
    /// Validate the config and rules; unless --offline, also reach every source and prepare
    /// every rule's SQL.
    Check {
        /// Do not connect to the databases.
        #[arg(long)]
        offline: bool,
        #[command(flatten)]
        files: ConfigFiles,
    },
    /// Evaluate the rules once and print the findings. Exit code: 0 none, 1 found, 2 error.
    Once {
        /// Only this rule (repeatable).
        #[arg(long = "rule")]
        rules: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Also each order's annotations as its alert would carry them (summary, description,
        /// links): preview a template without starting the daemon.
        #[arg(long)]
        annotations: bool,
        #[command(flatten)]
        files: ConfigFile,
    },
    /// Ask PostgreSQL how it runs every rule's SQL; report any that reads a whole table, with
    /// the CREATE INDEX that fixes it. Exit code: 0 all indexed, 1 some scan, 2 error.
    Explain {
        /// Only this rule (repeatable).
        #[arg(long = "rule")]
        rules: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        files: ConfigFile,
    },
    /// Send one sample message to receiver NAME (straight, no routing), to check a channel.
    NotifyTest {
        /// The receiver's name in `receivers:`.
        name: String,
        #[command(flatten)]
        files: ConfigFile,
    },
    /// Manage silences of a running daemon (through its HTTP API).
    Silence {
        #[command(flatten)]
        daemon: DaemonAccess,
        #[command(subcommand)]
        action: SilenceAction,
    },
    /// Where is order ID now, and what happened to it: its status and time in status in
    /// every source, its status history, the rules it matches, the lost-message verdicts, its
    /// alerts and links. Asks the running daemon; when it cannot be reached, the databases
    /// directly (without alerts). Exit code: 0 every order found, 1 one found nowhere, 2 error.
    Order {
        /// Order ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        daemon: DaemonAccess,
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

/// How a command reaches a running daemon's HTTP API.
#[derive(Args, Clone)]
struct DaemonAccess {
    /// Base URL of the daemon (default: from the config's `listen`, https when its web
    /// config has TLS).
    #[arg(long, global = true)]
    url: Option<String>,
    /// Basic-auth user (the password comes from $ORDERWATCH_PASSWORD or --password-file).
    #[arg(long, global = true)]
    user: Option<String>,
    /// File holding the basic-auth password (trailing newline ignored).
    #[arg(long, global = true)]
    password_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the daemon's certificate.
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    /// The config file (its `listen` gives the default URL).
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    /// The web config file (its TLS setting gives the default URL's scheme).
    #[arg(long = "web.config.file", global = true)]
    web_config_file: Option<PathBuf>,
}

impl DaemonAccess {
    /// The config files, these or those given before the command.
    fn files(&self, before: ConfigFiles) -> ConfigFiles {
        ConfigFiles {
            config: self.config.clone(),
            web_config_file: self.web_config_file.clone(),
        }
        .or(before)
    }

    /// The API client: `--url`, else the config's listen address; `command` names the
    /// command in errors.
    fn api(
        &self,
        files: &ConfigFiles,
        command: &str,
    ) -> Result<orderwatch::http::client::Api, ExitCode> {
        let loaded = || {
            let path = orderwatch::config::default_config_path(files.config.clone());
            let loaded = orderwatch::configure::load(&path).ok()?;
            match &files.web_config_file {
                Some(w) => loaded.with_web(w).ok(),
                None => Some(loaded),
            }
        };
        let base = self
            .url
            .clone()
            .or_else(|| loaded().map(|l| orderwatch::http::client::default_url(&l)))
            .unwrap_or_else(|| "http://127.0.0.1:9187".to_string());
        let password = match (&self.user, &self.password_file) {
            (None, _) => None,
            (Some(_), Some(f)) => match std::fs::read_to_string(f) {
                Ok(p) => Some(p.trim_end_matches(['\r', '\n']).to_string()),
                Err(e) => {
                    eprintln!("orderwatch {command}: cannot read {}: {e}", f.display());
                    return Err(ExitCode::from(2));
                }
            },
            (Some(_), None) => std::env::var("ORDERWATCH_PASSWORD").ok(),
        };
        orderwatch::http::client::Api::new(
            base.trim_end_matches('/'),
            self.user.clone().map(|u| (u, password.unwrap_or_default())),
            self.ca_file.as_deref(),
        )
        .map_err(|e| {
            eprintln!("orderwatch {command}: {e}");
            ExitCode::from(2)
        })
    }
}

#[derive(Subcommand)]
enum SilenceAction {
    /// Silence alerts matching every matcher, e.g. `rule="packaging_over_1d"` `order_id=~"JW-0001.*"`.
    Add {
        /// Label matchers (`name="v"`, `name!="v"`, `name=~"re"`, `name!~"re"`).
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long.
        #[arg(long, short = 'd', default_value = "1h")]
        duration: String,
        /// Why.
        #[arg(long, short = 'm', default_value = "")]
        comment: String,
        /// Who (default: $USER).
        #[arg(long)]
        author: Option<String>,
    },
    /// List silences.
    List,
    /// End a silence now.
    Expire {
        /// The silence id.
        id: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// Logs on stderr (filtered by `$ORDERWATCH_LOG`), and, when the OTLP variables ask for it,
/// the daemon's spans to a collector (filtered separately, so a quiet log still traces).
fn init_logging(format: Option<LogFormat>) -> Option<std::sync::Arc<orderwatch::otlp::Exporter>> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::field::MakeExt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = tracing_subscriber::EnvFilter::try_from_env("ORDERWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = format.unwrap_or(if orderwatch::systemd::under_systemd() {
        LogFormat::Json
    } else {
        LogFormat::Text
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        // One object per line: timestamp, level, target, message and the event's fields
        // (rule, source, counts) at the top level, as Filebeat's ndjson parser expects.
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
        // Colours only on a terminal: log files get plain text.
        // Field values pass through `printable`: a newline or an escape sequence in an order
        // id or a silence's author can neither forge a log line nor drive the terminal.
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .fmt_fields(
                tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                    let text = orderwatch::report::printable(&format!("{value:?}"));
                    if field.name() == "message" {
                        write!(w, "{text}")
                    } else {
                        write!(w, "{}={text}", field.name())
                    }
                })
                .delimited(" "),
            )
            .boxed(),
    };
    let (otlp, exporter) = match orderwatch::otlp::from_env() {
        Some((layer, exporter)) => {
            let spans = tracing_subscriber::filter::Targets::new()
                .with_target("orderwatch", tracing::Level::INFO);
            (
                Some(layer.with_filter(spans)),
                Some(std::sync::Arc::new(exporter)),
            )
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otlp)
        .init();
    if let Some(e) = &exporter {
        tracing::info!(endpoint = e.url(), "exporting traces over OTLP");
        tokio::spawn(e.clone().run());
    }
    exporter
}

/// Sends one reload request per SIGHUP.
fn reload_requests() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .expect("install SIGHUP handler");
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                // A reload already queued covers this one too.
                let _ = tx.try_send(());
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
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

fn load(files: ConfigFiles) -> Result<orderwatch::config::Loaded, ExitCode> {
    let web = files.web_config_file.as_deref();
    let path = orderwatch::config::default_config_path(files.config.clone());
    let fail = |e: orderwatch::config::ConfigError| {
        eprintln!("{e}");
        ExitCode::from(2)
    };
    let mut loaded = orderwatch::configure::load(&path).map_err(fail)?;
    if let Some(web) = web {
        loaded = loaded.with_web(web).map_err(fail)?;
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    Ok(loaded)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let traces = init_logging(cli.log_format);
    match cli.command {
        Command::Run { files } => {
            // Before anything slow: an early SIGHUP must not end the process.
            let reload = reload_requests();
            let loaded = match load(files.or(cli.files)) {
                Ok(l) => l,
                Err(c) => return c,
            };
            let daemon = match orderwatch::engine::Daemon::build(loaded) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("orderwatch: {e}");
                    return ExitCode::from(2);
                }
            };
            let result = orderwatch::serve::listen(daemon, shutdown_signal(), Some(reload)).await;
            if let Some(t) = &traces {
                t.shutdown(std::time::Duration::from_secs(2)).await;
            }
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("orderwatch: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Check { offline, files } => {
            let loaded = match load(files.or(cli.files)) {
                Ok(l) => l,
                Err(c) => return c,
            };
            let n_rules = loaded.rules.len();
            // Templates rendered against a sample order: an undefined value is a mistake.
            let templates = match orderwatch::engine::check_templates(&loaded) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("orderwatch: {e}");
                    return ExitCode::from(2);
                }
            };
            if offline {
                if !templates.is_empty() {
                    for t in &templates {
                        eprintln!("{t}");
                    }
                    return ExitCode::from(2);
                }
                println!(
                    "{}: OK ({} sources, {n_rules} rules; databases not contacted)",
                    loaded.path.display(),
                    loaded.config.sources.len()
                );
                return ExitCode::SUCCESS;
            }
            for t in &templates {
                println!("FAIL {t}");
            }
            match orderwatch::engine::check_online(&loaded).await {
                Ok(mut lines) => {
                    use orderwatch::engine::Verdict;
                    // What `explain` finds: a statement that reads a whole table, with its fix.
                    if !lines.iter().any(|(v, _)| *v == Verdict::Fail)
                        && let Ok(verdicts) = orderwatch::explain::explain(&loaded, &[]).await
                    {
                        for v in verdicts.iter().filter(|v| !v.ok && v.error.is_none()) {
                            let fix = v
                                .fix
                                .as_deref()
                                .map(|f| format!("; fix: {f}"))
                                .unwrap_or_default();
                            lines.push((
                                Verdict::Warn,
                                format!(
                                    "{}, {}: {}{fix} (orderwatch explain)",
                                    v.who(),
                                    v.purpose,
                                    v.note
                                ),
                            ));
                        }
                    }
                    let mut failed = !templates.is_empty();
                    for (verdict, line) in lines {
                        failed |= verdict == Verdict::Fail;
                        let tag = match verdict {
                            Verdict::Ok => "ok  ",
                            Verdict::Warn => "WARN",
                            Verdict::Fail => "FAIL",
                        };
                        println!("{tag} {line}");
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
        Command::Once {
            rules,
            format,
            annotations,
            files,
        } => {
            let loaded = match files.or(cli.files, "once").and_then(load) {
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
                    serde_json::to_string_pretty(&orderwatch::report::build(&results, annotations))
                        .expect("serializable")
                ),
                Format::Table => print!("{}", orderwatch::report::table(&results, annotations)),
            }
            ExitCode::from(orderwatch::report::exit_code(&results) as u8)
        }
        Command::Explain {
            rules,
            format,
            files,
        } => {
            let loaded = match files.or(cli.files, "explain").and_then(load) {
                Ok(l) => l,
                Err(c) => return c,
            };
            if let Some(unknown) = rules
                .iter()
                .find(|r| !loaded.rules.iter().any(|(_, c)| &c.name.value == *r))
            {
                eprintln!("orderwatch: unknown rule: {unknown}");
                return ExitCode::from(2);
            }
            match orderwatch::explain::explain(&loaded, &rules).await {
                Ok(verdicts) => {
                    match format {
                        Format::Json => println!(
                            "{}",
                            serde_json::to_string_pretty(
                                &serde_json::json!({ "statements": verdicts })
                            )
                            .expect("serializable")
                        ),
                        Format::Table => print!("{}", orderwatch::explain::table(&verdicts)),
                    }
                    ExitCode::from(orderwatch::explain::exit_code(&verdicts))
                }
                Err(e) => {
                    eprintln!("orderwatch: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::NotifyTest { name, files } => {
            let loaded = match files.or(cli.files, "notify-test").and_then(load) {
                Ok(l) => l,
                Err(c) => return c,
            };
            match orderwatch::notify::direct::notify_test(&loaded.config, &name).await {
                Ok(msg) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("orderwatch notify-test: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Silence { daemon, action } => {
            let files = daemon.files(cli.files);
            let api = match daemon.api(&files, "silence") {
                Ok(a) => a,
                Err(code) => return code,
            };
            let result = match action {
                SilenceAction::Add {
                    matchers,
                    duration,
                    comment,
                    author,
                } => {
                    let author = author
                        .or_else(|| std::env::var("USER").ok())
                        .unwrap_or_default();
                    api.silence_add(&matchers, &duration, &comment, &author)
                        .await
                        .map(|id| println!("{id}"))
                }
                SilenceAction::List => api.silence_list().await.map(|lines| {
                    for l in lines {
                        println!("{l}");
                    }
                }),
                SilenceAction::Expire { id } => api
                    .silence_expire(&id)
                    .await
                    .map(|()| println!("expired {id}")),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("orderwatch silence: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Order {
            ids,
            format,
            daemon,
        } => {
            let files = daemon.files(cli.files);
            let api = match daemon.api(&files, "order") {
                Ok(a) => a,
                Err(code) => return code,
            };
            let mut reports = Vec::new();
            // Set once the daemon cannot be reached: the sources and rules asked directly.
            let mut direct = None;
            for id in &ids {
                if let Err(e) = orderwatch::http::valid_order_id(id) {
                    eprintln!("orderwatch order: {e}");
                    return ExitCode::from(2);
                }
                if direct.is_none() {
                    match api.order(id).await {
                        Ok(report) => {
                            reports.push(report);
                            continue;
                        }
                        Err(e) if e.starts_with("cannot reach") => {
                            eprintln!(
                                "orderwatch order: {e}; asking the databases directly (alerts unknown)"
                            );
                            let loaded = match load(files.clone()) {
                                Ok(l) => l,
                                Err(code) => return code,
                            };
                            let parts = match orderwatch::engine::build_parts(&loaded, false) {
                                Ok(p) => p,
                                Err(e) => {
                                    eprintln!("orderwatch order: {e}");
                                    return ExitCode::from(2);
                                }
                            };
                            let links = orderwatch::rule::template::Annotations::compile(
                                "links",
                                &loaded.config.links,
                            )
                            .ok();
                            direct = Some((parts, links));
                        }
                        Err(e) => {
                            eprintln!("orderwatch order: {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
                let ((sources, rules), links) = direct.as_ref().expect("set above");
                reports.push(orderwatch::lookup::order(sources, rules, links.as_ref(), id).await);
            }
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&reports).expect("reports serialize")
                ),
                Format::Table => {
                    let now = chrono::Utc::now();
                    for r in &reports {
                        print!("{}", orderwatch::lookup::text(r, now));
                    }
                }
            }
            let nowhere = reports.iter().any(|r| {
                r.sources
                    .iter()
                    .all(|s| s.order.is_none() && s.error.is_none())
            });
            let unasked = reports
                .iter()
                .any(|r| r.sources.iter().any(|s| s.error.is_some()));
            if unasked {
                ExitCode::from(2)
            } else if nowhere {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Demo { listen, orders } => {
            if cli.files.given() {
                eprintln!(
                    "orderwatch demo: the demo reads no config file (-c, --web.config.file): it \
                     writes and runs its own"
                );
                return ExitCode::from(2);
            }
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
