//! The `eflow` command line: the server, the client commands, the benchmark.

pub mod bulk;
pub mod client;
pub mod config;
pub mod table;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::model::*;
use crate::service::MAX_SCHEDULE_PAGE as MAX_PAGE;
use client::{Client, seg};
use table::Table;

#[derive(Debug, Parser)]
#[command(
    name = "eflow",
    version,
    about = "Run eflow flows: the server, its client, and its benchmark"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// Tables for people.
    #[default]
    Table,
    /// JSON for scripts.
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct Conn {
    /// The server (default: the local one).
    #[arg(long, env = "EFLOW_SERVER", global = true)]
    pub server: Option<String>,
    /// The API token (default for the local server: `.eflow/admin-token`).
    #[arg(long, env = "EFLOW_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    #[arg(long, short, value_enum, default_value_t, global = true)]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: by default everything in one process (API, engine,
    /// scheduler, history) on SQLite; `--store`, `--bus` and `--role` for a cluster.
    Serve(ServeArgs),
    /// Bring the stores' schemas to this eflow's version (a server refuses a
    /// shared PostgreSQL schema at another version, and says so).
    Migrate(StoreArgs),
    /// Deploy flows as one bundle: `.eflow` files or directories (compiled here), or
    /// compiled IR: `.json` files or a directory of them (`eflowc compile --out-dir`).
    Deploy {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Whose bindings the runs use (default `dev`, or the only environment).
        #[arg(long)]
        env: Option<String>,
        /// The tenant (with an admin token).
        #[arg(long)]
        tenant: Option<String>,
        /// Deploy even if a flow changes in a way that breaks its callers, its
        /// schedules or its steps' remote systems (the server refuses otherwise,
        /// listing what would break).
        #[arg(long)]
        allow_breaking: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Deployed flows.
    Flows {
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Start, inspect, cancel and retry runs.
    #[command(subcommand)]
    Run(RunCommand),
    /// Decide an approval step: `eflow approve RUN STEP --approve`.
    Approve {
        run: String,
        step: String,
        #[arg(long, conflicts_with = "reject", required_unless_present = "reject")]
        approve: bool,
        #[arg(long)]
        reject: bool,
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Approvals waiting for a decision.
    Approvals {
        #[arg(long)]
        tenant: Option<String>,
        /// Decided ones too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cron schedules.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Bulk actions: cancel or retry every run a filter selects, as a
    /// durable job with progress, pause and cancel.
    #[command(subcommand)]
    Bulk(bulk::BulkCommand),
    /// Tenants and their tokens (admin).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// API tokens: list, create, revoke, rotate (a tenant's, or `--admin`).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Registered models and datasets with their lineage.
    Registry {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// A flow's population: its runs' keys (models, customers), each with
    /// its latest run, and how many keys are in each status.
    Population {
        /// The flow whose keys to list.
        #[arg(long)]
        flow: String,
        /// Keys of this tenant (an admin token sees every tenant's without it).
        #[arg(long)]
        tenant: Option<String>,
        /// Keys whose latest run has this status.
        #[arg(long)]
        status: Option<String>,
        /// Keys whose latest run is on this version (`sha256:…`).
        #[arg(long)]
        version: Option<String>,
        /// Keys whose latest runs failed at least N times in a row (longest
        /// streaks first).
        #[arg(long, value_name = "N")]
        failed_in_a_row: Option<u32>,
        /// Keys a page (at most 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// From a previous page's `next`.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// The cluster: which processes are alive, who holds which shard until
    /// when, how far behind each consumer of the event stream is (admin).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Measure the engine: N runs of K sequential steps (`sim` or `http`), or
    /// one fan-out over N subflows, beside the machine's own baseline.
    Bench(crate::bench::BenchArgs),
    /// The remote system `eflow bench --connector http` starts in a child process.
    #[command(hide = true)]
    BenchRemote(crate::bench::remote::RemoteArgs),
}

/// Where a server's state lives: `eflow serve` and `eflow migrate`.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// Where the state lives.
    #[arg(long, env = "EFLOW_DATA", default_value = client::DEFAULT_DATA)]
    pub data: PathBuf,
    /// The engine's store, as a URL: `sqlite://PATH` or
    /// `postgres://USER@HOST/DATABASE` [default: sqlite://DATA/eflow.db].
    #[arg(long, env = "EFLOW_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// The history's store, as a URL: `sqlite://PATH` or
    /// `postgres://USER@HOST/DATABASE` (it may be the engine's)
    /// [default: sqlite://DATA/history.db].
    #[arg(long, env = "EFLOW_HISTORY_STORE", value_name = "URL")]
    pub history_store: Option<String>,
    /// A TOML file of options, keyed by their long names (`store =
    /// "postgres://…"`, `role = "engine"`); the command line and the
    /// environment take precedence over it.
    #[arg(long, env = "EFLOW_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub stores: StoreArgs,
    /// The bus: `local` (in-process, one server alone on its store) or
    /// `nats://HOST:PORT` (NATS JetStream, shared by a cluster's processes).
    #[arg(long, env = "EFLOW_BUS", value_name = "URL", default_value = "local")]
    pub bus: String,
    /// What this process runs, comma-separated: any of `api`, `engine`,
    /// `scheduler`, `history`.
    #[arg(
        long,
        env = "EFLOW_ROLE",
        value_name = "ROLES",
        default_value = "api,engine,scheduler,history"
    )]
    pub role: crate::server::Roles,
    /// The API's address (loopback by default).
    #[arg(long, env = "EFLOW_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// `full`: fsync every commit; `normal`: survive a process crash, not a power loss.
    #[arg(long, value_enum, default_value_t)]
    pub durability: crate::store::Durability,
    /// Engine shards (workers). SQLite has one writer, so on the embedded
    /// backend one shard commits the largest batches (see BENCHMARKS.md).
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Where remote systems send callbacks (default: the listen address).
    #[arg(long, env = "EFLOW_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Also accept this admin token.
    #[arg(long, env = "EFLOW_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Let every tenant's `http` bindings reach this network (`10.0.0.0/8`),
    /// address (`127.0.0.1`), host (`models.internal`) or domain
    /// (`*.internal`) besides the public internet; repeatable. Loopback,
    /// link-local and private addresses are refused unless allowed.
    #[arg(
        long,
        env = "EFLOW_ALLOW_EGRESS",
        value_name = "CIDR|HOST",
        value_delimiter = ','
    )]
    pub allow_egress: Vec<String>,
    /// The most bytes of a remote system's answer read; a larger answer fails
    /// the attempt with `AnswerTooLarge`.
    #[arg(long, env = "EFLOW_MAX_ANSWER_BYTES", value_name = "BYTES", default_value_t = crate::server::DEFAULT_MAX_ANSWER_BYTES)]
    pub max_answer_bytes: u64,
    /// How many bytes of deployed bundles (their IR JSON) are kept decoded in
    /// memory; the least recently used are dropped past it and read from the
    /// store again when a run needs them.
    #[arg(long, env = "EFLOW_BUNDLE_CACHE_BYTES", value_name = "BYTES", default_value_t = crate::engine::DEFAULT_BUNDLE_CACHE_BYTES)]
    pub bundle_cache_bytes: u64,
    /// HTTP connections open at once; more wait until one closes.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// How long a request's head may take to arrive; a connection idle this
    /// long between requests is closed.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub header_timeout: std::time::Duration,
    /// How long a request's whole body may take to arrive.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub body_timeout: std::time::Duration,
    /// The most schedules a tenant may have (declared ones count); making one
    /// more through the API is refused (429).
    #[arg(long, env = "EFLOW_MAX_SCHEDULES_PER_TENANT", value_name = "N", default_value_t = crate::quota::DEFAULT_MAX_SCHEDULES)]
    pub max_schedules_per_tenant: u64,
    /// The largest deploy request in bytes (`POST /v1/flows`); a larger one is 413.
    #[arg(long, env = "EFLOW_MAX_DEPLOY_BYTES", value_name = "BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_deploy_bytes: usize,
    /// The largest value upload in bytes (`POST /v1/tenants/{id}/values`, for run inputs
    /// given by reference); a larger one is 413.
    #[arg(long, env = "EFLOW_MAX_VALUE_BYTES", value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_value_bytes: usize,
    /// How long a finished run stays in the engine's store once the history
    /// holds it; after that it is read from the history (`0s`: at once).
    #[arg(long, env = "EFLOW_SWEEP_AFTER", value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub sweep_after: std::time::Duration,
    /// How long a failed run stays in the engine's store so that it can be
    /// retried (`eflow run retry ID`), when longer than `--sweep-after`;
    /// after that a retry is refused (410 `retry_window_passed`).
    #[arg(long, env = "EFLOW_RETRY_WINDOW", value_name = "DURATION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub retry_window: std::time::Duration,
    /// How long the history keeps a finished run (its events, its final
    /// state), unless its tenant has its own (`eflow tenant update ID
    /// --history-retention 30d`).
    #[arg(long, env = "EFLOW_HISTORY_RETENTION", value_name = "DURATION", default_value = "400d", value_parser = humantime::parse_duration)]
    pub history_retention: std::time::Duration,
    /// Open the web console (`/ui`) without a login, as the admin: only
    /// when listening on loopback, where whoever reaches it is on this
    /// machine already (refused otherwise).
    #[arg(long)]
    pub ui_no_login: bool,
}

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Start a run of a deployed flow.
    Start {
        flow: String,
        #[arg(long)]
        tenant: Option<String>,
        /// Parameter values as a JSON object.
        #[arg(long)]
        input: Option<String>,
        #[arg(long)]
        version: Option<String>,
        /// Your id for the run (starting it twice starts it once; your tenant's own, as `TENANT:ID` to an admin).
        #[arg(long)]
        id: Option<String>,
        /// What the run belongs to: the model or customer whose lifecycle it
        /// is (`eflow population` groups a flow's runs by it).
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// A run's state, step by step.
    Get {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Runs, newest first.
    List {
        /// Runs of this tenant (an admin token sees every tenant's without it).
        #[arg(long)]
        tenant: Option<String>,
        /// Runs of this flow.
        #[arg(long)]
        flow: Option<String>,
        /// Runs of this version of the flow (`sha256:…`, as `eflow flows` shows it).
        #[arg(long)]
        version: Option<String>,
        /// created, running, succeeded, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Runs that failed at this step.
        #[arg(long)]
        step: Option<String>,
        /// Runs that failed with this error code.
        #[arg(long)]
        error: Option<String>,
        /// Runs of this key (a model, a customer).
        #[arg(long)]
        key: Option<String>,
        /// Created at or after (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Created before (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Runs a page (at most 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// From a previous page's `next`.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// A run's events.
    Events {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cancel a run and its subflows.
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Retry a failed run from its failed step.
    ///
    /// The same run goes on: its failed (and stopped) steps start again as
    /// new attempts, the steps that succeeded keep their outputs. Only a
    /// failed top-level run, within the server's `--retry-window` (7 days by
    /// default).
    Retry {
        id: String,
        /// Why, recorded in the run's events with who asked.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
}

/// What `eflow schedule create` and `update` say about a schedule.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// An IANA time zone (default UTC).
    #[arg(long)]
    pub tz: Option<String>,
    /// skip (default), buffer_one, allow_all or cancel_running.
    #[arg(long)]
    pub overlap: Option<String>,
    /// once (default), skip or all (with --catchup-within).
    #[arg(long)]
    pub catchup: Option<String>,
    /// For `--catchup all`: how far back missed fire times start (`7d`).
    #[arg(long)]
    pub catchup_within: Option<String>,
    /// Delay each start by a stable amount below this (`10s`).
    #[arg(long)]
    pub jitter: Option<String>,
    /// The runs' parameter values, as a JSON object.
    #[arg(long)]
    pub input: Option<String>,
    /// What the schedule belongs to (a customer, a model); `""` removes it in an update.
    #[arg(long)]
    pub key: Option<String>,
    /// Pin to this flow version (`head` follows the head again).
    #[arg(long)]
    pub version: Option<String>,
    /// Start no runs until resumed.
    #[arg(long)]
    pub paused: bool,
}

impl ScheduleArgs {
    fn request(self, cron: Option<String>) -> anyhow::Result<ScheduleRequest> {
        let input = match self.input {
            Some(i) => Some(serde_json::from_str(&i).with_context(|| {
                format!("--input `{i}` is not JSON: give an object, e.g. '{{\"n\": 1}}'")
            })?),
            None => None,
        };
        Ok(ScheduleRequest {
            version: self.version,
            key: self.key,
            cron,
            timezone: self.tz,
            overlap: self.overlap,
            catchup: self.catchup,
            catchup_within: self.catchup_within,
            jitter: self.jitter,
            input,
            paused: self.paused.then_some(true),
            ..ScheduleRequest::default()
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Schedules with their next and last fire times, in id order.
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// Only the schedules with this key.
        #[arg(long)]
        key: Option<String>,
        /// Only the schedules of this flow.
        #[arg(long)]
        flow: Option<String>,
        /// At most this many (default: every page).
        #[arg(long)]
        limit: Option<u32>,
        /// Start after this schedule id (the last of the page before).
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Make a schedule of a deployed flow (it follows the flow's head version unless --version pins it).
    Create {
        flow: String,
        /// The cron expression: 5 fields, 6 with seconds first, 7 with a year last, or `@daily`, ….
        cron: String,
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        spec: ScheduleArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Change a schedule made with `create`: the options given replace its own.
    Update {
        id: String,
        #[arg(long)]
        cron: Option<String>,
        #[command(flatten)]
        spec: ScheduleArgs,
        /// Start runs again (`--paused` stops them).
        #[arg(long, conflicts_with = "paused")]
        resumed: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a schedule made with `create` (the runs it started stay).
    Delete {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop a schedule from starting runs.
    Pause {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Start a paused schedule again, from its next fire time (what it missed while paused is not started).
    Resume {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Start one run per fire time from FROM to TO (RFC 3339, inclusive).
    Backfill {
        id: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// The next fire times of a cron expression, as the scheduler computes them.
    Preview {
        cron: String,
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Fire times strictly after this (RFC 3339; default now).
        #[arg(long)]
        from: Option<String>,
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and print its token.
    Create {
        id: String,
        #[arg(long)]
        max_active_runs: Option<i64>,
        #[arg(long)]
        max_starts_per_sec: Option<f64>,
        /// Let the tenant's `http` bindings reach this network, address,
        /// host or `*.domain` besides the public internet; repeatable.
        #[arg(long, value_name = "CIDR|HOST")]
        allow_egress: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Tenants with their quotas.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Change a tenant's settings (admin): the options given replace its own.
    Update {
        id: String,
        /// How long the history keeps the tenant's finished runs (`30d`,
        /// `8760h`), or `default` for the server's `--history-retention`.
        #[arg(long, value_name = "DURATION|default")]
        history_retention: Option<String>,
        /// Replace the tenant's egress rules (`[]`-like: give none with --no-egress).
        #[arg(long, value_name = "CIDR|HOST")]
        allow_egress: Vec<String>,
        /// Remove the tenant's egress rules.
        #[arg(long, conflicts_with = "allow_egress")]
        no_egress: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a tenant and all its data.
    Purge {
        id: String,
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Whose tokens a `token` command is about.
#[derive(Debug, Args)]
pub struct TokenOwner {
    /// The tenant whose tokens (default: the tenant of the token in use).
    #[arg(long, conflicts_with = "admin")]
    pub tenant: Option<String>,
    /// The admin tokens.
    #[arg(long)]
    pub admin: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, shard leases (per owner) and consumers' lag.
    Status {
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Tokens with their names and expiry, never their secrets.
    List {
        #[command(flatten)]
        owner: TokenOwner,
        #[command(flatten)]
        conn: Conn,
    },
    /// Make a token (admin) and print its secret, once.
    Create {
        /// Whose token it is (`alice@example.com`, `ci`): who the server records as acting with it.
        name: String,
        #[command(flatten)]
        owner: TokenOwner,
        /// Expires this long from now (`30d`, `12h`).
        #[arg(long, conflicts_with = "expires_at")]
        expires_in: Option<String>,
        /// Expires at this time (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        id: String,
        #[command(flatten)]
        owner: TokenOwner,
        #[command(flatten)]
        conn: Conn,
    },
    /// Replace a token with a new secret (same name and tenant) and print it.
    Rotate {
        id: String,
        #[command(flatten)]
        owner: TokenOwner,
        /// How long the old secret keeps working (`10m`; default: it stops at once).
        #[arg(long)]
        grace: Option<String>,
        /// The new token's lifetime (default: the old one's).
        #[arg(long, conflicts_with = "expires_at")]
        expires_in: Option<String>,
        #[arg(long)]
        expires_at: Option<String>,
        /// Write the new admin secret to DATA/admin-token, where the CLI reads it for the local server.
        #[arg(long, requires = "admin")]
        save: bool,
        /// The server's data directory, for --save.
        #[arg(long, env = "EFLOW_DATA", default_value = client::DEFAULT_DATA)]
        data: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
}

fn print<T: Serialize>(
    output: Output,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            let mut text = serde_json::to_string_pretty(value)?;
            text.push('\n');
            write_stdout(&text)
        }
        Output::Table => write_stdout(&table(value)),
    }
}

/// Writes `text` to standard output. A reader that went away (`eflow run list |
/// head`) ends the output quietly, as for any Unix tool, instead of a panic.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to standard output"))
        }
        _ => Ok(()),
    }
}

fn client(c: &Conn) -> anyhow::Result<Client> {
    Client::new(c.server.clone(), c.token.clone())
}

fn opt(q: &mut Vec<(&'static str, String)>, k: &'static str, v: &Option<String>) {
    if let Some(v) = v {
        q.push((k, v.clone()));
    }
}

/// Runs a client command (everything but `serve` and `bench`).
pub async fn run_client(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) | Command::Migrate(_) | Command::Bench(_) | Command::BenchRemote(_) => {
            unreachable!("handled by main")
        }
        Command::Deploy {
            paths,
            env,
            tenant,
            allow_breaking,
            conn,
        } => {
            let ir = load_ir(&paths)?;
            let c = client(&conn)?;
            let r: DeployResult = c
                .post(
                    "/v1/flows",
                    &json!({ "tenant": tenant, "env": env, "ir": ir, "allow_breaking": allow_breaking }),
                )
                .await?;
            print(conn.output, &r, |r| {
                let mut t = Table::new(vec!["FLOW", "VERSION"]);
                for f in &r.flows {
                    t.row(vec![f.name.clone(), f.version.clone()]);
                }
                format!(
                    "deployed to tenant {} (environment {}, bundle {}, {} schedules)\n{}",
                    r.tenant,
                    r.env,
                    r.bundle,
                    r.schedules,
                    t.render()
                )
            })
        }
        Command::Flows { tenant, conn } => {
            let c = client(&conn)?;
            let mut q = Vec::new();
            opt(&mut q, "tenant", &tenant);
            let r: Vec<FlowView> = c.get("/v1/flows", &q).await?;
            print(conn.output, &r, |r| {
                let mut t = Table::new(vec!["TENANT", "FLOW", "VERSION", "HEAD", "DEPLOYED"]);
                for f in r {
                    t.row(vec![
                        f.tenant.clone(),
                        f.name.clone(),
                        short(&f.version),
                        if f.head { "*".into() } else { String::new() },
                        f.deployed_at.clone(),
                    ]);
                }
                t.render()
            })
        }
        Command::Run(rc) => run_command(rc).await,
        Command::Approve {
            run,
            step,
            approve,
            reject: _,
            comment,
            conn,
        } => {
            let c = client(&conn)?;
            let r: ApprovalView = c
                .post(
                    &format!("/v1/runs/{}/approvals/{}", seg(&run), seg(&step)),
                    &Decide { approve, comment },
                )
                .await?;
            print(conn.output, &r, |r| {
                format!(
                    "{} `{}` of run {}\n",
                    if approve { "approved" } else { "rejected" },
                    r.step,
                    r.run
                )
            })
        }
        Command::Approvals { tenant, all, conn } => {
            let c = client(&conn)?;
            let mut q = vec![("pending", (!all).to_string())];
            opt(&mut q, "tenant", &tenant);
            let r: Vec<ApprovalView> = c.get("/v1/approvals", &q).await?;
            print(conn.output, &r, |r| {
                let mut t = Table::new(vec![
                    "RUN",
                    "STEP",
                    "TENANT",
                    "REQUESTED",
                    "EXPIRES",
                    "DECIDED",
                ]);
                for a in r {
                    t.row(vec![
                        a.run.clone(),
                        a.step.clone(),
                        a.tenant.clone(),
                        a.requested_at.clone(),
                        a.expires_at.clone().unwrap_or_default(),
                        a.decided_at.clone().unwrap_or_default(),
                    ]);
                }
                t.render()
            })
        }
        Command::Population {
            flow,
            tenant,
            status,
            version,
            failed_in_a_row,
            limit,
            cursor,
            conn,
        } => {
            let c = client(&conn)?;
            let mut q = vec![("flow", flow.clone()), ("limit", limit.to_string())];
            opt(&mut q, "tenant", &tenant);
            opt(&mut q, "status", &status);
            opt(&mut q, "version", &version);
            opt(
                &mut q,
                "failed_in_a_row",
                &failed_in_a_row.map(|n| n.to_string()),
            );
            opt(&mut q, "cursor", &cursor);
            let page: Page<PopulationMember> = c.get("/v1/population", &q).await?;
            let mut cq = vec![("flow", flow)];
            opt(&mut cq, "tenant", &tenant);
            let counts: PopulationCountsView = c.get("/v1/population/counts", &cq).await?;
            let both = serde_json::json!({ "counts": counts, "page": page });
            print(conn.output, &both, |_| population_text(&counts, &page))
        }
        Command::Cluster(ClusterCommand::Status { conn }) => {
            let c = client(&conn)?;
            let r: ClusterView = c.get("/v1/cluster", &[]).await?;
            print(conn.output, &r, cluster_text)
        }
        Command::Schedule(sc) => schedule_command(sc).await,
        Command::Bulk(bc) => bulk::bulk_command(bc).await,
        Command::Tenant(tc) => tenant_command(tc).await,
        Command::Token(tc) => token_command(tc).await,
        Command::Registry {
            tenant,
            kind,
            name,
            conn,
        } => {
            let c = client(&conn)?;
            let mut q = Vec::new();
            opt(&mut q, "tenant", &tenant);
            opt(&mut q, "kind", &kind);
            opt(&mut q, "name", &name);
            let r: Vec<RegistryView> = c.get("/v1/registry", &q).await?;
            print(conn.output, &r, |r| {
                let mut t = Table::new(vec![
                    "KIND",
                    "NAME",
                    "VERSION",
                    "STAGE",
                    "RUN",
                    "STEP",
                    "REGISTERED",
                ]);
                for e in r {
                    t.row(vec![
                        e.kind.clone(),
                        e.name.clone(),
                        e.version.to_string(),
                        e.entry
                            .get("stage")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        e.lineage.run.clone(),
                        e.lineage.step.clone(),
                        e.registered_at.clone(),
                    ]);
                }
                t.render()
            })
        }
    }
}

async fn run_command(rc: RunCommand) -> anyhow::Result<()> {
    match rc {
        RunCommand::Start {
            flow,
            tenant,
            input,
            version,
            id,
            key,
            conn,
        } => {
            let input: Option<Value> = input
                .map(|t| {
                    serde_json::from_str(&t)
                        .context("--input must be a JSON object, e.g. '{\"tenant\": \"acme\"}'")
                })
                .transpose()?;
            let c = client(&conn)?;
            let r: RunView = c
                .post(
                    "/v1/runs",
                    &StartRun {
                        flow,
                        tenant,
                        version,
                        input,
                        id,
                        input_refs: None,
                        key,
                    },
                )
                .await?;
            print(conn.output, &r, run_text)
        }
        RunCommand::Get { id, conn } => {
            let c = client(&conn)?;
            let r: RunView = c.get(&format!("/v1/runs/{}", seg(&id)), &[]).await?;
            print(conn.output, &r, run_text)
        }
        RunCommand::List {
            tenant,
            flow,
            version,
            status,
            step,
            error,
            key,
            since,
            until,
            limit,
            cursor,
            conn,
        } => {
            let c = client(&conn)?;
            let mut q = vec![("limit", limit.to_string())];
            opt(&mut q, "tenant", &tenant);
            opt(&mut q, "flow", &flow);
            opt(&mut q, "version", &version);
            opt(&mut q, "status", &status);
            opt(&mut q, "step", &step);
            opt(&mut q, "error", &error);
            opt(&mut q, "key", &key);
            opt(&mut q, "since", &since);
            opt(&mut q, "until", &until);
            opt(&mut q, "cursor", &cursor);
            let r: Page<RunSummary> = c.get("/v1/runs", &q).await?;
            print(conn.output, &r, |r| {
                let mut t = Table::new(vec!["RUN", "TENANT", "FLOW", "STATUS", "CREATED", "ERROR"]);
                for x in &r.items {
                    t.row(vec![
                        x.id.clone(),
                        x.tenant.clone(),
                        x.flow.clone(),
                        x.status.clone(),
                        x.created_at.clone(),
                        match (&x.error_code, &x.failed_step) {
                            (Some(c), Some(s)) => format!("{c} at {s}"),
                            (Some(c), None) => c.clone(),
                            _ => String::new(),
                        },
                    ]);
                }
                let mut out = t.render();
                if let Some(n) = &r.next {
                    out.push_str(&format!("more: --cursor {n}\n"));
                }
                out
            })
        }
        RunCommand::Events { id, conn } => {
            let c = client(&conn)?;
            let r: Vec<EventView> = c.get(&format!("/v1/runs/{}/events", seg(&id)), &[]).await?;
            print(conn.output, &r, |r| {
                let mut t = Table::new(vec!["SEQ", "AT", "EVENT", "STATUS AFTER"]);
                for e in r {
                    t.row(vec![
                        e.seq.to_string(),
                        e.at.clone(),
                        describe_event(&e.event),
                        e.status.clone(),
                    ]);
                }
                t.render()
            })
        }
        RunCommand::Cancel { id, reason, conn } => {
            let c = client(&conn)?;
            let r: RunView = c
                .post(
                    &format!("/v1/runs/{}/cancel", seg(&id)),
                    &CancelRun { reason },
                )
                .await?;
            print(conn.output, &r, run_text)
        }
        RunCommand::Retry { id, reason, conn } => {
            let c = client(&conn)?;
            let r: RunView = c
                .post(
                    &format!("/v1/runs/{}/retry", seg(&id)),
                    &RetryRun { reason },
                )
                .await?;
            print(conn.output, &r, run_text)
        }
    }
}

async fn schedule_command(sc: ScheduleCommand) -> anyhow::Result<()> {
    match sc {
        ScheduleCommand::List {
            tenant,
            key,
            flow,
            limit,
            mut cursor,
            conn,
        } => {
            let c = client(&conn)?;
            let mut all: Vec<ScheduleView> = Vec::new();
            // Page after page, each after the last id of the one before.
            loop {
                let want = limit.map_or(MAX_PAGE, |l| {
                    (l as usize - all.len()).min(MAX_PAGE as usize) as u32
                });
                if want == 0 {
                    break;
                }
                let mut q = vec![("limit", want.to_string())];
                opt(&mut q, "tenant", &tenant);
                opt(&mut q, "key", &key);
                opt(&mut q, "flow", &flow);
                opt(&mut q, "cursor", &cursor);
                let page: Vec<ScheduleView> = c.get("/v1/schedules", &q).await?;
                let full = page.len() as u32 == want;
                cursor = page.last().map(|s| s.id.clone());
                all.extend(page);
                if !full {
                    break;
                }
            }
            print(conn.output, &all, schedules_text)
        }
        ScheduleCommand::Create {
            flow,
            cron,
            tenant,
            spec,
            conn,
        } => {
            let c = client(&conn)?;
            let mut req = spec.request(Some(cron))?;
            req.flow = Some(flow);
            req.tenant = tenant;
            let r: ScheduleView = c.post("/v1/schedules", &req).await?;
            print(conn.output, &vec![r], schedules_text)
        }
        ScheduleCommand::Update {
            id,
            cron,
            spec,
            resumed,
            conn,
        } => {
            let c = client(&conn)?;
            let mut req = spec.request(cron)?;
            if resumed {
                req.paused = Some(false);
            }
            let r: ScheduleView = c
                .patch(&format!("/v1/schedules/{}", seg(&id)), &req)
                .await?;
            print(conn.output, &vec![r], schedules_text)
        }
        ScheduleCommand::Delete { id, conn } => {
            let c = client(&conn)?;
            let r: ScheduleView = c.delete(&format!("/v1/schedules/{}", seg(&id))).await?;
            print(conn.output, &vec![r], schedules_text)
        }
        ScheduleCommand::Pause { id, conn } => {
            let c = client(&conn)?;
            let r: ScheduleView = c
                .post(&format!("/v1/schedules/{}/pause", seg(&id)), &json!({}))
                .await?;
            print(conn.output, &vec![r], schedules_text)
        }
        ScheduleCommand::Resume { id, conn } => {
            let c = client(&conn)?;
            let r: ScheduleView = c
                .post(&format!("/v1/schedules/{}/resume", seg(&id)), &json!({}))
                .await?;
            print(conn.output, &vec![r], schedules_text)
        }
        ScheduleCommand::Backfill { id, from, to, conn } => {
            let c = client(&conn)?;
            let r: BackfillResult = c
                .post(
                    &format!("/v1/schedules/{}/backfill", seg(&id)),
                    &Backfill { from, to },
                )
                .await?;
            print(conn.output, &r, |r| {
                let mut s = format!("started {} runs\n", r.runs.len());
                for id in &r.runs {
                    s.push_str(id);
                    s.push('\n');
                }
                s
            })
        }
        ScheduleCommand::Preview {
            cron,
            tz,
            from,
            count,
        } => {
            let from_ms = match from {
                Some(f) => eflow_core::time::parse_rfc3339(&f)
                    .and_then(|t| u64::try_from(t).ok())
                    .with_context(|| {
                        format!(
                            "--from `{f}` is not an RFC 3339 time: write e.g. 2026-03-01T00:00:00Z"
                        )
                    })?,
                None => crate::clock::Clock::now_ms(&crate::clock::SystemClock),
            };
            let times = eflow_core::schedule::preview(&cron, &tz, from_ms, count)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for t in times {
                write_stdout(&format!("{}\n", eflow_core::time::format_rfc3339(t)))?;
            }
            Ok(())
        }
    }
}

async fn tenant_command(tc: TenantCommand) -> anyhow::Result<()> {
    match tc {
        TenantCommand::Create {
            id,
            max_active_runs,
            max_starts_per_sec,
            allow_egress,
            conn,
        } => {
            let c = client(&conn)?;
            let r: TenantCreated = c
                .post(
                    "/v1/tenants",
                    &CreateTenant {
                        id,
                        max_active_runs,
                        max_starts_per_sec,
                        allow_egress,
                    },
                )
                .await?;
            print(conn.output, &r, |r| {
                format!(
                    "created tenant {}\ntoken (shown once, store it): {}\n",
                    r.tenant.id, r.token
                )
            })
        }
        TenantCommand::List { conn } => {
            let c = client(&conn)?;
            let r: Vec<TenantView> = c.get("/v1/tenants", &[]).await?;
            print(conn.output, &r, |r| {
                let mut t = Table::new(vec![
                    "TENANT",
                    "CREATED",
                    "MAX ACTIVE RUNS",
                    "MAX STARTS/S",
                    "HISTORY KEPT",
                ]);
                for x in r {
                    t.row(vec![
                        x.id.clone(),
                        x.created_at.clone(),
                        x.max_active_runs.to_string(),
                        x.max_starts_per_sec.to_string(),
                        x.history_retention.clone(),
                    ]);
                }
                t.render()
            })
        }
        TenantCommand::Update {
            id,
            history_retention,
            allow_egress,
            no_egress,
            conn,
        } => {
            let allow_egress = if no_egress {
                Some(Vec::new())
            } else {
                (!allow_egress.is_empty()).then_some(allow_egress)
            };
            if history_retention.is_none() && allow_egress.is_none() {
                bail!(
                    "nothing to change: give --history-retention DURATION (or `default`), --allow-egress RULE or --no-egress"
                );
            }
            let c = client(&conn)?;
            let r: TenantView = c
                .patch(
                    &format!("/v1/tenants/{}", seg(&id)),
                    &UpdateTenant {
                        allow_egress,
                        history_retention,
                    },
                )
                .await?;
            print(conn.output, &r, |r| {
                format!(
                    "tenant {}: history kept {}, egress rules [{}]\n",
                    r.id,
                    r.history_retention,
                    r.allow_egress.join(", ")
                )
            })
        }
        TenantCommand::Purge { id, yes, conn } => {
            if !yes {
                bail!(
                    "purging deletes every flow, run, event, schedule and history row of `{id}`: add --yes to confirm"
                );
            }
            let c = client(&conn)?;
            let r: PurgeResult = c.delete(&format!("/v1/tenants/{}", seg(&id))).await?;
            print(conn.output, &r, |r| {
                format!(
                    "purged tenant {}: {} rows deleted\n",
                    r.tenant, r.rows_deleted
                )
            })
        }
    }
}

/// The API path of the tokens of `owner`; without `--tenant` or `--admin`,
/// the tenant of the token in use.
async fn tokens_path(c: &Client, owner: &TokenOwner) -> anyhow::Result<String> {
    if owner.admin {
        return Ok("/v1/admin/tokens".into());
    }
    let tenant = match &owner.tenant {
        Some(t) => t.clone(),
        None => {
            let me: Whoami = c.get("/v1/whoami", &[]).await?;
            me.tenant.context(
                "an admin token has no tenant of its own: add --tenant TENANT, or --admin for the admin tokens",
            )?
        }
    };
    Ok(format!("/v1/tenants/{}/tokens", seg(&tenant)))
}

fn tokens_text(r: &Vec<TokenView>) -> String {
    let mut t = Table::new(vec![
        "TOKEN", "NAME", "TENANT", "CREATED", "EXPIRES", "LAST4",
    ]);
    for x in r {
        t.row(vec![
            x.id.clone(),
            x.name.clone(),
            x.tenant.clone().unwrap_or_else(|| "(admin)".into()),
            x.created_at.clone(),
            match (&x.expires_at, x.expired) {
                (Some(e), true) => format!("{e} (expired)"),
                (Some(e), false) => e.clone(),
                (None, _) => "never".into(),
            },
            x.last4.clone().unwrap_or_default(),
        ]);
    }
    t.render()
}

fn token_created_text(verb: &str, r: &TokenCreated) -> String {
    format!(
        "{verb} token {} ({})\nsecret (shown once, store it): {}\n",
        r.token.id, r.token.name, r.secret
    )
}

async fn token_command(tc: TokenCommand) -> anyhow::Result<()> {
    match tc {
        TokenCommand::List { owner, conn } => {
            let c = client(&conn)?;
            let path = tokens_path(&c, &owner).await?;
            let r: Vec<TokenView> = c.get(&path, &[]).await?;
            print(conn.output, &r, tokens_text)
        }
        TokenCommand::Create {
            name,
            owner,
            expires_in,
            expires_at,
            conn,
        } => {
            let c = client(&conn)?;
            let path = tokens_path(&c, &owner).await?;
            let r: TokenCreated = c
                .post(
                    &path,
                    &CreateToken {
                        name,
                        expires_in,
                        expires_at,
                    },
                )
                .await?;
            print(conn.output, &r, |r| token_created_text("created", r))
        }
        TokenCommand::Revoke { id, owner, conn } => {
            let c = client(&conn)?;
            let path = tokens_path(&c, &owner).await?;
            let r: TokenView = c.delete(&format!("{path}/{}", seg(&id))).await?;
            print(conn.output, &r, |r| {
                format!("revoked token {} ({})\n", r.id, r.name)
            })
        }
        TokenCommand::Rotate {
            id,
            owner,
            grace,
            expires_in,
            expires_at,
            save,
            data,
            conn,
        } => {
            let c = client(&conn)?;
            let path = tokens_path(&c, &owner).await?;
            let r: TokenCreated = c
                .post(
                    &format!("{path}/{}/rotate", seg(&id)),
                    &RotateToken {
                        grace,
                        expires_in,
                        expires_at,
                    },
                )
                .await?;
            // Printed first: if it cannot be saved, the secret is not lost.
            print(conn.output, &r, |r| token_created_text("rotated: new", r))?;
            if save {
                let file = data.join("admin-token");
                crate::server::write_secret(&file, &r.secret).with_context(|| {
                    "the token was rotated, but its new secret (printed above) could not be saved: store it yourself"
                })?;
                eprintln!("eflow: saved the new admin token to {}", file.display());
            }
            Ok(())
        }
    }
}

fn short(v: &str) -> String {
    v.strip_prefix("sha256:")
        .map(|h| h.chars().take(12).collect())
        .unwrap_or_else(|| v.to_string())
}

fn population_text(counts: &PopulationCountsView, page: &Page<PopulationMember>) -> String {
    let by_status: Vec<String> = counts
        .by_status
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    let mut out = format!(
        "{} keys of {}: {}\n",
        counts.keys,
        counts.flow,
        if by_status.is_empty() {
            "none".to_string()
        } else {
            by_status.join(", ")
        }
    );
    let mut t = Table::new(vec![
        "KEY",
        "TENANT",
        "STATUS",
        "FAILED IN A ROW",
        "VERSION",
        "RUN",
        "UPDATED",
    ]);
    for m in &page.items {
        t.row(vec![
            m.key.clone(),
            m.tenant.clone(),
            match &m.error_code {
                Some(e) => format!("{} ({e})", m.status),
                None => m.status.clone(),
            },
            m.failed_in_a_row.to_string(),
            short(&m.version),
            m.run.clone(),
            m.updated_at.clone(),
        ]);
    }
    out.push_str(&t.render());
    if let Some(n) = &page.next {
        out.push_str(&format!("more: --cursor {n}\n"));
    }
    out
}

fn run_text(r: &RunView) -> String {
    let mut s = format!(
        "run {}  {}  flow {} @ {}  tenant {}\n",
        r.id,
        r.status,
        r.flow,
        short(&r.version),
        r.tenant
    );
    if let Some(k) = &r.key {
        s.push_str(&format!("key {k}\n"));
    }
    if r.retries > 0 {
        let times = if r.retries == 1 { "once" } else { "times" };
        let n = if r.retries == 1 {
            String::new()
        } else {
            format!("{} ", r.retries)
        };
        s.push_str(&format!("retried {n}{times}\n"));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!(
            "error {}{}: {}\n",
            e.code,
            e.step
                .as_ref()
                .map(|s| format!(" at {s}"))
                .unwrap_or_default(),
            e.message
        ));
    }
    let mut t = Table::new(vec!["STEP", "STATUS", "ATTEMPT", "DETAIL"]);
    for st in &r.steps {
        let detail = match (&st.error, &st.children) {
            (Some(e), _) => format!("{}: {}", e.code, e.message),
            (None, Some(c)) => {
                let total: u32 = c.values().sum();
                let done: u32 = ["succeeded", "failed"]
                    .iter()
                    .filter_map(|k| c.get(*k))
                    .sum();
                let counts = c
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("{done} of {total} done: {counts}")
            }
            _ => match st.iteration {
                Some(i) => format!("iteration {i}"),
                None => String::new(),
            },
        };
        t.row(vec![
            st.id.clone(),
            st.status.clone(),
            st.attempt.map(|a| a.to_string()).unwrap_or_default(),
            detail,
        ]);
    }
    s.push_str(&t.render());
    if let Some(res) = &r.result {
        s.push_str(&format!("result: {res}\n"));
    }
    s
}

fn schedules_text(r: &Vec<ScheduleView>) -> String {
    let mut t = Table::new(vec![
        "SCHEDULE", "FLOW", "KEY", "CRON", "ZONE", "PAUSED", "NEXT", "LAST",
    ]);
    for x in r {
        t.row(vec![
            x.id.clone(),
            x.flow.clone(),
            x.key.clone().unwrap_or_default(),
            x.cron.clone(),
            x.timezone.clone(),
            if x.paused { "yes".into() } else { "no".into() },
            x.next_fire.clone().unwrap_or_default(),
            x.last_fire.clone().unwrap_or_default(),
        ]);
    }
    t.render()
}

fn describe_event(e: &Value) -> String {
    let kind = e.get("type").and_then(Value::as_str).unwrap_or("?");
    match e.get("node").and_then(Value::as_str) {
        Some(n) => format!("{kind} {n}"),
        None => match e
            .get("timer")
            .and_then(|t| t.get("kind"))
            .and_then(Value::as_str)
        {
            Some(t) => format!("{kind} {t}"),
            None => kind.to_string(),
        },
    }
}

/// The IR of the given paths, as one bundle (one atomic deploy): `.json` files
/// (or a folder of them, as `eflowc compile --out-dir` writes) are read as IR
/// and united; `.eflow` files and folders of them are compiled together, and
/// any error stops the deploy with the compiler's own report.
pub fn load_ir(paths: &[PathBuf]) -> anyhow::Result<Value> {
    use eflow_compiler::bundles::{Error, load};
    let bundle = match load(paths) {
        Ok(b) => b,
        Err(Error::Diagnostics(errors)) => {
            let mut msg = format!("{} error(s); nothing was deployed:\n", errors.len());
            for d in errors.iter().take(20) {
                msg.push_str(&format!("  {}: {}\n", d.code, d.message));
            }
            msg.push_str("run `eflowc check` on these files for the full report");
            bail!(msg);
        }
        Err(e) => bail!("{e}; nothing was deployed"),
    };
    Ok(serde_json::to_value(bundle)?)
}

/// The cluster as a person reads it: members, then shards per owner (a
/// count and their ranges, not one line per shard), then consumers.
fn cluster_text(r: &ClusterView) -> String {
    let mut members = Table::new(vec!["MEMBER", "ROLES", "STARTED", "ALIVE UNTIL", "ALIVE"]);
    for m in &r.members {
        members.row(vec![
            m.id.clone(),
            m.roles.join(","),
            m.started_at.clone(),
            m.expires_at.clone(),
            if m.alive { "yes" } else { "no" }.to_string(),
        ]);
    }
    let mut owners: Vec<(&str, bool, Vec<u32>, &str)> = Vec::new();
    for s in &r.shards {
        match owners
            .iter_mut()
            .find(|(o, held, _, _)| *o == s.owner && *held == s.held)
        {
            Some((_, _, shards, until)) => {
                shards.push(s.shard);
                if s.expires_at.as_str() < *until {
                    *until = &s.expires_at;
                }
            }
            None => owners.push((&s.owner, s.held, vec![s.shard], &s.expires_at)),
        }
    }
    let mut shards = Table::new(vec!["OWNER", "SHARDS", "WHICH", "LEASE ENDS (FIRST)"]);
    for (owner, held, list, until) in owners {
        shards.row(vec![
            if held {
                owner.to_string()
            } else {
                format!("{owner} (expired)")
            },
            list.len().to_string(),
            ranges(&list),
            until.to_string(),
        ]);
    }
    let mut consumers = Table::new(vec!["CONSUMER", "ACTIVE IN", "CURSOR", "LAG (EVENTS)"]);
    for c in &r.consumers {
        consumers.row(vec![
            c.name.clone(),
            c.owner.clone().unwrap_or_else(|| "none".to_string()),
            c.cursor.to_string(),
            c.lag.to_string(),
        ]);
    }
    format!(
        "{}\n{}\n{}",
        members.render(),
        shards.render(),
        consumers.render()
    )
}

/// `0-3,7,9-10` for shards 0, 1, 2, 3, 7, 9, 10 (in order).
fn ranges(shards: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < shards.len() {
        let start = shards[i];
        let mut end = start;
        while i + 1 < shards.len() && shards[i + 1] == end + 1 {
            i += 1;
            end = shards[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}
