//! Checks serde cannot do: references between files, SQL identifiers, durations, schedules,
//! templates. Each problem carries the location of the offending value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::model::{Config, RuleConfig};
use super::problem::{ConfigError, Problem};
use super::secret::expand_url_secrets;

/// Labels the daemon sets itself; a rule's own labels may not override them.
pub const RESERVED_LABELS: &[&str] = &[
    "alertname",
    "rule",
    "source",
    "status",
    "severity",
    "order_id",
    "other_source",
    "other_status",
    "pid",
    "id",
    "queryid",
    "path",
];

/// A plain SQL identifier: letters, digits and `_`, not starting with a digit. We quote them
/// anyway; the restriction keeps generated SQL obviously safe and readable.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 63
}

/// An address (`10.0.0.5`) or a network (`10.0.0.0/24`).
pub fn parse_network(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_rule_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Validates the main file and expands the secrets in source URLs in place.
pub(super) fn config(file: &Path, base: &Path, config: &mut Config) -> Vec<Problem> {
    let mut p = Vec::new();
    let at = |loc: &Location, msg: String| ConfigError::at(file, loc, msg);
    // Relative paths are relative to the config file, like rule_files, not to the working
    // directory (which systemd, cron and tests all set differently).
    if config.state_dir.is_relative() {
        config.state_dir = base.join(&config.state_dir);
    }
    for a in &config.trusted_proxies {
        if parse_network(&a.value).is_none() {
            p.push(at(
                &a.referenced,
                format!(
                    "trusted_proxies: {:?} is not an address or network (10.0.0.5, 10.0.0.0/24, ::1)",
                    a.value
                ),
            ));
        }
    }
    match (&config.user_header, config.trusted_proxies.is_empty()) {
        (Some(h), _) if axum::http::HeaderName::from_bytes(h.value.as_bytes()).is_err() => {
            p.push(at(
                &h.referenced,
                format!("user_header: {:?} is not a header name", h.value),
            ));
        }
        (Some(h), true) => p.push(at(
            &h.referenced,
            "user_header needs trusted_proxies (the proxies allowed to set it)".into(),
        )),
        (None, false) => p.push(at(
            &config.trusted_proxies[0].referenced,
            "trusted_proxies needs user_header (e.g. X-Forwarded-User)".into(),
        )),
        _ => {}
    }
    let env = minijinja::Environment::new();
    for (k, t) in &config.links {
        if !k.ends_with("_url") || !is_label_name(k) {
            p.push(at(
                &t.referenced,
                format!("links: key {k:?} must be a label name ending in _url (e.g. trace_url)"),
            ));
        }
        if let Err(e) = env.template_from_str(&t.value) {
            p.push(at(
                &t.referenced,
                format!("links: {k}: template error: {e}"),
            ));
        }
    }
    if config.sources.is_empty() {
        p.push(Problem {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: "`sources` is empty: configure at least one database".into(),
        });
    }
    for (name, source) in config.sources.iter_mut() {
        let loc = source.referenced;
        let s = &mut source.value;
        if !is_identifier(name) {
            p.push(at(
                &loc,
                format!("source name {name:?} must match [A-Za-z_][A-Za-z0-9_]*"),
            ));
        }
        match expand_url_secrets(&s.url.value, base) {
            Ok(url) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    p.push(at(
                        &s.url.referenced,
                        format!("source {name}: url must be a postgres:// URL"),
                    ));
                } else {
                    match super::pgurl::split_tls(&url, base) {
                        Err(e) => p.push(at(&s.url.referenced, format!("source {name}: url: {e}"))),
                        Ok((stripped, tls)) => {
                            if let Err(e) = tokio_postgres::Config::from_str(&stripped) {
                                // The parser's message never contains the password.
                                p.push(at(
                                    &s.url.referenced,
                                    format!("source {name}: invalid url: {e}"),
                                ));
                            }
                            if let Err(e) = tls.client() {
                                p.push(at(&s.url.referenced, format!("source {name}: url: {e}")));
                            }
                        }
                    }
                }
                s.url.value = url;
                s.base_dir = base.to_path_buf();
            }
            Err(e) => p.push(at(&s.url.referenced, format!("source {name}: url: {e}"))),
        }
        let what = |k: &str| format!("source {name}: {k}");
        within(
            &mut p,
            file,
            &loc,
            &what("statement_timeout"),
            s.statement_timeout.0,
            MS,
            HOUR,
        );
        within(
            &mut p,
            file,
            &loc,
            &what("connect_timeout"),
            s.connect_timeout.0,
            MS,
            10 * MINUTE,
        );
        count_within(&mut p, file, &loc, &what("pool_size"), s.pool_size, 1, 100);
        if let Some(list) = &s.statuses {
            let names = list.value.names();
            let mut seen = std::collections::HashSet::new();
            if names.is_empty() {
                p.push(at(
                    &list.referenced,
                    format!("source {name}: statuses is empty"),
                ));
            }
            for v in &names {
                if v.trim().is_empty() || v == "other" || !seen.insert(v) {
                    p.push(at(
                        &list.referenced,
                        format!("source {name}: statuses: {v:?} is empty, repeated or the reserved \"other\""),
                    ));
                }
            }
            for t in &s.terminal_statuses {
                if !names.contains(t) {
                    p.push(at(
                        &list.referenced,
                        format!("source {name}: terminal status {t:?} is not in statuses"),
                    ));
                }
            }
        }
        let m = &s.orders;
        let models = [&m.table, &m.history_table, &m.query]
            .iter()
            .filter(|x| x.is_some())
            .count();
        if models != 1 {
            p.push(at(
                &loc,
                format!(
                    "source {name}: orders needs exactly one of `table`, `history_table` or `query`"
                ),
            ));
        }
        for t in [&m.table, &m.history_table].into_iter().flatten() {
            let ok = t.value.split('.').count() <= 2 && t.value.split('.').all(is_identifier);
            if !ok {
                p.push(at(
                    &t.referenced,
                    format!(
                        "{:?} is not a plain SQL identifier (table or schema.table)",
                        t.value
                    ),
                ));
            }
        }
        if let Some(q) = &m.query
            && let Err(e) = super::sql::check_read_only_select(&q.value)
        {
            p.push(at(&q.referenced, format!("orders.query {e}")));
        }
        if let Some(tz) = &s.time_zone
            && chrono_tz::Tz::from_str(&tz.value).is_err()
        {
            p.push(at(
                &tz.referenced,
                format!(
                    "source {name}: unknown time_zone {:?}; use an IANA name such as Europe/Moscow or UTC",
                    tz.value
                ),
            ));
        }
        within(
            &mut p,
            file,
            &loc,
            &what("max_replication_lag"),
            s.max_replication_lag.0,
            SECOND,
            DAY,
        );
        if m.history_table.is_none() {
            for (key, set) in [
                ("history_lookback", m.history_lookback.is_some()),
                ("history_overlap", m.history_overlap.is_some()),
                ("tiebreak", m.tiebreak.is_some()),
            ] {
                if set {
                    p.push(at(
                        &loc,
                        format!("source {name}: orders.{key} applies only to history_table"),
                    ));
                }
            }
        }
        if let Some(o) = m.history_overlap {
            within(
                &mut p,
                file,
                &loc,
                &what("orders.history_overlap"),
                o.0,
                SECOND,
                DAY,
            );
        }
        for col in [&m.id, &m.status, &m.entered_at]
            .into_iter()
            .chain(m.tiebreak.iter())
            .chain(m.labels.iter())
        {
            if !is_identifier(&col.value) {
                p.push(at(
                    &col.referenced,
                    format!(
                        "{:?} is not a plain SQL identifier (letters, digits, _)",
                        col.value
                    ),
                ));
            }
        }
        if let Some(fl) = &s.flow_label
            && ["flow", "le"].contains(&fl.value.as_str())
        {
            p.push(at(
                &fl.referenced,
                format!(
                    "source {name}: flow_label {:?} clashes with a label of the order flow metrics (flow, le)",
                    fl.value
                ),
            ));
        } else if let Some(fl) = &s.flow_label
            && !m.labels.iter().any(|l| l.value == fl.value)
        {
            let near = crate::human::closest(&fl.value, m.labels.iter().map(|l| l.value.as_str()))
                .map(|n| format!("; did you mean {n}?"))
                .unwrap_or_default();
            p.push(at(
                &fl.referenced,
                format!(
                    "source {name}: flow_label {:?} is not one of orders.labels (only allow-listed columns become labels){near}",
                    fl.value
                ),
            ));
        }
        for l in &m.labels {
            if RESERVED_LABELS.contains(&l.value.as_str()) || l.value.starts_with("__") {
                p.push(at(
                    &l.referenced,
                    format!("label column {:?} clashes with a reserved label", l.value),
                ));
            }
        }
    }
    for (name, flow) in &config.flows {
        let statuses = &flow.value;
        if !is_identifier(name) {
            p.push(at(
                &flow.referenced,
                format!("flows: {name:?} is not a name (letters, digits, _)"),
            ));
        }
        if statuses.len() != 2 || statuses[0] == statuses[1] {
            p.push(at(
                &flow.referenced,
                format!(
                    "flows.{name}: give two different statuses, where the flow starts and where it ends, e.g. [SUBMITTED, SHIPPED]"
                ),
            ));
            continue;
        }
        // Sources that list their statuses say which names exist: a flow none of them
        // knows both statuses of would never be timed (a typo, `SHIPED`).
        let listed: Vec<Vec<String>> = config
            .sources
            .values()
            .filter(|c| c.value.flow)
            .filter_map(|c| c.value.statuses.as_ref().map(|s| s.value.names()))
            .collect();
        let unlisted = config
            .sources
            .values()
            .any(|c| c.value.flow && c.value.statuses.is_none());
        if !unlisted
            && !listed.is_empty()
            && !listed
                .iter()
                .any(|names| statuses.iter().all(|s| names.contains(s)))
        {
            let all: Vec<&str> = listed.iter().flatten().map(String::as_str).collect();
            let unknown: Vec<String> = statuses
                .iter()
                .filter(|s| !all.contains(&s.as_str()))
                .map(|s| match crate::human::closest(s, all.iter().copied()) {
                    Some(n) => format!("{s} (did you mean {n}?)"),
                    None => s.clone(),
                })
                .collect();
            p.push(at(
                &flow.referenced,
                if unknown.is_empty() {
                    format!(
                        "flows.{name}: no source lists both {} and {}",
                        statuses[0], statuses[1]
                    )
                } else {
                    format!("flows.{name}: no source lists {}", unknown.join(", "))
                },
            ));
        }
    }
    let top = Location::UNKNOWN;
    within(
        &mut p,
        file,
        &top,
        "gauges_interval",
        config.gauges_interval.0,
        SECOND,
        DAY,
    );
    within(
        &mut p,
        file,
        &top,
        "source_down_after",
        config.source_down_after.0,
        SECOND,
        30 * DAY,
    );
    within(
        &mut p,
        file,
        &top,
        "rule_failing_after",
        config.rule_failing_after.0,
        SECOND,
        30 * DAY,
    );
    let d = &config.delivery;
    within(
        &mut p,
        file,
        &top,
        "delivery.initial_backoff",
        d.initial_backoff.0,
        MS,
        DAY,
    );
    within(
        &mut p,
        file,
        &top,
        "delivery.max_backoff",
        d.max_backoff.0,
        MS,
        DAY,
    );
    within(
        &mut p,
        file,
        &top,
        "delivery.max_age",
        d.max_age.0,
        SECOND,
        365 * DAY,
    );
    notify(file, config, &mut p);
    if let Some(am) = &mut config.notifiers.alertmanager {
        within(
            &mut p,
            file,
            &top,
            "notifiers.alertmanager.resend_delay",
            am.resend_delay.0,
            SECOND,
            DAY,
        );
        within(
            &mut p,
            file,
            &top,
            "notifiers.alertmanager.timeout",
            am.timeout.0,
            MS,
            10 * MINUTE,
        );
        if am.urls.is_empty() {
            p.push(Problem {
                file: file.to_path_buf(),
                line: 0,
                column: 0,
                message: "notifiers.alertmanager.urls is empty".into(),
            });
        }
        http_client_settings(file, base, am, &mut p);
        for u in &am.urls {
            if !(u.value.starts_with("http://") || u.value.starts_with("https://")) {
                p.push(at(
                    &u.referenced,
                    format!("{:?} is not an http(s) URL", u.value),
                ));
            }
        }
    }
    p
}

/// What config alone can check of the direct channels: a route when there are receivers, a
/// receiver at the root, and the names routes refer to. The rest (each channel's values and
/// templates, matchers, mute windows, the route tree) is `notify::check`'s.
fn notify(file: &Path, config: &Config, p: &mut Vec<Problem>) {
    let Some(route) = &config.route else {
        if !config.receivers.is_empty() {
            p.push(Problem {
                file: file.to_path_buf(),
                line: 0,
                column: 0,
                message: "`receivers` needs a `route` saying which receiver gets which alerts"
                    .into(),
            });
        }
        return;
    };
    if route.receiver.is_none() {
        p.push(Problem {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: "route: the root route needs a `receiver`".into(),
        });
    }
    check_route_names(file, route, config, p);
}

fn check_route_names(
    file: &Path,
    r: &super::receivers::RouteConfig,
    config: &Config,
    p: &mut Vec<Problem>,
) {
    if let Some(recv) = &r.receiver
        && !config.receivers.contains_key(&recv.value)
    {
        let known: Vec<&str> = config.receivers.keys().map(String::as_str).collect();
        p.push(ConfigError::at(
            file,
            &recv.referenced,
            format!(
                "unknown receiver {:?}; configured receivers: {}",
                recv.value,
                known.join(", ")
            ),
        ));
    }
    for m in r.mute_time_intervals.iter().flatten() {
        if !config.time_intervals.contains_key(&m.value) {
            p.push(ConfigError::at(
                file,
                &m.referenced,
                format!("unknown time interval {:?}", m.value),
            ));
        }
    }
    for child in &r.routes {
        check_route_names(file, child, config, p);
    }
}

/// Validates rules against each other and against the main file.
pub(super) fn rules(config: &Config, rules: &[(PathBuf, RuleConfig)]) -> Vec<Problem> {
    let mut p = Vec::new();
    let mut seen: BTreeMap<&str, (&Path, Location)> = BTreeMap::new();
    let env = minijinja::Environment::new();
    for (file, r) in rules {
        let at = |loc: &Location, msg: String| ConfigError::at(file, loc, msg);
        let name = r.name.value.as_str();
        if !is_rule_name(name) {
            p.push(at(
                &r.name.referenced,
                format!("rule name {name:?} must match [a-z0-9_]+"),
            ));
        }
        if crate::config::RESERVED_RULE_NAMES.contains(&name) {
            p.push(at(
                &r.name.referenced,
                format!("rule name {name:?} is reserved for orderwatch's own alerts"),
            ));
        }
        if let Some((f, loc)) = seen.get(name) {
            p.push(at(
                &r.name.referenced,
                format!(
                    "duplicate rule name {name:?}: already defined at {}:{}:{}",
                    f.display(),
                    loc.line(),
                    loc.column()
                ),
            ));
        } else {
            seen.insert(name, (file, r.name.referenced));
        }
        if r.kind == crate::config::RuleKind::HttpErrors {
            match (&r.prometheus_url, r.scrape.is_empty()) {
                (Some(_), false) | (None, true) => p.push(at(
                    &r.name.referenced,
                    "kind: http_errors needs either `prometheus_url` or `scrape` (not both)".into(),
                )),
                _ => {}
            }
            for u in r
                .prometheus_url
                .iter()
                .chain(r.scrape.iter().map(|t| &t.url))
            {
                if !(u.value.starts_with("http://") || u.value.starts_with("https://")) {
                    p.push(at(
                        &u.referenced,
                        format!("{:?} is not an http(s) URL", u.value),
                    ));
                }
            }
            if !(r.threshold > 0.0 && r.threshold <= 1.0) {
                p.push(at(
                    &r.name.referenced,
                    "threshold must be a ratio in (0, 1]".into(),
                ));
            }
            if r.growth.is_some_and(|g| g <= 1.0) {
                p.push(at(
                    &r.name.referenced,
                    "growth must be a factor above 1".into(),
                ));
            }
        } else if r.source.value.is_empty() {
            p.push(at(
                &r.name.referenced,
                format!("kind: {} needs `source`", r.kind.as_str()),
            ));
        } else if !config.sources.contains_key(&r.source.value) {
            let known: Vec<&str> = config.sources.keys().map(String::as_str).collect();
            p.push(at(
                &r.source.referenced,
                format!(
                    "unknown source {:?}; configured sources: {}",
                    r.source.value,
                    known.join(", ")
                ),
            ));
        }
        match (r.kind, &r.missing_in) {
            (crate::config::RuleKind::Missing, None) => p.push(at(
                &r.name.referenced,
                "kind: missing needs `missing_in` (the other source)".into(),
            )),
            (crate::config::RuleKind::Missing, Some(m)) => {
                if !config.sources.contains_key(&m.value) {
                    let known: Vec<&str> = config.sources.keys().map(String::as_str).collect();
                    p.push(at(
                        &m.referenced,
                        format!(
                            "unknown source {:?}; configured sources: {}",
                            m.value,
                            known.join(", ")
                        ),
                    ));
                } else if m.value == r.source.value {
                    p.push(at(
                        &m.referenced,
                        "missing_in must name another source than `source`".into(),
                    ));
                }
                if let Some(e) = &r.expect_status
                    && e.value.to_vec().iter().all(|s| s.trim().is_empty())
                {
                    p.push(at(
                        &e.referenced,
                        "expect_status must name at least one status".into(),
                    ));
                }
            }
            (_, Some(m)) => p.push(at(
                &m.referenced,
                "missing_in applies only to kind: missing".into(),
            )),
            _ => {
                if let Some(e) = &r.expect_status {
                    p.push(at(
                        &e.referenced,
                        "expect_status applies only to kind: missing".into(),
                    ));
                }
            }
        }
        use crate::config::RuleKind;
        let order_kind = matches!(r.kind, RuleKind::Stuck | RuleKind::Missing);
        match &r.status {
            Some(s) if order_kind => {
                let statuses = s.value.to_vec();
                if statuses.is_empty() || statuses.iter().any(|s| s.trim().is_empty()) {
                    p.push(at(
                        &s.referenced,
                        "status must name at least one non-empty status".into(),
                    ));
                }
                // A source that lists its statuses knows every value a rule may name: a name
                // outside the list (a typo, `SUBMITED`) would never match a row, and a coded
                // column could not be queried for it at all.
                let coded = |src: &str, wanted: Vec<String>, span: &Location| -> Vec<Problem> {
                    let Some(known) = config
                        .sources
                        .get(src)
                        .and_then(|c| c.value.statuses.as_ref())
                    else {
                        return Vec::new();
                    };
                    let names = known.value.names();
                    let what = match known.value {
                        crate::config::StatusNames::Codes(_) => "has no code in",
                        crate::config::StatusNames::Names(_) => "is not in",
                    };
                    wanted
                        .into_iter()
                        .filter(|w| !names.contains(w))
                        .map(|w| {
                            let near = crate::human::closest(&w, names.iter().map(String::as_str))
                                .map(|n| format!("; did you mean {n}?"))
                                .unwrap_or_default();
                            at(
                                span,
                                format!(
                                    "status {w} {what} source {src}'s statuses ({}){near}",
                                    names.join(", ")
                                ),
                            )
                        })
                        .collect()
                };
                p.extend(coded(&r.source.value, statuses, &s.referenced));
                if let (Some(m), Some(e)) = (&r.missing_in, &r.expect_status) {
                    p.extend(coded(&m.value, e.value.to_vec(), &e.referenced));
                }
            }
            Some(s) => p.push(at(
                &s.referenced,
                format!("status does not apply to kind: {}", r.kind.as_str()),
            )),
            None if order_kind => p.push(at(
                &r.name.referenced,
                format!("kind: {} needs `status`", r.kind.as_str()),
            )),
            None => {}
        }
        match &r.older_than {
            Some(d) if r.kind != RuleKind::Sql => positive(&mut p, file, d, "older_than"),
            Some(d) => p.push(at(
                &d.referenced,
                "older_than does not apply to kind: sql".into(),
            )),
            None if order_kind => p.push(at(
                &r.name.referenced,
                format!("kind: {} needs `older_than`", r.kind.as_str()),
            )),
            None => {}
        }
        if r.kind != RuleKind::SlowQueries
            && let Some(x) = r.exclude_applications.first().or(r.exclude_users.first())
        {
            p.push(at(
                &x.referenced,
                "exclude_applications and exclude_users apply only to kind: slow_queries".into(),
            ));
        }
        for x in r.exclude_applications.iter().chain(&r.exclude_users) {
            if let Err(e) = regex::Regex::new(&x.value) {
                p.push(at(&x.referenced, format!("bad regex {:?}: {e}", x.value)));
            }
        }
        match (&r.query, r.kind) {
            (None, RuleKind::Sql) => {
                p.push(at(&r.name.referenced, "kind: sql needs `query`".into()))
            }
            (Some(q), RuleKind::Sql) => {
                if let Err(e) = super::sql::check_read_only_select(&q.value) {
                    p.push(at(&q.referenced, format!("query {e}")));
                }
            }
            (Some(q), k) if k != RuleKind::Sql && k != RuleKind::HttpErrors => p.push(at(
                &q.referenced,
                "query applies only to kind: sql and http_errors".into(),
            )),
            _ => {}
        }
        if let Some(i) = &r.interval {
            within(
                &mut p,
                file,
                &i.referenced,
                "interval",
                i.value.0,
                SECOND,
                DAY,
            );
        }
        let rloc = r.name.referenced;
        count_within(
            &mut p,
            file,
            &rloc,
            "max_findings",
            r.max_findings,
            1,
            MAX_COUNT,
        );
        count_within(
            &mut p,
            file,
            &rloc,
            "max_alerts",
            r.max_alerts,
            1,
            MAX_COUNT,
        );
        count_within(&mut p, file, &rloc, "batch_size", r.batch_size, 1, 100_000);
        if r.kind == RuleKind::HttpErrors {
            within(&mut p, file, &rloc, "window", r.window.0, SECOND, 30 * DAY);
        }
        match (&r.interval, &r.schedule) {
            (Some(i), Some(_)) => p.push(at(
                &i.referenced,
                "give either interval or schedule, not both".into(),
            )),
            (_, Some(s)) => {
                if let Err(e) = croner::Cron::from_str(&s.value) {
                    p.push(at(
                        &s.referenced,
                        format!("invalid cron schedule {:?}: {e}", s.value),
                    ));
                } else if s.value.split_whitespace().count() != 5 && !s.value.starts_with('@') {
                    p.push(at(
                        &s.referenced,
                        format!(
                            "schedule {:?} must have 5 fields (minute hour day month weekday)",
                            s.value
                        ),
                    ));
                }
            }
            _ => {}
        }
        if let Some(tz) = &r.timezone {
            if r.schedule.is_none() {
                p.push(at(
                    &tz.referenced,
                    "timezone applies only to schedule".into(),
                ));
            }
            if chrono_tz::Tz::from_str(&tz.value).is_err() {
                p.push(at(
                    &tz.referenced,
                    format!(
                        "unknown time zone {:?} (expected e.g. Europe/Moscow)",
                        tz.value
                    ),
                ));
            }
        }
        for k in r.labels.keys() {
            if !is_label_name(k) || RESERVED_LABELS.contains(&k.as_str()) || k.starts_with("__") {
                p.push(at(
                    &r.name.referenced,
                    format!("rule {name}: label {k:?} is reserved or not a valid label name"),
                ));
            }
        }
        for (k, t) in &r.annotations {
            if let Err(e) = env.template_from_str(&t.value) {
                p.push(at(
                    &t.referenced,
                    format!("annotation {k}: template error: {e}"),
                ));
            }
        }
        if r.max_alerts > r.max_findings {
            p.push(at(
                &r.name.referenced,
                "max_alerts cannot exceed max_findings".into(),
            ));
        }
    }
    p
}

/// Reads the Alertmanager client's credentials and TLS files into `resolved_*`.
fn http_client_settings(
    file: &Path,
    base: &Path,
    am: &mut super::model::AlertmanagerConfig,
    p: &mut Vec<Problem>,
) {
    let at = |loc: &Location, msg: String| ConfigError::at(file, loc, msg);
    let read_secret = |inline: &Option<Spanned<String>>,
                       path: &Option<Spanned<PathBuf>>,
                       what: &str,
                       loc: &Location,
                       p: &mut Vec<Problem>|
     -> Option<String> {
        match (inline, path) {
            (Some(v), None) => match super::secret::expand_secrets(&v.value, base) {
                Ok(s) => Some(s),
                Err(e) => {
                    p.push(at(&v.referenced, format!("{what}: {e}")));
                    None
                }
            },
            (None, Some(f)) => match std::fs::read_to_string(base.join(&f.value)) {
                Ok(s) => Some(s.trim_end_matches(['\r', '\n']).to_string()),
                Err(e) => {
                    p.push(at(
                        &f.referenced,
                        format!("{what}_file {}: {e}", base.join(&f.value).display()),
                    ));
                    None
                }
            },
            _ => {
                p.push(at(
                    loc,
                    format!("give exactly one of {what} and {what}_file"),
                ));
                None
            }
        }
    };
    am.resolved_auth = match (&am.basic_auth, &am.authorization) {
        (Some(_), Some(a)) => {
            let loc = a
                .credentials
                .as_ref()
                .map_or(Location::UNKNOWN, |c| c.referenced);
            p.push(at(
                &loc,
                "notifiers.alertmanager: give basic_auth or authorization, not both".into(),
            ));
            None
        }
        (Some(b), None) => read_secret(
            &b.password,
            &b.password_file,
            "password",
            &b.username.referenced,
            p,
        )
        .map(|pw| super::model::HttpAuth::Basic(b.username.value.clone(), pw)),
        (None, Some(a)) => read_secret(
            &a.credentials,
            &a.credentials_file,
            "credentials",
            &Location::UNKNOWN,
            p,
        )
        .map(|c| {
            super::model::HttpAuth::Header(a.kind.clone().unwrap_or_else(|| "Bearer".into()), c)
        }),
        (None, None) => None,
    };
    if let Some(t) = &am.tls_config {
        let read =
            |f: &Spanned<PathBuf>, p: &mut Vec<Problem>| match std::fs::read(base.join(&f.value)) {
                Ok(b) => Some(b),
                Err(e) => {
                    p.push(at(
                        &f.referenced,
                        format!("tls_config: {}: {e}", base.join(&f.value).display()),
                    ));
                    None
                }
            };
        let trust = match &t.ca_file {
            Some(f) => read(f, p).map(crate::tls::Trust::Pem),
            None => Some(crate::tls::Trust::Mozilla),
        };
        let identity = match (&t.cert_file, &t.key_file) {
            (Some(c), Some(k)) => match (read(c, p), read(k, p)) {
                (Some(c), Some(k)) => Some(Some((c, k))),
                _ => None,
            },
            (None, None) => Some(None),
            (Some(f), None) | (None, Some(f)) => {
                p.push(at(
                    &f.referenced,
                    "tls_config: cert_file and key_file go together".into(),
                ));
                None
            }
        };
        let check = match (&t.server_name, t.insecure_skip_verify) {
            (_, true) => crate::tls::Check::EncryptOnly,
            (Some(n), false) => crate::tls::Check::FullAs(n.clone()),
            (None, false) => crate::tls::Check::Full,
        };
        if let (Some(trust), Some(identity)) = (trust, identity) {
            let tls = crate::tls::ClientTls {
                trust,
                check,
                identity,
            };
            match tls.config() {
                Ok(_) => am.resolved_tls = Some(tls),
                Err(e) => {
                    let loc = t
                        .ca_file
                        .as_ref()
                        .or(t.cert_file.as_ref())
                        .map_or(Location::UNKNOWN, |f| f.referenced);
                    p.push(at(&loc, format!("tls_config: {e}")));
                }
            }
        }
    }
}

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// The largest count any setting takes (`max_findings`, `max_alerts`, …).
pub const MAX_COUNT: usize = 10_000_000;

/// `value` must lie in `min..=max`; the problem says which bound and where.
pub(super) fn within(
    p: &mut Vec<Problem>,
    file: &Path,
    loc: &Location,
    what: &str,
    value: Duration,
    min: Duration,
    max: Duration,
) {
    if value < min || value > max {
        p.push(ConfigError::at(
            file,
            loc,
            format!(
                "{what} must be between {} and {} (is {})",
                humantime::format_duration(min),
                humantime::format_duration(max),
                humantime::format_duration(value)
            ),
        ));
    }
}

/// `value` must lie in `min..=max`.
pub(super) fn count_within(
    p: &mut Vec<Problem>,
    file: &Path,
    loc: &Location,
    what: &str,
    value: usize,
    min: usize,
    max: usize,
) {
    if value < min || value > max {
        p.push(ConfigError::at(
            file,
            loc,
            format!("{what} must be between {min} and {max} (is {value})"),
        ));
    }
}

fn positive(p: &mut Vec<Problem>, file: &Path, d: &Spanned<super::duration::Dur>, what: &str) {
    if d.value.0.is_zero() {
        p.push(ConfigError::at(
            file,
            &d.referenced,
            format!("{what} must be greater than 0"),
        ));
    }
}
