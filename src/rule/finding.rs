//! Findings: what a rule evaluation produces.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One stuck (or lost) order. Carries only the id, status, times and allow-listed labels.
#[derive(Debug, PartialEq, Serialize)]
pub struct Finding {
    /// The order id.
    pub order_id: String,
    /// Its current status (shared: a status repeats in every finding).
    pub status: crate::labels::Str,
    /// When it entered the status (database clock).
    pub entered_at: DateTime<Utc>,
    /// How long it has been there, by the database clock.
    pub age_seconds: f64,
    /// Allow-listed label columns (values shared where they repeat).
    pub labels: crate::labels::Labels,
    /// `kind: missing` with `expect_status`: the disagreeing status in the other database
    /// (absent when the order is missing there altogether).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_status: Option<String>,
}

impl Clone for Finding {
    fn clone(&self) -> Finding {
        Finding {
            order_id: self.order_id.clone(),
            status: self.status.clone(),
            entered_at: self.entered_at,
            age_seconds: self.age_seconds,
            labels: self.labels.clone(),
            other_status: self.other_status.clone(),
        }
    }

    /// In place: the id's and the labels' room is reused (a streamed evaluation refills the
    /// same findings chunk after chunk, allocating nothing per row).
    fn clone_from(&mut self, source: &Finding) {
        self.order_id.clone_from(&source.order_id);
        self.status.clone_from(&source.status);
        self.entered_at = source.entered_at;
        self.age_seconds = source.age_seconds;
        self.labels.clone_from(&source.labels);
        self.other_status.clone_from(&source.other_status);
    }
}

/// A finding that is not an order: a slow query, a row of a custom query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    /// Its identity within the rule (a service, `queryid/user`, the row's `id`).
    pub key: String,
    /// The measured value (seconds running, the row's `value`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Since when, if known (a query's start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Labels: what identifies it and does not change between evaluations (a service, a
    /// query id and role, the row's other columns).
    pub labels: BTreeMap<String, String>,
    /// What describes it and may change between evaluations (the previous ratio, a pid, the
    /// shortened query text): annotations, never labels, so one problem stays one alert.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// Per-status aggregate over all matching orders (not just the fetched ones).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StatusStat {
    /// Exact number of matching orders in this status.
    pub count: u64,
    /// Age of the oldest, seconds.
    pub oldest_age_seconds: f64,
}

/// The result of one evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// Exact number of matching orders.
    pub count: u64,
    /// The matching orders, oldest first, at most the rule's `max_findings` (none when they
    /// went to a [`FindingSink`] as they were decoded: see `streamed`).
    pub findings: Vec<Finding>,
    /// How many findings went to a [`FindingSink`] instead of `findings`.
    #[serde(skip)]
    pub streamed: usize,
    /// Per-status counts and oldest ages.
    pub per_status: BTreeMap<String, StatusStat>,
    /// Findings that are not orders (`slow_queries`, `sql`, `http_errors`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<Signal>,
    /// `http_errors`: the 5xx ratio of every service seen, firing or not.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub http_ratios: BTreeMap<String, f64>,
    /// The evaluation could not judge everything it watches (a first pg_stat_statements
    /// sample): what it did not find is not gone, so no alert resolves for its absence.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

impl Outcome {
    /// Whether more orders matched than were fetched.
    pub fn truncated(&self) -> bool {
        ((self.findings.len() + self.streamed + self.signals.len()) as u64) < self.count
    }
}

/// Where an evaluation hands its findings as it decodes them (oldest first, a chunk at a
/// time), so that 100 000 of them are never held at once: the daemon applies each chunk to
/// the alert book. Without one, they are kept in [`Outcome::findings`].
pub trait FindingSink: Send {
    /// The next findings of rule `rule` (its place in the evaluated group), in order. The
    /// caller keeps them, to refill with the next rows.
    fn findings(&mut self, rule: usize, chunk: &[Finding]);
}

/// Findings of this many orders go to a [`FindingSink`] at a time.
pub const CHUNK: usize = 1024;
