//! orderwatch catches orders stuck in a status or lost between the systems of a made-to-order
//! business (online shop → CRM → manufacturing), exports what it sees to Prometheus, and
//! pushes alerts to Alertmanager.
//!
//! Data flow, and the module that owns each step:
//!
//! ```text
//! config files ─► config ─► source (read-only PostgreSQL pools, order model → SQL)
//!                             │
//!        engine (scheduler) ──┴─► rule (stuck, …) ─► findings ─► rule::observe
//!                                                                  │
//!        alert (the book: pending → firing → resolved; the SQLite store) ◄┘
//!                             │
//!                             ├─► notify (Alertmanager, direct channels, log)
//!                             └─► metrics ─► http (/metrics, /api/v1/…) ◄─ serve
//! ```
//!
//! The modules, by layer from the bottom up ([`LAYERS`]; a module never uses one of a higher
//! layer, `tests/architecture.rs` holds the tree to it):
//!
//! - plain helpers: [`blocking`] (heavy work off the async workers), [`human`] (durations as
//!   people on call read them), [`labels`] (alert labels sharing their rule-wide part),
//!   [`metrics`] (the registry and every exported metric), [`otlp`] (the daemon's own spans
//!   over OTLP/HTTP JSON), [`outbound`] (the outgoing HTTP client and its error text),
//!   [`pg_sandbox`] (throwaway PostgreSQL clusters), [`runbooks`] (the shipped runbooks),
//!   [`systemd`] (readiness, reload, watchdog), [`tls`] (client TLS).
//! - [`config`]: every config struct (what users write), YAML reading, `${ENV}`/`${file:PATH}`
//!   secrets, config's own checks with file:line:col.
//! - [`source`]: one pool per database; sessions are read-only with a statement timeout; the
//!   order model's SQL, built from the columns' types; a status log's kept state; standby lag.
//!   [`alert`]: the alert state machine and the state store; no I/O but the store's file.
//! - [`notify`]: the delivery pipeline, one file per channel, routing, silences and
//!   inhibition; notifiers read alert state, never databases; [`notify::check`], what only
//!   notify can check of a config.
//! - [`configure`]: loading a config the daemon may run: config's checks, then each
//!   component's, all problems at once. Every command, the reload and the demo load here.
//! - [`rule`]: one file per rule kind, each turning a source into findings; findings into
//!   observations for the alert book. [`flow`]: the orders' transitions as order flow
//!   metrics (entries, time in status, flows), what a restart keeps of them.
//! - [`report`]: `once` output (table and JSON); [`lookup`]: one order across every source,
//!   its rules, verdicts and alerts (`orderwatch order`, `/api/v1/orders/{id}`).
//! - [`engine`]: orchestration: schedules, evaluations and their metrics, source health,
//!   reloads.
//! - [`http`]: axum routes: metrics, health, the API, the status page, the runbooks;
//!   [`explain`]: the plan of every rule's SQL, whole-table scans and their fix.
//! - [`serve`]: the daemon put together: engine, HTTP server, reloads, shutdown.
//! - [`demo`]: `orderwatch demo`: sandbox, reference schema, realistic orders, a simulator,
//!   simulated services with a 5xx burst.

pub mod alert;
pub mod blocking;
pub mod config;
pub mod configure;
pub mod demo;
pub mod engine;
pub mod explain;
pub mod flow;
pub mod http;
pub mod human;
pub mod labels;
pub mod lookup;
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
    ("loading a config with every check", &["configure"]),
    ("rules and flows", &["rule", "flow"]),
    ("answers to one-off questions", &["report", "lookup"]),
    ("orchestration", &["engine"]),
    ("front ends", &["http", "explain"]),
    ("the daemon put together", &["serve"]),
    ("the demo", &["demo"]),
];
