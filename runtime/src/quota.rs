//! Per-tenant quotas: how many runs a tenant may have in progress, its
//! subflow children included, and how fast its requests may start them.
//!
//! One [`Ledger`] counts every way a run starts: an API start, a backfill, a
//! schedule's fire and a parent's child start (a subflow call, each child of
//! a fan-out). A run that ends gives its place back, whatever started it, so
//! the count stays true. The policy:
//!
//! - **Active runs:** every run counts, top-level or child. A top-level start
//!   that would pass the limit is refused: the API answers 429
//!   `quota_active_runs`; a backfill is refused whole (it never starts part of
//!   its range); a schedule's fire is skipped, with a warning in the log. A
//!   child start that would pass it waits (its outbox row stays) until a run
//!   of the tenant ends: the parent's fan-out goes slower, it does not fail.
//!   One exception keeps parents from waiting on each other forever when
//!   they hold every place: a parent with no child in progress may always
//!   start one, so the count passes the limit by at most one child per such
//!   parent.
//! - **Start rate:** a token bucket per tenant, one token per API request that
//!   starts runs (a start, a backfill). A schedule's fires and child starts
//!   take none: they are declared in the deployed flow, not sent by a client.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tokio::sync::{Notify, mpsc};

use crate::store::TenantRow;

/// Per-tenant limits when the tenant sets none.
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    pub max_active_runs: i64,
    pub max_starts_per_sec: f64,
    /// The most schedules a tenant may have (declared ones count); making
    /// one more through the API is refused.
    pub max_schedules: u64,
}

/// The default of [`Quotas::max_schedules`].
pub const DEFAULT_MAX_SCHEDULES: u64 = 100_000;

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_active_runs: 10_000,
            max_starts_per_sec: 1_000.0,
            max_schedules: DEFAULT_MAX_SCHEDULES,
        }
    }
}

/// Why a start was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "tenant `{tenant}` has {active} runs in progress (subflow children included) and may have {limit}; {asked} more would pass it: wait for some to finish, or raise `max_active_runs`"
    )]
    ActiveRuns {
        tenant: String,
        active: i64,
        asked: i64,
        limit: i64,
    },
    #[error("tenant `{tenant}` may start runs {rate} times a second: slow down and retry")]
    StartRate { tenant: String, rate: f64 },
}

impl Refusal {
    /// The stable error code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::ActiveRuns { .. } => "quota_active_runs",
            Refusal::StartRate { .. } => "quota_start_rate",
        }
    }
}

/// Who asks for a start: a client's request pays the start rate, a schedule does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    Request,
    Schedule,
}

/// What became of a child start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStart {
    /// It has a place: create the child.
    Admitted,
    /// The tenant is at its limit: try again when a run of it ends.
    Wait,
    /// The ledger does not know the tenant's limit yet (a restart, a purge):
    /// read its row, [`Ledger::learn`] it and ask again.
    UnknownTenant,
}

#[derive(Debug, Default)]
struct Usage {
    /// Runs in progress, children included.
    active: i64,
    /// Children in progress (admitted and not ended) per parent run; only
    /// parents with at least one.
    children: HashMap<String, i64>,
    /// The tenant's limit on active runs, once its row was seen.
    max_active_runs: Option<i64>,
    /// Token bucket for the start rate.
    tokens: f64,
    refilled_at: u64,
}

/// What every tenant uses now.
#[derive(Debug)]
pub struct Ledger {
    defaults: Quotas,
    usage: Mutex<HashMap<String, Usage>>,
    /// Told each time places may have been given back.
    freed: Notify,
    /// In a cluster: where each change made here goes, for the other
    /// processes' ledgers ([`share`]).
    announce: OnceLock<mpsc::UnboundedSender<Delta>>,
}

/// A change of a tenant's count of runs in progress made in one process:
/// `runs` more (fewer when negative), children of `parent` when it is set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Delta {
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub runs: i64,
}

impl Ledger {
    /// `active`: the runs in progress (from the store, at start) per tenant
    /// and parent (`None`: top-level runs).
    pub fn new(
        defaults: Quotas,
        active: impl IntoIterator<Item = (String, Option<String>, i64)>,
    ) -> Self {
        let mut usage: HashMap<String, Usage> = HashMap::new();
        for (tenant, parent, n) in active {
            let u = usage.entry(tenant).or_default();
            u.active += n;
            if let Some(parent) = parent {
                *u.children.entry(parent).or_default() += n;
            }
        }
        Self {
            defaults,
            usage: Mutex::new(usage),
            freed: Notify::new(),
            announce: OnceLock::new(),
        }
    }

    pub fn defaults(&self) -> Quotas {
        self.defaults
    }

    /// The tenant's limits: its own where it sets them, else the defaults.
    pub fn limits(&self, tenant: &TenantRow) -> Quotas {
        Quotas {
            max_active_runs: tenant
                .max_active_runs
                .unwrap_or(self.defaults.max_active_runs),
            max_starts_per_sec: tenant
                .max_starts_per_sec
                .unwrap_or(self.defaults.max_starts_per_sec),
            max_schedules: self.defaults.max_schedules,
        }
    }

    fn usage(&self) -> std::sync::MutexGuard<'_, HashMap<String, Usage>> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `runs` places among the tenant's active runs, and for a request
    /// one token of its start rate; all or nothing. Give back with
    /// [`Self::release`] the places of runs that did not start after all.
    pub fn admit(
        &self,
        tenant: &TenantRow,
        runs: i64,
        asker: Asker,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let limits = self.limits(tenant);
        let rate = limits.max_starts_per_sec;
        let mut usage = self.usage();
        let u = usage.entry(tenant.id.clone()).or_default();
        u.max_active_runs = Some(limits.max_active_runs);
        if u.refilled_at == 0 {
            u.tokens = rate.max(1.0);
            u.refilled_at = now_ms;
        }
        let elapsed = now_ms.saturating_sub(u.refilled_at) as f64 / 1000.0;
        u.tokens = (u.tokens + elapsed * rate).min(rate.max(1.0));
        u.refilled_at = now_ms;
        if u.active + runs > limits.max_active_runs {
            return Err(Refusal::ActiveRuns {
                tenant: tenant.id.clone(),
                active: u.active,
                asked: runs,
                limit: limits.max_active_runs,
            });
        }
        if asker == Asker::Request {
            if u.tokens < 1.0 {
                return Err(Refusal::StartRate {
                    tenant: tenant.id.clone(),
                    rate,
                });
            }
            u.tokens -= 1.0;
        }
        u.active += runs;
        drop(usage);
        self.announce(tenant.id.as_str(), None, runs);
        Ok(())
    }

    /// Tells the cluster's other processes of a change made here.
    fn announce(&self, tenant: &str, parent: Option<&str>, runs: i64) {
        if let Some(tx) = self.announce.get() {
            let _ = tx.send(Delta {
                tenant: tenant.to_string(),
                parent: parent.map(str::to_string),
                runs,
            });
        }
    }

    /// A change another process of the cluster made (see [`share`]).
    pub fn apply(&self, d: &Delta) {
        {
            let mut usage = self.usage();
            let u = usage.entry(d.tenant.clone()).or_default();
            u.active = (u.active + d.runs).max(0);
            if let Some(p) = &d.parent {
                let n = u.children.entry(p.clone()).or_default();
                *n += d.runs;
                if *n <= 0 {
                    u.children.remove(p);
                }
            }
        }
        if d.runs < 0 {
            self.freed.notify_one();
        }
    }

    /// Records the tenant's limits, for child starts (which come without the
    /// tenant's row).
    pub fn learn(&self, tenant: &TenantRow) {
        let limit = self.limits(tenant).max_active_runs;
        self.usage()
            .entry(tenant.id.clone())
            .or_default()
            .max_active_runs = Some(limit);
    }

    /// Whether the tenant's limits were seen (else [`Self::learn`] them).
    pub fn knows(&self, tenant: &str) -> bool {
        self.usage()
            .get(tenant)
            .is_some_and(|u| u.max_active_runs.is_some())
    }

    /// Takes a place for a child of `parent`: under the limit, or past it
    /// when the parent has no child in progress (see the module's policy).
    /// An admitted child gives its place back with [`Self::finished`].
    pub fn admit_child(&self, tenant: &str, parent: &str) -> ChildStart {
        let mut usage = self.usage();
        let Some(u) = usage.get_mut(tenant) else {
            return ChildStart::UnknownTenant;
        };
        let Some(limit) = u.max_active_runs else {
            return ChildStart::UnknownTenant;
        };
        if u.active >= limit && u.children.contains_key(parent) {
            return ChildStart::Wait;
        }
        u.active += 1;
        *u.children.entry(parent.to_string()).or_default() += 1;
        drop(usage);
        self.announce(tenant, Some(parent), 1);
        ChildStart::Admitted
    }

    /// A run of the tenant ended (`parent`: the run that started it, for a
    /// child), or a child admitted did not start after all.
    pub fn finished(&self, tenant: &str, parent: Option<&str>) {
        {
            let mut usage = self.usage();
            if let Some(u) = usage.get_mut(tenant) {
                u.active = (u.active - 1).max(0);
                if let Some(p) = parent
                    && let Some(n) = u.children.get_mut(p)
                {
                    *n -= 1;
                    if *n <= 0 {
                        u.children.remove(p);
                    }
                }
            }
        }
        self.announce(tenant, parent, -1);
        self.freed.notify_one();
    }

    /// `runs` top-level runs of the tenant were admitted and did not start.
    pub fn release(&self, tenant: &str, runs: i64) {
        {
            let mut usage = self.usage();
            if let Some(u) = usage.get_mut(tenant) {
                u.active = (u.active - runs).max(0);
            }
        }
        self.announce(tenant, None, -runs);
        self.freed.notify_one();
    }

    /// Forgets a purged tenant.
    pub fn forget(&self, tenant: &str) {
        self.usage().remove(tenant);
        self.freed.notify_one();
    }

    /// Notified when places may have been given back (a run ended, a tenant
    /// was purged): child starts that wait try again.
    pub fn freed(&self) -> &Notify {
        &self.freed
    }

    /// The tenant's runs in progress, children included, as counted here.
    pub fn active(&self, tenant: &str) -> i64 {
        self.usage().get(tenant).map_or(0, |u| u.active)
    }
}

/// Changes a process sends in one broadcast, at most.
const DELTAS_A_MESSAGE: usize = 1024;

/// Keeps this process's ledger in step with the cluster's other processes:
/// each change made here (a start admitted, a run ended, anywhere it
/// happens) is broadcast on the bus, and each one broadcast by another
/// process is applied here. A run started through one process's API and
/// ended by another's engine so leaves both counts. Broadcasts are at most
/// once: a process that misses some (a reconnect) counts wrong until it
/// restarts and reads the store's count again. On the in-process bus there
/// is no other process and this returns at once.
pub async fn share<I: Send + 'static>(
    ledger: std::sync::Arc<Ledger>,
    bus: crate::bus::Bus<I>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut theirs = match bus.listen("usage").await {
        Ok(Some(rx)) => rx,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot follow the cluster's quota counts; this process counts only its own");
            return;
        }
    };
    let (tx, mut ours) = mpsc::unbounded_channel();
    if ledger.announce.set(tx).is_err() {
        return;
    }
    let mut batch = Vec::with_capacity(DELTAS_A_MESSAGE);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            n = ours.recv_many(&mut batch, DELTAS_A_MESSAGE) => {
                if n == 0 {
                    break;
                }
                match serde_json::to_vec(&batch) {
                    Ok(bytes) => {
                        if let Err(e) = bus.broadcast("usage", bytes).await {
                            tracing::warn!(error = %e, changes = n, "cannot tell the cluster of quota changes");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot encode quota changes"),
                }
                batch.clear();
            }
            m = theirs.recv() => match m {
                Some(bytes) => match serde_json::from_slice::<Vec<Delta>>(&bytes) {
                    Ok(deltas) => deltas.iter().for_each(|d| ledger.apply(d)),
                    Err(e) => tracing::warn!(error = %e, "a quota broadcast that is not a list of changes"),
                },
                None => break,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(max_active: Option<i64>, rate: Option<f64>) -> TenantRow {
        TenantRow {
            id: "acme".into(),
            created_at: 0,
            max_active_runs: max_active,
            max_starts_per_sec: rate,
            allow_egress: Vec::new(),
            history_retention_ms: None,
        }
    }

    /// Each change made in one process's ledger is announced, and applying
    /// it in another's moves that one's count the same way.
    #[test]
    fn changes_made_here_are_announced_and_apply_elsewhere() {
        let here = Ledger::new(Quotas::default(), []);
        let there = Ledger::new(Quotas::default(), []);
        let (tx, mut rx) = mpsc::unbounded_channel();
        here.announce.set(tx).unwrap();
        let t = tenant(Some(10), Some(1000.0));
        here.admit(&t, 3, Asker::Request, 1).unwrap();
        here.learn(&t);
        assert_eq!(here.admit_child("acme", "p"), ChildStart::Admitted);
        here.release("acme", 1);
        here.finished("acme", Some("p"));
        let mut deltas = Vec::new();
        while let Ok(d) = rx.try_recv() {
            deltas.push(d);
        }
        let d = |parent: Option<&str>, runs| Delta {
            tenant: "acme".into(),
            parent: parent.map(str::to_string),
            runs,
        };
        assert_eq!(
            deltas,
            [d(None, 3), d(Some("p"), 1), d(None, -1), d(Some("p"), -1)]
        );
        for x in &deltas[..2] {
            there.apply(x);
        }
        assert_eq!(there.active("acme"), 4);
        for x in &deltas[2..] {
            there.apply(x);
        }
        assert_eq!(there.active("acme"), here.active("acme"));
        assert_eq!(there.active("acme"), 2);
        // A run ended that this process never counted does not go below none.
        there.apply(&d(None, -5));
        assert_eq!(there.active("acme"), 0);
    }

    #[test]
    fn active_runs_are_admitted_up_to_the_limit_all_or_nothing() {
        let l = Ledger::new(Quotas::default(), [("acme".to_string(), None, 1)]);
        let t = tenant(Some(5), Some(1000.0));
        assert!(matches!(
            l.admit(&t, 5, Asker::Request, 1),
            Err(Refusal::ActiveRuns {
                active: 1,
                asked: 5,
                limit: 5,
                ..
            })
        ));
        assert_eq!(l.active("acme"), 1, "a refusal takes nothing");
        l.admit(&t, 4, Asker::Request, 1).unwrap();
        assert_eq!(l.active("acme"), 5);
        assert!(l.admit(&t, 1, Asker::Schedule, 1).is_err());
        l.release("acme", 2);
        l.admit(&t, 1, Asker::Schedule, 1).unwrap();
        assert_eq!(l.active("acme"), 4);
    }

    #[test]
    fn requests_pay_the_start_rate_and_schedules_do_not() {
        let l = Ledger::new(Quotas::default(), []);
        let t = tenant(None, Some(2.0));
        l.admit(&t, 1, Asker::Request, 1_000).unwrap();
        l.admit(&t, 1, Asker::Request, 1_000).unwrap();
        let refused = l.admit(&t, 1, Asker::Request, 1_000).unwrap_err();
        assert_eq!(refused.code(), "quota_start_rate");
        l.admit(&t, 1, Asker::Schedule, 1_000).unwrap();
        // Half a second refills one token at two a second.
        l.admit(&t, 1, Asker::Request, 1_500).unwrap();
        assert_eq!(l.active("acme"), 4);
    }

    #[test]
    fn release_never_goes_below_zero_and_forget_drops_the_tenant() {
        let l = Ledger::new(Quotas::default(), [("acme".to_string(), None, 1)]);
        l.release("acme", 3);
        assert_eq!(l.active("acme"), 0);
        l.release("nobody", 1);
        l.admit(&tenant(None, None), 2, Asker::Schedule, 1).unwrap();
        l.forget("acme");
        assert_eq!(l.active("acme"), 0);
    }

    #[test]
    fn children_count_wait_at_the_limit_and_a_parent_without_one_may_start_one() {
        let l = Ledger::new(
            Quotas::default(),
            [
                ("acme".to_string(), None, 2),
                ("acme".to_string(), Some("p1".to_string()), 1),
            ],
        );
        assert_eq!(l.active("acme"), 3);
        assert_eq!(l.admit_child("acme", "p1"), ChildStart::UnknownTenant);
        l.learn(&tenant(Some(4), None));
        assert_eq!(l.admit_child("acme", "p1"), ChildStart::Admitted);
        assert_eq!(l.admit_child("acme", "p1"), ChildStart::Wait);
        // p2 has no child in progress: it may start one past the limit, so
        // parents that hold every place still go on.
        assert_eq!(l.admit_child("acme", "p2"), ChildStart::Admitted);
        assert_eq!(l.admit_child("acme", "p2"), ChildStart::Wait);
        assert_eq!(l.active("acme"), 5);
        let t = tenant(Some(4), None);
        assert!(l.admit(&t, 1, Asker::Request, 1).is_err(), "children count");
        l.finished("acme", Some("p1"));
        l.finished("acme", Some("p1"));
        assert_eq!(l.active("acme"), 3);
        assert_eq!(l.admit_child("acme", "p2"), ChildStart::Admitted);
        assert_eq!(l.admit_child("acme", "p2"), ChildStart::Wait);
        l.forget("acme");
        assert_eq!(l.admit_child("acme", "p2"), ChildStart::UnknownTenant);
    }
}
