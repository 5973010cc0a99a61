//! The history service: a separate consumer of the engine's event log that
//! keeps every run and event in its own database (`history.db`), indexed for
//! queries by tenant, flow, version, status, step, error and time, with cursor
//! pagination. The engine never reads it.
//!
//! On the embedded backend the bus it consumes is the engine's append-only
//! event log itself: the consumer reads it in commit order from a cursor it
//! stores with its own writes, so a crash neither loses nor doubles an event.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{QueryBuilder, Row, Sqlite};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::model::{Page, RunSummary};
use crate::bus::Bus;
use crate::engine::Engine;
use crate::service::rfc3339;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("history database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("history migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Bus(#[from] crate::bus::Error),
    #[error("invalid cursor")]
    BadCursor,
}

/// What `GET /v1/runs` asks.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub tenant: Option<String>,
    pub flow: Option<String>,
    pub version: Option<String>,
    pub status: Option<String>,
    pub step: Option<String>,
    pub error: Option<String>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub cursor: Option<String>,
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct History {
    pool: SqlitePool,
    /// The last engine event position written here, and whether a consumer
    /// is following the log: for `/v1/stats`.
    cursor: Arc<watch::Sender<i64>>,
    consuming: Arc<AtomicBool>,
}

impl History {
    pub async fn open(path: &Path) -> Result<Self, Error> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .pragma("cache_size", "-8192");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/history").run(&pool).await?;
        let cursor: i64 = sqlx::query_scalar("SELECT pos FROM h_cursor WHERE id = 0")
            .fetch_one(&pool)
            .await?;
        Ok(Self {
            pool,
            cursor: Arc::new(watch::Sender::new(cursor)),
            consuming: Arc::new(AtomicBool::new(false)),
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Follows the engine's event log until `shutdown`.
    pub async fn consume(self, engine: Engine, shutdown: CancellationToken) {
        self.consuming.store(true, Ordering::Relaxed);
        loop {
            let notified = engine.bus().next_commit();
            let caught_up = match self.catch_up(&engine).await {
                Ok(n) => n < BATCH,
                Err(e) => {
                    tracing::warn!(error = %e, "history could not read the event log; retrying");
                    true
                }
            };
            if caught_up {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = notified => tokio::time::sleep(GATHER).await,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            } else if shutdown.is_cancelled() {
                break;
            }
        }
    }

    /// Reads one batch of new events; returns how many. A batch is written
    /// with a few multi-row statements: one row per run (its last status) and
    /// one per event.
    pub async fn catch_up(&self, engine: &Engine) -> Result<u32, Error> {
        // The stored cursor, as read at open and kept after each write: only
        // this consumer moves it.
        let cursor = *self.cursor.borrow();
        let events = engine.bus().events_after(cursor, BATCH).await?;
        let Some(last) = events.last().map(|e| e.pos) else {
            return Ok(0);
        };
        // The runs this batch touches, in first-seen order, with what the
        // history already knows of them.
        let mut order: Vec<&str> = Vec::new();
        let mut runs: HashMap<&str, RunRow> = HashMap::new();
        for e in &events {
            if !runs.contains_key(e.run.as_str()) {
                order.push(&e.run);
                runs.insert(&e.run, RunRow::default());
            }
        }
        for piece in order.chunks(256) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT id, tenant, flow, version, parent, created_at, status FROM h_runs WHERE id IN (",
            );
            let mut sep = q.separated(", ");
            for id in piece {
                sep.push_bind(*id);
            }
            q.push(")");
            for r in q.build().fetch_all(&self.pool).await? {
                let id: String = r.get(0);
                if let Some(row) = runs.get_mut(id.as_str()) {
                    row.known = true;
                    row.tenant = r.get(1);
                    row.flow = r.get(2);
                    row.version = r.get(3);
                    row.parent = r.get(4);
                    row.created_at = r.get(5);
                    row.old_status = r.get(6);
                }
            }
        }
        for e in &events {
            if let Some(row) = runs.get_mut(e.run.as_str()) {
                row.status = e.status.clone();
                row.updated_at = e.at as i64;
            }
        }
        // New runs and runs that finished: read the engine's rows, all at once.
        let wanted: Vec<&str> = order
            .iter()
            .copied()
            .filter(|id| {
                runs.get(id).is_some_and(|row| {
                    let finished =
                        matches!(row.status.as_str(), "succeeded" | "failed" | "cancelled");
                    !row.known || (finished && row.old_status != row.status)
                })
            })
            .collect();
        let mut found = std::collections::HashSet::new();
        for (meta, _, state) in engine.store().load_runs(&wanted).await? {
            let Some(row) = runs.get_mut(meta.id.as_str()) else {
                continue;
            };
            found.insert(meta.id.clone());
            // Only a few fields of the state: the rest is skipped, not built.
            let head: Option<StateHead> = serde_json::from_slice(&state).ok();
            if !row.known {
                row.tenant = meta.tenant;
                row.parent = meta.parent;
                row.created_at = meta.created_at as i64;
                if let Some(h) = &head {
                    row.flow = h.flow.clone();
                    row.version = h.version.clone();
                }
            }
            let finished = matches!(row.status.as_str(), "succeeded" | "failed" | "cancelled");
            if finished && let Some(e) = head.and_then(|h| h.error) {
                row.error_code = Some(e.code);
                row.failed_step = e.node;
            }
        }
        // Purged since: nothing to keep.
        for id in wanted {
            if !found.contains(id)
                && let Some(row) = runs.get_mut(id)
            {
                row.gone = true;
            }
        }
        let mut tx = self.pool.begin().await?;
        let live: Vec<(&str, &RunRow)> = order
            .iter()
            .filter_map(|id| runs.get(id).filter(|r| !r.gone).map(|r| (*id, r)))
            .collect();
        for piece in live.chunks(256) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO h_runs (id, tenant, flow, version, status, parent, created_at, updated_at, error_code, failed_step) ",
            );
            q.push_values(piece, |mut b, (id, r)| {
                b.push_bind(*id)
                    .push_bind(&r.tenant)
                    .push_bind(&r.flow)
                    .push_bind(&r.version)
                    .push_bind(&r.status)
                    .push_bind(&r.parent)
                    .push_bind(r.created_at)
                    .push_bind(r.updated_at)
                    .push_bind(&r.error_code)
                    .push_bind(&r.failed_step);
            });
            q.push(
                " ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at, \
                 error_code = COALESCE(excluded.error_code, h_runs.error_code), \
                 failed_step = COALESCE(excluded.failed_step, h_runs.failed_step)",
            );
            q.build().execute(&mut *tx).await?;
        }
        let kept: Vec<&crate::store::EventRow> = events
            .iter()
            .filter(|e| runs.get(e.run.as_str()).is_some_and(|r| !r.gone))
            .collect();
        for piece in kept.chunks(256) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO h_events (pos, run, seq, tenant, at, kind, step, status, body) ",
            );
            q.push_values(piece, |mut b, e| {
                let tenant = runs
                    .get(e.run.as_str())
                    .map(|r| r.tenant.clone())
                    .unwrap_or_default();
                // Two fields of the event; the rest is kept as it was stored.
                let head: EventHead = serde_json::from_slice(&e.body).unwrap_or_default();
                b.push_bind(e.pos)
                    .push_bind(&e.run)
                    .push_bind(e.seq as i64)
                    .push_bind(tenant)
                    .push_bind(e.at as i64)
                    .push_bind(head.kind.into_owned())
                    .push_bind(head.node.map(std::borrow::Cow::into_owned))
                    .push_bind(&e.status)
                    .push_bind(&e.body);
            });
            q.push(" ON CONFLICT (pos) DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        sqlx::query("UPDATE h_cursor SET pos = ? WHERE id = 0")
            .bind(last)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.cursor.send_replace(last);
        Ok(events.len() as u32)
    }

    /// Events committed on `bus` that this history has not written yet;
    /// `None` when no consumer follows the log.
    pub async fn behind(&self, bus: &Bus) -> Result<Option<u64>, Error> {
        if !self.consuming.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let head = bus.head().await?;
        Ok(Some(
            head.saturating_sub(*self.cursor.borrow()).max(0) as u64
        ))
    }

    /// Waits until this history holds every event committed on `bus` before
    /// the call, at most `patience`: a list asked for right after a start
    /// then shows that run. Returns at once when no consumer runs.
    pub async fn catch_up_with(&self, bus: &Bus, patience: Duration) -> Result<(), Error> {
        if !self.consuming.load(Ordering::Relaxed) {
            return Ok(());
        }
        let head = bus.head().await?;
        let mut rx = self.cursor.subscribe();
        let _ = tokio::time::timeout(patience, rx.wait_for(|at| *at >= head)).await;
        Ok(())
    }

    pub async fn runs(&self, q: &RunQuery) -> Result<Page<RunSummary>, Error> {
        let limit = q.limit.clamp(1, 1000);
        let mut b = runs_query(q, "")?;
        let rows = b.build().fetch_all(&self.pool).await?;
        let mut items: Vec<RunSummary> = rows
            .iter()
            .map(|r| RunSummary {
                id: r.get(0),
                tenant: r.get(1),
                flow: r.get(2),
                version: r.get(3),
                status: r.get(4),
                created_at: rfc3339(r.get::<i64, _>(5) as u64),
                updated_at: rfc3339(r.get::<i64, _>(6) as u64),
                error_code: r.get(7),
                failed_step: r.get(8),
                parent: r.get(9),
            })
            .collect();
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            let last = &rows[limit as usize - 1];
            Some(encode_cursor(
                last.get::<i64, _>(5),
                &last.get::<String, _>(0),
            ))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// The plan SQLite picks for a run query: for BENCHMARKS.md and a test
    /// that every filter reads through an index in page order.
    pub async fn explain_runs(&self, q: &RunQuery) -> Result<Vec<String>, Error> {
        let mut b = runs_query(q, "EXPLAIN QUERY PLAN ")?;
        let rows = b.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(3)).collect())
    }

    pub async fn purge(&self, tenant: &str) -> Result<u64, Error> {
        let mut tx = self.pool.begin().await?;
        let a = sqlx::query("DELETE FROM h_events WHERE tenant = ?")
            .bind(tenant)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let b = sqlx::query("DELETE FROM h_runs WHERE tenant = ?")
            .bind(tenant)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(a + b)
    }
}

const BATCH: u32 = 2_000;

/// How long the consumer lets commits gather after being woken, once it has
/// caught up: long enough for a batch, short enough that `eflow run list`
/// right after `eflow run start` shows the run.
const GATHER: Duration = Duration::from_millis(20);

/// The fields of an event the history indexes.
#[derive(Default, serde::Deserialize)]
struct EventHead<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    node: Option<std::borrow::Cow<'a, str>>,
}

/// The fields of a run's state the history keeps.
#[derive(serde::Deserialize)]
struct StateHead {
    flow: String,
    version: String,
    #[serde(default)]
    error: Option<eflow_core::RunError>,
}

/// A run as one batch of the consumer sees it.
#[derive(Debug, Default)]
struct RunRow {
    /// Already in `h_runs`.
    known: bool,
    /// Purged from the engine before the history saw it.
    gone: bool,
    tenant: String,
    flow: String,
    version: String,
    parent: Option<String>,
    created_at: i64,
    old_status: String,
    status: String,
    updated_at: i64,
    error_code: Option<String>,
    failed_step: Option<String>,
}

/// The SQL of a run query, newest first, one row more than the page.
fn runs_query<'a>(q: &'a RunQuery, prefix: &str) -> Result<QueryBuilder<'a, Sqlite>, Error> {
    let limit = q.limit.clamp(1, 1000);
    let mut b: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
        "{prefix}SELECT id, tenant, flow, version, status, created_at, updated_at, error_code, failed_step, parent FROM h_runs WHERE 1 = 1"
    ));
    if let Some(t) = &q.tenant {
        b.push(" AND tenant = ").push_bind(t);
    }
    if let Some(f) = &q.flow {
        b.push(" AND flow = ").push_bind(f);
    }
    if let Some(v) = &q.version {
        b.push(" AND version = ").push_bind(v);
    }
    if let Some(s) = &q.status {
        b.push(" AND status = ").push_bind(s);
    }
    if let Some(s) = &q.step {
        b.push(" AND failed_step = ").push_bind(s);
    }
    if let Some(e) = &q.error {
        b.push(" AND error_code = ").push_bind(e);
    }
    if let Some(t) = q.since {
        b.push(" AND created_at >= ").push_bind(t as i64);
    }
    if let Some(t) = q.until {
        b.push(" AND created_at < ").push_bind(t as i64);
    }
    if let Some(c) = &q.cursor {
        let (at, id) = decode_cursor(c).ok_or(Error::BadCursor)?;
        b.push(" AND (created_at < ")
            .push_bind(at)
            .push(" OR (created_at = ")
            .push_bind(at)
            .push(" AND id < ")
            .push_bind(id)
            .push("))");
    }
    b.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    Ok(b)
}

fn encode_cursor(at: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{at}|{id}"))
}

fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(c).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (at, id) = text.split_once('|')?;
    Some((at.parse().ok()?, id.to_string()))
}
