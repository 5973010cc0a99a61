//! Bulk jobs as the history's store keeps them (`h_bulk_jobs`, migrations
//! history `0005` and history PostgreSQL `1004`): beside the runs their
//! queries select. The SQL is the same on both backends (`$N` parameters,
//! which SQLite takes too), written once and expanded for each pool.

use sqlx::Row;

use super::Walk;
use crate::history::HistoryStore;
use crate::history::store::{Error, Result};

/// A job as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobRow {
    pub id: String,
    pub tenant: String,
    /// `cancel` or `retry`.
    pub action: String,
    /// The selector, JSON.
    pub selector: String,
    pub reason: Option<String>,
    pub rate: u32,
    pub created_by: String,
    pub created_at: u64,
    /// Only runs created before this are selected.
    pub frozen_before: u64,
    /// `running`, `paused`, `cancelled` or `done`.
    pub state: String,
    pub cursor: Option<String>,
    /// The page in hand: its runs' ids (JSON), held before any is acted on.
    pub page: Option<String>,
    /// The cursor after the page in hand.
    pub page_next: Option<String>,
    pub counts: Counts,
    pub last_error: Option<String>,
    pub updated_at: u64,
    pub finished_at: Option<u64>,
    pub runner: Option<String>,
}

/// What a job has done so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Runs its query gave it.
    pub selected: u64,
    /// Runs it cancelled or retried.
    pub acted: u64,
    /// Runs it left alone, with why (an API error's code), JSON.
    pub skipped: u64,
    pub skipped_by: String,
    /// Runs it could not act on for another reason.
    pub errors: u64,
}

impl Default for Counts {
    /// None yet: what a new job's row holds.
    fn default() -> Self {
        Self {
            selected: 0,
            acted: 0,
            skipped: 0,
            skipped_by: "{}".into(),
            errors: 0,
        }
    }
}

/// A page of jobs walked through, stored with the counts it brought in one
/// transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Where the next page starts; `None` with `done`.
    pub cursor: Option<String>,
    pub counts: Counts,
    pub last_error: Option<String>,
    /// The query has no run left: the job is done (unless cancelled).
    pub done: bool,
}

const JOB_COLUMNS: &str = "SELECT id, tenant, action, selector, reason, rate, created_by, created_at, frozen_before, state, cursor, selected, acted, skipped, errors, skipped_by, last_error, updated_at, finished_at, runner, page, page_next FROM h_bulk_jobs";

fn ms(t: u64) -> i64 {
    t.min(i64::MAX as u64) as i64
}

macro_rules! job_store {
    ($name:ident, $pool:ty, $db:ty, $row:ty) => {
        /// The job operations on one backend's pool.
        pub(crate) struct $name<'a>(pub(crate) &'a $pool);

        impl $name<'_> {
            fn job(r: &$row) -> JobRow {
                JobRow {
                    id: r.get(0),
                    tenant: r.get(1),
                    action: r.get(2),
                    selector: r.get(3),
                    reason: r.get(4),
                    rate: r.get::<i64, _>(5).clamp(0, i64::from(u32::MAX)) as u32,
                    created_by: r.get(6),
                    created_at: r.get::<i64, _>(7) as u64,
                    frozen_before: r.get::<i64, _>(8) as u64,
                    state: r.get(9),
                    cursor: r.get(10),
                    counts: Counts {
                        selected: r.get::<i64, _>(11) as u64,
                        acted: r.get::<i64, _>(12) as u64,
                        skipped: r.get::<i64, _>(13) as u64,
                        errors: r.get::<i64, _>(14) as u64,
                        skipped_by: r.get(15),
                    },
                    last_error: r.get(16),
                    updated_at: r.get::<i64, _>(17) as u64,
                    finished_at: r.get::<Option<i64>, _>(18).map(|t| t as u64),
                    runner: r.get(19),
                    page: r.get(20),
                    page_next: r.get(21),
                }
            }

            async fn insert(&self, j: &JobRow) -> Result<()> {
                sqlx::query(
                    "INSERT INTO h_bulk_jobs (id, tenant, action, selector, reason, rate, created_by, \
                     created_at, frozen_before, state, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&j.id)
                .bind(&j.tenant)
                .bind(&j.action)
                .bind(&j.selector)
                .bind(&j.reason)
                .bind(i64::from(j.rate))
                .bind(&j.created_by)
                .bind(ms(j.created_at))
                .bind(ms(j.frozen_before))
                .bind(&j.state)
                .bind(ms(j.updated_at))
                .execute(self.0)
                .await?;
                Ok(())
            }

            async fn get(&self, id: &str) -> Result<Option<JobRow>> {
                let row = sqlx::query(&format!("{JOB_COLUMNS} WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(self.0)
                    .await?;
                Ok(row.as_ref().map(Self::job))
            }

            async fn list(
                &self,
                tenant: Option<&str>,
                after: Option<(i64, String)>,
                limit: u32,
            ) -> Result<Vec<JobRow>> {
                let mut b: sqlx::QueryBuilder<$db> =
                    sqlx::QueryBuilder::new(format!("{JOB_COLUMNS} WHERE 1 = 1"));
                if let Some(t) = tenant {
                    b.push(" AND tenant = ").push_bind(t.to_string());
                }
                if let Some((at, id)) = after {
                    b.push(" AND (created_at < ")
                        .push_bind(at)
                        .push(" OR (created_at = ")
                        .push_bind(at)
                        .push(" AND id < ")
                        .push_bind(id)
                        .push("))");
                }
                b.push(" ORDER BY created_at DESC, id DESC LIMIT ")
                    .push_bind(i64::from(limit));
                let rows = b.build().fetch_all(self.0).await?;
                Ok(rows.iter().map(Self::job).collect())
            }

            async fn running(&self, limit: u32) -> Result<Vec<JobRow>> {
                let rows = sqlx::query(&format!(
                    "{JOB_COLUMNS} WHERE state = 'running' ORDER BY created_at, id LIMIT $1"
                ))
                .bind(i64::from(limit))
                .fetch_all(self.0)
                .await?;
                Ok(rows.iter().map(Self::job).collect())
            }

            async fn set_state(&self, id: &str, from: &[&str], to: &str, now: u64) -> Result<bool> {
                let finished = matches!(to, "cancelled" | "done").then_some(ms(now));
                let mut b: sqlx::QueryBuilder<$db> =
                    sqlx::QueryBuilder::new("UPDATE h_bulk_jobs SET state = ");
                b.push_bind(to.to_string())
                    .push(", updated_at = ")
                    .push_bind(ms(now))
                    .push(", finished_at = ")
                    .push_bind(finished)
                    .push(" WHERE id = ")
                    .push_bind(id.to_string())
                    .push(" AND state IN (");
                let mut sep = b.separated(", ");
                for s in from {
                    sep.push_bind(s.to_string());
                }
                b.push(")");
                Ok(b.build().execute(self.0).await?.rows_affected() == 1)
            }

            async fn take(&self, id: &str, runner: &str) -> Result<()> {
                sqlx::query("UPDATE h_bulk_jobs SET runner = $1 WHERE id = $2")
                    .bind(runner)
                    .bind(id)
                    .execute(self.0)
                    .await?;
                Ok(())
            }

            async fn hold_page(
                &self,
                id: &str,
                runner: &str,
                page: &str,
                next: Option<&str>,
            ) -> Result<bool> {
                let changed = sqlx::query(
                    "UPDATE h_bulk_jobs SET page = $1, page_next = $2 WHERE id = $3 AND runner = $4",
                )
                .bind(page)
                .bind(next)
                .bind(id)
                .bind(runner)
                .execute(self.0)
                .await?
                .rows_affected();
                Ok(changed == 1)
            }

            async fn save(&self, id: &str, runner: &str, p: &Progress, now: u64) -> Result<bool> {
                let done = p.done.then_some(ms(now));
                let changed = sqlx::query(
                    "UPDATE h_bulk_jobs SET cursor = $1, page = NULL, page_next = NULL, selected = $2, acted = $3, skipped = $4, \
                     errors = $5, skipped_by = $6, last_error = $7, updated_at = $8, \
                     state = CASE WHEN $9 IS NOT NULL AND state IN ('running', 'paused') THEN 'done' ELSE state END, \
                     finished_at = CASE WHEN $9 IS NOT NULL AND state IN ('running', 'paused') THEN $9 ELSE finished_at END \
                     WHERE id = $10 AND runner = $11",
                )
                .bind(&p.cursor)
                .bind(p.counts.selected as i64)
                .bind(p.counts.acted as i64)
                .bind(p.counts.skipped as i64)
                .bind(p.counts.errors as i64)
                .bind(&p.counts.skipped_by)
                .bind(&p.last_error)
                .bind(ms(now))
                .bind(done)
                .bind(id)
                .bind(runner)
                .execute(self.0)
                .await?
                .rows_affected();
                Ok(changed == 1)
            }

            async fn purge(&self, tenant: &str) -> Result<u64> {
                Ok(sqlx::query("DELETE FROM h_bulk_jobs WHERE tenant = $1")
                    .bind(tenant)
                    .execute(self.0)
                    .await?
                    .rows_affected())
            }

            /// How many runs `walk` selects, counted up to `at_most` along
            /// the index that answers its filter (never more rows).
            async fn count(&self, walk: &Walk, at_most: u32) -> Result<u64> {
                let mut b: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM ");
                let (table, text, since, until, streak) = match walk {
                    Walk::Runs(q) => (
                        "h_runs",
                        vec![
                            ("tenant", &q.tenant),
                            ("flow", &q.flow),
                            ("version", &q.version),
                            ("status", &q.status),
                            ("failed_step", &q.step),
                            ("error_code", &q.error),
                            ("key", &q.key),
                        ],
                        q.since,
                        q.until,
                        None,
                    ),
                    Walk::Population(q) => (
                        "h_population",
                        vec![
                            ("tenant", &q.tenant),
                            ("status", &q.status),
                            ("version", &q.version),
                        ],
                        None,
                        q.before,
                        q.failed_in_a_row,
                    ),
                };
                b.push(table).push(" WHERE 1 = 1");
                if let Walk::Population(q) = walk {
                    b.push(" AND flow = ").push_bind(q.flow.clone());
                }
                for (column, value) in text {
                    if let Some(v) = value {
                        b.push(format!(" AND {column} = ")).push_bind(v.clone());
                    }
                }
                if let Some(t) = since {
                    b.push(" AND created_at >= ").push_bind(ms(t));
                }
                if let Some(t) = until {
                    b.push(" AND created_at < ").push_bind(ms(t));
                }
                if let Some(n) = streak {
                    // As the population's page writes it, for its partial indexes.
                    let n = n.clamp(1, i32::MAX as u32);
                    b.push(format!(" AND failed_in_a_row > 0 AND failed_in_a_row >= {n}"));
                }
                b.push(" LIMIT ").push_bind(i64::from(at_most)).push(") AS selected");
                let n: i64 = b.build_query_scalar().fetch_one(self.0).await?;
                Ok(n as u64)
            }
        }
    };
}

job_store!(
    SqliteJobs,
    sqlx::SqlitePool,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow
);
job_store!(PgJobs, sqlx::PgPool, sqlx::Postgres, sqlx::postgres::PgRow);

/// Every job operation, forwarded to the history store's backend.
macro_rules! forward {
    ($($(#[$doc:meta])* pub async fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        impl Jobs {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match &self.0 {
                        HistoryStore::Sqlite(s) => SqliteJobs(s.pool()).$name($($arg),*).await,
                        HistoryStore::Postgres(s) => PgJobs(s.pool()).$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

/// The bulk jobs of a history store: a cheap handle over it.
#[derive(Debug, Clone)]
pub struct Jobs(pub HistoryStore);

forward! {
    /// Stores a new job.
    pub async fn insert(&self, job: &JobRow) -> Result<()>;
    pub async fn get(&self, id: &str) -> Result<Option<JobRow>>;
    /// Up to `limit` jobs (of `tenant`, or all), newest first, after `after`
    /// (a job's creation time and id).
    pub async fn list(&self, tenant: Option<&str>, after: Option<(i64, String)>, limit: u32) -> Result<Vec<JobRow>>;
    /// Up to `limit` running jobs, oldest first.
    pub async fn running(&self, limit: u32) -> Result<Vec<JobRow>>;
    /// Moves job `id` to state `to` if it is in one of `from`; whether it did.
    pub async fn set_state(&self, id: &str, from: &[&str], to: &str, now: u64) -> Result<bool>;
    /// Makes `runner` the one whose progress job `id` keeps: the runner
    /// before it writes nothing more.
    pub async fn take(&self, id: &str, runner: &str) -> Result<()>;
    /// Holds the page `runner` is about to act on (its runs' ids, JSON) and
    /// the cursor after it, if `runner` still holds the job; whether it did.
    pub async fn hold_page(&self, id: &str, runner: &str, page: &str, next: Option<&str>) -> Result<bool>;
    /// Stores a page's progress and lets the page go, if `runner` still
    /// holds the job; whether it did.
    pub async fn save(&self, id: &str, runner: &str, progress: &Progress, now: u64) -> Result<bool>;
    /// Deletes every job of `tenant`; returns how many.
    pub async fn purge(&self, tenant: &str) -> Result<u64>;
    /// How many runs `walk` selects (its cursor and limit aside), up to `at_most`.
    pub async fn count(&self, walk: &Walk, at_most: u32) -> Result<u64>;
}

impl Jobs {
    /// A list cursor: the last job's creation time and id.
    pub fn cursor_of(job: &JobRow) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}|{}", job.created_at, job.id))
    }

    pub fn decode_cursor(c: &str) -> Result<(i64, String)> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c)
            .map_err(|_| Error::BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| Error::BadCursor)?;
        let (at, id) = text.split_once('|').ok_or(Error::BadCursor)?;
        Ok((at.parse().map_err(|_| Error::BadCursor)?, id.to_string()))
    }
}
