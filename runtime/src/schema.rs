//! Schema versions: which of its migrations a store has applied, and whether
//! this eflow may run on it.
//!
//! Every store keeps the migrations it applied in sqlx's `_sqlx_migrations`
//! table. On PostgreSQL the engine's store and the history's store may share
//! one schema, and so that table: each keeps its migrations in its own range
//! of versions ([`ENGINE`], [`HISTORY_POSTGRES`]) and ignores the other's.
//!
//! What a server does on open ([`Mode::Check`]) is the same on every backend
//! but one: a store at this eflow's version is used; an empty one is made
//! (its first migrations applied); one at a newer version is refused, naming
//! both versions; one at an older version is refused with the command that
//! upgrades it, `eflow migrate`, so an upgrade of a shared database is one
//! deliberate step, not a side effect of whichever process starts first. The
//! embedded SQLite files belong to one process, which upgrades them itself
//! ([`Mode::Migrate`], also what `eflow migrate` runs).

use std::ops::Range;

use sqlx::migrate::{Migrate, Migrator};
use sqlx::{Acquire, Database, Pool};

/// The versions of the engine's store, on either backend, and of the
/// history's SQLite file (a file of its own).
pub const ENGINE: Range<i64> = 1..1000;
/// The versions of the history's store on PostgreSQL, which may share a
/// schema with the engine's.
pub const HISTORY_POSTGRES: Range<i64> = 1001..2000;

/// What opening a store may do to its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Apply what the store lacks (a store this process owns, or `eflow migrate`).
    Migrate,
    /// Make an empty store; refuse one at another version.
    Check,
}

/// The schema's version before and after opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// 0 for an empty store.
    pub from: i64,
    pub to: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the {what} is at schema version {found}, and this eflow needs version {needs}: run `eflow migrate` with the same store options (it upgrades the schema in place; back the database up first), then start again"
    )]
    Behind {
        what: &'static str,
        found: i64,
        needs: i64,
    },
    #[error(
        "the {what} is at schema version {found}, newer than this eflow knows (it needs version {needs}): run the eflow release that migrated it, or a newer one"
    )]
    Ahead {
        what: &'static str,
        found: i64,
        needs: i64,
    },
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Brings the schema of `what` (one store) in `pool` to `migrator`'s
/// version, or checks it is there, as `mode` says.
pub async fn prepare<DB>(
    pool: &Pool<DB>,
    migrator: Migrator,
    range: Range<i64>,
    what: &'static str,
    mode: Mode,
) -> Result<Migrated, Error>
where
    DB: Database,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: Acquire<'c, Database = DB>,
    for<'c> &'c Pool<DB>: Acquire<'c, Database = DB>,
{
    let mut migrator = migrator;
    // The other store's migrations in a shared table are not this one's.
    migrator.set_ignore_missing(true);
    let needs = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let found = {
        let mut conn = pool.acquire().await?;
        conn.ensure_migrations_table().await?;
        conn.list_applied_migrations()
            .await?
            .iter()
            .map(|m| m.version)
            .filter(|v| range.contains(v))
            .max()
            .unwrap_or(0)
    };
    if found > needs {
        return Err(Error::Ahead { what, found, needs });
    }
    if found < needs && found != 0 && mode == Mode::Check {
        return Err(Error::Behind { what, found, needs });
    }
    if found < needs {
        migrator.run(pool).await?;
    }
    Ok(Migrated {
        from: found,
        to: needs,
    })
}

/// `url` with its password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://eflow:s3cr%40t@db:5432/eflow?sslmode=require"),
            "postgres://eflow:***@db:5432/eflow?sslmode=require"
        );
        assert_eq!(
            redact("postgres://eflow@db/eflow"),
            "postgres://eflow@db/eflow"
        );
        assert_eq!(
            redact("sqlite:///var/lib/eflow/eflow.db"),
            "sqlite:///var/lib/eflow/eflow.db"
        );
        assert_eq!(redact("local"), "local");
        assert_eq!(
            redact("nats://user:pw@host:4222?prefix=a@b"),
            "nats://user:***@host:4222?prefix=a@b"
        );
    }
}
