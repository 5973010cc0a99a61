//! One eflow process: store, bus, engine, scheduler, history and API,
//! started together and stopped together. Which backends it runs on and what
//! clock it reads are options ([`Options`]): store URLs, a bus URL and a
//! [`Clock`](crate::clock::Clock); each backend is picked from its URL in one
//! place (`Store::open`, `Bus::open`, `HistoryStore::open`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::{Corrected, SharedClock, SystemClock};
use crate::egress::{Egress, Policy};
use crate::engine::{self, Bus, CallbackKeys, Engine};
use crate::history::{History, HistoryStore};
use crate::quota::{Ledger, Quotas};
use crate::scheduler::Scheduler;
use crate::schema::redact;
use crate::service::Service;
use crate::store::{Durability, Store};

/// How to run a server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the server's files live: `admin-token`, and the stores unless
    /// their URLs name other places.
    pub data: PathBuf,
    /// The engine's store: `sqlite://PATH` (default `DATA/eflow.db`).
    pub store: String,
    /// The history's store: `sqlite://PATH` (default `DATA/history.db`).
    pub history_store: String,
    /// The bus: `local`, in-process (the default), or `nats://HOST:PORT`
    /// (NATS JetStream, shared by the processes of a cluster).
    pub bus: String,
    /// What this process runs.
    pub roles: Roles,
    /// Where every part of the server reads the time: the system clock, or
    /// a `ManualClock` that tests move by hand.
    pub clock: SharedClock,
    pub listen: SocketAddr,
    pub durability: Durability,
    pub shards: u32,
    pub partitions: u32,
    pub quotas: Quotas,
    /// Also accept this admin token (tests, scripted setups).
    pub admin_token: Option<String>,
    /// How remote systems reach this server for callbacks (default: the listen address).
    pub public_url: Option<String>,
    /// What every tenant's `http` bindings may reach besides the public
    /// internet: networks (`10.0.0.0/8`), addresses (`127.0.0.1`), host names
    /// (`models.internal`) and domains (`*.internal`). Loopback, link-local
    /// and private addresses are refused unless a rule allows them.
    pub allow_egress: Vec<String>,
    /// The most bytes read of a remote system's answer (default 4 MiB).
    pub max_answer_bytes: u64,
    /// How many bytes of deployed bundles (their IR JSON) the engine keeps
    /// decoded in memory (default 256 MiB); the least recently used are
    /// dropped past it and read from the store again when needed.
    pub bundle_cache_bytes: u64,
    /// What the HTTP edge lets a client hold: connections, time, bytes.
    pub http: HttpLimits,
    /// How long finished runs stay in the engine's store and in the history.
    pub retention: crate::retention::Options,
    /// The web console at `/ui`: whether it asks for a login.
    pub ui: crate::ui::Options,
}

/// The default of [`Options::max_answer_bytes`].
pub const DEFAULT_MAX_ANSWER_BYTES: u64 = 4 * 1024 * 1024;

impl Options {
    /// The defaults: everything embedded, the stores in `data`, the system clock.
    /// On the in-process bus a process is alone on its store: it holds
    /// every shard and runs the history's consumer for good; on a shared bus
    /// it shares them with the cluster's other processes.
    pub fn alone(&self) -> bool {
        self.bus == "local"
    }

    pub fn new(data: PathBuf, listen: SocketAddr) -> Self {
        Self {
            store: sqlite_url(&data.join("eflow.db")),
            history_store: sqlite_url(&data.join("history.db")),
            bus: "local".into(),
            roles: Roles::ALL,
            clock: Arc::new(SystemClock),
            data,
            listen,
            durability: Durability::default(),
            shards: 1,
            partitions: 4,
            quotas: Quotas::default(),
            admin_token: None,
            public_url: None,
            allow_egress: Vec::new(),
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            bundle_cache_bytes: engine::DEFAULT_BUNDLE_CACHE_BYTES,
            http: HttpLimits::default(),
            retention: crate::retention::Options::default(),
            ui: crate::ui::Options::for_listen(false, listen).unwrap_or_default(),
        }
    }
}

/// The parts of eflow a process runs. A cluster runs each at least once;
/// the embedded default runs them all in one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The HTTP API (every process serves `/metrics` and `/v1/health`).
    pub api: bool,
    /// Shard workers, the outbox's executor and the timers' loaders.
    pub engine: bool,
    /// The schedules' loaders.
    pub scheduler: bool,
    /// The history's consumer of the event stream, and the sweeper that
    /// lets finished runs leave the engine's store once the history holds them.
    pub history: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        api: true,
        engine: true,
        scheduler: true,
        history: true,
    };
    pub const NAMES: [&'static str; 4] = ["api", "engine", "scheduler", "history"];

    /// Roles from a comma-separated list of their names (`api,engine`).
    pub fn parse(list: &str) -> Result<Roles, String> {
        let mut r = Roles {
            api: false,
            engine: false,
            scheduler: false,
            history: false,
        };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "api" => r.api = true,
                "engine" => r.engine = true,
                "scheduler" => r.scheduler = true,
                "history" => r.history = true,
                other => {
                    return Err(format!(
                        "unknown role `{other}`: the roles are {}",
                        Self::NAMES.join(", ")
                    ));
                }
            }
        }
        if !(r.api || r.engine || r.scheduler || r.history) {
            return Err(format!(
                "no role given: name one or more of {}",
                Self::NAMES.join(", ")
            ));
        }
        Ok(r)
    }

    /// The names of the roles, comma-separated.
    pub fn names(&self) -> String {
        let on = [self.api, self.engine, self.scheduler, self.history];
        Self::NAMES
            .iter()
            .zip(on)
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl std::str::FromStr for Roles {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Roles::parse(s)
    }
}

/// What one client may hold of the HTTP edge before it sent a credential:
/// each bound keeps slow or idle connections from growing the server.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections open at once; more wait in the listen queue until one closes.
    pub max_connections: usize,
    /// How long a request's head (request line and headers) may take to
    /// arrive, counted from when the server waits for it: a connection idle
    /// between requests for this long is closed.
    pub header_timeout: Duration,
    /// How long a request's whole body may take to arrive (408 after it).
    pub body_timeout: Duration,
    /// The longest request target (path and query) in bytes (414 beyond).
    pub max_uri_bytes: usize,
    /// The largest request head (request line and headers) in bytes: the
    /// most a connection buffers before its request is read.
    pub max_header_bytes: usize,
    /// The largest deploy request (`POST /v1/flows`) in bytes (413 beyond);
    /// other requests take at most 2 MiB.
    pub max_deploy_bytes: usize,
    /// The largest value upload (`POST /v1/values`) in bytes (413 beyond).
    pub max_value_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 64 * 1024,
            max_deploy_bytes: 8 * 1024 * 1024,
            max_value_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub service: Service,
    /// The admin token made on first start, if this start made it.
    pub new_admin_token: Option<String>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    store: Store,
    history: History,
}

impl Server {
    pub async fn start(options: Options) -> anyhow::Result<Server> {
        if options.alone() && !options.roles.engine {
            anyhow::bail!(
                "--role {}: the local bus carries inputs only within this process, so a process without the engine role needs a shared bus: add `engine` to --role, or give --bus nats://HOST:PORT",
                options.roles.names()
            );
        }
        let egress_policy = Policy::parse(&options.allow_egress)
            .map_err(|e| anyhow::anyhow!("--allow-egress: {e}"))?;
        crate::ui::Options::for_listen(options.ui.no_login, options.listen)
            .map_err(|e| anyhow::anyhow!(e))?;
        // The data directory holds secrets (the admin token, the stores with the
        // callback-signing key): only its owner may enter it.
        let mut data_dir = std::fs::DirBuilder::new();
        data_dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut data_dir, 0o700);
        data_dir.create(&options.data).with_context(|| {
            format!(
                "cannot create the data directory {}",
                options.data.display()
            )
        })?;
        // A directory made before (by hand, or by an older eflow) keeps its
        // mode: say so when others may read what is in it.
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(&options.data) {
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    data = %options.data.display(),
                    mode = %format!("{mode:03o}"),
                    "the data directory may be read by other users of this machine; it holds the admin token and the callback-signing key: `chmod 700 {}`",
                    options.data.display()
                );
            }
        }
        let store = Store::open(&options.store, options.durability)
            .await
            .with_context(|| format!("cannot open the store {}", redact(&options.store)))?;
        if !options.alone() {
            // Every process of a cluster must route a run to the same shard.
            let shards = options.shards.max(1).to_string();
            let recorded = store.setting_or_insert("shards", shards.as_bytes()).await?;
            let recorded = String::from_utf8_lossy(&recorded);
            if recorded != shards {
                anyhow::bail!(
                    "--shards {shards}: this cluster's store was first served with --shards {recorded}, and every process of a cluster must use the same count (it decides which engine a run's inputs go to): start with --shards {recorded}"
                );
            }
        }
        let deployments = engine::Deployments::new(store.clone(), options.bundle_cache_bytes);
        let bus = Bus::open(
            &options.bus,
            options.shards,
            store.clone(),
            deployments.clone(),
        )
        .await
        .with_context(|| format!("cannot open the bus {}", redact(&options.bus)))?;
        let history_store = HistoryStore::open(&options.history_store)
            .await
            .with_context(|| {
                format!(
                    "cannot open the history store {}",
                    redact(&options.history_store)
                )
            })?;
        let history = History::new(history_store)
            .await
            .context("cannot read the history's cursor")?;
        // On a cluster every process reads its machine's clock set right by
        // the store's: leases, members, claims and timers are judged by
        // times other processes wrote.
        let corrected = (!options.alone() && options.clock.is_machine())
            .then(|| Arc::new(Corrected::new(options.clock.clone())));
        if let Some(c) = &corrected {
            crate::cluster::set_clock(&store, c)
                .await
                .context("cannot read the store's clock")?;
        }
        let clock: SharedClock = match &corrected {
            Some(c) => c.clone(),
            None => options.clock.clone(),
        };
        let key = store
            .setting_or_insert("callback_key", new_key().as_bytes())
            .await?;
        let keys = CallbackKeys::new(key);
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("cannot listen on {}", options.listen))?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let (finished_tx, mut finished_rx) = mpsc::unbounded_channel();
        let egress = Egress::new(egress_policy, store.clone(), options.max_answer_bytes)?;
        let member = crate::cluster::member_id();
        let engine_options = engine::Options {
            shards: options.shards,
            partitions: options.partitions,
            public_url: options
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{addr}")),
            owner: member.clone(),
            // Alone on its store with the in-process bus, a process holds
            // every shard; engines sharing a bus share the shards.
            ownership: options.roles.engine.then_some(if options.alone() {
                engine::Ownership::HoldAll
            } else {
                engine::Ownership::Share
            }),
            ..engine::Options::default()
        };
        // Before the engine: child starts left in the outbox take places too.
        let active = store
            .active_runs()
            .await
            .context("cannot count the runs in progress")?;
        tracing::info!(
            runs = active.iter().map(|(_, _, n)| n).sum::<i64>(),
            tenants = active
                .iter()
                .map(|(t, _, _)| t.as_str())
                .collect::<std::collections::HashSet<_>>()
                .len(),
            "runs in progress"
        );
        let ledger = Arc::new(Ledger::new(options.quotas, active));
        let shared_quotas = (!options.alone()).then(|| {
            tokio::spawn(crate::quota::share(
                ledger.clone(),
                bus.clone(),
                shutdown.clone(),
            ))
        });
        let (engine, mut tasks) = Engine::start(
            engine_options,
            engine::Deps {
                store: store.clone(),
                deployments,
                bus,
                clock: clock.clone(),
                keys: keys.clone(),
                egress,
                finished: finished_tx,
                ledger: ledger.clone(),
            },
            shutdown.clone(),
        )
        .await?;
        tasks.extend(shared_quotas);
        let scheduler = Scheduler::new(
            engine.clone(),
            clock.clone(),
            options.partitions,
            ledger.clone(),
        );
        let service = Service::new(
            engine.clone(),
            clock.clone(),
            keys,
            history.clone(),
            scheduler.clone(),
            ledger,
            options.retention,
            if options.alone() {
                "embedded".to_string()
            } else {
                member.clone()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Purges begin through the API, so a process that serves it takes
        // over those whose holder stopped part way (its hold ran out), at
        // its start and from then on; a live process's purge is its own.
        if options.roles.api {
            service
                .finish_purges(true)
                .await
                .map_err(|e| anyhow::anyhow!("cannot finish an interrupted tenant purge: {e}"))?;
        }
        // The file first, the row second: a token nobody can read is never
        // stored, so a start that cannot write it leaves none behind, and the
        // next start makes one again.
        let new_admin_token = if service
            .admin_token_needed()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            let token = crate::service::new_token("eflow_admin");
            let path = options.data.join("admin-token");
            write_secret(&path, &token).with_context(|| {
                format!(
                    "cannot write the admin token to {}: make that path a file this user can write (or start with another --data), then start again; no admin token was made",
                    path.display()
                )
            })?;
            service
                .add_admin_token(&token)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(token)
        } else {
            None
        };
        if let Some(t) = &options.admin_token {
            service
                .add_admin_token(t)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        {
            let service = service.clone();
            let scheduler = scheduler.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(f) = finished_rx.recv().await {
                    service.finished(&f);
                    scheduler.run_finished(&f).await;
                }
            }));
        }
        if options.roles.scheduler {
            tasks.push(tokio::spawn(scheduler.run(shutdown.clone())));
        }
        if options.roles.api {
            tasks.push(tokio::spawn(
                service.clone().finish_purges_until(shutdown.clone()),
            ));
        }
        if options.roles.history {
            // One active consumer (and sweeper) among the processes with the
            // history role; the others stand by.
            let events = engine.bus().events().clone();
            let (history, store_, clock_) = (history.clone(), store.clone(), clock.clone());
            let retention = options.retention;
            tasks.push(tokio::spawn(crate::cluster::one_active(
                crate::cluster::HISTORY_LEASE,
                store.clone(),
                clock.clone(),
                member.clone(),
                options.alone(),
                shutdown.clone(),
                move |stop: CancellationToken| {
                    let consumer = history.clone().consume(events.clone(), stop.clone());
                    // Without the history's consumer nothing is held there, so
                    // nothing may leave the engine's store.
                    let sweeper = crate::retention::Sweeper::new(
                        retention,
                        store_.clone(),
                        history.clone(),
                        clock_.clone(),
                    );
                    async move {
                        tokio::join!(consumer, sweeper.run(stop));
                    }
                },
            )));
        }
        if options.roles.api {
            // One runner of bulk jobs among the processes that serve the
            // API (it acts through the service, as the API does).
            let (service, me) = (service.clone(), member.clone());
            tasks.push(tokio::spawn(crate::cluster::one_active(
                crate::bulk::BULK_LEASE,
                store.clone(),
                clock.clone(),
                member.clone(),
                options.alone(),
                shutdown.clone(),
                move |stop: CancellationToken| {
                    crate::bulk::Runner::new(crate::bulk::Options::default(), service.clone(), &me)
                        .run(stop)
                },
            )));
        }
        let app = if options.roles.api {
            crate::api::router(service.clone(), &options.http)
                .merge(crate::ui::router(service.clone(), options.ui))
        } else {
            crate::api::operations_router(service.clone())
        };
        tasks.push(tokio::spawn(serve(
            listener,
            app,
            options.http,
            shutdown.clone(),
        )));
        if options.roles.engine {
            tasks.push(tokio::spawn(drop_unreferenced_values(
                store.clone(),
                clock.clone(),
                shutdown.clone(),
            )));
        }
        if let Some(c) = corrected {
            tasks.push(tokio::spawn(crate::cluster::follow_store_clock(
                store.clone(),
                c,
                shutdown.clone(),
            )));
        }
        tasks.push(tokio::spawn(crate::cluster::heartbeat(
            store.clone(),
            clock.clone(),
            member,
            options.roles.names(),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(report_activity(
            engine.clone(),
            history.clone(),
            shutdown.clone(),
        )));
        tracing::info!(%addr, data = %options.data.display(), roles = %options.roles.names(), "eflow is serving");
        Ok(Server {
            addr,
            service,
            new_admin_token,
            shutdown,
            tasks,
            store,
            history,
        })
    }

    pub fn engine(&self) -> &Engine {
        self.service.engine()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting work, lets every task finish what it holds, closes the databases.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), t).await;
        }
        self.history.close().await;
        self.store.close().await;
    }
}

/// Serves the API on `listener` within `limits` until `stop`, then lets the
/// requests in progress finish (for at most 10 s).
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    stop: CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper refuses a buffer under 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8 * 1024));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        // A connection is accepted only when it may be served: past the
        // bound, clients wait in the listen queue, not in memory.
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, a connection reset before it
                    // was accepted: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that goes away or times out is the normal end of a connection.
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {}
    }
}

/// Values no run refers to are dropped a day after they were kept: uploads
/// never used in a start, and values of runs that are gone.
pub const UNREFERENCED_VALUE_TTL_MS: u64 = 24 * 3600 * 1000;

/// Every ten minutes, drops values no run refers to, a batch at a time.
async fn drop_unreferenced_values(store: Store, clock: SharedClock, stop: CancellationToken) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(600);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(EVERY) => {}
        }
        let before = clock.now_ms().saturating_sub(UNREFERENCED_VALUE_TTL_MS);
        loop {
            match store.drop_unreferenced_values(before, 1_000).await {
                Ok(n) if n > 0 => tracing::debug!(values = n, "dropped values no run refers to"),
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "dropping values no run refers to failed; trying again later");
                    break;
                }
            }
            if stop.is_cancelled() {
                return;
            }
        }
    }
}

/// Every minute in which the engine did something: how much, and how far
/// behind it the history is.
async fn report_activity(engine: Engine, history: History, stop: CancellationToken) {
    use std::sync::atomic::Ordering::Relaxed;
    const EVERY: std::time::Duration = std::time::Duration::from_secs(60);
    let stats = engine.stats().clone();
    let read = || {
        (
            stats.transitions.load(Relaxed),
            stats.finished.load(Relaxed),
            stats.commits.load(Relaxed),
            stats.scheduled_starts.load(Relaxed),
        )
    };
    let mut last = read();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(EVERY) => {}
        }
        let now = read();
        let transitions = now.0 - last.0;
        if transitions > 0 {
            let behind = history.behind(engine.bus().events()).await.ok().flatten();
            tracing::info!(
                transitions,
                per_sec = transitions / EVERY.as_secs(),
                runs_finished = now.1 - last.1,
                commits = now.2 - last.2,
                scheduled_starts = now.3 - last.3,
                history_behind = ?behind,
                "activity in the last minute"
            );
        }
        last = now;
    }
}

/// The URL of an SQLite file.
pub fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}", path.display())
}

fn new_key() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Writes a file only its owner can read.
pub(crate) fn write_secret(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
