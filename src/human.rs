//! How numbers read to people on call. A plain helper below every layer: rules' templates,
//! messages, the status page and `once` all say a duration the same way.

use std::time::Duration;

/// A duration as people read it on call: "3h 05m", "2d 4h", "45s".
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86400, (s % 86400) / 3600, (s % 3600) / 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins:02}m")
    } else if mins > 0 {
        format!("{mins}m {secs:02}s")
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m 05s");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 3600 + 5 * 60)),
            "3h 05m"
        );
        assert_eq!(
            human_duration(Duration::from_secs(2 * 86400 + 4 * 3600 + 59)),
            "2d 4h"
        );
    }
}
