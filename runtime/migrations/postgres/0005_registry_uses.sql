-- Who used a registered version after it was registered: a registry step
-- that looked it up, promoted or retired it (the run, the step, when). One
-- row per call, by its idempotency key: a redelivery records nothing new.
CREATE TABLE registry_uses (
    key TEXT COLLATE "C" PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    run TEXT COLLATE "C" NOT NULL,
    step TEXT COLLATE "C" NOT NULL,
    action TEXT COLLATE "C" NOT NULL,
    used_at BIGINT NOT NULL
);
-- A version's uses in time order, a page at a time (the console's lineage).
CREATE INDEX registry_uses_version ON registry_uses (tenant, kind, name, version, used_at, key);
