//! Rules: each kind turns a source into findings (one per stuck or lost order), and
//! [`observe`] turns findings into observations for the alert book. A rule never talks to a
//! notifier; the engine runs rules and hands their observations to the book.

mod finding;
pub mod http_errors;
mod missing;
pub mod observe;
mod schedule;
pub mod slow_queries;
mod sql;
mod stuck;
pub mod template;

pub use finding::{CHUNK, Finding, FindingSink, Outcome, Signal, StatusStat};
pub use http_errors::HttpErrorsCheck;
pub use missing::MissingCheck;
pub use schedule::Schedule;
pub use slow_queries::SlowQueriesCheck;
pub use sql::SqlCheck;
pub use stuck::{SharedPlan, StuckCheck};
pub use template::Annotations;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{RuleConfig, RuleKind, Severity};
use crate::source::{Source, SourceError};

/// `rules` in groups that share their statements (see [`Rule::shares_with`]), each group in
/// config order, the groups in the order of their first rule.
pub fn share_groups(rules: &[Arc<Rule>]) -> Vec<Vec<Arc<Rule>>> {
    let mut groups: Vec<Vec<Arc<Rule>>> = Vec::new();
    for r in rules {
        match groups.iter_mut().find(|g| g[0].shares_with(r)) {
            Some(g) => g.push(r.clone()),
            None => groups.push(vec![r.clone()]),
        }
    }
    groups
}

/// What a rule checks, per kind.
#[derive(Debug)]
pub enum Check {
    /// `kind: stuck`.
    Stuck(StuckCheck),
    /// `kind: missing`.
    Missing(MissingCheck),
    /// `kind: http_errors`.
    HttpErrors(HttpErrorsCheck),
    /// `kind: slow_queries`.
    SlowQueries(SlowQueriesCheck),
    /// `kind: sql`.
    Sql(SqlCheck),
}

/// A rule ready to run: config turned into SQL, a schedule and compiled templates.
#[derive(Debug)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// The kind.
    pub kind: RuleKind,
    /// The source it reads.
    pub source: String,
    /// The `severity` label.
    pub severity: Severity,
    /// The `alertname` label.
    pub alertname: String,
    /// Pending time before firing.
    pub for_: Duration,
    /// How long a firing alert outlives its finding.
    pub keep_firing_for: Duration,
    /// When it runs.
    pub schedule: Schedule,
    /// Extra alert labels.
    pub labels: BTreeMap<String, String>,
    /// Annotation templates.
    pub annotations: Annotations,
    /// Alerts per rule before the overflow alert.
    pub max_alerts: usize,
    /// The check itself.
    pub check: Check,
}

impl Rule {
    /// Builds a rule from its validated config and the sources by name.
    pub fn build(
        cfg: &RuleConfig,
        sources: &BTreeMap<String, Arc<Source>>,
    ) -> Result<Rule, String> {
        let schedule = Schedule::from_config(cfg)?;
        let annotations = Annotations::compile(&cfg.name.value, &cfg.annotations)?;
        let db = || {
            sources
                .get(&cfg.source.value)
                .cloned()
                .ok_or_else(|| format!("unknown source {}", cfg.source.value))
        };
        let check = match cfg.kind {
            RuleKind::HttpErrors => Check::HttpErrors(HttpErrorsCheck::new(cfg)),
            _ => {
                let source = db()?;
                match cfg.kind {
                    RuleKind::Stuck => Check::Stuck(StuckCheck::new(cfg, source.clone())),
                    RuleKind::Missing => {
                        let name = cfg
                            .missing_in
                            .as_ref()
                            .map(|m| m.value.as_str())
                            .unwrap_or_default();
                        let other = sources
                            .get(name)
                            .ok_or_else(|| format!("unknown source {name}"))?;
                        Check::Missing(MissingCheck::new(cfg, source.clone(), other.clone()))
                    }
                    RuleKind::SlowQueries => {
                        Check::SlowQueries(SlowQueriesCheck::new(cfg, source.clone()))
                    }
                    RuleKind::Sql => Check::Sql(SqlCheck::new(cfg, source.clone())),
                    RuleKind::HttpErrors => unreachable!("handled above"),
                }
            }
        };
        let source = match &check {
            Check::HttpErrors(c) => c.source_label.clone(),
            _ => cfg.source.value.clone(),
        };
        Ok(Rule {
            name: cfg.name.value.clone(),
            kind: cfg.kind,
            source,
            severity: cfg.severity,
            alertname: cfg
                .alertname
                .clone()
                .unwrap_or_else(|| default_alertname(cfg.kind).to_string()),
            for_: cfg.for_.0,
            keep_firing_for: cfg.keep_firing_for.0,
            schedule,
            labels: cfg.labels.clone(),
            annotations,
            max_alerts: cfg.max_alerts,
            check,
        })
    }

    /// Whether this rule and `other` share their statements (one evaluation serves both):
    /// both `stuck` on the same source and statuses, on the same schedule. Their thresholds,
    /// caps, severities and labels may differ.
    pub fn shares_with(&self, other: &Rule) -> bool {
        match (&self.check, &other.check) {
            (Check::Stuck(a), Check::Stuck(b)) => {
                a.shares_with(b) && self.schedule.same(&other.schedule)
            }
            _ => false,
        }
    }

    /// Runs rules that share their statements (see [`Rule::shares_with`]) once; an outcome
    /// per rule, in order. A `stuck` rule's findings go to `sink` as they are decoded (see
    /// [`FindingSink`]); the other kinds' stay in their outcome.
    pub async fn evaluate_group(
        rules: &[Arc<Rule>],
        sink: Option<&mut (dyn FindingSink + Send)>,
    ) -> Vec<Result<Outcome, SourceError>> {
        let checks: Vec<&StuckCheck> = rules
            .iter()
            .filter_map(|r| match &r.check {
                Check::Stuck(c) => Some(c),
                _ => None,
            })
            .collect();
        if checks.len() != rules.len() {
            let mut out = Vec::with_capacity(rules.len());
            for r in rules {
                out.push(r.evaluate().await);
            }
            return out;
        }
        match StuckCheck::evaluate_shared(&checks, sink).await {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(e) => rules.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// Runs the rule once against its source(s).
    pub async fn evaluate(&self) -> Result<Outcome, SourceError> {
        match &self.check {
            Check::Stuck(c) => c.evaluate().await,
            Check::Missing(c) => c.evaluate().await,
            Check::HttpErrors(c) => c.evaluate().await,
            Check::SlowQueries(c) => c.evaluate().await,
            Check::Sql(c) => c.evaluate().await,
        }
    }

    /// The statuses the rule watches (the `status` label values).
    pub fn statuses(&self) -> &[String] {
        match &self.check {
            Check::Stuck(c) => &c.statuses,
            Check::Missing(c) => &c.statuses,
            Check::SlowQueries(_) | Check::Sql(_) | Check::HttpErrors(_) => &[],
        }
    }

    /// The threshold, for templates.
    pub fn older_than(&self) -> Duration {
        match &self.check {
            Check::Stuck(c) => c.older_than,
            Check::Missing(c) => c.older_than,
            Check::SlowQueries(c) => c.older_than,
            Check::Sql(_) | Check::HttpErrors(_) => Duration::ZERO,
        }
    }

    /// The SQL the rule runs on its source without kept state (`once`, `check`, tests, the
    /// benchmark); for `http_errors`, what it reads.
    pub async fn sql(&self) -> Result<String, SourceError> {
        match &self.check {
            Check::Stuck(c) => c.sql().await,
            Check::Missing(c) => c.sql().await,
            Check::SlowQueries(c) => Ok(c.sql().to_string()),
            Check::Sql(c) => Ok(c.sql.clone()),
            Check::HttpErrors(c) => Ok(c.describe().to_string()),
        }
    }

    /// The other source a `missing` rule looks orders up in.
    pub fn other_source(&self) -> Option<&str> {
        match &self.check {
            Check::Missing(c) => Some(c.other_name()),
            _ => None,
        }
    }
}

/// `alertname` per kind, as DESIGN.md's contract says.
pub fn default_alertname(kind: RuleKind) -> &'static str {
    match kind {
        RuleKind::Stuck => "StuckOrder",
        RuleKind::Missing => "LostOrder",
        RuleKind::HttpErrors => "Http5xxRatioHigh",
        RuleKind::SlowQueries => "SlowDbQuery",
        RuleKind::Sql => "SqlCheck",
    }
}

/// The alert label naming a signal's key, per kind.
pub fn key_label(kind: RuleKind) -> &'static str {
    match kind {
        RuleKind::SlowQueries => "queryid",
        RuleKind::HttpErrors => "service",
        _ => "id",
    }
}
