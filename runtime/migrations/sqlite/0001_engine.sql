-- The engine's store: deployed flows, runs with their state and event log, the
-- outbox, timers, schedules, approvals, the registry, tenants and tokens.
-- Times are milliseconds since the Unix epoch.

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    -- Quotas; NULL takes the server's default.
    max_active_runs INTEGER,
    max_starts_per_sec REAL
);

-- API tokens, stored as their SHA-256. A NULL tenant is an admin token.
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    tenant TEXT,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX tokens_tenant ON tokens (tenant);

-- A deployed bundle: the validated IR of a flow and the subflows it calls, and
-- the environment whose bindings its runs use. Runs point at their bundle, so a
-- run keeps the version (and the subflow versions) it started on.
CREATE TABLE bundles (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    env TEXT NOT NULL,
    ir BLOB NOT NULL,
    deployed_at INTEGER NOT NULL
);
CREATE INDEX bundles_tenant ON bundles (tenant);

-- Every flow version of every bundle; the latest deploy of a name is its head.
CREATE TABLE flows (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    bundle TEXT NOT NULL,
    deployed_at INTEGER NOT NULL,
    head INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, name, version)
) WITHOUT ROWID;

-- Runs: the state record (compact JSON of eflow_core::Run) and the columns the
-- engine and quotas filter on.
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    bundle TEXT NOT NULL,
    -- The schedule that started it, for overlap policies.
    schedule TEXT,
    -- Set for subflow children.
    parent TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    state BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX runs_tenant_active ON runs (tenant) WHERE status IN ('created', 'running');
CREATE INDEX runs_schedule_active ON runs (schedule) WHERE schedule IS NOT NULL AND status IN ('created', 'running');

-- The event log: append-only. `pos` orders all events for the history consumer,
-- (run, seq) is a run's log.
CREATE TABLE events (
    pos INTEGER PRIMARY KEY,
    run TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    at INTEGER NOT NULL,
    -- The run's status after the event, and its error code if it failed.
    status TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX events_run_seq ON events (run, seq);

-- Effects committed with the state that still have to be carried out outside
-- this database: calls to remote systems and deliveries to other runs.
CREATE TABLE outbox (
    pos INTEGER PRIMARY KEY,
    run TEXT NOT NULL,
    effect BLOB NOT NULL
);

-- Due work of runs: retry backoffs, timeouts, waits, deadlines, simulated
-- completions. The event to deliver is stored with the row; the row is deleted
-- in the transaction that applies it. A loader claims a row until
-- `claimed_until`; a claim that outlives a crash expires and the row is loaded again.
CREATE TABLE timers (
    run TEXT NOT NULL,
    timer TEXT NOT NULL,
    partition INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    claimed_until INTEGER NOT NULL DEFAULT 0,
    event BLOB NOT NULL,
    PRIMARY KEY (run, timer)
) WITHOUT ROWID;
CREATE INDEX timers_due ON timers (partition, due_at);

-- Cron schedules of deployed flows.
CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    flow TEXT NOT NULL,
    bundle TEXT NOT NULL,
    -- Position of the schedule in the flow's IR.
    position INTEGER NOT NULL,
    spec BLOB NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    -- The last nominal fire time handled, and when the next is due.
    last_fire INTEGER,
    next_due INTEGER,
    -- One start held back by the buffer_one overlap policy.
    buffered INTEGER,
    partition INTEGER NOT NULL,
    claimed_until INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX schedules_due ON schedules (partition, next_due) WHERE paused = 0;
CREATE INDEX schedules_tenant ON schedules (tenant);

-- Approvals waiting for (or given) a decision.
CREATE TABLE approvals (
    run TEXT NOT NULL,
    step TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    contract TEXT NOT NULL,
    request BLOB NOT NULL,
    requested_at INTEGER NOT NULL,
    expires_at INTEGER,
    decided_at INTEGER,
    decision BLOB,
    PRIMARY KEY (run, step, attempt)
) WITHOUT ROWID;
CREATE INDEX approvals_pending ON approvals (tenant) WHERE decided_at IS NULL;

-- The metadata registry: registered models and datasets with their lineage.
CREATE TABLE registry (
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    entry BLOB NOT NULL,
    run TEXT NOT NULL,
    step TEXT NOT NULL,
    -- The idempotency key of the registering call: a redelivery registers nothing new.
    key TEXT NOT NULL UNIQUE,
    inputs BLOB NOT NULL,
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, kind, name, version)
) WITHOUT ROWID;

-- One worker owns a shard at a time; the token fences out a previous owner.
CREATE TABLE leases (
    shard INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    token INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

-- Server settings that must outlive a restart: the callback signing key.
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
