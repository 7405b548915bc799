//! A static check of the SQL users write (`kind: sql` queries, the `orders.query` model): one
//! statement, a `SELECT` or `WITH … SELECT`, with no data-modifying part. The read-only
//! transaction every statement runs in is the real guard; this check turns a mistake into a
//! config error with file:line:col before anything reaches the database.

/// Words that make a statement write, lock or create something, wherever they appear outside
/// strings, quoted identifiers and comments.
const WRITING: &[&str] = &[
    "INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE", "COPY", "CREATE", "DROP", "ALTER", "GRANT",
    "REVOKE", "CALL", "LOCK", "INTO", "VACUUM", "REINDEX", "CLUSTER", "REFRESH", "NOTIFY",
    "LISTEN", "PREPARE", "EXECUTE", "DISCARD", "RESET", "SET",
];

/// Functions whose effect outlives the transaction or leaves it: session-level advisory locks
/// (a ROLLBACK keeps them) and dblink (a second connection the read-only transaction does not
/// cover).
const LEAKING_FUNCTIONS: &[&str] = &[
    "PG_ADVISORY_LOCK",
    "PG_ADVISORY_LOCK_SHARED",
    "PG_TRY_ADVISORY_LOCK",
    "PG_TRY_ADVISORY_LOCK_SHARED",
    "DBLINK",
    "DBLINK_EXEC",
    "DBLINK_CONNECT",
    "DBLINK_CONNECT_U",
    "DBLINK_SEND_QUERY",
    "DBLINK_OPEN",
];

/// Checks that `sql` is one read-only `SELECT`/`WITH` statement (a trailing `;` is allowed).
pub fn check_read_only_select(sql: &str) -> Result<(), String> {
    let tokens = tokens(sql)?;
    let mut words = tokens.iter().filter(|t| *t != ";");
    match words.next().map(String::as_str) {
        Some("SELECT" | "WITH" | "(") => {}
        Some(other) => {
            return Err(format!(
                "must be a SELECT or WITH … SELECT statement, not {other}"
            ));
        }
        None => return Err("is empty".into()),
    }
    if let Some(pos) = tokens.iter().position(|t| t == ";")
        && tokens[pos + 1..].iter().any(|t| t != ";")
    {
        return Err("must be one statement (found `;` followed by more SQL)".into());
    }
    for (i, t) in tokens.iter().enumerate() {
        if WRITING.contains(&t.as_str()) {
            return Err(format!(
                "must only read: {t} is not allowed (every statement runs read-only)"
            ));
        }
        if LEAKING_FUNCTIONS.contains(&t.as_str()) {
            return Err(format!(
                "must not call {}: its effect outlives the read-only transaction",
                t.to_lowercase()
            ));
        }
        // FOR UPDATE / FOR SHARE / FOR NO KEY UPDATE / FOR KEY SHARE lock rows.
        if t == "FOR"
            && tokens
                .get(i + 1)
                .is_some_and(|n| matches!(n.as_str(), "SHARE" | "NO" | "KEY"))
        {
            return Err("must only read: row locks (FOR SHARE …) are not allowed".into());
        }
    }
    Ok(())
}

/// `sql` without a final `;` (and the comments after it), ready to be wrapped in a subquery.
pub fn without_trailing_semicolon(sql: &str) -> &str {
    let t = sql.trim();
    if let Some(pos) = t.rfind(';') {
        let rest = &t[pos + 1..];
        if rest.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with("--")
        }) {
            return t[..pos].trim_end();
        }
    }
    t
}

/// Upper-cased words and the punctuation `;` `(` `)`, skipping strings (`'…'`, `E'…'`,
/// `$tag$…$tag$`), quoted identifiers and comments (`--`, nested `/* */`).
fn tokens(sql: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                let mut depth = 0;
                loop {
                    match (chars.get(i), chars.get(i + 1)) {
                        (Some('/'), Some('*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some('*'), Some('/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        (Some(_), _) => i += 1,
                        (None, _) => return Err("has an unterminated /* comment".into()),
                    }
                }
            }
            '\'' => {
                // E'…' allows backslash escapes ('' is a quote in both forms); the E must be a
                // word of its own (`date'…'` is a typed literal, not an escape string).
                let escapes = i > 0
                    && matches!(chars[i - 1], 'e' | 'E')
                    && (i < 2 || !(chars[i - 2].is_alphanumeric() || chars[i - 2] == '_'));
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("has an unterminated string".into()),
                        Some('\\') if escapes => i += 2,
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => i += 2,
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            '"' => {
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("has an unterminated quoted identifier".into()),
                        Some('"') if chars.get(i + 1) == Some(&'"') => i += 2,
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                out.push("\"\"".into());
            }
            '$' if dollar_tag(&chars, i).is_some() => {
                let tag = dollar_tag(&chars, i).expect("checked");
                i += tag.len();
                loop {
                    if i >= chars.len() {
                        return Err("has an unterminated $$ string".into());
                    }
                    if chars[i..].starts_with(&tag) {
                        i += tag.len();
                        break;
                    }
                    i += 1;
                }
            }
            ';' | '(' | ')' => {
                out.push(c.to_string());
                i += 1;
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '$'))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                out.push(word.to_uppercase());
            }
            _ => i += 1,
        }
    }
    Ok(out)
}

/// `$tag$` (or `$$`) starting at `i`, as characters.
fn dollar_tag(chars: &[char], i: usize) -> Option<Vec<char>> {
    // `$1` is a parameter, not a tag.
    let mut j = i + 1;
    while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
        if j == i + 1 && chars[j].is_ascii_digit() {
            return None;
        }
        j += 1;
    }
    (chars.get(j) == Some(&'$')).then(|| chars[i..=j].to_vec())
}

#[cfg(test)]
mod tests {
    use super::check_read_only_select as check;

    #[test]
    fn plain_selects_pass() {
        check("SELECT id, count(*) AS value FROM orders GROUP BY id;").unwrap();
        check("with x as (select 1) select * from x").unwrap();
        check("(SELECT 1) UNION (SELECT 2)").unwrap();
        // Words inside strings, identifiers and comments are data, not SQL.
        check("SELECT 'delete; drop table x' AS \"update\" -- insert\n FROM t /* into */").unwrap();
        check("SELECT $$ ; DELETE $$, $q$x$q$, E'it\\'s; drop', $1 FROM t").unwrap();
        // A typed literal is not an escape string: the backslash does not hide the quote.
        assert!(check("SELECT date'2026-01-01', name'\\' ; DELETE FROM t").is_err());
        // A transaction-level advisory lock ends with the transaction: allowed.
        check("SELECT pg_try_advisory_xact_lock(1) AS id").unwrap();
    }

    #[test]
    fn writes_and_second_statements_fail() {
        for bad in [
            "DELETE FROM orders",
            "SELECT 1; DELETE FROM orders",
            "WITH d AS (DELETE FROM orders RETURNING id) SELECT * FROM d",
            "SELECT * INTO copy_of_orders FROM orders",
            "SELECT * FROM orders FOR UPDATE",
            "SELECT * FROM orders FOR KEY SHARE",
            "SET default_transaction_read_only = off",
            "SELECT 1; COMMIT",
            "SELECT pg_advisory_lock(1) AS id",
            "SELECT id FROM orders WHERE pg_try_advisory_lock(42)",
            "SELECT * FROM dblink('host=x', 'DELETE FROM orders RETURNING 1') AS t(id int)",
            "",
            "SELECT 'unterminated",
        ] {
            assert!(check(bad).is_err(), "{bad:?} passed");
        }
    }
}
