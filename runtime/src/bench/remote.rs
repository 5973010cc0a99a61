//! The remote system of `eflow bench --connector http`, run as the hidden
//! `eflow bench-remote` in a child process so its CPU is not the server's.
//!
//! It speaks the `http` connector's protocol (docs/connectors.md): each
//! invocation POSTed to `/invoke`, or many at once to `/batch` (the binding's
//! `batch_url`), is accepted at once (202), then its result,
//! the input `n` plus one, is reported, again until the server answers 200:
//! with `--callback-batch 1` each to its invocation's `callback_url`, else as
//! many as are waiting (up to the batch size) in one `POST /v1/callbacks`.
//! A call step (no `callback_url`) gets its output in the answer. `GET /stats` reports what it did and, per run, the
//! time from sending a callback to receiving that run's next invocation.
//! It serves until its standard input closes (its parent ended) or it is killed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Largest invocation read: the bench's are tens of bytes.
const MAX_INVOCATION_BYTES: usize = 1 << 20;
/// Times a callback is sent before it is counted as failed.
const CALLBACK_TRIES: u32 = 20;
/// The most invocations the server sends in one request (its batches are
/// at most 256).
const MAX_BATCH: usize = 1024;
/// Batches of callbacks being sent at once.
const BATCHES_IN_FLIGHT: usize = 8;

#[derive(Debug, Args, Clone)]
pub struct RemoteArgs {
    /// Where to listen; the address bound is printed on the first line of stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The most results reported in one request (`POST /v1/callbacks`); 1
    /// sends each to its own `callback_url`.
    #[arg(long, default_value_t = 256)]
    pub callback_batch: usize,
}

/// What the remote system did, as `GET /stats` answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoteStats {
    pub invocations: u64,
    /// Callbacks the server answered 200.
    pub callbacks: u64,
    /// Callbacks given up after every try.
    pub callbacks_failed: u64,
    /// Invocations that could not be read.
    pub bad_invocations: u64,
    /// From sending a run's callback to receiving its next invocation, ms.
    pub callback_to_next_invocation_p50_ms: f64,
    pub callback_to_next_invocation_p99_ms: f64,
    pub callback_to_next_invocation_samples: u64,
}

#[derive(Deserialize)]
struct Invocation {
    run: String,
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    inputs: Map<String, Value>,
    #[serde(default)]
    callback_url: Option<String>,
}

/// What a binding's `batch_url` is POSTed.
#[derive(Deserialize)]
struct Batch {
    invocations: Vec<Invocation>,
}

/// A result waiting to be reported.
struct Report {
    key: (String, Option<u32>),
    url: String,
    output: Value,
}

struct Remote {
    client: reqwest::Client,
    /// Results waiting for a batch, when callbacks are batched.
    batch: Option<tokio::sync::mpsc::UnboundedSender<Report>>,
    invocations: AtomicU64,
    callbacks: AtomicU64,
    callbacks_failed: AtomicU64,
    bad_invocations: AtomicU64,
    /// When each run's (or fan-out child's) last callback was sent.
    sent: Mutex<HashMap<(String, Option<u32>), Instant>>,
    /// Callback to next invocation, microseconds.
    gaps_us: Mutex<Vec<u64>>,
}

/// `eflow bench-remote`: serves until stdin closes.
pub async fn serve(args: RemoteArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("{}", listener.local_addr()?);
    // The parent reads the address from the first line.
    std::io::Write::flush(&mut std::io::stdout())?;
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
    let (batch_tx, batch_rx) = tokio::sync::mpsc::unbounded_channel();
    let remote = Arc::new(Remote {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()?,
        batch: (args.callback_batch > 1).then_some(batch_tx),
        invocations: AtomicU64::new(0),
        callbacks: AtomicU64::new(0),
        callbacks_failed: AtomicU64::new(0),
        bad_invocations: AtomicU64::new(0),
        sent: Mutex::new(HashMap::new()),
        gaps_us: Mutex::new(Vec::new()),
    });
    tokio::spawn(
        remote
            .clone()
            .report_in_batches(batch_rx, args.callback_batch.max(1)),
    );
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("bench-remote: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let remote = remote.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let remote = remote.clone();
                async move { Ok::<_, Infallible>(remote.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

impl Remote {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<String> {
        match (req.method(), req.uri().path()) {
            (&Method::POST, "/invoke") => self.invoke(req).await,
            (&Method::POST, "/batch") => self.invoke_batch(req).await,
            (&Method::GET, "/stats") => match serde_json::to_string(&self.stats()) {
                Ok(body) => answer(StatusCode::OK, body),
                Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            },
            _ => answer(StatusCode::NOT_FOUND, String::new()),
        }
    }

    async fn invoke(self: Arc<Self>, req: Request<Incoming>) -> Response<String> {
        let arrived = Instant::now();
        let body = axum::body::Body::new(req.into_body());
        let inv = match axum::body::to_bytes(body, MAX_INVOCATION_BYTES).await {
            Ok(bytes) => serde_json::from_slice::<Invocation>(&bytes).ok(),
            Err(_) => None,
        };
        let Some(inv) = inv else {
            return self.bad_invocation();
        };
        match self.take(inv, arrived) {
            Some(output) => answer(StatusCode::OK, json!({ "output": output }).to_string()),
            None => answer(StatusCode::ACCEPTED, String::new()),
        }
    }

    /// `{"invocations": [...]}` from a binding's `batch_url`: one result
    /// each, in order (docs/connectors.md).
    async fn invoke_batch(self: Arc<Self>, req: Request<Incoming>) -> Response<String> {
        let arrived = Instant::now();
        let body = axum::body::Body::new(req.into_body());
        let batch = match axum::body::to_bytes(body, MAX_INVOCATION_BYTES * MAX_BATCH).await {
            Ok(bytes) => serde_json::from_slice::<Batch>(&bytes).ok(),
            Err(_) => None,
        };
        let Some(batch) = batch else {
            return self.bad_invocation();
        };
        let results: Vec<Value> = batch
            .invocations
            .into_iter()
            .map(|inv| match self.take(inv, arrived) {
                Some(output) => json!({ "status": 200, "output": output }),
                None => json!({ "status": 202 }),
            })
            .collect();
        answer(StatusCode::OK, json!({ "results": results }).to_string())
    }

    fn bad_invocation(&self) -> Response<String> {
        self.bad_invocations.fetch_add(1, Ordering::Relaxed);
        answer(
            StatusCode::BAD_REQUEST,
            json!({ "error": { "code": "BadInvocation", "message": "not an eflow invocation" } })
                .to_string(),
        )
    }

    /// Takes an invocation: a call step's output, to answer at once, or
    /// `None` once a remote step's result is on its way to the callback.
    fn take(self: &Arc<Self>, inv: Invocation, arrived: Instant) -> Option<Value> {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        let key = (inv.run, inv.index);
        let before = self.sent.lock().ok().and_then(|mut s| s.remove(&key));
        if let (Some(t), Ok(mut gaps)) = (before, self.gaps_us.lock()) {
            gaps.push(arrived.duration_since(t).as_micros() as u64);
        }
        let output = output_of(&inv.inputs);
        let Some(url) = inv.callback_url else {
            return Some(output);
        };
        match &self.batch {
            Some(batch) => {
                let _ = batch.send(Report { key, url, output });
            }
            None => {
                let body = json!({ "output": output }).to_string();
                tokio::spawn(self.clone().callback(key, url, body));
            }
        }
        None
    }

    /// Reports results as they come, each time as many as are waiting (up
    /// to `size`) in one `POST /v1/callbacks`, a few batches at once.
    async fn report_in_batches(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Report>,
        size: usize,
    ) {
        let places = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
        while let Some(first) = rx.recv().await {
            let mut reports = vec![first];
            while reports.len() < size {
                match rx.try_recv() {
                    Ok(r) => reports.push(r),
                    Err(_) => break,
                }
            }
            let Ok(place) = places.clone().acquire_owned().await else {
                return;
            };
            let me = self.clone();
            tokio::spawn(async move {
                me.send_batch(reports).await;
                drop(place);
            });
        }
    }

    /// Sends one batch until the server answers it 200; each report of it
    /// counts by its own outcome.
    async fn send_batch(&self, reports: Vec<Report>) {
        // Every callback URL ends in `/v1/callbacks/{token}`.
        let mut by_server: HashMap<&str, Vec<(&Report, &str)>> = HashMap::new();
        for r in &reports {
            match r.url.rsplit_once("/v1/callbacks/") {
                Some((base, token)) => by_server.entry(base).or_default().push((r, token)),
                None => {
                    eprintln!("bench-remote: not a callback URL: {}", r.url);
                    self.callbacks_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for (base, items) in by_server {
            let body = json!({
                "callbacks": items
                    .iter()
                    .map(|(r, token)| json!({ "token": token, "output": r.output }))
                    .collect::<Vec<_>>(),
            })
            .to_string();
            let url = format!("{base}/v1/callbacks");
            let mut done = false;
            for attempt in 0..CALLBACK_TRIES {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(20 << attempt.min(6))).await;
                }
                if let Ok(mut s) = self.sent.lock() {
                    let now = Instant::now();
                    for (r, _) in &items {
                        s.insert(r.key.clone(), now);
                    }
                }
                let sent = self
                    .client
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let answer = match sent {
                    Ok(r) if r.status() == StatusCode::OK => r.json::<BatchAnswer>().await.ok(),
                    Ok(r) if r.status().is_client_error() => {
                        eprintln!("bench-remote: batch of callbacks refused: {}", r.status());
                        break;
                    }
                    _ => None,
                };
                if let Some(answer) = answer {
                    for result in answer.results {
                        if result.get("status").is_some() {
                            self.callbacks.fetch_add(1, Ordering::Relaxed);
                        } else {
                            eprintln!("bench-remote: callback refused: {result}");
                            self.callbacks_failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    done = true;
                    break;
                }
            }
            if !done {
                self.callbacks_failed
                    .fetch_add(items.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Sends the result until the server answers 200 (a resent callback is
    /// answered `already_applied`), as the protocol asks.
    async fn callback(self: Arc<Self>, key: (String, Option<u32>), url: String, body: String) {
        for attempt in 0..CALLBACK_TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(20 << attempt.min(6))).await;
            }
            // Stamped before sending: the next invocation can arrive before
            // the callback's answer does.
            if let Ok(mut s) = self.sent.lock() {
                s.insert(key.clone(), Instant::now());
            }
            let sent = self
                .client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == StatusCode::OK => {
                    self.callbacks.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(r) if r.status().is_client_error() => {
                    eprintln!("bench-remote: callback refused: {}", r.status());
                    break;
                }
                _ => {}
            }
        }
        self.callbacks_failed.fetch_add(1, Ordering::Relaxed);
    }

    fn stats(&self) -> RemoteStats {
        let mut gaps = self.gaps_us.lock().map(|g| g.clone()).unwrap_or_default();
        gaps.sort_unstable();
        let ms = |p: f64| {
            super::percentile_by(&gaps, p)
                .map(|us| *us as f64 / 1000.0)
                .unwrap_or(0.0)
        };
        RemoteStats {
            invocations: self.invocations.load(Ordering::Relaxed),
            callbacks: self.callbacks.load(Ordering::Relaxed),
            callbacks_failed: self.callbacks_failed.load(Ordering::Relaxed),
            bad_invocations: self.bad_invocations.load(Ordering::Relaxed),
            callback_to_next_invocation_p50_ms: ms(0.50),
            callback_to_next_invocation_p99_ms: ms(0.99),
            callback_to_next_invocation_samples: gaps.len() as u64,
        }
    }
}

/// The server's answer to a batch: one result per callback, in order.
#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<Value>,
}

/// The bench's steps take `n: Int` and return `n + 1`; anything else gets `null`.
fn output_of(inputs: &Map<String, Value>) -> Value {
    match inputs.get("n").and_then(Value::as_i64) {
        Some(n) => json!(n.wrapping_add(1)),
        None => Value::Null,
    }
}

fn answer(status: StatusCode, body: String) -> Response<String> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The remote system as the bench holds it: a child process, killed when dropped.
pub struct RemoteProcess {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl RemoteProcess {
    /// Starts `eflow bench-remote` (this same binary) and reads its address.
    pub fn spawn(callback_batch: usize) -> anyhow::Result<RemoteProcess> {
        use anyhow::Context;
        use std::io::BufRead;
        let exe = std::env::current_exe().context("finding this binary to start bench-remote")?;
        let mut child = std::process::Command::new(exe)
            .arg("bench-remote")
            .arg(format!("--callback-batch={callback_batch}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .context("starting `eflow bench-remote`")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("bench-remote's stdout")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = match line.trim().parse() {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("`eflow bench-remote` did not print its address (got {line:?})");
            }
        };
        Ok(RemoteProcess { child, addr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn stats(&self, client: &reqwest::Client) -> anyhow::Result<RemoteStats> {
        let url = format!("http://{}/stats", self.addr);
        Ok(client
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}

impl Drop for RemoteProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
