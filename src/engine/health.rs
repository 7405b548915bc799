//! Source health: per-status gauges, replication lag of a standby, `SourceDown` and
//! `SourceStale`, and the heartbeat the systemd watchdog is fed from.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::shared::{
    RULE_FAILING_RULE, SOURCE_CHECK_INTERVAL, SOURCE_DOWN_RULE, SOURCE_STALE_RULE, Shared,
    SourceStatus,
};
use crate::alert::{AlertState, Coverage, Observation, RuleTiming};
use crate::human::human_duration;
use crate::rule::Rule;
use crate::rule::observe::fixed_observation;
use crate::source::{Source, SourceError, Unjudgeable};

/// Per-status counts, oldest ages and unjudgeable orders of one source: from a status log's
/// kept state, else from the gauge statement.
pub(super) async fn read_gauges(source: &Source) -> Result<Gauges, SourceError> {
    let terminal = source.to_db(&source.terminal_statuses);
    if source.history().await?.is_some() {
        let sql = source.model_sql().await?;
        // Orders with a row without a time, read before the state so that only orders still
        // kept (not finished) count.
        let (nulls, timed) = match &sql.history {
            Some(hs) => null_rows(source, hs).await?,
            None => Default::default(),
        };
        let h = source.history().await?.expect("kept state");
        let counts = h.gauges();
        let mut unjudgeable: Vec<(String, Unjudgeable, i64)> = h.unjudgeable();
        unjudgeable.extend(null_time_counts(&nulls, |id| {
            h.contains(id) || !timed.contains(id)
        }));
        return Ok(Gauges {
            counts,
            unjudgeable,
        });
    }
    let sql = source.model_sql().await?;
    let Some(gauges) = &sql.gauges else {
        return Ok(Gauges::default());
    };
    let rows = source.query(gauges, &[&terminal]).await?;
    let mut out = Gauges::default();
    for r in &rows {
        let status: String = r.get(0);
        for (why, n) in [
            (Unjudgeable::NullTime, r.get::<_, i64>(3)),
            (Unjudgeable::FutureTime, r.get::<_, i64>(4)),
        ] {
            if n > 0 {
                out.unjudgeable.push((status.clone(), why, n));
            }
        }
        out.counts.push((status, r.get(1), r.get(2)));
    }
    Ok(out)
}

/// The `(status, id)` rows of a status log without a time in active statuses, and which of
/// those orders have timed rows too (finished ones among them are not counted).
pub(super) async fn null_rows(
    source: &Source,
    hs: &crate::source::HistorySql,
) -> Result<(Vec<tokio_postgres::Row>, HashSet<String>), SourceError> {
    let terminal = source.to_db(&source.terminal_statuses);
    let rows = source.query(&hs.null_times, &[&terminal]).await?;
    if rows.is_empty() {
        return Ok((rows, HashSet::new()));
    }
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r.get::<_, String>(1))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let timed = source
        .query_ids(&hs.refetch, &ids)
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    Ok((rows, timed))
}

/// `(status, id)` rows of `null_times` → count per status of the ids `live` says are live:
/// kept, or with no timed row at all.
pub(super) fn null_time_counts(
    rows: &[tokio_postgres::Row],
    kept: impl Fn(&str) -> bool,
) -> Vec<(String, Unjudgeable, i64)> {
    let mut per: BTreeMap<String, i64> = BTreeMap::new();
    for r in rows {
        let id: String = r.get(1);
        if kept(&id) {
            *per.entry(r.get(0)).or_default() += 1;
        }
    }
    per.into_iter()
        .map(|(s, n)| (s, Unjudgeable::NullTime, n))
        .collect()
}

/// What [`read_gauges`] found, statuses as stored.
#[derive(Default)]
pub(super) struct Gauges {
    pub(super) counts: Vec<(String, i64, Option<f64>)>,
    pub(super) unjudgeable: Vec<(String, Unjudgeable, i64)>,
}

pub(super) async fn gauges_loop(
    shared: Arc<Shared>,
    source: Arc<Source>,
    mut stop: watch::Receiver<bool>,
) {
    let every = shared.config.config.gauges_interval.0;
    let mut known: HashSet<String> = HashSet::new();
    let mut gauges_failing = false;
    loop {
        match read_gauges(&source).await {
            Ok(g) => {
                shared.source_ok(&source.name);
                gauges_failing = false;
                let mut now_known = HashSet::new();
                let rows = crate::source::fold_statuses(
                    g.counts
                        .into_iter()
                        .map(|(s, n, age)| (source.from_db(s), n, age))
                        .collect(),
                    source.statuses.as_ref(),
                );
                for (status, n, age) in rows {
                    shared
                        .metrics
                        .orders
                        .with_label_values(&[&source.name, &status])
                        .set(n);
                    if let Some(age) = age {
                        shared
                            .metrics
                            .order_status_oldest_age
                            .with_label_values(&[&source.name, &status])
                            .set(age);
                    }
                    now_known.insert(status);
                }
                for gone in known.difference(&now_known) {
                    let _ = shared
                        .metrics
                        .orders
                        .remove_label_values(&[&source.name, gone]);
                    let _ = shared
                        .metrics
                        .order_status_oldest_age
                        .remove_label_values(&[&source.name, gone]);
                }
                known = now_known;
                // Unjudgeable orders: statuses folded as above (a status that is not a label of
                // the counts is `other`), so no data value becomes a label.
                let mut per: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
                for (status, why, n) in g.unjudgeable {
                    let name = source.from_db(status);
                    let label = if known.contains(&name) {
                        name
                    } else {
                        crate::source::OTHER_STATUS.to_string()
                    };
                    *per.entry((label, why.as_str())).or_default() += n;
                }
                let m = &shared.metrics.orders_unjudgeable;
                for ((status, why), n) in &per {
                    m.with_label_values(&[source.name.as_str(), status.as_str(), why])
                        .set(*n);
                }
                let now_unjudgeable: HashSet<(String, &'static str)> = per.into_keys().collect();
                let mut series = shared
                    .metrics
                    .unjudgeable_series
                    .lock()
                    .expect("series lock");
                let before = series.entry(source.name.clone()).or_default();
                for (status, why) in before.difference(&now_unjudgeable) {
                    let _ = m.remove_label_values(&[source.name.as_str(), status.as_str(), why]);
                }
                *before = now_unjudgeable;
            }
            Err(e) if e.is_source_fault() => shared.source_failed(&source.name, &e),
            // The model's statement is wrong (a column renamed): the source answers; the
            // rules on it fail too and say so (RuleFailing). Logged once, not every round.
            Err(e) => {
                if !gauges_failing {
                    tracing::warn!(source = %source.name, error = %e, "per-status gauges failed: the source answered with an error (check the order model's columns)");
                }
                gauges_failing = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Watches whether a source is a standby and how far behind: the lag gauge, the stale flag
/// (which pauses its rules) and the log line when either changes.
pub(super) async fn replication_loop(
    shared: Arc<Shared>,
    source: Arc<Source>,
    mut stop: watch::Receiver<bool>,
) {
    let every = SOURCE_CHECK_INTERVAL.min(shared.config.config.gauges_interval.0);
    // A status log is read at start even when no rule or gauge would ask yet: `/readyz`
    // waits for it. Rules retry it when it fails.
    if let Err(e) = source.history().await {
        shared.source_failed(&source.name, &e);
    }
    loop {
        // A probe that answers proves the source reachable: a source that only a `missing`
        // rule's other side or the order lookup reads (no rules of its own, no gauges) is
        // otherwise never marked reached, and `/readyz` would wait for it for ever.
        if let Ok(lag) = source.replication_lag().await {
            shared.source_ok(&source.name);
            shared.replication(&source, lag);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

pub(super) async fn source_down_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        shared.check_sources(Utc::now());
        *shared.heartbeat.lock().expect("heartbeat") = std::time::Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(SOURCE_CHECK_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

impl Shared {
    /// Why `rule` must not run now: a source it reads is a standby too far behind.
    pub(super) fn stale_reason(&self, rule: &Rule) -> Option<String> {
        let st = self.source_status.read().expect("status lock");
        [Some(rule.source.as_str()), rule.other_source()]
            .into_iter()
            .flatten()
            .find_map(|name| {
                let s = st.get(name)?;
                s.stale.then(|| {
                    format!(
                        "source {name} is a standby {} behind its primary (max_replication_lag): not evaluated on stale data",
                        s.lag_text()
                    )
                })
            })
    }

    /// Records a replication probe of `source` (`None`: a primary).
    pub(super) fn replication(&self, source: &Source, lag: Option<f64>) {
        let name = source.name.as_str();
        let m = &self.metrics;
        match lag {
            Some(l) => m.source_replication_lag.with_label_values(&[name]).set(l),
            None => {
                let _ = m.source_replication_lag.remove_label_values(&[name]);
            }
        }
        let over = lag.is_some_and(|l| l > source.max_replication_lag.as_secs_f64());
        let mut st = self.source_status.write().expect("status lock");
        if let Some(s) = st.get_mut(name) {
            // Two probes in a row either way, so a lag hovering at the limit does not flap.
            let stale = if s.stale {
                over || s.over_lag
            } else {
                over && s.over_lag
            };
            s.over_lag = over;
            m.source_stale.with_label_values(&[name]).set(stale as i64);
            if stale != s.stale {
                if stale {
                    tracing::warn!(
                        source = name,
                        lag_seconds = lag.unwrap_or(0.0),
                        "source is a standby beyond max_replication_lag: its rules are paused"
                    );
                } else {
                    tracing::info!(source = name, "standby caught up: its rules run again");
                }
            }
            s.replication_lag_seconds = lag;
            s.stale = stale;
        }
    }

    pub(super) fn source_ok(&self, name: &str) {
        // An `http_errors` rule's `source` (`prometheus`, `scrape`) is no database.
        if !self.sources.contains_key(name) {
            return;
        }
        self.metrics.source_up.with_label_values(&[name]).set(1);
        let mut st = self.source_status.write().expect("status lock");
        if let Some(s) = st.get_mut(name) {
            if s.failing_since.is_some() {
                tracing::info!(source = name, "source reachable again");
            }
            s.up = Some(true);
            s.reached = true;
            s.failing_since = None;
            s.last_error = None;
        }
    }

    pub(super) fn source_failed(&self, name: &str, e: &SourceError) {
        if !self.sources.contains_key(name) {
            return;
        }
        self.metrics.source_up.with_label_values(&[name]).set(0);
        let mut st = self.source_status.write().expect("status lock");
        if let Some(s) = st.get_mut(name) {
            if s.failing_since.is_none() {
                tracing::warn!(source = name, address = %s.target, error = %e, "source failing (unreachable, refused or erroring); retrying");
                s.failing_since = Some(Utc::now());
            }
            s.up = Some(false);
            s.last_error = Some(e.to_string());
        }
    }

    /// Raises `SourceDown` for sources failing longer than `source_down_after`, resolves it for
    /// sources that answer again.
    fn check_sources(&self, now: DateTime<Utc>) {
        let after = self.config.config.source_down_after.0;
        let statuses = self.source_status.read().expect("status lock").clone();
        let mut obs = Vec::new();
        {
            let book = self.book.read().expect("book lock");
            for (name, s) in &statuses {
                let Some(since) = s.failing_since else {
                    continue;
                };
                let already = book
                    .get(SOURCE_DOWN_RULE, name)
                    .is_some_and(|a| a.state == AlertState::Firing);
                let down_for = (now - since).to_std().unwrap_or_default();
                if !already && down_for < after {
                    continue;
                }
                let error = s.last_error.clone().unwrap_or_default();
                let labels = BTreeMap::from([
                    ("alertname".to_string(), "SourceDown".to_string()),
                    ("rule".to_string(), SOURCE_DOWN_RULE.to_string()),
                    ("source".to_string(), name.clone()),
                    ("severity".to_string(), "critical".to_string()),
                ]);
                let annotations = BTreeMap::from([
                    (
                        "summary".to_string(),
                        format!(
                            "orderwatch cannot query source {name} ({}) for {}",
                            s.target,
                            human_duration(down_for)
                        ),
                    ),
                    (
                        "description".to_string(),
                        format!(
                            "Rules on {name} are not evaluated: their alerts are frozen, not resolved. Last error: {error}"
                        ),
                    ),
                ]);
                obs.push(fixed_observation(
                    name,
                    labels,
                    annotations,
                    &self.runbooks_url(),
                    "SourceDown",
                    since,
                    true,
                ));
            }
        }
        let timing = RuleTiming {
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            interval: SOURCE_CHECK_INTERVAL,
        };
        let changes = self.book.write().expect("book lock").apply(
            SOURCE_DOWN_RULE,
            timing,
            now,
            obs,
            Coverage::All,
        );
        if !changes.is_empty() {
            self.after_change(changes, now);
        }
        let runbooks = self.runbooks_url();
        let stale: Vec<Observation> = statuses
            .iter()
            .filter(|(_, s)| s.stale)
            .map(|(name, s)| {
                let lag = s.lag_text();
                fixed_observation(
                    name,
                    BTreeMap::from([
                        ("alertname".to_string(), "SourceStale".to_string()),
                        ("rule".to_string(), SOURCE_STALE_RULE.to_string()),
                        ("source".to_string(), name.clone()),
                        ("severity".to_string(), "critical".to_string()),
                    ]),
                    BTreeMap::from([
                        (
                            "summary".to_string(),
                            format!("Source {name} ({}) is a standby {lag} behind its primary", s.target),
                        ),
                        (
                            "description".to_string(),
                            format!(
                                "Replication lag {lag} is beyond max_replication_lag: rules on {name} are not evaluated (their alerts neither fire nor resolve) until it catches up. Check the standby's WAL receiver and replay (pg_stat_wal_receiver, pg_is_wal_replay_paused())."
                            ),
                        ),
                        ("lag".to_string(), lag),
                    ]),
                    &runbooks,
                    "SourceStale",
                    now,
                    true,
                )
            })
            .collect();
        let changes = self.book.write().expect("book lock").apply(
            SOURCE_STALE_RULE,
            timing,
            now,
            stale,
            Coverage::All,
        );
        if !changes.is_empty() {
            self.after_change(changes, now);
        }
        let failing = self.failing_rules(now, &statuses, &runbooks);
        let changes = self.book.write().expect("book lock").apply(
            RULE_FAILING_RULE,
            timing,
            now,
            failing,
            Coverage::All,
        );
        if !changes.is_empty() {
            self.after_change(changes, now);
        }
    }

    /// `RuleFailing` for each rule whose evaluations have failed for `rule_failing_after`
    /// while its source answers (a source that does not is `SourceDown`'s), one alert per
    /// rule, keyed by its name; it resolves at the rule's next success.
    fn failing_rules(
        &self,
        now: DateTime<Utc>,
        sources: &BTreeMap<String, SourceStatus>,
        runbooks: &str,
    ) -> Vec<Observation> {
        let after = self.config.config.rule_failing_after.0;
        let rules = self.rule_status.read().expect("status lock").clone();
        let book = self.book.read().expect("book lock");
        rules
            .values()
            .filter_map(|r| {
                let since = r.failing_since?;
                let source_down = sources.get(&r.source).is_some_and(|s| s.failing_since.is_some());
                let already = book
                    .get(RULE_FAILING_RULE, &r.name)
                    .is_some_and(|a| a.state == AlertState::Firing);
                let failing_for = (now - since).to_std().unwrap_or_default();
                // While its source is down SourceDown speaks; one already firing stays so (it
                // resolves at the rule's next success, not because the source went away).
                if !already && (source_down || failing_for < after) {
                    return None;
                }
                let error = r.error.clone().unwrap_or_default();
                Some(fixed_observation(
                    &r.name,
                    BTreeMap::from([
                        ("alertname".to_string(), "RuleFailing".to_string()),
                        ("rule".to_string(), r.name.clone()),
                        ("source".to_string(), r.source.clone()),
                        ("severity".to_string(), "critical".to_string()),
                    ]),
                    BTreeMap::from([
                        (
                            "summary".to_string(),
                            format!(
                                "Rule {} on {} has failed for {}: it checks nothing until it runs again",
                                r.name,
                                r.source,
                                human_duration(failing_for)
                            ),
                        ),
                        (
                            "description".to_string(),
                            format!(
                                "The rule's query fails (the database answers with an error, or the rule's own target does not answer), so its alerts neither fire nor resolve. Run `orderwatch check` for the config location at fault. Last error: {error}"
                            ),
                        ),
                        ("error".to_string(), error),
                    ]),
                    runbooks,
                    "RuleFailing",
                    since,
                    true,
                ))
            })
            .collect()
    }
}
