//! The configuration as users write it. Every struct rejects unknown keys, every field has a
//! doc comment, and every default lives in one `default_*` function below.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::duration::Dur;

/// One value or a list of values (`status: SUBMITTED` or `status: [A, B]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// A list of values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// The main configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP server: /metrics, /healthz, /readyz, /api/v1/….
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A web config file in exporter-toolkit's format (TLS, basic-auth users, headers);
    /// relative to this file. `--web.config.file` overrides it.
    #[serde(default)]
    pub web_config_file: Option<Spanned<PathBuf>>,
    /// Addresses or networks (`10.0.0.5`, `10.0.0.0/24`) of authenticating reverse proxies
    /// (oauth2-proxy and the like) whose `user_header` names the user of a request.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// The header a trusted proxy puts the authenticated user in, e.g. `X-Forwarded-User`;
    /// ignored from anyone else.
    #[serde(default)]
    pub user_header: Option<Spanned<String>>,
    /// Base URL under which users reach this daemon; used for `generatorURL` in alerts.
    /// Defaults to `http://<listen>`.
    #[serde(default)]
    pub external_url: Option<String>,
    /// Directory of the embedded state store (alert state survives restarts here); relative
    /// to this file.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Globs of rule files, relative to this file.
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// After a source has failed for this long, a `SourceDown` alert fires.
    #[serde(default = "default_source_down_after")]
    pub source_down_after: Dur,
    /// After a rule's evaluations have failed for this long while its source answers (a
    /// wrong column, a query error), a `RuleFailing` alert fires for it.
    #[serde(default = "default_rule_failing_after")]
    pub rule_failing_after: Dur,
    /// How often the per-status gauges (`orderwatch_orders`, oldest age) are refreshed.
    #[serde(default = "default_gauges_interval")]
    pub gauges_interval: Dur,
    /// The databases, by name; rules refer to these names.
    pub sources: BTreeMap<String, Spanned<SourceConfig>>,
    /// Where alerts go: Alertmanager and the log.
    #[serde(default)]
    pub notifiers: NotifiersConfig,
    /// Direct channels by name (email, slack, mattermost, telegram, webhook).
    #[serde(default)]
    pub receivers: BTreeMap<String, Spanned<super::receivers::ReceiverConfig>>,
    /// Which receiver gets which alerts, grouped how (Alertmanager's route tree). Required
    /// when `receivers` is set.
    #[serde(default)]
    pub route: Option<super::receivers::RouteConfig>,
    /// Alertmanager's `inhibit_rules` for the direct channels: a firing alert matching
    /// `source_matchers` mutes those matching `target_matchers` with the same `equal` labels
    /// (which must be present on both). Alertmanager applies its own to what it is pushed.
    #[serde(default)]
    pub inhibit_rules: Vec<super::receivers::InhibitRuleConfig>,
    /// Named mute windows for `mute_time_intervals`.
    #[serde(default)]
    pub time_intervals: BTreeMap<String, Spanned<Vec<super::receivers::TimeIntervalConfig>>>,
    /// Retries of the direct channels.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Link templates added to the annotations of every order rule (`stuck`, `missing`) that
    /// does not define the same key: e.g. a Jaeger search by order id, the CRM's order page.
    /// Keys end in `_url`; values are templates over the finding (`order_id`, `status`,
    /// `labels`, …) with the `urlencode` and `tojson` filters.
    #[serde(default)]
    pub links: BTreeMap<String, Spanned<String>>,
    /// Order flows timed end to end, by name: the status an order reaches first and the
    /// status that ends the flow, e.g. `price_calculation: [SUBMITTED, PRICE_CALCULATED]`.
    /// Each source whose transitions are observed (`flow`, on by default) exports
    /// `orderwatch_flow_duration_seconds{source,flow}` for each flow whose statuses it knows.
    #[serde(default)]
    pub flows: BTreeMap<String, Spanned<Vec<String>>>,
}

/// How the outbox retries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// First retry delay; doubles on each failure (with jitter).
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: Dur,
    /// Longest delay between retries.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Dur,
    /// A message not delivered after this long is dropped (and counted as `expired`).
    #[serde(default = "default_max_age")]
    pub max_age: Dur,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            max_age: default_max_age(),
        }
    }
}

fn default_max_replication_lag() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_initial_backoff() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_max_backoff() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_max_age() -> Dur {
    Dur(Duration::from_secs(24 * 3600))
}

/// One PostgreSQL database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A postgres:// URL; `${ENV}` and `${file:PATH}` are expanded (percent-encoded inside the
    /// user:password part). libpq's `sslmode` (disable … verify-full), `sslrootcert` (a file
    /// or `system`), `sslcert` and `sslkey` are honoured. The password never appears in logs
    /// or errors.
    pub url: Spanned<String>,
    /// Server-side `statement_timeout` of every session.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout: Dur,
    /// TCP connect timeout.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Maximum connections in this source's pool.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Statuses that end an order's life (e.g. CLOSED). They are never counted: counting them
    /// would scan the whole table.
    #[serde(default = "default_terminal_statuses")]
    pub terminal_statuses: Vec<String>,
    /// Export `orderwatch_orders` and the oldest age per active status for this source.
    #[serde(default = "default_true")]
    pub gauges: bool,
    /// The status names this source knows (optional): a list of names, or a map of the codes
    /// an integer status column holds to their names (`{1: INITIATED, 2: FILE_UPLOADED}`);
    /// rules, labels, messages and metrics then speak the names. Values outside it are
    /// exported as `status="other"`, and `check` names the ones the table holds; without it at
    /// most 50 distinct values become labels.
    #[serde(default)]
    pub statuses: Option<Spanned<StatusNames>>,
    /// Let PostgreSQL JIT-compile this source's statements. Off by default (`SET LOCAL jit =
    /// off` in every transaction): a rule's statement is a short index range scan, and the
    /// planner's row estimates on big tables turn JIT on for a cost (+14 ms a statement) it
    /// never pays back.
    #[serde(default)]
    pub jit: bool,
    /// The zone a `timestamp without time zone` column's wall-clock times are in, e.g.
    /// `Europe/Moscow` (default UTC). Ignored for `timestamptz` and epoch columns.
    #[serde(default)]
    pub time_zone: Option<Spanned<String>>,
    /// On a standby: beyond this replication lag the source is stale; its rules neither fire
    /// nor resolve and a `SourceStale` alert names the lag.
    #[serde(default = "default_max_replication_lag")]
    pub max_replication_lag: Dur,
    /// The directory relative `sslrootcert`, `sslcert` and `sslkey` paths are resolved
    /// against: the config file's (set by validation).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Connect even when the role is a superuser. Off by default: read-only transactions do
    /// not stop a superuser's functions (`pg_terminate_backend`, `pg_read_file`).
    #[serde(default)]
    pub allow_superuser: bool,
    /// Where the orders are and which columns may be read.
    pub orders: OrderModelConfig,
    /// Observe the orders' transitions for the order flow metrics (entries per status, time
    /// in status, `flows`). On by default; a table's transitions cost one index range scan
    /// per status each `gauges_interval`, a status log's come with its incremental reads.
    #[serde(default = "default_true")]
    pub flow: bool,
    /// An allow-listed label column (one of `orders.labels`, e.g. `order_type`) the order
    /// flow metrics carry as a label named after it; at most 20 values, the rest `other`.
    #[serde(default)]
    pub flow_label: Option<Spanned<String>>,
}

/// `statuses:` as a list of names or a map of integer codes to names.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StatusNames {
    /// The names the status column holds.
    Names(Vec<String>),
    /// Integer codes the status column holds, and their names.
    Codes(BTreeMap<i64, String>),
}

impl StatusNames {
    /// The names, in code order for a map.
    pub fn names(&self) -> Vec<String> {
        match self {
            StatusNames::Names(v) => v.clone(),
            StatusNames::Codes(m) => m.values().cloned().collect(),
        }
    }
}

/// The unit of an integer epoch `entered_at` column.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EpochUnit {
    /// Seconds since 1970-01-01 UTC.
    S,
    /// Milliseconds since 1970-01-01 UTC.
    Ms,
}

/// The order model of a source: exactly one of `table`, `history_table` or `query`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderModelConfig {
    /// (a) A table with one row per order holding its current status.
    #[serde(default)]
    pub table: Option<Spanned<String>>,
    /// (b) A status-history table; the latest row per order is its current status.
    #[serde(default)]
    pub history_table: Option<Spanned<String>>,
    /// (c) A custom read-only query returning the id, status, entered_at and label columns.
    #[serde(default)]
    pub query: Option<Spanned<String>>,
    /// Column holding the order id (text or integer): the join key across sources.
    #[serde(default = "default_id_column")]
    pub id: Spanned<String>,
    /// Column holding the status.
    #[serde(default = "default_status_column")]
    pub status: Spanned<String>,
    /// Column holding when the order entered its current status (history: when the row was written).
    #[serde(default = "default_entered_at_column")]
    pub entered_at: Spanned<String>,
    /// Non-personal columns copied onto findings and alerts; nothing else is ever read.
    #[serde(default)]
    pub labels: Vec<Spanned<String>>,
    /// History model only: ignore history rows older than this, bounding the scan (an
    /// order's run that began before it counts from its first row within it).
    #[serde(default)]
    pub history_lookback: Option<Dur>,
    /// History model only: a column ordering rows of the same order written at the same time,
    /// e.g. the log's serial id. When it is a serial (or identity) column the daemon reads new
    /// rows by it.
    #[serde(default)]
    pub tiebreak: Option<Spanned<String>>,
    /// History model only: how far back each incremental read re-reads, for rows committed
    /// late (below the watermark).
    #[serde(default)]
    pub history_overlap: Option<Dur>,
    /// `entered_at` holds integer epoch seconds (`s`) or milliseconds (`ms`).
    #[serde(default)]
    pub entered_at_unit: Option<EpochUnit>,
}

/// The default `history_overlap`.
pub const DEFAULT_HISTORY_OVERLAP: Duration = Duration::from_secs(300);

/// The notifiers. Each is optional; with none configured alerts are only exported and logged.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifiersConfig {
    /// Push alerts to one or more Alertmanagers (`POST /api/v2/alerts`).
    #[serde(default)]
    pub alertmanager: Option<AlertmanagerConfig>,
    /// Print alert changes to the log.
    #[serde(default)]
    pub log: Option<LogNotifierConfig>,
}

/// Alertmanager notifier settings; semantics follow Prometheus's own notifier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URLs, e.g. `http://127.0.0.1:9093`; every one gets every alert.
    pub urls: Vec<Spanned<String>>,
    /// Firing alerts are re-sent this often (Prometheus: `--rules.alert.resend-delay`).
    #[serde(default = "default_resend_delay")]
    pub resend_delay: Dur,
    /// HTTP timeout per request.
    #[serde(default = "default_am_timeout")]
    pub timeout: Dur,
    /// Basic authentication, as Prometheus' `alertmanager_config` takes it.
    #[serde(default)]
    pub basic_auth: Option<BasicAuthConfig>,
    /// An `Authorization` header (`type` Bearer by default), as Prometheus takes it.
    #[serde(default)]
    pub authorization: Option<AuthorizationConfig>,
    /// TLS: a private CA, a client certificate, the name to verify.
    #[serde(default)]
    pub tls_config: Option<TlsClientConfig>,
    /// The credentials, read by validation (`password_file`, `credentials_file`, secrets).
    #[serde(skip)]
    pub resolved_auth: Option<HttpAuth>,
    /// The TLS client configuration, built by validation.
    #[serde(skip)]
    pub resolved_tls: Option<crate::tls::ClientTls>,
}

/// `basic_auth`: a password inline (`${ENV}`/`${file:}` expanded) or in a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// The user name.
    pub username: Spanned<String>,
    /// The password.
    #[serde(default)]
    pub password: Option<Spanned<String>>,
    /// A file holding the password (relative to this file; trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<Spanned<PathBuf>>,
}

/// `authorization`: `Authorization: <type> <credentials>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// The scheme (default `Bearer`).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The credentials inline (`${ENV}`/`${file:}` expanded).
    #[serde(default)]
    pub credentials: Option<Spanned<String>>,
    /// A file holding the credentials.
    #[serde(default)]
    pub credentials_file: Option<Spanned<PathBuf>>,
}

/// Prometheus' `tls_config` for a client.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClientConfig {
    /// CA certificates (PEM) to verify the server with, instead of the Mozilla roots.
    #[serde(default)]
    pub ca_file: Option<Spanned<PathBuf>>,
    /// Client certificate (PEM).
    #[serde(default)]
    pub cert_file: Option<Spanned<PathBuf>>,
    /// Client key (PEM).
    #[serde(default)]
    pub key_file: Option<Spanned<PathBuf>>,
    /// The name the server's certificate must carry, when it is not the URL's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Do not verify the server's certificate (encryption only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Credentials for an HTTP endpoint.
#[derive(Clone, PartialEq, Eq)]
pub enum HttpAuth {
    /// User and password.
    Basic(String, String),
    /// `Authorization: <scheme> <credentials>`.
    Header(String, String),
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpAuth::Basic(u, _) => write!(f, "Basic({u}, ***)"),
            HttpAuth::Header(k, _) => write!(f, "Header({k}, ***)"),
        }
    }
}

/// The log notifier has no settings yet; `log: {}` enables it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogNotifierConfig {}

/// A rule file: `rules: [...]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// The rules of this file.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// What a rule looks for.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Orders in a status for longer than `older_than`.
    #[default]
    Stuck,
    /// The share of HTTP 5xx answers per service, from Prometheus or scraped directly.
    HttpErrors,
    /// Orders in `source` (in a status for longer than `older_than`) that `missing_in` does
    /// not have, or has in a status outside `expect_status`.
    Missing,
    /// Active queries in the source's `pg_stat_activity` running longer than `older_than`
    /// (default 5s), analytic work excluded by application or user patterns.
    SlowQueries,
    /// A custom read-only `query` whose rows are the findings (columns `id`, `value`, labels).
    Sql,
}

impl RuleKind {
    /// The name used in config and output.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Stuck => "stuck",
            RuleKind::Missing => "missing",
            RuleKind::HttpErrors => "http_errors",
            RuleKind::SlowQueries => "slow_queries",
            RuleKind::Sql => "sql",
        }
    }
}

/// Alert severity.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record.
    Info,
    /// Look during working hours.
    #[default]
    Warning,
    /// Act now.
    Critical,
}

impl Severity {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name, `[a-z0-9_]`.
    pub name: Spanned<String>,
    /// What the rule looks for.
    #[serde(default)]
    pub kind: RuleKind,
    /// The source (database) the rule reads. For `http_errors`, optional: a label naming where
    /// the numbers come from (default `prometheus` or `scrape`).
    #[serde(default = "default_rule_source")]
    pub source: Spanned<String>,
    /// The status or statuses the orders are in (`stuck`, `missing`).
    #[serde(default)]
    pub status: Option<Spanned<OneOrMany>>,
    /// How long an order may stay in the status before it counts as stuck (for `missing`:
    /// the grace period for the other database to catch up; for `slow_queries`: how long a
    /// query may run, default 5s).
    #[serde(default)]
    pub older_than: Option<Spanned<Dur>>,
    /// `kind: slow_queries`: application names (regexes) whose queries are analytic and ignored.
    #[serde(default)]
    pub exclude_applications: Vec<Spanned<String>>,
    /// `kind: slow_queries`: database users (regexes) whose queries are ignored.
    #[serde(default)]
    pub exclude_users: Vec<Spanned<String>>,
    /// `kind: sql`: a read-only query; column `id` names the finding, `value` (optional) is
    /// its number, every other column becomes a label. `kind: http_errors` with
    /// `prometheus_url`: the PromQL giving the 5xx ratio per `service` (a default is built
    /// from `metric` and `window`).
    #[serde(default)]
    pub query: Option<Spanned<String>>,
    /// `kind: http_errors`: a Prometheus-compatible server to query (`/api/v1/query`).
    #[serde(default)]
    pub prometheus_url: Option<Spanned<String>>,
    /// `kind: http_errors`: scrape these services' `/metrics` directly instead.
    #[serde(default)]
    pub scrape: Vec<ScrapeTarget>,
    /// `kind: http_errors`: the request counter, labelled with the status `code`.
    #[serde(default = "default_http_metric")]
    pub metric: String,
    /// `kind: http_errors`: the window the ratio is computed over.
    #[serde(default = "default_http_window")]
    pub window: Dur,
    /// `kind: http_errors`: fire when the ratio is above this (0.05 = 5 %).
    #[serde(default = "default_http_threshold")]
    pub threshold: f64,
    /// `kind: http_errors`: also fire when the ratio grew by this factor against the
    /// previous window (and is at least 1 %).
    #[serde(default)]
    pub growth: Option<f64>,
    /// `kind: missing`: the other database, looked up by order id.
    #[serde(default)]
    pub missing_in: Option<Spanned<String>>,
    /// `kind: missing`: statuses in the other database that agree; an order there in any
    /// other status is a `StatusMismatch`. Without it, any row there agrees.
    #[serde(default)]
    pub expect_status: Option<Spanned<OneOrMany>>,
    /// `kind: missing`: candidates looked up per round trip.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The `severity` label.
    #[serde(default)]
    pub severity: Severity,
    /// How long a finding must persist before its alert fires (pending until then).
    #[serde(default, rename = "for")]
    pub for_: Dur,
    /// How long a firing alert keeps firing after its order is no longer found.
    #[serde(default)]
    pub keep_firing_for: Dur,
    /// Evaluate every `interval` (default 30s) …
    #[serde(default)]
    pub interval: Option<Spanned<Dur>>,
    /// … or on a 5-field cron schedule, e.g. `*/5 * * * *`.
    #[serde(default)]
    pub schedule: Option<Spanned<String>>,
    /// Time zone of `schedule` (IANA name, default UTC).
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    /// The `alertname` label; defaults to `StuckOrder`.
    #[serde(default)]
    pub alertname: Option<String>,
    /// Extra labels on every alert of this rule.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations as minijinja templates over the finding.
    #[serde(default)]
    pub annotations: BTreeMap<String, Spanned<String>>,
    /// Rows fetched per evaluation (oldest first); `count` stays exact beyond it.
    #[serde(default = "default_max_findings")]
    pub max_findings: usize,
    /// Alerts per rule (one per order, oldest first); one overflow alert carries the rest.
    #[serde(default = "default_max_alerts")]
    pub max_alerts: usize,
}

impl RuleConfig {
    /// The statuses (empty for kinds without them).
    pub fn statuses(&self) -> Vec<String> {
        self.status
            .as_ref()
            .map(|s| s.value.to_vec())
            .unwrap_or_default()
    }

    /// The threshold; `slow_queries` defaults to 5 s.
    pub fn older_than(&self) -> Duration {
        match (&self.older_than, self.kind) {
            (Some(d), _) => d.value.0,
            (None, RuleKind::SlowQueries) => Duration::from_secs(5),
            (None, _) => Duration::ZERO,
        }
    }
}

/// One service scraped directly by an `http_errors` rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeTarget {
    /// The `service` label of the finding and the metric.
    pub service: String,
    /// Its `/metrics` URL.
    pub url: Spanned<String>,
}

fn default_rule_source() -> Spanned<String> {
    unspanned("")
}
fn default_http_metric() -> String {
    "http_requests_total".to_string()
}
fn default_http_window() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_http_threshold() -> f64 {
    0.05
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:9187".parse().expect("static address")
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/orderwatch")
}
fn default_source_down_after() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_rule_failing_after() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_gauges_interval() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_statement_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_pool_size() -> usize {
    4
}
fn default_terminal_statuses() -> Vec<String> {
    vec!["CLOSED".to_string()]
}
fn default_true() -> bool {
    true
}
fn unspanned(s: &str) -> Spanned<String> {
    let loc = serde_saphyr::Location::UNKNOWN;
    Spanned::new(s.to_string(), loc, loc)
}
fn default_id_column() -> Spanned<String> {
    unspanned("id")
}
fn default_status_column() -> Spanned<String> {
    unspanned("status")
}
fn default_entered_at_column() -> Spanned<String> {
    unspanned("entered_at")
}
fn default_resend_delay() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_am_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
/// Default evaluation interval of a rule.
pub const DEFAULT_RULE_INTERVAL: Duration = Duration::from_secs(30);
fn default_max_findings() -> usize {
    1000
}
fn default_batch_size() -> usize {
    // Small enough that the lookup stays a primary-key index scan on a mid-sized table
    // (thousands of ids out of ~100 000 rows make PostgreSQL prefer a sequential scan).
    500
}
fn default_max_alerts() -> usize {
    200
}
