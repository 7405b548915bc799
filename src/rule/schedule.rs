//! When a rule runs: every `interval`, or on a 5-field cron `schedule` in a time zone (croner).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::config::{DEFAULT_RULE_INTERVAL, RuleConfig};

/// A rule's schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Fixed interval.
    Every(Duration),
    /// Cron pattern in a time zone.
    Cron {
        /// The parsed pattern.
        cron: Box<Cron>,
        /// Its time zone.
        tz: Tz,
    },
}

impl Schedule {
    /// Whether `other` runs at the same times.
    pub fn same(&self, other: &Schedule) -> bool {
        match (self, other) {
            (Schedule::Every(a), Schedule::Every(b)) => a == b,
            (Schedule::Cron { .. }, Schedule::Cron { .. }) => {
                format!("{self:?}") == format!("{other:?}")
            }
            _ => false,
        }
    }

    /// From the rule's config (already validated).
    pub fn from_config(cfg: &RuleConfig) -> Result<Schedule, String> {
        if let Some(s) = &cfg.schedule {
            let cron =
                Cron::from_str(&s.value).map_err(|e| format!("schedule {:?}: {e}", s.value))?;
            let tz = match &cfg.timezone {
                Some(t) => {
                    Tz::from_str(&t.value).map_err(|e| format!("timezone {:?}: {e}", t.value))?
                }
                None => Tz::UTC,
            };
            Ok(Schedule::Cron {
                cron: Box::new(cron),
                tz,
            })
        } else {
            Ok(Schedule::Every(
                cfg.interval
                    .as_ref()
                    .map_or(DEFAULT_RULE_INTERVAL, |i| i.value.0),
            ))
        }
    }

    /// The next run strictly after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Schedule::Every(d) => {
                now + chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::seconds(30))
            }
            Schedule::Cron { cron, tz } => cron
                .find_next_occurrence(&now.with_timezone(tz), false)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|_| now + chrono::Duration::hours(1)),
        }
    }

    /// The typical time between runs (for cron: between the next two runs); used for
    /// Alertmanager's `endsAt`.
    pub fn typical_interval(&self, now: DateTime<Utc>) -> Duration {
        match self {
            Schedule::Every(d) => *d,
            Schedule::Cron { .. } => {
                let a = self.next_after(now);
                let b = self.next_after(a);
                (b - a).to_std().unwrap_or(Duration::from_secs(60))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn cron_in_time_zone_uses_five_fields_and_monday_is_one() {
        // 09:00 on Mondays in Moscow (UTC+3) is 06:00 UTC.
        let s = Schedule::Cron {
            cron: Box::new(Cron::from_str("0 9 * * 1").unwrap()),
            tz: Tz::Europe__Moscow,
        };
        let sunday = Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap();
        assert_eq!(
            s.next_after(sunday),
            Utc.with_ymd_and_hms(2026, 11, 23, 6, 0, 0).unwrap()
        );
        assert_eq!(s.typical_interval(sunday), Duration::from_secs(7 * 86400));
    }
}
