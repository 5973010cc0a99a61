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

/// Each measure is taken in windows of this length and its median window
/// kept: on a shared machine one window can be slowed by other work.
const WINDOW: Duration = Duration::from_millis(250);
const FSYNC_WINDOWS: usize = 4;
const SQLITE_WINDOWS: usize = 8;
/// Bytes of one row: what `eflow bench` wrote per transition (state, event,
/// outbox row; BENCHMARKS.md), so a row stands for a transition.
pub const ROW_BYTES: usize = 580;
/// Rows per SQLite transaction: the engine commits its transitions in batches.
pub const BATCH_ROWS: usize = 100;

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// `write` + `fdatasync` of 512 bytes per second, one after another
    /// (the median of 4 windows of 250 ms; the slowest and fastest beside it).
    pub fsync_per_sec: f64,
    pub fsync_per_sec_range: [f64; 2],
    /// Rows of `sqlite_row_bytes` committed per second, `sqlite_batch_rows`
    /// to a transaction, WAL journal, `synchronous` as the store's (the
    /// median of 8 windows of 250 ms; the slowest and fastest beside it).
    pub sqlite_rows_per_sec: f64,
    pub sqlite_rows_per_sec_range: [f64; 2],
    pub sqlite_row_bytes: usize,
    pub sqlite_batch_rows: usize,
    pub sqlite_synchronous: String,
}

impl Baseline {
    /// Measures in `dir` (the bench's data directory), removing what it wrote.
    pub async fn measure(dir: &Path, durability: Durability) -> anyhow::Result<Baseline> {
        let fsync = {
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || fsync_rate(&dir)).await??
        };
        let sqlite = sqlite_rate(dir, durability).await?;
        Ok(Baseline {
            fsync_per_sec: fsync.median(),
            fsync_per_sec_range: fsync.range(),
            sqlite_rows_per_sec: sqlite.median(),
            sqlite_rows_per_sec_range: sqlite.range(),
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

/// Rates measured window by window.
struct Windows {
    rates: Vec<f64>,
    count: u64,
    began: Instant,
}

impl Windows {
    fn start() -> Windows {
        Windows {
            rates: Vec::new(),
            count: 0,
            began: Instant::now(),
        }
    }

    /// Counts `n` more; `true` when the window is full and a new one begins.
    fn add(&mut self, n: u64) -> bool {
        self.count += n;
        let secs = self.began.elapsed();
        if secs < WINDOW {
            return false;
        }
        self.rates.push(self.count as f64 / secs.as_secs_f64());
        self.count = 0;
        self.began = Instant::now();
        true
    }

    fn sorted(&self) -> Vec<f64> {
        let mut r = self.rates.clone();
        r.sort_by(f64::total_cmp);
        r
    }

    fn median(&self) -> f64 {
        super::percentile(&self.sorted(), 0.5)
    }

    fn range(&self) -> [f64; 2] {
        let r = self.sorted();
        [
            r.first().copied().unwrap_or(0.0),
            r.last().copied().unwrap_or(0.0),
        ]
    }
}

fn fsync_rate(dir: &Path) -> anyhow::Result<Windows> {
    let path = dir.join("baseline-fsync");
    let mut file = std::fs::File::create(&path)?;
    let block = [7u8; 512];
    let mut w = Windows::start();
    while w.rates.len() < FSYNC_WINDOWS {
        file.write_all(&block)?;
        file.sync_data()?;
        w.add(1);
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(w)
}

async fn sqlite_rate(dir: &Path, durability: Durability) -> anyhow::Result<Windows> {
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
    let mut w = Windows::start();
    let mut n = 0u64;
    while w.rates.len() < SQLITE_WINDOWS {
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
        w.add(BATCH_ROWS as u64);
    }
    conn.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("baseline.db{suffix}")));
    }
    Ok(w)
}
