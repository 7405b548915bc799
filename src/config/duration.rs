//! Durations as users write them (`30s`, `5m`, `1h`, `1d`), shared by every config struct.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// A duration written as `30s`, `5m`, `1h`, `1d`; parsed at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

/// The longest duration any setting takes: longer ones overflow the clocks they are added to.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let d = humantime::parse_duration(s.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}); expected a positive duration such as 30s, 5m, 1h or 1d"
            ))
        })?;
        if d > MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "duration {s:?} is too long: at most 10 years (3650d)"
            )));
        }
        Ok(Dur(d))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}
