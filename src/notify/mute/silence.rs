//! Silences: label matchers with an expiry. While active, matching alerts are left out of every
//! direct channel's messages and out of the log notifier. (Alertmanager keeps its own
//! silences; alerts are still pushed to it, so it never mistakes a silence for a recovery.)
//! Persisted in the state store.

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::notify::routing::route::Matcher;

/// A silence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Silence {
    /// Random id.
    pub id: String,
    /// All must match (`rule="x"`, `order_id=~"JW-0001.*"`).
    #[serde(with = "matchers_as_strings")]
    pub matchers: Vec<Matcher>,
    /// From when.
    #[serde(rename = "startsAt")]
    pub starts_at: DateTime<Utc>,
    /// Until when.
    #[serde(rename = "endsAt")]
    pub ends_at: DateTime<Utc>,
    /// Why.
    pub comment: String,
    /// Who.
    #[serde(rename = "createdBy")]
    pub created_by: String,
}

mod matchers_as_strings {
    use super::Matcher;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &[Matcher], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter().map(|m| m.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Matcher>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Matchers a silence may have.
pub const MAX_MATCHERS: usize = 100;
/// Longest matcher (`name=~"regex"`), in bytes.
pub const MAX_MATCHER_BYTES: usize = 1024;
/// Longest silence.
pub const MAX_DURATION: chrono::TimeDelta = chrono::TimeDelta::days(365);
/// Silences pending or active at once.
pub const MAX_ACTIVE: usize = 10_000;
/// Longest `comment` or `createdBy`, in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;
/// How long an expired silence is kept (listed as expired) before it is deleted, as
/// Alertmanager's default `--data.retention`.
pub const RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(5);

/// A silence as the API receives it, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct SilenceRequest {
    /// Matcher texts.
    pub matchers: Vec<String>,
    /// Start (default now).
    pub starts_at: Option<DateTime<Utc>>,
    /// End; or …
    pub ends_at: Option<DateTime<Utc>>,
    /// … a duration such as `2h`.
    pub duration: Option<String>,
    /// Why.
    pub comment: String,
    /// Who.
    pub created_by: String,
}

impl SilenceRequest {
    /// Checks every bound and builds the silence; the error names the bound broken.
    pub fn build(&self, now: DateTime<Utc>) -> Result<Silence, String> {
        if self.matchers.is_empty() {
            return Err("a silence needs at least one matcher".into());
        }
        if self.matchers.len() > MAX_MATCHERS {
            return Err(format!(
                "a silence has at most {MAX_MATCHERS} matchers ({} given)",
                self.matchers.len()
            ));
        }
        if let Some(m) = self.matchers.iter().find(|m| m.len() > MAX_MATCHER_BYTES) {
            return Err(format!(
                "a matcher is at most {MAX_MATCHER_BYTES} bytes ({} given)",
                m.len()
            ));
        }
        for (what, text) in [("comment", &self.comment), ("createdBy", &self.created_by)] {
            if text.len() > MAX_TEXT_BYTES {
                return Err(format!("{what} is at most {MAX_TEXT_BYTES} bytes"));
            }
        }
        let matchers = self
            .matchers
            .iter()
            .map(|m| m.parse())
            .collect::<Result<Vec<Matcher>, String>>()?;
        let starts = self.starts_at.unwrap_or(now);
        if (starts - now).abs() > MAX_DURATION {
            return Err("startsAt is more than a year away from now".into());
        }
        let ends = match (self.ends_at, self.duration.as_deref()) {
            (Some(e), None) => e,
            (None, Some(d)) => {
                let d = humantime::parse_duration(d.trim())
                    .map_err(|e| format!("bad duration {d:?}: {e}"))?;
                let d = chrono::TimeDelta::from_std(d)
                    .ok()
                    .filter(|d| *d <= MAX_DURATION)
                    .ok_or("a silence lasts at most 1 year (365d)")?;
                starts + d
            }
            _ => return Err("give either endsAt or duration".into()),
        };
        if ends <= starts {
            return Err("endsAt must be after startsAt".into());
        }
        if ends <= now {
            return Err("endsAt is in the past: the silence would never apply".into());
        }
        if ends - starts > MAX_DURATION {
            return Err("a silence lasts at most 1 year (365d)".into());
        }
        let silence = Silence::new(matchers, starts, ends, &self.comment, &self.created_by);
        // What is stored must load again, within the same bounds.
        if !silence.within_bounds()
            || silence
                .matchers
                .iter()
                .any(|m| m.to_string().parse::<Matcher>().is_err())
        {
            return Err("a matcher does not survive being stored; simplify it".into());
        }
        Ok(silence)
    }
}

impl Silence {
    /// Whether a stored silence is within today's bounds (silences stored by an older
    /// version may not be: those are dropped at start with a warning).
    pub fn within_bounds(&self) -> bool {
        self.matchers.len() <= MAX_MATCHERS
            && self
                .matchers
                .iter()
                .all(|m| m.to_string().len() <= 2 * MAX_MATCHER_BYTES + 8)
            && self.ends_at - self.starts_at <= MAX_DURATION
            && self.comment.len() <= MAX_TEXT_BYTES
            && self.created_by.len() <= MAX_TEXT_BYTES
    }

    /// A new silence with a random id.
    pub fn new(
        matchers: Vec<Matcher>,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        comment: &str,
        created_by: &str,
    ) -> Silence {
        let id: String = (0..16)
            .map(|_| format!("{:x}", rand::rng().random_range(0..16u8)))
            .collect();
        Silence {
            id,
            matchers,
            starts_at,
            ends_at,
            comment: comment.into(),
            created_by: created_by.into(),
        }
    }

    /// Active at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// `active`, `pending` or `expired` at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if now < self.starts_at {
            "pending"
        } else if now < self.ends_at {
            "active"
        } else {
            "expired"
        }
    }

    /// Whether the labels match every matcher.
    pub fn matches(&self, labels: &impl crate::labels::LabelSet) -> bool {
        !self.matchers.is_empty() && self.matchers.iter().all(|m| m.matches(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn any_accepted_silence_loads_again() {
        let now = Utc::now();
        let req = SilenceRequest {
            matchers: vec![
                "order_id=\"\\u001b]0;x\\u0007\"".into(),
                "team=~\"\u{200b}.*\\\\d+\"".into(),
                "order_id!=\"a\\\"b\"".into(),
            ],
            duration: Some("1h".into()),
            ..SilenceRequest::default()
        };
        let s = req.build(now).unwrap();
        let back: Silence = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(
            back.matchers
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>(),
            s.matchers.iter().map(|m| m.to_string()).collect::<Vec<_>>()
        );
        let past = SilenceRequest {
            matchers: vec!["rule=\"x\"".into()],
            starts_at: Some(now - chrono::Duration::days(30)),
            ends_at: Some(now - chrono::Duration::days(29)),
            ..SilenceRequest::default()
        };
        assert!(past.build(now).unwrap_err().contains("in the past"));
    }

    #[test]
    fn matches_all_matchers_while_active_and_round_trips_as_json() {
        let now = Utc::now();
        let s = Silence::new(
            vec![
                "rule=\"r\"".parse().unwrap(),
                "order_id=~\"JW-1.*\"".parse().unwrap(),
            ],
            now,
            now + chrono::Duration::hours(1),
            "maintenance",
            "anna",
        );
        let l = |id: &str| {
            BTreeMap::from([
                ("rule".to_string(), "r".to_string()),
                ("order_id".to_string(), id.to_string()),
            ])
        };
        assert!(s.matches(&l("JW-17")));
        assert!(!s.matches(&l("JW-27")));
        assert!(s.is_active(now) && !s.is_active(now + chrono::Duration::hours(2)));
        let back: Silence = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert!(back.matches(&l("JW-17")) && !back.matches(&l("JW-2")));
        assert_eq!(back.id, s.id);
        assert_eq!(s.id.len(), 16);
    }
}
