//! How numbers and mistakes read to people on call. A plain helper below every layer: rules'
//! templates, messages, the status page and `once` all say a duration the same way, and every
//! check suggests the closest known name the same way.

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

/// The candidate closest to `word` ("did you mean"), by edit distance ignoring case; `None`
/// when none is close (more than a third of the word's letters, at least 2, would change).
/// Case alone always counts as close: `Paid` finds `PAID`.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let w: Vec<char> = word.to_lowercase().chars().collect();
    let limit = (w.len() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| {
            (
                edit_distance(&w, &c.to_lowercase().chars().collect::<Vec<_>>()),
                c,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance (insertions, deletions, substitutions; one row kept).
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_name_is_suggested_and_a_far_one_is_not() {
        let known = ["SUBMITTED", "PRICE_CALCULATED", "awaiting_payment", "PAID"];
        assert_eq!(closest("SUBMITED", known), Some("SUBMITTED"));
        assert_eq!(closest("awaiting_paymnet", known), Some("awaiting_payment"));
        assert_eq!(closest("Paid", known), Some("PAID"));
        assert_eq!(closest("SHIPPED", known), None);
        assert_eq!(closest("x", known), None);
    }

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
