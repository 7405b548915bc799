//! One evaluation: a rule group's statements, then each rule's metrics, alert state,
//! persistence and notification; the loop that runs a group on its schedule; `once`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::shared::{OWN_RULES, RuleStatus, Shared, StartError, build_parts};
use crate::alert::{RuleTiming, Transition};
use crate::config::Loaded;
use crate::rule::observe::{Applier, RuleParts};
use crate::rule::{Check, Finding, FindingSink, Outcome, Rule};
use crate::source::SourceError;

/// Evaluates the selected rules (all when `only` is empty) once, with no alert state: `once`.
pub async fn evaluate_once(
    loaded: &Loaded,
    only: &[String],
) -> Result<Vec<(Arc<Rule>, Result<Outcome, SourceError>)>, StartError> {
    // A status log is read the daemon's way (one streamed read of the log, then every rule
    // from that state): cheaper than a statement per rule probing every order that ever passed
    // through the watched statuses.
    let (_sources, rules) = build_parts(loaded, true)?;
    let selected: Vec<Arc<Rule>> = rules
        .into_iter()
        .filter(|r| only.is_empty() || only.contains(&r.name))
        .collect();
    // Rules that share their statements run them once.
    let futures = crate::rule::share_groups(&selected)
        .into_iter()
        .map(|group| async move {
            let results = Rule::evaluate_group(&group, None).await;
            group.into_iter().zip(results).collect::<Vec<_>>()
        });
    let mut done: Vec<(Arc<Rule>, Result<Outcome, SourceError>)> = futures_join_all(futures)
        .await
        .into_iter()
        .flatten()
        .collect();
    // In config order, as selected.
    done.sort_by_key(|(r, _)| selected.iter().position(|s| Arc::ptr_eq(s, r)));
    Ok(done)
}

async fn futures_join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("evaluation task panicked"));
    }
    out
}

/// The findings of a group's rules, each to its rule's [`Applier`].
struct Appliers<'a>(Vec<Applier<'a>>);

impl FindingSink for Appliers<'_> {
    fn findings(&mut self, rule: usize, chunk: &[Finding]) {
        self.0[rule].findings(chunk);
    }
}

/// Runs a group of rules that share their statements (one rule alone is a group) on their
/// schedule until `stop`.
pub(super) async fn rule_loop(
    shared: Arc<Shared>,
    rules: Vec<Arc<Rule>>,
    mut stop: watch::Receiver<bool>,
) {
    let rule = rules[0].clone();
    // Interval rules run at once (users want an answer on start); cron rules wait for their time.
    let mut next = match rule.schedule {
        crate::rule::Schedule::Every(_) => Utc::now(),
        _ => rule.schedule.next_after(Utc::now()),
    };
    loop {
        let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let started = Utc::now();
        // An evaluation in flight is finished even during shutdown: its state is then persisted.
        shared.evaluate_group(&rules).await;
        next = rule.schedule.next_after(started).max(Utc::now());
        if *stop.borrow() {
            return;
        }
    }
}

impl Shared {
    /// One evaluation of `rule`: query, metrics, alert state, persistence, notification.
    pub async fn evaluate(&self, rule: &Arc<Rule>) {
        self.evaluate_group(std::slice::from_ref(rule)).await
    }

    /// One evaluation of rules that share their statements (see `Rule::shares_with`; one
    /// rule alone is a group): the statements once, then each rule's metrics, alert state,
    /// persistence and notification. Each rule's evaluation time is the shared statements'.
    #[tracing::instrument(name = "evaluate", skip_all, fields(
        rule = %rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(","),
        source = %rules[0].source, kind = rules[0].kind.as_str(), count = tracing::field::Empty,
        error = tracing::field::Empty))]
    pub async fn evaluate_group(&self, rules: &[Arc<Rule>]) {
        let now = Utc::now();
        let live: Vec<Arc<Rule>> = rules
            .iter()
            .filter(|rule| {
                let Some(why) = self.stale_reason(rule) else {
                    return true;
                };
                // Stale data neither fires nor resolves: the rule waits for the standby.
                let mut st = self.rule_status.write().expect("status lock");
                if let Some(s) = st.get_mut(&rule.name) {
                    if s.error.as_deref() != Some(why.as_str()) {
                        tracing::warn!(rule = %rule.name, reason = %why, "rule paused: its alerts are kept as they are");
                    }
                    s.health = "err";
                    s.error = Some(why);
                    s.last_evaluation = Some(now);
                }
                false
            })
            .cloned()
            .collect();
        if live.is_empty() {
            return;
        }
        // Each rule's findings go to its alerts as they are decoded.
        let mut sink = Appliers(
            live.iter()
                .map(|rule| {
                    let timing = RuleTiming {
                        for_: rule.for_,
                        keep_firing_for: rule.keep_firing_for,
                        interval: rule.schedule.typical_interval(now),
                    };
                    Applier::new(&self.book, self.rule_parts(rule), timing, now)
                })
                .collect(),
        );
        let started = Instant::now();
        let results = Rule::evaluate_group(&live, Some(&mut sink)).await;
        let took = started.elapsed().as_secs_f64();
        for ((rule, result), applier) in live.iter().zip(results).zip(sink.0) {
            if let (Ok(o), 1) = (&result, live.len()) {
                tracing::Span::current().record("count", o.count);
            }
            self.record(rule, result, applier, now, took);
        }
    }

    /// What one rule's evaluation found (`result`, at `now`, taking `took` seconds; its
    /// findings so far applied by `applier`): metrics, alert state, persistence, notification.
    fn record(
        &self,
        rule: &Arc<Rule>,
        result: Result<Outcome, SourceError>,
        applier: Applier<'_>,
        now: DateTime<Utc>,
        took: f64,
    ) {
        let m = &self.metrics;
        m.rule_evaluations.with_label_values(&[&rule.name]).inc();
        m.rule_evaluation_duration
            .with_label_values(&[&rule.name])
            .observe(took);
        let mut status = RuleStatus {
            name: rule.name.clone(),
            kind: rule.kind,
            source: rule.source.clone(),
            health: "ok",
            last_evaluation: Some(now),
            evaluation_duration_seconds: Some(took),
            error: None,
            failing_since: None,
            count: None,
            capped: false,
        };
        match result {
            Ok(mut outcome) => {
                self.source_ok(&rule.source);
                if let Some(other) = rule.other_source() {
                    self.source_ok(other);
                }
                m.rule_last_evaluation
                    .with_label_values(&[&rule.name])
                    .set(now.timestamp_millis() as f64 / 1000.0);
                let sev = rule.severity.as_str();
                for st in rule.statuses() {
                    let labels = [rule.name.as_str(), rule.source.as_str(), st.as_str(), sev];
                    match outcome.per_status.get(st) {
                        Some(s) => {
                            m.stuck_orders
                                .with_label_values(&labels)
                                .set(s.count as i64);
                            m.stuck_oldest_age
                                .with_label_values(&labels)
                                .set(s.oldest_age_seconds);
                        }
                        None => {
                            m.stuck_orders.with_label_values(&labels).set(0);
                            let _ = m.stuck_oldest_age.remove_label_values(&labels);
                        }
                    }
                }
                for (service, ratio) in &outcome.http_ratios {
                    m.http_5xx_ratio.with_label_values(&[service]).set(*ratio);
                }
                if let Check::SlowQueries(_) = rule.check {
                    let slowest = outcome
                        .signals
                        .iter()
                        .filter_map(|s| s.value)
                        .fold(0.0, f64::max);
                    m.db_slow_queries
                        .with_label_values(&[&rule.source])
                        .set(outcome.count as i64);
                    m.db_slowest_query_seconds
                        .with_label_values(&[&rule.source])
                        .set(slowest);
                }
                m.rule_findings_capped
                    .with_label_values(&[&rule.name])
                    .set(outcome.truncated() as i64);
                status.count = Some(outcome.count);
                self.trends.record(&rule.name, now, outcome.count);
                status.capped = outcome.truncated();
                // The book's bookkeeping and the store's writes grow with the alerts: off the
                // async workers, so HTTP answers do not wait behind them.
                crate::blocking::off_worker(|| {
                    let changes = applier.finish(&mut outcome);
                    if rule.kind == crate::config::RuleKind::Missing {
                        // Lost, not found in another status (StatusMismatch), and an order,
                        // not the overflow alert.
                        let lost = changes
                            .iter()
                            .filter(|t| {
                                t.starts_episode()
                                    && &*t.alert.key != crate::rule::observe::OVERFLOW_KEY
                                    && t.alert.labels.get("other_status").is_none()
                            })
                            .count();
                        if lost > 0 {
                            m.lost_orders
                                .with_label_values(&[&rule.source, &rule.name])
                                .inc_by(lost as u64);
                        }
                    }
                    tracing::debug!(rule = %rule.name, source = %rule.source, count = outcome.count,
                        capped = outcome.truncated(), changes = changes.len(),
                        took_ms = (took * 1000.0).round() as u64, "rule evaluated");
                    self.after_change(changes, now);
                });
            }
            Err(e) => {
                // What it saw before failing stays; nothing resolves.
                let changes = applier.abandon();
                if !changes.is_empty() {
                    crate::blocking::off_worker(|| self.after_change(changes, now));
                }
                m.rule_evaluation_failures
                    .with_label_values(&[&rule.name])
                    .inc();
                let prev = self
                    .rule_status
                    .read()
                    .expect("status lock")
                    .get(&rule.name)
                    .cloned();
                let was_ok = prev.as_ref().is_none_or(|s| s.health != "err");
                // The source's fault (unreachable, shutting down, out of resources) is the
                // source's health: SourceDown. Anything else (a wrong column, a bad cast, a
                // query the server refuses) is this rule's: the source stays up, and after
                // `rule_failing_after` a RuleFailing alert names the rule. Only the rule's own
                // failures count towards it.
                let source_fault = e.is_source_fault();
                let failing_since = prev.as_ref().and_then(|s| s.failing_since);
                if was_ok || (failing_since.is_none() && !source_fault) {
                    if source_fault {
                        tracing::warn!(rule = %rule.name, source = %rule.source, error = %e, "rule evaluation failed: the source did not answer; its alerts are kept as they are");
                    } else {
                        tracing::warn!(rule = %rule.name, source = %rule.source, error = %e, "rule failed: the source answered with an error (check the rule's statuses and the order model's columns); its alerts are kept as they are");
                    }
                } else {
                    tracing::debug!(rule = %rule.name, source = %rule.source, error = %e, "rule evaluation still failing");
                }
                tracing::Span::current().record("error", tracing::field::display(&e));
                if source_fault {
                    self.source_failed(e.source_name(), &e);
                }
                status.health = "err";
                status.error = Some(e.to_string());
                // An outage neither starts the clock nor stops one already running.
                status.failing_since = if source_fault {
                    failing_since
                } else {
                    Some(failing_since.unwrap_or(now))
                };
                if let Some(prev) = prev {
                    status.count = prev.count;
                    status.capped = prev.capped;
                }
            }
        }
        self.rule_status
            .write()
            .expect("status lock")
            .insert(rule.name.clone(), status);
    }

    /// What every order alert of `rule` shares in this generation, made at its first use.
    fn rule_parts(&self, rule: &Arc<Rule>) -> Arc<RuleParts> {
        let mut parts = self.parts.lock().expect("parts lock");
        match parts.get(&rule.name) {
            Some(p) if Arc::ptr_eq(&p.rule, rule) => p.clone(),
            _ => {
                let p = Arc::new(RuleParts::new(rule.clone(), self.runbooks_url()));
                parts.insert(rule.name.clone(), p.clone());
                p
            }
        }
    }

    /// Gives the restored alerts of every rule its renderer (after a start or a reload).
    pub(super) fn attach_notes(&self) {
        let mut book = self.book.write().expect("book lock");
        for rule in &self.rules {
            book.attach_notes(&rule.name, &self.rule_parts(rule).notes);
        }
    }

    /// Persists, updates gauges, forgets old resolved alerts, and tells the notifiers.
    pub(super) fn after_change(&self, changes: Vec<Transition>, now: DateTime<Utc>) {
        self.book.write().expect("book lock").gc(now);
        self.persist();
        self.refresh_alert_gauges();
        self.hub.publish(changes);
    }

    /// Writes what changed in the book since the last write (nothing, in a steady state);
    /// a failed write is retried with the next.
    pub(super) fn persist(&self) {
        if let Err(e) = self.store.save_book(&self.book) {
            tracing::error!(error = %e, "cannot persist alert state; will retry");
        }
    }

    pub(super) fn refresh_alert_gauges(&self) {
        let book = self.book.read().expect("book lock");
        let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for r in self.rules.iter().map(|r| r.name.as_str()).chain(OWN_RULES) {
            counts.insert((r, "pending"), 0);
            counts.insert((r, "firing"), 0);
        }
        for (rule, pending, firing) in book.active_counts() {
            for (state, n) in [("pending", pending), ("firing", firing)] {
                if n > 0 {
                    counts.insert((rule, state), n as i64);
                }
            }
        }
        for ((rule, state), n) in counts {
            self.metrics.alerts.with_label_values(&[rule, state]).set(n);
        }
    }
}
