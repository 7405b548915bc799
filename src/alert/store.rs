//! The embedded state store (SQLite under `state_dir`): alert state survives restarts, so a
//! restart neither re-announces what was firing nor forgets what must be resolved.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Mutex, RwLock};

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::book::{AlertBook, Unsaved};
use super::state::{Alert, AlertState, Notes};
use crate::labels::{Labels, Str, intern};

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

/// The store. Writes follow changes: it writes what the book's change log says changed
/// ([`AlertBook::take_unsaved`]), so a steady evaluation writes nothing; they run off the
/// async workers ([`crate::blocking::off_worker`]), behind a mutex.
pub struct Store {
    conn: Mutex<Connection>,
    /// Held by [`Store::save_book`] from taking the changes to writing them.
    saving: Mutex<()>,
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
        let mut conn = Connection::open(path)?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(StoreError::Corrupt(check));
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Writes follow changes and a start reads the alerts once, in order: a small page
        // cache serves both (SQLite's default 2 MB was 2.4 MB of the incident's peak heap).
        conn.pragma_update(None, "cache_size", -512)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        // Finds a label set's users at once, so dropping unused sets after a write costs the
        // sets (one per rule and configuration), not the alerts.
        conn.execute_batch("CREATE INDEX IF NOT EXISTS alerts_by_label_set ON alerts (shared);")?;
        for suffix in ["-wal", "-shm"] {
            let side = path.with_file_name(format!("{FILE}{suffix}"));
            if side.exists() {
                let _ = restrict(&side, 0o600);
            }
        }
        Ok(Store {
            conn: Mutex::new(conn),
            saving: Mutex::new(()),
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
        let mut sets: HashMap<i64, Arc<[(Str, Str)]>> = HashMap::new();
        {
            let mut stmt = conn.prepare("SELECT id, labels FROM label_sets")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let map: BTreeMap<String, String> = serde_json::from_str(&r.get::<_, String>(1)?)?;
                sets.insert(
                    r.get(0)?,
                    Labels::shared_list(map.iter().map(|(k, v)| (intern(k), intern(v)))),
                );
            }
        }
        let mut stmt = conn.prepare(
            "SELECT rule, key, state, active_at, starts_at, fired_at, resolved_at, entered_at, \
             last_seen, interval_secs, shared, labels, annotations FROM alerts ORDER BY rule, key",
        )?;
        let mut rows = stmt.query([])?;
        let mut out: Vec<Alert> = Vec::new();
        let empty: Arc<[(Str, Str)]> = Arc::from(Vec::new());
        while let Some(r) = rows.next()? {
            let own: BTreeMap<String, String> = serde_json::from_str(&r.get::<_, String>(11)?)?;
            let shared = match r.get::<_, Option<i64>>(10)? {
                Some(id) => sets.get(&id).cloned().unwrap_or_else(|| empty.clone()),
                None => empty.clone(),
            };
            let annotations: Option<String> = r.get(12)?;
            let key: String = r.get(1)?;
            out.push(Alert {
                rule: intern(&r.get::<_, String>(0)?),
                key: Str::from(key),
                labels: Labels::new(
                    shared,
                    own.iter()
                        .map(|(k, v)| (intern(k), Str::from(v.as_str())))
                        .collect(),
                ),
                notes: match annotations {
                    Some(a) => Notes::fixed(serde_json::from_str(&a)?),
                    None => Notes::None,
                },
                state: state_from(r.get(2)?),
                active_at: time(r.get(3)?)?,
                starts_at: time(r.get(4)?)?,
                fired_at: time_opt(r.get(5)?)?,
                resolved_at: time_opt(r.get(6)?)?,
                entered_at: time_opt(r.get(7)?)?,
                last_seen: time(r.get(8)?)?,
                interval_secs: r.get::<_, i64>(9)? as u64,
                version: 0,
            });
        }
        Ok(out)
    }

    /// Writes what changed ([`AlertBook::take_unsaved`]) in one transaction: every changed
    /// alert as it is now, every forgotten one deleted. On failure nothing is written and the
    /// caller puts `unsaved` back in the book's log ([`AlertBook::requeue`]).
    pub fn save(&self, unsaved: &Unsaved) -> Result<(), StoreError> {
        if unsaved.is_empty() {
            return Ok(());
        }
        crate::blocking::off_worker(|| self.write(unsaved))?;
        self.rows_written.fetch_add(
            (unsaved.upserts.len() + unsaved.deletes.len()) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    /// Catches the store up with `book`: takes what changed from its log, writes it without
    /// holding `book`'s lock, and puts it back in the log if the write fails.
    pub fn save_book(&self, book: &RwLock<AlertBook>) -> Result<(), StoreError> {
        // One save at a time, from taking to writing: two in flight could write in the
        // other order (an alert forgotten, then made again, deleted last).
        let _one = self.saving.lock().expect("saving mutex");
        let unsaved = book.write().expect("book lock").take_unsaved();
        let result = self.save(&unsaved);
        if result.is_err() {
            book.write().expect("book lock").requeue(unsaved);
        }
        result
    }

    fn write(&self, unsaved: &Unsaved) -> Result<(), StoreError> {
        let mut conn = self.conn.lock().expect("store mutex");
        let tx = conn.transaction()?;
        {
            let mut del = tx.prepare_cached("DELETE FROM alerts WHERE rule = ?1 AND key = ?2")?;
            for (rule, key) in &unsaved.deletes {
                del.execute(params![&**rule, &**key])?;
            }
            let mut ins = tx.prepare_cached(INSERT_ALERT)?;
            let mut set_ids = HashMap::new();
            for a in &unsaved.upserts {
                insert_alert(&tx, &mut ins, a, &mut set_ids)?;
            }
        }
        // Label sets no alert uses any more (an alert rewritten with its rule's new labels,
        // the last alert of a rule gone).
        tx.execute(
            "DELETE FROM label_sets \
             WHERE NOT EXISTS (SELECT 1 FROM alerts WHERE alerts.shared = label_sets.id)",
            [],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Rows inserted, replaced or deleted since the store was opened.
    pub fn rows_written(&self) -> u64 {
        self.rows_written.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The store's schema version (`PRAGMA user_version`): 0 was written by 0.1.0, 1 by the
/// releases that kept one JSON body per alert, 2 is the compact form below.
pub const SCHEMA_VERSION: i64 = 2;

/// Creates the tables, or brings an older store to [`SCHEMA_VERSION`] in place, in one
/// transaction each step, nothing lost and nothing re-announced.
///
/// Version 2: one row per alert with its state and times as integers (nanoseconds since the
/// epoch, exact), its own labels as a small JSON object and the labels every alert of its
/// rule shares once in `label_sets`; annotations only where they are not rendered from the
/// alert's data (see [`Notes`]).
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let has_v1 = conn
        .query_row(
            "SELECT 1 FROM pragma_table_info('alerts') WHERE name = 'body'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    if version < 1 && has_v1 {
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
    let tx = conn.transaction()?;
    let old: Vec<String> = if has_v1 {
        let mut stmt = tx.prepare("SELECT body FROM alerts")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let bodies = rows.collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        tx.execute_batch("DROP TABLE alerts;")?;
        bodies
    } else {
        Vec::new()
    };
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS label_sets (
             id     INTEGER PRIMARY KEY,
             labels TEXT NOT NULL UNIQUE
         );
         CREATE TABLE IF NOT EXISTS alerts (
             rule          TEXT NOT NULL,
             key           TEXT NOT NULL,
             state         INTEGER NOT NULL,
             active_at     INTEGER NOT NULL,
             starts_at     INTEGER NOT NULL,
             fired_at      INTEGER,
             resolved_at   INTEGER,
             entered_at    INTEGER,
             last_seen     INTEGER NOT NULL,
             interval_secs INTEGER NOT NULL,
             shared        INTEGER REFERENCES label_sets (id),
             labels        TEXT NOT NULL,
             annotations   TEXT,
             PRIMARY KEY (rule, key)
         );",
    )?;
    {
        // A version-1 body: the whole alert as JSON, every label and annotation in it. Its
        // annotations are kept as they were until the rule evaluates again.
        #[derive(serde::Deserialize)]
        struct V1 {
            rule: String,
            key: String,
            labels: BTreeMap<String, String>,
            annotations: BTreeMap<String, String>,
            state: AlertState,
            active_at: DateTime<Utc>,
            starts_at: DateTime<Utc>,
            fired_at: Option<DateTime<Utc>>,
            last_seen: DateTime<Utc>,
            resolved_at: Option<DateTime<Utc>>,
            entered_at: Option<DateTime<Utc>>,
            interval_secs: u64,
        }
        let mut ins = tx.prepare(INSERT_ALERT)?;
        let mut set_ids = HashMap::new();
        for body in &old {
            let a: V1 = serde_json::from_str(body)?;
            let alert = Alert {
                rule: Str::from(a.rule),
                key: Str::from(a.key),
                labels: Labels::own_only(
                    a.labels
                        .iter()
                        .map(|(k, v)| (intern(k), Str::from(v.as_str())))
                        .collect(),
                ),
                notes: Notes::fixed(a.annotations),
                state: a.state,
                active_at: a.active_at,
                starts_at: a.starts_at,
                fired_at: a.fired_at,
                last_seen: a.last_seen,
                resolved_at: a.resolved_at,
                entered_at: a.entered_at,
                interval_secs: a.interval_secs,
                version: 0,
            };
            insert_alert(&tx, &mut ins, &alert, &mut set_ids)?;
        }
    }
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
    tx.commit()?;
    if has_v1 {
        // The JSON bodies' pages back to the file system; best effort (it needs the file's
        // size free on the disk): the migration itself is done.
        if let Err(e) = conn.execute_batch("VACUUM;") {
            tracing::warn!(error = %e, "state store migrated; compacting the file failed (it stays larger until a later VACUUM)");
        }
    }
    Ok(())
}

/// Writes (or replaces) one alert's row; see [`migrate`] for the columns.
const INSERT_ALERT: &str = "INSERT OR REPLACE INTO alerts (rule, key, state, active_at, \
     starts_at, fired_at, resolved_at, entered_at, last_seen, interval_secs, shared, labels, \
     annotations) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// Writes `a`'s row with `ins` ([`INSERT_ALERT`]): its own labels as JSON, its rule-wide
/// labels by the id of their set (looked up or added once per list in `set_ids`, by pointer),
/// its annotations where they are kept.
fn insert_alert(
    tx: &rusqlite::Transaction<'_>,
    ins: &mut rusqlite::Statement<'_>,
    a: &Alert,
    set_ids: &mut HashMap<*const (Str, Str), Option<i64>>,
) -> Result<(), StoreError> {
    let shared = a.labels.shared();
    let id = match set_ids.get(&shared.as_ptr()) {
        Some(id) => *id,
        None => {
            let id = label_set_id(tx, shared)?;
            set_ids.insert(shared.as_ptr(), id);
            id
        }
    };
    let own: BTreeMap<&str, &str> = a.labels.own().iter().map(|(k, v)| (&**k, &**v)).collect();
    let annotations = match &a.notes {
        Notes::Fixed(m) => Some(serde_json::to_string(&**m)?),
        _ => None,
    };
    ins.execute(params![
        &*a.rule,
        &*a.key,
        state_code(a.state),
        nanos(a.active_at),
        nanos(a.starts_at),
        a.fired_at.map(nanos),
        a.resolved_at.map(nanos),
        a.entered_at.map(nanos),
        nanos(a.last_seen),
        a.interval_secs as i64,
        id,
        serde_json::to_string(&own)?,
        annotations,
    ])?;
    Ok(())
}

/// The id of the label set `shared` (none for an empty one), added when new.
fn label_set_id(
    tx: &rusqlite::Transaction<'_>,
    shared: &[(Str, Str)],
) -> Result<Option<i64>, StoreError> {
    if shared.is_empty() {
        return Ok(None);
    }
    let map: BTreeMap<&str, &str> = shared.iter().map(|(k, v)| (&**k, &**v)).collect();
    let json = serde_json::to_string(&map)?;
    tx.execute(
        "INSERT OR IGNORE INTO label_sets (labels) VALUES (?1)",
        params![json],
    )?;
    Ok(Some(tx.query_row(
        "SELECT id FROM label_sets WHERE labels = ?1",
        params![json],
        |r| r.get(0),
    )?))
}

/// A time as stored: integer nanoseconds since the epoch (exact), or, outside the years
/// 1677–2262 that those cover (a sentinel date in an order's column), RFC 3339 text.
fn nanos(t: DateTime<Utc>) -> rusqlite::types::Value {
    match t.timestamp_nanos_opt() {
        Some(n) => rusqlite::types::Value::Integer(n),
        None => rusqlite::types::Value::Text(t.to_rfc3339()),
    }
}

/// A stored time (see [`nanos`]).
fn time(v: rusqlite::types::Value) -> rusqlite::Result<DateTime<Utc>> {
    match v {
        rusqlite::types::Value::Integer(n) => Ok(DateTime::from_timestamp_nanos(n)),
        rusqlite::types::Value::Text(s) => DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e))),
        other => Err(rusqlite::Error::InvalidColumnType(
            0,
            format!("{other:?}"),
            rusqlite::types::Type::Integer,
        )),
    }
}

/// A stored optional time.
fn time_opt(v: rusqlite::types::Value) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match v {
        rusqlite::types::Value::Null => Ok(None),
        v => time(v).map(Some),
    }
}

fn state_code(s: AlertState) -> i64 {
    match s {
        AlertState::Pending => 0,
        AlertState::Firing => 1,
        AlertState::Resolved => 2,
    }
}

fn state_from(n: i64) -> AlertState {
    match n {
        0 => AlertState::Pending,
        1 => AlertState::Firing,
        _ => AlertState::Resolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertState;
    use crate::alert::{AlertBook, Coverage, Observation, RuleTiming};
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
                    a.rule.to_string(),
                    a.key.to_string(),
                    a.labels["rule"].to_string(),
                    a.labels["path"].to_string(),
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
                .all(|a| a.state == crate::alert::AlertState::Firing)
        );
    }

    /// A store written by the release before the compact form (schema 1, one JSON body per
    /// alert): `tests/fixtures/state-v1.sqlite3`, the demo's state after half an hour (stuck
    /// and lost orders firing and resolved, a 5xx alert, both sources down), written by that
    /// release's binary. The first open migrates it in place: every alert back with the same
    /// state, times, labels and annotations; the same observations announce nothing; the
    /// schema version is recorded; and the file shrinks once the alerts are written again.
    #[test]
    fn a_store_from_schema_1_is_migrated_with_nothing_lost_or_re_announced() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-v1.sqlite3");
        std::fs::copy(&fixture, dir.path().join(FILE)).unwrap();
        let old: Vec<serde_json::Value> = {
            let conn = Connection::open(&fixture).unwrap();
            let v: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, 1, "the fixture is a schema-1 store");
            let mut stmt = conn
                .prepare("SELECT body FROM alerts ORDER BY rule, key")
                .unwrap();
            stmt.query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(|b| serde_json::from_str(&b.unwrap()).unwrap())
                .collect()
        };
        assert!(old.len() > 200, "{}", old.len());
        let states = |s: &str| old.iter().filter(|b| b["state"] == s).count();
        assert!(states("firing") > 50 && states("resolved") > 10);
        assert!(old.iter().any(|b| b["rule"] == "source_down"));
        assert!(
            old.iter()
                .any(|b| b["entered_at"].is_null() && b["rule"] == "http_5xx_high")
        );

        let (store, _) = Store::open(dir.path()).unwrap();
        let restored = store.load_alerts().unwrap();
        assert_eq!(restored.len(), old.len());
        let time = |v: &serde_json::Value| -> Option<DateTime<Utc>> {
            v.as_str().map(|s| s.parse().unwrap())
        };
        for (a, b) in restored.iter().zip(&old) {
            let what = format!("{}/{}", a.rule, a.key);
            assert_eq!(*a.rule, *b["rule"].as_str().unwrap(), "{what}");
            assert_eq!(*a.key, *b["key"].as_str().unwrap(), "{what}");
            assert_eq!(a.state.as_str(), b["state"].as_str().unwrap(), "{what}");
            assert_eq!(Some(a.active_at), time(&b["active_at"]), "{what}");
            assert_eq!(Some(a.starts_at), time(&b["starts_at"]), "{what}");
            assert_eq!(a.fired_at, time(&b["fired_at"]), "{what}");
            assert_eq!(a.resolved_at, time(&b["resolved_at"]), "{what}");
            assert_eq!(a.entered_at, time(&b["entered_at"]), "{what}");
            assert_eq!(Some(a.last_seen), time(&b["last_seen"]), "{what}");
            assert_eq!(
                a.interval_secs,
                b["interval_secs"].as_u64().unwrap(),
                "{what}"
            );
            assert_eq!(
                serde_json::to_value(&a.labels).unwrap(),
                b["labels"],
                "{what}"
            );
            assert_eq!(
                serde_json::to_value(a.annotations()).unwrap(),
                b["annotations"],
                "{what}"
            );
        }
        let conn = store.conn.lock().unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        drop(conn);

        // The same findings again: nothing fires anew, nothing resolves.
        let mut book = AlertBook::from_alerts(restored.clone());
        let now = Utc::now();
        let mut rules: Vec<&str> = restored.iter().map(|a| &*a.rule).collect();
        rules.dedup();
        for rule in rules {
            let active: Vec<Observation> = restored
                .iter()
                .filter(|a| &*a.rule == rule && a.state != AlertState::Resolved)
                .map(|a| Observation {
                    key: a.key.clone(),
                    labels: a.labels.clone(),
                    notes: a.notes.clone(),
                    starts_at: a.starts_at,
                    entered_at: a.entered_at,
                    may_create: true,
                })
                .collect();
            // The rule's interval as it was (another would be a change to write).
            let interval = restored
                .iter()
                .find(|a| &*a.rule == rule)
                .map_or(30, |a| a.interval_secs);
            let timing = RuleTiming {
                for_: Duration::from_secs(120),
                keep_firing_for: Duration::ZERO,
                interval: Duration::from_secs(interval),
            };
            let changes = book.apply(rule, timing, now, active, Coverage::All);
            assert!(
                changes.iter().all(|t| t.alert.state == AlertState::Firing
                    && t.kind == crate::alert::TransitionKind::Firing
                    && restored.iter().any(|a| a.rule == t.alert.rule
                        && a.key == t.alert.key
                        && a.state == AlertState::Pending)),
                "{rule}: only a pending alert may fire: {changes:?}"
            );
        }
        // What the store must write after that: only the alerts that fired.
        let unsaved = book.take_unsaved();
        assert!(unsaved.deletes.is_empty(), "{:?}", unsaved.deletes);
        for a in &unsaved.upserts {
            assert!(
                a.state == AlertState::Firing
                    && restored.iter().any(|r| r.rule == a.rule
                        && r.key == a.key
                        && r.state == AlertState::Pending),
                "{}/{} written again",
                a.rule,
                a.key
            );
        }
        // A reopened migrated store has nothing to write for what it loaded.
        drop(store);
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        let migrated = size(&dir.path().join(FILE));
        assert!(migrated <= size(&fixture), "{migrated} bytes");
        let (store, _) = Store::open(dir.path()).unwrap();
        let again = store.load_alerts().unwrap();
        assert_eq!(again, restored);
        assert!(
            AlertBook::from_alerts(again.clone())
                .take_unsaved()
                .is_empty()
        );
        let mut by_rule: BTreeMap<&str, Vec<&Alert>> = BTreeMap::new();
        for a in &again {
            by_rule.entry(&a.rule).or_default().push(a);
        }
        // Their rules evaluate again: an order's annotations are rendered from then on and
        // leave the file, and the labels its rule gives every alert are written once.
        let now = Utc::now();
        for alerts in by_rule.values() {
            let own = [
                "order_id",
                "status",
                "other_status",
                "alertname",
                "order_type",
            ];
            let shared = Labels::shared_list(
                alerts[0]
                    .labels
                    .iter()
                    .filter(|(k, _)| !own.contains(k))
                    .map(|(k, v)| (intern(k), intern(v))),
            );
            let rendered: Vec<Arc<Alert>> = alerts
                .iter()
                .map(|a| {
                    let mut a = (*a).clone();
                    if a.entered_at.is_some() {
                        a.notes = Notes::rendered(Age(now));
                        a.labels = Labels::new(
                            shared.clone(),
                            a.labels
                                .iter()
                                .filter(|(k, _)| own.contains(k))
                                .map(|(k, v)| (intern(k), intern(v)))
                                .collect(),
                        );
                    }
                    Arc::new(a)
                })
                .collect();
            store
                .save(&Unsaved {
                    upserts: rendered,
                    ..Unsaved::default()
                })
                .unwrap();
        }
        // Bytes an order's row holds (a 5xx or source-down alert keeps its annotations).
        let row: f64 = store
            .with(|c| {
                c.query_row(
                    "SELECT avg(length(rule) + length(key) + length(labels) + 8 * 9) \
                     FROM alerts WHERE annotations IS NULL",
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap();
        assert!(row < 250.0, "{row} bytes a row");
        store.with(|c| c.execute_batch("VACUUM")).unwrap();
        drop(store);
        let compact = size(&dir.path().join(FILE));
        assert!(compact * 2 < size(&fixture), "{compact} bytes");
    }

    /// Annotations rendered from the alert: its age.
    struct Age(DateTime<Utc>);

    impl crate::alert::Annotate for Age {
        fn annotations(&self, _: &Alert, now: DateTime<Utc>) -> BTreeMap<String, String> {
            BTreeMap::from([("age".into(), (now - self.0).num_seconds().to_string())])
        }
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
        let obs = |key: &str, _at: chrono::DateTime<Utc>| Observation {
            key: key.into(),
            labels: crate::labels::Labels::from(BTreeMap::from([
                ("rule".into(), "r".into()),
                ("order_id".into(), key.into()),
            ])),
            notes: Notes::rendered(Age(t0)),
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
            store.save(&book.take_unsaved()).unwrap();
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
        let states: Vec<(&str, AlertState)> = restored.iter().map(|a| (&*a.key, a.state)).collect();
        assert_eq!(
            states,
            [("JW-1", AlertState::Firing), ("JW-2", AlertState::Resolved)]
        );
        // A reopened store has nothing to write for what it loaded.
        let mut book = AlertBook::from_alerts(restored);
        assert!(book.take_unsaved().is_empty());
        book.gc(t0 + chrono::Duration::seconds(600) + chrono::Duration::minutes(15));
        store.save(&book.take_unsaved()).unwrap();
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
            labels: crate::labels::Labels::from(BTreeMap::from([("rule".into(), "r".into())])),
            notes: Notes::None,
            starts_at: now,
            entered_at: Some(now),
            may_create: true,
        };
        // A sentinel date in an order's column, outside what nanoseconds cover.
        let year_one: DateTime<Utc> = "0001-01-01T00:00:00Z".parse().unwrap();
        let sentinel = Observation {
            key: "JW-0".into(),
            starts_at: year_one + chrono::Duration::hours(1),
            entered_at: Some(year_one),
            ..o.clone()
        };
        book.apply("r", timing, now, vec![o, sentinel], Coverage::All);
        {
            let (store, _) = Store::open(dir.path()).unwrap();
            store.save(&book.take_unsaved()).unwrap();
        }
        let (store, _) = Store::open(dir.path()).unwrap();
        let restored = store.load_alerts().unwrap();
        assert_eq!(restored, book.all_after(None).cloned().collect::<Vec<_>>());
        store
            .save(&Unsaved {
                deletes: restored
                    .iter()
                    .map(|a| (a.rule.clone(), a.key.clone()))
                    .collect(),
                ..Unsaved::default()
            })
            .unwrap();
        assert!(store.load_alerts().unwrap().is_empty());
    }
}
