-- Values kept by reference (docs/design/0003-fan-out-at-scale.md): a run's
-- state names a large input, output or result by the SHA-256 of its compact
-- JSON, and the value is here, once per tenant, written in the commit of the
-- transition that first kept it. `run_values` says which runs refer to which
-- values, so a value leaves when the last run referring to it leaves; a
-- tenant's purge deletes all of its values.
CREATE TABLE stored_values (
    tenant TEXT NOT NULL,
    hash TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, hash)
) WITHOUT ROWID;

CREATE TABLE run_values (
    run TEXT NOT NULL,
    tenant TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (run, hash)
) WITHOUT ROWID;

-- Whether any run refers to a value: for dropping values no run refers to.
CREATE INDEX run_values_hash ON run_values (tenant, hash);
