//! The embedded state store (SQLite under `state_dir`): alert state survives restarts, so a
//! restart neither re-announces what was firing nor forgets what must be resolved.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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
    /// SQLite's quick check found damage.
    #[error("state store: damaged ({0})")]
    Corrupt(String),
}

/// Whether `e` means the file is not a usable database (rather than, say, a full disk).
fn is_corruption(e: &StoreError) -> bool {
    match e {
        StoreError::Corrupt(_) => true,
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => matches!(
            f.code,
            rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
        ),
        _ => false,
    }
}

/// Sets `path`'s permission bits when they are wider than `mode`.
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.permissions().mode() & 0o777 & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The store. Writes follow changes (a steady evaluation writes nothing) and run off the
/// async workers ([`crate::blocking::off_worker`]), behind a mutex.
pub struct Store {
    conn: Mutex<Connection>,
    /// Per rule, the durable digest of every alert as last written: a save writes only the
    /// alerts whose digest changed and deletes those gone, so a steady evaluation writes
    /// nothing.
    written: Mutex<HashMap<String, HashMap<String, u64>>>,
    /// Rows inserted, replaced or deleted since open (for tests and the benchmark).
    rows_written: std::sync::atomic::AtomicU64,
}

/// What opening the store had to do besides opening it.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// A corrupt store moved aside to this path (and a fresh one started).
    pub moved_aside: Option<std::path::PathBuf>,
}

/// The file name of the store in `state_dir`.
pub const FILE: &str = "state.sqlite3";

impl Store {
    /// Opens (creating if needed) `state.sqlite3` in `dir`. The directory is made 0700 and
    /// the files 0600 whatever the umask: they hold order ids and pending messages.
    ///
    /// A file that is not a SQLite database, or fails SQLite's quick check, is moved aside as
    /// `state.sqlite3.corrupt-<time>` with a loud error and a fresh store starts: monitoring
    /// without the old alert state beats not monitoring. A store missing (or emptied) in a
    /// directory that holds other files, i.e. that a previous run used, is a warning: every
    /// firing alert will be announced again.
    pub fn open(dir: &Path) -> Result<(Store, OpenReport), StoreError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Io { path, source }
        };
        let had_files = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        restrict(dir, 0o700).map_err(io(dir))?;
        let path = dir.join(FILE);
        let empty = std::fs::metadata(&path).map(|m| m.len() == 0);
        match empty {
            Err(_) if had_files => tracing::warn!(
                path = %path.display(),
                "state store missing from a state directory a previous run used: starting \
                 fresh, every firing alert will be announced again"
            ),
            Ok(true) => tracing::warn!(
                path = %path.display(),
                "state store is empty: starting fresh, every firing alert will be announced again"
            ),
            _ => {}
        }
        let mut report = OpenReport::default();
        let store = match Self::open_file(&path) {
            Ok(s) => s,
            Err(e) if is_corruption(&e) => {
                let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
                // Never over an earlier one moved aside in the same second.
                let aside = (0..)
                    .map(|n| match n {
                        0 => dir.join(format!("{FILE}.corrupt-{stamp}")),
                        n => dir.join(format!("{FILE}.corrupt-{stamp}-{n}")),
                    })
                    .find(|p| !p.exists())
                    .expect("some name is free");
                std::fs::rename(&path, &aside).map_err(io(&path))?;
                for suffix in ["-wal", "-shm"] {
                    let side = dir.join(format!("{FILE}{suffix}"));
                    if side.exists() {
                        let _ = std::fs::rename(&side, format!("{}{suffix}", aside.display()));
                    }
                }
                tracing::error!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    error = %e,
                    "state store is corrupt: moved aside, starting with a fresh one; alerts \
                     that were firing will be announced again"
                );
                report.moved_aside = Some(aside);
                Self::open_file(&path)?
            }
            Err(e) => return Err(e),
        };
        Ok((store, report))
    }

    fn open_file(path: &Path) -> Result<Store, StoreError> {
        // Created 0600 before SQLite opens it; SQLite gives its -wal and -shm files the
        // database file's mode.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| StoreError::Io {
                path: path.display().to_string(),
                source,
            })?;
        restrict(path, 0o600).map_err(|source| StoreError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let conn = Connection::open(path)?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(StoreError::Corrupt(check));
        }
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
        // Schema versions (`PRAGMA user_version`): 0 is a store written by 0.1.0.
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version < 1 {
            conn.execute_batch(
                "BEGIN;
             -- Releases up to 0.1.0 named the internal rules `source-down` and `source-stale`,
             -- outside the rule-name format; their alerts carry on under the new names (a row
             -- already there under the new name wins).
             UPDATE OR IGNORE alerts SET rule = 'source_down',
                 body = json_set(body, '$.rule', 'source_down', '$.labels.rule', 'source_down')
               WHERE rule = 'source-down';
             UPDATE OR IGNORE alerts SET rule = 'source_stale',
                 body = json_set(body, '$.rule', 'source_stale', '$.labels.rule', 'source_stale')
               WHERE rule = 'source-stale';
             DELETE FROM alerts WHERE rule IN ('source-down', 'source-stale');
             -- ... and had no `path` label: restored alerts carry it before their rule
             -- evaluates again (an alert frozen on a down source is pushed as it is stored).
             UPDATE alerts SET body = json_set(body, '$.labels.path', 'orderwatch')
               WHERE json_extract(body, '$.labels.path') IS NULL;
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        }
        for suffix in ["-wal", "-shm"] {
            let side = path.with_file_name(format!("{FILE}{suffix}"));
            if side.exists() {
                let _ = restrict(&side, 0o600);
            }
        }
        Ok(Store {
            conn: Mutex::new(conn),
            written: Mutex::new(HashMap::new()),
            rows_written: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Runs `f` on the connection (other modules keep their own tables here: the outbox).
    pub fn with<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        crate::blocking::off_worker(|| {
            let mut conn = self.conn.lock().expect("store mutex");
            Ok(f(&mut conn)?)
        })
    }

    /// Every stored alert.
    pub fn load_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        let conn = self.conn.lock().expect("store mutex");
        let mut stmt = conn.prepare("SELECT body FROM alerts ORDER BY rule, key")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out: Vec<Alert> = Vec::new();
        for body in rows {
            out.push(serde_json::from_str(&body?)?);
        }
        let mut written = self.written.lock().expect("written mutex");
        written.clear();
        for a in &out {
            written
                .entry(a.rule.clone())
                .or_default()
                .insert(a.key.clone(), a.durable_digest());
        }
        Ok(out)
    }

    /// Brings the stored alerts of `rule` in line with `alerts`, atomically: writes the
    /// alerts whose durable part changed since they were last written, deletes those gone,
    /// and touches nothing else.
    pub fn save_rule<'a>(
        &self,
        rule: &str,
        alerts: impl Iterator<Item = &'a Alert>,
    ) -> Result<(), StoreError> {
        crate::blocking::off_worker(|| self.save_rule_now(rule, alerts))
    }

    fn save_rule_now<'a>(
        &self,
        rule: &str,
        alerts: impl Iterator<Item = &'a Alert>,
    ) -> Result<(), StoreError> {
        let mut written = self.written.lock().expect("written mutex");
        // A rule not written (nor loaded) since open is replaced whole, once.
        let first = !written.contains_key(rule);
        let before = written.get(rule).cloned().unwrap_or_default();
        let mut now: HashMap<String, u64> = HashMap::with_capacity(before.len());
        let mut changed: Vec<&Alert> = Vec::new();
        for a in alerts {
            let d = a.durable_digest();
            if before.get(&a.key) != Some(&d) {
                changed.push(a);
            }
            now.insert(a.key.clone(), d);
        }
        let gone: Vec<&String> = before.keys().filter(|k| !now.contains_key(*k)).collect();
        if changed.is_empty() && gone.is_empty() && !first {
            return Ok(());
        }
        let mut conn = self.conn.lock().expect("store mutex");
        let tx = conn.transaction()?;
        if first {
            tx.execute("DELETE FROM alerts WHERE rule = ?1", params![rule])?;
        }
        {
            let mut del = tx.prepare_cached("DELETE FROM alerts WHERE rule = ?1 AND key = ?2")?;
            for k in &gone {
                del.execute(params![rule, k])?;
            }
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO alerts (rule, key, body) VALUES (?1, ?2, ?3)",
            )?;
            for a in &changed {
                ins.execute(params![a.rule, a.key, serde_json::to_string(a)?])?;
            }
        }
        tx.commit()?;
        self.rows_written.fetch_add(
            (changed.len() + gone.len()) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        written.insert(rule.to_string(), now);
        Ok(())
    }

    /// Rows inserted, replaced or deleted since the store was opened.
    pub fn rows_written(&self) -> u64 {
        self.rows_written.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::AlertState;
    use crate::engine::alerts::{AlertBook, Coverage, Observation, RuleTiming};
    use chrono::Utc;
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// A store written by 0.1.0: internal rules under their old names, no `path` label. Opened
    /// by this release, the alerts carry on under the new names with the label, nothing lost.
    #[test]
    fn a_store_from_0_1_0_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let old = |rule: &str, key: &str| {
            format!(
                r#"{{"rule":"{rule}","key":"{key}","labels":{{"alertname":"SourceDown","rule":"{rule}","source":"{key}","severity":"critical"}},"annotations":{{}},"state":"firing","active_at":"2026-11-25T10:00:00Z","starts_at":"2026-11-25T10:00:00Z","fired_at":"2026-11-25T10:00:00Z","last_seen":"2026-11-25T10:05:00Z","resolved_at":null,"entered_at":null,"interval_secs":5}}"#
            )
        };
        {
            let conn = Connection::open(dir.path().join(FILE)).unwrap();
            conn.execute_batch(
                "CREATE TABLE alerts (rule TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (rule, key));",
            )
            .unwrap();
            for (rule, key) in [
                ("source-down", "shop"),
                ("source-stale", "mes"),
                ("source-down", "mes"),
                ("source_down", "mes"),
            ] {
                conn.execute(
                    "INSERT INTO alerts VALUES (?1, ?2, ?3)",
                    params![rule, key, old(rule, key)],
                )
                .unwrap();
            }
        }
        let (store, _) = Store::open(dir.path()).unwrap();
        let alerts = store.load_alerts().unwrap();
        let got: Vec<(String, String, String, String)> = alerts
            .iter()
            .map(|a| {
                (
                    a.rule.clone(),
                    a.key.clone(),
                    a.labels["rule"].clone(),
                    a.labels["path"].clone(),
                )
            })
            .collect();
        let row = |r: &str, k: &str| {
            (
                r.to_string(),
                k.to_string(),
                r.to_string(),
                "orderwatch".to_string(),
            )
        };
        assert_eq!(
            got,
            [
                row("source_down", "mes"),
                row("source_down", "shop"),
                row("source_stale", "mes")
            ]
        );
        assert!(
            alerts
                .iter()
                .all(|a| a.state == crate::engine::AlertState::Firing)
        );
    }

    /// Writes follow changes: an evaluation that changes nothing durable (only `last_seen`
    /// and the age in the annotations) writes nothing; a state change writes that alert; a
    /// forgotten alert is deleted; a reopen restores exactly what was written last.
    #[test]
    fn a_steady_evaluation_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Utc::now();
        let timing = RuleTiming {
            for_: Duration::from_secs(60),
            keep_firing_for: Duration::ZERO,
            interval: Duration::from_secs(30),
        };
        let obs = |key: &str, at: chrono::DateTime<Utc>| Observation {
            key: key.into(),
            labels: BTreeMap::from([("rule".into(), "r".into()), ("order_id".into(), key.into())]),
            annotations: BTreeMap::from([("age".into(), format!("{}", (at - t0).num_seconds()))]),
            starts_at: t0,
            entered_at: Some(t0),
            may_create: true,
        };
        let (store, _) = Store::open(dir.path()).unwrap();
        store.load_alerts().unwrap();
        let mut book = AlertBook::default();
        let step = |book: &mut AlertBook, secs: i64, keys: &[&str]| {
            let at = t0 + chrono::Duration::seconds(secs);
            book.apply(
                "r",
                timing,
                at,
                keys.iter().map(|k| obs(k, at)).collect(),
                Coverage::All,
            );
            store.save_rule("r", book.rule_alerts("r")).unwrap();
            store.rows_written()
        };
        assert_eq!(
            step(&mut book, 0, &["JW-1", "JW-2"]),
            2,
            "two new pending alerts"
        );
        assert_eq!(
            step(&mut book, 30, &["JW-1", "JW-2"]),
            2,
            "still pending: nothing written"
        );
        assert_eq!(
            step(&mut book, 60, &["JW-1", "JW-2"]),
            4,
            "both start firing"
        );
        for s in (90..600).step_by(30) {
            assert_eq!(step(&mut book, s, &["JW-1", "JW-2"]), 4, "steady at {s} s");
        }
        assert_eq!(step(&mut book, 600, &["JW-1"]), 5, "JW-2 resolved");
        drop(store);
        let (store, _) = Store::open(dir.path()).unwrap();
        let mut restored = store.load_alerts().unwrap();
        restored.sort_by(|a, b| a.key.cmp(&b.key));
        let states: Vec<(&str, AlertState)> =
            restored.iter().map(|a| (a.key.as_str(), a.state)).collect();
        assert_eq!(
            states,
            [("JW-1", AlertState::Firing), ("JW-2", AlertState::Resolved)]
        );
        // A reopened store writes nothing for what it loaded.
        store.save_rule("r", restored.iter()).unwrap();
        assert_eq!(store.rows_written(), 0);
        store
            .save_rule("r", restored.iter().filter(|a| a.key == "JW-1"))
            .unwrap();
        assert_eq!(store.rows_written(), 1, "JW-2 forgotten: deleted");
        assert_eq!(store.load_alerts().unwrap().len(), 1);
    }

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
            let (store, _) = Store::open(dir.path()).unwrap();
            store.save_rule("r", book.rule_alerts("r")).unwrap();
        }
        let (store, _) = Store::open(dir.path()).unwrap();
        let restored = store.load_alerts().unwrap();
        assert_eq!(restored, book.all().cloned().collect::<Vec<_>>());
        store.save_rule("r", std::iter::empty()).unwrap();
        assert!(store.load_alerts().unwrap().is_empty());
    }
}
