//! Deployed flows as people read them (the console's flow page): a flow's
//! versions with how many runs each has, and one version's IR, the sources
//! it was compiled from and its steps.

use super::*;

/// One version of a flow and how many runs it has.
#[derive(Debug, Clone)]
pub struct FlowVersion {
    pub view: FlowView,
    /// Runs on this version that the history holds, counted up to the
    /// bound the caller gave.
    pub runs: u64,
    /// There are more runs than `runs` says: the bound was reached.
    pub more_runs: bool,
}

/// One version of a flow, whole.
#[derive(Debug, Clone)]
pub struct FlowDetail {
    pub view: FlowView,
    pub ir: eflow_ir::Flow,
    /// The `.eflow` files its bundle was compiled from, by name; empty when
    /// the bundle was deployed as IR (`eflow deploy build/ir/`).
    pub sources: BTreeMap<String, String>,
}

impl Service {
    /// A page of flow `name`'s versions, newest first, after version
    /// `after` (the last of the page before), at most `limit`; each with its
    /// runs counted up to `count_at_most` (one bounded range of the
    /// history's index per version shown). Whether more versions follow.
    /// Another tenant's flow is not found.
    pub async fn flow_versions(
        &self,
        caller: &Caller,
        tenant: &str,
        name: &str,
        after: Option<&str>,
        limit: usize,
        count_at_most: u32,
    ) -> ApiResult<(Vec<FlowVersion>, bool)> {
        let mut versions = self.versions_of(caller, tenant, name).await?;
        versions.sort_by(|a, b| {
            b.deployed_at
                .cmp(&a.deployed_at)
                .then_with(|| b.version.cmp(&a.version))
        });
        let start = match after {
            None => 0,
            Some(v) => versions
                .iter()
                .position(|r| r.version == v)
                .map(|i| i + 1)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_cursor",
                        format!("flow `{name}` has no version `{v}`: start again without it"),
                    )
                })?,
        };
        let more = versions.len() > start + limit;
        self.wait_for_history().await?;
        let history = self.inner.history.store();
        let mut out = Vec::with_capacity(limit);
        for r in versions.into_iter().skip(start).take(limit) {
            let n = history
                .version_runs(
                    &r.tenant,
                    &r.name,
                    &r.version,
                    count_at_most.saturating_add(1),
                )
                .await
                .map_err(crate::history::Error::from)?;
            out.push(FlowVersion {
                runs: n.min(u64::from(count_at_most)),
                more_runs: n > u64::from(count_at_most),
                view: flow_view(r),
            });
        }
        Ok((out, more))
    }

    /// Version `version` of flow `name` of `tenant` (its head when `None`):
    /// its IR and the sources it was compiled from.
    pub async fn flow_detail(
        &self,
        caller: &Caller,
        tenant: &str,
        name: &str,
        version: Option<&str>,
    ) -> ApiResult<FlowDetail> {
        let absent = || ApiError::not_found("flow", &format!("{tenant}/{name}"));
        if !caller.may_see(tenant) {
            return Err(absent());
        }
        let row = self
            .db()
            .flow(tenant, name, version)
            .await?
            .ok_or_else(|| match version {
                Some(v) => ApiError::not_found("flow", &format!("{tenant}/{name}@{v}")),
                None => absent(),
            })?;
        let deployed = self.inner.engine.deployments().get(&row.bundle).await?;
        let ir = deployed
            .bundle
            .flow(name)
            .ok_or_else(|| ApiError::internal(format!("bundle {} has no flow {name}", row.bundle)))?
            .flow
            .clone();
        let sources = match self.db().bundle_sources(&row.bundle).await? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(ApiError::internal)?,
            None => BTreeMap::new(),
        };
        Ok(FlowDetail {
            view: flow_view(row),
            ir,
            sources,
        })
    }

    async fn versions_of(
        &self,
        caller: &Caller,
        tenant: &str,
        name: &str,
    ) -> ApiResult<Vec<store::FlowRow>> {
        let absent = || ApiError::not_found("flow", &format!("{tenant}/{name}"));
        if !caller.may_see(tenant) {
            return Err(absent());
        }
        let rows: Vec<store::FlowRow> = self
            .db()
            .flows(Some(tenant))
            .await?
            .into_iter()
            .filter(|r| r.name == name)
            .collect();
        if rows.is_empty() {
            return Err(absent());
        }
        Ok(rows)
    }
}

pub(super) fn flow_view(r: store::FlowRow) -> FlowView {
    FlowView {
        tenant: r.tenant,
        name: r.name,
        version: r.version,
        bundle: r.bundle,
        deployed_at: rfc3339(r.deployed_at),
        head: r.head,
    }
}
