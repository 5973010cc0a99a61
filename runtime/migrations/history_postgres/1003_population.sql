-- Runs carry a key: the model or customer whose lifecycle they are. The run
-- list filters by it through its own index, newest first like every filter.
ALTER TABLE h_runs ADD COLUMN key TEXT COLLATE "C";
CREATE INDEX h_runs_key ON h_runs (tenant, key, created_at DESC, id DESC) WHERE key IS NOT NULL;

-- The population: per (tenant, flow, key) its latest top-level run, kept up
-- to date by the history consumer in the transaction that writes the runs,
-- so no page counts or groups runs when it loads. `failed_in_a_row` is how
-- many of the key's latest runs failed one after the other (0 unless the
-- latest failed); `failed_before` is that streak before the latest run.
CREATE TABLE h_population (
    tenant TEXT COLLATE "C" NOT NULL,
    flow TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    run TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    version TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    error_code TEXT COLLATE "C",
    failed_in_a_row INTEGER NOT NULL,
    failed_before INTEGER NOT NULL,
    PRIMARY KEY (tenant, flow, key)
);
-- Pages are by key within a tenant's flow (by key then tenant for an admin
-- over every tenant); each filter has an index in that order, and the
-- failed-in-a-row filter one in (streak descending, key) order.
CREATE INDEX h_population_status ON h_population (tenant, flow, status, key);
CREATE INDEX h_population_version ON h_population (tenant, flow, version, key);
CREATE INDEX h_population_failed ON h_population (tenant, flow, failed_in_a_row DESC, key)
    WHERE failed_in_a_row > 0;
CREATE INDEX h_population_all ON h_population (flow, key, tenant);
CREATE INDEX h_population_all_failed ON h_population (flow, failed_in_a_row DESC, key, tenant)
    WHERE failed_in_a_row > 0;

-- How many keys of a tenant's flow have their latest run in each status
-- (`what` = 'status') and on each version (`what` = 'version'): moved by
-- the same transaction that moves h_population, read whole by a page.
CREATE TABLE h_population_counts (
    flow TEXT COLLATE "C" NOT NULL,
    tenant TEXT COLLATE "C" NOT NULL,
    what TEXT COLLATE "C" NOT NULL,
    value TEXT COLLATE "C" NOT NULL,
    keys BIGINT NOT NULL,
    PRIMARY KEY (flow, tenant, what, value)
);
