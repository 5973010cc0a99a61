//! A PostgreSQL schema of its own for each test, on the machine's server
//! (`EFLOW_TEST_POSTGRES`, else `postgres://postgres@127.0.0.1:5432/test`),
//! dropped when the test ends, passed or not. Outside CI an unreachable server
//! skips the test with the reason printed; with `CI` set it fails it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eflow_runtime::clock::{Clock, SystemClock};
use sqlx::Connection;

pub const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/test";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The server the tests use.
pub fn server() -> String {
    std::env::var("EFLOW_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_SERVER.to_string())
}

/// A schema made for one test; dropped (with everything in it) on drop.
#[derive(Debug)]
pub struct Schema {
    pub name: String,
    /// The server's URL with this schema as every connection's `search_path`.
    pub url: String,
    server: String,
}

impl Schema {
    /// Makes a fresh schema named after `what`; `None` (with the reason on
    /// stderr) when the server cannot be reached and `CI` is not set.
    pub async fn create(what: &str) -> Option<Schema> {
        let server = server();
        let connect = tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::PgConnection::connect(&server),
        )
        .await;
        let mut conn = match connect {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return unreachable(&server, &e.to_string()),
            Err(_) => return unreachable(&server, "no answer in 10 s"),
        };
        let name = format!(
            "eflow_t_{}_{}_{}_{}",
            what.to_lowercase(),
            std::process::id(),
            SystemClock.now_ms(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test's schema");
        let _ = conn.close().await;
        let sep = if server.contains('?') { '&' } else { '?' };
        Some(Schema {
            url: format!("{server}{sep}options[search_path]={name}"),
            name,
            server,
        })
    }
}

fn unreachable(server: &str, why: &str) -> Option<Schema> {
    super::service_unreachable("PostgreSQL", server, why, "start it", "EFLOW_TEST_POSTGRES")
}

impl Drop for Schema {
    fn drop(&mut self) {
        // On a thread of its own with its own runtime: this runs inside a
        // test's runtime, and while a failed test unwinds.
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&server)
                    .await
                    .map_err(|e| e.to_string())?;
                // A connection the test left open in a transaction would
                // hold the drop up forever: end the sessions holding locks
                // on this schema's tables first.
                sqlx::query(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
                     JOIN pg_class c ON c.oid = l.relation \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
                )
                .bind(&name)
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<_, String>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop the test's schema {}: {e}", self.name);
        }
    }
}
