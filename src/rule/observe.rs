//! From an evaluation's findings to observations for the alert book: labels (the rule-wide
//! part shared, see [`Labels`]) and where annotations come from (an order's rendered when a
//! message is made, see [`OrderNotes`]; a signal's kept as made).
//!
//! Past `max_alerts` a finding is counted, not built, unless it keeps an existing alert alive;
//! an order whose alert is active and unchanged is only touched ([`unchanged`]): a steady
//! evaluation of 100 000 stuck orders builds nothing.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Check, Finding, Outcome, Rule, Signal, default_alertname, key_label};
use crate::alert::{
    Alert, AlertBook, Annotate, Coverage, Notes, Observation, Pass, RuleTiming, Touch, Transition,
};
use crate::human::human_duration;
use crate::labels::{Labels, Str, intern};

/// The key of the alert that counts the orders past `max_alerts`.
pub const OVERFLOW_KEY: &str = "_overflow";

/// The label every alert orderwatch raises carries, so Alertmanager's inhibit rules and the
/// runbooks can tell its alerts from the Prometheus rules' (`path="prometheus"`).
pub const PATH_LABEL: (&str, &str) = ("path", "orderwatch");

/// The alertname of a `missing` rule's finding whose order the other database has in a
/// status that disagrees.
const MISMATCH: &str = "StatusMismatch";

/// Labels that an order's alert holds itself (never taken from the shared part).
const ORDER_OWN: [&str; 3] = ["status", "order_id", "other_status"];

/// What every order alert of one rule shares, built once per rule and configuration
/// generation: the same [`Arc`]s in every alert, so an unchanged alert is told by pointer.
pub struct RuleParts {
    /// The rule.
    pub rule: Arc<Rule>,
    /// Labels every order alert of the rule carries: the rule's `labels`, `alertname`,
    /// `rule`, `source`, `severity`, `other_source`, `path`.
    pub shared: Arc<[(Str, Str)]>,
    /// Renders an order alert's annotations.
    pub notes: Notes,
    /// This daemon's runbooks page.
    pub runbooks: String,
}

impl RuleParts {
    /// The parts of `rule`, its alerts linking to `runbooks`.
    pub fn new(rule: Arc<Rule>, runbooks: String) -> RuleParts {
        let mut pairs: Vec<(Str, Str)> = rule
            .labels
            .iter()
            .map(|(k, v)| (intern(k), intern(v)))
            .collect();
        pairs.push((intern("alertname"), intern(&rule.alertname)));
        pairs.push((intern("rule"), intern(&rule.name)));
        pairs.push((intern("source"), intern(&rule.source)));
        pairs.push((intern("severity"), intern(rule.severity.as_str())));
        if let Some(other) = rule.other_source() {
            pairs.push((intern("other_source"), intern(other)));
        }
        pairs.push((intern(PATH_LABEL.0), intern(PATH_LABEL.1)));
        let shared = Labels::shared_list(
            pairs
                .into_iter()
                .filter(|(k, _)| !ORDER_OWN.contains(&k.as_ref())),
        );
        let notes = Notes::rendered(OrderNotes {
            rule: rule.clone(),
            runbooks: runbooks.clone(),
        });
        RuleParts {
            rule,
            shared,
            notes,
            runbooks,
        }
    }

    fn in_shared(&self, name: &str) -> bool {
        // A few names, most of other lengths than `name`: compared without reading their
        // bytes (this runs for every label column of every fetched row).
        self.shared.iter().any(|(k, _)| **k == *name)
    }

    /// The alertname of finding `f` when it differs from the rule's.
    fn own_alertname(&self, f: &Finding) -> Option<&'static str> {
        let rule = &self.rule;
        match (&rule.check, &f.other_status) {
            (Check::Missing(_), Some(_)) if rule.alertname == default_alertname(rule.kind) => {
                Some(MISMATCH)
            }
            _ => None,
        }
    }
}

/// The context an order rule's annotation templates see, for a sample order of `rule` whose
/// source has the label columns `labels`: what `check` renders the templates against.
pub fn sample_context(rule: &Rule, labels: &[String]) -> minijinja::Value {
    let older_than = rule.older_than();
    let age = older_than + Duration::from_secs(600);
    let labels: BTreeMap<&str, &str> = labels.iter().map(|l| (l.as_str(), "sample")).collect();
    let other_status: Option<&str> = None;
    minijinja::context! {
        order_id => "JW-SAMPLE", status => rule.statuses().first().cloned().unwrap_or_default(),
        age => human_duration(age), age_seconds => age.as_secs() as i64,
        entered_at => (Utc::now() - age).to_rfc3339(), older_than => human_duration(older_than),
        rule => rule.name, source => rule.source, severity => rule.severity.as_str(),
        labels => labels, other_source => rule.other_source().unwrap_or_default(),
        other_status => other_status,
    }
}

/// Renders an order alert's annotations from its data (order id, status, when it entered
/// it, allow-listed labels) and its rule's templates, when a message is made: the age is the
/// age then, and no alert keeps a copy.
pub struct OrderNotes {
    rule: Arc<Rule>,
    runbooks: String,
}

impl Annotate for OrderNotes {
    fn annotations(&self, a: &Alert, now: DateTime<Utc>) -> BTreeMap<String, String> {
        let rule = &*self.rule;
        let status = a.labels.get("status").unwrap_or_default();
        let other_status = a.labels.get("other_status");
        let entered_at = a.entered_at.unwrap_or(a.starts_at);
        // The allow-listed columns: the alert's own labels but the order's identity.
        let labels: BTreeMap<&str, &str> = a
            .labels
            .own()
            .iter()
            .filter(|(k, _)| !ORDER_OWN.contains(&k.as_ref()) && k.as_ref() != "alertname")
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .collect();
        let mut annotations =
            order_annotations(rule, &a.key, status, other_status, entered_at, &labels, now);
        annotations.entry("runbook_url".into()).or_insert_with(|| {
            runbook_url(&self.runbooks, &a.labels, default_alertname(rule.kind))
        });
        annotations
    }
}

/// A finding's annotations as its alert would carry them now (`once --annotations`).
pub fn finding_annotations(
    rule: &Rule,
    f: &Finding,
    now: DateTime<Utc>,
) -> BTreeMap<String, String> {
    let labels: BTreeMap<&str, &str> = f
        .labels
        .iter()
        .filter(|(k, _)| !ORDER_OWN.contains(k) && *k != "alertname")
        .collect();
    order_annotations(
        rule,
        &f.order_id,
        &f.status,
        f.other_status.as_deref(),
        f.entered_at,
        &labels,
        now,
    )
}

/// An order's annotations as its alert carries them: the rule's templates rendered over the
/// order (id, status, age now, allow-listed labels), the default summary when the rule has
/// none, `age` and `entered_at`. `once --annotations` shows the same for a finding.
pub fn order_annotations(
    rule: &Rule,
    order_id: &str,
    status: &str,
    other_status: Option<&str>,
    entered_at: DateTime<Utc>,
    labels: &BTreeMap<&str, &str>,
    now: DateTime<Utc>,
) -> BTreeMap<String, String> {
    let age_seconds = (now - entered_at).num_milliseconds().max(0) as f64 / 1000.0;
    let age = human_duration(Duration::from_secs_f64(age_seconds));
    let older_than = rule.older_than();
    let other = rule.other_source().unwrap_or_default();
    let ctx = minijinja::context! {
        order_id => order_id, status => status, age => age,
        age_seconds => age_seconds.round() as i64,
        entered_at => entered_at.to_rfc3339(), older_than => human_duration(older_than),
        rule => rule.name, source => rule.source, severity => rule.severity.as_str(),
        labels => labels, other_source => other, other_status => other_status,
    };
    let mut annotations = rule.annotations.render(&ctx);
    annotations
        .entry("summary".into())
        .or_insert_with(|| match (&rule.check, other_status) {
            (Check::Missing(_), None) => format!(
                "Order {order_id} is {status} in {} for {age} but {other} does not have it",
                rule.source
            ),
            (Check::Missing(_), Some(o)) => format!(
                "Order {order_id} is {status} in {} for {age} but {o} in {other}",
                rule.source
            ),
            _ => format!(
                "Order {order_id} has been {status} for {age} (threshold {})",
                human_duration(older_than)
            ),
        });
    annotations.insert("age".into(), age);
    annotations.insert("entered_at".into(), entered_at.to_rfc3339());
    annotations
}

/// The runbook an alert links to: this daemon's `/runbooks` page at the alert's section (its
/// alertname's, else `fallback`'s, an alertname).
fn runbook_url(runbooks: &str, labels: &impl crate::labels::LabelSet, fallback: &str) -> String {
    let sections = crate::runbooks::sections();
    let anchor = labels
        .label("alertname")
        .map(|a| a.to_ascii_lowercase())
        .filter(|a| sections.contains(a))
        .unwrap_or_else(|| fallback.to_ascii_lowercase());
    format!("{runbooks}#{anchor}")
}

/// An observation whose annotations are kept as made: the last touches every alert of
/// orderwatch gets, `path="orderwatch"` and a `runbook_url` (the alert's own, else this
/// daemon's `/runbooks` page at its section; `fallback`, an alertname, when its own
/// alertname has none).
pub fn fixed_observation(
    key: &str,
    mut labels: BTreeMap<String, String>,
    mut annotations: BTreeMap<String, String>,
    runbooks: &str,
    fallback: &str,
    starts_at: DateTime<Utc>,
    may_create: bool,
) -> Observation {
    labels.insert(PATH_LABEL.0.into(), PATH_LABEL.1.into());
    annotations
        .entry("runbook_url".into())
        .or_insert_with(|| runbook_url(runbooks, &labels, fallback));
    Observation {
        key: Str::from(key),
        labels: Labels::from_map(&labels),
        notes: Notes::fixed(annotations),
        starts_at,
        entered_at: None,
        may_create,
    }
}

/// The observation of a finding that is not an order (a slow query, a custom SQL row). Its
/// labels identify it and stay the same between evaluations; what describes it (a pid, the
/// query text, the previous ratio) goes to the annotations.
fn signal_observation(parts: &RuleParts, sig: &Signal, may_create: bool) -> Observation {
    let rule = &*parts.rule;
    let key_label = key_label(rule.kind);
    let mut labels = rule.labels.clone();
    for (k, v) in &sig.labels {
        labels.insert(k.clone(), v.clone());
    }
    labels.insert("alertname".into(), rule.alertname.clone());
    labels.insert("rule".into(), rule.name.clone());
    labels.insert("source".into(), rule.source.clone());
    labels.insert("severity".into(), rule.severity.as_str().into());
    if !sig.labels.contains_key(key_label) {
        labels.insert(key_label.into(), sig.key.clone());
    }
    // A share (5xx) needs more digits than seconds do.
    let value = match rule.check {
        Check::HttpErrors(_) => sig.value.map(|v| format!("{v:.4}")),
        _ => sig.value.map(|v| format!("{v:.1}")),
    }
    .unwrap_or_default();
    // Templates see both as `labels` (rule files written before the split keep working).
    let mut all = sig.labels.clone();
    all.extend(sig.details.iter().map(|(k, v)| (k.clone(), v.clone())));
    let ctx = minijinja::context! {
        key => sig.key, value => sig.value, labels => all, details => sig.details, rule => rule.name,
        source => rule.source, severity => rule.severity.as_str(),
        older_than => human_duration(rule.older_than()),
    };
    let mut annotations = rule.annotations.render(&ctx);
    let detail = |k: &str| sig.details.get(k).map_or("", String::as_str);
    annotations
        .entry("summary".into())
        .or_insert_with(|| match rule.check {
            Check::SlowQueries(_) => format!(
                "Query {} of {} on {} {} {value}s: {}",
                sig.labels.get("queryid").map_or("?", String::as_str),
                sig.labels.get("user").map_or("?", String::as_str),
                rule.source,
                if detail("pid").is_empty() {
                    "took on average"
                } else {
                    "has run for"
                },
                detail("query")
            ),
            Check::HttpErrors(_) => format!(
                "{:.1}% of {}'s answers are 5xx over the last {}{}",
                sig.value.unwrap_or_default() * 100.0,
                sig.key,
                detail("window"),
                detail("previous_ratio")
                    .parse::<f64>()
                    .ok()
                    .map(|p| format!(" (was {:.1}% the window before)", p * 100.0))
                    .unwrap_or_default()
            ),
            _ => format!("{}: {} = {value}", rule.name, sig.key),
        });
    for (k, v) in &sig.details {
        annotations.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if !value.is_empty() {
        annotations.insert("value".into(), value);
    }
    fixed_observation(
        &sig.key,
        labels,
        annotations,
        &parts.runbooks,
        default_alertname(rule.kind),
        sig.since.unwrap_or_else(Utc::now),
        may_create,
    )
}

/// The observation of stuck (or lost) order `f`.
fn order_observation(parts: &RuleParts, f: &Finding, may_create: bool) -> Observation {
    let older = chrono::Duration::from_std(parts.rule.older_than()).unwrap_or_default();
    let key = Str::from(f.order_id.as_str());
    let mut own: Vec<(Str, Str)> = Vec::with_capacity(f.labels.len() + 4);
    for (k, v) in f.labels.own() {
        // The rule's labels and orderwatch's own win over a column of the same name.
        if !parts.in_shared(k) {
            own.push((k.clone(), v.clone()));
        }
    }
    own.push((intern("status"), intern(&f.status)));
    own.push((intern("order_id"), key.clone()));
    if let Some(o) = &f.other_status {
        own.push((intern("other_status"), intern(o)));
    }
    if let Some(name) = parts.own_alertname(f) {
        own.push((intern("alertname"), intern(name)));
    }
    Observation {
        key,
        labels: Labels::new(parts.shared.clone(), own),
        notes: parts.notes.clone(),
        starts_at: f.entered_at + older,
        entered_at: Some(f.entered_at),
        may_create,
    }
}

/// Whether the alert `a` already says what an observation of `f` would: same rule-wide
/// labels (by pointer: same rule, same generation), same entry time, same own labels.
pub fn unchanged(parts: &RuleParts, a: &Alert, f: &Finding) -> bool {
    if !Arc::ptr_eq(a.labels.shared(), &parts.shared) || a.entered_at != Some(f.entered_at) {
        return false;
    }
    let own = a.labels.own();
    // A few names, mostly of different lengths: found without reading most of their bytes.
    let get = |name: &str| own.iter().find(|(k, _)| **k == *name).map(|(_, v)| &**v);
    let mut expected = 2;
    if get("status") != Some(&*f.status)
        || get("order_id") != Some(f.order_id.as_str())
        || get("other_status") != f.other_status.as_deref()
        || get("alertname") != parts.own_alertname(f)
    {
        return false;
    }
    expected +=
        usize::from(f.other_status.is_some()) + usize::from(parts.own_alertname(f).is_some());
    for (k, v) in f.labels.iter() {
        if parts.in_shared(k) {
            continue;
        }
        if get(k) != Some(v) {
            return false;
        }
        expected += 1;
    }
    own.len() == expected
}

/// The observation of finding `f` at `pos` among its rule's findings (past `max_alerts` it
/// may only keep an existing alert alive).
pub fn observation(parts: &RuleParts, f: &Finding, pos: usize) -> Observation {
    order_observation(parts, f, pos < parts.rule.max_alerts)
}

/// The overflow alert's observation, when more matched (`count`) than get an alert;
/// `first_over` is when the oldest order without an alert crossed the threshold.
fn overflow_observation(
    parts: &RuleParts,
    count: u64,
    first_over: Option<DateTime<Utc>>,
) -> Option<Observation> {
    let rule = &*parts.rule;
    if count <= rule.max_alerts as u64 {
        return None;
    }
    let more = count - rule.max_alerts as u64;
    let mut labels: BTreeMap<String, String> = rule.labels.clone();
    labels.insert("alertname".into(), rule.alertname.clone());
    labels.insert("rule".into(), rule.name.clone());
    labels.insert("source".into(), rule.source.clone());
    labels.insert("status".into(), rule.statuses().join(","));
    labels.insert("severity".into(), rule.severity.as_str().into());
    labels.insert("order_id".into(), OVERFLOW_KEY.into());
    let annotations = BTreeMap::from([
        (
            "summary".to_string(),
            format!(
                "{more} more orders match rule {} beyond the {} alerted individually ({} in total)",
                rule.name, rule.max_alerts, count
            ),
        ),
        ("count".to_string(), count.to_string()),
        ("more".to_string(), more.to_string()),
    ]);
    Some(fixed_observation(
        OVERFLOW_KEY,
        labels,
        annotations,
        &parts.runbooks,
        default_alertname(rule.kind),
        first_over.unwrap_or_else(Utc::now),
        true,
    ))
}

/// One evaluation of one rule applied to the alert book as its findings arrive, a chunk at
/// a time ([`FindingSink`]): an evaluation of 100 000 orders holds one chunk, not 100 000
/// findings. Each chunk goes through the book once under its write lock (an order whose
/// active alert already says what its row does is only touched; past `max_alerts` only what
/// keeps an existing alert alive is built, the rest is counted); what must be built is built
/// without the lock and applied under it, each key's rows in row order (a key a query model
/// returns twice ends as its last row says, every evaluation alike, and writes nothing when
/// that is what it was). [`Applier::finish`] then adds the signals and the overflow
/// alert, and settles what was not seen.
pub struct Applier<'a> {
    book: &'a RwLock<AlertBook>,
    parts: Arc<RuleParts>,
    pass: Pass,
    /// Findings applied so far (the next one's position).
    applied: usize,
    /// When the last finding applied entered its status.
    last_entered: Option<DateTime<Utc>>,
    /// When the finding at position `max_alerts` (the first without an alert) crossed the
    /// threshold.
    first_over: Option<DateTime<Utc>>,
}

impl<'a> Applier<'a> {
    /// An evaluation of `parts`' rule at `now` about to be applied to `book`.
    pub fn new(
        book: &'a RwLock<AlertBook>,
        parts: Arc<RuleParts>,
        timing: RuleTiming,
        now: DateTime<Utc>,
    ) -> Applier<'a> {
        let pass = Pass::new(&parts.rule.name, timing, now);
        Applier {
            book,
            parts,
            pass,
            applied: 0,
            last_entered: None,
            first_over: None,
        }
    }

    /// Applies the next findings, in order.
    pub fn findings(&mut self, chunk: &[Finding]) {
        let Some(last) = chunk.last() else {
            return;
        };
        let start = self.applied;
        self.applied += chunk.len();
        self.last_entered = Some(last.entered_at);
        let max = self.parts.rule.max_alerts;
        if (start..self.applied).contains(&max) {
            let older =
                chrono::Duration::from_std(self.parts.rule.older_than()).unwrap_or_default();
            self.first_over = Some(chunk[max - start].entered_at + older);
        }
        let parts = &*self.parts;
        let chunk_ref = chunk;
        apply_chunk(
            self.book,
            parts,
            &mut self.pass,
            chunk_ref.len(),
            |j| (&chunk_ref[j].order_id, start + j, Some(&chunk_ref[j])),
            |j| observation(parts, &chunk_ref[j], start + j),
        );
    }

    /// Applies the rest of `outcome` (findings it kept, then signals), the overflow alert,
    /// and settles the alerts not seen; returns every state change of the evaluation.
    pub fn finish(mut self, outcome: &mut Outcome) -> Vec<Transition> {
        let truncated = outcome.truncated();
        let kept = std::mem::take(&mut outcome.findings);
        outcome.streamed += kept.len();
        self.findings(&kept);
        let parts = &*self.parts;
        let signals = &outcome.signals;
        crate::blocking::off_worker(|| {
            apply_chunk(
                self.book,
                parts,
                &mut self.pass,
                signals.len(),
                |j| (&signals[j].key, j, None),
                |j| signal_observation(parts, &signals[j], j < parts.rule.max_alerts),
            );
            let coverage = match self.last_entered {
                _ if outcome.partial => Coverage::Seen,
                Some(last) if truncated => Coverage::EnteredBefore(last),
                _ => Coverage::All,
            };
            let overflow = overflow_observation(parts, outcome.count, self.first_over);
            let mut book = self.book.write().expect("book lock");
            if let Some(o) = overflow {
                self.pass.observe(&mut book, o);
            }
            self.pass.finish(&mut book, coverage)
        })
    }

    /// The evaluation failed part-way: what it applied stays (alerts it made, alerts it
    /// saw), nothing resolves for not being seen; returns the state changes so far.
    pub fn abandon(self) -> Vec<Transition> {
        let mut book = self.book.write().expect("book lock");
        self.pass.abandon(&mut book)
    }
}

/// Applies `n` items to `book` through `pass`: `item(j)` is the j-th's key, its position
/// among its kind (findings, signals) and, for an order, its finding; `build(j)` its
/// observation. One pass under the write lock touches what is unchanged (one lookup an item,
/// nothing built: a chunk of 1 024 takes well under a millisecond, so it runs where it is)
/// and notes what to build; those are built without the lock, then applied under it, in row
/// order, off the async workers.
fn apply_chunk<'i>(
    book: &RwLock<AlertBook>,
    parts: &RuleParts,
    pass: &mut Pass,
    n: usize,
    item: impl Fn(usize) -> (&'i str, usize, Option<&'i Finding>),
    build: impl Fn(usize) -> Observation,
) {
    let rule = &*parts.rule;
    let mut to_build: Vec<usize> = Vec::new();
    {
        // Keys to build in this chunk: a later row of one is built too, after it.
        let mut building: HashSet<&str> = HashSet::new();
        let mut book = book.write().expect("book lock");
        for j in 0..n {
            let (key, pos, finding) = item(j);
            if !building.is_empty() && building.contains(key) {
                to_build.push(j);
                continue;
            }
            let same = |a: &Alert| finding.is_some_and(|f| unchanged(parts, a, f));
            match pass.touch_if(&mut book, key, &parts.notes, same) {
                Touch::Touched => {}
                Touch::Differs => {
                    building.insert(key);
                    to_build.push(j);
                }
                // Past `max_alerts`, an order without an alert is counted, not built.
                Touch::Absent if pos < rule.max_alerts => {
                    building.insert(key);
                    to_build.push(j);
                }
                Touch::Absent => {}
            }
        }
    }
    if to_build.is_empty() {
        return;
    }
    // Building (labels, a new alert each) is the heavy part: off the async workers.
    crate::blocking::off_worker(|| {
        let built: Vec<Observation> = to_build.iter().map(|&j| build(j)).collect();
        let mut book = book.write().expect("book lock");
        for o in built {
            pass.observe(&mut book, o);
        }
    });
}

/// Applies a whole outcome of `parts`' rule (its findings kept in it) to `book` at `now`.
#[cfg(test)]
fn apply_outcome(
    book: &RwLock<AlertBook>,
    parts: &RuleParts,
    outcome: &Outcome,
    timing: RuleTiming,
    now: DateTime<Utc>,
) -> Vec<Transition> {
    let mut outcome = outcome.clone();
    let parts = Arc::new(RuleParts {
        rule: parts.rule.clone(),
        shared: parts.shared.clone(),
        notes: parts.notes.clone(),
        runbooks: parts.runbooks.clone(),
    });
    Applier::new(book, parts, timing, now).finish(&mut outcome)
}

/// One observation per fetched order among the oldest `max_alerts`, and per fetched order
/// past them that `alerted` (it has an active alert, kept alive), plus the overflow alert when
/// more orders matched than get an alert. The other findings are counted, not built.
#[cfg(test)]
fn observations(
    parts: &RuleParts,
    outcome: &Outcome,
    alerted: impl Fn(&str) -> bool,
) -> Vec<Observation> {
    let max = parts.rule.max_alerts;
    let older = chrono::Duration::from_std(parts.rule.older_than()).unwrap_or_default();
    let mut out: Vec<Observation> = (outcome.findings.iter().enumerate())
        .filter(|(i, f)| *i < max || alerted(&f.order_id))
        .map(|(i, f)| observation(parts, f, i))
        .collect();
    out.extend(overflow_observation(
        parts,
        outcome.count,
        outcome.findings.get(max).map(|f| f.entered_at + older),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertBook, Coverage, RuleTiming};

    /// A `stuck` rule with `max_alerts: 3` on a source that is never connected to.
    fn parts(annotations: &str) -> (tempfile::TempDir, RuleParts) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("rules.yaml"),
            format!("rules:\n  - name: r\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n    max_findings: 1000\n    max_alerts: 3\n    labels: {{team: ops}}\n{annotations}"),
        )
        .unwrap();
        let main = "listen: 127.0.0.1:0\nstate_dir: state\nrule_files: [rules.yaml]\nsources:\n  shop:\n    url: postgres://orderwatch@127.0.0.1:1/shop\n    orders: {table: orders, id: id, status: status, entered_at: at}\n";
        let loaded = crate::configure::load_str(&dir.path().join("orderwatch.yaml"), main).unwrap();
        let shop = &loaded.config.sources["shop"].value;
        let sources = std::collections::BTreeMap::from([(
            "shop".to_string(),
            Arc::new(crate::source::Source::build("shop", shop, false).unwrap()),
        )]);
        let rule = Rule::build(&loaded.rules[0].1, &sources).unwrap();
        let parts = RuleParts::new(Arc::new(rule), "http://ow/runbooks".into());
        (dir, parts)
    }

    /// Fires at once, resolves at once, every 30 s.
    fn timing() -> RuleTiming {
        RuleTiming {
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            interval: Duration::from_secs(30),
        }
    }

    fn outcome(n: usize) -> Outcome {
        let now = Utc::now();
        Outcome {
            count: n as u64,
            findings: (0..n)
                .map(|i| Finding {
                    order_id: format!("JW-{i}"),
                    status: "SUBMITTED".into(),
                    entered_at: now - chrono::Duration::hours(3)
                        + chrono::Duration::seconds(i as i64),
                    age_seconds: 10_800.0 - i as f64,
                    labels: BTreeMap::from([("channel".to_string(), "web".to_string())]).into(),
                    other_status: None,
                })
                .collect(),
            ..Outcome::default()
        }
    }

    #[test]
    fn findings_past_max_alerts_build_no_observation() {
        let (_dir, parts) = parts("");
        let asked = std::cell::Cell::new(0);
        let obs = observations(&parts, &outcome(1000), |_| {
            asked.set(asked.get() + 1);
            false
        });
        // The oldest 3 and the overflow alert; the other 997 are asked about, not built.
        let keys: Vec<&str> = obs.iter().map(|o| o.key.as_ref()).collect();
        assert_eq!(keys, ["JW-0", "JW-1", "JW-2", OVERFLOW_KEY]);
        assert_eq!(asked.get(), 997);
        let Notes::Fixed(overflow) = &obs.last().unwrap().notes else {
            panic!("the overflow alert keeps its annotations");
        };
        assert_eq!(overflow["count"], "1000");
        assert_eq!(overflow["more"], "997");
    }

    #[test]
    fn an_alerted_finding_past_the_cap_is_kept_alive_not_created() {
        let (_dir, parts) = parts("");
        let obs = observations(&parts, &outcome(10), |key| key == "JW-7");
        let past: Vec<&Observation> = obs.iter().filter(|o| &*o.key == "JW-7").collect();
        assert_eq!(past.len(), 1);
        assert!(!past[0].may_create, "past the cap it only keeps its alert");
        assert_eq!(obs.len(), 5);
    }

    /// An order alert holds its own labels and shares the rule's; its annotations are made
    /// when asked, with the age as of then, from the rule's templates.
    #[test]
    fn an_order_alert_shares_its_rule_labels_and_renders_annotations_when_asked() {
        let (_dir, parts) = parts(
            "    annotations:\n      description: \"{{ order_id }} via {{ labels.channel }}, {{ age }}\"\n",
        );
        let out = outcome(1);
        let mut book = AlertBook::default();
        let timing = timing();
        let now = Utc::now();
        book.apply(
            "r",
            timing,
            now,
            vec![observation(&parts, &out.findings[0], 0)],
            Coverage::All,
        );
        let a = book.get("r", "JW-0").unwrap();
        assert!(Arc::ptr_eq(a.labels.shared(), &parts.shared));
        let own: Vec<&str> = a.labels.own().iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(own, ["channel", "order_id", "status"]);
        assert_eq!(
            a.labels.to_map(),
            BTreeMap::from(
                [
                    ("alertname", "StuckOrder"),
                    ("channel", "web"),
                    ("order_id", "JW-0"),
                    ("path", "orderwatch"),
                    ("rule", "r"),
                    ("severity", "warning"),
                    ("source", "shop"),
                    ("status", "SUBMITTED"),
                    ("team", "ops"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string()))
            )
        );
        assert!(unchanged(&parts, a, &out.findings[0]));
        let later = out.findings[0].entered_at + chrono::Duration::hours(5);
        let n = a.annotations_at(later);
        assert_eq!(n["description"], "JW-0 via web, 5h 00m");
        assert_eq!(n["age"], "5h 00m");
        assert_eq!(
            n["summary"],
            "Order JW-0 has been SUBMITTED for 5h 00m (threshold 1h 00m)"
        );
        assert_eq!(n["runbook_url"], "http://ow/runbooks#stuckorder");
        // Another status, or another column value: not the same alert any more.
        let mut moved = out.findings[0].clone();
        moved.labels.insert("channel", "shop");
        assert!(!unchanged(&parts, a, &moved));
        moved = out.findings[0].clone();
        moved.status = "APPROVED".into();
        assert!(!unchanged(&parts, a, &moved));

        // Restored from the store, its labels are its own: rebuilt once, then only touched.
        let mut restored = a.clone();
        restored.labels = Labels::from_map(&a.labels.to_map());
        let mut book = AlertBook::from_alerts([restored]);
        let a = book.get("r", "JW-0").unwrap();
        assert!(!unchanged(&parts, a, &out.findings[0]));
        let later = now + chrono::Duration::seconds(30);
        let changes = book.apply(
            "r",
            timing,
            later,
            vec![observation(&parts, &out.findings[0], 0)],
            Coverage::All,
        );
        assert!(changes.is_empty(), "{changes:?}");
        assert!(unchanged(
            &parts,
            book.get("r", "JW-0").unwrap(),
            &out.findings[0]
        ));
    }

    /// A query model may return an order twice, with different columns: its alert ends as
    /// the last row says, and says the same every evaluation (no label flip, no store write).
    /// A duplicate past `max_alerts` keeps the alert its first row made alive.
    #[test]
    fn an_order_returned_twice_ends_as_its_last_row_says_every_time() {
        let (_dir, parts) = parts("");
        let mut out = outcome(6);
        out.findings[1] = out.findings[0].clone();
        out.findings[1].labels.insert("channel", "shop");
        // Past the cap (3): a duplicate of JW-2.
        out.findings[5] = out.findings[2].clone();
        let book = RwLock::new(AlertBook::default());
        let timing = timing();
        let now = Utc::now();
        let mut digests = Vec::new();
        for k in 0..4 {
            let at = now + chrono::Duration::seconds(30 * k);
            apply_outcome(&book, &parts, &out, timing, at);
            let unsaved = book.write().unwrap().take_unsaved();
            assert_eq!(unsaved.is_empty(), k > 0, "evaluation {k}: {unsaved:?}");
            let b = book.read().unwrap();
            let a = b.get("r", "JW-0").unwrap();
            assert_eq!(a.labels.get("channel"), Some("shop"), "evaluation {k}");
            digests.push(a.durable_digest());
            assert_eq!(b.get("r", "JW-2").unwrap().last_seen, at, "kept alive");
        }
        assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    }

    /// Findings applied as they arrive, chunk by chunk, end as one outcome would; an
    /// evaluation that fails part-way keeps what it applied and resolves nothing.
    #[test]
    fn findings_applied_chunk_by_chunk_and_a_failed_evaluation_resolves_nothing() {
        let (_dir, parts) = parts("");
        let parts = Arc::new(parts);
        let out = outcome(5);
        let book = RwLock::new(AlertBook::default());
        let now = Utc::now();
        let mut a = Applier::new(&book, parts.clone(), timing(), now);
        for chunk in out.findings.chunks(2) {
            a.findings(chunk);
        }
        let mut streamed = Outcome {
            count: 5,
            streamed: 5,
            ..Outcome::default()
        };
        let changes = a.finish(&mut streamed);
        // `max_alerts` 3: three orders and the overflow alert, starting when JW-3 did.
        let keys: Vec<&str> = changes.iter().map(|t| &*t.alert.key).collect();
        assert_eq!(keys, ["JW-0", "JW-1", "JW-2", OVERFLOW_KEY]);
        let older = chrono::Duration::hours(1);
        assert_eq!(
            changes[3].alert.starts_at,
            out.findings[3].entered_at + older
        );
        let one_go = RwLock::new(AlertBook::default());
        apply_outcome(&one_go, &parts, &out, timing(), now);
        assert_eq!(
            book.read()
                .unwrap()
                .all_after(None)
                .cloned()
                .collect::<Vec<_>>(),
            one_go
                .read()
                .unwrap()
                .all_after(None)
                .cloned()
                .collect::<Vec<_>>()
        );

        // Later, the query fails after one order: JW-0 is seen, nothing resolves.
        let later = now + chrono::Duration::seconds(30);
        let mut a = Applier::new(&book, parts.clone(), timing(), later);
        a.findings(&[out.findings[0].clone()]);
        assert!(a.abandon().is_empty());
        let b = book.read().unwrap();
        assert_eq!(b.get("r", "JW-0").unwrap().last_seen, later);
        for key in ["JW-1", "JW-2", OVERFLOW_KEY] {
            assert_eq!(
                b.get("r", key).unwrap().state,
                crate::alert::AlertState::Firing,
                "{key}"
            );
        }
    }

    /// Resolved, an order's annotations stop moving: the age it was last seen at.
    #[test]
    fn a_resolved_order_keeps_the_annotations_it_was_last_seen_with() {
        let (_dir, parts) = parts("");
        let out = outcome(1);
        let book = RwLock::new(AlertBook::default());
        let timing = timing();
        let now = Utc::now();
        apply_outcome(&book, &parts, &out, timing, now);
        let seen = book
            .read()
            .unwrap()
            .get("r", "JW-0")
            .unwrap()
            .annotations_at(now);
        let changes = apply_outcome(
            &book,
            &parts,
            &Outcome::default(),
            timing,
            now + chrono::Duration::hours(2),
        );
        assert_eq!(changes.len(), 1);
        let b = book.read().unwrap();
        let a = b.get("r", "JW-0").unwrap();
        assert_eq!(a.state, crate::alert::AlertState::Resolved);
        assert_eq!(a.annotations_at(now + chrono::Duration::hours(5)), seen);
        assert_eq!(changes[0].alert.annotations(), seen);
    }
}
