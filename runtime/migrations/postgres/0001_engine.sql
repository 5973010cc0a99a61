-- The engine's store on PostgreSQL: deployed flows, runs with their state and
-- event log, the outbox, timers, schedules, approvals, the registry, values kept
-- by reference, leases, tenants and tokens. The schema the SQLite store reaches
-- through its migrations 0001-0012, in one step: nothing was ever deployed on
-- PostgreSQL before it.
--
-- Types: times are BIGINT milliseconds since the Unix epoch. What the engine
-- encodes (states, events, effects, approval requests, registry entries, values)
-- is BYTEA: compact JSON kept and returned byte for byte (a value is named by the
-- SHA-256 of its bytes) and never parsed on the write path; JSONB would parse
-- every write and give back other bytes. Identifiers are TEXT COLLATE "C": they
-- sort bytewise, as in SQLite, whatever the database's locale, and compare fast.

CREATE TABLE tenants (
    id TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL,
    -- Quotas; NULL takes the server's default.
    max_active_runs BIGINT,
    max_starts_per_sec DOUBLE PRECISION,
    -- Egress rules an admin set (`10.0.0.0/8`, `*.internal`).
    allow_egress TEXT[] NOT NULL DEFAULT '{}',
    -- How long the history keeps the tenant's finished runs; NULL takes the
    -- server's `--history-retention`.
    history_retention_ms BIGINT
);

-- A tenant's purge, from when it begins until every store holds nothing of it.
CREATE TABLE purges (
    tenant TEXT COLLATE "C" PRIMARY KEY,
    started_at BIGINT NOT NULL
);

-- API tokens, stored as their SHA-256. A NULL tenant is an admin token.
CREATE TABLE tokens (
    hash TEXT COLLATE "C" PRIMARY KEY,
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    tenant TEXT COLLATE "C",
    name TEXT NOT NULL,
    last4 TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX tokens_tenant ON tokens (tenant);

-- A deployed bundle: the validated IR of a flow and its subflows, and the
-- environment whose bindings its runs use.
CREATE TABLE bundles (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    env TEXT NOT NULL,
    ir BYTEA NOT NULL,
    deployed_at BIGINT NOT NULL
);
CREATE INDEX bundles_tenant ON bundles (tenant);

-- Every flow version of every bundle; the latest deploy of a name is its head.
CREATE TABLE flows (
    tenant TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    version TEXT COLLATE "C" NOT NULL,
    bundle TEXT COLLATE "C" NOT NULL,
    deployed_at BIGINT NOT NULL,
    head BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (tenant, name, version)
);

-- Runs: the state record and the columns the engine, quotas and the sweeper
-- filter on. A run in progress is rewritten at every transition; no index
-- holds `updated_at` or `state`, and pages keep room, so those rewrites are
-- HOT updates (no new index entries). `finished_at` is set only once the
-- run's status is final (to `updated_at`): the sweeper's order.
CREATE TABLE runs (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    bundle TEXT COLLATE "C" NOT NULL,
    -- The schedule that started it, for overlap policies.
    schedule TEXT COLLATE "C",
    -- Set for subflow and fan-out children.
    parent TEXT COLLATE "C",
    status TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT,
    state BYTEA NOT NULL
) WITH (fillfactor = 80);
-- Each tenant's runs in progress per parent (the quota's starting point) from
-- the index alone.
CREATE INDEX runs_tenant_active ON runs (tenant, parent, status)
    WHERE status IN ('created', 'running');
CREATE INDEX runs_schedule_active ON runs (schedule)
    WHERE schedule IS NOT NULL AND status IN ('created', 'running');
-- Finished runs in the order they finished, for the sweeper.
CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;

-- The event log: append-only. `pos` orders all events for the history
-- consumer and is never handed out twice (a sequence does not go back);
-- (run, seq) is a run's log. Writers take positions under a shared advisory
-- lock that a reader takes exclusively to find how far every position is
-- committed (see `store::postgres`).
CREATE TABLE events (
    pos BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    at BIGINT NOT NULL,
    -- The run's status after the event.
    status TEXT NOT NULL,
    body BYTEA NOT NULL
);
CREATE UNIQUE INDEX events_run_seq ON events (run, seq);

-- Effects committed with the state that still have to be carried out outside
-- this database. The engine numbers them.
CREATE TABLE outbox (
    pos BIGINT PRIMARY KEY,
    run TEXT COLLATE "C" NOT NULL,
    effect BYTEA NOT NULL
);

-- Due work of runs. A loader claims a row until `claimed_until` (not indexed:
-- a claim is a HOT update); a claim that outlives a crash expires.
CREATE TABLE timers (
    run TEXT COLLATE "C" NOT NULL,
    timer TEXT COLLATE "C" NOT NULL,
    partition BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    claimed_until BIGINT NOT NULL DEFAULT 0,
    event BYTEA NOT NULL,
    PRIMARY KEY (run, timer)
) WITH (fillfactor = 90);
CREATE INDEX timers_due ON timers (partition, due_at);

-- Schedules: declared by flows (`declared`) or made through the API.
CREATE TABLE schedules (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    flow TEXT COLLATE "C" NOT NULL,
    bundle TEXT COLLATE "C" NOT NULL,
    -- Position of the schedule in the flow's IR.
    position BIGINT NOT NULL,
    spec BYTEA NOT NULL,
    paused BOOLEAN NOT NULL DEFAULT false,
    -- The watermark of fire times handled, and when the next is due.
    last_fire BIGINT,
    next_due BIGINT,
    -- One start held back by the buffer_one overlap policy.
    buffered BIGINT,
    partition BIGINT NOT NULL,
    -- Not indexed: a claim and its release are HOT updates. (SQLite indexes
    -- it for releasing every claim at start, which only the embedded,
    -- single-process backend does.)
    claimed_until BIGINT NOT NULL DEFAULT 0,
    -- The fire time of the newest run the schedule started by itself.
    last_start BIGINT,
    declared BOOLEAN NOT NULL DEFAULT true,
    key TEXT COLLATE "C",
    version TEXT COLLATE "C",
    created_at BIGINT
) WITH (fillfactor = 90);
CREATE INDEX schedules_due ON schedules (partition, next_due) WHERE NOT paused;
CREATE INDEX schedules_tenant ON schedules (tenant);
CREATE INDEX schedules_key ON schedules (tenant, key, id) WHERE key IS NOT NULL;
CREATE INDEX schedules_flow ON schedules (tenant, flow, id);

-- Approvals waiting for (or given) a decision.
CREATE TABLE approvals (
    run TEXT COLLATE "C" NOT NULL,
    step TEXT COLLATE "C" NOT NULL,
    attempt BIGINT NOT NULL,
    tenant TEXT COLLATE "C" NOT NULL,
    contract TEXT NOT NULL,
    request BYTEA NOT NULL,
    requested_at BIGINT NOT NULL,
    expires_at BIGINT,
    decided_at BIGINT,
    decision BYTEA,
    PRIMARY KEY (run, step, attempt)
);
CREATE INDEX approvals_pending ON approvals (tenant) WHERE decided_at IS NULL;

-- The metadata registry: registered models and datasets with their lineage.
CREATE TABLE registry (
    tenant TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    entry BYTEA NOT NULL,
    run TEXT COLLATE "C" NOT NULL,
    step TEXT COLLATE "C" NOT NULL,
    -- The idempotency key of the registering call.
    key TEXT COLLATE "C" NOT NULL UNIQUE,
    inputs BYTEA NOT NULL,
    registered_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, kind, name, version)
);

-- One worker owns a shard at a time; the token fences out a previous owner.
CREATE TABLE leases (
    shard BIGINT PRIMARY KEY,
    owner TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Server settings that must outlive a restart: the callback signing key.
CREATE TABLE settings (
    key TEXT COLLATE "C" PRIMARY KEY,
    value BYTEA NOT NULL
);

-- The outputs of fan-out children, beside the parent's state.
CREATE TABLE fanout_results (
    run TEXT COLLATE "C" NOT NULL,
    node TEXT COLLATE "C" NOT NULL,
    idx BIGINT NOT NULL,
    output BYTEA NOT NULL,
    PRIMARY KEY (run, node, idx)
);

-- Values kept by reference, once per tenant and hash, and which runs refer
-- to them.
CREATE TABLE stored_values (
    tenant TEXT COLLATE "C" NOT NULL,
    hash TEXT COLLATE "C" NOT NULL,
    bytes BIGINT NOT NULL,
    body BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, hash)
);
CREATE TABLE run_values (
    run TEXT COLLATE "C" NOT NULL,
    tenant TEXT COLLATE "C" NOT NULL,
    hash TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (run, hash)
);
-- Whether any run refers to a value: for dropping values no run refers to.
CREATE INDEX run_values_hash ON run_values (tenant, hash);

-- What is left of a swept run whose id a start may name again or that kept
-- its fan-out results, until the history's retention deletes the run.
CREATE TABLE swept_runs (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    finished_at BIGINT NOT NULL
);
CREATE INDEX swept_runs_tenant ON swept_runs (tenant, finished_at);
