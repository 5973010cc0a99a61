//! A NATS JetStream prefix of its own for each test, on the machine's server
//! (`EFLOW_TEST_NATS`, else `nats://127.0.0.1:4222`): its streams are deleted
//! when the test ends, passed or not. Outside CI an unreachable server skips
//! the test with the reason printed; with `CI` set it fails it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eflow_runtime::clock::{Clock, SystemClock};

pub const DEFAULT_SERVER: &str = "nats://127.0.0.1:4222";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The server the tests use.
pub fn server() -> String {
    std::env::var("EFLOW_TEST_NATS").unwrap_or_else(|_| DEFAULT_SERVER.to_string())
}

/// A prefix made for one test; its streams are deleted on drop.
#[derive(Debug)]
pub struct Prefix {
    pub name: String,
    /// The bus URL with this prefix.
    pub url: String,
    server: String,
}

impl Prefix {
    /// A fresh prefix named after `what`; `None` (with the reason on stderr)
    /// when the server cannot be reached and `CI` is not set.
    pub async fn create(what: &str) -> Option<Prefix> {
        let server = server();
        let connect = tokio::time::timeout(
            Duration::from_secs(10),
            async_nats::connect(server.as_str()),
        )
        .await;
        match connect {
            Ok(Ok(client)) => drop(client),
            Ok(Err(e)) => return unreachable(&server, &e.to_string()),
            Err(_) => return unreachable(&server, "no answer in 10 s"),
        }
        let name = format!(
            "eflow_t_{}_{}_{}_{}",
            what.to_lowercase(),
            std::process::id(),
            SystemClock.now_ms(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Some(Prefix {
            url: format!("{server}?prefix={name}"),
            name,
            server,
        })
    }

    /// A JetStream context on the test's server, to look at the streams.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(self.server.as_str())
            .await
            .expect("connect to NATS");
        async_nats::jetstream::new(client)
    }
}

fn unreachable(server: &str, why: &str) -> Option<Prefix> {
    super::service_unreachable(
        "NATS",
        server,
        why,
        "start nats-server -js",
        "EFLOW_TEST_NATS",
    )
}

impl Drop for Prefix {
    fn drop(&mut self) {
        // On a thread of its own with its own runtime: this runs inside a
        // test's runtime, and while a failed test unwinds.
        let (server, name) = (self.server.clone(), self.name.clone());
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let client = async_nats::connect(server.as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                let js = async_nats::jetstream::new(client);
                for stream in [format!("{name}_in"), format!("{name}_events")] {
                    // A test that failed before it made a stream has none to delete.
                    let _ = js.delete_stream(&stream).await;
                }
                Ok::<_, String>(())
            })
        })
        .join();
        if let Ok(Err(e)) = deleted {
            eprintln!("could not delete the test's streams {}_*: {e}", self.name);
        }
    }
}
