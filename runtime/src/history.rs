//! The history service: a separate consumer of the engine's event log that
//! keeps every run and event in its own database (`history.db`), indexed for
//! queries by tenant, flow, version, status, step, error and time, with cursor
//! pagination. The engine never reads it.
//!
//! On the embedded backend the bus it consumes is the engine's append-only
//! event log itself: the consumer reads it in commit order from a cursor it
//! stores with its own writes, so a crash neither loses nor doubles an event.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use eflow_core::Run;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{QueryBuilder, Row, Sqlite};
use tokio_util::sync::CancellationToken;

use crate::api::model::{Page, RunSummary};
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
    #[error("invalid cursor")]
    BadCursor,
}

impl From<Error> for crate::store::Error {
    fn from(e: Error) -> Self {
        crate::store::Error::Conflict(e.to_string())
    }
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
        Ok(Self { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Follows the engine's event log until `shutdown`.
    pub async fn consume(self, engine: Engine, shutdown: CancellationToken) {
        loop {
            let notified = engine.committed().notified();
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
                    () = notified => tokio::time::sleep(Duration::from_millis(100)).await,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            } else if shutdown.is_cancelled() {
                break;
            }
        }
    }

    /// Reads one batch of new events; returns how many.
    pub async fn catch_up(&self, engine: &Engine) -> Result<u32, Error> {
        let cursor: i64 = sqlx::query_scalar("SELECT pos FROM h_cursor WHERE id = 0")
            .fetch_one(&self.pool)
            .await?;
        let events = engine.store().sqlite().events_after(cursor, BATCH).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let mut last = cursor;
        for e in &events {
            last = e.pos;
            let known: Option<(String, String)> =
                sqlx::query_as("SELECT tenant, status FROM h_runs WHERE id = ?")
                    .bind(&e.run)
                    .fetch_optional(&mut *tx)
                    .await?;
            let finished = matches!(e.status.as_str(), "succeeded" | "failed" | "cancelled");
            let tenant = match known {
                Some((tenant, status)) => {
                    if finished && status != e.status {
                        let (code, step) = self.failure(engine, &e.run).await;
                        sqlx::query(
                            "UPDATE h_runs SET status = ?, updated_at = ?, error_code = ?, failed_step = ? WHERE id = ?",
                        )
                        .bind(&e.status)
                        .bind(e.at as i64)
                        .bind(code)
                        .bind(step)
                        .bind(&e.run)
                        .execute(&mut *tx)
                        .await?;
                    } else if status != e.status {
                        sqlx::query("UPDATE h_runs SET status = ?, updated_at = ? WHERE id = ?")
                            .bind(&e.status)
                            .bind(e.at as i64)
                            .bind(&e.run)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tenant
                }
                None => {
                    let Some((meta, _, state)) = engine.store().sqlite().load_run(&e.run).await?
                    else {
                        // Purged since: nothing to keep.
                        continue;
                    };
                    let run: Option<Run> = serde_json::from_slice(&state).ok();
                    let (flow, version) = run
                        .as_ref()
                        .map(|r| (r.flow.clone(), r.version.clone()))
                        .unwrap_or_default();
                    let (code, step) = if finished {
                        self.failure(engine, &e.run).await
                    } else {
                        (None, None)
                    };
                    sqlx::query(
                        "INSERT INTO h_runs (id, tenant, flow, version, status, parent, created_at, updated_at, error_code, failed_step) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(&e.run)
                    .bind(&meta.tenant)
                    .bind(flow)
                    .bind(version)
                    .bind(&e.status)
                    .bind(&meta.parent)
                    .bind(meta.created_at as i64)
                    .bind(e.at as i64)
                    .bind(code)
                    .bind(step)
                    .execute(&mut *tx)
                    .await?;
                    meta.tenant
                }
            };
            let kind = e.body.get("type").and_then(Value::as_str).unwrap_or("");
            let step = e.body.get("node").and_then(Value::as_str);
            sqlx::query(
                "INSERT INTO h_events (pos, run, seq, tenant, at, kind, step, status, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (pos) DO NOTHING",
            )
            .bind(e.pos)
            .bind(&e.run)
            .bind(e.seq as i64)
            .bind(&tenant)
            .bind(e.at as i64)
            .bind(kind)
            .bind(step)
            .bind(&e.status)
            .bind(serde_json::to_vec(&e.body).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE h_cursor SET pos = ? WHERE id = 0")
            .bind(last)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(events.len() as u32)
    }

    async fn failure(&self, engine: &Engine, run: &str) -> (Option<String>, Option<String>) {
        let Ok(Some((_, _, state))) = engine.store().sqlite().load_run(run).await else {
            return (None, None);
        };
        let Ok(run) = serde_json::from_slice::<Run>(&state) else {
            return (None, None);
        };
        match run.error {
            Some(e) => (Some(e.code), e.node),
            None => (None, None),
        }
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
