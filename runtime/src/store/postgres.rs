//! The distributed backend: the engine's store on PostgreSQL.
//!
//! Many processes share one database, so what the embedded backend gets from
//! having one writer is done here with locks inside PostgreSQL:
//!
//! - **Fencing.** A commit carrying a shard's lease locks the lease row
//!   (`FOR SHARE`) in its own transaction: a worker whose lease was taken over
//!   (the token moved on) is refused with [`Error::LeaseLost`], and a takeover
//!   waits for a commit in flight under the old token to end.
//! - **The event log's order.** Positions come from a sequence, so two commits
//!   may take positions 10 and 11 and commit 11 first; a reader that went past
//!   11 would never see 10. A commit takes its positions under a shared
//!   advisory lock (many commits at once); a reader that has caught up takes
//!   that lock exclusively for an instant, which waits for every commit in
//!   flight to end, and then reads the last position: every position up to it
//!   is committed or never will be (the *horizon*). Readers read up to the
//!   horizon only; a lagging reader reads up to the last horizon known, and a
//!   reader with nothing committed past its cursor answers at once, neither
//!   taking the lock.
//! - **Claims.** Timer and schedule loaders claim due rows with
//!   `FOR UPDATE SKIP LOCKED`, an index range scan of their partition.
//! - **Counting under a limit** (schedules per tenant, a name's next registry
//!   version) is done under a transaction-scoped advisory lock per key.
//!
//! A batch is written with one statement per table whatever its size: columns
//! bound as arrays and expanded by `UNNEST`, so the statement text is the same
//! for every batch and stays prepared on its connection.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};

use super::{
    ApprovalRow, Commit, Deployment, DueTimer, Durability, Error, EventRow, FlowRow, LeaseRow,
    MemberRow, NewEntry, PurgeBegun, PurgeHold, RegistryRow, RegistryUse, RegistryUseRow, Result,
    RunMeta, ScheduleQuery, ScheduleRow, ScheduleUpdate, TenantRow, TokenRow, stored_json,
};

/// The first key of the store's advisory locks (two-key form), one per use;
/// the second key names the schema or the row group locked.
/// Outbox rows, counted up to `$1`: a scrape of `/metrics` reads a bounded
/// part of a long outbox, not all of it.
const OUTBOX_DEPTH: &str = "SELECT count(*) FROM (SELECT 1 FROM outbox LIMIT $1) o";

const LOCK_EVENT_LOG: i32 = 0x6566_6c01;
const LOCK_REGISTRY: i32 = 0x6566_6c02;
const LOCK_SCHEDULES: i32 = 0x6566_6c03;

/// How long a commit whose answer was lost is asked after: long enough for
/// a server that crashed to recover and answer; then the worker retries its
/// batch as after a failed commit.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// How long a reader waits for the commits in flight to end before it
/// answers "nothing new yet": a commit takes milliseconds, and while the
/// reader waits every new commit waits behind it.
const HORIZON_LOCK_TIMEOUT: &str = "200ms";

/// After a reader's wait timed out (a commit stuck in flight), how long
/// readers answer "nothing new yet" without waiting again, so a stuck commit
/// costs the writers at most a fifth of their time until it ends.
const HORIZON_BACKOFF: Duration = Duration::from_secs(1);

/// Ends a session of ours that stays in a transaction without a statement
/// (its process stopped or lost mid-commit), with the locks it holds: the
/// store's transactions never wait between statements.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "10s";

/// Connections per process: the engine's commits, the loaders and the API's
/// reads. PostgreSQL's own limit is shared by every process of a cluster.
const MAX_CONNECTIONS: u32 = 16;

/// Read at every start: answered from the index `runs_tenant_active`.
const ACTIVE_RUNS: &str = "SELECT tenant, parent, count(*) FROM runs \
    WHERE status IN ('created', 'running') GROUP BY tenant, parent";

/// The columns [`schedule_row`] reads, in its order.
const SCHEDULE_COLUMNS: &str = "id, tenant, flow, bundle, position, spec, paused, last_fire, next_due, buffered, partition, last_start, declared, key, version, created_at";

/// A timer loader's claim of its partition's due rows, oldest due first: a
/// range scan of `timers_due` skipping rows another loader is claiming
/// (`tests/store_pg.rs` reads the plan).
const CLAIM_TIMERS: &str = "UPDATE timers SET claimed_until = $1 \
    WHERE (run, timer) IN ( \
      SELECT run, timer FROM timers \
      WHERE partition = $2 AND due_at <= $3 AND claimed_until <= $4 \
      ORDER BY due_at LIMIT $5 FOR UPDATE SKIP LOCKED) \
    RETURNING run, timer, due_at, event";

/// A schedule loader's claim of its partition's due schedules: a range scan
/// of `schedules_due`.
const CLAIM_SCHEDULES: &str = "UPDATE schedules SET claimed_until = $1 \
    WHERE id IN ( \
      SELECT id FROM schedules \
      WHERE partition = $2 AND NOT paused AND next_due IS NOT NULL \
      AND next_due <= $3 AND claimed_until <= $3 \
      ORDER BY next_due LIMIT $4 FOR UPDATE SKIP LOCKED)";

/// When the first unpaused, unclaimed schedule of a partition is due: the
/// start of `schedules_due`.
const NEXT_SCHEDULE_DUE: &str = "SELECT next_due FROM schedules \
    WHERE partition = $1 AND NOT paused AND next_due IS NOT NULL AND claimed_until <= $2 \
    ORDER BY next_due LIMIT 1";

/// The sweeper's candidates: runs that succeeded or were cancelled, in the
/// order they finished (the index `runs_finished`), each held by the
/// history and owing no effect.
const SWEEP_CANDIDATES: &str = "SELECT id, tenant, finished_at FROM runs \
    WHERE finished_at IS NOT NULL AND status <> 'failed' AND finished_at <= $1 \
    AND NOT EXISTS (SELECT 1 FROM events WHERE events.run = runs.id AND events.pos > $2) \
    AND id NOT IN (SELECT run FROM outbox) \
    ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP LOCKED";

/// The same for failed runs (the index `runs_failed`), which stay for their
/// retry window.
const SWEEP_FAILED_CANDIDATES: &str = "SELECT id, tenant, finished_at FROM runs \
    WHERE finished_at IS NOT NULL AND status = 'failed' AND finished_at <= $1 \
    AND NOT EXISTS (SELECT 1 FROM events WHERE events.run = runs.id AND events.pos > $2) \
    AND id NOT IN (SELECT run FROM outbox) \
    ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP LOCKED";

/// What a loader did with a schedule; releases its claim. `GREATEST` skips
/// NULLs: the newest start is kept.
const UPDATE_SCHEDULES: &str = "UPDATE schedules s SET last_fire = u.last_fire, \
    last_start = GREATEST(s.last_start, u.last_start), next_due = u.next_due, \
    buffered = u.buffered, claimed_until = 0 \
    FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[]) \
      AS u(id, last_fire, last_start, next_due, buffered) \
    WHERE s.id = u.id";

const TOKEN_COLUMNS: &str = "id, hash, tenant, name, last4, created_at, expires_at";

const APPROVAL_COLUMNS: &str =
    "run, step, attempt, tenant, contract, request, requested_at, expires_at, decided_at, decision";

const REGISTRY_COLUMNS: &str =
    "tenant, kind, name, version, entry, run, step, inputs, registered_at";

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Keys the event log's advisory lock by schema, so stores in other
    /// schemas of the database (tests, tenants of a shared server) do not wait
    /// for each other.
    schema_key: i32,
    /// The highest horizon read: every position up to it is committed or was
    /// never used, for good.
    horizon: Arc<AtomicI64>,
    /// Until when readers do not wait for the event log's lock again.
    horizon_backoff: Arc<Mutex<Option<Instant>>>,
}

fn ms(t: u64) -> i64 {
    t.min(i64::MAX as u64) as i64
}

fn corrupt(table: &'static str, message: impl Into<String>) -> Error {
    Error::Corrupt {
        table,
        message: message.into(),
    }
}

fn json(table: &'static str, bytes: &[u8]) -> Result<serde_json::Value> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(table, e.to_string()))
}

/// Whether PostgreSQL refused a lock because `lock_timeout` passed.
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "55P03")
}

/// `items` with one entry per key, the last one of each key kept, in the
/// order of the last ones: an upsert may touch a row once per statement.
fn last_per_key<'a, T, K: std::hash::Hash + Eq>(
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> Vec<&'a T> {
    let mut last = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        last.insert(key(item), i);
    }
    items
        .iter()
        .enumerate()
        .filter(|(i, item)| last.get(&key(item)) == Some(i))
        .map(|(_, item)| item)
        .collect()
}

/// `items` with the first entry of each key only.
fn first_per_key<'a, T, K: std::hash::Hash + Eq>(
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> Vec<&'a T> {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    items.iter().filter(|item| seen.insert(key(item))).collect()
}

impl PostgresStore {
    /// The queries of the timer and schedule loaders and of the sweeper, by
    /// name: `tests/store_pg.rs` reads their plans over many rows.
    #[doc(hidden)]
    pub const PLANNED_QUERIES: [(&'static str, &'static str); 5] = [
        ("claim_timers", CLAIM_TIMERS),
        ("claim_schedules", CLAIM_SCHEDULES),
        ("next_schedule_due", NEXT_SCHEDULE_DUE),
        ("sweep_candidates", SWEEP_CANDIDATES),
        ("sweep_failed_candidates", SWEEP_FAILED_CANDIDATES),
    ];

    /// Connects to `url` (`postgres://…` or `postgresql://…`, with sqlx's
    /// connection parameters) and brings its schema to this eflow's version
    /// or checks it is there, as `mode` says. Several processes may start at
    /// once: the migrator takes a lock.
    pub async fn open(
        url: &str,
        durability: Durability,
        mode: crate::schema::Mode,
    ) -> Result<(Self, crate::schema::Migrated)> {
        let mut options = PgConnectOptions::from_str(url)?
            .application_name("eflow")
            .options([(
                "idle_in_transaction_session_timeout",
                IDLE_IN_TRANSACTION_TIMEOUT,
            )]);
        if durability == Durability::Normal {
            // A commit is answered before its WAL is flushed: it survives a
            // crash of eflow, and may be lost with PostgreSQL's machine.
            options = options.options([("synchronous_commit", "off")]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        let migrated = crate::schema::prepare(
            &pool,
            sqlx::migrate!("./migrations/postgres"),
            crate::schema::ENGINE,
            "engine store",
            mode,
        )
        .await?;
        let schema_key: i32 = sqlx::query_scalar("SELECT hashtext(current_schema())")
            .fetch_one(&pool)
            .await?;
        Ok((
            Self {
                pool,
                schema_key,
                horizon: Arc::new(AtomicI64::new(0)),
                horizon_backoff: Arc::new(Mutex::new(None)),
            },
            migrated,
        ))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- the engine's commit -------------------------------------------------

    /// Writes a batch in one transaction, one statement per table.
    ///
    /// A `COMMIT` whose answer is lost (the connection ended after it was
    /// sent) may have landed: the server is asked what became of the
    /// transaction, and the answer is the commit's. Reporting a landed
    /// commit as failed would leave its effects in the outbox with nobody to
    /// carry them out (the worker hands them on only after a commit it
    /// knows of), and its runs stuck.
    pub async fn commit(&self, c: &Commit) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        match self.write_batch(&mut tx, c).await {
            Ok(xid) => match tx.commit().await {
                Ok(()) => Ok(()),
                Err(lost) => self.settle(xid, lost).await,
            },
            Err(e) => {
                // Now, not when the connection is next used: the locks the
                // batch took (the event log's, the lease row, rows) go too.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// What became of transaction `xid`, whose `COMMIT` was sent and not
    /// answered (`lost`): asked until the server knows (a transaction whose
    /// session ended is committed or rolled back once the server finishes
    /// with it), for up to [`SETTLE_WITHIN`] (a server restarting answers
    /// after its recovery).
    async fn settle(&self, xid: i64, lost: sqlx::Error) -> Result<()> {
        let deadline = Instant::now() + SETTLE_WITHIN;
        loop {
            let status: std::result::Result<Option<String>, _> =
                sqlx::query_scalar("SELECT txid_status($1)")
                    .bind(xid)
                    .fetch_one(&self.pool)
                    .await;
            match status.as_ref().map(Option::as_deref) {
                Ok(Some("committed")) => {
                    tracing::warn!(xid, error = %lost, "a commit's answer was lost; it had landed");
                    return Ok(());
                }
                Ok(Some("aborted")) => return Err(lost.into()),
                _ if Instant::now() >= deadline => {
                    tracing::error!(
                        xid,
                        error = %lost,
                        "a commit's answer was lost and the server could not tell whether it landed; \
                         if it did, its effects are carried out by the shard's next owner"
                    );
                    return Err(lost.into());
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Writes the batch; answers the transaction's id.
    async fn write_batch(
        &self,
        tx: &mut sqlx::Transaction<'_, Postgres>,
        c: &Commit,
    ) -> Result<i64> {
        if !c.events.is_empty() {
            // First, before any row lock: a reader waiting for the exclusive
            // lock holds up new commits, and none of those may hold a row an
            // earlier commit waits for.
            sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
                .bind(LOCK_EVENT_LOG)
                .bind(self.schema_key)
                .execute(&mut **tx)
                .await?;
        }
        // The transaction's id, to ask after it if its COMMIT goes
        // unanswered; with the lease's check when there is one.
        let xid: i64 = if let Some((shard, token)) = c.lease {
            // A share lock on the lease row: a takeover (an update of the
            // row) waits for this commit, and one committed first fails it.
            let held: Option<i64> = sqlx::query_scalar(
                "SELECT txid_current() FROM leases WHERE shard = $1 AND token = $2 FOR SHARE",
            )
            .bind(i64::from(shard))
            .bind(token)
            .fetch_optional(&mut **tx)
            .await?;
            held.ok_or(Error::LeaseLost { shard })?
        } else {
            sqlx::query_scalar("SELECT txid_current()")
                .fetch_one(&mut **tx)
                .await?
        };
        if !c.events.is_empty() {
            // Positions in the batch's order: the unnest's rows are inserted
            // in array order.
            let e = &c.events;
            sqlx::query(
                "INSERT INTO events (run, seq, id, at, status, body) \
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bytea[])",
            )
            .bind(e.iter().map(|e| e.run.as_str()).collect::<Vec<_>>())
            .bind(e.iter().map(|e| ms(e.seq)).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
            .bind(e.iter().map(|e| ms(e.at)).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.status).collect::<Vec<_>>())
            .bind(e.iter().map(|e| e.body.as_slice()).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        if !c.runs.is_empty() {
            let runs = last_per_key(&c.runs, |r| r.meta.id.as_str());
            sqlx::query(
                "INSERT INTO runs (id, tenant, bundle, schedule, parent, status, created_at, updated_at, finished_at, state, key) \
                 SELECT id, tenant, bundle, schedule, parent, status, created_at, updated_at, \
                   CASE WHEN status IN ('created', 'running') THEN NULL ELSE updated_at END, state, key \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                   $7::bigint[], $8::bigint[], $9::bytea[], $10::text[]) \
                   AS u(id, tenant, bundle, schedule, parent, status, created_at, updated_at, state, key) \
                 ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at, \
                   finished_at = EXCLUDED.finished_at, state = EXCLUDED.state",
            )
            .bind(runs.iter().map(|r| r.meta.id.as_str()).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.meta.tenant.as_str()).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.meta.bundle.as_str()).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.meta.schedule.as_deref()).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.meta.parent.as_deref()).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.status).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| ms(r.meta.created_at)).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| ms(r.updated_at)).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.state.as_slice()).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.meta.key.as_deref()).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        if !c.timers_deleted.is_empty() {
            let d = &c.timers_deleted;
            sqlx::query(
                "DELETE FROM timers t USING UNNEST($1::text[], $2::text[]) AS d(run, timer) \
                 WHERE t.run = d.run AND t.timer = d.timer",
            )
            .bind(d.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>())
            .bind(d.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        if !c.timers.is_empty() {
            let t = last_per_key(&c.timers, |t| (t.run.as_str(), t.timer.as_str()));
            sqlx::query(
                "INSERT INTO timers (run, timer, partition, due_at, claimed_until, event) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bytea[]) \
                 ON CONFLICT (run, timer) DO UPDATE SET partition = EXCLUDED.partition, \
                   due_at = EXCLUDED.due_at, claimed_until = EXCLUDED.claimed_until, event = EXCLUDED.event",
            )
            .bind(t.iter().map(|t| t.run.as_str()).collect::<Vec<_>>())
            .bind(t.iter().map(|t| t.timer.as_str()).collect::<Vec<_>>())
            .bind(t.iter().map(|t| i64::from(t.partition)).collect::<Vec<_>>())
            .bind(t.iter().map(|t| ms(t.due_at)).collect::<Vec<_>>())
            .bind(t.iter().map(|t| ms(t.claimed_until)).collect::<Vec<_>>())
            .bind(t.iter().map(|t| t.event.as_slice()).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        if !c.outbox_deleted.is_empty() {
            sqlx::query("DELETE FROM outbox WHERE pos = ANY($1)")
                .bind(&c.outbox_deleted)
                .execute(&mut **tx)
                .await?;
        }
        if !c.outbox.is_empty() {
            let o = &c.outbox;
            sqlx::query(
                "INSERT INTO outbox (pos, run, effect) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bytea[])",
            )
            .bind(o.iter().map(|(p, _, _)| *p).collect::<Vec<_>>())
            .bind(o.iter().map(|(_, r, _)| r.as_str()).collect::<Vec<_>>())
            .bind(o.iter().map(|(_, _, e)| e.as_slice()).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        if !c.approvals.is_empty() {
            let a = &c.approvals;
            sqlx::query(
                "INSERT INTO approvals (run, step, attempt, tenant, contract, request, requested_at, expires_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
                   $6::bytea[], $7::bigint[], $8::bigint[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(a.iter().map(|a| a.run.as_str()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.step.as_str()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| i64::from(a.attempt)).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.tenant.as_str()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.contract.as_str()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.request.as_slice()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| ms(a.requested_at)).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.expires_at.map(ms)).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        if !c.approvals_closed.is_empty() {
            // The first close of a row wins, within a batch too.
            let a = first_per_key(&c.approvals_closed, |a| {
                (a.run.as_str(), a.step.as_str(), a.attempt)
            });
            sqlx::query(
                "UPDATE approvals a SET decided_at = u.at, decision = u.decision \
                 FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bytea[]) \
                   AS u(run, step, attempt, at, decision) \
                 WHERE a.run = u.run AND a.step = u.step AND a.attempt = u.attempt AND a.decided_at IS NULL",
            )
            .bind(a.iter().map(|a| a.run.as_str()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.step.as_str()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| i64::from(a.attempt)).collect::<Vec<_>>())
            .bind(a.iter().map(|a| ms(a.at)).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.decision.as_deref()).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        if !c.results.is_empty() {
            let r = &c.results;
            sqlx::query(
                "INSERT INTO fanout_results (run, node, idx, output) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bytea[]) \
                 ON CONFLICT (run, node, idx) DO NOTHING",
            )
            .bind(r.iter().map(|r| r.run.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.node.as_str()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| i64::from(r.index)).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.output.as_slice()).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        if !c.values.is_empty() {
            let bodies: Vec<(&super::ValueWrite, &[u8])> = c
                .values
                .iter()
                .filter_map(|v| v.body.as_deref().map(|b| (v, b)))
                .collect();
            if !bodies.is_empty() {
                sqlx::query(
                    "INSERT INTO stored_values (tenant, hash, bytes, body, created_at) \
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bytea[], $5::bigint[]) \
                     ON CONFLICT (tenant, hash) DO NOTHING",
                )
                .bind(bodies.iter().map(|(v, _)| v.tenant.as_str()).collect::<Vec<_>>())
                .bind(bodies.iter().map(|(v, _)| v.hash.as_str()).collect::<Vec<_>>())
                .bind(bodies.iter().map(|(_, b)| b.len() as i64).collect::<Vec<_>>())
                .bind(bodies.iter().map(|(_, b)| *b).collect::<Vec<_>>())
                .bind(bodies.iter().map(|(v, _)| ms(v.at)).collect::<Vec<_>>())
                .execute(&mut **tx)
                .await?;
            }
            let v = &c.values;
            sqlx::query(
                "INSERT INTO run_values (run, tenant, hash) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
            )
            .bind(v.iter().map(|v| v.run.as_str()).collect::<Vec<_>>())
            .bind(v.iter().map(|v| v.tenant.as_str()).collect::<Vec<_>>())
            .bind(v.iter().map(|v| v.hash.as_str()).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        Ok(xid)
    }

    // ---- values kept by reference ---------------------------------------------

    pub async fn values(
        &self,
        tenant: &str,
        hashes: &[String],
    ) -> Result<Vec<(String, serde_json::Value)>> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT hash, body FROM stored_values WHERE tenant = $1 AND hash = ANY($2)",
        )
        .bind(tenant)
        .bind(hashes)
        .fetch_all(&self.pool)
        .await?;
        let mut bodies: HashMap<String, Vec<u8>> = rows.into_iter().collect();
        let mut out = Vec::with_capacity(bodies.len());
        for hash in hashes {
            let Some(body) = bodies.remove(hash) else {
                continue;
            };
            let v = serde_json::from_slice(&body).map_err(|e| {
                corrupt(
                    "stored_values",
                    format!("tenant {tenant}, value {hash}: {e}"),
                )
            })?;
            out.push((hash.clone(), v));
        }
        Ok(out)
    }

    pub async fn value_body(&self, tenant: &str, hash: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT body FROM stored_values WHERE tenant = $1 AND hash = $2")
                .bind(tenant)
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn drop_unreferenced_values(&self, before: u64, limit: u32) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM stored_values WHERE (tenant, hash) IN ( \
               SELECT v.tenant, v.hash FROM stored_values v \
               WHERE v.created_at < $1 AND NOT EXISTS ( \
                 SELECT 1 FROM run_values rv WHERE rv.tenant = v.tenant AND rv.hash = v.hash) \
               LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(ms(before))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    pub async fn value_size(&self, tenant: &str, hash: &str) -> Result<Option<u64>> {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT bytes FROM stored_values WHERE tenant = $1 AND hash = $2")
                .bind(tenant)
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
        Ok(n.map(|n| n.max(0) as u64))
    }

    pub async fn run_refers_to(&self, run: &str, hash: &str) -> Result<bool> {
        let n: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM run_values WHERE run = $1 AND hash = $2")
                .bind(run)
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
        Ok(n.is_some())
    }

    pub async fn put_value(
        &self,
        tenant: &str,
        run: Option<&str>,
        hash: &str,
        body: &[u8],
        now: u64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "INSERT INTO stored_values (tenant, hash, bytes, body, created_at) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1) \
             ON CONFLICT (tenant, hash) DO NOTHING",
        )
        .bind(tenant)
        .bind(hash)
        .bind(body.len() as i64)
        .bind(body)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        if let Some(run) = run {
            sqlx::query(
                "INSERT INTO run_values (run, tenant, hash) SELECT $1, $2, $3 \
                 WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1) ON CONFLICT DO NOTHING",
            )
            .bind(run)
            .bind(tenant)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn fanout_results(
        &self,
        run: &str,
        node: &str,
        after: Option<u32>,
        limit: u32,
    ) -> Result<Vec<(u32, serde_json::Value)>> {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT idx, output FROM fanout_results WHERE run = $1 AND node = $2 AND idx > $3 \
             ORDER BY idx LIMIT $4",
        )
        .bind(run)
        .bind(node)
        .bind(after.map_or(-1, i64::from))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(i, o)| {
                let output = serde_json::from_slice(&o).map_err(|e| {
                    corrupt(
                        "fanout_results",
                        format!("run {run}, fan-out {node}, child {i}: {e}"),
                    )
                })?;
                Ok((u32::try_from(i).unwrap_or(u32::MAX), output))
            })
            .collect()
    }

    // ---- runs ----------------------------------------------------------------

    pub async fn load_run(&self, id: &str) -> Result<Option<(RunMeta, String, Vec<u8>)>> {
        let row = sqlx::query(
            "SELECT id, tenant, bundle, schedule, parent, created_at, status, state, key FROM runs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(loaded_run))
    }

    pub async fn load_runs(&self, ids: &[&str]) -> Result<Vec<(RunMeta, String, Vec<u8>)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT id, tenant, bundle, schedule, parent, created_at, status, state, key FROM runs WHERE id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(loaded_run).collect())
    }

    pub async fn active_runs(&self) -> Result<Vec<(String, Option<String>, i64)>> {
        let rows = sqlx::query(ACTIVE_RUNS).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    pub async fn active_runs_of_schedule(&self, schedule: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE schedule = $1 AND status IN ('created', 'running')",
        )
        .bind(schedule)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn active_runs_of_bundle(&self, tenant: &str, bundle: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE tenant = $1 AND bundle = $2 AND status IN ('created', 'running')",
        )
        .bind(tenant)
        .bind(bundle)
        .fetch_one(&self.pool)
        .await?)
    }

    // ---- events --------------------------------------------------------------

    pub async fn events_of(
        &self,
        run: &str,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT pos, run, seq, id, at, status, body FROM events \
             WHERE run = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(run)
        .bind(after_seq.map_or(-1, ms))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(event_row).collect())
    }

    pub async fn event(&self, run: &str, id: &str) -> Result<Option<EventRow>> {
        let row = sqlx::query(
            "SELECT pos, run, seq, id, at, status, body FROM events WHERE run = $1 AND id = $2 LIMIT 1",
        )
        .bind(run)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(event_row))
    }

    /// Events in commit order after `pos`, up to the horizon: never one
    /// whose position a commit still in flight could come before.
    pub async fn events_after(&self, pos: i64, limit: u32) -> Result<Vec<EventRow>> {
        let known = self.horizon.load(Ordering::Acquire);
        if pos < known {
            let rows = self.events_between(pos, known, limit).await?;
            if !rows.is_empty() {
                return Ok(rows);
            }
        }
        // Caught up with the last horizon known (or what lay before it was
        // deleted). Nothing committed past the cursor: nothing to read, and
        // no writer held up. Else wait for the commits in flight and read a
        // new horizon.
        if self.max_event_pos().await? <= pos {
            return Ok(Vec::new());
        }
        if self.backing_off() {
            return Ok(Vec::new());
        }
        let horizon = match self.read_horizon().await {
            Ok(h) => h,
            Err(Error::Db(e)) if is_lock_timeout(&e) => {
                tracing::warn!(
                    timeout = HORIZON_LOCK_TIMEOUT,
                    "a commit to the event log has been in flight for longer than the timeout; \
                     the events after it are held back until it ends"
                );
                *self.backoff_until() = Some(Instant::now() + HORIZON_BACKOFF);
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        if pos >= horizon {
            return Ok(Vec::new());
        }
        self.events_between(pos, horizon, limit).await
    }

    fn backoff_until(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.horizon_backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a reader's wait for the lock timed out less than
    /// [`HORIZON_BACKOFF`] ago.
    fn backing_off(&self) -> bool {
        self.backoff_until().is_some_and(|t| Instant::now() < t)
    }

    async fn events_between(&self, after: i64, through: i64, limit: u32) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT pos, run, seq, id, at, status, body FROM events \
             WHERE pos > $1 AND pos <= $2 ORDER BY pos LIMIT $3",
        )
        .bind(after)
        .bind(through)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(event_row).collect())
    }

    /// Takes the event log's lock exclusively for an instant: every commit
    /// that took positions before has ended then (the lock is released only
    /// after a commit is visible), so every position up to the last one is
    /// committed or never will be. One round trip: the statements run in
    /// one implicit transaction, which releases the lock as it ends.
    async fn read_horizon(&self) -> Result<i64> {
        let sql = format!(
            "SET LOCAL lock_timeout = '{HORIZON_LOCK_TIMEOUT}'; \
             SELECT pg_advisory_xact_lock({LOCK_EVENT_LOG}, {}); \
             SELECT coalesce(max(pos), 0)::bigint FROM events",
            self.schema_key
        );
        let rows = sqlx::raw_sql(&sql).fetch_all(&self.pool).await?;
        let horizon: i64 = rows
            .last()
            .ok_or_else(|| corrupt("events", "the horizon query answered no row"))?
            .try_get(0)?;
        Ok(self
            .horizon
            .fetch_max(horizon, Ordering::AcqRel)
            .max(horizon))
    }

    /// The last position committed.
    pub async fn max_event_pos(&self) -> Result<i64> {
        let max: Option<i64> = sqlx::query_scalar("SELECT max(pos) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(max.unwrap_or(0))
    }

    // ---- timers --------------------------------------------------------------

    pub async fn claim_timers(
        &self,
        partition: u32,
        now: u64,
        until: u64,
        claim_until: u64,
        limit: u32,
    ) -> Result<Vec<DueTimer>> {
        let rows = sqlx::query(CLAIM_TIMERS)
            .bind(ms(claim_until))
            .bind(i64::from(partition))
            .bind(ms(until))
            .bind(ms(now))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| DueTimer {
                run: r.get(0),
                timer: r.get(1),
                due_at: r.get::<i64, _>(2) as u64,
                event: r.get(3),
            })
            .collect())
    }

    /// Releases every claim on timers and schedules. For one process that
    /// owns the whole database at start; with several processes a claim may
    /// be another's, live.
    pub async fn release_claims(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE timers SET claimed_until = 0 WHERE claimed_until > 0")
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE schedules SET claimed_until = 0 WHERE claimed_until > 0")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- outbox --------------------------------------------------------------

    pub async fn outbox(&self) -> Result<Vec<(i64, String, Vec<u8>)>> {
        Ok(
            sqlx::query_as("SELECT pos, run, effect FROM outbox ORDER BY pos")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn outbox_depth(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(OUTBOX_DEPTH)
            .bind(super::OUTBOX_DEPTH_COUNTED as i64)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    pub async fn outbox_block(&self) -> Result<i64> {
        let block: i64 = sqlx::query_scalar("SELECT nextval('outbox_blocks')")
            .fetch_one(&self.pool)
            .await?;
        Ok(block << 32)
    }

    // ---- leases --------------------------------------------------------------

    /// The database server's time now (not the transaction's start).
    pub async fn clock_ms(&self) -> Result<u64> {
        let ms: i64 =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
                .fetch_one(&self.pool)
                .await?;
        Ok(ms.max(0) as u64)
    }

    /// Takes shard `shard` for `owner`, returning the new fencing token: any
    /// commit still carrying an older token fails, and one in flight
    /// finishes first (it holds the row).
    pub async fn acquire_lease(&self, shard: u32, owner: &str, expires_at: u64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO leases (shard, owner, token, expires_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (shard) DO UPDATE SET owner = EXCLUDED.owner, token = leases.token + 1, \
             expires_at = EXCLUDED.expires_at \
             RETURNING token",
        )
        .bind(i64::from(shard))
        .bind(owner)
        .bind(ms(expires_at))
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn try_lease(
        &self,
        shard: u32,
        owner: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "INSERT INTO leases (shard, owner, token, expires_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (shard) DO UPDATE SET \
               token = CASE WHEN leases.owner = $2 THEN leases.token ELSE leases.token + 1 END, \
               owner = $2, expires_at = $3 \
             WHERE leases.owner = $2 OR leases.expires_at <= $4 \
             RETURNING token",
        )
        .bind(i64::from(shard))
        .bind(owner)
        .bind(ms(expires_at))
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn release_lease(&self, shard: u32, owner: &str, token: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE leases SET expires_at = 0 WHERE shard = $1 AND owner = $2 AND token = $3",
        )
        .bind(i64::from(shard))
        .bind(owner)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn leases(&self) -> Result<Vec<LeaseRow>> {
        let rows = sqlx::query("SELECT shard, owner, token, expires_at FROM leases ORDER BY shard")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| LeaseRow {
                shard: r.get::<i64, _>(0) as u32,
                owner: r.get(1),
                token: r.get(2),
                expires_at: r.get::<i64, _>(3) as u64,
            })
            .collect())
    }

    pub async fn heartbeat(&self, m: &MemberRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO members (id, roles, started_at, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET roles = EXCLUDED.roles, expires_at = EXCLUDED.expires_at",
        )
        .bind(&m.id)
        .bind(&m.roles)
        .bind(ms(m.started_at))
        .bind(ms(m.expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn members(&self) -> Result<Vec<MemberRow>> {
        let rows = sqlx::query("SELECT id, roles, started_at, expires_at FROM members ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| MemberRow {
                id: r.get(0),
                roles: r.get(1),
                started_at: r.get::<i64, _>(2) as u64,
                expires_at: r.get::<i64, _>(3) as u64,
            })
            .collect())
    }

    pub async fn leave(&self, id: &str, before: u64) -> Result<()> {
        sqlx::query("DELETE FROM members WHERE id = $1 OR expires_at < $2")
            .bind(id)
            .bind(ms(before))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- flows ---------------------------------------------------------------

    pub async fn deploy(&self, d: &Deployment<'_>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO bundles (id, tenant, env, ir, deployed_at, sources) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT DO NOTHING",
        )
        .bind(d.bundle)
        .bind(d.tenant)
        .bind(d.env)
        .bind(d.ir)
        .bind(ms(d.now))
        .bind(d.sources)
        .execute(&mut *tx)
        .await?;
        for (name, version) in d.flows {
            sqlx::query("UPDATE flows SET head = false WHERE tenant = $1 AND name = $2 AND head")
                .bind(d.tenant)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO flows (tenant, name, version, bundle, deployed_at, head) \
                 VALUES ($1, $2, $3, $4, $5, true) \
                 ON CONFLICT (tenant, name, version) DO UPDATE SET head = true, \
                 bundle = EXCLUDED.bundle, deployed_at = EXCLUDED.deployed_at",
            )
            .bind(d.tenant)
            .bind(name)
            .bind(version)
            .bind(d.bundle)
            .bind(ms(d.now))
            .execute(&mut *tx)
            .await?;
            // Schedules made through the API follow their flow's head unless
            // pinned to a version.
            sqlx::query(
                "UPDATE schedules SET bundle = $1 WHERE tenant = $2 AND flow = $3 \
                 AND NOT declared AND version IS NULL",
            )
            .bind(d.bundle)
            .bind(d.tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        for (flow, rows) in d.schedules {
            replace_schedules(&mut tx, d.tenant, flow, rows).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn bundle_sources(&self, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar::<_, Option<Vec<u8>>>("SELECT sources FROM bundles WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    pub async fn bundle(&self, id: &str) -> Result<Option<(String, String, Vec<u8>)>> {
        Ok(
            sqlx::query_as("SELECT tenant, env, ir FROM bundles WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn flow(
        &self,
        tenant: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<FlowRow>> {
        let row = match version {
            Some(v) => sqlx::query(
                "SELECT tenant, name, version, bundle, deployed_at, head FROM flows \
                 WHERE tenant = $1 AND name = $2 AND version = $3",
            )
            .bind(tenant)
            .bind(name)
            .bind(v),
            None => sqlx::query(
                "SELECT tenant, name, version, bundle, deployed_at, head FROM flows \
                 WHERE tenant = $1 AND name = $2 AND head",
            )
            .bind(tenant)
            .bind(name),
        }
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(flow_row))
    }

    pub async fn flows(&self, tenant: Option<&str>) -> Result<Vec<FlowRow>> {
        let rows = match tenant {
            Some(t) => sqlx::query(
                "SELECT tenant, name, version, bundle, deployed_at, head FROM flows \
                 WHERE tenant = $1 ORDER BY name, deployed_at",
            )
            .bind(t),
            None => sqlx::query(
                "SELECT tenant, name, version, bundle, deployed_at, head FROM flows \
                 ORDER BY tenant, name, deployed_at",
            ),
        }
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(flow_row).collect())
    }

    // ---- tenants -------------------------------------------------------------

    pub async fn create_tenant(&self, t: &TenantRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO tenants (id, created_at, max_active_runs, max_starts_per_sec, allow_egress, history_retention_ms) \
             SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM purges WHERE tenant = $1) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&t.id)
        .bind(ms(t.created_at))
        .bind(t.max_active_runs)
        .bind(t.max_starts_per_sec)
        .bind(&t.allow_egress)
        .bind(t.history_retention_ms.map(ms))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn tenants(&self) -> Result<Vec<TenantRow>> {
        let rows = sqlx::query(
            "SELECT id, created_at, max_active_runs, max_starts_per_sec, allow_egress, history_retention_ms \
             FROM tenants ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(tenant_row).collect())
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<TenantRow>> {
        let row = sqlx::query(
            "SELECT id, created_at, max_active_runs, max_starts_per_sec, allow_egress, history_retention_ms \
             FROM tenants WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(tenant_row))
    }

    pub async fn set_tenant_egress(&self, tenant: &str, rules: &[String]) -> Result<bool> {
        let done = sqlx::query("UPDATE tenants SET allow_egress = $1 WHERE id = $2")
            .bind(rules)
            .bind(tenant)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_tenant_retention(&self, tenant: &str, ms_: Option<u64>) -> Result<bool> {
        let done = sqlx::query("UPDATE tenants SET history_retention_ms = $1 WHERE id = $2")
            .bind(ms_.map(ms))
            .bind(tenant)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- sweeping finished runs ------------------------------------------------

    /// One batch of the sweeper, in one transaction: the candidates through
    /// `runs_finished`, then, if the batch has room, `runs_failed` (locked,
    /// skipping runs another sweeper or a commit holds), then each per-run
    /// table's rows of them.
    pub async fn sweep_finished(
        &self,
        held_through: i64,
        finished_before: u64,
        failed_before: u64,
        limit: u32,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut runs: Vec<(String, String, i64)> = sqlx::query_as(SWEEP_CANDIDATES)
            .bind(ms(finished_before))
            .bind(held_through)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let room = i64::from(limit) - runs.len() as i64;
        if room > 0 {
            let failed: Vec<(String, String, i64)> = sqlx::query_as(SWEEP_FAILED_CANDIDATES)
                .bind(ms(failed_before))
                .bind(held_through)
                .bind(room)
                .fetch_all(&mut *tx)
                .await?;
            runs.extend(failed);
        }
        if runs.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let ids: Vec<&str> = runs.iter().map(|(id, _, _)| id.as_str()).collect();
        // Fan-out parents keep their results and runs the values they refer
        // to until the history lets them go.
        let mut with_rows = std::collections::HashSet::new();
        for table in super::KEPT_WITH_HISTORY {
            let found: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT DISTINCT run FROM {table} WHERE run = ANY($1)"
            ))
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
            with_rows.extend(found);
        }
        let kept: Vec<&(String, String, i64)> = runs
            .iter()
            .filter(|(id, _, _)| !super::is_fresh_id(id) || with_rows.contains(id))
            .collect();
        if !kept.is_empty() {
            sqlx::query(
                "INSERT INTO swept_runs (id, tenant, finished_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]) ON CONFLICT (id) DO NOTHING",
            )
            .bind(kept.iter().map(|(id, _, _)| id.as_str()).collect::<Vec<_>>())
            .bind(kept.iter().map(|(_, t, _)| t.as_str()).collect::<Vec<_>>())
            .bind(kept.iter().map(|(_, _, at)| *at).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        for (table, column) in super::PER_RUN_TABLES {
            if super::KEPT_WITH_HISTORY.contains(&table) {
                continue;
            }
            delete_where_in(&mut tx, table, column, &ids).await?;
        }
        tx.commit().await?;
        Ok(runs.len() as u64)
    }

    pub async fn swept_run(&self, id: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT tenant FROM swept_runs WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn forget_swept(&self, ids: &[&str]) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for table in super::KEPT_WITH_HISTORY.into_iter().chain(["swept_runs"]) {
            let column = if table == "swept_runs" { "id" } else { "run" };
            n += delete_where_in(&mut tx, table, column, ids).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    pub async fn expire_swept(&self, tenant: &str, before: u64, limit: u32) -> Result<u64> {
        // A range scan of `swept_runs_tenant`.
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM swept_runs WHERE tenant = $1 AND finished_at < $2 \
             ORDER BY finished_at LIMIT $3",
        )
        .bind(tenant)
        .bind(ms(before))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.forget_swept(&refs).await?;
        Ok(ids.len() as u64)
    }

    pub async fn per_run_rows(&self) -> Result<Vec<(&'static str, i64)>> {
        let mut out = Vec::new();
        for table in super::PER_RUN_TABLES
            .iter()
            .map(|(t, _)| *t)
            .chain(["swept_runs"])
        {
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&self.pool)
                .await?;
            out.push((table, n));
        }
        Ok(out)
    }

    // ---- purges --------------------------------------------------------------

    pub async fn begin_purge(&self, tenant: &str, hold: &PurgeHold) -> Result<PurgeBegun> {
        // Taken when there is none (and the tenant exists), when its
        // holder's lease ran out, or when it is ours already; the conflict
        // update's condition is judged on the row locked, so two processes
        // never both take one.
        let taken = sqlx::query(
            "INSERT INTO purges (tenant, started_at, owner, lease_until) \
             SELECT $1, $2, $3, $4 \
             WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1) \
             OR EXISTS (SELECT 1 FROM purges WHERE tenant = $1) \
             ON CONFLICT (tenant) DO UPDATE SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until \
             WHERE purges.owner IS NULL OR purges.owner = EXCLUDED.owner OR purges.lease_until < $2 \
             RETURNING 1",
        )
        .bind(tenant)
        .bind(ms(hold.now))
        .bind(&hold.owner)
        .bind(ms(hold.until))
        .fetch_optional(&self.pool)
        .await?;
        if taken.is_some() {
            return Ok(PurgeBegun::Held);
        }
        let holder: Option<(Option<String>, i64)> =
            sqlx::query_as("SELECT owner, lease_until FROM purges WHERE tenant = $1")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match holder {
            Some((owner, until)) => PurgeBegun::Busy {
                owner: owner.unwrap_or_default(),
                until: until.max(0) as u64,
            },
            None => PurgeBegun::NoTenant,
        })
    }

    pub async fn hold_purge(&self, tenant: &str, hold: &PurgeHold) -> Result<bool> {
        let done =
            sqlx::query("UPDATE purges SET lease_until = $3 WHERE tenant = $1 AND owner = $2")
                .bind(tenant)
                .bind(&hold.owner)
                .bind(ms(hold.until))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn end_purge(&self, tenant: &str, owner: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM purges WHERE tenant = $1 AND owner = $2")
            .bind(tenant)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn pending_purges(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT tenant FROM purges ORDER BY started_at")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn abandoned_purges(&self, now: u64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT tenant FROM purges WHERE lease_until < $1 ORDER BY started_at",
        )
        .bind(ms(now))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn gone_tenants(&self, tenants: &[&str]) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT t FROM unnest($1::text[]) AS t \
             WHERE NOT EXISTS (SELECT 1 FROM tenants WHERE id = t) \
                OR EXISTS (SELECT 1 FROM purges WHERE tenant = t)",
        )
        .bind(tenants)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn purge_tenant(&self, tenant: &str, owner: &str) -> Result<Option<u64>> {
        let mut tx = self.pool.begin().await?;
        // The purge's record stays locked to the commit: it cannot be taken
        // over (nor ended) while these rows go.
        let held: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM purges WHERE tenant = $1 AND owner = $2 FOR UPDATE")
                .bind(tenant)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?;
        if held.is_none() {
            return Ok(None);
        }
        let mut n = 0;
        // Every run's rows (its own and those swept runs left), the runs
        // last, then the tenant's other rows, the tenant last.
        let per_run = super::PER_RUN_TABLES.iter().flat_map(|(table, column)| {
            [
                format!(
                    "DELETE FROM {table} WHERE {column} IN (SELECT id FROM swept_runs WHERE tenant = $1)"
                ),
                format!(
                    "DELETE FROM {table} WHERE {column} IN (SELECT id FROM runs WHERE tenant = $1)"
                ),
            ]
        });
        let rest = [
            "DELETE FROM swept_runs WHERE tenant = $1",
            "DELETE FROM run_values WHERE tenant = $1",
            "DELETE FROM stored_values WHERE tenant = $1",
            "DELETE FROM approvals WHERE tenant = $1",
            "DELETE FROM registry_uses WHERE tenant = $1",
            "DELETE FROM registry WHERE tenant = $1",
            "DELETE FROM schedules WHERE tenant = $1",
            "DELETE FROM flows WHERE tenant = $1",
            "DELETE FROM bundles WHERE tenant = $1",
            "DELETE FROM tokens WHERE tenant = $1",
            "DELETE FROM tenants WHERE id = $1",
        ]
        .map(String::from);
        for sql in per_run.chain(rest) {
            n += sqlx::query(&sql)
                .bind(tenant)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(Some(n))
    }

    // ---- tokens --------------------------------------------------------------

    pub async fn insert_token(&self, t: &TokenRow) -> Result<()> {
        insert_token(t).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn token(&self, hash: &str) -> Result<Option<TokenRow>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(token_row))
    }

    pub async fn token_by_id(&self, id: &str) -> Result<Option<TokenRow>> {
        let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(token_row))
    }

    pub async fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenRow>> {
        let owner = match tenant {
            Some(_) => "tenant = $1",
            None => "tenant IS NULL",
        };
        let sql =
            format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE {owner} ORDER BY created_at, id");
        let mut q = sqlx::query(&sql);
        if let Some(t) = tenant {
            q = q.bind(t);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(token_row).collect())
    }

    pub async fn revoke_token(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM tokens WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn rotate_token(
        &self,
        old: &str,
        old_until: Option<u64>,
        new: &TokenRow,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = match old_until {
            None => sqlx::query("DELETE FROM tokens WHERE id = $1").bind(old),
            Some(t) => sqlx::query(
                "UPDATE tokens SET expires_at = LEAST(coalesce(expires_at, $1), $1) WHERE id = $2",
            )
            .bind(ms(t))
            .bind(old),
        }
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_token(new).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn admin_token_count(&self, now: u64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM tokens WHERE tenant IS NULL AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(ms(now))
        .fetch_one(&self.pool)
        .await?)
    }

    // ---- approvals -----------------------------------------------------------

    pub async fn approvals(
        &self,
        tenant: Option<&str>,
        pending_only: bool,
    ) -> Result<Vec<ApprovalRow>> {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE true"
        ));
        if let Some(t) = tenant {
            q.push(" AND tenant = ").push_bind(t);
        }
        if pending_only {
            q.push(" AND decided_at IS NULL");
        }
        q.push(" ORDER BY requested_at LIMIT 1000");
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.into_iter().map(approval_row).collect()
    }

    pub async fn approval(&self, run: &str, step: &str) -> Result<Option<ApprovalRow>> {
        let row = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE run = $1 AND step = $2 \
             ORDER BY attempt DESC LIMIT 1"
        ))
        .bind(run)
        .bind(step)
        .fetch_optional(&self.pool)
        .await?;
        row.map(approval_row).transpose()
    }

    // ---- registry ------------------------------------------------------------

    /// Registers the next version of `name` under a lock of that name, so
    /// two processes never count to the same version.
    pub async fn register(
        &self,
        e: &NewEntry<'_>,
        make_entry: impl FnOnce(i64) -> serde_json::Value,
    ) -> Result<RegistryRow> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(LOCK_REGISTRY)
            .bind(format!("{}\n{}\n{}", e.tenant, e.kind, e.name))
            .execute(&mut *tx)
            .await?;
        let existing = sqlx::query(&format!(
            "SELECT {REGISTRY_COLUMNS} FROM registry WHERE key = $1"
        ))
        .bind(e.key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = existing {
            tx.rollback().await?;
            return registry_row(r);
        }
        // A call carried out while its tenant was purged registers nothing.
        let live: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM tenants WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM purges WHERE tenant = $1)",
        )
        .bind(e.tenant)
        .fetch_optional(&mut *tx)
        .await?;
        if live.is_none() {
            tx.rollback().await?;
            return Err(Error::Conflict(format!(
                "tenant `{}` does not exist or is being purged",
                e.tenant
            )));
        }
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT max(version) FROM registry WHERE tenant = $1 AND kind = $2 AND name = $3",
        )
        .bind(e.tenant)
        .bind(e.kind)
        .bind(e.name)
        .fetch_one(&mut *tx)
        .await?;
        let version = last.unwrap_or(0) + 1;
        let entry = make_entry(version);
        sqlx::query(
            "INSERT INTO registry (tenant, kind, name, version, entry, run, step, key, inputs, registered_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(e.tenant)
        .bind(e.kind)
        .bind(e.name)
        .bind(version)
        .bind(stored_json(&entry))
        .bind(e.run)
        .bind(e.step)
        .bind(e.key)
        .bind(stored_json(e.inputs))
        .bind(ms(e.now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RegistryRow {
            tenant: e.tenant.into(),
            kind: e.kind.into(),
            name: e.name.into(),
            version,
            entry,
            run: e.run.into(),
            step: e.step.into(),
            inputs: e.inputs.clone(),
            registered_at: e.now,
        })
    }

    pub async fn registry_set_stage(
        &self,
        tenant: &str,
        kind: &str,
        name: &str,
        version: i64,
        stage: &str,
    ) -> Result<Option<serde_json::Value>> {
        let mut tx = self.pool.begin().await?;
        let entry: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT entry FROM registry WHERE tenant = $1 AND kind = $2 AND name = $3 AND version = $4 \
             FOR UPDATE",
        )
        .bind(tenant)
        .bind(kind)
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(entry) = entry else {
            tx.rollback().await?;
            return Ok(None);
        };
        let mut entry = json("registry", &entry)?;
        if let Some(m) = entry.as_object_mut() {
            m.insert("stage".into(), serde_json::Value::String(stage.into()));
        }
        sqlx::query(
            "UPDATE registry SET entry = $1 WHERE tenant = $2 AND kind = $3 AND name = $4 AND version = $5",
        )
        .bind(stored_json(&entry))
        .bind(tenant)
        .bind(kind)
        .bind(name)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(entry))
    }

    pub async fn record_registry_use(&self, u: &RegistryUse<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO registry_uses (key, tenant, kind, name, version, run, step, action, used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (key) DO NOTHING",
        )
        .bind(u.key)
        .bind(u.tenant)
        .bind(u.kind)
        .bind(u.name)
        .bind(u.version)
        .bind(u.run)
        .bind(u.step)
        .bind(u.action)
        .bind(u.at as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn registry_uses(
        &self,
        tenant: &str,
        kind: &str,
        name: &str,
        version: i64,
        after: Option<(u64, String)>,
        limit: u32,
    ) -> Result<Vec<RegistryUseRow>> {
        let q = match &after {
            None => sqlx::query("SELECT key, run, step, action, used_at FROM registry_uses WHERE tenant = $1 AND kind = $2 AND name = $3 AND version = $4 ORDER BY used_at, key LIMIT $5")
                .bind(tenant)
                .bind(kind)
                .bind(name)
                .bind(version),
            Some((at, key)) => sqlx::query("SELECT key, run, step, action, used_at FROM registry_uses WHERE tenant = $1 AND kind = $2 AND name = $3 AND version = $4 AND (used_at, key) > ($5, $6) ORDER BY used_at, key LIMIT $7")
                .bind(tenant)
                .bind(kind)
                .bind(name)
                .bind(version)
                .bind(*at as i64)
                .bind(key),
        };
        let rows = q.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| RegistryUseRow {
                key: r.get(0),
                run: r.get(1),
                step: r.get(2),
                action: r.get(3),
                used_at: r.get::<i64, _>(4) as u64,
            })
            .collect())
    }

    pub async fn registry(
        &self,
        tenant: &str,
        kind: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<RegistryRow>> {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {REGISTRY_COLUMNS} FROM registry WHERE tenant = "
        ));
        q.push_bind(tenant);
        if let Some(k) = kind {
            q.push(" AND kind = ").push_bind(k);
        }
        if let Some(n) = name {
            q.push(" AND name = ").push_bind(n);
        }
        q.push(" ORDER BY kind, name, version LIMIT 1000");
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.into_iter().map(registry_row).collect()
    }

    // ---- schedules -----------------------------------------------------------

    pub async fn schedules(&self, tenant: Option<&str>) -> Result<Vec<ScheduleRow>> {
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("SELECT {SCHEDULE_COLUMNS} FROM schedules"));
        if let Some(t) = tenant {
            q.push(" WHERE tenant = ").push_bind(t);
        }
        q.push(" ORDER BY tenant, flow, position");
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(schedule_row).collect())
    }

    pub async fn schedule(&self, id: &str) -> Result<Option<ScheduleRow>> {
        let row = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(schedule_row))
    }

    pub async fn claim_schedules(
        &self,
        partition: u32,
        now: u64,
        claim_until: u64,
        limit: u32,
    ) -> Result<Vec<ScheduleRow>> {
        let rows = sqlx::query(&format!("{CLAIM_SCHEDULES} RETURNING {SCHEDULE_COLUMNS}"))
            .bind(ms(claim_until))
            .bind(i64::from(partition))
            .bind(ms(now))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(schedule_row).collect())
    }

    pub async fn update_schedule(
        &self,
        id: &str,
        handled_through: Option<u64>,
        last_start: Option<u64>,
        next_due: Option<u64>,
        buffered: Option<u64>,
    ) -> Result<()> {
        self.update_schedules(&[ScheduleUpdate {
            id: id.into(),
            handled_through,
            last_start,
            next_due,
            buffered,
        }])
        .await
    }

    pub async fn set_schedule_paused(
        &self,
        id: &str,
        paused: bool,
        now: u64,
        next_due: Option<u64>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE schedules SET paused = $1, next_due = CASE WHEN $1 THEN next_due ELSE $2 END, \
             last_fire = CASE WHEN $1 THEN last_fire ELSE $3 END WHERE id = $4",
        )
        .bind(paused)
        .bind(next_due.map(ms))
        .bind(ms(now))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Adds a schedule made through the API unless its tenant has
    /// `max_per_tenant` already: counted under a lock of the tenant's
    /// schedules, so two processes adding at once cannot both pass.
    pub async fn insert_schedule(&self, row: &ScheduleRow, max_per_tenant: u64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(LOCK_SCHEDULES)
            .bind(&row.tenant)
            .execute(&mut *tx)
            .await?;
        let have: i64 = sqlx::query_scalar("SELECT count(*) FROM schedules WHERE tenant = $1")
            .bind(&row.tenant)
            .fetch_one(&mut *tx)
            .await?;
        if have as u64 >= max_per_tenant {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_schedule_rows(&mut tx, std::slice::from_ref(row)).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn insert_schedules(&self, rows: &[ScheduleRow]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Bounded statements: a tool may add a million at once.
        for piece in rows.chunks(10_000) {
            insert_schedule_rows(&mut tx, piece).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn redefine_schedule(&self, row: &ScheduleRow) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE schedules SET bundle = $1, version = $2, spec = $3, key = $4, paused = $5, \
             last_fire = $6, next_due = $7, buffered = NULL, claimed_until = 0 WHERE id = $8",
        )
        .bind(&row.bundle)
        .bind(&row.version)
        .bind(&row.spec)
        .bind(&row.key)
        .bind(row.paused)
        .bind(row.handled_through.map(ms))
        .bind(row.next_due.map(ms))
        .bind(&row.id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delete_schedule(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM schedules WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One page in id order: each filter is a range scan of an index that
    /// ends with the id (`schedules_key`, `schedules_flow`, the primary key).
    pub async fn schedule_page(&self, q: &ScheduleQuery) -> Result<Vec<ScheduleRow>> {
        let mut b: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE true"
        ));
        if let Some(t) = &q.tenant {
            b.push(" AND tenant = ").push_bind(t);
        }
        if let Some(k) = &q.key {
            b.push(" AND key = ").push_bind(k);
        }
        if let Some(f) = &q.flow {
            b.push(" AND flow = ").push_bind(f);
        }
        if let Some(a) = &q.after {
            b.push(" AND id > ").push_bind(a);
        }
        b.push(" ORDER BY id LIMIT ").push_bind(i64::from(q.limit));
        let rows = b.build().fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(schedule_row).collect())
    }

    /// Records what a loader did with many schedules in one statement and
    /// releases their claims. Updates of one schedule are merged first, as if
    /// applied in order (one statement changes a row once).
    pub async fn update_schedules(&self, updates: &[ScheduleUpdate]) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut merged: Vec<ScheduleUpdate> = Vec::with_capacity(updates.len());
        let mut at: HashMap<&str, usize> = HashMap::with_capacity(updates.len());
        for u in updates {
            match at.get(u.id.as_str()) {
                Some(&i) => {
                    let m = &mut merged[i];
                    m.last_start = m.last_start.max(u.last_start);
                    m.handled_through = u.handled_through;
                    m.next_due = u.next_due;
                    m.buffered = u.buffered;
                }
                None => {
                    at.insert(u.id.as_str(), merged.len());
                    merged.push(u.clone());
                }
            }
        }
        sqlx::query(UPDATE_SCHEDULES)
            .bind(merged.iter().map(|u| u.id.as_str()).collect::<Vec<_>>())
            .bind(
                merged
                    .iter()
                    .map(|u| u.handled_through.map(ms))
                    .collect::<Vec<_>>(),
            )
            .bind(
                merged
                    .iter()
                    .map(|u| u.last_start.map(ms))
                    .collect::<Vec<_>>(),
            )
            .bind(
                merged
                    .iter()
                    .map(|u| u.next_due.map(ms))
                    .collect::<Vec<_>>(),
            )
            .bind(
                merged
                    .iter()
                    .map(|u| u.buffered.map(ms))
                    .collect::<Vec<_>>(),
            )
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn active_runs_of_schedules(
        &self,
        schedules: &[&str],
    ) -> Result<Vec<(String, String)>> {
        if schedules.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as(
            "SELECT schedule, id FROM runs WHERE status IN ('created', 'running') AND schedule = ANY($1)",
        )
        .bind(schedules)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn existing_runs(&self, runs: &[&str]) -> Result<Vec<String>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        // A run swept from the store after it finished existed too.
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE id = ANY($1) UNION SELECT id FROM swept_runs WHERE id = ANY($1)",
        )
        .bind(runs)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn next_schedule_due(&self, partition: u32, now: u64) -> Result<Option<u64>> {
        let t: Option<i64> = sqlx::query_scalar(NEXT_SCHEDULE_DUE)
            .bind(i64::from(partition))
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await?;
        Ok(t.map(|t| t as u64))
    }

    // ---- settings ------------------------------------------------------------

    pub async fn setting_or_insert(&self, key: &str, value: &[u8]) -> Result<Vec<u8>> {
        // The insert's answer when it inserted, else the row that was there
        // (another process's insert may have won).
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        let stored = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(stored)
    }
}

/// Deletes the rows of `table` whose `column` is one of `ids`, in one
/// statement; answers how many. The table names are constants.
async fn delete_where_in(
    conn: &mut sqlx::PgConnection,
    table: &str,
    column: &str,
    ids: &[&str],
) -> sqlx::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(
        sqlx::query(&format!("DELETE FROM {table} WHERE {column} = ANY($1)"))
            .bind(ids)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
    )
}

/// Replaces the declared schedules of `flow` with `rows`, in the deploy's
/// transaction; schedules made through the API stay.
async fn replace_schedules(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    tenant: &str,
    flow: &str,
    rows: &[ScheduleRow],
) -> Result<()> {
    let keep: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    sqlx::query(
        "DELETE FROM schedules WHERE tenant = $1 AND flow = $2 AND declared AND NOT (id = ANY($3))",
    )
    .bind(tenant)
    .bind(flow)
    .bind(&keep)
    .execute(&mut **tx)
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let r = last_per_key(rows, |r| r.id.as_str());
    sqlx::query(
        "INSERT INTO schedules (id, tenant, flow, bundle, position, spec, paused, last_fire, next_due, buffered, partition, last_start) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bytea[], \
           $7::boolean[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[]) \
         ON CONFLICT (id) DO UPDATE SET bundle = EXCLUDED.bundle, position = EXCLUDED.position, \
           spec = EXCLUDED.spec, next_due = EXCLUDED.next_due",
    )
    .bind(r.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.tenant.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.flow.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.bundle.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| i64::from(r.position)).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.spec.as_slice()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.paused).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.handled_through.map(ms)).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.next_due.map(ms)).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.buffered.map(ms)).collect::<Vec<_>>())
    .bind(r.iter().map(|r| i64::from(r.partition)).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.last_start.map(ms)).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts schedule rows in one statement.
async fn insert_schedule_rows(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    rows: &[ScheduleRow],
) -> Result<()> {
    let r = rows;
    sqlx::query(&format!(
        "INSERT INTO schedules ({SCHEDULE_COLUMNS}) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bytea[], \
           $7::boolean[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], \
           $13::boolean[], $14::text[], $15::text[], $16::bigint[])"
    ))
    .bind(r.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.tenant.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.flow.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.bundle.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| i64::from(r.position)).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.spec.as_slice()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.paused).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.handled_through.map(ms)).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.next_due.map(ms)).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.buffered.map(ms)).collect::<Vec<_>>())
    .bind(r.iter().map(|r| i64::from(r.partition)).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.last_start.map(ms)).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.declared).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.key.as_deref()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.version.as_deref()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.created_at.map(ms)).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn insert_token(t: &TokenRow) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(
        "INSERT INTO tokens (id, hash, tenant, name, last4, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&t.id)
    .bind(&t.hash)
    .bind(&t.tenant)
    .bind(&t.name)
    .bind(&t.last4)
    .bind(ms(t.created_at))
    .bind(t.expires_at.map(ms))
}

fn loaded_run(r: PgRow) -> (RunMeta, String, Vec<u8>) {
    (
        RunMeta {
            id: r.get(0),
            tenant: r.get(1),
            bundle: r.get(2),
            schedule: r.get(3),
            parent: r.get(4),
            key: r.get(8),
            created_at: r.get::<i64, _>(5) as u64,
        },
        r.get(6),
        r.get(7),
    )
}

fn event_row(r: PgRow) -> EventRow {
    EventRow {
        pos: r.get(0),
        run: r.get(1),
        seq: r.get::<i64, _>(2) as u64,
        id: r.get(3),
        at: r.get::<i64, _>(4) as u64,
        status: r.get(5),
        body: r.get(6),
    }
}

fn flow_row(r: PgRow) -> FlowRow {
    FlowRow {
        tenant: r.get(0),
        name: r.get(1),
        version: r.get(2),
        bundle: r.get(3),
        deployed_at: r.get::<i64, _>(4) as u64,
        head: r.get(5),
    }
}

fn token_row(r: PgRow) -> TokenRow {
    TokenRow {
        id: r.get(0),
        hash: r.get(1),
        tenant: r.get(2),
        name: r.get(3),
        last4: r.get(4),
        created_at: r.get::<i64, _>(5) as u64,
        expires_at: r.get::<Option<i64>, _>(6).map(|t| t as u64),
    }
}

fn tenant_row(r: PgRow) -> TenantRow {
    TenantRow {
        id: r.get(0),
        created_at: r.get::<i64, _>(1) as u64,
        max_active_runs: r.get(2),
        max_starts_per_sec: r.get(3),
        allow_egress: r.get(4),
        history_retention_ms: r.get::<Option<i64>, _>(5).map(|ms| ms.max(0) as u64),
    }
}

fn schedule_row(r: PgRow) -> ScheduleRow {
    ScheduleRow {
        id: r.get(0),
        tenant: r.get(1),
        flow: r.get(2),
        bundle: r.get(3),
        position: r.get::<i64, _>(4) as u32,
        spec: r.get(5),
        paused: r.get(6),
        handled_through: r.get::<Option<i64>, _>(7).map(|t| t as u64),
        next_due: r.get::<Option<i64>, _>(8).map(|t| t as u64),
        buffered: r.get::<Option<i64>, _>(9).map(|t| t as u64),
        partition: r.get::<i64, _>(10) as u32,
        last_start: r.get::<Option<i64>, _>(11).map(|t| t as u64),
        declared: r.get(12),
        key: r.get(13),
        version: r.get(14),
        created_at: r.get::<Option<i64>, _>(15).map(|t| t as u64),
    }
}

fn approval_row(r: PgRow) -> Result<ApprovalRow> {
    let request: Vec<u8> = r.get(5);
    let decision: Option<Vec<u8>> = r.get(9);
    Ok(ApprovalRow {
        run: r.get(0),
        step: r.get(1),
        attempt: r.get::<i64, _>(2) as u32,
        tenant: r.get(3),
        contract: r.get(4),
        request: json("approvals", &request)?,
        requested_at: r.get::<i64, _>(6) as u64,
        expires_at: r.get::<Option<i64>, _>(7).map(|t| t as u64),
        decided_at: r.get::<Option<i64>, _>(8).map(|t| t as u64),
        decision: decision.map(|d| json("approvals", &d)).transpose()?,
    })
}

fn registry_row(r: PgRow) -> Result<RegistryRow> {
    let entry: Vec<u8> = r.get(4);
    let inputs: Vec<u8> = r.get(7);
    Ok(RegistryRow {
        tenant: r.get(0),
        kind: r.get(1),
        name: r.get(2),
        version: r.get(3),
        entry: json("registry", &entry)?,
        run: r.get(5),
        step: r.get(6),
        inputs: json("registry", &inputs)?,
        registered_at: r.get::<i64, _>(8) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_key_keeps_the_last_or_the_first() {
        let items = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)];
        let last: Vec<_> = last_per_key(&items, |i| i.0).into_iter().copied().collect();
        assert_eq!(last, [("a", 3), ("c", 4), ("b", 5)]);
        let first: Vec<_> = first_per_key(&items, |i| i.0)
            .into_iter()
            .copied()
            .collect();
        assert_eq!(first, [("a", 1), ("b", 2), ("c", 4)]);
    }
}
