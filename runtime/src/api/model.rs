//! The API's wire types: what goes over HTTP, separate from the engine's types.
//! Their OpenAPI schemas are generated from these definitions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// An error: a stable code for programs and a message for people.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: `not_found`, `invalid_input`, `quota_active_runs`, …
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// Runs in progress at once (default: the server's).
    #[serde(default)]
    pub max_active_runs: Option<i64>,
    /// Starts per second (default: the server's).
    #[serde(default)]
    pub max_starts_per_sec: Option<f64>,
    /// What the tenant's `http` bindings may reach besides the public internet
    /// and the server's `--allow-egress` rules: networks (`10.0.0.0/8`),
    /// addresses (`127.0.0.1`), host names (`models.internal`), domains (`*.internal`).
    #[serde(default)]
    pub allow_egress: Vec<String>,
}

/// Change a tenant (admin): each field given replaces the tenant's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    /// The tenant's egress rules, replacing its previous ones (`[]` removes them).
    #[serde(default)]
    pub allow_egress: Option<Vec<String>>,
    /// How long the history keeps the tenant's finished runs (`30d`,
    /// `8760h`), or `default` for the server's `--history-retention`.
    #[serde(default)]
    pub history_retention: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub created_at: String,
    pub max_active_runs: i64,
    /// The tenant's runs in progress now, subflow children included: what
    /// counts against `max_active_runs`.
    pub active_runs: i64,
    pub max_starts_per_sec: f64,
    /// The tenant's own egress rules (the server's apply too).
    pub allow_egress: Vec<String>,
    /// How long the history keeps the tenant's finished runs (`400days`):
    /// its own, or the server's `--history-retention`.
    pub history_retention: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantCreated {
    pub tenant: TenantView,
    /// The tenant's API token. Shown once: store it.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PurgeResult {
    pub tenant: String,
    pub rows_deleted: u64,
}

/// Deploy compiled IR or `.eflow` sources.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The tenant (only with an admin token; a tenant's token deploys for itself).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The environment whose bindings the runs use (default `dev`, or the only one).
    #[serde(default)]
    pub env: Option<String>,
    /// The IR as `eflowc compile` writes it.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub ir: Option<Value>,
    /// Or `.eflow` sources: file name → text.
    #[serde(default)]
    pub source: Option<BTreeMap<String, String>>,
    /// Deploy even if a flow changes in a way that breaks its callers, its
    /// schedules or the remote systems of its steps (`eflowc diff`'s breaking
    /// changes against the deployed version); refused with 409
    /// `breaking_change` otherwise.
    #[serde(default)]
    pub allow_breaking: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeployResult {
    pub tenant: String,
    pub env: String,
    pub bundle: String,
    pub flows: Vec<DeployedFlow>,
    /// Schedules created or updated.
    pub schedules: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeployedFlow {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FlowView {
    pub tenant: String,
    pub name: String,
    pub version: String,
    pub bundle: String,
    pub deployed_at: String,
    /// The version new runs start on.
    pub head: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    pub flow: String,
    /// Only with an admin token.
    #[serde(default)]
    pub tenant: Option<String>,
    /// A deployed version (default: the latest).
    #[serde(default)]
    pub version: Option<String>,
    /// Parameter values by name.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// Your own id for the run: starting the same id twice starts it once.
    /// Ids are the tenant's own (another tenant may use the same); an admin
    /// sees and names such a run `TENANT:ID`.
    #[serde(default)]
    pub id: Option<String>,
    /// Parameters given by reference: the hash of a value uploaded with
    /// `POST /v1/tenants/{id}/values`, by parameter name (for inputs larger than a request).
    #[serde(default)]
    pub input_refs: Option<BTreeMap<String, String>>,
    /// What the run belongs to: the model or customer whose lifecycle it
    /// is (1 to 256 characters, no control characters). The population
    /// (`GET /v1/population`) groups a flow's runs by it.
    #[serde(default)]
    pub key: Option<String>,
}

/// A value kept beside a run's state, by reference: its hash and size. Read it
/// a page at a time at `GET /v1/runs/{id}/values/{hash}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ValueRefView {
    /// `sha256:` and the hex SHA-256 of the value's compact JSON.
    pub hash: String,
    /// The length of that JSON.
    pub bytes: u64,
}

/// A page of a value kept by reference: a list a page of elements at a time,
/// any other value whole.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ValuePage {
    pub hash: String,
    pub bytes: u64,
    /// For a list: its number of elements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// For a list: the elements after `after`, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Value>>)]
    pub items: Option<Vec<Value>>,
    /// For a list: the `after` of the next page, when there is one (the
    /// index of this page's last element).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
    /// Any other value, whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub value: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorView {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    pub id: String,
    /// pending, running, retry_wait, succeeded, failed, cancelled, skipped, fan_out;
    /// a `repeat` in progress has the status of the iteration that is out
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub output: Option<Value>,
    /// An output kept by reference (larger than 2 KiB). `output` holds it too
    /// when it is at most 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_ref: Option<ValueRefView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorView>,
    /// For a fan-out in progress: children per status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children: Option<BTreeMap<String, u32>>,
    /// For a `repeat` in progress: the iteration that is out, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iteration: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    pub id: String,
    pub tenant: String,
    pub flow: String,
    pub version: String,
    /// created, running, succeeded, failed, cancelled
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// What the run belongs to (its start's or its schedule's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The parameters given (those kept by reference too, when at most 1 MiB).
    #[schema(value_type = Object)]
    pub input: Value,
    /// Parameters kept by reference (larger than 2 KiB), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input_refs: BTreeMap<String, ValueRefView>,
    pub steps: Vec<StepView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub result: Option<Value>,
    /// A result kept by reference (larger than 2 KiB). `result` holds it too
    /// when it is at most 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ref: Option<ValueRefView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorView>,
    /// How many times the run was retried after failing
    /// (`POST /v1/runs/{id}/retry`); absent when never.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The output of child `index` of a fan-out, which succeeded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultView {
    pub index: u32,
    /// Any JSON value of the child's output type.
    #[schema(value_type = Value)]
    pub output: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub seq: u64,
    pub id: String,
    pub at: String,
    /// The run's status after it.
    pub status: String,
    #[schema(value_type = Object)]
    pub event: Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRun {
    #[serde(default)]
    pub reason: Option<String>,
}

/// A retry of a failed run; the body is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRun {
    /// Why, for the run's event log (at most 512 bytes are kept).
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decide {
    /// True to approve, false to reject.
    pub approve: bool,
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApprovalView {
    pub run: String,
    pub step: String,
    pub attempt: u32,
    pub tenant: String,
    pub contract: String,
    #[schema(value_type = Object)]
    pub inputs: Value,
    /// Whose tokens may decide (token names): the binding's `approvers` and the
    /// step's. Empty: any token of the tenant. An admin token may always decide.
    #[serde(default)]
    pub approvers: Vec<String>,
    pub requested_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub decision: Option<Value>,
}

/// A remote system's report of an attempt: `output` on success, `error` on
/// failure; exactly one of them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Callback {
    /// The attempt's output, any JSON value of the contract's output type
    /// (`null` for a step without an output). Present, even as `null`, means success.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Value>)]
    pub output: Option<Value>,
    #[serde(default)]
    pub error: Option<CallbackError>,
    /// For an error: may trying again help? (default true)
    #[serde(default)]
    pub retryable: Option<bool>,
}

/// A field that is there, even as `null`, is `Some`: `{"output": null}` is a
/// success without an output, `{}` is no report at all.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Many callbacks in one request (`POST /v1/callbacks`): for a remote system
/// that finishes many attempts, one request instead of one each.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackBatch {
    /// 1 to 1,000 reports, each of the attempt its token names.
    pub callbacks: Vec<BatchedCallback>,
}

/// One report of a batch: a callback's body and the token of its
/// `callback_url`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchedCallback {
    /// The last path segment of the invocation's `callback_url`.
    pub token: String,
    /// As in a single callback: present, even as `null`, means success.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Value>)]
    pub output: Option<Value>,
    #[serde(default)]
    pub error: Option<CallbackError>,
    /// For an error: may trying again help? (default true)
    #[serde(default)]
    pub retryable: Option<bool>,
}

impl BatchedCallback {
    /// The token, and the body a single callback would have sent.
    pub fn split(self) -> (String, Callback) {
        (
            self.token,
            Callback {
                output: self.output,
                error: self.error,
                retryable: self.retryable,
            },
        )
    }
}

/// What became of each callback of a batch, in the order they were sent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallbackBatchAccepted {
    pub results: Vec<CallbackOutcome>,
}

/// What became of one callback of a batch: the answer a single callback
/// would have had, or the error it would have had (`invalid_callback_token`,
/// `invalid_callback`, …), which touches no other callback of the batch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CallbackOutcome {
    Accepted(CallbackAccepted),
    Refused(ErrorBody),
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackError {
    /// An error name from the contract's `raises`, or your own: 1 to 128
    /// bytes, no control characters.
    pub code: String,
    /// For people; longer than 512 bytes, it is cut there.
    #[serde(default)]
    pub message: Option<String>,
}

/// What became of a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallbackStatus {
    /// This callback's result is now the attempt's result.
    Applied,
    /// The same result for this attempt was applied before (a resent
    /// callback): nothing more to do.
    AlreadyApplied,
    /// The attempt no longer awaits a result (it timed out, was cancelled or
    /// retried, the run ended), or a different result for it came first:
    /// this one changed nothing.
    Stale,
    /// The output does not fit the contract's output type (or would make the
    /// run's state too large): the attempt failed with `InvalidOutput`
    /// (`StateTooLarge`) instead, without retries.
    InvalidOutput,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallbackAccepted {
    pub run: String,
    pub step: String,
    pub attempt: u32,
    /// True exactly when `status` is `applied` or `already_applied`: the
    /// result sent is the attempt's result.
    pub applied: bool,
    pub status: CallbackStatus,
    /// Why, for `stale` and `invalid_output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    pub id: String,
    pub tenant: String,
    pub flow: String,
    pub cron: String,
    pub timezone: String,
    pub overlap: String,
    pub catchup: String,
    pub paused: bool,
    /// The fire time of the newest run the schedule started by itself
    /// (absent until it starts one; backfills do not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fire: Option<String>,
    /// When the next run is due (its fire time plus the jitter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire: Option<String>,
    /// Declared by a `schedule` statement of the flow (the deployment owns
    /// it); false for one made through the API.
    #[serde(default)]
    pub declared: bool,
    /// What a schedule made through the API belongs to (a customer, a model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The flow version the schedule is pinned to; absent, its runs start
    /// on the flow's head version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The input of its runs.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: Value,
}

/// A schedule to make (`POST /v1/schedules`: `flow` and `cron` needed) or
/// a change to one made through the API (`PATCH /v1/schedules/{id}`: the
/// fields given replace the schedule's; its tenant and flow stay). Runs of a
/// deployed flow on a cron schedule, with the policies of a flow's
/// `schedule` statement, checked the same way.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// The tenant; a tenant's token acts for its own, an admin names one (on create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// A deployed flow of the tenant (on create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// Pin the schedule to this flow version; without it its runs start on
    /// the flow's head version at each fire. `head` follows the head again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What the schedule belongs to (a customer, a model): lists filter by
    /// it. In a change, `""` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// 5 fields (minute hour day-of-month month day-of-week), 6 with seconds
    /// first, 7 with a year last, or a name such as `@daily`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// An IANA time zone (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `skip` (the default), `buffer_one`, `allow_all` or `cancel_running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<String>,
    /// `once` (the default), `skip` or `all` (with `catchup_within`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup: Option<String>,
    /// For `catchup all`: how far back missed fire times start (`7d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup_within: Option<String>,
    /// Each fire time's start is delayed by a stable amount below this
    /// (`10s`; `0s` for none, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// Values of the flow's parameters for its runs, checked against them as
    /// a run's input is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// Whether it starts no runs (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// Filters and paging of `GET /v1/schedules`: in id order, `limit` at a time;
/// the next page starts after the last id of this one (`cursor`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFilter {
    pub tenant: Option<String>,
    /// Schedules with this key.
    pub key: Option<String>,
    /// Schedules of this flow.
    pub flow: Option<String>,
    /// The `id` of the last schedule of the page before.
    pub cursor: Option<String>,
    /// At most 1000 (default 1000).
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backfill {
    /// RFC 3339; fire times from here (inclusive)…
    pub from: String,
    /// …to here (inclusive).
    pub to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackfillResult {
    pub schedule: String,
    /// The runs started, one per fire time.
    pub runs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    pub id: String,
    pub tenant: String,
    pub flow: String,
    pub version: String,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// One page of a list; pass `next` as `cursor` for the next page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Lineage {
    pub run: String,
    pub step: String,
    #[schema(value_type = Object)]
    pub inputs: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegistryView {
    pub kind: String,
    pub name: String,
    pub version: i64,
    #[schema(value_type = Object)]
    pub entry: Value,
    pub lineage: Lineage,
    pub registered_at: String,
}

/// Filters of `GET /v1/runs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunFilter {
    pub tenant: Option<String>,
    pub flow: Option<String>,
    pub version: Option<String>,
    pub status: Option<String>,
    /// Runs that failed at this step.
    pub step: Option<String>,
    /// Runs that failed with this error code.
    pub error: Option<String>,
    /// Runs of this key (a model's, a customer's).
    pub key: Option<String>,
    /// Created at or after (RFC 3339).
    pub since: Option<String>,
    /// Created before (RFC 3339).
    pub until: Option<String>,
    pub cursor: Option<String>,
    /// At most 1000 (default 100).
    pub limit: Option<u32>,
}

/// Engine counters since the server started (admin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatsView {
    /// Events applied.
    pub transitions: u64,
    /// Events refused (duplicates, stale completions).
    pub rejected: u64,
    pub commits: u64,
    /// Runs and subflow children that finished.
    pub finished: u64,
    /// Bytes of states, events, timers and outbox rows written.
    pub bytes_written: u64,
    /// Events committed by the engine that the history has not written yet
    /// (absent when no history consumer runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_behind: Option<u64>,
    /// The server process's resident memory now and at its peak (Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_mb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mb: Option<f64>,
}

/// The cluster as the store records it (`GET /v1/cluster`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    /// The server processes that said they were alive, in id order.
    pub members: Vec<MemberView>,
    /// Who holds each shard, with which fencing token, until when.
    pub shards: Vec<ShardView>,
    /// The consumers of the event stream and how far behind they are.
    pub consumers: Vec<ConsumerView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub id: String,
    /// `api`, `engine`, `scheduler`, `history`.
    pub roles: Vec<String>,
    pub started_at: String,
    /// When it stops counting as alive unless it says so again.
    pub expires_at: String,
    pub alive: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShardView {
    pub shard: u32,
    pub owner: String,
    /// The fencing token: a commit carrying an older one is refused.
    pub token: i64,
    /// When the lease ends unless renewed (far in the future for the
    /// embedded server, which holds every shard).
    pub expires_at: String,
    pub held: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsumerView {
    /// `history`.
    pub name: String,
    /// The process consuming now (the others with its role stand by), if one is.
    pub owner: Option<String>,
    /// The position of the last event it wrote.
    pub cursor: i64,
    /// Events committed after it.
    pub lag: u64,
}

/// A new token: whose it is, and optionally when it expires.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Whose token it is (`alice@example.com`, `ci`): the identity recorded
    /// for what is done with it, e.g. the reviewer of an approval.
    pub name: String,
    /// Expires this long after it is made: `30d`, `12h`, `90m`.
    #[serde(default)]
    pub expires_in: Option<String>,
    /// Expires at this time (RFC 3339). Not with `expires_in`.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// How to rotate a token; every field is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateToken {
    /// How long the old secret keeps working (`10m`); without it, it stops at once.
    #[serde(default)]
    pub grace: Option<String>,
    /// The new token's lifetime (default: the old one's, if it had one).
    #[serde(default)]
    pub expires_in: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// A token as lists show it: never its secret or its hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// `t-…`: how to name it to revoke or rotate it.
    pub id: String,
    /// Absent for an admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub name: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub expired: bool,
    /// The secret's last four characters (absent for tokens made before they were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last4: Option<String>,
}

/// A token just made (created or rotated): the secret is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    pub token: TokenView,
    pub secret: String,
}

/// The caller, as its token says.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Whoami {
    /// The token's id.
    pub token: String,
    /// The token's name: who the server records as doing what this token does.
    pub name: String,
    /// The tenant the token acts for; absent for an admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub admin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

// ---- the population ---------------------------------------------------------

/// Filters of `GET /v1/population`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PopulationFilter {
    /// The flow whose keys to list (required).
    pub flow: Option<String>,
    /// With an admin token: one tenant's keys (default: every tenant's).
    pub tenant: Option<String>,
    /// Keys whose latest run has this status.
    pub status: Option<String>,
    /// Keys whose latest run is on this flow version.
    pub version: Option<String>,
    /// Keys whose latest runs failed at least this many times in a row (1
    /// or more); such a page lists the longest streaks first, then by key.
    pub failed_in_a_row: Option<u32>,
    pub cursor: Option<String>,
    /// At most 1000 (default 100).
    pub limit: Option<u32>,
}

/// A key of a flow's population (a model, a customer) with its latest
/// top-level run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PopulationMember {
    pub tenant: String,
    pub flow: String,
    pub key: String,
    /// The key's latest run (the one started last).
    pub run: String,
    /// Its status: created, running, succeeded, failed, cancelled.
    pub status: String,
    pub version: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// How many of the key's latest runs failed one after the other (0
    /// unless the latest failed; 2: failed twice in a row).
    pub failed_in_a_row: u32,
}

/// Which flow's population counts to read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PopulationCountsFilter {
    /// The flow whose keys to count (required).
    pub flow: Option<String>,
    /// With an admin token: one tenant's keys (default: every tenant's).
    pub tenant: Option<String>,
}

/// How many keys of a flow have their latest run in each status and on
/// each version: counts kept up to date as runs change, not counted when
/// asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PopulationCountsView {
    pub flow: String,
    /// Every key of the flow.
    pub keys: u64,
    /// Keys by their latest run's status (statuses with none left out).
    pub by_status: BTreeMap<String, u64>,
    /// Keys by their latest run's flow version.
    pub by_version: BTreeMap<String, u64>,
}

// ---- bulk actions ----------------------------------------------------------

/// What a bulk job does to each run its query selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// Cancel the run (`POST /v1/runs/{id}/cancel`); a finished run is skipped.
    Cancel,
    /// Retry the failed run (`POST /v1/runs/{id}/retry`); a run not failed is skipped.
    Retry,
}

impl BulkAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Cancel => "cancel",
            BulkAction::Retry => "retry",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cancel" => Some(BulkAction::Cancel),
            "retry" => Some(BulkAction::Retry),
            _ => None,
        }
    }
}

/// What a bulk job acts on: the runs of a run filter (`runs`, the filter of
/// `GET /v1/runs`), or the latest run of each key of a flow's population
/// (`population`, the filter of `GET /v1/population`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BulkSelector {
    /// The runs `GET /v1/runs` lists with this filter, newest first.
    Runs(RunSelector),
    /// The latest run of each key `GET /v1/population` lists with this
    /// filter, in its order.
    Population(PopulationSelector),
}

impl BulkSelector {
    /// The tenant it names, if any.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            BulkSelector::Runs(r) => r.tenant.as_deref(),
            BulkSelector::Population(p) => p.tenant.as_deref(),
        }
    }

    /// The same selection in `tenant`.
    pub fn in_tenant(&self, tenant: &str) -> BulkSelector {
        let tenant = Some(tenant.to_string());
        match self {
            BulkSelector::Runs(r) => BulkSelector::Runs(RunSelector {
                tenant,
                ..r.clone()
            }),
            BulkSelector::Population(p) => BulkSelector::Population(PopulationSelector {
                tenant,
                ..p.clone()
            }),
        }
    }
}

/// A population filter as `GET /v1/population` takes it, without its paging:
/// the keys of one flow, each standing for its latest run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PopulationSelector {
    /// The tenant whose keys (a tenant's token: its own; the admin must name one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The flow whose keys.
    pub flow: String,
    /// Keys whose latest run has this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Keys whose latest run is on this flow version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Keys whose latest runs failed at least this many times in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_in_a_row: Option<u32>,
}

/// A run filter as `GET /v1/runs` takes it, without its paging.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSelector {
    /// The tenant whose runs (a tenant's token: its own; the admin must name one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Runs that failed at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Runs that failed with this error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Runs of this key (the model or customer they belong to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Created at or after (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Created before (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// A bulk action to start (`POST /v1/bulk`) or preview (`POST /v1/bulk/preview`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    pub action: BulkAction,
    pub query: BulkSelector,
    /// Why, for each run's event log (with the job's id) and the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Runs acted on per second, at most (default 1,000; 1 to 100,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
}

/// What a bulk action would touch: counted from the history's index up to
/// `counted_up_to`, and the first runs it would act on.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkPreview {
    pub action: BulkAction,
    /// How many runs the query selects now (at least this many if `more`).
    pub runs: u64,
    /// The query selects more than `runs`: counting stopped there.
    pub more: bool,
    /// The first runs, newest first, as the job walks them.
    pub first: Vec<RunSummary>,
}

/// A bulk job: what it does, to what, who asked, and how far it is.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkJobView {
    pub id: String,
    pub tenant: String,
    pub action: BulkAction,
    pub query: BulkSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Runs acted on per second, at most.
    pub rate: u32,
    /// The token name of who started it.
    pub created_by: String,
    pub created_at: String,
    /// `running`, `paused`, `cancelled` or `done`.
    pub state: String,
    /// Runs its query gave it so far.
    pub selected: u64,
    /// Runs it cancelled or retried.
    pub acted: u64,
    /// Runs it left alone (finished already, not failed, …).
    pub skipped: u64,
    /// Of `skipped`, how many for each reason (an error code of the run's own action).
    pub skipped_by: BTreeMap<String, u64>,
    /// Runs it could not act on for another reason.
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Where it goes on from in its query (a run list cursor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// A page of bulk jobs' filter.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    pub tenant: Option<String>,
    pub cursor: Option<String>,
    /// At most 100 (default 20).
    pub limit: Option<u32>,
}
