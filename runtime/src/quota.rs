//! Per-tenant quotas: how many top-level runs a tenant may have in progress,
//! and how fast its requests may start them.
//!
//! One [`Ledger`] counts every way a run starts: an API start, a backfill and
//! a schedule's fire. A run that ends gives its place back, whatever started
//! it, so the count stays true. The policy:
//!
//! - **Active runs:** every top-level run counts, however it started. A start
//!   that would pass the limit is refused: the API answers 429
//!   `quota_active_runs`; a backfill is refused whole (it never starts part of
//!   its range); a schedule's fire is skipped, with a warning in the log.
//! - **Start rate:** a token bucket per tenant, one token per API request that
//!   starts runs (a start, a backfill). A schedule's fires take none: they are
//!   declared in the deployed flow, not sent by a client.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::TenantRow;

/// Per-tenant limits when the tenant sets none.
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    pub max_active_runs: i64,
    pub max_starts_per_sec: f64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_active_runs: 10_000,
            max_starts_per_sec: 1_000.0,
        }
    }
}

/// Why a start was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "tenant `{tenant}` has {active} runs in progress and may have {limit}; {asked} more would pass it: wait for some to finish, or raise `max_active_runs`"
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

#[derive(Debug, Default)]
struct Usage {
    active: i64,
    /// Token bucket for the start rate.
    tokens: f64,
    refilled_at: u64,
}

/// What every tenant uses now.
#[derive(Debug)]
pub struct Ledger {
    defaults: Quotas,
    usage: Mutex<HashMap<String, Usage>>,
}

impl Ledger {
    /// `active`: each tenant's top-level runs in progress (from the store, at start).
    pub fn new(defaults: Quotas, active: impl IntoIterator<Item = (String, i64)>) -> Self {
        let usage = active
            .into_iter()
            .map(|(tenant, active)| {
                (
                    tenant,
                    Usage {
                        active,
                        ..Usage::default()
                    },
                )
            })
            .collect();
        Self {
            defaults,
            usage: Mutex::new(usage),
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
        }
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
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let u = usage.entry(tenant.id.clone()).or_default();
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

    /// `runs` of the tenant ended, or were admitted and did not start.
    pub fn release(&self, tenant: &str, runs: i64) {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = usage.get_mut(tenant) {
            u.active = (u.active - runs).max(0);
        }
    }

    /// Forgets a purged tenant.
    pub fn forget(&self, tenant: &str) {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        usage.remove(tenant);
    }

    /// The tenant's runs in progress, as counted here.
    #[cfg(test)]
    pub fn active(&self, tenant: &str) -> i64 {
        let usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        usage.get(tenant).map_or(0, |u| u.active)
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
        }
    }

    #[test]
    fn active_runs_are_admitted_up_to_the_limit_all_or_nothing() {
        let l = Ledger::new(Quotas::default(), [("acme".to_string(), 1)]);
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
        let l = Ledger::new(Quotas::default(), [("acme".to_string(), 1)]);
        l.release("acme", 3);
        assert_eq!(l.active("acme"), 0);
        l.release("nobody", 1);
        l.admit(&tenant(None, None), 2, Asker::Schedule, 1).unwrap();
        l.forget("acme");
        assert_eq!(l.active("acme"), 0);
    }
}
