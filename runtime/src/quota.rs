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
use std::sync::Mutex;

use tokio::sync::Notify;

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
        Ok(())
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
