//! What the API offers, with who may do it: deploy, runs, approvals,
//! callbacks, schedules, tenants, tokens. The HTTP layer (`api`) only maps
//! requests and errors onto this.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use eflow_core::{Event, EventKind, Rejection, Run, RunStatus, StepError};
use eflow_ir::{Bundle, StepKind};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::api::ApiError;
use crate::api::model::*;
use crate::byte_lru::ByteLru;
use crate::clock::SharedClock;
use crate::engine::{self, CallbackClaim, CallbackKeys, Deployed, Engine, Finished};
use crate::history::History;
use crate::quota::{Asker, Ledger, Refusal};
use crate::scheduler::{BackfillError, Scheduler};
use crate::store::{self, RunMeta, Store, TenantRow};

pub mod bulk;
mod flows;
mod lineage;
mod population;
mod schedules;
mod timeline;
mod tokens;

pub type ApiResult<T> = Result<T, ApiError>;

/// Who is calling: what its token may act for, and whose token it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub scope: Scope,
    /// The token's id (`t-…`), as the token list shows it.
    pub token: String,
    /// The token's name: whose it is (`alice@example.com`, `ci`). This, and
    /// never a name in a request body, is who did what the caller does.
    pub name: String,
}

/// What a token may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Tenant(String),
}

impl Caller {
    /// The tenant this caller acts for: its own, or for an admin the one named.
    pub fn tenant<'a>(&'a self, named: Option<&'a str>) -> ApiResult<&'a str> {
        match (&self.scope, named) {
            (Scope::Tenant(t), None) => Ok(t),
            (Scope::Tenant(t), Some(n)) if t == n => Ok(t),
            (Scope::Tenant(_), Some(_)) => Err(ApiError::forbidden()),
            (Scope::Admin, Some(n)) => Ok(n),
            (Scope::Admin, None) => Err(ApiError::bad_request(
                "tenant_required",
                "an admin token acts for no tenant by itself: name one with `tenant` (`--tenant` in the CLI)",
            )),
        }
    }

    /// The tenant a list is limited to: the named one (for an admin, none
    /// means every tenant), and always its own for a tenant's token.
    pub fn scope<'a>(&'a self, named: Option<&'a str>) -> ApiResult<Option<&'a str>> {
        match self.scope {
            Scope::Admin => Ok(named),
            Scope::Tenant(_) => self.tenant(named).map(Some),
        }
    }

    pub fn may_see(&self, tenant: &str) -> bool {
        match &self.scope {
            Scope::Admin => true,
            Scope::Tenant(t) => t == tenant,
        }
    }

    pub fn admin_only(&self) -> ApiResult<()> {
        match self.scope {
            Scope::Admin => Ok(()),
            Scope::Tenant(_) => Err(ApiError::forbidden()),
        }
    }

    /// A stored run id as this caller names it: a tenant sees the ids it
    /// chose without the `TENANT:` their stored key starts with
    /// ([`client_run_key`]); an admin sees stored ids as they are.
    pub fn shown_run(&self, id: &str) -> String {
        match &self.scope {
            Scope::Tenant(t) => id
                .strip_prefix(t.as_str())
                .and_then(|rest| rest.strip_prefix(':'))
                .unwrap_or(id)
                .to_string(),
            Scope::Admin => id.to_string(),
        }
    }
}

/// The stored id of a run whose id a client chose: `TENANT:ID`. Each tenant
/// chooses its ids on its own: tenant B's `x` neither blocks nor finds tenant
/// A's. Neither a tenant nor a client's id holds a `:` ([`check_name`]), and
/// ids the server makes (`r-…`, a schedule's, a child's `PARENT.step.N`) start
/// with neither, so no two keys meet.
pub fn client_run_key(tenant: &str, id: &str) -> String {
    format!("{tenant}:{id}")
}

pub use crate::quota::Quotas;
pub use bulk::BulkChange;
pub use flows::{FlowDetail, FlowVersion};
pub use lineage::{UseView, VersionLineage};
pub use schedules::MAX_PAGE as MAX_SCHEDULE_PAGE;
pub use schedules::{BackfillPreview, FireTime};
pub use timeline::{AttemptBar, Timeline};

/// Where the run a caller named was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// The engine's store: in progress, or finished lately.
    Engine,
    /// The history: finished, and swept from the engine's store.
    History,
}

/// The id of an event as stored.
#[derive(serde::Deserialize)]
struct EventId {
    #[serde(default)]
    id: String,
}

/// The longest joined list a run's view shows whole.
const RESULTS_SHOWN: usize = 1_000;

/// The largest value kept by reference that a run's view shows whole.
const VALUE_SHOWN: u64 = 1 << 20;

/// The most elements of a list kept by reference in one page.
pub const VALUE_PAGE_MAX: u32 = 10_000;

/// The most callbacks one `POST /v1/callbacks` carries.
pub const MAX_BATCHED_CALLBACKS: usize = 1_000;

/// Values kept by reference, decoded, that the service keeps for paging: at
/// most this many bytes of their JSON.
const VALUE_CACHE_BYTES: u64 = 32 << 20;

/// How long a run list waits for the history to write what the engine has
/// committed before it answers with what the history holds.
const LIST_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a purge on a cluster waits for the history's consumer to reach
/// the log's head before it deletes the tenant's history.
const PURGE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a tenant's purge stays held by the process carrying it out
/// without a renewal; it renews every third of this while it works, so
/// another process takes it over only from one that stopped
/// ([`Service::finish_purges`]).
pub const PURGE_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    store: Store,
    clock: SharedClock,
    keys: CallbackKeys,
    history: History,
    scheduler: Scheduler,
    /// What each tenant uses of its quotas; shared with the scheduler.
    ledger: Arc<Ledger>,
    /// The server's `--history-retention`, shown for tenants without their own.
    retention: std::time::Duration,
    /// How long failed runs stay retryable (`--retry-window`), for the
    /// message that says it passed.
    retry_window: std::time::Duration,
    /// Tenants and the head versions of flows, read on every start: cached,
    /// and dropped on every change (create, purge, deploy).
    tenants: Mutex<HashMap<String, TenantRow>>,
    /// Token hash → caller and when its token expires, for tokens seen;
    /// dropped on purge, revocation and rotation.
    callers: Mutex<HashMap<String, (Caller, Option<u64>)>>,
    heads: Mutex<HashMap<(String, String), store::FlowRow>>,
    /// Values kept by reference, decoded, by (tenant, hash).
    values: Mutex<ByteLru<(String, String), Arc<Value>>>,
    /// This process, as the holder of the tenant purges it carries out: its
    /// cluster member id, or one name for every run of a process alone on
    /// its store (the embedded default), so that after a crash it takes back
    /// its own purge at once instead of waiting out its hold.
    purger: String,
}

pub fn token_hash(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token: 32 bytes from the OS, URL-safe.
pub fn new_token(prefix: &str) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = (0..2)
        .flat_map(|_| uuid::Uuid::new_v4().into_bytes())
        .collect();
    format!(
        "{prefix}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

impl Service {
    /// The process's parts, wired once by `server.rs`.
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        engine: Engine,
        clock: SharedClock,
        keys: CallbackKeys,
        history: History,
        scheduler: Scheduler,
        ledger: Arc<Ledger>,
        retention: crate::retention::Options,
        purger: String,
    ) -> ApiResult<Self> {
        let store = engine.store().clone();
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                store,
                clock,
                keys,
                history,
                scheduler,
                ledger,
                retention: retention.history_retention,
                retry_window: retention.retry_window.max(retention.sweep_after),
                tenants: Mutex::default(),
                callers: Mutex::default(),
                heads: Mutex::default(),
                values: Mutex::new(ByteLru::new(VALUE_CACHE_BYTES)),
                purger,
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn history(&self) -> &History {
        &self.inner.history
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.inner.scheduler
    }

    fn now(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    fn db(&self) -> &Store {
        &self.inner.store
    }

    /// A run ended (a child too): release its quota.
    pub fn finished(&self, f: &Finished) {
        self.inner.ledger.finished(&f.tenant, f.parent.as_deref());
    }

    // ---- tenants -------------------------------------------------------------

    pub async fn create_tenant(
        &self,
        caller: &Caller,
        req: CreateTenant,
    ) -> ApiResult<TenantCreated> {
        caller.admin_only()?;
        check_name("tenant", &req.id)?;
        let row = TenantRow {
            id: req.id.clone(),
            created_at: self.now(),
            max_active_runs: req.max_active_runs,
            max_starts_per_sec: req.max_starts_per_sec,
            allow_egress: egress_rules(&req.allow_egress)?,
            history_retention_ms: None,
        };
        if !self.db().create_tenant(&row).await? {
            if self.db().pending_purges().await?.contains(&req.id) {
                return Err(ApiError::new(
                    409,
                    "purge_in_progress",
                    format!(
                        "tenant `{}` is being purged: create it again once the purge answered",
                        req.id
                    ),
                ));
            }
            return Err(ApiError::new(
                409,
                "tenant_exists",
                format!("tenant `{}` exists already", req.id),
            ));
        }
        // The id may be a purged tenant's: its new runs are applied again.
        self.inner.engine.resume_tenant(&req.id).await?;
        let (_, token) = self
            .insert_new_token(Some(&req.id), "default", None)
            .await?;
        tracing::info!(tenant = %req.id, "tenant created");
        Ok(TenantCreated {
            tenant: tenant_view(&row, &self.inner.ledger, self.inner.retention),
            token,
        })
    }

    pub async fn tenants(&self, caller: &Caller) -> ApiResult<Vec<TenantView>> {
        let rows = self.db().tenants().await?;
        Ok(rows
            .iter()
            .filter(|t| caller.may_see(&t.id))
            .map(|t| tenant_view(t, &self.inner.ledger, self.inner.retention))
            .collect())
    }

    /// Changes a tenant's settings (admin): today its egress rules.
    pub async fn update_tenant(
        &self,
        caller: &Caller,
        id: &str,
        req: UpdateTenant,
    ) -> ApiResult<TenantView> {
        caller.admin_only()?;
        if let Some(rules) = &req.allow_egress {
            let rules = egress_rules(rules)?;
            if !self.db().set_tenant_egress(id, &rules).await? {
                return Err(ApiError::not_found("tenant", id));
            }
            self.inner.engine.egress().forget(id);
            tracing::info!(tenant = %id, allow_egress = ?rules, "tenant egress rules set");
        }
        if let Some(text) = &req.history_retention {
            let ms = match text.trim() {
                "default" => None,
                t => Some(
                    humantime::parse_duration(t)
                        .map_err(|_| {
                            ApiError::bad_request(
                                "invalid_retention",
                                format!(
                                    "`history_retention` is a duration such as `30d` or `8760h`, or `default` for the server's; `{text}` is neither"
                                ),
                            )
                        })?
                        .as_millis()
                        .min(u128::from(u64::MAX)) as u64,
                ),
            };
            if !self.db().set_tenant_retention(id, ms).await? {
                return Err(ApiError::not_found("tenant", id));
            }
            tracing::info!(tenant = %id, history_retention_ms = ?ms, "tenant history retention set");
        }
        let row = self
            .db()
            .tenant(id)
            .await?
            .ok_or_else(|| ApiError::not_found("tenant", id))?;
        Ok(tenant_view(&row, &self.inner.ledger, self.inner.retention))
    }

    pub async fn purge_tenant(&self, caller: &Caller, id: &str) -> ApiResult<PurgeResult> {
        caller.admin_only()?;
        match self.db().begin_purge(id, &self.purge_hold()).await? {
            store::PurgeBegun::Held => {}
            store::PurgeBegun::NoTenant => return Err(ApiError::not_found("tenant", id)),
            store::PurgeBegun::Busy { owner, until } => {
                return Err(ApiError::new(
                    409,
                    "purge_in_progress",
                    format!(
                        "tenant `{id}` is being purged by process `{owner}`, which holds the purge until {}; if that process stopped, another takes the purge over after then (or purge again then)",
                        rfc3339(until)
                    ),
                ));
            }
        }
        let rows_deleted = self.finish_purge(id).await?;
        tracing::info!(tenant = %id, rows_deleted, "tenant purged");
        Ok(PurgeResult {
            tenant: id.into(),
            rows_deleted,
        })
    }

    /// This process's hold on a purge, from now for [`PURGE_LEASE`].
    fn purge_hold(&self) -> store::PurgeHold {
        let now = self.now();
        store::PurgeHold {
            owner: self.inner.purger.clone(),
            now,
            until: now + PURGE_LEASE.as_millis() as u64,
        }
    }

    /// Carries out a purge this process holds ([`store::Store::begin_purge`]):
    /// stops the tenant's runs in every worker (nothing of it is applied,
    /// created or carried out from then on, so nothing is written back),
    /// deletes its rows from the engine's store, then from the history (no
    /// later batch of the stream holds any), and only then ends the purge.
    /// The hold is renewed while it works; each deletion happens only while
    /// it is still this process's, so a purge another process took over
    /// (this one was stopped past its lease) and a tenant created again
    /// since are left alone. A process that died part way leaves its purge
    /// to be taken over once its lease ran out ([`Service::finish_purges`]).
    async fn finish_purge(&self, id: &str) -> ApiResult<u64> {
        let _renewing = self.keep_purge_held(id);
        let owner = self.inner.purger.as_str();
        let lost = || {
            ApiError::new(
                409,
                "purge_in_progress",
                format!(
                    "the purge of tenant `{id}` was taken over by another process while this one was held up past its lease; that process finishes it"
                ),
            )
        };
        self.forget(id);
        self.inner.engine.stop_tenant(id).await?;
        // Every event of the tenant is at or before the log's head now
        // (nothing of it is applied any more); read before its rows leave,
        // which may lower the head.
        let head = self
            .inner
            .engine
            .bus()
            .events()
            .head()
            .await
            .map_err(engine::Error::Bus)?;
        let rows = self.db().purge_tenant(id, owner).await?.ok_or_else(lost)?;
        self.inner
            .engine
            .bus()
            .events()
            .forget_tenant(id)
            .await
            .map_err(engine::Error::Bus)?;
        self.forget(id);
        // On a cluster the history's active consumer may be another
        // process, past this one's lock on the history's writes: a batch it
        // read before the rows left the engine's store could be written
        // during or after the purge below. A batch is written only from the
        // stored cursor it was read after, so once the stored cursor is at
        // the head read above, none read before can be written any more.
        // (Without a consumer for a while, none writes: the log and the
        // stream no longer hold the tenant.)
        if !matches!(self.inner.engine.bus(), crate::bus::Bus::Local(_))
            && !self.inner.history.stored_past(head, PURGE_WAIT).await?
        {
            tracing::warn!(tenant = %id, head, "the history's consumer did not reach the log's head in time; purging its rows anyway");
        }
        // The tenant cannot be created again while the purge is held, so
        // while it is still this process's, the history holds only what
        // the purge is to delete.
        if !self.db().hold_purge(id, &self.purge_hold()).await? {
            return Err(lost());
        }
        let history_rows = self.inner.history.purge(id).await?
            + self.jobs().purge(id).await.map_err(ApiError::internal)?;
        if !self.db().end_purge(id, owner).await? {
            return Err(lost());
        }
        self.inner.ledger.forget(id);
        Ok(rows + history_rows)
    }

    /// Renews this process's hold on `id`'s purge every third of
    /// [`PURGE_LEASE`] until the returned guard is dropped.
    fn keep_purge_held(&self, id: &str) -> AbortOnDrop {
        let (service, id) = (self.clone(), id.to_string());
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(PURGE_LEASE / 3).await;
                match service.db().hold_purge(&id, &service.purge_hold()).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(tenant = %id, error = %e, "cannot renew the hold on a purge; trying again")
                    }
                }
            }
        }))
    }

    /// Takes over and finishes the purges whose holder stopped part way
    /// (its hold ran out), and at `start` those this process held before (a
    /// process alone on its store, started again after a crash): at the
    /// start of a process with the API role, and every half [`PURGE_LEASE`]
    /// after ([`Service::finish_purges_until`]).
    pub async fn finish_purges(&self, start: bool) -> ApiResult<()> {
        let pending = if start {
            self.db().pending_purges().await?
        } else {
            self.db().abandoned_purges(self.now()).await?
        };
        for id in pending {
            // Another process may take it first: then it is not ours.
            if self.db().begin_purge(&id, &self.purge_hold()).await? != store::PurgeBegun::Held {
                continue;
            }
            let rows_deleted = self.finish_purge(&id).await?;
            tracing::info!(tenant = %id, rows_deleted, "an interrupted purge finished");
        }
        Ok(())
    }

    /// [`Service::finish_purges`] every half [`PURGE_LEASE`] until `stop`.
    pub async fn finish_purges_until(self, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(PURGE_LEASE / 2) => {}
            }
            if let Err(e) = self.finish_purges(false).await {
                tracing::warn!(error = %e.message, "cannot finish an interrupted tenant purge; trying again");
            }
        }
    }

    async fn tenant_exists(&self, id: &str) -> ApiResult<TenantRow> {
        if let Some(t) = self
            .inner
            .tenants
            .lock()
            .ok()
            .and_then(|c| c.get(id).cloned())
        {
            return Ok(t);
        }
        let t = self
            .db()
            .tenant(id)
            .await?
            .ok_or_else(|| ApiError::not_found("tenant", id))?;
        if let Ok(mut c) = self.inner.tenants.lock() {
            c.insert(id.to_string(), t.clone());
        }
        Ok(t)
    }

    fn forget(&self, tenant: &str) {
        if let Ok(mut c) = self.inner.callers.lock() {
            c.retain(|_, (caller, _)| caller.scope != Scope::Tenant(tenant.to_string()));
        }
        if let Ok(mut c) = self.inner.tenants.lock() {
            c.remove(tenant);
        }
        if let Ok(mut h) = self.inner.heads.lock() {
            h.retain(|(t, _), _| t != tenant);
        }
    }

    async fn head(
        &self,
        tenant: &str,
        name: &str,
        version: Option<&str>,
    ) -> ApiResult<Option<store::FlowRow>> {
        if version.is_some() {
            return Ok(self.db().flow(tenant, name, version).await?);
        }
        let key = (tenant.to_string(), name.to_string());
        if let Some(f) = self
            .inner
            .heads
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned())
        {
            return Ok(Some(f));
        }
        let f = self.db().flow(tenant, name, None).await?;
        if let (Some(f), Ok(mut c)) = (&f, self.inner.heads.lock()) {
            c.insert(key, f.clone());
        }
        Ok(f)
    }

    // ---- flows ---------------------------------------------------------------

    pub async fn deploy(&self, caller: &Caller, req: DeployRequest) -> ApiResult<DeployResult> {
        let tenant = caller.tenant(req.tenant.as_deref())?.to_string();
        self.tenant_exists(&tenant).await?;
        // The files compiled here are kept with the bundle, for people
        // reading the flow (the console's flow page).
        let mut sources = None;
        let bundle: Bundle = match (req.ir, req.source) {
            (Some(ir), None) => serde_json::from_value(ir).map_err(|e| {
                ApiError::bad_request(
                    "invalid_ir",
                    format!("the IR does not parse: {e}; compile it with `eflowc compile`"),
                )
            })?,
            (None, Some(files)) => {
                sources = Some(serde_json::to_vec(&files).map_err(ApiError::internal)?);
                compile_sources(files)?
            }
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "send either `ir` (compiled JSON) or `source` (file name → .eflow text), not both",
                ));
            }
        };
        let validated = eflow_core::validate(&bundle).map_err(|errors| {
            ApiError::bad_request(
                "invalid_ir",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        if bundle.flows.is_empty() {
            return Err(ApiError::bad_request(
                "empty_bundle",
                "the bundle holds no flow",
            ));
        }
        if !req.allow_breaking {
            self.refuse_breaking(&tenant, &bundle).await?;
        }
        let env = pick_env(&bundle, req.env.as_deref())?;
        let canonical = serde_json::to_vec(&bundle).map_err(ApiError::internal)?;
        let id = format!(
            "b-{}",
            &token_hash(&format!(
                "{tenant}\n{env}\n{}",
                String::from_utf8_lossy(&canonical)
            ))[..24]
        );
        let flows: Vec<(String, String)> = bundle
            .flows
            .iter()
            .map(|f| (f.name.clone(), f.hash.clone()))
            .collect();
        let now = self.now();
        // Every schedule is worked out before anything is written: the
        // bundle, its flows' heads and their schedules commit together.
        let mut schedules = Vec::new();
        for f in &bundle.flows {
            let rows = self
                .inner
                .scheduler
                .rows_for(&tenant, f, &id, now)
                .await
                .map_err(|e| match e {
                    crate::scheduler::RowsError::Invalid(m) => {
                        ApiError::bad_request("invalid_schedule", m)
                    }
                    crate::scheduler::RowsError::Store(e) => e.into(),
                })?;
            schedules.push((f.name.clone(), rows));
        }
        self.db()
            .deploy(&store::Deployment {
                bundle: &id,
                tenant: &tenant,
                env: &env,
                ir: &canonical,
                sources: sources.as_deref(),
                flows: &flows,
                schedules: &schedules,
                now,
            })
            .await?;
        self.forget(&tenant);
        self.inner.engine.deployments().insert(Arc::new(Deployed {
            id: id.clone(),
            tenant: tenant.clone(),
            env: env.clone(),
            bundle: validated,
        }));
        let schedules: usize = schedules.iter().map(|(_, rows)| rows.len()).sum();
        tracing::info!(
            %tenant,
            %env,
            bundle = %id,
            flows = %bundle
                .flows
                .iter()
                .map(|f| format!("{}@{}", f.name, short_version(&f.hash)))
                .collect::<Vec<_>>()
                .join(", "),
            schedules,
            "deployed"
        );
        Ok(DeployResult {
            tenant,
            env,
            bundle: id,
            flows: bundle
                .flows
                .iter()
                .map(|f| DeployedFlow {
                    name: f.name.clone(),
                    version: f.hash.clone(),
                })
                .collect(),
            schedules,
        })
    }

    /// Refuses a deploy that breaks a deployed flow's users (`eflowc diff`'s
    /// breaking changes from each flow's head to its new version), saying what
    /// breaks, how many runs are in progress on the head's bundle and which
    /// schedules start the flow.
    async fn refuse_breaking(&self, tenant: &str, bundle: &Bundle) -> ApiResult<()> {
        let mut lines = Vec::new();
        let mut schedules = None;
        for f in &bundle.flows {
            let Some(head) = self.db().flow(tenant, &f.name, None).await? else {
                continue;
            };
            if head.version == f.hash {
                continue;
            }
            let deployed = self
                .inner
                .engine
                .deployments()
                .get(&head.bundle)
                .await
                .map_err(ApiError::internal)?;
            let Some(old) = deployed.bundle.flow(&f.name) else {
                continue;
            };
            let one = |flow: &eflow_ir::Flow| Bundle {
                ir_version: bundle.ir_version,
                flows: vec![flow.clone()],
            };
            let changes: Vec<_> = eflow_compiler::diff::diff(&one(old.flow), &one(f))
                .into_iter()
                .filter(|c| c.is_breaking())
                .collect();
            if changes.is_empty() {
                continue;
            }
            let running = self
                .db()
                .active_runs_of_bundle(tenant, &head.bundle)
                .await?;
            if schedules.is_none() {
                schedules = Some(self.db().schedules(Some(tenant)).await?);
            }
            let ids: Vec<&str> = schedules
                .iter()
                .flatten()
                .filter(|s| s.flow == f.name)
                .map(|s| s.id.as_str())
                .collect();
            let mut line = format!(
                "flow `{}` ({} run(s) in progress on its deployed bundle {}; schedules: {}):",
                f.name,
                running,
                head.bundle,
                if ids.is_empty() {
                    "none".to_string()
                } else {
                    ids.join(", ")
                }
            );
            for c in changes {
                line.push_str(&format!(
                    " {} {}, {};",
                    c.code,
                    c.message,
                    c.breaks.unwrap_or_default()
                ));
            }
            lines.push(line);
        }
        if lines.is_empty() {
            return Ok(());
        }
        Err(ApiError::new(
            409,
            "breaking_change",
            format!(
                "the deploy would break what depends on the deployed flows: {} \
                 Nothing was deployed; deploy with `--allow-breaking` (`allow_breaking: true`) to deploy anyway",
                lines.join(" ")
            ),
        ))
    }

    pub async fn flows(&self, caller: &Caller, tenant: Option<&str>) -> ApiResult<Vec<FlowView>> {
        let t = caller.scope(tenant)?;
        let rows = self.db().flows(t).await?;
        Ok(rows.into_iter().map(flows::flow_view).collect())
    }

    // ---- runs ----------------------------------------------------------------

    fn admit(&self, tenant: &TenantRow, runs: i64) -> ApiResult<()> {
        self.inner
            .ledger
            .admit(tenant, runs, Asker::Request, self.now())
            .map_err(quota_error)
    }

    fn release(&self, tenant: &str) {
        self.inner.ledger.release(tenant, 1);
    }

    pub async fn start_run(&self, caller: &Caller, req: StartRun) -> ApiResult<RunView> {
        let tenant = caller.tenant(req.tenant.as_deref())?.to_string();
        let t = self.tenant_exists(&tenant).await?;
        let flow = self
            .head(&tenant, &req.flow, req.version.as_deref())
            .await?
            .ok_or_else(|| {
                ApiError::not_found(
                    "flow",
                    &match &req.version {
                        Some(v) => format!("{}@{v}", req.flow),
                        None => req.flow.clone(),
                    },
                )
            })?;
        let input = match req.input {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_input",
                    "`input` must be a JSON object of parameter values",
                ));
            }
        };
        if let Some(id) = &req.id {
            check_name("run id", id)?;
        }
        if let Some(key) = &req.key {
            check_key(key)?;
        }
        let mut input_refs = BTreeMap::new();
        for (name, hash) in req.input_refs.unwrap_or_default() {
            if input.contains_key(&name) {
                return Err(ApiError::bad_request(
                    "invalid_input",
                    format!("`{name}` is given both in `input` and in `input_refs`: give it once"),
                ));
            }
            let bytes = if eflow_core::ValueRef::is_hash(&hash) {
                self.db().value_size(&tenant, &hash).await?
            } else {
                None
            };
            let Some(bytes) = bytes else {
                return Err(ApiError::bad_request(
                    "unknown_value",
                    format!(
                        "`input_refs.{name}` names no value of tenant `{tenant}`: upload it first with `POST /v1/tenants/{tenant}/values` and give the `hash` it answers"
                    ),
                ));
            };
            input_refs.insert(name, eflow_core::ValueRef { hash, bytes });
        }
        self.admit(&t, 1)?;
        let fresh = req.id.is_none();
        let id = match &req.id {
            Some(id) => client_run_key(&tenant, id),
            None => format!("r-{}", uuid::Uuid::now_v7().simple()),
        };
        let meta = RunMeta {
            id: id.clone(),
            tenant: tenant.clone(),
            bundle: flow.bundle.clone(),
            schedule: None,
            parent: None,
            key: req.key.clone(),
            created_at: self.now(),
        };
        match self
            .inner
            .engine
            .create(meta, flow.name.clone(), input, input_refs, fresh)
            .await
        {
            Ok(applied) => {
                if !applied.changed {
                    self.release(&tenant);
                }
                let mut view = run_view(&applied.meta, &applied.state, &applied.deployed);
                self.fill_values(&applied.meta, &mut view).await?;
                Ok(shown_run_view(caller, view))
            }
            // Started before, finished and left the engine's store: the
            // history answers with that run.
            Err(engine::Error::Swept(_)) => {
                self.release(&tenant);
                self.get_run(caller, &id).await
            }
            Err(e) => {
                self.release(&tenant);
                Err(e.into())
            }
        }
    }

    /// The run's row, if the caller may see it; its state is not decoded.
    /// A tenant names a run by the id it chose or the id the server made
    /// (its own chosen ids first); an admin by the stored id.
    async fn visible_run(&self, caller: &Caller, id: &str) -> ApiResult<(RunMeta, Vec<u8>)> {
        let (meta, state, _) = self.found_run(caller, id).await?;
        Ok((meta, state))
    }

    /// [`Self::visible_run`], and where it was found: the engine's store
    /// holds runs in progress and runs finished lately; a run swept from it
    /// since is answered from the history, which holds its final state
    /// (looked for second, so a run swept in between is found there).
    async fn found_run(&self, caller: &Caller, id: &str) -> ApiResult<(RunMeta, Vec<u8>, Found)> {
        let chosen = match &caller.scope {
            Scope::Tenant(t) if !id.contains(':') => Some(client_run_key(t, id)),
            _ => None,
        };
        let keys: Vec<&str> = chosen.as_deref().into_iter().chain([id]).collect();
        for key in &keys {
            if let Some((meta, _status, state)) = self.db().load_run(key).await?
                && caller.may_see(&meta.tenant)
            {
                return Ok((meta, state, Found::Engine));
            }
        }
        for key in &keys {
            let Some(r) = self
                .inner
                .history
                .store()
                .final_run(key)
                .await
                .map_err(crate::history::Error::from)?
            else {
                continue;
            };
            let (Some(state), Some(bundle)) = (r.state, r.bundle) else {
                continue;
            };
            if caller.may_see(&r.tenant) {
                let meta = RunMeta {
                    id: r.id,
                    tenant: r.tenant,
                    bundle,
                    schedule: r.schedule,
                    parent: r.parent,
                    key: r.key,
                    created_at: r.created_at,
                };
                return Ok((meta, state, Found::History));
            }
        }
        // Another tenant's run is reported as absent, not as forbidden.
        Err(ApiError::not_found("run", id))
    }

    /// The stored id of the run `id` names for this caller, if it may see it.
    pub async fn run_key(&self, caller: &Caller, id: &str) -> ApiResult<String> {
        Ok(self.visible_run(caller, id).await?.0.id)
    }

    async fn load_run(&self, caller: &Caller, id: &str) -> ApiResult<(RunMeta, Run)> {
        let (meta, state) = self.visible_run(caller, id).await?;
        let run: Run = serde_json::from_slice(&state).map_err(ApiError::internal)?;
        Ok((meta, run))
    }

    pub async fn get_run(&self, caller: &Caller, id: &str) -> ApiResult<RunView> {
        let (meta, run) = self.load_run(caller, id).await?;
        let deployed = self.inner.engine.deployments().get(&meta.bundle).await?;
        let mut view = run_view(&meta, &run, &deployed);
        self.fill_values(&meta, &mut view).await?;
        // A joined list lives beside the state: shown whole up to a size.
        for (node, state) in deployed
            .bundle
            .flow(&run.flow)
            .map(|f| f.flow.nodes.as_slice())
            .unwrap_or_default()
            .iter()
            .zip(&run.nodes)
        {
            let eflow_core::NodeState::Single(eflow_core::Slot::Results(n)) = state else {
                continue;
            };
            if *n as usize > RESULTS_SHOWN {
                continue;
            }
            let rows = self
                .inner
                .engine
                .store()
                .fanout_results(&meta.id, &node.id, None, RESULTS_SHOWN as u32)
                .await?;
            let list = rows.into_iter().map(|(_, v)| v).collect();
            if let Some(step) = view.steps.iter_mut().find(|s| s.id == node.id) {
                step.output = Some(Value::Array(list));
            }
        }
        Ok(shown_run_view(caller, view))
    }

    /// A run's view and the flow it runs on (its steps, what each depends
    /// on), for the console's graph: seen only by a caller who may see the run.
    pub async fn run_with_flow(
        &self,
        caller: &Caller,
        id: &str,
    ) -> ApiResult<(RunView, Option<eflow_ir::Flow>)> {
        let view = self.get_run(caller, id).await?;
        let (meta, run) = self.load_run(caller, id).await?;
        let deployed = self.inner.engine.deployments().get(&meta.bundle).await?;
        let flow = deployed.bundle.flow(&run.flow).map(|f| f.flow.clone());
        Ok((view, flow))
    }

    /// A page of fan-out `step`'s results: the outputs of its children that
    /// succeeded, in input order, after index `after`.
    pub async fn step_results(
        &self,
        caller: &Caller,
        id: &str,
        step: &str,
        after: Option<u32>,
        limit: u32,
    ) -> ApiResult<Vec<ResultView>> {
        let (meta, run) = self.load_run(caller, id).await?;
        let deployed = self.inner.engine.deployments().get(&meta.bundle).await?;
        let node = deployed
            .bundle
            .flow(&run.flow)
            .and_then(|f| f.flow.nodes.iter().find(|n| n.id == step));
        match node {
            None => return Err(ApiError::not_found("step", step)),
            Some(n) if n.fan_out.is_none() => {
                return Err(ApiError::bad_request(
                    "not_a_fan_out",
                    format!("`{step}` is not a fan-out: its output is in the run's view"),
                ));
            }
            Some(_) => {}
        }
        let rows = self
            .inner
            .engine
            .store()
            .fanout_results(&meta.id, step, after, limit.clamp(1, 1000))
            .await?;
        Ok(rows
            .into_iter()
            .map(|(index, output)| ResultView { index, output })
            .collect())
    }

    /// Shows the values a run's view names by reference whole, up to
    /// `VALUE_SHOWN` bytes each: inputs in `input`, outputs, the result.
    async fn fill_values(&self, meta: &RunMeta, view: &mut RunView) -> ApiResult<()> {
        let load = |r: &ValueRefView| {
            let (tenant, hash, small) =
                (meta.tenant.clone(), r.hash.clone(), r.bytes <= VALUE_SHOWN);
            async move {
                if !small {
                    return Ok::<_, ApiError>(None);
                }
                let v = self.value(&tenant, &hash).await?;
                Ok(Some((*v).clone()))
            }
        };
        for (name, r) in view.input_refs.clone() {
            if let (Some(v), Value::Object(m)) = (load(&r).await?, &mut view.input) {
                m.insert(name, v);
            }
        }
        for step in &mut view.steps {
            if let Some(r) = step.output_ref.clone() {
                step.output = load(&r).await?;
            }
        }
        if let Some(r) = view.result_ref.clone() {
            view.result = load(&r).await?;
        }
        Ok(())
    }

    /// A tenant's value kept by reference, decoded, through a cache bounded
    /// by bytes: paging through a large list decodes it once.
    async fn value(&self, tenant: &str, hash: &str) -> ApiResult<Arc<Value>> {
        let key = (tenant.to_string(), hash.to_string());
        if let Some(v) = self
            .inner
            .values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(v);
        }
        let body = self
            .db()
            .value_body(tenant, hash)
            .await?
            .ok_or_else(|| ApiError::not_found("value", hash))?;
        let v: Value = serde_json::from_slice(&body).map_err(ApiError::internal)?;
        let v = Arc::new(v);
        self.inner
            .values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(key, v.clone(), body.len() as u64);
        Ok(v)
    }

    /// A page of a value that run `id` refers to.
    pub async fn run_value_page(
        &self,
        caller: &Caller,
        id: &str,
        hash: &str,
        after: Option<u64>,
        limit: u32,
    ) -> ApiResult<ValuePage> {
        let (meta, _) = self.visible_run(caller, id).await?;
        if !eflow_core::ValueRef::is_hash(hash) || !self.db().run_refers_to(&meta.id, hash).await? {
            return Err(ApiError::not_found("value", hash));
        }
        self.value_page(&meta.tenant, hash, after, limit).await
    }

    /// A page of the value a signed URL names (what a remote system is given
    /// for an input larger than its binding's `max_inline`).
    pub async fn signed_value_page(
        &self,
        token: &str,
        after: Option<u64>,
        limit: u32,
    ) -> ApiResult<ValuePage> {
        let claim = self
            .inner
            .keys
            .verify_value(token)
            .filter(|c| c.until >= self.now())
            .ok_or_else(|| {
                ApiError::new(
                    401,
                    "invalid_value_token",
                    "the value URL is not valid or has expired: ask for the value again (a new attempt gets a new URL)",
                )
            })?;
        self.value_page(&claim.tenant, &claim.hash, after, limit)
            .await
    }

    async fn value_page(
        &self,
        tenant: &str,
        hash: &str,
        after: Option<u64>,
        limit: u32,
    ) -> ApiResult<ValuePage> {
        let v = self.value(tenant, hash).await?;
        let bytes = self.db().value_size(tenant, hash).await?.unwrap_or(0);
        let mut page = ValuePage {
            hash: hash.to_string(),
            bytes,
            total: None,
            items: None,
            next: None,
            value: None,
        };
        match &*v {
            Value::Array(items) => {
                let from = after.map_or(0, |a| a.saturating_add(1)) as usize;
                let limit = limit.clamp(1, VALUE_PAGE_MAX) as usize;
                let to = from.saturating_add(limit).min(items.len());
                let slice = items.get(from.min(items.len())..to).unwrap_or_default();
                page.total = Some(items.len() as u64);
                page.items = Some(slice.to_vec());
                page.next = (to < items.len()).then(|| to as u64 - 1);
            }
            other => page.value = Some(other.clone()),
        }
        Ok(page)
    }

    /// Keeps a value given by a client, for runs to be started with it by
    /// reference (`input_refs`). The same value twice is kept once.
    pub async fn upload_value(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        value: &Value,
    ) -> ApiResult<(bool, ValueRefView)> {
        let tenant = caller.tenant(tenant)?.to_string();
        self.tenant_exists(&tenant).await?;
        let (r, body) = eflow_core::ValueRef::of(value);
        let created = self
            .db()
            .put_value(&tenant, None, &r.hash, &body, self.now())
            .await?;
        Ok((created, ref_view(&r)))
    }

    pub async fn run_events(
        &self,
        caller: &Caller,
        id: &str,
        after: Option<u64>,
        limit: u32,
    ) -> ApiResult<Vec<EventView>> {
        let rows = self.event_rows(caller, id, after, limit).await?;
        // A child's result names the child (`child:RUN`): by the id the caller sees.
        let shown_event_id = |id: &str| match id.strip_prefix("child:") {
            Some(run) => format!("child:{}", caller.shown_run(run)),
            None => id.to_string(),
        };
        rows.into_iter()
            .map(|e| {
                let mut event: Value =
                    serde_json::from_slice(&e.body).map_err(ApiError::internal)?;
                if let Some(Value::String(id)) = event.get_mut("id") {
                    *id = shown_event_id(id);
                }
                Ok(EventView {
                    event,
                    seq: e.seq,
                    id: shown_event_id(&e.id),
                    at: rfc3339(e.at),
                    status: e.status,
                })
            })
            .collect()
    }

    /// Up to `limit` (at most 1000) events of run `id` after `after`, as stored.
    async fn event_rows(
        &self,
        caller: &Caller,
        id: &str,
        after: Option<u64>,
        limit: u32,
    ) -> ApiResult<Vec<store::EventRow>> {
        let (meta, _, found) = self.found_run(caller, id).await?;
        let limit = limit.clamp(1, 1000);
        Ok(match found {
            Found::Engine => self.db().events_of(&meta.id, after, limit).await?,
            Found::History => self
                .inner
                .history
                .store()
                .events_of(&meta.id, after, limit)
                .await
                .map_err(crate::history::Error::from)?
                .into_iter()
                .map(|e| {
                    // The history keeps the event as stored; its id is in it.
                    let id = serde_json::from_slice::<EventId>(&e.body)
                        .map(|h| h.id)
                        .unwrap_or_default();
                    store::EventRow {
                        pos: e.pos,
                        run: e.run,
                        seq: e.seq,
                        id,
                        at: e.at,
                        status: e.status,
                        body: e.body,
                    }
                })
                .collect(),
        })
    }

    /// The attempts of run `id` (its `view`, on `flow`) in time, from its
    /// first `max_events` events (a page of the log at a time).
    pub async fn attempt_timeline(
        &self,
        caller: &Caller,
        id: &str,
        view: &RunView,
        flow: &eflow_ir::Flow,
        max_events: u32,
    ) -> ApiResult<Timeline> {
        let mut events = Vec::new();
        let mut after = None;
        let mut complete = false;
        let mut read = 0;
        while read < max_events {
            let want = (max_events - read).min(1000);
            let rows = self.event_rows(caller, id, after, want).await?;
            let got = rows.len() as u32;
            read += got;
            after = rows.last().map(|r| r.seq);
            for r in rows {
                // An event this build cannot read is left out of the chart.
                if let Ok(e) = serde_json::from_slice::<eflow_core::Event>(&r.body) {
                    events.push((r.at, e));
                }
            }
            if got < want {
                complete = true;
                break;
            }
        }
        let out: Vec<&str> = view
            .steps
            .iter()
            .filter(|s| matches!(s.status.as_str(), "running" | "retry_wait" | "fan_out"))
            .map(|s| s.id.as_str())
            .collect();
        let mut t = timeline::timeline(flow, &events, &out, complete);
        t.now_ms = self.now().max(t.last_ms);
        Ok(t)
    }

    pub async fn cancel_run(
        &self,
        caller: &Caller,
        id: &str,
        reason: Option<String>,
    ) -> ApiResult<RunView> {
        let (meta, _, found) = self.found_run(caller, id).await?;
        if found == Found::History {
            return Err(engine::Error::Rejected(Rejection::Finished).into());
        }
        let id = meta.id.as_str();
        let event = Event::new(
            "cancel",
            EventKind::CancelRequested {
                reason: reason.unwrap_or_else(|| "cancelled through the API".into()),
            },
        );
        let applied = match self.inner.engine.deliver(id, event).await {
            Ok(a) => {
                tracing::info!(run = %id, tenant = %a.meta.tenant, "run cancelled through the API");
                a
            }
            // A second cancel is the redelivery of the first: the run is over.
            Err(engine::Error::Rejected(Rejection::Duplicate)) => {
                return Err(engine::Error::Rejected(Rejection::Finished).into());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(shown_run_view(
            caller,
            run_view(&applied.meta, &applied.state, &applied.deployed),
        ))
    }

    /// Retries failed run `id` from where it failed (see
    /// `eflow_core::apply`'s `retry`): the same run goes on, recorded as a
    /// `retry_requested` event with the caller's name and `reason`. The run
    /// counts among its tenant's active runs again: a tenant at its quota is
    /// refused (429). A run swept from the engine's store (its retry window,
    /// `--retry-window`, passed) is 410 `retry_window_passed`.
    pub async fn retry_run(
        &self,
        caller: &Caller,
        id: &str,
        reason: Option<String>,
    ) -> ApiResult<RunView> {
        let (meta, state, found) = self.found_run(caller, id).await?;
        let run: Run = serde_json::from_slice(&state).map_err(ApiError::internal)?;
        if run.status != RunStatus::Failed {
            return Err(
                engine::Error::Rejected(Rejection::NotFailed { status: run.status }).into(),
            );
        }
        if found == Found::History {
            return Err(window_passed(id, self.inner.retry_window));
        }
        // The sweeper lets a failed run go once its window passed; a retry
        // this close to that is refused rather than raced with the sweep
        // (which would delete the run under the retry's commit).
        let failed_at = match run.seq.checked_sub(2) {
            Some(before_last) => self.db().events_of(&meta.id, Some(before_last), 1).await?,
            None => self.db().events_of(&meta.id, None, 1).await?,
        }
        .first()
        .map_or(0, |e| e.at);
        let window_ms = self.inner.retry_window.as_millis() as u64;
        if self.now().saturating_sub(failed_at) + RETRY_WINDOW_MARGIN_MS > window_ms {
            return Err(window_passed(id, self.inner.retry_window));
        }
        let t = self.tenant_exists(&meta.tenant).await?;
        self.admit(&t, 1)?;
        let mut reason = reason.unwrap_or_default();
        if reason.len() > eflow_core::state::MAX_ERROR_MESSAGE {
            let mut cut = eflow_core::state::MAX_ERROR_MESSAGE;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        // One id per retry: a request sent twice is the same retry (the
        // second finds it applied), never two.
        let event = Event::new(
            format!("retry:{}", run.retries + 1),
            EventKind::RetryRequested {
                by: caller.name.clone(),
                reason,
            },
        );
        let applied = match self.inner.engine.deliver(&meta.id, event).await {
            Ok(a) => a,
            Err(e) => {
                self.release(&meta.tenant);
                return Err(match e {
                    engine::Error::Rejected(Rejection::Duplicate) => {
                        engine::Error::Rejected(Rejection::NotFailed {
                            status: RunStatus::Running,
                        })
                    }
                    e => e,
                }
                .into());
            }
        };
        tracing::info!(run = %meta.id, tenant = %meta.tenant, by = %caller.name, retries = applied.state.retries, "run retried");
        Ok(shown_run_view(
            caller,
            run_view(&applied.meta, &applied.state, &applied.deployed),
        ))
    }

    // ---- approvals and callbacks -------------------------------------------

    pub async fn approvals(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        pending: bool,
    ) -> ApiResult<Vec<ApprovalView>> {
        let t = caller.scope(tenant)?;
        let rows = self.db().approvals(t, pending).await?;
        Ok(rows
            .into_iter()
            .map(|r| shown_approval(caller, approval_view(r)))
            .collect())
    }

    /// The approvals run `id` waits for at `steps` (those in progress): one
    /// look-up by run and step each, never a list; for the console's run page.
    pub async fn pending_approvals_of(
        &self,
        caller: &Caller,
        id: &str,
        steps: &[&str],
    ) -> ApiResult<Vec<ApprovalView>> {
        let run = self.run_key(caller, id).await?;
        let mut out = Vec::new();
        for step in steps {
            if let Some(row) = self.db().approval(&run, step).await?
                && row.decided_at.is_none()
            {
                out.push(shown_approval(caller, approval_view(row)));
            }
        }
        Ok(out)
    }

    pub async fn decide(
        &self,
        caller: &Caller,
        run: &str,
        step: &str,
        d: Decide,
    ) -> ApiResult<ApprovalView> {
        let (_, _, found) = self.found_run(caller, run).await?;
        if found == Found::History {
            // Finished and swept: whatever it awaited is no longer awaited.
            return Err(ApiError::new(
                409,
                "already_decided",
                format!(
                    "the approval of `{step}` in run {run} was decided already, expired, or is no longer awaited: the run has finished"
                ),
            ));
        }
        let Some(row) = self.db().approval(run, step).await? else {
            return Err(ApiError::not_found("approval", &format!("{run}/{step}")));
        };
        if row.decided_at.is_some() {
            return Err(ApiError::new(
                409,
                "already_decided",
                format!("the approval of `{step}` in run {run} was decided already"),
            ));
        }
        // Who may decide was fixed when the approval was asked for; the
        // reviewer is the token's name, never a name in the request.
        let approvers = approvers_of(&row);
        if let Scope::Tenant(_) = caller.scope
            && !approvers.is_empty()
            && !approvers.contains(&caller.name)
        {
            return Err(ApiError::new(
                403,
                "not_an_approver",
                format!(
                    "the approval of `{step}` may be decided by {} and this token is `{}`: decide with a token made for one of them (an admin makes one with `eflow token create NAME --tenant {}`)",
                    approvers
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    caller.name,
                    row.tenant,
                ),
            ));
        }
        let now = self.now();
        let reviewer = caller.name.clone();
        let output = json!({
            "approved": d.approve,
            "outcome": if d.approve { "Approved" } else { "Rejected" },
            "reviewer": reviewer,
            "comment": d.comment,
            "decided_at": rfc3339(now),
        });
        // The decision is the step's completion: the worker commits the
        // approval row's decision with the transition it makes, or neither.
        let (node, index) = split_step(step);
        let event = Event::new(
            format!("decision:{step}:{}", row.attempt),
            EventKind::StepCompleted {
                node,
                index,
                attempt: row.attempt,
                output,
                output_ref: None,
            },
        );
        match self.inner.engine.deliver(run, event).await {
            Ok(_) => {}
            Err(engine::Error::Rejected(_) | engine::Error::NoSuchRun(_)) => {
                return Err(ApiError::new(
                    409,
                    "already_decided",
                    format!(
                        "the approval of `{step}` in run {run} was decided already, expired, or is no longer awaited"
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(%run, %step, approved = d.approve, %reviewer, "approval decided");
        let row = self
            .db()
            .approval(run, step)
            .await?
            .ok_or_else(|| ApiError::not_found("approval", step))?;
        Ok(approval_view(row))
    }

    /// A remote system reports an attempt's result. The token is the caller's
    /// credential: it names the attempt and is signed by this server.
    /// The attempt a callback token names, checked before anything else of
    /// the request is read: a request without a valid token costs no body.
    pub fn callback_claim(&self, token: &str) -> ApiResult<CallbackClaim> {
        self.inner.keys.verify(token).ok_or_else(|| {
            ApiError::new(
                401,
                "invalid_callback_token",
                "this callback token was not issued by this server or was altered: use the `callback_url` of the invocation as given",
            )
        })
    }

    pub async fn callback(
        &self,
        claim: CallbackClaim,
        body: Callback,
    ) -> ApiResult<CallbackAccepted> {
        let kind = callback_event(&claim, body)?;
        let id = format!(
            "callback:{}",
            eflow_core::slot_id(&claim.node, claim.index, claim.attempt)
        );
        let completes = matches!(kind, EventKind::StepCompleted { .. });
        let event = Event::new(id.clone(), kind.clone());
        let (status, reason) = match self.inner.engine.deliver(&claim.run, event).await {
            Ok(applied) => match refused_output(&applied.state, &applied.deployed, &claim) {
                Some(e) if completes => (CallbackStatus::InvalidOutput, Some(e.message)),
                _ => (CallbackStatus::Applied, None),
            },
            Err(engine::Error::Rejected(r)) => self.earlier_callback(&claim, &id, &kind, r).await?,
            Err(engine::Error::NoSuchRun(_)) => (
                CallbackStatus::Stale,
                Some("the run no longer exists".to_string()),
            ),
            Err(e) => return Err(e.into()),
        };
        Ok(CallbackAccepted {
            run: claim.run,
            step: claim.node,
            attempt: claim.attempt,
            applied: matches!(
                status,
                CallbackStatus::Applied | CallbackStatus::AlreadyApplied
            ),
            status,
            reason,
        })
    }

    /// Many callbacks at once. Every report goes to its run's worker before
    /// any answer is awaited, so reports of runs on one shard are applied in
    /// one commit. A report refused (a wrong token, an unusable body) is
    /// answered with its error and changes nothing else.
    pub async fn callbacks(&self, batch: CallbackBatch) -> ApiResult<CallbackBatchAccepted> {
        let n = batch.callbacks.len();
        if n == 0 || n > MAX_BATCHED_CALLBACKS {
            return Err(ApiError::bad_request(
                "invalid_callback",
                format!(
                    "a batch holds 1 to {MAX_BATCHED_CALLBACKS} callbacks, not {n}: send the rest in another request"
                ),
            ));
        }
        let results = futures_util::future::join_all(batch.callbacks.into_iter().map(|c| async {
            let (token, body) = c.split();
            let answer = match self.callback_claim(&token) {
                Ok(claim) => self.callback(claim, body).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(a) => CallbackOutcome::Accepted(a),
                Err(e) => CallbackOutcome::Refused(e.body()),
            }
        }))
        .await;
        Ok(CallbackBatchAccepted { results })
    }

    /// A callback the engine refused: the same one applied before (a resend),
    /// or a result the attempt no longer awaits.
    async fn earlier_callback(
        &self,
        claim: &CallbackClaim,
        id: &str,
        kind: &EventKind,
        rejection: Rejection,
    ) -> ApiResult<(CallbackStatus, Option<String>)> {
        let Some(row) = self.db().event(&claim.run, id).await? else {
            return Ok((CallbackStatus::Stale, Some(rejection.to_string())));
        };
        let earlier: Event = serde_json::from_slice(&row.body).map_err(ApiError::internal)?;
        if &earlier.kind != kind {
            return Ok((
                CallbackStatus::Stale,
                Some("a different result for this attempt was applied first".to_string()),
            ));
        }
        if matches!(kind, EventKind::StepCompleted { .. })
            && let Some((meta, _, state)) = self.db().load_run(&claim.run).await?
        {
            let run: Run = serde_json::from_slice(&state).map_err(ApiError::internal)?;
            let deployed = self.inner.engine.deployments().get(&meta.bundle).await?;
            if let Some(e) = refused_output(&run, &deployed, claim).filter(|e| {
                e.code == eflow_core::apply::codes::INVALID_OUTPUT
                    || e.code == eflow_core::apply::codes::STATE_TOO_LARGE
            }) {
                return Ok((CallbackStatus::InvalidOutput, Some(e.message)));
            }
        }
        Ok((CallbackStatus::AlreadyApplied, None))
    }

    // ---- schedules -----------------------------------------------------------

    pub async fn schedules(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
    ) -> ApiResult<Vec<ScheduleView>> {
        let t = caller.scope(tenant)?;
        let rows = self.db().schedules(t).await?;
        rows.iter().map(schedule_view).collect()
    }

    async fn own_schedule(&self, caller: &Caller, id: &str) -> ApiResult<store::ScheduleRow> {
        match self.db().schedule(id).await? {
            Some(s) if caller.may_see(&s.tenant) => Ok(s),
            _ => Err(ApiError::not_found("schedule", id)),
        }
    }

    pub async fn pause_schedule(
        &self,
        caller: &Caller,
        id: &str,
        paused: bool,
    ) -> ApiResult<ScheduleView> {
        let s = self.own_schedule(caller, id).await?;
        self.inner
            .scheduler
            .set_paused(&s, paused, self.now())
            .await
            .map_err(ApiError::internal)?;
        let s = self.own_schedule(caller, id).await?;
        schedule_view(&s)
    }

    pub async fn backfill(
        &self,
        caller: &Caller,
        id: &str,
        req: Backfill,
    ) -> ApiResult<BackfillResult> {
        let s = self.own_schedule(caller, id).await?;
        let from = parse_time(&req.from)?;
        let to = parse_time(&req.to)?;
        if to < from {
            return Err(ApiError::bad_request(
                "invalid_range",
                "`to` is before `from`: give the range oldest first",
            ));
        }
        let t = self.tenant_exists(&s.tenant).await?;
        let runs = self
            .inner
            .scheduler
            .backfill(&s, &t, from, to)
            .await
            .map_err(|e| match e {
                BackfillError::Quota(r) => quota_error(r),
                BackfillError::Invalid(e) => ApiError::bad_request("invalid_backfill", e),
                BackfillError::Failed(e) => ApiError::internal(e),
            })?;
        Ok(BackfillResult {
            schedule: id.into(),
            runs,
        })
    }

    pub async fn stats(&self, caller: &Caller) -> ApiResult<StatsView> {
        caller.admin_only()?;
        let history_behind = self
            .inner
            .history
            .behind(self.inner.engine.bus().events())
            .await?;
        let s = self.inner.engine.stats();
        let get = |x: &std::sync::atomic::AtomicU64| x.load(std::sync::atomic::Ordering::Relaxed);
        Ok(StatsView {
            transitions: get(&s.transitions),
            rejected: get(&s.rejected),
            commits: get(&s.commits),
            finished: get(&s.finished),
            bytes_written: get(&s.bytes_written),
            history_behind,
            rss_mb: proc_status_mb("VmRSS:"),
            peak_rss_mb: proc_status_mb("VmHWM:"),
        })
    }

    /// The cluster's members, shard leases and consumers (admin).
    pub async fn cluster(&self, caller: &Caller) -> ApiResult<ClusterView> {
        caller.admin_only()?;
        let now = self.now();
        let members = self
            .db()
            .members()
            .await?
            .into_iter()
            .map(|m| MemberView {
                alive: m.expires_at > now,
                roles: m.roles.split(',').map(str::to_string).collect(),
                started_at: rfc3339(m.started_at),
                expires_at: rfc3339(m.expires_at),
                id: m.id,
            })
            .collect();
        let leases = self.db().leases().await?;
        let history_owner = leases
            .iter()
            .find(|l| l.shard == crate::cluster::HISTORY_LEASE && l.expires_at > now)
            .map(|l| l.owner.clone());
        let shards = leases
            .into_iter()
            .filter(|l| {
                l.shard != crate::cluster::HISTORY_LEASE && l.shard != crate::bulk::BULK_LEASE
            })
            .map(|l| ShardView {
                shard: l.shard,
                held: l.expires_at > now,
                expires_at: rfc3339(l.expires_at),
                owner: l.owner,
                token: l.token,
            })
            .collect();
        // Read from the stores, so any process answers for the consumer
        // wherever it runs.
        let head =
            (self.inner.engine.bus().events().head().await).map_err(crate::history::Error::from)?;
        let cursor =
            (self.inner.history.store().cursor().await).map_err(crate::history::Error::from)?;
        let consumers = vec![ConsumerView {
            name: "history".to_string(),
            owner: history_owner,
            cursor,
            lag: head.saturating_sub(cursor).max(0) as u64,
        }];
        Ok(ClusterView {
            members,
            shards,
            consumers,
        })
    }

    // ---- history and registry ------------------------------------------------

    pub async fn list_runs(
        &self,
        caller: &Caller,
        q: crate::history::RunQuery,
    ) -> ApiResult<Page<RunSummary>> {
        // A caller who may not ask this is refused before anything waits.
        caller.scope(q.tenant.as_deref())?;
        self.wait_for_history().await?;
        self.runs_as_held(caller, q).await
    }

    /// Read your writes: waits until the history holds what the engine
    /// committed before this call, unless it is more than a moment behind.
    pub async fn wait_for_history(&self) -> ApiResult<()> {
        self.inner
            .history
            .catch_up_with(self.inner.engine.bus().events(), LIST_PATIENCE)
            .await?;
        Ok(())
    }

    /// Like [`Service::list_runs`], but from what the history holds now,
    /// without waiting for it: for a page that asks many lists at once (the
    /// console's overview) after one [`Service::wait_for_history`].
    pub async fn runs_as_held(
        &self,
        caller: &Caller,
        mut q: crate::history::RunQuery,
    ) -> ApiResult<Page<RunSummary>> {
        q.tenant = caller.scope(q.tenant.as_deref())?.map(str::to_string);
        let page = self.inner.history.runs(&q).await.map_err(history_error)?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|r| {
                    let mut r = run_summary(r);
                    r.id = caller.shown_run(&r.id);
                    r.parent = r.parent.map(|p| caller.shown_run(&p));
                    r
                })
                .collect(),
            next: page.next,
        })
    }

    pub async fn registry(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        kind: Option<&str>,
        name: Option<&str>,
    ) -> ApiResult<Vec<RegistryView>> {
        let tenant = caller.tenant(tenant)?;
        let rows = self.db().registry(tenant, kind, name).await?;
        Ok(rows
            .into_iter()
            .map(|r| RegistryView {
                kind: r.kind,
                name: r.name,
                version: r.version,
                entry: r.entry,
                lineage: Lineage {
                    run: caller.shown_run(&r.run),
                    step: r.step,
                    inputs: r.inputs,
                },
                registered_at: rfc3339(r.registered_at),
            })
            .collect())
    }
}

/// A history error as the API answers it: a cursor it did not give is the
/// caller's to fix.
fn history_error(e: crate::history::Error) -> ApiError {
    match e {
        crate::history::Error::Store(crate::history::store::Error::BadCursor) => {
            ApiError::bad_request(
                "invalid_cursor",
                "the cursor is not one this server gave out: start again without it",
            )
        }
        e => ApiError::internal(e),
    }
}

/// A memory figure of this process from `/proc/self/status`, in MB.
pub fn proc_status_mb(field: &str) -> Option<f64> {
    process_status_mb("self", field)
}

/// A field of `/proc/PROCESS/status` in MB (`VmRSS:`, `VmHWM:`); `process` is
/// `self` or a pid.
pub fn process_status_mb(process: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// `train[3]` → (`train`, Some(3)).
fn split_step(step: &str) -> (String, Option<u32>) {
    if let Some(open) = step.find('[')
        && let Some(i) = step[open + 1..]
            .strip_suffix(']')
            .and_then(|n| n.parse().ok())
    {
        return (step[..open].to_string(), Some(i));
    }
    (step.to_string(), None)
}

/// A run of the history as the API shows it.
fn run_summary(r: crate::history::RunRecord) -> RunSummary {
    RunSummary {
        id: r.id,
        tenant: r.tenant,
        flow: r.flow,
        version: r.version,
        status: r.status,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
        error_code: r.error_code,
        failed_step: r.failed_step,
        parent: r.parent,
        key: r.key,
    }
}

/// A schedule as the API shows it: its policy read from the stored spec.
fn schedule_view(s: &store::ScheduleRow) -> ApiResult<ScheduleView> {
    let ir: eflow_ir::Schedule = serde_json::from_slice(&s.spec).map_err(ApiError::internal)?;
    // The policies' names as they are written in a flow (`allow_all`, `skip`).
    let name = |v: serde_json::Result<Value>| -> ApiResult<String> {
        match v.map_err(ApiError::internal)? {
            Value::String(s) => Ok(s),
            other => Err(ApiError::internal(format!("a policy named by {other}"))),
        }
    };
    Ok(ScheduleView {
        id: s.id.clone(),
        tenant: s.tenant.clone(),
        flow: s.flow.clone(),
        overlap: name(serde_json::to_value(ir.overlap))?,
        catchup: name(serde_json::to_value(ir.catchup))?,
        cron: ir.cron,
        timezone: ir.timezone,
        paused: s.paused,
        last_fire: s.last_start.map(rfc3339),
        next_fire: s.next_due.map(rfc3339),
        declared: s.declared,
        key: s.key.clone(),
        version: s.version.clone(),
        input: Value::Object(ir.input.into_iter().collect()),
    })
}

pub fn rfc3339(ms: u64) -> String {
    eflow_core::time::format_rfc3339(ms)
}

fn parse_time(s: &str) -> ApiResult<u64> {
    eflow_core::time::parse_rfc3339(s)
        .and_then(|t| u64::try_from(t).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_time",
                format!("`{s}` is not an RFC 3339 time: write e.g. 2026-03-01T00:00:00Z"),
            )
        })
}

/// A key names a customer or a model (a run's, a schedule's): one line of
/// printable text.
pub(crate) fn check_key(key: &str) -> ApiResult<()> {
    if key.is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_key",
            "a key is 1 to 256 characters of printable text (a customer's or a model's id)",
        ));
    }
    Ok(())
}

fn check_name(what: &str, id: &str) -> ApiResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_name",
            format!("{what} `{id}` may only use letters, digits, `-`, `_` and `.` (at most 128)"),
        ))
    }
}

fn tenant_view(t: &TenantRow, ledger: &Ledger, retention: std::time::Duration) -> TenantView {
    let q = ledger.limits(t);
    let retention = t
        .history_retention_ms
        .map_or(retention, std::time::Duration::from_millis);
    TenantView {
        id: t.id.clone(),
        created_at: rfc3339(t.created_at),
        max_active_runs: q.max_active_runs,
        active_runs: ledger.active(&t.id),
        max_starts_per_sec: q.max_starts_per_sec,
        allow_egress: t.allow_egress.clone(),
        history_retention: whole_units(retention),
    }
}

/// A duration in its largest whole unit (`400d`, `36h`, `90s`, `250ms`), as
/// `--history-retention` and `history_retention` read it back.
fn whole_units(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Egress rules as an admin wrote them, checked and written the one way
/// (`127.0.0.1`, `10.0.0.0/8`, `*.internal`); a bad one is a 400 that says
/// what a rule looks like.
fn egress_rules(rules: &[String]) -> ApiResult<Vec<String>> {
    crate::egress::Policy::parse(rules)
        .map(|p| p.rules())
        .map_err(|e| ApiError::new(400, "invalid_egress_rule", e))
}

/// The first characters of a flow version (`sha256:…`), enough to tell versions apart in a log.
fn short_version(v: &str) -> &str {
    let hex = v.strip_prefix("sha256:").unwrap_or(v);
    hex.get(..12).unwrap_or(hex)
}

fn quota_error(r: Refusal) -> ApiError {
    // A start rate frees a start every 1/rate seconds; runs in progress end
    // when they end, so the client asks again soon.
    let retry_after = match &r {
        Refusal::StartRate { rate, .. } if *rate > 0.0 => (1.0 / rate).ceil() as u64,
        _ => 1,
    };
    ApiError::too_many(r.code(), r.to_string(), retry_after)
}

/// A run as this caller names it: its id and its parent's ([`Caller::shown_run`]).
fn shown_run_view(caller: &Caller, mut v: RunView) -> RunView {
    v.id = caller.shown_run(&v.id);
    v.parent = v.parent.map(|p| caller.shown_run(&p));
    v
}

/// An approval with its run as this caller names it.
pub fn shown_approval(caller: &Caller, mut v: ApprovalView) -> ApprovalView {
    v.run = caller.shown_run(&v.run);
    v
}

/// Who may decide an approval, as stored with its request (empty: any token
/// of its tenant).
fn approvers_of(r: &store::ApprovalRow) -> Vec<String> {
    r.request
        .get("approvers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn approval_view(r: store::ApprovalRow) -> ApprovalView {
    ApprovalView {
        approvers: approvers_of(&r),
        run: r.run,
        step: r.step,
        attempt: r.attempt,
        tenant: r.tenant,
        contract: r.contract,
        inputs: r.request.get("inputs").cloned().unwrap_or(Value::Null),
        requested_at: rfc3339(r.requested_at),
        expires_at: r.expires_at.map(rfc3339),
        decided_at: r.decided_at.map(rfc3339),
        decision: r.decision,
    }
}

pub fn status_text(s: RunStatus) -> String {
    engine::status_name(s).to_string()
}

fn run_view(meta: &RunMeta, run: &Run, deployed: &Deployed) -> RunView {
    let flow = deployed.bundle.flow(&run.flow);
    let steps = flow
        .map(|f| {
            f.flow
                .nodes
                .iter()
                .zip(&run.nodes)
                .map(|(n, s)| step_view(&n.id, s))
                .collect()
        })
        .unwrap_or_default();
    RunView {
        id: run.id.clone(),
        tenant: run.tenant.clone(),
        flow: run.flow.clone(),
        version: run.version.clone(),
        status: status_text(run.status),
        parent: meta.parent.clone(),
        schedule: meta.schedule.clone(),
        key: meta.key.clone(),
        created_at: rfc3339(meta.created_at),
        started_at: (run.started_at > 0).then(|| rfc3339(run.started_at)),
        input: Value::Object((*run.input).clone()),
        input_refs: run
            .input_refs
            .iter()
            .map(|(k, r)| (k.clone(), ref_view(r)))
            .collect(),
        steps,
        result: run.result.clone(),
        result_ref: run.result_ref.as_ref().map(ref_view),
        error: run.error.as_ref().map(|e| ErrorView {
            code: e.code.clone(),
            message: e.message.clone(),
            step: e.node.clone(),
        }),
        retries: run.retries,
    }
}

/// How long before its retry window ends a failed run is no longer retried:
/// the sweeper may be deleting it.
const RETRY_WINDOW_MARGIN_MS: u64 = 60_000;

fn window_passed(id: &str, window: std::time::Duration) -> ApiError {
    let window = humantime::format_duration(window);
    ApiError::new(
        410,
        "retry_window_passed",
        format!(
            "run {id} failed longer ago than the server keeps failed runs to retry them (`--retry-window`, {window} here): start a new run"
        ),
    )
}

fn ref_view(r: &eflow_core::ValueRef) -> ValueRefView {
    ValueRefView {
        hash: r.hash.clone(),
        bytes: r.bytes,
    }
}

fn step_view(id: &str, s: &eflow_core::NodeState) -> StepView {
    use eflow_core::{NodeState, Slot};
    let slot = |s: &Slot| -> (String, Option<u32>, Option<Value>, Option<ErrorView>) {
        match s {
            Slot::Pending => ("pending".into(), None, None, None),
            Slot::Running(a) => ("running".into(), Some(*a), None, None),
            Slot::RetryWait(a) => ("retry_wait".into(), Some(*a), None, None),
            Slot::Succeeded(v) => ("succeeded".into(), None, Some((**v).clone()), None),
            // The joined list and values kept by reference are beside the
            // state: `fill_values` reads them.
            Slot::Results(_) | Slot::Stored(_) => ("succeeded".into(), None, None, None),
            Slot::Failed(e) => (
                "failed".into(),
                None,
                None,
                Some(ErrorView {
                    code: e.code.clone(),
                    message: e.message.clone(),
                    step: Some(id.to_string()),
                }),
            ),
            Slot::Cancelled => ("cancelled".into(), None, None, None),
        }
    };
    let iteration = match s {
        NodeState::Repeat(r) => Some(r.iteration),
        _ => None,
    };
    let (status, attempt, output, error, children) = match s {
        NodeState::Pending => ("pending".into(), None, None, None, None),
        NodeState::Skipped => ("skipped".into(), None, None, None, None),
        NodeState::FanOut(fo) => {
            let retrying = fo
                .slots
                .values()
                .filter(|s| matches!(s, Slot::RetryWait(_)))
                .count() as u32;
            let counts: BTreeMap<String, u32> = [
                ("pending", fo.len - fo.next),
                ("running", fo.active() - retrying),
                ("retry_wait", retrying),
                ("succeeded", fo.succeeded),
                ("failed", fo.failed),
            ]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_string(), n))
            .collect();
            ("fan_out".into(), None, None, None, Some(counts))
        }
        // The iteration that is out; the previous one's output stays internal.
        NodeState::Repeat(r) => {
            let (a, b, _, d) = slot(&r.slot);
            (a, b, None, d, None)
        }
        NodeState::Single(x) => {
            let (a, b, c, d) = slot(x);
            let children = match x {
                Slot::Results(n) => Some(BTreeMap::from([("succeeded".to_string(), *n)])),
                _ => None,
            };
            (a, b, c, d, children)
        }
    };
    let output_ref = match s {
        NodeState::Single(Slot::Stored(r)) => Some(ref_view(r)),
        _ => None,
    };
    StepView {
        id: id.to_string(),
        status,
        attempt,
        output,
        output_ref,
        error,
        children,
        iteration,
    }
}

/// The environment whose bindings a deploy uses.
fn pick_env(bundle: &Bundle, asked: Option<&str>) -> ApiResult<String> {
    let mut envs: Vec<&String> = bundle
        .flows
        .iter()
        .flat_map(|f| f.bindings.keys())
        .collect();
    envs.sort();
    envs.dedup();
    let env = match asked {
        Some(e) => e.to_string(),
        None if envs.iter().any(|e| *e == "dev") => "dev".into(),
        None if envs.len() == 1 => envs[0].clone(),
        None if envs.is_empty() => "default".into(),
        None => {
            return Err(ApiError::bad_request(
                "env_required",
                format!(
                    "the flows have bindings for several environments ({}): pick one with `env` (`--env` in the CLI)",
                    envs.iter()
                        .map(|e| e.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    };
    let mut missing = Vec::new();
    for f in &bundle.flows {
        for (name, c) in &f.contracts {
            if matches!(c.kind, StepKind::Remote | StepKind::Call)
                && f.bindings.get(&env).and_then(|b| b.get(name)).is_none()
            {
                // Bindings name a step as it is written, not its module's path.
                let (module, step) = name.rsplit_once('.').unwrap_or(("", name));
                missing.push(format!(
                    "`{step}` (from `{module}`, used by flow `{}`)",
                    f.name
                ));
            }
        }
    }
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        return Err(ApiError::bad_request(
            "missing_binding",
            format!(
                "environment `{env}` binds no connector to {}: bind them in `bindings {env}`, or deploy with another `env`",
                missing.join(", ")
            ),
        ));
    }
    Ok(env)
}

/// Compiles `.eflow` sources sent to the server. Imports resolve among the
/// files sent and the standard library; the server's disk is never read.
fn compile_sources(files: BTreeMap<String, String>) -> ApiResult<Bundle> {
    use eflow_compiler::analysis::{Analysis, Loader};
    struct NoDisk;
    impl Loader for NoDisk {
        fn read(&self, path: &std::path::Path) -> std::io::Result<String> {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} was not sent with the deploy", path.display()),
            ))
        }
    }
    if files.is_empty() {
        return Err(ApiError::bad_request(
            "empty_source",
            "`source` holds no file",
        ));
    }
    let inputs = files
        .into_iter()
        .map(|(name, text)| (std::path::PathBuf::from(name), text))
        .collect();
    let analysis = Analysis::from_texts(inputs, &NoDisk);
    let errors: Vec<String> = analysis
        .diagnostics()
        .into_iter()
        .filter(|d| d.severity == eflow_compiler::diagnostics::Severity::Error)
        .map(|d| format!("{}: {}", d.code, d.message))
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::bad_request(
            "compile_error",
            format!("the source does not compile: {}", errors.join("; ")),
        ));
    }
    eflow_compiler::lower::emit(&analysis, None).map_err(|ds| {
        ApiError::bad_request(
            "compile_error",
            ds.iter()
                .map(|d| format!("{}: {}", d.code, d.message))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// Longest error code a callback may report.
pub const MAX_CALLBACK_ERROR_CODE: usize = 128;

/// The event a callback body reports; a body that reports nothing, or both a
/// success and a failure, or an unusable error code is refused whole.
fn callback_event(claim: &CallbackClaim, body: Callback) -> ApiResult<EventKind> {
    let invalid = |m: &str| ApiError::bad_request("invalid_callback", m);
    match (body.output, body.error) {
        (None, None) => Err(invalid(
            "the body reports nothing: send `{\"output\": VALUE}` for a success (`null` for a step without an output) or `{\"error\": {\"code\": NAME}}` for a failure",
        )),
        (Some(_), Some(_)) => Err(invalid(
            "send `output` for a success or `error` for a failure, not both",
        )),
        (Some(_), None) if body.retryable.is_some() => Err(invalid(
            "`retryable` goes with an `error`, not with an `output`",
        )),
        (Some(output), None) => Ok(EventKind::StepCompleted {
            node: claim.node.clone(),
            index: claim.index,
            attempt: claim.attempt,
            output,
            output_ref: None,
        }),
        (None, Some(e)) => {
            if e.code.is_empty()
                || e.code.len() > MAX_CALLBACK_ERROR_CODE
                || e.code.chars().any(char::is_control)
            {
                return Err(invalid(&format!(
                    "`error.code` must be 1 to {MAX_CALLBACK_ERROR_CODE} bytes without control characters: send the error's name, the details in `error.message`"
                )));
            }
            Ok(EventKind::StepFailed {
                node: claim.node.clone(),
                index: claim.index,
                attempt: claim.attempt,
                error: StepError::new(e.code, e.message.unwrap_or_default()),
                retryable: body.retryable.unwrap_or(true),
            })
        }
    }
}

/// The error of the claimed attempt's slot when it failed, which after the
/// completion was applied means its output was refused.
fn refused_output(run: &Run, deployed: &Deployed, claim: &CallbackClaim) -> Option<StepError> {
    use eflow_core::{NodeState, Slot};
    let flow = deployed.bundle.flow(&run.flow)?;
    let pos = flow.flow.nodes.iter().position(|n| n.id == claim.node)?;
    match (run.nodes.get(pos)?, claim.index) {
        // A fan-out keeps its latest failure, or was decided by this one.
        (NodeState::FanOut(fo), Some(i)) => fo
            .last_failure
            .as_ref()
            .filter(|(at, _)| *at == i)
            .map(|(_, e)| e.clone()),
        (NodeState::Single(Slot::Failed(e)), _) => Some(e.clone()),
        _ => None,
    }
}

/// A task aborted when this is dropped (a request's future dropped with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
