//! The embedded state store (SQLite under `state_dir`): alert state survives restarts, so a
//! restart neither re-announces what was firing nor forgets what must be resolved.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, params};

use super::alerts::Alert;

/// A state store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory could not be created.
    #[error("state store {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("state store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row did not decode.
    #[error("state store: bad row: {0}")]
    Decode(#[from] serde_json::Error),
}

/// The store. Writes are small (one rule's alerts per evaluation) and quick, so a mutex is
/// enough.
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) `state.sqlite3` in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let conn = Connection::open(dir.join("state.sqlite3"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS alerts (
                 rule TEXT NOT NULL,
                 key  TEXT NOT NULL,
                 body TEXT NOT NULL,
                 PRIMARY KEY (rule, key)
             );",
        )?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// Runs `f` on the connection (other modules keep their own tables here: the outbox).
    pub fn with<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        let mut conn = self.conn.lock().expect("store mutex");
        Ok(f(&mut conn)?)
    }

    /// Every stored alert.
    pub fn load_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        let conn = self.conn.lock().expect("store mutex");
        let mut stmt = conn.prepare("SELECT body FROM alerts ORDER BY rule, key")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for body in rows {
            out.push(serde_json::from_str(&body?)?);
        }
        Ok(out)
    }

    /// Replaces the stored alerts of `rule` with `alerts`, atomically.
    pub fn save_rule<'a>(
        &self,
        rule: &str,
        alerts: impl Iterator<Item = &'a Alert>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.lock().expect("store mutex");
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM alerts WHERE rule = ?1", params![rule])?;
        {
            let mut ins = tx.prepare("INSERT INTO alerts (rule, key, body) VALUES (?1, ?2, ?3)")?;
            for a in alerts {
                ins.execute(params![a.rule, a.key, serde_json::to_string(a)?])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::alerts::{AlertBook, Coverage, Observation, RuleTiming};
    use chrono::Utc;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn alerts_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let mut book = AlertBook::default();
        let timing = RuleTiming {
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            interval: Duration::from_secs(30),
        };
        let o = Observation {
            key: "JW-1".into(),
            labels: BTreeMap::from([("rule".into(), "r".into())]),
            annotations: BTreeMap::new(),
            starts_at: now,
            entered_at: Some(now),
            may_create: true,
        };
        book.apply("r", timing, now, vec![o], Coverage::All);
        {
            let store = Store::open(dir.path()).unwrap();
            store.save_rule("r", book.rule_alerts("r")).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let restored = store.load_alerts().unwrap();
        assert_eq!(restored, book.all().cloned().collect::<Vec<_>>());
        store.save_rule("r", std::iter::empty()).unwrap();
        assert!(store.load_alerts().unwrap().is_empty());
    }
}
