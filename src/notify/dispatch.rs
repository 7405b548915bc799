//! Grouping and deduplication for the direct channels, with Alertmanager's semantics: alerts are
//! routed, grouped by the route's `group_by` labels, and each group is flushed after
//! `group_wait`, then every `group_interval`. A flush sends one message when something is new
//! (an order started firing, or — with `send_resolved` — an announced order recovered), or when
//! `repeat_interval` has passed for a group still firing. What was sent per group (the
//! notification log) is persisted with the outbox row, so a restart repeats nothing early and
//! loses nothing. Pure logic: time is passed in.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::message::{Notification, NotifiedAlert, NotifyStatus, zero_time};
use super::mute::silence::Silence;
use super::routing::route::{GroupSettings, Route, TimeWindow};
use crate::alert::{Alert, AlertBook, AlertState};
use crate::labels::Str;

/// What was last sent for a group: the basis of deduplication and repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Fingerprints announced as firing.
    pub firing: BTreeSet<String>,
    /// Fingerprints announced as resolved.
    pub resolved: BTreeSet<String>,
    /// When.
    pub at: Option<DateTime<Utc>>,
}

/// A notification ready for the outbox, with the log entry to store alongside it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The message.
    pub notification: Notification,
    /// The group's log after this message.
    pub log: LogEntry,
}

#[derive(Debug, Clone)]
struct Group {
    settings: GroupSettings,
    labels: BTreeMap<String, String>,
    /// The group's alerts by (rule, key): what deduplication needs; a message is made from
    /// the book's alert when the group flushes (its annotations rendered then, for it alone).
    alerts: BTreeMap<(Str, Str), Member>,
    next_flush: DateTime<Utc>,
}

/// One alert of a group.
#[derive(Debug, Clone, Copy)]
struct Member {
    status: NotifyStatus,
    starts_at: DateTime<Utc>,
}

fn fingerprint_of((rule, key): &(Str, Str)) -> String {
    format!("{rule}/{key}")
}

/// The dispatcher: routes, groups, notification log.
pub struct Dispatcher {
    root: Route,
    windows: HashMap<String, Vec<TimeWindow>>,
    groups: BTreeMap<String, Group>,
    log: HashMap<String, LogEntry>,
    external_url: String,
}

fn chrono(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// An alert's fingerprint: stable across restarts.
pub fn fingerprint(a: &Alert) -> String {
    format!("{}/{}", a.rule, a.key)
}

fn to_notified(a: &Alert, external_url: &str) -> NotifiedAlert {
    let resolved = a.state == AlertState::Resolved;
    NotifiedAlert {
        status: if resolved {
            NotifyStatus::Resolved
        } else {
            NotifyStatus::Firing
        },
        labels: a.labels.to_map(),
        annotations: a.annotations(),
        starts_at: a.starts_at,
        ends_at: if resolved {
            a.resolved_at.unwrap_or_else(Utc::now)
        } else {
            zero_time()
        },
        generator_url: format!(
            "{}/api/v1/alerts?rule={}",
            external_url.trim_end_matches('/'),
            a.rule
        ),
        fingerprint: fingerprint(a),
    }
}

impl Dispatcher {
    /// A dispatcher over a compiled route tree and mute windows, with a restored log.
    pub fn new(
        root: Route,
        windows: HashMap<String, Vec<TimeWindow>>,
        log: HashMap<String, LogEntry>,
        external_url: String,
    ) -> Dispatcher {
        Dispatcher {
            root,
            windows,
            groups: BTreeMap::new(),
            log,
            external_url,
        }
    }

    /// Brings groups up to date with the current alerts (firing, and resolved still retained),
    /// leaving out silenced and inhibited ones. New groups wait `group_wait` before their
    /// first flush.
    pub fn update<'a>(
        &mut self,
        alerts: impl Iterator<Item = &'a Alert>,
        silences: &[Silence],
        inhibited: &super::mute::inhibit::Inhibited,
        now: DateTime<Utc>,
    ) {
        let mut seen: HashMap<String, BTreeSet<(Str, Str)>> = HashMap::new();
        for a in alerts {
            if a.state == AlertState::Pending {
                continue;
            }
            if a.state == AlertState::Firing
                && silences
                    .iter()
                    .any(|s| s.is_active(now) && s.matches(&a.labels))
            {
                continue;
            }
            if a.state == AlertState::Firing && inhibited.contains(&(a.rule.clone(), a.key.clone()))
            {
                continue;
            }
            for route in self.root.match_labels(&a.labels) {
                let s = &route.settings;
                let labels: BTreeMap<String, String> = if s.group_by.iter().any(|g| g == "...") {
                    a.labels.to_map()
                } else {
                    s.group_by
                        .iter()
                        .map(|k| (k.clone(), a.labels.get(k).unwrap_or_default().to_string()))
                        .collect()
                };
                let key = format!(
                    "{}:{{{}}}",
                    route.id,
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect::<Vec<_>>()
                        .join(",")
                );
                let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
                    settings: s.clone(),
                    labels,
                    alerts: BTreeMap::new(),
                    next_flush: now + chrono(s.group_wait),
                });
                let id = (a.rule.clone(), a.key.clone());
                let member = Member {
                    status: if a.state == AlertState::Resolved {
                        NotifyStatus::Resolved
                    } else {
                        NotifyStatus::Firing
                    },
                    starts_at: a.starts_at,
                };
                group.alerts.insert(id.clone(), member);
                seen.entry(key).or_default().insert(id);
            }
        }
        // Alerts gone from the book (forgotten after retention, silenced) leave their groups.
        for (key, g) in self.groups.iter_mut() {
            let now_in = seen.remove(key).unwrap_or_default();
            g.alerts.retain(|id, _| now_in.contains(id));
        }
    }

    /// When the next group is due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.groups.values().map(|g| g.next_flush).min()
    }

    fn muted(&self, s: &GroupSettings, now: DateTime<Utc>) -> bool {
        s.mute.iter().any(|name| {
            self.windows
                .get(name)
                .is_some_and(|ws| ws.iter().any(|w| w.contains(now)))
        })
    }

    /// Flushes every due group; returns the messages to send, made from `book`'s alerts.
    pub fn flush_due(&mut self, book: &AlertBook, now: DateTime<Utc>) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let due: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.next_flush <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let g = self.groups.get_mut(&key).expect("due group exists");
            g.next_flush = now + chrono(g.settings.group_interval);
            let g = g.clone();
            let entry = self.log.get(&key).cloned().unwrap_or_default();
            let firing: BTreeSet<String> = g
                .alerts
                .iter()
                .filter(|(_, m)| m.status == NotifyStatus::Firing)
                .map(|(id, _)| fingerprint_of(id))
                .collect();
            // Resolved alerts worth a word: announced as firing, not yet announced as resolved.
            let newly_resolved: BTreeSet<String> = g
                .alerts
                .iter()
                .filter(|(_, m)| m.status == NotifyStatus::Resolved)
                .map(|(id, _)| fingerprint_of(id))
                .filter(|fp| entry.firing.contains(fp) && !entry.resolved.contains(fp))
                .collect();
            let new_firing = firing.difference(&entry.firing).next().is_some();
            let repeat_due = !firing.is_empty()
                && entry
                    .at
                    .is_none_or(|t| now - t >= chrono(g.settings.repeat_interval));
            let resolved_news = g.settings.send_resolved && !newly_resolved.is_empty();
            let notify = new_firing || repeat_due || resolved_news;
            if notify && !self.muted(&g.settings, now) {
                let made = |id: &(Str, Str)| {
                    book.get(&id.0, &id.1)
                        .map(|a| to_notified(a, &self.external_url))
                };
                let mut members: Vec<(&(Str, Str), &Member)> = g
                    .alerts
                    .iter()
                    .filter(|(_, m)| m.status == NotifyStatus::Firing)
                    .collect();
                members.sort_by_key(|(_, m)| m.starts_at);
                let mut alerts: Vec<NotifiedAlert> =
                    members.into_iter().filter_map(|(id, _)| made(id)).collect();
                if g.settings.send_resolved {
                    alerts.extend(
                        g.alerts
                            .keys()
                            .filter(|id| newly_resolved.contains(&fingerprint_of(id)))
                            .filter_map(made),
                    );
                }
                let (common_labels, common_annotations) = Notification::common(&alerts);
                let log = LogEntry {
                    firing: firing.clone(),
                    resolved: entry.resolved.union(&newly_resolved).cloned().collect(),
                    at: Some(now),
                };
                out.push(Outgoing {
                    notification: Notification {
                        receiver: g.settings.receiver.clone(),
                        status: if firing.is_empty() {
                            NotifyStatus::Resolved
                        } else {
                            NotifyStatus::Firing
                        },
                        alerts,
                        group_labels: g.labels.clone(),
                        common_labels,
                        common_annotations,
                        external_url: self.external_url.clone(),
                        group_key: key.clone(),
                        truncated_alerts: 0,
                    },
                    log: log.clone(),
                });
                self.log.insert(key.clone(), log);
            } else if !notify
                && firing.is_empty()
                && !entry.firing.is_empty()
                && !g.settings.send_resolved
            {
                // Everything recovered and nobody wants to hear it: forget quietly.
                self.log.insert(
                    key.clone(),
                    LogEntry {
                        firing: BTreeSet::new(),
                        ..entry.clone()
                    },
                );
            }
            // A group with nothing firing and nothing left to announce is done.
            let entry = self.log.get(&key).cloned().unwrap_or_default();
            let pending_news = g.settings.send_resolved
                && g.alerts.iter().any(|(id, m)| {
                    let fp = fingerprint_of(id);
                    m.status == NotifyStatus::Resolved
                        && entry.firing.contains(&fp)
                        && !entry.resolved.contains(&fp)
                });
            if firing.is_empty() && !pending_news {
                self.groups.remove(&key);
                self.log.remove(&key);
            }
        }
        out
    }

    /// The log entries of groups that are gone (to delete from the store).
    pub fn log_keys(&self) -> impl Iterator<Item = &String> {
        self.log.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Notes;
    use crate::config::RouteConfig;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        // A Tuesday.
        Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap() + chrono::Duration::seconds(secs)
    }

    fn alert(rule: &str, key: &str, state: AlertState, severity: &str) -> Alert {
        Alert {
            rule: rule.into(),
            key: key.into(),
            labels: crate::labels::Labels::from(BTreeMap::from([
                ("alertname".into(), "StuckOrder".into()),
                ("rule".into(), rule.into()),
                ("order_id".into(), key.into()),
                ("severity".into(), severity.into()),
            ])),
            notes: Notes::None,
            state,
            active_at: t(-100),
            starts_at: t(-100),
            fired_at: Some(t(-100)),
            last_seen: t(0),
            resolved_at: (state == AlertState::Resolved).then(|| t(0)),
            entered_at: None,
            interval_secs: 30,
            version: 0,
        }
    }

    /// The book holding `alerts` (what a flush makes its messages from).
    fn booked(alerts: &[Alert]) -> AlertBook {
        AlertBook::from_alerts(alerts.iter().cloned())
    }

    fn dispatcher(yaml: &str, windows: &str) -> Dispatcher {
        let c: RouteConfig = serde_saphyr::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        let root = Route::build(&c, None, "0".into(), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let mut w = HashMap::new();
        if !windows.is_empty() {
            let cfg: crate::config::TimeIntervalConfig = serde_saphyr::from_str(windows).unwrap();
            w.insert("night".to_string(), vec![TimeWindow::new(&cfg).unwrap()]);
        }
        Dispatcher::new(root, w, HashMap::new(), "http://ow".into())
    }

    fn ids(o: &Outgoing) -> Vec<(String, NotifyStatus)> {
        o.notification
            .alerts
            .iter()
            .map(|a| (a.labels["order_id"].clone(), a.status))
            .collect()
    }

    const ROUTE: &str =
        "receiver: chat\ngroup_wait: 30s\ngroup_interval: 5m\nrepeat_interval: 4h\n";

    #[test]
    fn one_message_per_group_after_group_wait_then_changes_then_repeat() {
        let mut d = dispatcher(ROUTE, "");
        let mut book = vec![
            alert("r1", "A", AlertState::Firing, "warning"),
            alert("r1", "B", AlertState::Firing, "warning"),
        ];
        book.push(alert("r2", "C", AlertState::Firing, "warning"));
        d.update(book.iter(), &[], &Default::default(), t(0));
        assert!(d.flush_due(&booked(&book), t(29)).is_empty(), "group_wait");
        let out = d.flush_due(&booked(&book), t(30));
        assert_eq!(out.len(), 2, "one message per rule");
        let r1 = out
            .iter()
            .find(|o| o.notification.group_labels["rule"] == "r1")
            .unwrap();
        assert_eq!(ids(r1).len(), 2);
        assert_eq!(r1.notification.receiver, "chat");
        assert_eq!(r1.notification.status, NotifyStatus::Firing);

        // A new order in r1: told at the next group_interval, not before.
        book.push(alert("r1", "D", AlertState::Firing, "warning"));
        d.update(book.iter(), &[], &Default::default(), t(60));
        assert!(d.flush_due(&booked(&book), t(60)).is_empty());
        let out = d.flush_due(&booked(&book), t(330));
        assert_eq!(out.len(), 1);
        assert_eq!(ids(&out[0]).len(), 3);

        // Nothing new: r1 stays quiet until repeat_interval (4 h after its last message).
        let is_r1 = |o: &Outgoing| o.notification.group_labels["rule"] == "r1";
        for k in 1..48 {
            assert!(
                !d.flush_due(&booked(&book), t(330 + 300 * k))
                    .iter()
                    .any(is_r1),
                "k={k}"
            );
        }
        let out = d.flush_due(&booked(&book), t(330 + 4 * 3600));
        assert_eq!(out.iter().filter(|o| is_r1(o)).count(), 1, "repeat");
    }

    #[test]
    fn resolved_message_names_what_recovered_and_group_ends() {
        let mut d = dispatcher(ROUTE, "");
        let mut book = [
            alert("r", "A", AlertState::Firing, "w"),
            alert("r", "B", AlertState::Firing, "w"),
        ];
        d.update(book.iter(), &[], &Default::default(), t(0));
        assert_eq!(d.flush_due(&booked(&book), t(30)).len(), 1);
        book[0].state = AlertState::Resolved;
        book[0].resolved_at = Some(t(100));
        d.update(book.iter(), &[], &Default::default(), t(100));
        let out = d.flush_due(&booked(&book), t(330));
        assert_eq!(
            ids(&out[0]),
            vec![
                ("B".into(), NotifyStatus::Firing),
                ("A".into(), NotifyStatus::Resolved)
            ]
        );
        assert_eq!(out[0].notification.status, NotifyStatus::Firing);
        book[1].state = AlertState::Resolved;
        d.update(book.iter(), &[], &Default::default(), t(400));
        let out = d.flush_due(&booked(&book), t(630));
        assert_eq!(out[0].notification.status, NotifyStatus::Resolved);
        assert_eq!(ids(&out[0]), vec![("B".into(), NotifyStatus::Resolved)]);
        assert!(d.next_due().is_none(), "group done");
    }

    #[test]
    fn send_resolved_false_stays_quiet_on_recovery() {
        let mut d = dispatcher(&format!("{ROUTE}send_resolved: false\n"), "");
        let mut book = [alert("r", "A", AlertState::Firing, "w")];
        d.update(book.iter(), &[], &Default::default(), t(0));
        assert_eq!(d.flush_due(&booked(&book), t(30)).len(), 1);
        book[0].state = AlertState::Resolved;
        d.update(book.iter(), &[], &Default::default(), t(60));
        assert!(d.flush_due(&booked(&book), t(330)).is_empty());
        assert!(d.next_due().is_none());
    }

    #[test]
    fn routes_split_by_severity_with_continue() {
        let yaml = "receiver: chat\ngroup_wait: 0s\nroutes:\n  - matchers: ['severity=\"critical\"']\n    receiver: pager\n    continue: true\n";
        let mut d = dispatcher(yaml, "");
        let book = [
            alert("r", "A", AlertState::Firing, "critical"),
            alert("r", "B", AlertState::Firing, "warning"),
        ];
        d.update(book.iter(), &[], &Default::default(), t(0));
        let out = d.flush_due(&booked(&book), t(0));
        let by: BTreeMap<String, usize> = out
            .iter()
            .map(|o| (o.notification.receiver.clone(), o.notification.alerts.len()))
            .collect();
        // pager gets A; the root (chat) gets B only, because A matched a child (continue lets
        // later siblings match, not the parent).
        assert_eq!(
            by,
            BTreeMap::from([("pager".to_string(), 1), ("chat".to_string(), 1)])
        );
    }

    #[test]
    fn mute_window_holds_messages_until_it_ends() {
        let night =
            "weekdays: ['monday:friday']\ntimes: [{start_time: '22:00', end_time: '24:00'}]\n";
        let mut d = dispatcher(&format!("{ROUTE}mute_time_intervals: [night]\n"), night);
        let book = [alert("r", "A", AlertState::Firing, "warning")];
        let ten_pm = 10 * 3600; // t(0) is 12:00 UTC on a Tuesday
        d.update(book.iter(), &[], &Default::default(), t(ten_pm));
        assert!(
            d.flush_due(&booked(&book), t(ten_pm + 30)).is_empty(),
            "muted at 22:00"
        );
        let mut sent = Vec::new();
        let mut now = ten_pm + 30;
        while sent.is_empty() {
            now += 300;
            sent = d.flush_due(&booked(&book), t(now));
        }
        assert!(now >= 12 * 3600, "sent only after midnight, at t+{now}");
    }

    #[test]
    fn silenced_alerts_are_left_out_and_restored_log_prevents_early_repeat() {
        let mut d = dispatcher(ROUTE, "");
        let book = [
            alert("r", "A", AlertState::Firing, "w"),
            alert("r", "B", AlertState::Firing, "w"),
        ];
        let silence = Silence::new(
            vec!["order_id=\"A\"".parse().unwrap()],
            t(0),
            t(3600),
            "test",
            "ops",
        );
        d.update(
            book.iter(),
            std::slice::from_ref(&silence),
            &Default::default(),
            t(0),
        );
        let out = d.flush_due(&booked(&book), t(30));
        assert_eq!(ids(&out[0]), vec![("B".into(), NotifyStatus::Firing)]);

        // After a restart with the log restored, nothing is sent again before repeat_interval.
        let log: HashMap<String, LogEntry> =
            HashMap::from([(out[0].notification.group_key.clone(), out[0].log.clone())]);
        let c: RouteConfig = serde_saphyr::from_str(ROUTE).unwrap();
        let root = Route::build(&c, None, "0".into(), &mut Vec::new());
        let mut d2 = Dispatcher::new(root, HashMap::new(), log, "http://ow".into());
        d2.update(
            book.iter(),
            std::slice::from_ref(&silence),
            &Default::default(),
            t(60),
        );
        assert!(d2.flush_due(&booked(&book), t(90)).is_empty());
        assert_eq!(d2.flush_due(&booked(&book), t(30 + 4 * 3600)).len(), 1);
    }
}
