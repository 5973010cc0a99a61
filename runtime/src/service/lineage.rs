//! Lineage of registered models and datasets (the console's lineage page):
//! each version with the run and step that registered it and what it was
//! made from, and the runs and steps that used it since (looked it up,
//! promoted or retired it), a page at a time from an index.

use super::*;

/// A run's step that used a registered version.
#[derive(Debug, Clone)]
pub struct UseView {
    /// The run as the caller names it.
    pub run: String,
    pub step: String,
    /// `look_up`, `promote` or `retire`.
    pub action: String,
    pub used_at: String,
    /// Where the next page of uses starts after this one.
    pub cursor: String,
}

/// One registered version and its first uses.
#[derive(Debug, Clone)]
pub struct VersionLineage {
    pub entry: RegistryView,
    pub uses: Vec<UseView>,
    /// More uses follow the ones here.
    pub more_uses: bool,
}

impl Service {
    /// A page of the versions of `kind` `name` of the tenant, newest first,
    /// older than version `before` (the last of the page before), at most
    /// `limit`, each with up to `uses` of its uses (one index range per
    /// version shown); whether older versions follow.
    #[allow(clippy::too_many_arguments)]
    pub async fn lineage(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        kind: &str,
        name: &str,
        before: Option<i64>,
        limit: usize,
        uses: u32,
    ) -> ApiResult<(Vec<VersionLineage>, bool)> {
        let t = caller.tenant(tenant)?.to_string();
        let mut versions = self
            .registry(caller, Some(&t), Some(kind), Some(name))
            .await?;
        if versions.is_empty() {
            return Err(ApiError::not_found(kind, name));
        }
        versions.reverse();
        versions.retain(|v| before.is_none_or(|b| v.version < b));
        let more = versions.len() > limit;
        versions.truncate(limit);
        let mut out = Vec::with_capacity(versions.len());
        for entry in versions {
            let (uses, more_uses) = self
                .version_uses(caller, Some(&t), kind, name, entry.version, None, uses)
                .await?;
            out.push(VersionLineage {
                entry,
                uses,
                more_uses,
            });
        }
        Ok((out, more))
    }

    /// A page of the uses of version `version` of `kind` `name`, oldest
    /// first, after `after` (a [`UseView::cursor`]); whether more follow.
    #[allow(clippy::too_many_arguments)]
    pub async fn version_uses(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        kind: &str,
        name: &str,
        version: i64,
        after: Option<&str>,
        limit: u32,
    ) -> ApiResult<(Vec<UseView>, bool)> {
        let t = caller.tenant(tenant)?;
        let after = match after {
            None => None,
            Some(c) => Some(
                c.split_once('|')
                    .and_then(|(at, key)| Some((at.parse::<u64>().ok()?, key.to_string())))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_cursor",
                            "the cursor is not one this server gave out: start again without it",
                        )
                    })?,
            ),
        };
        let limit = limit.clamp(1, 1000);
        let mut rows = self
            .db()
            .registry_uses(t, kind, name, version, after, limit + 1)
            .await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        Ok((
            rows.into_iter()
                .map(|u| UseView {
                    run: caller.shown_run(&u.run),
                    step: u.step,
                    action: u.action,
                    used_at: rfc3339(u.used_at),
                    cursor: format!("{}|{}", u.used_at, u.key),
                })
                .collect(),
            more,
        ))
    }
}
