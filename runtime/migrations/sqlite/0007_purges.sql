-- A tenant's purge, from when it begins until every store (the engine's and
-- the history's) holds nothing of the tenant. A server that starts and finds
-- a row here finishes that purge before it serves; the tenant id cannot be
-- created again until then.
CREATE TABLE purges (
    tenant TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL
) WITHOUT ROWID;
