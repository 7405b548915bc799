//! The route tree, as in Alertmanager: each alert walks the tree from the root; a route whose
//! matchers all hold takes it (the deepest matching child wins), and `continue: true` lets
//! the next sibling match too. Each route says which receiver gets the alert and how alerts
//! are grouped and repeated. Mute windows (`time_intervals`) keep a route quiet at set times.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveTime, Timelike, Utc, Weekday};

use crate::config::{RouteConfig, TimeIntervalConfig};
use crate::labels::LabelSet;

/// A label matcher: `name="value"`, `name!="value"`, `name=~"regex"`, `name!~"regex"`
/// (regexes are anchored, as in Alertmanager).
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    op: MatchOp,
    value: String,
    regex: Option<regex::Regex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

impl Matcher {
    /// Whether `labels` satisfy the matcher (a missing label is the empty string).
    pub fn matches(&self, labels: &impl LabelSet) -> bool {
        let v = labels.label(&self.name).unwrap_or("");
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRe => !self.regex.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        };
        // JSON string quoting, which `from_str` reads back exactly (Rust's `{:?}` writes
        // escapes such as `\u{1b}` that JSON does not know).
        let quoted = serde_json::to_string(&self.value).map_err(|_| std::fmt::Error)?;
        write!(f, "{}{op}{quoted}", self.name)
    }
}

impl FromStr for Matcher {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let (name, rest) = s.split_at(end);
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "matcher {s:?}: expected a label name, then =, !=, =~ or !~, then a value"
            ));
        }
        let (op, value) = [
            ("=~", MatchOp::Re),
            ("!~", MatchOp::NotRe),
            ("!=", MatchOp::Ne),
            ("=", MatchOp::Eq),
        ]
        .iter()
        .find_map(|(p, op)| rest.trim_start().strip_prefix(p).map(|v| (*op, v.trim())))
        .ok_or_else(|| format!("matcher {s:?}: expected =, !=, =~ or !~ after {name:?}"))?;
        let value = if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            serde_json::from_str::<String>(value)
                .map_err(|e| format!("matcher {s:?}: bad quoted value: {e}"))?
        } else {
            value.to_string()
        };
        let regex = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("matcher {s:?}: bad regex: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value,
            regex,
        })
    }
}

/// A compiled time window.
#[derive(Debug, Clone)]
pub struct TimeWindow {
    weekdays: Vec<(u32, u32)>,
    minutes: Vec<(u32, u32)>,
    tz: chrono_tz::Tz,
}

fn weekday(s: &str) -> Result<u32, String> {
    Weekday::from_str(s.trim())
        .map(|d| d.num_days_from_monday())
        .map_err(|_| format!("unknown weekday {s:?} (expected monday … sunday)"))
}

fn minute_of_day(s: &str) -> Result<u32, String> {
    if s.trim() == "24:00" {
        return Ok(24 * 60);
    }
    NaiveTime::parse_from_str(s.trim(), "%H:%M")
        .map(|t| t.hour() * 60 + t.minute())
        .map_err(|_| format!("bad time {s:?} (expected HH:MM, 00:00 … 24:00)"))
}

impl TimeWindow {
    /// Compiles a configured window.
    pub fn new(c: &TimeIntervalConfig) -> Result<TimeWindow, String> {
        let mut weekdays = Vec::new();
        for w in &c.weekdays {
            let (a, b) = match w.split_once(':') {
                Some((a, b)) => (weekday(a)?, weekday(b)?),
                None => (weekday(w)?, weekday(w)?),
            };
            if a > b {
                return Err(format!("weekday range {w:?} runs backwards"));
            }
            weekdays.push((a, b));
        }
        let mut minutes = Vec::new();
        for t in &c.times {
            let (a, b) = (minute_of_day(&t.start_time)?, minute_of_day(&t.end_time)?);
            if a >= b {
                return Err(format!(
                    "time range {}–{} must end after it starts (split a range over midnight in two)",
                    t.start_time, t.end_time
                ));
            }
            minutes.push((a, b));
        }
        let tz = match &c.location {
            Some(l) => {
                chrono_tz::Tz::from_str(l).map_err(|_| format!("unknown time zone {l:?}"))?
            }
            None => chrono_tz::Tz::UTC,
        };
        Ok(TimeWindow {
            weekdays,
            minutes,
            tz,
        })
    }

    /// Whether `now` falls in the window.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.tz);
        let day = local.weekday().num_days_from_monday();
        let minute = local.hour() * 60 + local.minute();
        (self.weekdays.is_empty() || self.weekdays.iter().any(|(a, b)| (*a..=*b).contains(&day)))
            && (self.minutes.is_empty()
                || self.minutes.iter().any(|(a, b)| (*a..*b).contains(&minute)))
    }
}

/// How a route groups and repeats; fully resolved (inherited values filled in).
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// Receiver name.
    pub receiver: String,
    /// Grouping labels.
    pub group_by: Vec<String>,
    /// First wait.
    pub group_wait: Duration,
    /// Wait between change messages.
    pub group_interval: Duration,
    /// Repeat of an unchanged group.
    pub repeat_interval: Duration,
    /// Resolved messages.
    pub send_resolved: bool,
    /// Mute windows (names).
    pub mute: Vec<String>,
}

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the tree (`0`, `0.1`, `0.1.0`): part of each group's key.
    pub id: String,
    matchers: Vec<Matcher>,
    /// Settings of the groups this route forms.
    pub settings: GroupSettings,
    continue_: bool,
    children: Vec<Route>,
}

/// Defaults of the root route.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
/// Default `group_interval`.
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(300);
/// Default `repeat_interval`.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

impl Route {
    /// Compiles the tree; `problems` collects (location, message) for bad matchers and names.
    pub fn build(
        c: &RouteConfig,
        parent: Option<&GroupSettings>,
        id: String,
        problems: &mut Vec<(serde_saphyr::Location, String)>,
    ) -> Route {
        let inherited = parent.cloned().unwrap_or(GroupSettings {
            receiver: String::new(),
            group_by: vec!["rule".to_string()],
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            send_resolved: true,
            mute: Vec::new(),
        });
        let settings = GroupSettings {
            receiver: c
                .receiver
                .as_ref()
                .map_or(inherited.receiver, |r| r.value.clone()),
            group_by: c.group_by.clone().unwrap_or(inherited.group_by),
            group_wait: c.group_wait.map_or(inherited.group_wait, |d| d.0),
            group_interval: c.group_interval.map_or(inherited.group_interval, |d| d.0),
            repeat_interval: c.repeat_interval.map_or(inherited.repeat_interval, |d| d.0),
            send_resolved: c.send_resolved.unwrap_or(inherited.send_resolved),
            mute: c.mute_time_intervals.as_ref().map_or(inherited.mute, |m| {
                m.iter().map(|s| s.value.clone()).collect()
            }),
        };
        // Bounded so that adding them to a clock never overflows and a typo cannot silence a
        // channel for centuries.
        let day = Duration::from_secs(86_400);
        for (what, d, max) in [
            ("group_wait", settings.group_wait, day),
            ("group_interval", settings.group_interval, day),
            ("repeat_interval", settings.repeat_interval, 365 * day),
        ] {
            if d > max || (what != "group_wait" && d.is_zero()) {
                let loc = c
                    .matchers
                    .first()
                    .map_or(serde_saphyr::Location::UNKNOWN, |m| m.referenced);
                problems.push((
                    loc,
                    format!(
                        "route: {what} must be {} at most{} (is {})",
                        humantime::format_duration(max),
                        if what == "group_wait" {
                            ""
                        } else {
                            " and above 0"
                        },
                        humantime::format_duration(d)
                    ),
                ));
            }
        }
        let mut matchers = Vec::new();
        for m in &c.matchers {
            match Matcher::from_str(&m.value) {
                Ok(x) => matchers.push(x),
                Err(e) => problems.push((m.referenced, e)),
            }
        }
        let children = c
            .routes
            .iter()
            .enumerate()
            .map(|(i, child)| Route::build(child, Some(&settings), format!("{id}.{i}"), problems))
            .collect();
        Route {
            id,
            matchers,
            settings,
            continue_: c.continue_,
            children,
        }
    }

    /// The routes that take an alert with `labels` (the root always matches).
    pub fn match_labels(&self, labels: &impl LabelSet) -> Vec<&Route> {
        if !self.matchers.iter().all(|m| m.matches(labels)) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for child in &self.children {
            let found = child.match_labels(labels);
            if !found.is_empty() {
                out.extend(found);
                if !child.continue_ {
                    break;
                }
            }
        }
        if out.is_empty() {
            out.push(self);
        }
        out
    }

    /// Every route of the tree (for validation).
    pub fn walk(&self) -> Vec<&Route> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.walk());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matchers_parse_and_match_like_alertmanager() {
        let l = labels(&[("severity", "critical"), ("team", "sales")]);
        assert!(
            Matcher::from_str("severity=\"critical\"")
                .unwrap()
                .matches(&l)
        );
        assert!(
            Matcher::from_str("severity = critical")
                .unwrap()
                .matches(&l)
        );
        assert!(
            Matcher::from_str("team=~\"sales|ops\"")
                .unwrap()
                .matches(&l)
        );
        assert!(
            !Matcher::from_str("team=~\"sale\"").unwrap().matches(&l),
            "anchored"
        );
        assert!(Matcher::from_str("team!~\"ops\"").unwrap().matches(&l));
        assert!(Matcher::from_str("missing!=\"x\"").unwrap().matches(&l));
        assert!(Matcher::from_str("missing=\"\"").unwrap().matches(&l));
        assert!(Matcher::from_str("=x").is_err());
        assert!(Matcher::from_str("a~x").is_err());
        assert!(Matcher::from_str("a=~\"(\"").is_err());
    }

    #[test]
    fn deepest_match_wins_and_continue_fans_out() {
        let yaml = r#"
receiver: default
group_wait: 10s
routes:
  - matchers: ['severity="critical"']
    receiver: pager
    continue: true
    routes:
      - matchers: ['team="sales"']
        receiver: sales-pager
  - matchers: ['team=~"sales|ops"']
    receiver: chat
    repeat_interval: 1h
  - receiver: never
"#;
        let c: RouteConfig = serde_saphyr::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        let root = Route::build(&c, None, "0".into(), &mut problems);
        assert!(problems.is_empty());
        let recv = |l: &[(&str, &str)]| {
            root.match_labels(&labels(l))
                .iter()
                .map(|r| r.settings.receiver.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            recv(&[("severity", "critical"), ("team", "sales")]),
            ["sales-pager", "chat"]
        );
        assert_eq!(
            recv(&[("severity", "critical"), ("team", "x")]),
            ["pager", "never"]
        );
        assert_eq!(recv(&[("severity", "warning"), ("team", "ops")]), ["chat"]);
        let chat = root.match_labels(&labels(&[("team", "ops")]))[0];
        assert_eq!(chat.settings.repeat_interval, Duration::from_secs(3600));
        assert_eq!(
            chat.settings.group_wait,
            Duration::from_secs(10),
            "inherited"
        );
        assert_eq!(chat.settings.group_by, ["rule"]);
    }

    #[test]
    fn time_windows_by_weekday_and_time_in_a_zone() {
        let night: TimeIntervalConfig = serde_saphyr::from_str(
            "weekdays: ['monday:friday']\ntimes: [{start_time: '22:00', end_time: '24:00'}, {start_time: '00:00', end_time: '08:00'}]\nlocation: Europe/Moscow\n",
        )
        .unwrap();
        let w = TimeWindow::new(&night).unwrap();
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        // Tuesday 23:30 Moscow = 20:30 UTC.
        assert!(w.contains(at("2026-11-24T20:30:00Z")));
        // Tuesday 12:00 Moscow.
        assert!(!w.contains(at("2026-11-24T09:00:00Z")));
        // Saturday 23:30 Moscow: weekend not muted.
        assert!(!w.contains(at("2026-11-28T20:30:00Z")));
        // Wednesday 07:59 Moscow muted, 08:00 not (end exclusive).
        assert!(w.contains(at("2026-11-25T04:59:00Z")));
        assert!(!w.contains(at("2026-11-25T05:00:00Z")));
        let bad: TimeIntervalConfig =
            serde_saphyr::from_str("times: [{start_time: '22:00', end_time: '08:00'}]").unwrap();
        assert!(TimeWindow::new(&bad).is_err());
    }
}
