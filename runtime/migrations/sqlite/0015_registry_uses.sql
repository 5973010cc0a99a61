-- Who used a registered version after it was registered: a registry step
-- that looked it up, promoted or retired it (the run, the step, when). One
-- row per call, by its idempotency key: a redelivery records nothing new.
CREATE TABLE registry_uses (
    key TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    run TEXT NOT NULL,
    step TEXT NOT NULL,
    action TEXT NOT NULL,
    used_at INTEGER NOT NULL
) WITHOUT ROWID;
-- A version's uses in time order, a page at a time (the console's lineage).
CREATE INDEX registry_uses_version ON registry_uses (tenant, kind, name, version, used_at, key);
