//! The runbooks shipped with the daemon (`docs/runbooks.md`) and their sections: an alert's
//! `runbook_url` points at its alertname's section; `http` renders the page.

use std::collections::HashSet;
use std::sync::LazyLock;

/// The runbooks, as shipped.
pub const RUNBOOKS_MD: &str = include_str!("../docs/runbooks.md");

/// The sections' anchors (alert names, lower case).
pub fn sections() -> &'static HashSet<String> {
    static SECTIONS: LazyLock<HashSet<String>> = LazyLock::new(|| {
        RUNBOOKS_MD
            .lines()
            .filter_map(|l| l.strip_prefix("## "))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect()
    });
    &SECTIONS
}
