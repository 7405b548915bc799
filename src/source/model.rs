//! The order model of a source, and the SQL generated from it.
//!
//! Every model is first turned into one relation with the columns `order_id, status,
//! entered_at, l_0 … l_n` (the allow-listed labels). PostgreSQL flattens that subquery, so the
//! rule's filter `status = ANY($1) AND entered_at < now() - $2` reaches the table and becomes a
//! range scan on an index over (status, entered_at). Only these columns are ever selected:
//! personal data stays in the database.

use crate::config::OrderModelConfig;

/// Where the orders are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelKind {
    /// One row per order with its current status.
    Table(String),
    /// A status-history table: the latest row per order is its current status.
    History {
        /// The table.
        table: String,
        /// Ignore rows older than this many seconds.
        lookback_secs: Option<u64>,
    },
    /// A custom query returning the columns.
    Query(String),
}

/// A source's order model: where orders are and which columns may be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderModel {
    /// Where the orders are.
    pub kind: ModelKind,
    /// Order id column.
    pub id: String,
    /// Status column.
    pub status: String,
    /// Column with when the order entered its status.
    pub entered_at: String,
    /// Allow-listed label columns.
    pub labels: Vec<String>,
}

/// Quotes an identifier already checked to be plain (`[A-Za-z_][A-Za-z0-9_]*`), or a
/// `schema.table` pair of them.
fn quote(ident: &str) -> String {
    ident
        .split('.')
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".")
}

impl OrderModel {
    /// From the validated config.
    pub fn from_config(c: &OrderModelConfig) -> OrderModel {
        let kind = if let Some(t) = &c.table {
            ModelKind::Table(t.value.clone())
        } else if let Some(t) = &c.history_table {
            ModelKind::History {
                table: t.value.clone(),
                lookback_secs: c.history_lookback.map(|d| d.0.as_secs()),
            }
        } else {
            ModelKind::Query(
                c.query
                    .as_ref()
                    .map(|q| q.value.clone())
                    .unwrap_or_default(),
            )
        };
        OrderModel {
            kind,
            id: c.id.value.clone(),
            status: c.status.value.clone(),
            entered_at: c.entered_at.value.clone(),
            labels: c.labels.iter().map(|l| l.value.clone()).collect(),
        }
    }

    /// The relation `(order_id, status, entered_at, l_0…)` over this model.
    pub fn relation(&self) -> String {
        let (alias, from, filter) = match &self.kind {
            ModelKind::Table(t) => ("t", format!("{} t", quote(t)), String::new()),
            ModelKind::History {
                table,
                lookback_secs,
            } => {
                let (id, at) = (quote(&self.id), quote(&self.entered_at));
                // Latest row per order: no newer row for the same order exists. With an index on
                // (order_id, entered_at) this anti-join is one index probe per candidate row.
                let mut filter = format!(
                    " WHERE NOT EXISTS (SELECT 1 FROM {t} n WHERE n.{id} = h.{id} AND n.{at} > h.{at})",
                    t = quote(table)
                );
                if let Some(secs) = lookback_secs {
                    filter.push_str(&format!(
                        " AND h.{at} >= now() - make_interval(secs => {secs})"
                    ));
                }
                ("h", format!("{} h", quote(table)), filter)
            }
            // On lines of its own, so a trailing `-- comment` cannot swallow the `) q`.
            ModelKind::Query(q) => (
                "q",
                format!("(\n{}\n) q", crate::config::without_trailing_semicolon(q)),
                String::new(),
            ),
        };
        let mut cols = vec![
            format!("{alias}.{} AS order_id", quote(&self.id)),
            format!("{alias}.{} AS status", quote(&self.status)),
            format!("{alias}.{} AS entered_at", quote(&self.entered_at)),
        ];
        for (i, l) in self.labels.iter().enumerate() {
            cols.push(format!("{alias}.{} AS l_{i}", quote(l)));
        }
        format!("SELECT {} FROM {from}{filter}", cols.join(", "))
    }

    /// Orders in one of the statuses `$1::text[]` for longer than `$2` seconds, oldest first,
    /// at most `$3` rows. Every row carries the exact total (`total`) and per-status count and
    /// oldest age, computed over all matching rows before the limit.
    ///
    /// Columns: order_id, status, entered_at (timestamptz), age_seconds, total, status_total,
    /// status_oldest_age, l_0…
    pub fn stuck_sql(&self) -> String {
        let labels: String = (0..self.labels.len())
            .map(|i| format!(", o.l_{i}::text"))
            .collect();
        format!(
            "SELECT o.order_id::text, o.status::text, o.entered_at::timestamptz, \
             EXTRACT(EPOCH FROM (now() - o.entered_at))::float8 AS age_seconds, \
             count(*) OVER () AS total, \
             count(*) OVER (PARTITION BY o.status) AS status_total, \
             EXTRACT(EPOCH FROM (now() - min(o.entered_at) OVER (PARTITION BY o.status)))::float8 AS status_oldest_age\
             {labels} \
             FROM ({rel}) o \
             WHERE o.status = ANY($1::text[]) AND o.entered_at < now() - make_interval(secs => $2::float8) \
             ORDER BY o.entered_at, o.order_id \
             LIMIT $3::int8",
            rel = self.relation()
        )
    }

    /// Exact count and oldest age per status over every matching order (`$1`, `$2` as in
    /// [`stuck_sql`](Self::stuck_sql)). Needed only when rows were capped: then a status whose
    /// orders are all younger than the last fetched row has no row to carry its count.
    pub fn stuck_stats_sql(&self) -> String {
        format!(
            "SELECT o.status::text, count(*), EXTRACT(EPOCH FROM (now() - min(o.entered_at)))::float8 \
             FROM ({rel}) o \
             WHERE o.status = ANY($1::text[]) AND o.entered_at < now() - make_interval(secs => $2::float8) \
             GROUP BY o.status",
            rel = self.relation()
        )
    }

    /// Candidates of a `missing` rule, one keyset page: orders in status `$1` for over `$2` seconds,
    /// after the cursor (`$3` entered_at, `$4` order id; `$5` false on the first page), oldest
    /// first, at most `$6`. One status at a time, so the index on (status, entered_at) yields
    /// the rows in order and a page costs its own size, not a sort of all remaining
    /// candidates; the redundant `entered_at >= $3` makes it a range scan from the cursor.
    ///
    /// Columns: order_id, status, entered_at, age_seconds, l_0…
    pub fn candidates_sql(&self) -> String {
        let labels: String = (0..self.labels.len())
            .map(|i| format!(", o.l_{i}::text"))
            .collect();
        format!(
            "SELECT o.order_id::text, o.status::text, o.entered_at::timestamptz, \
             EXTRACT(EPOCH FROM (now() - o.entered_at))::float8{labels} \
             FROM ({rel}) o \
             WHERE o.status = $1::text AND o.entered_at < now() - make_interval(secs => $2::float8) \
             AND o.entered_at >= $3::timestamptz \
             AND (NOT $5::bool OR (o.entered_at, o.order_id::text) > ($3::timestamptz, $4::text)) \
             ORDER BY o.entered_at, o.order_id::text \
             LIMIT $6::int8",
            rel = self.relation()
        )
    }

    /// The other side of a `missing` rule: id and current status of the orders `$1` (an array
    /// of the id column's own type, so the primary-key index serves it).
    pub fn lookup_sql(&self) -> String {
        format!(
            "SELECT o.order_id::text, o.status::text FROM ({}) o WHERE o.order_id = ANY($1)",
            self.relation()
        )
    }

    /// Count and oldest age per active status (`$1::text[]` = terminal statuses, skipped).
    /// For a table, the distinct statuses are found by a loose index scan (one probe per
    /// status) and only active statuses are counted, so CLOSED orders are never scanned.
    pub fn gauges_sql(&self) -> String {
        match &self.kind {
            ModelKind::Table(t) => {
                let (t, s, at) = (quote(t), quote(&self.status), quote(&self.entered_at));
                format!(
                    "{} \
                     SELECT s.status::text, c.n, EXTRACT(EPOCH FROM (now() - c.oldest))::float8 \
                     FROM s CROSS JOIN LATERAL \
                       (SELECT count(*) AS n, min(t.{at}) AS oldest FROM {t} t WHERE t.{s} = s.status) c \
                     WHERE s.status IS NOT NULL AND s.status::text <> ALL($1::text[])",
                    statuses_cte(&t, &s)
                )
            }
            _ => format!(
                "SELECT o.status::text, count(*), EXTRACT(EPOCH FROM (now() - min(o.entered_at)))::float8 \
                 FROM ({}) o WHERE o.status::text <> ALL($1::text[]) GROUP BY o.status",
                self.relation()
            ),
        }
    }
}

/// `WITH RECURSIVE s(status)`: the distinct statuses of quoted table `t`, column `s`, by a
/// loose index scan (one index probe per status, however many rows each has).
fn statuses_cte(t: &str, s: &str) -> String {
    format!(
        "WITH RECURSIVE s(status) AS ( \
           (SELECT t.{s} FROM {t} t WHERE t.{s} IS NOT NULL ORDER BY t.{s} LIMIT 1) \
           UNION ALL \
           SELECT (SELECT t.{s} FROM {t} t WHERE t.{s} > s.status ORDER BY t.{s} LIMIT 1) \
           FROM s WHERE s.status IS NOT NULL)"
    )
}

/// The label value every status outside the known ones is exported under.
pub const OTHER_STATUS: &str = "other";
/// Without a `statuses` list, at most this many distinct values become labels.
pub const MAX_STATUS_LABELS: usize = 50;

/// Per-status gauge rows (status, count, oldest age in seconds) with every status that is not
/// `known` (or, without a list, beyond the first [`MAX_STATUS_LABELS`]) folded into `other`:
/// counts added, the oldest age kept. A data value never becomes an unbounded label.
pub fn fold_statuses(
    rows: Vec<(String, i64, Option<f64>)>,
    known: Option<&std::collections::HashSet<String>>,
) -> Vec<(String, i64, Option<f64>)> {
    let mut out: Vec<(String, i64, Option<f64>)> = Vec::new();
    let mut other: Option<(i64, Option<f64>)> = None;
    for (status, n, age) in rows {
        let keep = match known {
            Some(k) => k.contains(&status),
            None => out.len() < MAX_STATUS_LABELS,
        };
        if keep && status != OTHER_STATUS {
            out.push((status, n, age));
        } else {
            let (count, oldest) = other.get_or_insert((0, None));
            *count += n;
            *oldest = match (*oldest, age) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
    }
    if let Some((n, age)) = other {
        out.push((OTHER_STATUS.to_string(), n, age));
    }
    out
}

impl OrderModel {
    /// Every distinct status value the orders hold (for `check`): a loose index scan on a
    /// table, `SELECT DISTINCT` over the relation otherwise.
    pub fn distinct_statuses_sql(&self) -> String {
        match &self.kind {
            ModelKind::Table(t) => {
                let (t, s) = (quote(t), quote(&self.status));
                format!(
                    "{} SELECT s.status::text FROM s WHERE s.status IS NOT NULL LIMIT 1000",
                    statuses_cte(&t, &s)
                )
            }
            _ => format!(
                "SELECT DISTINCT o.status::text FROM ({}) o WHERE o.status IS NOT NULL LIMIT 1000",
                self.relation()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_statuses_fold_into_other() {
        let known: std::collections::HashSet<String> = ["SUBMITTED", "PACKAGING"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let rows = vec![
            ("SUBMITTED".to_string(), 3, Some(10.0)),
            ("x'); DROP".to_string(), 2, Some(50.0)),
            ("anna@example.com".to_string(), 1, None),
            ("PACKAGING".to_string(), 4, Some(5.0)),
        ];
        assert_eq!(
            fold_statuses(rows.clone(), Some(&known)),
            vec![
                ("SUBMITTED".to_string(), 3, Some(10.0)),
                ("PACKAGING".to_string(), 4, Some(5.0)),
                ("other".to_string(), 3, Some(50.0)),
            ]
        );
        let many: Vec<_> = (0..80).map(|i| (format!("S{i}"), 1, None)).collect();
        let folded = fold_statuses(many, None);
        assert_eq!(folded.len(), MAX_STATUS_LABELS + 1);
        assert_eq!(folded.last().unwrap(), &("other".to_string(), 30, None));
    }

    fn model(kind: ModelKind) -> OrderModel {
        OrderModel {
            kind,
            id: "id".into(),
            status: "status".into(),
            entered_at: "status_changed_at".into(),
            labels: vec!["order_type".into()],
        }
    }

    #[test]
    fn table_sql_selects_only_allowed_columns_and_binds_parameters() {
        let sql = model(ModelKind::Table("shop.orders".into())).stuck_sql();
        assert!(sql.contains("FROM \"shop\".\"orders\" t"), "{sql}");
        assert!(sql.contains("t.\"order_type\" AS l_0"), "{sql}");
        assert!(sql.contains("o.status = ANY($1::text[])"), "{sql}");
        assert!(sql.contains("make_interval(secs => $2::float8)"), "{sql}");
        assert!(sql.contains("LIMIT $3::int8"), "{sql}");
        assert!(
            !sql.contains('*') || sql.matches("count(*)").count() == 2,
            "{sql}"
        );
        assert!(!sql.contains("SELECT t.*"));
    }

    #[test]
    fn history_sql_keeps_latest_row_and_lookback() {
        let sql = model(ModelKind::History {
            table: "order_status_history".into(),
            lookback_secs: Some(86400),
        })
        .stuck_sql();
        assert!(
            sql.contains("NOT EXISTS (SELECT 1 FROM \"order_status_history\" n"),
            "{sql}"
        );
        assert!(sql.contains("make_interval(secs => 86400)"), "{sql}");
    }

    #[test]
    fn query_model_wraps_the_query() {
        let sql = model(ModelKind::Query(
            "SELECT id, status, status_changed_at, order_type FROM v; -- the view".into(),
        ))
        .stuck_sql();
        assert!(
            sql.contains("FROM (\nSELECT id, status, status_changed_at, order_type FROM v\n) q"),
            "{sql}"
        );
    }
}
