//! What only the notify layer can check of a config: each receiver's values and templates
//! (rendered in the channel's own escaping; secrets expanded in place), the mute windows'
//! times and zones, the inhibit rules' matchers and the route tree. `configure::load` runs it
//! after config's own checks, so `check`, start-up and reload report both at once.

use std::path::Path;

use serde_saphyr::Location;

use crate::config::{Config, ConfigError, Problem};
use crate::notify::mute::inhibit::InhibitRule;
use crate::notify::routing::receiver;
use crate::notify::routing::route::{Route, TimeWindow};

/// Checks the direct channels' part of `config` (the main file at `file`, relative paths
/// against `base`), expanding the receivers' secrets in place; returns every problem found.
pub fn check(file: &Path, base: &Path, config: &mut Config) -> Vec<Problem> {
    let at = |loc: &Location, msg: String| ConfigError::at(file, loc, msg);
    let mut p = Vec::new();
    for (name, r) in config.receivers.iter_mut() {
        let loc = r.referenced;
        for (l, m) in receiver::validate(&mut r.value, base) {
            p.push(at(&l.unwrap_or(loc), format!("receiver {name}: {m}")));
        }
    }
    for (name, w) in &config.time_intervals {
        for c in &w.value {
            if let Err(e) = TimeWindow::new(c) {
                p.push(at(&w.referenced, format!("time interval {name}: {e}")));
            }
        }
    }
    for r in &config.inhibit_rules {
        if let Err((l, m)) = InhibitRule::compile(r) {
            p.push(at(&l, m));
        }
    }
    if let Some(route) = &config.route {
        let mut problems = Vec::new();
        Route::build(route, None, "0".into(), &mut problems);
        for (l, m) in problems {
            p.push(at(&l, m));
        }
    }
    p
}
