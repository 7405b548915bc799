//! Inhibition for the direct channels, in Alertmanager's `inhibit_rules` format and
//! semantics: a firing alert matching a rule's `source_matchers` mutes the alerts matching its
//! `target_matchers` that have the same values of the `equal` labels. An alert matching both
//! sides is not muted by another that also matches both (so a rule cannot mute itself).
//!
//! One difference, on purpose: an `equal` label must be present (non-empty) on both sides.
//! Alertmanager counts "absent on both" as equal, so `critical → warning, equal: [order_id]`
//! there lets any critical alert without an order mute every warning without one; the shipped
//! Alertmanager config writes `order_id=~".+"` on both sides to get what orderwatch does here.
//!
//! Alerts are still pushed to Alertmanager whole; it applies its own inhibit rules.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use serde_saphyr::Spanned;

use crate::alert::{Alert, AlertState};
use crate::config::InhibitRuleConfig;
use crate::labels::LabelSet;
use crate::notify::routing::route::Matcher;

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    source: Vec<Matcher>,
    target: Vec<Matcher>,
    equal: Vec<String>,
}

fn all(ms: &[Matcher], labels: &impl LabelSet) -> bool {
    ms.iter().all(|m| m.matches(labels))
}

impl InhibitRule {
    /// Compiles `cfg`; errors carry the location of the matcher at fault.
    pub fn compile(
        cfg: &InhibitRuleConfig,
    ) -> Result<InhibitRule, (serde_saphyr::Location, String)> {
        let parse = |v: &[Spanned<String>]| {
            v.iter()
                .map(|m| {
                    Matcher::from_str(&m.value)
                        .map_err(|e| (m.referenced, format!("inhibit_rules: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(InhibitRule {
            source: parse(&cfg.source_matchers)?,
            target: parse(&cfg.target_matchers)?,
            equal: cfg.equal.clone(),
        })
    }

    /// The values of the `equal` labels, if all are present.
    fn key(&self, labels: &impl LabelSet) -> Option<Vec<String>> {
        self.equal
            .iter()
            .map(|n| {
                labels
                    .label(n)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            })
            .collect()
    }
}

/// The rules of a config.
#[derive(Debug, Clone, Default)]
pub struct Inhibitor {
    rules: Vec<InhibitRule>,
}

/// Which alerts are muted now, by (rule, key).
pub type Inhibited = HashSet<(crate::labels::Str, crate::labels::Str)>;

impl Inhibitor {
    /// From the config's `inhibit_rules` (validated at load).
    pub fn new(cfg: &[InhibitRuleConfig]) -> Inhibitor {
        Inhibitor {
            rules: cfg
                .iter()
                .filter_map(|c| InhibitRule::compile(c).ok())
                .collect(),
        }
    }

    /// Whether there is any rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The alerts among `alerts` that a firing one mutes. Linear in the alerts: each rule
    /// indexes its sources by their `equal` values.
    pub fn inhibited<'a>(&self, alerts: impl IntoIterator<Item = &'a Alert>) -> Inhibited {
        let alerts: Vec<&Alert> = alerts.into_iter().collect();
        let mut out = Inhibited::new();
        for r in &self.rules {
            // equal values → (sources, sources not matching the target side).
            let mut sources: HashMap<Vec<String>, (usize, usize)> = HashMap::new();
            for a in alerts.iter().copied() {
                if a.state != AlertState::Firing || !all(&r.source, &a.labels) {
                    continue;
                }
                if let Some(k) = r.key(&a.labels) {
                    let e = sources.entry(k).or_default();
                    e.0 += 1;
                    if !all(&r.target, &a.labels) {
                        e.1 += 1;
                    }
                }
            }
            if sources.is_empty() {
                continue;
            }
            for a in alerts.iter().copied() {
                if a.state == AlertState::Resolved || !all(&r.target, &a.labels) {
                    continue;
                }
                let Some(k) = r.key(&a.labels) else { continue };
                let Some((any, one_sided)) = sources.get(&k) else {
                    continue;
                };
                // An alert on both sides is muted only by one that is a source alone.
                let two_sided = all(&r.source, &a.labels);
                if (two_sided && *one_sided > 0) || (!two_sided && *any > 0) {
                    out.insert((a.rule.clone(), a.key.clone()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Notes;
    use chrono::Utc;

    fn alert(rule: &str, key: &str, state: AlertState, labels: &[(&str, &str)]) -> Alert {
        let now = Utc::now();
        Alert {
            rule: rule.into(),
            key: key.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            notes: Notes::None,
            state,
            active_at: now,
            starts_at: now,
            fired_at: None,
            last_seen: now,
            resolved_at: None,
            entered_at: None,
            interval_secs: 30,
            version: 0,
        }
    }

    fn cfg(yaml: &str) -> Vec<InhibitRuleConfig> {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn critical_mutes_the_same_orders_warnings_only_when_both_name_it() {
        let inh = Inhibitor::new(&cfg(
            "- source_matchers: ['severity=\"critical\"']\n  target_matchers: ['severity=\"warning\"']\n  equal: [order_id]\n",
        ));
        let f = AlertState::Firing;
        let alerts = [
            alert(
                "price_slow",
                "JW-1",
                f,
                &[("severity", "critical"), ("order_id", "JW-1")],
            ),
            alert(
                "submitted_1h",
                "JW-1",
                f,
                &[("severity", "warning"), ("order_id", "JW-1")],
            ),
            alert(
                "submitted_1h",
                "JW-2",
                f,
                &[("severity", "warning"), ("order_id", "JW-2")],
            ),
            // Critical without an order: mutes no warning without one either.
            alert("source_down", "shop", f, &[("severity", "critical")]),
            alert("http_5xx", "shop-api", f, &[("severity", "warning")]),
            // A pending critical mutes nothing.
            alert(
                "price_slow",
                "JW-3",
                AlertState::Pending,
                &[("severity", "critical"), ("order_id", "JW-3")],
            ),
            alert(
                "submitted_1h",
                "JW-3",
                f,
                &[("severity", "warning"), ("order_id", "JW-3")],
            ),
        ];
        let got = inh.inhibited(alerts.iter());
        assert_eq!(got, HashSet::from([("submitted_1h".into(), "JW-1".into())]));
    }

    #[test]
    fn an_alert_on_both_sides_does_not_mute_itself() {
        let inh = Inhibitor::new(&cfg(
            "- source_matchers: ['team=\"ops\"']\n  target_matchers: ['team=\"ops\"']\n  equal: [source]\n",
        ));
        let f = AlertState::Firing;
        let alerts = [
            alert("a", "1", f, &[("team", "ops"), ("source", "shop")]),
            alert("b", "1", f, &[("team", "ops"), ("source", "shop")]),
        ];
        assert!(inh.inhibited(alerts.iter()).is_empty());
    }
}
