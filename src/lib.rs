//! orderwatch catches orders stuck in a status or lost between the systems of a made-to-order
//! business (online shop → CRM → manufacturing), exports what it sees to Prometheus, and
//! pushes alerts to Alertmanager.
//!
//! Data flow, and the module that owns each step:
//!
//! ```text
//! config files ─► config ─► source (read-only PostgreSQL pools, order model → SQL)
//!                             │
//!        engine (scheduler) ──┴─► rule (stuck, …) ─► findings
//!                             │
//!        engine (alert state machine, state store) ─► notify (alertmanager, log)
//!                             │                     ─► metrics ─► http (/metrics, /api/v1/…)
//! ```
//!
//! - [`config`]: YAML loading, `${ENV}`/`${file:PATH}` secrets, validation with file:line:col.
//! - [`source`]: one pool per database; sessions are read-only with a statement timeout; the
//!   order model's SQL, built from the columns' types; a status log's kept state; standby lag.
//! - [`rule`]: one file per rule kind; each turns a source into findings.
//! - [`engine`]: scheduling, the pending → firing → resolved state machine, the SQLite store.
//! - [`notify`]: notifiers; they read alert state, never databases; routing, silences and
//!   inhibition for the direct channels.
//! - [`labels`]: alert labels that share their rule-wide part; the matchers' view of labels.
//! - [`human`]: durations as people on call read them ("3h 05m").
//! - [`metrics`]: the registry and every exported metric.
//! - [`http`]: axum routes: metrics, health, the API, the status page, the runbooks.
//! - [`report`]: `once` output (table and JSON).
//! - [`explain`]: `explain`: the plan of every rule's SQL, whole-table scans and their fix.
//! - [`pg_sandbox`]: a throwaway PostgreSQL cluster for the demo, tests and benchmarks.
//! - [`demo`]: `orderwatch demo`: sandbox, reference schema, realistic orders, a simulator,
//!   simulated services with a 5xx burst.
//! - [`otlp`]: optional export of the daemon's own spans over OTLP/HTTP (JSON).
//! - [`systemd`]: readiness, reload, stopping and watchdog notifications to the service manager.
//! - [`tls`]: TLS client configurations (PostgreSQL's sslmode family, Alertmanager's tls_config).

pub mod alert;
pub mod blocking;
pub mod config;
pub mod demo;
pub mod engine;
pub mod explain;
pub mod http;
pub mod human;
pub mod labels;
pub mod metrics;
pub mod notify;
pub mod otlp;
pub mod outbound;
pub mod pg_sandbox;
pub mod report;
pub mod rule;
pub mod runbooks;
pub mod serve;
pub mod source;
pub mod systemd;
pub mod tls;

/// The layers, lowest first. A module may use modules of its own layer and of the layers
/// below, never one above (`tests/architecture.rs` reads every `crate::` and `super::` path
/// and holds the tree to this list). `main.rs` sits above them all.
pub const LAYERS: &[(&str, &[&str])] = &[
    (
        "plain helpers",
        &[
            "blocking",
            "human",
            "labels",
            "metrics",
            "otlp",
            "outbound",
            "pg_sandbox",
            "runbooks",
            "systemd",
            "tls",
        ],
    ),
    ("configuration", &["config"]),
    ("what is read and what is known", &["source", "alert"]),
    ("delivery", &["notify"]),
    ("rules", &["rule"]),
    ("output of one-off runs", &["report"]),
    ("orchestration", &["engine"]),
    ("front ends", &["http", "explain"]),
    ("the daemon put together", &["serve"]),
    ("the demo", &["demo"]),
];
