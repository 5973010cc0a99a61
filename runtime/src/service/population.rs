//! The population of a flow (`GET /v1/population`, the console's population
//! page): its keys, each with its latest run, and how many keys are in each
//! status and on each version, as the history keeps them
//! ([`crate::history::population`]). Scoped like the run list: a tenant's
//! token sees its own keys, an admin's every tenant's or the one it names.

use super::*;
use crate::api::model::{PopulationCountsView, PopulationMember};
use crate::history::PopulationQuery;

impl Service {
    /// A page of `q.flow`'s keys, once the history holds what the engine
    /// committed before the call (up to a moment, as the run list).
    pub async fn population(
        &self,
        caller: &Caller,
        mut q: PopulationQuery,
    ) -> ApiResult<Page<PopulationMember>> {
        q.tenant = caller.scope(q.tenant.as_deref())?.map(str::to_string);
        self.wait_for_history().await?;
        let page = self
            .inner
            .history
            .store()
            .population(&q)
            .await
            .map_err(|e| history_error(e.into()))?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|m| PopulationMember {
                    run: caller.shown_run(&m.run),
                    tenant: m.tenant,
                    flow: m.flow,
                    key: m.key,
                    status: m.status,
                    version: m.version,
                    created_at: rfc3339(m.created_at),
                    updated_at: rfc3339(m.updated_at),
                    error_code: m.error_code,
                    failed_in_a_row: m.failed_in_a_row,
                })
                .collect(),
            next: page.next,
        })
    }

    /// The kept counts of `flow`'s keys by status and by version.
    pub async fn population_counts(
        &self,
        caller: &Caller,
        flow: &str,
        tenant: Option<&str>,
    ) -> ApiResult<PopulationCountsView> {
        let tenant = caller.scope(tenant)?;
        self.wait_for_history().await?;
        let c = self
            .inner
            .history
            .store()
            .population_counts(flow, tenant)
            .await
            .map_err(|e| history_error(e.into()))?;
        Ok(PopulationCountsView {
            flow: flow.to_string(),
            keys: c.by_status.iter().map(|(_, n)| n).sum(),
            by_status: c.by_status.into_iter().collect(),
            by_version: c.by_version.into_iter().collect(),
        })
    }
}
