//! Tokens: who a caller is (the token's tenant, id and name, never a name in
//! a request), and what may be done with tokens — list, create, revoke,
//! rotate — for a tenant's tokens and for the admin's.
//!
//! Who may: the admin, everything. A tenant's token may list its tenant's
//! tokens and revoke or rotate itself, nothing more: a token's name is who
//! the server records as acting, so only the admin makes a token with a name.

use std::time::Duration;

use super::*;
use crate::store::TokenRow;

/// Whose tokens an operation is about: a tenant's, or the admin tokens (`None`).
pub type Owner<'a> = Option<&'a str>;

impl Service {
    pub async fn authenticate(&self, bearer: Option<&str>) -> ApiResult<Caller> {
        let Some(secret) = bearer else {
            return Err(ApiError::new(
                401,
                "unauthenticated",
                "send a token as `Authorization: Bearer TOKEN` (the CLI reads EFLOW_TOKEN)",
            ));
        };
        let hash = token_hash(secret);
        let now = self.now();
        let cached = self
            .inner
            .callers
            .lock()
            .ok()
            .and_then(|c| c.get(&hash).cloned());
        if let Some((caller, expires_at)) = cached
            && expires_at.is_none_or(|t| t > now)
        {
            return Ok(caller);
        }
        let Some(row) = self.db().token(&hash).await? else {
            return Err(ApiError::new(
                401,
                "unauthenticated",
                "this token is not known (or was revoked or rotated): check EFLOW_TOKEN, or ask an admin for one (`eflow token create`)",
            ));
        };
        if let Some(t) = row.expires_at
            && t <= now
        {
            return Err(ApiError::new(
                401,
                "token_expired",
                format!(
                    "this token expired at {}: use another, or ask an admin for a new one (`eflow token create`, `eflow token rotate`)",
                    rfc3339(t)
                ),
            ));
        }
        let caller = Caller {
            scope: match &row.tenant {
                None => Scope::Admin,
                Some(t) => Scope::Tenant(t.clone()),
            },
            token: row.id,
            name: row.name,
        };
        if let Ok(mut c) = self.inner.callers.lock() {
            c.insert(hash, (caller.clone(), row.expires_at));
        }
        Ok(caller)
    }

    /// True when there is no admin token that works: the server makes one
    /// (first start, or every admin token expired).
    pub async fn admin_token_needed(&self) -> ApiResult<bool> {
        Ok(self.db().admin_token_count(self.now()).await? == 0)
    }

    /// Registers an admin token whose secret is known already (made by the
    /// server and written to `admin-token`, or given with `--admin-token`).
    pub async fn add_admin_token(&self, secret: &str) -> ApiResult<()> {
        if self.db().token(&token_hash(secret)).await?.is_none() {
            self.db()
                .insert_token(&self.token_row(secret, None, "admin", None))
                .await?;
        }
        Ok(())
    }

    /// The caller, as its token says.
    pub async fn whoami(&self, caller: &Caller) -> ApiResult<Whoami> {
        let row = self.db().token_by_id(&caller.token).await?;
        Ok(Whoami {
            token: caller.token.clone(),
            name: caller.name.clone(),
            tenant: match &caller.scope {
                Scope::Admin => None,
                Scope::Tenant(t) => Some(t.clone()),
            },
            admin: caller.scope == Scope::Admin,
            expires_at: row.and_then(|r| r.expires_at).map(rfc3339),
        })
    }

    pub async fn tokens(&self, caller: &Caller, owner: Owner<'_>) -> ApiResult<Vec<TokenView>> {
        self.may_list_tokens(caller, owner).await?;
        let now = self.now();
        let rows = self.db().tokens(owner).await?;
        Ok(rows.iter().map(|r| token_view(r, now)).collect())
    }

    pub async fn create_token(
        &self,
        caller: &Caller,
        owner: Owner<'_>,
        req: CreateToken,
    ) -> ApiResult<TokenCreated> {
        caller.admin_only()?;
        self.may_list_tokens(caller, owner).await?;
        check_token_name(&req.name)?;
        let expires_at = self.expiry(req.expires_in.as_deref(), req.expires_at.as_deref())?;
        let (row, secret) = self.insert_new_token(owner, &req.name, expires_at).await?;
        tracing::info!(token = %row.id, tenant = ?owner, name = %row.name, "token created");
        Ok(TokenCreated {
            token: token_view(&row, self.now()),
            secret,
        })
    }

    pub async fn revoke_token(
        &self,
        caller: &Caller,
        owner: Owner<'_>,
        id: &str,
    ) -> ApiResult<TokenView> {
        let row = self.managed_token(caller, owner, id).await?;
        let now = self.now();
        if owner.is_none()
            && row.expires_at.is_none_or(|t| t > now)
            && self.db().admin_token_count(now).await? <= 1
        {
            return Err(ApiError::new(
                409,
                "last_admin_token",
                "this is the only admin token that works: create another (`eflow token create NAME --admin`) before revoking it",
            ));
        }
        if !self.db().revoke_token(id).await? {
            return Err(ApiError::not_found("token", id));
        }
        self.forget_token(id);
        tracing::info!(token = %id, tenant = ?owner, by = %caller.name, "token revoked");
        Ok(token_view(&row, now))
    }

    /// A new secret in place of token `id`: a new token with the same tenant
    /// and name; the old one stops working now, or after `grace`.
    pub async fn rotate_token(
        &self,
        caller: &Caller,
        owner: Owner<'_>,
        id: &str,
        req: RotateToken,
    ) -> ApiResult<TokenCreated> {
        let old = self.managed_token(caller, owner, id).await?;
        let now = self.now();
        let grace = req
            .grace
            .as_deref()
            .map(|g| parse_duration("grace", g))
            .transpose()?;
        let expires_at = match self.expiry(req.expires_in.as_deref(), req.expires_at.as_deref())? {
            Some(t) => Some(t),
            // The same lifetime as the old token.
            None => old
                .expires_at
                .map(|t| now + t.saturating_sub(old.created_at)),
        };
        let old_until = grace.filter(|g| !g.is_zero()).map(|g| now + millis(g));
        let secret = new_secret(old.tenant.as_deref());
        let new = self.token_row(&secret, old.tenant.as_deref(), &old.name, expires_at);
        if !self.db().rotate_token(id, old_until, &new).await? {
            return Err(ApiError::not_found("token", id));
        }
        self.forget_token(id);
        tracing::info!(old = %id, new = %new.id, tenant = ?owner, by = %caller.name, "token rotated");
        Ok(TokenCreated {
            token: token_view(&new, now),
            secret,
        })
    }

    /// Makes and stores a token; returns it and its secret.
    pub(super) async fn insert_new_token(
        &self,
        tenant: Option<&str>,
        name: &str,
        expires_at: Option<u64>,
    ) -> ApiResult<(TokenRow, String)> {
        let secret = new_secret(tenant);
        let row = self.token_row(&secret, tenant, name, expires_at);
        self.db().insert_token(&row).await?;
        Ok((row, secret))
    }

    fn token_row(
        &self,
        secret: &str,
        tenant: Option<&str>,
        name: &str,
        expires_at: Option<u64>,
    ) -> TokenRow {
        let tail = secret.len().saturating_sub(4);
        TokenRow {
            id: format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
            hash: token_hash(secret),
            tenant: tenant.map(str::to_string),
            name: name.to_string(),
            last4: secret.get(tail..).unwrap_or_default().to_string(),
            created_at: self.now(),
            expires_at,
        }
    }

    /// May the caller see the tokens of `owner`? A tenant's token sees its
    /// own tenant's; the admin sees every tenant's and the admin tokens.
    async fn may_list_tokens(&self, caller: &Caller, owner: Owner<'_>) -> ApiResult<()> {
        match owner {
            None => caller.admin_only(),
            Some(t) => {
                caller.tenant(Some(t))?;
                self.tenant_exists(t).await.map(drop)
            }
        }
    }

    /// Token `id` of `owner`, if the caller may revoke or rotate it: the admin
    /// any, a tenant's token only itself.
    async fn managed_token(
        &self,
        caller: &Caller,
        owner: Owner<'_>,
        id: &str,
    ) -> ApiResult<TokenRow> {
        self.may_list_tokens(caller, owner).await?;
        let row = self
            .db()
            .token_by_id(id)
            .await?
            .filter(|r| r.tenant.as_deref() == owner)
            .ok_or_else(|| ApiError::not_found("token", id))?;
        if caller.scope != Scope::Admin && caller.token != row.id {
            return Err(ApiError::new(
                403,
                "forbidden",
                "a tenant's token may revoke or rotate only itself: ask an admin for other tokens",
            ));
        }
        Ok(row)
    }

    /// Drops the cached caller of token `id`, so its next request reads the
    /// store (and finds it gone, or expiring).
    fn forget_token(&self, id: &str) {
        if let Ok(mut c) = self.inner.callers.lock() {
            c.retain(|_, (caller, _)| caller.token != id);
        }
    }

    /// When a new token expires: `expires_in` from now, or at `expires_at`.
    fn expiry(&self, expires_in: Option<&str>, expires_at: Option<&str>) -> ApiResult<Option<u64>> {
        let now = self.now();
        let at = match (expires_in, expires_at) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "give `expires_in` or `expires_at`, not both",
                ));
            }
            (Some(d), None) => now.saturating_add(millis(parse_duration("expires_in", d)?)),
            (None, Some(t)) => parse_time(t)?,
        };
        if at <= now {
            return Err(ApiError::bad_request(
                "invalid_expiry",
                "the token would be expired already: give a time in the future",
            ));
        }
        Ok(Some(at))
    }
}

fn new_secret(tenant: Option<&str>) -> String {
    new_token(if tenant.is_some() {
        "eflow"
    } else {
        "eflow_admin"
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn parse_duration(field: &str, text: &str) -> ApiResult<Duration> {
    humantime::parse_duration(text).map_err(|_| {
        ApiError::bad_request(
            "invalid_duration",
            format!("`{field}` `{text}` is not a duration: write e.g. 30d, 12h or 90m"),
        )
    })
}

/// A token's name is shown in lists and logs and recorded as who acted: one
/// line of printable text.
fn check_token_name(name: &str) -> ApiResult<()> {
    let ok = !name.trim().is_empty() && name.len() <= 128 && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_name",
            "a token's name says whose it is (`alice@example.com`, `ci`): 1 to 128 characters, no control characters",
        ))
    }
}

fn token_view(r: &TokenRow, now: u64) -> TokenView {
    TokenView {
        id: r.id.clone(),
        tenant: r.tenant.clone(),
        name: r.name.clone(),
        created_at: rfc3339(r.created_at),
        expires_at: r.expires_at.map(rfc3339),
        expired: r.expires_at.is_some_and(|t| t <= now),
        last4: (!r.last4.is_empty()).then(|| r.last4.clone()),
    }
}
