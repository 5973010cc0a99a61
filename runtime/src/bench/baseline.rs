//! The machine's baseline, measured by every `eflow bench` before its
//! workload, in the same data directory: how often the disk completes an
//! fsync, and how many rows of a transition's size SQLite commits per second
//! in batches at the store's own durability settings. A bench figure alone
//! does not travel between machines; its ratio to these does.

use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

use crate::store::Durability;

/// How long each of the two measures runs.
const SPAN: Duration = Duration::from_secs(1);
/// Bytes of one row: what `eflow bench` wrote per transition (state, event,
/// outbox row; BENCHMARKS.md), so a row stands for a transition.
pub const ROW_BYTES: usize = 580;
/// Rows per SQLite transaction: the engine commits its transitions in batches.
pub const BATCH_ROWS: usize = 100;

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// `write` + `fdatasync` of 512 bytes per second, one after another.
    pub fsync_per_sec: f64,
    /// Rows of `sqlite_row_bytes` committed per second, `sqlite_batch_rows`
    /// to a transaction, WAL journal, `synchronous` as the store's.
    pub sqlite_rows_per_sec: f64,
    pub sqlite_row_bytes: usize,
    pub sqlite_batch_rows: usize,
    pub sqlite_synchronous: String,
}

impl Baseline {
    /// Measures in `dir` (the bench's data directory), removing what it wrote.
    pub async fn measure(dir: &Path, durability: Durability) -> anyhow::Result<Baseline> {
        let fsync_per_sec = {
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || fsync_rate(&dir)).await??
        };
        let sqlite_rows_per_sec = sqlite_rate(dir, durability).await?;
        Ok(Baseline {
            fsync_per_sec,
            sqlite_rows_per_sec,
            sqlite_row_bytes: ROW_BYTES,
            sqlite_batch_rows: BATCH_ROWS,
            sqlite_synchronous: synchronous(durability).to_string(),
        })
    }

    /// `per_sec` for each 1,000 baseline SQLite rows per second.
    pub fn ratio(&self, per_sec: f64) -> f64 {
        per_sec / (self.sqlite_rows_per_sec / 1000.0).max(f64::MIN_POSITIVE)
    }
}

fn synchronous(durability: Durability) -> &'static str {
    match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    }
}

fn fsync_rate(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("baseline-fsync");
    let mut file = std::fs::File::create(&path)?;
    let block = [7u8; 512];
    let began = Instant::now();
    let mut n = 0u64;
    while began.elapsed() < SPAN {
        file.write_all(&block)?;
        file.sync_data()?;
        n += 1;
    }
    let secs = began.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(n as f64 / secs)
}

async fn sqlite_rate(dir: &Path, durability: Durability) -> anyhow::Result<f64> {
    let path = dir.join("baseline.db");
    // The store's pragmas (store/sqlite.rs), through the same driver.
    let mut conn = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        })
        .pragma("temp_store", "memory")
        .pragma("cache_size", "-32768")
        .connect()
        .await?;
    sqlx::query("CREATE TABLE rows (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        .execute(&mut conn)
        .await?;
    let body = vec![42u8; ROW_BYTES];
    let began = Instant::now();
    let mut n = 0u64;
    while began.elapsed() < SPAN {
        let mut tx = conn.begin().await?;
        for _ in 0..BATCH_ROWS {
            sqlx::query("INSERT INTO rows (id, body) VALUES (?, ?)")
                .bind(n as i64)
                .bind(&body)
                .execute(&mut *tx)
                .await?;
            n += 1;
        }
        tx.commit().await?;
    }
    let secs = began.elapsed().as_secs_f64();
    conn.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("baseline.db{suffix}")));
    }
    Ok(n as f64 / secs)
}
